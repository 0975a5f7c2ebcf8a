"""What a checkpoint holds: the loop's counters (:class:`LoopState`) and everything needed to continue exactly
(:class:`TrainingState`: weights, optimizer, schedule, counters and every random state).

A checkpoint holds plain types and tensors only (it loads with ``weights_only=True``,
:mod:`minipt.training.checkpoint`), so that training ``N`` steps, saving, resuming and training ``N`` more gives
bit for bit the parameters of ``2N`` uninterrupted steps on the CPU.

The counters are read back by name (:meth:`LoopState.from_saved`): a checkpoint written before a counter was added
still loads (the new counter starts at its default), and one written by a newer minipt with a counter this one does
not know loads too (the unknown counter is ignored).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import NoReturn

import torch
from torch import nn

from minipt.errors import MiniptError
from minipt.training import distributed, interrupts
from minipt.training.checkpoint import (
    architecture_of,
    check_architecture,
    load_checkpoint,
    load_weights,
    rng_state,
    save_checkpoint,
    set_rng_state,
)

__all__ = ["LoopState", "TrainingState"]


@dataclass
class LoopState:
    """The loop's own counters, saved in every checkpoint (plain numbers only)."""

    step: int = 0
    tokens_seen: int = 0
    best_metric: float = math.nan
    best_step: int = 0
    evaluations_without_improvement: int = 0
    train_loss_sum: float = 0.0  # sum of the step losses since the last evaluation
    train_loss_count: int = 0
    elapsed_seconds: float = 0.0

    @classmethod
    def start(cls, mode: str) -> LoopState:
        """The counters before the first step: the best metric is the worst value (``inf`` for ``"min"``)."""
        return cls(best_metric=math.inf if mode == "min" else -math.inf)

    def from_saved(self, saved: dict) -> LoopState:
        """These counters overwritten by the ones a checkpoint saved under their names: a counter the checkpoint
        lacks keeps this state's value, a counter this class does not know is ignored."""
        known = {field.name for field in fields(self)}
        return LoopState(**{**asdict(self), **{name: value for name, value in saved.items() if name in known}})

    def step_done(self, step_loss: float) -> None:
        """Count the optimizer step and add its loss to the running train-loss sum."""
        self.step += 1
        self.train_loss_sum += step_loss
        self.train_loss_count += 1

    def evaluated(self, value: float, mode: str) -> bool:
        """Record the monitored ``value`` of an evaluation at this step; True when it beats the best so far
        (smaller for ``mode == "min"``, larger for ``"max"``)."""
        self.train_loss_sum, self.train_loss_count = 0.0, 0
        improved = value < self.best_metric if mode == "min" else value > self.best_metric
        if improved:
            self.best_metric, self.best_step = value, self.step
            self.evaluations_without_improvement = 0
        else:
            self.evaluations_without_improvement += 1
        return improved

    def out_of_patience(self, patience: int | None) -> bool:
        """``patience`` evaluations in a row without improvement (never, when ``patience`` is None)."""
        return patience is not None and self.evaluations_without_improvement >= patience


@dataclass
class TrainingState:
    """Everything needed to continue exactly: weights, optimizer, schedule, counters and random states."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    generator: torch.Generator | None  # the data sampler's
    loop: LoopState

    def random_states(self) -> dict:
        """This process's random states: torch, Python and NumPy, and the data sampler's generator."""
        return {"rng": rng_state(), "data_generator": None if self.generator is None else self.generator.get_state()}

    def save(self, path: Path) -> None:
        """Write a checkpoint (atomically, and to its end even when Ctrl-C comes meanwhile): plain types and tensors
        only. Under torchrun every rank calls this; rank 0 writes, with the random states of the other ranks under
        ``"other_ranks"``."""
        first, *others = distributed.gather(self.random_states())  # one per rank
        if not distributed.is_main():
            return
        with interrupts.shielded():  # Ctrl-C now (a second one too) waits until the file is whole
            save_checkpoint(path, {
                "model": self.model.state_dict(),
                "architecture": architecture_of(self.model),  # what the weights are: checked when they are loaded
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "loop": asdict(self.loop),
                **first,
                **({"other_ranks": others} if others else {}),
            })

    def restore(self, path: Path) -> None:
        """Load a checkpoint written by :meth:`save` back into the objects and the counters (each rank of a
        torchrun job takes its own random states: the number of ranks must be the same)."""
        checkpoint = load_checkpoint(path)
        ranks = 1 + len(checkpoint.get("other_ranks", []))
        if ranks != distributed.world_size():
            raise MiniptError(f"{path} was written by {ranks} process(es) and this job has "
                              f"{distributed.world_size()}: resume it with torchrun --nproc-per-node {ranks} "
                              "(or without torchrun for 1)")
        check_architecture(self.model, checkpoint, path)
        load_weights(self.model, checkpoint["model"], path)
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        mine = checkpoint if distributed.is_main() else checkpoint["other_ranks"][distributed.rank() - 1]
        set_rng_state(mine["rng"])
        if self.generator is not None:
            self.generator.set_state(mine["data_generator"])
        self.loop = self.loop.from_saved(checkpoint["loop"])

    def stop(self, last_path: Path, signum: int) -> NoReturn:
        """Between two steps, after Ctrl-C or SIGTERM: save ``last.pt`` (when a step was taken) and raise
        :class:`~minipt.training.interrupts.Interrupted`."""
        saved = self.loop.step >= 1
        if saved:
            self.save(last_path)
        raise interrupts.Interrupted(signum, step=self.loop.step, saved=saved, run_dir=last_path.parent)
