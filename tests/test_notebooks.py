"""The course notebooks run top to bottom, and are committed clean.

Every ``notebooks/*.ipynb`` is picked up automatically and executed with nbclient in its own kernel
(``python3``), with ``notebooks/`` as the working directory and ``MPLBACKEND=Agg`` so that no window opens.
A cell that raises (a failing ``assert``, an import of something the package no longer has, ...) fails
that notebook's test, with the cell's traceback in the message.

The notebooks are committed without outputs or execution counts: a student opens a clean notebook and
runs it, and diffs stay readable. ``test_committed_notebooks_have_no_outputs`` enforces that.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

REPOSITORY = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = REPOSITORY / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT_S = 300  # generous: a loaded 2-core machine can be several times slower than a quiet one
NOTEBOOK_NAME = re.compile(r"^\d\d_[a-z0-9_]+\.ipynb$")  # 01_softmax_cross_entropy.ipynb


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_runs_top_to_bottom(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The kernel is a child process and inherits this environment.
    monkeypatch.setenv("MPLBACKEND", "Agg")
    # Import this checkout's minipt even when the package is not pip-installed.
    search_path = [str(REPOSITORY), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(part for part in search_path if part))
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    )
    client.execute()  # raises CellExecutionError, naming the cell, if any cell fails
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code_cells, f"{path.name} has no code cells"
    assert all(cell.execution_count is not None for cell in code_cells), f"{path.name}: a cell did not run"


def test_course_notebooks_are_present_numbered_and_listed() -> None:
    names = [path.name for path in NOTEBOOKS]
    for expected in ("01_softmax_cross_entropy.ipynb", "02_attention.ipynb", "03_adamw.ipynb"):
        assert expected in names, f"notebooks/{expected} is missing"
    badly_named = [name for name in names if not NOTEBOOK_NAME.match(name)]
    assert not badly_named, f"notebooks must be named NN_topic.ipynb: {badly_named}"
    readme = (NOTEBOOK_DIR / "README.md").read_text(encoding="utf-8")
    unlisted = [name for name in names if name not in readme]
    assert not unlisted, f"notebooks/README.md does not list {unlisted}: add one line for each, in order"


def test_committed_notebooks_have_no_outputs() -> None:
    dirty = []
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        for index, cell in enumerate(notebook.cells):
            if cell.cell_type != "code":
                continue
            if cell.outputs or cell.execution_count is not None:
                dirty.append(f"{path.name} cell {index}")
    assert not dirty, (
        "notebooks must be committed without outputs or execution counts; clear them in: " + ", ".join(dirty)
    )
