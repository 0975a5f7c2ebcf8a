r"""Data parallelism on PyTorch's own engine: ``torchrun`` starts the processes, DDP averages the gradients.

``torchrun --nproc-per-node N -m minipt pretrain ...`` starts ``N`` copies of the same job, the *ranks*
``0 .. N-1``, and tells each who it is through environment variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``). Every rank holds the whole model and draws its own batches;
:class:`torch.nn.parallel.DistributedDataParallel` all-reduces the gradients during ``backward``, so after it
every rank holds the average

.. math:: g = \frac{1}{N}\sum_{r=0}^{N-1} \nabla \mathcal{L}_r ,

the gradient of one batch ``N`` times larger (the *global batch*), and the identical optimizer steps keep the
ranks' weights identical. Rank 0 alone evaluates on the validation split and writes the run folder; the others
wait at the next collective.

This module is the machinery; the loop and the jobs call it at a few marked places. Without ``torchrun`` every
helper here is a no-op (rank 0 of a world of 1), so a plain ``minipt pretrain`` runs exactly as before.
Backends: ``gloo`` for CPU tensors, ``nccl`` for CUDA tensors (both when a GPU is present).
"""

from __future__ import annotations

import datetime
import os
import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext, redirect_stdout
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from minipt.errors import MiniptError, RankLostError
from minipt.training import interrupts

__all__ = [
    "launched",
    "is_distributed",
    "rank",
    "world_size",
    "is_main",
    "barrier",
    "all_reduce_mean",
    "broadcast",
    "gather",
    "shard",
    "cores_per_rank",
    "rank_seed",
    "log_global_batch",
    "agreed_signal",
    "on_main",
    "DataParallel",
]

TIMEOUT = datetime.timedelta(minutes=10)  # a collective waiting longer than this fails instead of hanging
JOBS = ("pretrain", "finetune")  # the commands that run under torchrun
LOST_CONNECTION = ("connection closed", "connection reset", "broken pipe", "socket", "timed out", "nccl")


# ----------------------------------------------------------------------------------------------------------
# Who am I: rank and world size
# ----------------------------------------------------------------------------------------------------------


def launched_by_torchrun() -> bool:
    """``torchrun`` (or anything that sets the same variables) started this process as one rank of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def is_distributed() -> bool:
    """A process group of more than one rank is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """The number of ranks (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Rank 0: the one that evaluates, prints and writes the run folder."""
    return rank() == 0


def cores_per_rank() -> int:
    """The CPU cores of this machine shared out among the ranks on it (``LOCAL_WORLD_SIZE``): every core when
    there is one process."""
    ranks_here = int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if is_distributed() else 1
    return max(1, (os.cpu_count() or 1) // ranks_here)


def rank_seed(seed: int) -> int:
    """The data sampler's seed of this rank: ``seed + rank``, so the ranks draw different batches (rank 0, and a
    single process, keep ``seed``)."""
    return seed + rank()


# ----------------------------------------------------------------------------------------------------------
# Starting and stopping
# ----------------------------------------------------------------------------------------------------------


def init_from_env() -> None:
    """Join the process group described by torchrun's environment variables. With a GPU each rank takes the
    GPU ``LOCAL_RANK`` and CUDA tensors travel over NCCL; CPU tensors always travel over gloo."""
    backend = "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        backend = "cpu:gloo,cuda:nccl"
    dist.init_process_group(backend=backend, timeout=TIMEOUT)


def is_lost_connection(error: BaseException) -> bool:
    """The error a collective raises when a peer died: a ``DistError`` or a transport failure."""
    message = str(error).lower()
    return isinstance(error, dist.DistError) or any(words in message for words in LOST_CONNECTION)


@contextmanager
def launched(command: str) -> Iterator[None]:
    """Run ``minipt COMMAND`` as one rank of a torchrun job (when torchrun started this process; otherwise do
    nothing): join the process group, silence the standard output of ranks other than 0, leave the group at
    the end, and turn a collective that failed because another rank stopped into a one-line
    :class:`~minipt.errors.RankLostError`. Only ``pretrain`` and ``finetune`` run under torchrun. A process
    that already joined a process group runs the command in it as it is."""
    if not launched_by_torchrun() or is_distributed():
        yield
        return
    if command not in JOBS:
        raise MiniptError(f"minipt {command} runs in one process; only minipt pretrain and minipt finetune run "
                          "under torchrun")
    init_from_env()
    quiet = open(os.devnull, "w") if not is_main() else None  # noqa: SIM115 (closed below)
    try:
        with redirect_stdout(quiet) if quiet else nullcontext(), interrupts.ranks_stop_together():
            yield
    except RuntimeError as error:
        if not is_lost_connection(error):
            raise
        reason = re.sub(r"^\[[^\]]*\]\s*", "", str(error).strip()).split(". ")[0]  # no "[file.cc:537] " prefix
        then = ("the run folder keeps its last checkpoint: continue it with `torchrun ... -m minipt pretrain --resume "
                "RUN_DIR`" if command == "pretrain" else "start the finetuning again into a new --out folder")
        raise RankLostError(f"rank {rank()} of {world_size()} lost contact with the other ranks: one of them stopped "
                            f"or was killed ({reason or type(error).__name__}); {then}") from None
    finally:
        if quiet:
            quiet.close()
        dist.destroy_process_group()


# ----------------------------------------------------------------------------------------------------------
# Collectives on plain values (no-ops in a single process)
# ----------------------------------------------------------------------------------------------------------


def barrier() -> None:
    """Wait until every rank reaches this point."""
    if is_distributed():
        dist.barrier()


def all_reduce_mean(value: float) -> float:
    """The mean of ``value`` over the ranks (in float64)."""
    if not is_distributed():
        return value
    tensor = torch.tensor([value], dtype=torch.float64)  # gloo: a CPU tensor
    dist.all_reduce(tensor)
    return tensor.item() / world_size()


def broadcast(value: Any) -> Any:
    """Rank 0's ``value`` (any picklable object), on every rank."""
    if not is_distributed():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(value: Any) -> list:
    """Every rank's ``value``, in rank order, on every rank (``[value]`` in a single process)."""
    if not is_distributed():
        return [value]
    values = [None] * world_size()
    dist.all_gather_object(values, value)
    return values


def agreed_signal(signum: int | None) -> int | None:
    """The signal any rank received (the larger number when they differ: SIGTERM over SIGINT), on every rank, or
    None: the loop asks at the start of every step, so that every rank stops at the same step."""
    if not is_distributed():
        return signum
    tensor = torch.tensor([signum or 0], dtype=torch.int64)  # gloo: a CPU tensor
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return int(tensor.item()) or None


@contextmanager
def on_main(context: Callable[[], AbstractContextManager]) -> Iterator[None]:
    """Enter ``context()`` on rank 0 alone for the body (the run folder's checks and lock: rank 0 writes the run); a
    :class:`~minipt.errors.MiniptError` it raises is raised on every rank, printed by rank 0."""
    if not is_distributed():
        with context():
            yield
        return
    with ExitStack() as stack:
        error = None
        if is_main():
            try:
                stack.enter_context(context())
            except MiniptError as failure:
                error = str(failure)
        error = broadcast(error)
        if error is not None:
            raise MiniptError(error)
        yield


# ----------------------------------------------------------------------------------------------------------
# Data: the distributed sampler's rule
# ----------------------------------------------------------------------------------------------------------


def shard(order: list[int]) -> list[int]:
    """This rank's share of an epoch's ``order``: the items ``rank, rank + N, rank + 2N, ...`` after the order is
    padded by repeating its start to a multiple of ``N`` (as :class:`torch.utils.data.DistributedSampler` does),
    so every rank gets the same number of items. A single process gets ``order`` itself."""
    n = world_size()
    if n == 1:
        return order
    padded = order + order[: (-len(order)) % n]
    return padded[rank() :: n]


def log_global_batch(batch_size: int, grad_accum: int, unit: str) -> None:
    """Print (rank 0 of a torchrun job only) how the global batch is made: ranks x batch x accumulation."""
    if is_distributed() and is_main():
        global_batch = world_size() * batch_size * grad_accum
        print(f"distributed: {world_size()} ranks x --batch-size {batch_size} x --grad-accum {grad_accum} = "
              f"global batch of {global_batch} {unit} per step", flush=True)


# ----------------------------------------------------------------------------------------------------------
# The model: DDP around the model *and* its loss
# ----------------------------------------------------------------------------------------------------------


class LossOf(nn.Module):
    """``forward(batch) = loss_fn(model, batch)``: the objective as one module, so that DDP sees a forward pass
    whatever parts of the model the loss calls (finetuning on cached hidden states calls only the top layers)."""

    def __init__(self, model: nn.Module, loss_fn: Callable[[nn.Module, Any], Tensor]) -> None:
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, batch: Any) -> Tensor:
        return self.loss_fn(self.model, batch)


