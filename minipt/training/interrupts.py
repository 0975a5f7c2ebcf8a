"""Ctrl-C and ``kill``: a training run stops at the end of a step, saves ``last.pt`` and says how to continue.

By default Python turns Ctrl-C (SIGINT) into a ``KeyboardInterrupt`` wherever the program happens to be, for
example between ``optimizer.step()`` and ``scheduler.step()``; a checkpoint saved from there would mix two
steps. And ``kill`` (SIGTERM, what a batch scheduler sends at the end of a job's time) ends the process at once,
with nothing saved. So:

* :func:`signals_raise` (the ``minipt`` command installs it) turns both signals into :class:`Interrupted`, a
  ``KeyboardInterrupt`` that remembers which signal came; the command catches it and exits with status
  ``128 + signal number``: 130 for SIGINT, 143 for SIGTERM, as a shell reports a process ended by the signal;
* inside the training loop, :func:`deferred` only *records* a signal; the loop calls :func:`pending` at the start
  of every step, where the state is whole, saves ``last.pt`` there and raises :class:`Interrupted` itself.
  A second signal does not wait: it raises at once (nothing more is saved).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["Interrupted", "signals_raise", "deferred", "pending"]

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_received: list[int] = []  # the signals recorded while deferred (the loop reads the first)


class Interrupted(KeyboardInterrupt):
    """A run stopped by SIGINT or SIGTERM. ``step``: the optimizer steps done; ``saved``: ``last.pt`` holds them;
    ``run_dir``: the run's folder (None when the signal came outside the training loop)."""

    def __init__(self, signum: int, step: int = 0, saved: bool = False, run_dir: Path | None = None) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum, self.step, self.saved, self.run_dir = signum, step, saved, run_dir

    @property
    def exit_status(self) -> int:
        """128 + the signal's number: 130 for SIGINT, 143 for SIGTERM."""
        return 128 + self.signum


def _raise(signum: int, frame: object) -> None:
    raise Interrupted(signum)


def _record(signum: int, frame: object) -> None:
    if _received:  # the second signal: stop now
        raise Interrupted(signum)
    _received.append(signum)


@contextmanager
def _handlers(handler: object) -> Iterator[None]:
    """Install ``handler`` for SIGINT and SIGTERM during the body (only the main thread may; elsewhere, nothing)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, handler) for signum in SIGNALS}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


@contextmanager
def signals_raise() -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`Interrupted` during the body."""
    with _handlers(_raise):
        yield


@contextmanager
def deferred() -> Iterator[None]:
    """SIGINT and SIGTERM are only recorded during the body; :func:`pending` tells the loop."""
    _received.clear()
    try:
        with _handlers(_record):
            yield
    finally:
        _received.clear()


def pending() -> int | None:
    """The signal recorded by :func:`deferred` and not yet acted on, or None."""
    return _received[0] if _received else None
