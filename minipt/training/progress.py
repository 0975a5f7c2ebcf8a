"""Progress: a bar in a terminal, one plain line per evaluation in a log file, and the throughput of both.

A progress bar redraws itself with carriage returns, which a terminal shows as one line. Redirected to a file
(``minipt pretrain ... > log.txt``), read by CI or a batch scheduler, or shown by ``!minipt`` in a notebook,
every redraw becomes a line of its own: thousands for one run. So when stdout or stderr is not a terminal,
:class:`Progress` prints one line per evaluation instead::

    step 250/2000 | loss 3.4012 | val_loss 3.5120 | 11,482 tok/s | 1m02s

Tokens per second are measured per step (the bar) and over the training since the last evaluation ended
(``metrics.jsonl``: evaluating and saving are not counted). The elapsed time carries over a resume.
Under torchrun only rank 0 shows progress.
"""

from __future__ import annotations

import sys
import time

from tqdm import tqdm  # a plain text bar: works in terminals and notebooks alike, no widgets needed

from minipt.training import distributed

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


class Progress:
    """The clock and the display of one training run of ``steps`` steps, started (or resumed) at ``step`` with
    ``tokens_seen`` tokens and ``elapsed_seconds`` behind it. ``shown=False``: measure only, print nothing."""

    def __init__(self, steps: int, step: int, tokens_seen: int, elapsed_seconds: float, shown: bool) -> None:
        now = time.perf_counter()
        self.steps, self.start = steps, now - elapsed_seconds
        self.step_time, self.step_tokens = now, tokens_seen
        self.mark_time, self.mark_tokens = now, tokens_seen
        shown = shown and distributed.is_main()
        self.plain = shown and not is_terminal()  # a log file: one line per evaluation
        self.bar = tqdm(total=steps, initial=step, disable=not shown or self.plain, dynamic_ncols=True)
        self.postfix: dict[str, str] = {}  # what the bar shows after the counter

    def step_started(self, tokens_seen: int) -> None:
        self.step_time, self.step_tokens = time.perf_counter(), tokens_seen

    def step_done(self, tokens_seen: int, loss: float, lr: float) -> float:
        """Show the step's loss, learning rate and tokens per second; return the elapsed seconds."""
        now = time.perf_counter()
        tokens_per_second = (tokens_seen - self.step_tokens) / max(now - self.step_time, 1e-9)
        self.show(loss=f"{loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{tokens_per_second:.0f}")
        self.bar.update(1)
        return now - self.start

    def tokens_per_second(self, tokens_seen: int) -> float:
        """Training throughput since :meth:`mark` (the end of the last evaluation)."""
        return (tokens_seen - self.mark_tokens) / max(time.perf_counter() - self.mark_time, 1e-9)

    def evaluated(self, record: dict, monitor: str) -> None:
        """Show an evaluation's ``record`` (a ``metrics.jsonl`` line): the monitored value on the bar, or one
        plain line in a log file."""
        if self.plain:
            print(progress_line(record["step"], self.steps, record["train_loss"], record, record["tokens_per_second"],
                                record["elapsed_seconds"]), flush=True)
        self.show(**{monitor: f"{record[monitor]:.4f}"})

    def mark(self, tokens_seen: int) -> None:
        """Restart the throughput clock (after an evaluation and its saves)."""
        self.mark_time, self.mark_tokens = time.perf_counter(), tokens_seen

    def show(self, **values: str) -> None:
        self.postfix.update(values)
        self.bar.set_postfix(self.postfix)

    def close(self) -> None:
        self.bar.close()