def reached_parameters(loss: Tensor) -> set[int]:
    """The ``id`` of every tensor whose gradient ``loss.backward()`` would fill: the leaves of its autograd
    graph (walked from ``loss.grad_fn`` through ``next_functions``)."""
    reached, seen, stack = set(), set(), [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if hasattr(node, "variable"):  # an AccumulateGrad node: it writes the .grad of a leaf tensor
            reached.add(id(node.variable))
        stack.extend(next_node for next_node, _ in node.next_functions)
    return reached


class DataParallel:
    """``loss(batch)``: the objective's loss, with the gradients averaged over the ranks during ``backward``.

    In a single process it is ``loss_fn(model, batch)`` itself. Under torchrun the model and its loss are
    wrapped in :class:`~torch.nn.parallel.DistributedDataParallel` over the parameters that train; when a
    callback freezes or unfreezes parameters (gradual unfreezing) the wrapper is built again over the new set.
    Before wrapping, one forward pass (its random numbers given back) finds whether the loss leaves some trained
    parameters unused (a classifier never calls its backbone's LM head); only then does DDP look for them at every
    step (``find_unused_parameters``).
    ``sync=False`` (every micro-batch of an accumulated step but the last) skips the all-reduce: the local
    gradients keep adding up, and the last micro-batch's ``backward`` averages their sum.
    """

    def __init__(self, model: nn.Module, loss_fn: Callable[[nn.Module, Any], Tensor]) -> None:
        self.model, self.loss_fn = model, loss_fn
        self.ddp: nn.parallel.DistributedDataParallel | None = None
        self.training: tuple[bool, ...] = ()

    def loss(self, batch: Any, sync: bool = True) -> Tensor:
        if not is_distributed():
            return self.loss_fn(self.model, batch)
        training = tuple(p.requires_grad for p in self.model.parameters())
        if self.ddp is None or training != self.training:
            self.ddp, self.training = self.wrap(batch), training
        with nullcontext() if sync else self.ddp.no_sync():
            return self.ddp(batch)

    def wrap(self, batch: Any) -> nn.parallel.DistributedDataParallel:
        """DDP around the model and its loss, told whether ``batch``'s loss leaves trained parameters unused."""
        device = next(self.model.parameters()).device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            reached = reached_parameters(self.loss_fn(self.model, batch))
        unused = any(p.requires_grad and id(p) not in reached for p in self.model.parameters())
        return nn.parallel.DistributedDataParallel(
            LossOf(self.model, self.loss_fn), device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=unused,
        )
