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

import ast
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


# ----------------------------------------------------------------------------------------------------------
# The course's promises, checked on the committed files (notebooks/README.md describes the format)
# ----------------------------------------------------------------------------------------------------------

KINDS = ("predict, then run", "derive by hand", "change the code", "write the code")
EDIT_KINDS = ("change the code", "write the code")
EXERCISE_HEADING = re.compile(r"\*\*Exercise (\d+) \(([^)]*)\)\.\*\*")
SOLUTION_HEADING = re.compile(r"^## Exercise (\d+)\b", re.MULTILINE)
# an absolute path of someone's machine: home folders, temporary folders, a virtual environment, a drive letter
LOCAL_PATH = re.compile(r"(/home/|/Users/|/work/|/tmp/|/private/var/|site-packages|\.venv|\b[A-Z]:\\)")


def _code(cell) -> ast.Module:
    # IPython magics (%matplotlib inline) are not Python: blank them before parsing
    lines = ["" if line.lstrip().startswith(("%", "!")) else line for line in cell.source.splitlines()]
    return ast.parse("\n".join(lines))


def _check_calls(tree: ast.AST) -> list[ast.Call]:
    return [node for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "check"]


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((keyword.value for keyword in call.keywords if keyword.arg == name), None)


def _exercise_number(call: ast.Call) -> int | None:
    name = _keyword(call, "name")
    if isinstance(name, ast.Constant) and isinstance(name.value, str):
        found = re.match(r"exercise (\d+)\b", name.value)
        return int(found.group(1)) if found else None
    return None


def _has_placeholder(tree: ast.AST) -> bool:
    return any(isinstance(node, ast.Constant) and node.value is Ellipsis for node in ast.walk(tree))


def _student_writes_code(cell) -> bool:
    # a line the student must change (marked `# <- change ...`: the cell holds the setting before the change), or a
    # `...` the student replaces with code: anywhere except as the whole right-hand side of `my_answer = ...`
    if any("# <- change" in line for line in cell.source.splitlines()):
        return True
    tree = _code(cell)
    answers = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Assign)
               and any(isinstance(target, ast.Name) and target.id == "my_answer" for target in node.targets)}
    return any(isinstance(node, ast.Constant) and node.value is Ellipsis and id(node) not in answers
               for node in ast.walk(tree))


def exercises(path: Path) -> dict[int, dict]:
    """Exercise number -> its kind and the code cells that follow its heading, up to the next heading."""
    found: dict[int, dict] = {}
    current = None
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type == "markdown":
            for number, kind in EXERCISE_HEADING.findall(cell.source):
                current = found.setdefault(int(number), {"kind": kind, "cells": []})
        elif current is not None:
            current["cells"].append(cell)
    return found


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda path: path.name)
def test_chapter_has_numbered_exercises_each_with_a_self_check(path: Path) -> None:
    found = exercises(path)
    numbers = sorted(found)
    assert len(numbers) >= 3, f"{path.name}: {len(numbers)} exercises, at least 3 (**Exercise N (kind).**)"
    assert numbers == list(range(1, len(numbers) + 1)), f"{path.name}: exercises numbered {numbers}"
    for number, exercise in found.items():
        where = f"{path.name}, exercise {number}"
        assert exercise["kind"] in KINDS, f"{where}: kind {exercise['kind']!r}, one of {KINDS}"
        trees = [_code(cell) for cell in exercise["cells"]]
        calls = [call for tree in trees for call in _check_calls(tree) if _exercise_number(call) == number]
        assert calls, f'{where}: no check(my_answer, expected=..., name="exercise {number}") below its heading'
        for call in calls:
            assert call.args and isinstance(call.args[0], ast.Name) and call.args[0].id == "my_answer", where
            expected = _keyword(call, "expected")
            assert expected is not None, f"{where}: check(my_answer, expected=...) names its expected value"
            assert any(isinstance(node, ast.Name) for node in ast.walk(expected)), (
                f"{where}: the expected value {ast.unparse(expected)} is a literal; compute it with minipt or "
                "derive it in the cell")
        assert any(_has_placeholder(tree) for tree in trees), f"{where}: no `...` left for the student to fill in"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda path: path.name)
def test_chapter_has_an_exercise_where_the_student_writes_code(path: Path) -> None:
    editing = [number for number, exercise in exercises(path).items() if exercise["kind"] in EDIT_KINDS
               and any(_student_writes_code(cell) for cell in exercise["cells"])]
    assert editing, (f"{path.name}: no 'change the code' or 'write the code' exercise where the student edits a "
                     "line marked `# <- change ...` or writes code in place of a `...` (besides `my_answer = ...`)")


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda path: path.name)
def test_exercise_cells_print_nothing_but_their_check(path: Path) -> None:
    # The committed output of an exercise cell must not show the answer above the check.
    for number, exercise in exercises(path).items():
        for cell in exercise["cells"]:
            outputs = cell.get("outputs", [])
            assert all(output.output_type == "stream" for output in outputs), (
                f"{path.name}, exercise {number}: a value is displayed")
            printed = "".join(output.text for output in outputs)  # one print may arrive in several pieces
            for line in printed.splitlines():
                assert line.startswith("exercise "), f"{path.name}, exercise {number} prints {line!r}"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda path: path.name)
def test_every_exercise_has_an_asserting_solution(path: Path) -> None:
    solution = SOLUTIONS_DIR / (path.stem + "_solutions.ipynb")
    notebook = nbformat.read(solution, as_version=4)
    headings = {int(n) for cell in notebook.cells if cell.cell_type == "markdown"
                for n in SOLUTION_HEADING.findall(cell.source)}
    asserted = {_exercise_number(node.test) for cell in notebook.cells if cell.cell_type == "code"
                for node in ast.walk(_code(cell)) if isinstance(node, ast.Assert) and isinstance(node.test, ast.Call)
                and isinstance(node.test.func, ast.Name) and node.test.func.id == "check"}
    for number in exercises(path):
        assert number in headings, f"{solution.name}: no '## Exercise {number}' section"
        assert number in asserted, f'{solution.name}: no assert check(..., name="exercise {number}")'


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda path: path.name)
def test_chapter_shows_a_plot(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    images = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", [])
              if "image/png" in output.get("data", {})]
    assert images, f"{path.name}: no plot among its committed outputs"


def test_no_absolute_local_path_in_committed_outputs() -> None:
    found = []
    for path in CHAPTERS + SOLUTIONS:
        for index, cell in enumerate(nbformat.read(path, as_version=4).cells):
            for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
                text = output.get("text", "") + "".join(str(value) for key, value in output.get("data", {}).items()
                                                        if key.startswith("text/"))
                text += "".join(output.get("traceback", []))
                if LOCAL_PATH.search(text):
                    found.append(f"{path.relative_to(NOTEBOOK_DIR)} cell {index}: {LOCAL_PATH.search(text).group()}")
    assert not found, "a local path in a committed output (rerun, or keep the path out of what is printed): " + (
        ", ".join(found))
