"""The hooks of the training loop: what runs around :func:`minipt.training.loop.train`'s steps.

The loop itself only steps, evaluates and checkpoints. Everything else is a :class:`Callback` it is given, called
at six moments, in the order the callbacks were given::

    on_train_start(state, resumed)            once, after the state is built (and restored, on resume)
    for each optimizer step:
        on_step_start(step, model, optimizer)   before the step fetches its first micro-batch
        on_step_end(loop, loss, lr, tokens_per_second)
        on_evaluation(record)                   after an evaluation: its metrics.jsonl line
    on_train_end(result, loop)                once, when the loop ends normally
    close()                                   always, also when training stops on an error or Ctrl-C

The standard ones (:func:`minipt.training.loop.standard_callbacks`) are the run's records
(:class:`~minipt.training.records.RunRecords`), the progress bar (:class:`~minipt.training.progress.Progress`) and
the stop on Ctrl-C (:class:`~minipt.training.stopping.StopOnSignal`); a job adds its own, e.g. gradual
unfreezing (:class:`~minipt.training.strategies.GradualUnfreezing`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for the type hints only: the loop imports this file, not the other way round
    import torch
    from torch import nn

    from minipt.training.state import LoopState, TrainingState

__all__ = ["Callback"]


class Callback:
    """A hook into the training loop; subclass it and override what you need (each method does nothing by default).

    ``on_step_start(step, model, optimizer)`` runs before optimizer step ``step`` (counting from 0) fetches its
    first micro-batch, before the loop sets the modules' modes (:func:`~minipt.models.modes.train_mode`). Changing
    which parameters are frozen here is safe: a frozen parameter gets no gradient, so AdamW neither updates nor
    decays it.
    """

    def on_train_start(self, state: TrainingState, resumed: bool) -> None:
        """Called once before the first step (``resumed``: the state was read back from ``last.pt``)."""

    def on_step_start(self, step: int, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Called at the start of every optimizer step."""

    def on_step_end(self, loop: LoopState, loss: float, lr: float, tokens_per_second: float) -> None:
        """Called after every optimizer step with its loss, learning rate and throughput."""

    def on_evaluation(self, record: dict) -> None:
        """Called after every evaluation with its ``metrics.jsonl`` line (step, losses, validation numbers...)."""

    def on_train_end(self, result: Any, loop: LoopState) -> None:
        """Called once when the loop ends normally (``result``: the :class:`~minipt.training.loop.TrainResult`)."""

    def close(self) -> None:
        """Called last, however the loop ended: release what the callback holds (a progress bar, a file)."""
