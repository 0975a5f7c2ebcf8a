r"""Checkpoints: atomic saves, weights-only loads and the random-number state a resumed run needs.

A training run writes ``last.pt`` again and again. If the process dies (out of memory, Ctrl-C, a killed job)
while ``torch.save`` is writing, a plain ``torch.save(state, "last.pt")`` leaves half a file, and the previous
good checkpoint is already gone. :func:`save_checkpoint` never writes onto the final name; it writes a
temporary file next to it and then *renames* it over the final name::

    .last.pt.tmp-k3j9x   <- torch.save writes here, then flush + fsync (the bytes reach the disk)
    last.pt              <- os.replace(temporary, "last.pt"): one atomic step

``os.replace`` within one folder is atomic: anyone opening ``last.pt`` sees either the old file or the new
one, never a mix. A save that dies halfway leaves only its temporary file behind, and the next save to the
same path removes such leftovers (one writer per checkpoint path: a run owns its folder).

:func:`load_checkpoint` reads with ``torch.load(..., weights_only=True)``. A checkpoint is a pickle, and
unpickling an untrusted pickle can run any code it names (``__reduce__`` may return ``os.system`` and a
command). Weights-only loading accepts only tensors, numbers, strings, lists, tuples and dicts, so a
tampered file is refused instead of executed. Everything a checkpoint holds must therefore be made of those:
model and optimizer ``state_dict()``\ s are, and :func:`rng_state` converts the random generators' states to them.

Errors are :class:`CheckpointError` (a ``ValueError``) with a one-line message naming the file and the problem.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

__all__ = [
    "CheckpointError",
    "save_checkpoint",
    "write_json_atomic",
    "load_checkpoint",
    "rng_state",
    "set_rng_state",
]


class CheckpointError(ValueError):
    """A checkpoint (or RNG state) cannot be used; the one-line message names the file and the problem."""


# ----------------------------------------------------------------------------------------------------------
# Atomic writes
# ----------------------------------------------------------------------------------------------------------


def _temporary_prefix(path: Path) -> str:
    """Temporary files for ``run/last.pt`` are named ``run/.last.pt.tmp-XXXXXXXX`` (hidden, easy to spot)."""
    return f".{path.name}.tmp-"


def _remove_leftover_temporaries(path: Path) -> None:
    """Delete temporary files that an interrupted earlier save of ``path`` left behind."""
    for leftover in path.parent.glob(_temporary_prefix(path) + "*"):
        leftover.unlink(missing_ok=True)


def _fsync_directory(folder: Path) -> None:
    """Ask the OS to write the folder's entry list to disk, so the rename survives a power cut.

    Opening a folder is not possible on every system (Windows refuses); the rename is still atomic there.
    """
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass  # some file systems do not support fsync on a folder; the rename itself already happened
    finally:
        os.close(descriptor)


def _write_atomic(path: str | os.PathLike, write: Callable[[IO[bytes]], object]) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it onto ``path``.

    On any exception the temporary file is removed and the old ``path`` (if any) is left untouched.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise CheckpointError(f"{path}: cannot save, the folder {path.parent} does not exist")
    _remove_leftover_temporaries(path)
    temporary = None
    try:
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=_temporary_prefix(path), delete=False) as file:
            temporary = Path(file.name)
            write(file)
            file.flush()  # Python's buffer -> the OS
            os.fsync(file.fileno())  # the OS's cache -> the disk
        os.replace(temporary, path)  # atomic: readers see the old file or the new one
    except BaseException:  # also on KeyboardInterrupt: never leave a half-written temporary file
        if temporary is not None:
            temporary.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Write ``state`` (a dict of tensors, numbers, strings, lists and dicts) to ``path`` atomically.

    After this returns, ``path`` holds the new checkpoint; if the process dies during the call, ``path`` still
    holds the previous one (or does not exist, if there was none). Leftover temporary files
    ``.{name}.tmp-*`` from an interrupted earlier save are removed first.
    """
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: a checkpoint must be a dict, got {type(state).__name__}")
    _write_atomic(path, lambda file: torch.save(state, file))


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON (``config.json``, ``summary.json``) to ``path`` atomically."""
    text = json.dumps(obj, indent=2, sort_keys=True) + "\n"  # fails before any file is touched
    _write_atomic(path, lambda file: file.write(text.encode("utf-8")))


# ----------------------------------------------------------------------------------------------------------
# Weights-only loading
# ----------------------------------------------------------------------------------------------------------


def _unsafe_reason(error: pickle.UnpicklingError) -> str:
    """Pick the one useful line out of torch's long weights-only error, e.g. 'Unsupported global: GLOBAL os.system'."""
    for line in str(error).splitlines():
        if "WeightsUnpickler error:" in line:
            reason = line.split("WeightsUnpickler error:", 1)[1].strip()
            return reason.split(". ")[0]
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`, refusing anything but plain data.

    Tensors are placed on ``map_location`` (default ``"cpu"``, so a GPU run's checkpoint loads anywhere).
    Raises :class:`CheckpointError` for a missing file, a truncated or corrupt file, a file holding Python
    objects that weights-only loading refuses (a tampered pickle that would run code), or one that does
    not hold a dict.
    """
    path = Path(path)
    if not path.is_file():
        problem = "is a folder, not a checkpoint file" if path.is_dir() else "no such checkpoint file"
        raise CheckpointError(f"{path}: {problem}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"{path}: refused, the file holds objects that weights-only loading does not allow "
            f"(a checkpoint that could run code): {_unsafe_reason(error)}"
        ) from None
    except Exception as error:  # zip/pickle readers fail with RuntimeError, EOFError, KeyError, ... on damage
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt): {first_line}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: a checkpoint must hold a dict, this one holds {type(state).__name__}")
    return state


# ----------------------------------------------------------------------------------------------------------
# Random-number generator state
# ----------------------------------------------------------------------------------------------------------


def rng_state() -> dict:
    """Capture the states of Python's ``random``, NumPy's global generator and torch's generators.

    Resuming a run bit for bit needs the same random numbers after the resume (dropout masks, shuffling,
    sampling) as an uninterrupted run would have drawn. Each library keeps its state in its own format;
    here each is converted to tensors and plain Python values so that a checkpoint holding it still loads
    with ``weights_only=True``:

    * ``"python"``: ``random.getstate()`` is ``(version, 625 ints, gauss_next)``; the 625 ints (the Mersenne
      Twister's 624 words and its position) become an int64 tensor.
    * ``"numpy"``: ``np.random.get_state()`` is ``("MT19937", 624 uint32 words, position, has_gauss,
      cached_gaussian)``; the words become an int64 tensor.
    * ``"torch"``: ``torch.get_rng_state()``, already a uint8 tensor; ``"torch_cuda"``: one such tensor
      per GPU, present only when CUDA is available.
    """
    version, internal_state, gauss_next = random.getstate()
    algorithm, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    state = {
        "python": {
            "version": version,
            "internal_state": torch.tensor(internal_state, dtype=torch.int64),  # (625,)
            "gauss_next": gauss_next,  # a float, or None when no spare Gaussian is cached
        },
        "numpy": {
            "algorithm": algorithm,
            "keys": torch.from_numpy(keys.astype(np.int64)),  # (624,)
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),  # uint8 tensor
    }
    if torch.cuda.is_available():
        state["torch_cuda"] = torch.cuda.get_rng_state_all()  # list of uint8 tensors, one per GPU
    return state


def set_rng_state(state: dict) -> None:
    """Restore the generators from a dict made by :func:`rng_state` (possibly after a save/load round trip).

    A ``"torch_cuda"`` entry is restored only when CUDA is available, so a GPU run can be resumed on a CPU
    (its CPU-side random numbers then match; the GPU's cannot).
    """
    for key in ("python", "numpy", "torch"):
        if key not in state:
            raise CheckpointError(f"rng state: missing the {key!r} entry (expected a dict made by rng_state())")
    python = state["python"]
    random.setstate((python["version"], tuple(python["internal_state"].tolist()), python["gauss_next"]))
    numpy = state["numpy"]
    keys = numpy["keys"].numpy().astype(np.uint32)
    np.random.set_state((numpy["algorithm"], keys, numpy["position"], numpy["has_gauss"], numpy["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())
    if "torch_cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([generator_state.cpu() for generator_state in state["torch_cuda"]])
