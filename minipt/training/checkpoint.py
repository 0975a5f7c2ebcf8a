r"""Checkpoints: atomic saves, weights-only loads and the random-number state a resumed run needs.

A training run writes ``last.pt`` again and again; :func:`save_checkpoint` writes it with
:func:`minipt.runs.folder.write_atomic` (a temporary file renamed over the final name), so a process that dies while
saving leaves the previous good checkpoint in place, never half a file.

:func:`load_checkpoint` reads with ``torch.load(..., weights_only=True)``. A checkpoint is a pickle, and
unpickling an untrusted pickle can run any code it names (``__reduce__`` may return ``os.system`` and a
command). Weights-only loading accepts only tensors, numbers, strings, lists, tuples and dicts, so a
tampered file is refused instead of executed. Everything a checkpoint holds must therefore be made of those:
model and optimizer ``state_dict()``\ s are, and :func:`rng_state` converts the random generators' states to them.

Errors are :class:`~minipt.errors.MiniptError` with a one-line message naming the file and the problem.
"""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path

import numpy as np
import torch

from minipt.errors import MiniptError
from minipt.runs.folder import write_atomic

__all__ = ["save_checkpoint", "load_checkpoint", "load_weights", "rng_state", "set_rng_state", "architecture_of",
           "check_architecture"]


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Write ``state`` (a dict of tensors, numbers, strings, lists and dicts) to ``path`` atomically.

    After this returns, ``path`` holds the new checkpoint; if the process dies during the call, ``path`` still
    holds the previous one (or does not exist, if there was none). Leftover temporary files
    ``.{name}.tmp-*`` from an interrupted earlier save are removed first.
    """
    if not isinstance(state, dict):
        raise MiniptError(f"{path}: a checkpoint must be a dict, got {type(state).__name__}")
    write_atomic(path, lambda file: torch.save(state, file))


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


ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since torch 1.6: a zip archive
PICKLE_MAGIC = b"\x80"  # a pickle of protocol 2 or later (torch's older format, or pickle.dump) starts with it


def _is_zip_or_pickle(path: Path) -> bool:
    """The file starts as a zip archive or a pickle does (what ``torch.load`` can read at all)."""
    with path.open("rb") as file:
        head = file.read(len(ZIP_MAGIC))
    return head.startswith(ZIP_MAGIC) or head.startswith(PICKLE_MAGIC)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu", mmap: bool = False) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`, refusing anything but plain data.

    Tensors are placed on ``map_location`` (default ``"cpu"``, so a GPU run's checkpoint loads anywhere).
    ``mmap=True`` maps the tensors' bytes instead of reading them (quick, to look at the counters only).
    Raises :class:`MiniptError` for a missing file, a truncated or corrupt file, a file holding Python
    objects that weights-only loading refuses (a tampered pickle that would run code), or one that does
    not hold a dict.
    """
    path = Path(path)
    if not path.is_file():
        problem = "is a folder, not a checkpoint file" if path.is_dir() else "no such checkpoint file"
        raise MiniptError(f"{path}: {problem}")
    if path.stat().st_size and not _is_zip_or_pickle(path):  # random bytes, a text file: never written by torch.save
        raise MiniptError(f"{path}: not a checkpoint ({path.stat().st_size} bytes, unreadable)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        raise MiniptError(
            f"{path}: refused, the file holds objects that weights-only loading does not allow "
            f"(a checkpoint that could run code): {_unsafe_reason(error)}"
        ) from None
    except Exception as error:  # zip/pickle readers fail with RuntimeError, EOFError, KeyError, ... on damage
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise MiniptError(f"{path}: not a readable checkpoint (truncated or corrupt): {first_line}") from None
    if not isinstance(state, dict):
        raise MiniptError(f"{path}: a checkpoint must hold a dict, this one holds {type(state).__name__}")
    return state


def load_weights(model: torch.nn.Module, state_dict: dict, path: str | os.PathLike) -> None:
    """``model.load_state_dict(state_dict)``; weights of another shape or kind of model (e.g. a finetuning run's
    classifier where a language model is expected) are a :class:`MiniptError` naming ``path``, not a traceback."""
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as error:
        detail = " ".join(str(error).split())  # torch lists every key on its own line
        raise MiniptError(f"{path}: the weights do not fit this model ({detail[:300]})") from None


# ----------------------------------------------------------------------------------------------------------
# The architecture the weights were trained with
# ----------------------------------------------------------------------------------------------------------


def architecture_of(model: torch.nn.Module) -> dict:
    """The constructor arguments of ``model`` and of each sub-model that keeps them in a ``config`` dict (a
    classifier's ``backbone``, a next-sentence model's ``lm``), flattened: ``{"num_classes": 2, "pooling":
    "mean", ..., "backbone.n_heads": 2, ...}``. ``fast`` is left out: it changes how the model computes, not what.

    A checkpoint stores this (``"architecture"``) next to the weights, because the weights alone do not say
    everything: ``n_heads`` 2 and 4 give tensors of the same shapes, so edited settings would load silently and
    compute another function."""
    found = {}
    for name, module in model.named_modules():
        config = getattr(module, "config", None)
        if isinstance(config, dict):
            prefix = f"{name}." if name else ""
            found.update({prefix + key: value for key, value in config.items() if key != "fast"})
    return found


def check_architecture(model: torch.nn.Module, checkpoint: dict, path: str | os.PathLike) -> None:
    """Refuse to load ``checkpoint`` into ``model`` when ``model`` was built with other settings than the weights
    were trained with (e.g. an edited ``config.json``); the message names the first setting that differs. A
    checkpoint written before checkpoints stored their architecture is not checked."""
    trained = checkpoint.get("architecture")
    if not isinstance(trained, dict):
        return
    built = architecture_of(model)
    for key in [*trained, *(key for key in built if key not in trained)]:
        before, now = trained.get(key, "(absent)"), built.get(key, "(absent)")
        if before != now:
            raise MiniptError(f"{path}: the weights were trained with {key} = {before!r}, but the run's config.json "
                              f"now gives {now!r}; the settings no longer match the weights (restore config.json)")


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
            raise MiniptError(f"rng state: missing the {key!r} entry (expected a dict made by rng_state())")
    python = state["python"]
    random.setstate((python["version"], tuple(python["internal_state"].tolist()), python["gauss_next"]))
    numpy = state["numpy"]
    keys = numpy["keys"].numpy().astype(np.uint32)
    np.random.set_state((numpy["algorithm"], keys, numpy["position"], numpy["has_gauss"], numpy["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())
    if "torch_cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([generator_state.cpu() for generator_state in state["torch_cuda"]])
