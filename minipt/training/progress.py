"""Progress in a log file: one plain line per evaluation instead of a redrawn bar.

A progress bar redraws itself with carriage returns, which a terminal shows as one line. Redirected to a file
(``minipt pretrain ... > log.txt``), read by CI or a batch scheduler, or shown by ``!minipt`` in a notebook,
every redraw becomes a line of its own: thousands for one run. So when stdout or stderr is not a terminal,
the training loop prints one line per evaluation instead::

    step 250/2000 | loss 3.4012 | val_loss 3.5120 | 11,482 tok/s | 1m02s
"""

from __future__ import annotations

import sys

__all__ = ["is_terminal", "progress_line"]


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
