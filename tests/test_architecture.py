"""The package's layering (docs/architecture.md): every module is named there, and no import runs upward."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "minipt"
DOC = PACKAGE.parent / "docs" / "architecture.md"

# the layer of each top-level module or folder, lowest first (the table in docs/architecture.md)
LAYERS = {
    "errors": 0, "exercises": 0,
    "functional": 1, "metrics": 1, "plots": 1, "stats": 1,
    "fast": 2,
    "nn": 3, "optim": 3,
    "models": 4,
    "runs": 5,
    "data": 6,
    "training": 7,
    "interop": 8,
    "jobs": 9,
    "cli": 10, "__main__": 10, "__init__": 10,
}

MODULES = sorted(path.relative_to(PACKAGE) for path in PACKAGE.rglob("*.py"))


def layer_of(dotted: str) -> int:
    """minipt.jobs.demo -> 9; minipt.errors -> 0; minipt (the package itself) -> the top."""
    parts = dotted.split(".")
    return LAYERS[parts[1]] if len(parts) > 1 else LAYERS["__init__"]


def imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "minipt":
            if node.module == "minipt":  # from minipt import fast, nn
                found |= {f"minipt.{alias.name}" for alias in node.names if alias.name in LAYERS}
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "minipt"}
    return found


def test_every_top_level_module_and_folder_has_a_layer():
    assert {path.parts[0].removesuffix(".py") for path in MODULES} <= set(LAYERS)


@pytest.mark.parametrize("path", MODULES, ids=str)
def test_no_import_runs_upward(path):
    here = LAYERS[path.parts[0].removesuffix(".py")]
    upward = sorted(name for name in imports_of(PACKAGE / path) if layer_of(name) > here)
    assert not upward, f"minipt/{path} (layer {here}) imports from a higher layer: {upward}"


@pytest.mark.parametrize("path", [p for p in MODULES if p.name != "__init__.py"], ids=str)
def test_every_module_is_in_docs_architecture(path):
    assert path.as_posix() in DOC.read_text(), f"docs/architecture.md does not name minipt/{path.as_posix()}"


def test_the_check_fails_on_an_upward_import(tmp_path):
    """The rule can fail: a data module importing a job is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("from minipt.jobs.pretrain import pretrain\nfrom minipt import nn\n")
    assert {layer_of(name) for name in imports_of(bad)} == {LAYERS["jobs"], LAYERS["nn"]}
    assert max(layer_of(name) for name in imports_of(bad)) > LAYERS["data"]
