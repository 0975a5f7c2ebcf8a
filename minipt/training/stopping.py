"""Stopping on Ctrl-C or SIGTERM between two steps: the loop's callback that acts on a signal.

Inside :func:`minipt.training.interrupts.deferred` (the jobs run the loop there) a signal is only recorded.
:class:`StopOnSignal` looks at the start of every step, where the state is whole: under torchrun every rank asks,
so that all of them stop at the same step. It saves ``last.pt`` (after at least one step) and raises
:class:`~minipt.training.interrupts.Interrupted`. A signal that comes during the last evaluation is handed back to
:mod:`~minipt.training.interrupts`, which raises it when training ends.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from minipt.training import distributed, interrupts
from minipt.training.callbacks import Callback

if TYPE_CHECKING:
    import torch
    from torch import nn

    from minipt.training.state import LoopState, TrainingState

__all__ = ["StopOnSignal"]


class StopOnSignal(Callback):
    """Stop the loop at the start of the next step after Ctrl-C or SIGTERM, saving ``last_path`` first."""

    def __init__(self, last_path: Path) -> None:
        self.last_path = last_path
        self.state: TrainingState | None = None

    def on_train_start(self, state: TrainingState, resumed: bool) -> None:
        self.state = state

    def on_step_start(self, step: int, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        signum = distributed.agreed_signal(interrupts.pending())  # every rank of a torchrun job asks
        if signum is not None:
            self.state.stop(self.last_path, signum)  # saves last.pt (after a step) and raises Interrupted

    def on_train_end(self, result: Any, loop: LoopState) -> None:
        if (signum := distributed.agreed_signal(interrupts.pending())) is not None:
            interrupts.record(signum)  # it came during the last evaluation: every rank raises it after training
