"""Progress: a bar in a terminal, one plain line per evaluation in a log file.

A progress bar redraws itself with carriage returns, which a terminal shows as one line. Redirected to a file
(``minipt pretrain ... > log.txt``), read by CI or a batch scheduler, or shown by ``!minipt`` in a notebook,
every redraw becomes a line of its own: thousands for one run. So when stdout or stderr is not a terminal,
:class:`Progress` prints one line per evaluation instead::

    step 250/2000 | loss 3.4012 | val_loss 3.5120 | 11,482 tok/s | 1m02s

:class:`Progress` is one of the loop's callbacks (:mod:`minipt.training.callbacks`); the numbers it shows come from
the loop's clock (:mod:`minipt.training.clock`). Under torchrun only rank 0 shows progress.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from tqdm import tqdm  # a plain text bar: works in terminals and notebooks alike, no widgets needed

from minipt.training import distributed
from minipt.training.callbacks import Callback

if TYPE_CHECKING:
    from minipt.training.state import LoopState, TrainingState

__all__ = ["is_terminal", "progress_line", "Progress"]


def is_terminal() -> bool:
    """stdout and stderr are both terminals (a bar redraws in place there)."""
    return all(stream is not None and stream.isatty() for stream in (sys.stdout, sys.stderr))


def format_seconds(seconds: float) -> str:
    """``62.4`` -> ``1m02s``; ``3725`` -> ``1h02m05s``."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def progress_line(step: int, steps: int, loss: float, evaluation: dict[str, float], tokens_per_second: float,
                  elapsed_seconds: float) -> str:
    """One evaluation as one line: step, training loss since the last evaluation, the validation numbers
    (``val_...``), tokens per second and the elapsed time."""
    values = " | ".join(f"{name} {value:.4f}" for name, value in evaluation.items() if name.startswith("val_"))
    return (f"step {step}/{steps} | loss {loss:.4f} | {values} | {tokens_per_second:,.0f} tok/s | "
            f"{format_seconds(elapsed_seconds)}")


class Progress(Callback):
    """The display of a training run of ``steps`` steps: the step's loss, learning rate and tokens per second on a
    bar, the ``monitor``-ed value after each evaluation (or one plain line per evaluation in a log file).
    ``shown=False``: print nothing."""

    def __init__(self, steps: int, monitor: str, shown: bool) -> None:
        self.steps, self.monitor = steps, monitor
        self.shown = shown and distributed.is_main()
        self.plain = self.shown and not is_terminal()  # a log file: one line per evaluation
        self.bar: tqdm | None = None
        self.postfix: dict[str, str] = {}  # what the bar shows after the counter

    def on_train_start(self, state: TrainingState, resumed: bool) -> None:
        self.bar = tqdm(total=self.steps, initial=state.loop.step, disable=not self.shown or self.plain,
                        dynamic_ncols=True)

    def on_step_end(self, loop: LoopState, loss: float, lr: float, tokens_per_second: float) -> None:
        self.show(loss=f"{loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{tokens_per_second:.0f}")
        self.bar.update(1)

    def on_evaluation(self, record: dict) -> None:
        """The monitored value on the bar, or one plain line in a log file."""
        if self.plain:
            print(progress_line(record["step"], self.steps, record["train_loss"], record, record["tokens_per_second"],
                                record["elapsed_seconds"]), flush=True)
        self.show(**{self.monitor: f"{record[self.monitor]:.4f}"})

    def show(self, **values: str) -> None:
        self.postfix.update(values)
        self.bar.set_postfix(self.postfix)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
