"""The course notebooks and their solutions run top to bottom, and are committed with their outputs.

Every ``notebooks/*.ipynb`` and ``notebooks/solutions/*.ipynb`` is picked up automatically and executed in
memory (never written back) by the same function ``notebooks/execute.py`` uses: its own ``python3`` kernel, its
folder as the working directory, ``MPLBACKEND=Agg`` so that no window opens. A cell that raises (a failing
``assert``, a wrong answer in a solutions notebook, an import of something the package no longer has, ...)
fails that notebook's test, with the cell's traceback in the message.

The convention (``notebooks/README.md`` says why): notebooks are committed **with** their outputs, so a reader
sees every number and plot without running anything, and ``python notebooks/execute.py`` regenerates them.
``test_committed_notebooks_have_their_outputs`` checks that each was executed top to bottom in one go.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import nbformat
import pytest

REPOSITORY = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = REPOSITORY / "notebooks"
SOLUTIONS_DIR = NOTEBOOK_DIR / "solutions"
CHAPTERS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
SOLUTIONS = sorted(SOLUTIONS_DIR.glob("*.ipynb"))
NOTEBOOK_NAME = re.compile(r"^\d\d_[a-z0-9_]+\.ipynb$")  # 01_softmax_cross_entropy.ipynb


def _load_executor():
    spec = importlib.util.spec_from_file_location("notebooks_execute", NOTEBOOK_DIR / "execute.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


executor = _load_executor()


@pytest.mark.parametrize("path", CHAPTERS + SOLUTIONS, ids=lambda path: path.relative_to(NOTEBOOK_DIR).as_posix())
def test_notebook_runs_top_to_bottom(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The kernel is a child process and inherits this environment; monkeypatch restores it afterwards.
    for name, value in executor.kernel_environment().items():
        monkeypatch.setenv(name, value)
    notebook = nbformat.read(path, as_version=4)
    executor.execute(notebook, path.parent)  # in memory: the file is not touched
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code_cells, f"{path.name} has no code cells"
    assert all(cell.execution_count is not None for cell in code_cells), f"{path.name}: a cell did not run"


def test_course_notebooks_are_present_numbered_and_listed() -> None:
    names = [path.name for path in CHAPTERS]
    for expected in ("01_softmax_cross_entropy.ipynb", "02_attention.ipynb", "03_adamw.ipynb"):
        assert expected in names, f"notebooks/{expected} is missing"
    badly_named = [name for name in names if not NOTEBOOK_NAME.match(name)]
    assert not badly_named, f"notebooks must be named NN_topic.ipynb: {badly_named}"
    readme = (NOTEBOOK_DIR / "README.md").read_text(encoding="utf-8")
    unlisted = [path.name for path in CHAPTERS + SOLUTIONS if path.name not in readme]
    assert not unlisted, f"notebooks/README.md does not list {unlisted}: add one line for each, in order"


def test_every_chapter_has_a_solutions_notebook() -> None:
    expected = {path.stem + "_solutions.ipynb" for path in CHAPTERS}
    present = {path.name for path in SOLUTIONS}
    missing = sorted(expected - present)
    assert not missing, f"chapters without a notebooks/solutions/NN_topic_solutions.ipynb: {missing}"
    assert not present - expected, f"solutions without a chapter of the same name: {present - expected}"


def test_committed_notebooks_have_their_outputs() -> None:
    # Executed top to bottom in one go: every code cell has a count, and the counts are 1, 2, ..., n in order.
    # (A cell run twice, out of order or never shows up here; run `python notebooks/execute.py` to regenerate.)
    stale = []
    for path in CHAPTERS + SOLUTIONS:
        notebook = nbformat.read(path, as_version=4)
        counts = [cell.execution_count for cell in notebook.cells if cell.cell_type == "code"]
        if counts != list(range(1, len(counts) + 1)):
            stale.append(f"{path.relative_to(NOTEBOOK_DIR)} (execution counts {counts})")
    assert not stale, "not executed top to bottom; run `python notebooks/execute.py`: " + ", ".join(stale)


def test_committed_notebooks_show_their_results() -> None:
    # Outputs a reader can see: a notebook whose every output was cleared would pass the counts check above
    # only if someone kept the counts by hand, so each notebook must also show at least one output.
    empty = []
    for path in CHAPTERS + SOLUTIONS:
        notebook = nbformat.read(path, as_version=4)
        if not any(cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"):
            empty.append(str(path.relative_to(NOTEBOOK_DIR)))
    assert not empty, "committed without outputs; run `python notebooks/execute.py`: " + ", ".join(empty)
