"""Execute every course notebook in place, so that the committed notebooks carry their outputs.

    python notebooks/execute.py                      # every notebooks/*.ipynb and notebooks/solutions/*.ipynb
    python notebooks/execute.py notebooks/08_finetuning.ipynb   # only the ones named

Each notebook runs top to bottom in a fresh ``python3`` kernel with its own folder as the working directory,
``MPLBACKEND=Agg`` (no window opens) and ``PYTHONPATH`` pointing at this repository (so this checkout's
``minipt`` is imported even when the package is not installed). The outputs are written back into the file.

Volatile metadata is stripped so that a rerun gives a small diff: no per-cell execution timing, no
interpreter version in the notebook's metadata. ``tests/test_notebooks.py`` runs the same function, in memory
(it never writes), and checks that every committed notebook has its outputs.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

REPOSITORY = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = REPOSITORY / "notebooks"
SOLUTIONS_DIR = NOTEBOOK_DIR / "solutions"
CELL_TIMEOUT_S = 300  # generous: a loaded 2-core machine can be several times slower than a quiet one


def all_notebooks() -> list[Path]:
    """The chapters, then their solutions, each in name order."""
    return sorted(NOTEBOOK_DIR.glob("*.ipynb")) + sorted(SOLUTIONS_DIR.glob("*.ipynb"))


def kernel_environment() -> dict[str, str]:
    """What the kernel (a child process) must inherit: no plot windows, and this checkout's minipt first."""
    search_path = [str(REPOSITORY)] + [part for part in os.environ.get("PYTHONPATH", "").split(os.pathsep) if part]
    return {"MPLBACKEND": "Agg", "PYTHONPATH": os.pathsep.join(dict.fromkeys(search_path))}  # no duplicates


def execute(notebook: nbformat.NotebookNode, folder: Path) -> nbformat.NotebookNode:
    """Run ``notebook`` top to bottom with ``folder`` as the working directory; raise on the first failing cell."""
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        record_timing=False,  # no per-cell timestamps: they would change on every run
        resources={"metadata": {"path": str(folder)}},
    )
    client.execute()  # raises CellExecutionError, naming the cell, if any cell fails
    return notebook


def strip_volatile(notebook: nbformat.NotebookNode) -> None:
    """Remove what changes from run to run without changing what a reader sees."""
    language = notebook.metadata.get("language_info")
    if language is not None:
        notebook.metadata["language_info"] = {"name": language.get("name", "python")}
    for cell in notebook.cells:
        cell.metadata.pop("execution", None)


def main(paths: list[str]) -> int:
    os.environ.update(kernel_environment())
    targets = [Path(path).resolve() for path in paths] if paths else all_notebooks()
    for path in targets:
        started = time.perf_counter()
        notebook = nbformat.read(path, as_version=4)
        execute(notebook, path.parent)
        strip_volatile(notebook)
        nbformat.write(notebook, path)
        shown = path.relative_to(REPOSITORY) if path.is_relative_to(REPOSITORY) else path
        print(f"{shown}: executed in {time.perf_counter() - started:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
