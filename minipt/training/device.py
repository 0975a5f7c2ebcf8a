"""Where the loop computes: the device, the CPU threads, moving a batch there, bf16 autocast on a GPU.

Small helpers of :func:`minipt.training.loop.train`, kept out of the loop so that it reads as its steps.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import Tensor

from minipt.errors import MiniptError
from minipt.runs.settings import DEVICES
from minipt.training import distributed

__all__ = ["Batch", "resolve_device", "use_threads", "move_to_device", "count_tokens", "autocast_context"]

Batch = Any  # a tensor, or a tuple / list / dict of tensors (and plain values)


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> CUDA when present, else CPU; ``"cuda"`` without a GPU is a :class:`~minipt.errors.MiniptError`."""
    if device not in DEVICES:
        raise MiniptError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise MiniptError("device 'cuda' was asked for but no CUDA GPU is available (use --device cpu or auto)")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def use_threads(threads: int) -> None:
    """Let torch use ``threads`` CPU threads; 0 means every core (``os.cpu_count()``), shared out among the ranks
    of a torchrun job on this machine."""
    torch.set_num_threads(threads or distributed.cores_per_rank())


def move_to_device(batch: Batch, device: torch.device) -> Batch:
    """The same structure with every tensor moved to ``device`` (tuples, lists and dicts are walked)."""
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {key: move_to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, tuple | list):
        return type(batch)(move_to_device(value, device) for value in batch)
    return batch


def count_tokens(batch: Batch) -> int:
    """Tokens in a batch: the number of elements of its first tensor (the input ids ``(B, T)``)."""
    if isinstance(batch, Tensor):
        return batch.numel()
    values = batch.values() if isinstance(batch, dict) else batch
    return count_tokens(next(iter(values)))


def autocast_context(device: torch.device) -> AbstractContextManager:
    """bf16 autocast on CUDA (matrix products in bfloat16, reductions in float32); nothing on the CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()
