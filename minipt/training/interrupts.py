"""Ctrl-C and ``kill``: a run stops at the end of a step, saves ``last.pt`` and says exactly what was saved.

By default Python turns Ctrl-C (SIGINT) into a ``KeyboardInterrupt`` wherever the program happens to be, for
example between ``optimizer.step()`` and ``scheduler.step()`` (a checkpoint saved from there would mix two steps),
or inside ``torch.save`` (half a checkpoint). And ``kill`` (SIGTERM, what a batch scheduler sends at the end of a
job's time) ends the process at once, with nothing saved. So:

* :func:`signals_raise` (the ``minipt`` command installs it before anything else) turns both signals into
  :class:`Interrupted`, a ``KeyboardInterrupt`` that remembers which signal came; the command catches it and exits
  with status ``128 + signal number``: 130 for SIGINT, 143 for SIGTERM, as a shell reports a process ended by the
  signal;
* inside :func:`deferred` (the jobs run the training loop there) a signal is only *recorded*; the loop calls
  :func:`pending` at the start of every step, where the state is whole, saves ``last.pt`` there and raises
  :class:`Interrupted` itself. A second signal waits as well (Ctrl-C pressed twice in a hurry must not cost the
  step, or a whole run that has no ``last.pt`` yet); a third one does not wait: it raises at once, and only the
  ``last.pt`` saved before is kept. A signal that came after the loop's last look (during the last evaluation) is
  raised when the block ends, marked ``after_training``;
* a checkpoint write runs inside :func:`shielded`: whatever comes meanwhile (a third Ctrl-C too) is recorded and
  acted on once the file is whole, so a write is never cut in half;
* under torchrun (:func:`ranks_stop_together`) no signal stops a rank at once: the ranks agree at the start of every
  step, so that all of them stop at the same step (the launcher forwards the signal it gets, and a terminal's Ctrl-C
  reaches every rank as well, so several signals are the rule there).

:func:`in_run` tells an :class:`Interrupted` which run folder and job it stopped, so that the message can say what
is on disk. This module imports only the standard library: the command installs it before importing torch.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["Interrupted", "signals_raise", "deferred", "pending", "shielded", "ranks_stop_together", "in_run",
           "after_training"]

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_received: list[int] = []  # the signals recorded and not yet acted on (the first one counts)
_shield = [0]  # how many shielded() blocks are open (checkpoint writes)
_deferring = [False]  # inside deferred(): signals wait for the loop
_together = [False]  # one rank of a torchrun job: every signal waits
WAITING = 2  # inside deferred(), the first two signals wait for the loop; the third raises at once


class Interrupted(KeyboardInterrupt):
    """A run stopped by SIGINT or SIGTERM. ``step``: the optimizer steps done; ``saved``: the loop stopped between
    two steps and ``last.pt`` holds them; ``run_dir`` and ``job`` (``"pretrain"``, ``"finetune"``): the run it
    stopped (None outside a run); ``after_training``: the last step was done and saved, the signal came later."""

    def __init__(self, signum: int, step: int = 0, saved: bool = False, run_dir: Path | None = None,
                 job: str | None = None, after_training: bool = False) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum, self.step, self.saved, self.run_dir = signum, step, saved, run_dir
        self.job, self.after_training = job, after_training

    @property
    def name(self) -> str:
        """``"SIGINT"`` or ``"SIGTERM"``."""
        return signal.Signals(self.signum).name

    @property
    def exit_status(self) -> int:
        """128 + the signal's number: 130 for SIGINT, 143 for SIGTERM."""
        return 128 + self.signum


def _handle(signum: int, frame: object) -> None:
    """The one handler: record the signal, and raise :class:`Interrupted` unless it must wait (a checkpoint is
    being written; or inside :func:`deferred`, for the first two signals, and under torchrun for every one)."""
    waits = _shield[0] > 0 or (_deferring[0] and (len(_received) < WAITING or _together[0]))
    _received.append(signum)
    if not waits:
        _received.clear()
        raise Interrupted(signum)


@contextmanager
def _handlers() -> Iterator[None]:
    """Install :func:`_handle` for SIGINT and SIGTERM during the body (only the main thread may; elsewhere,
    nothing)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, _handle) for signum in SIGNALS}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


@contextmanager
def signals_raise() -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`Interrupted` during the body (after the write, inside :func:`shielded`)."""
    _received.clear()
    with _handlers():
        yield


@contextmanager
def deferred() -> Iterator[None]:
    """SIGINT and SIGTERM are only recorded during the body; :func:`pending` tells the loop. A signal still pending
    when the body ends (it came after the loop's last look) is raised then, as :class:`Interrupted` with
    ``after_training=True``."""
    _received.clear()
    _deferring[0] = True
    try:
        with _handlers():
            yield
    finally:
        _deferring[0] = False
        left = _received[:1]
        _received.clear()
    if left:
        raise Interrupted(left[0], after_training=True)


def pending() -> int | None:
    """The signal recorded inside :func:`deferred` and not yet acted on, or None."""
    return _received[0] if _received else None


def record(signum: int) -> None:
    """Act as if ``signum`` had come (the ranks of a torchrun job agreed that one of them got it)."""
    if signum not in _received:
        _received.append(signum)


@contextmanager
def shielded() -> Iterator[None]:
    """The body (a checkpoint write) runs to its end: a signal meanwhile is recorded, then acted on as usual — raised
    right after the body outside :func:`deferred`, left for the loop inside it."""
    _shield[0] += 1
    try:
        yield
    finally:
        _shield[0] -= 1
    if _received and not _shield[0] and not _deferring[0]:
        signum = _received[0]
        _received.clear()
        raise Interrupted(signum)


@contextmanager
def ranks_stop_together() -> Iterator[None]:
    """During the body this process is one rank of a torchrun job: every signal waits like the first one."""
    _together[0] = True
    try:
        yield
    finally:
        _together[0] = False


@contextmanager
def in_run(run_dir: Path, job: str) -> Iterator[None]:
    """An :class:`Interrupted` leaving the body stopped the run ``run_dir`` of ``job``: it is told so."""
    try:
        yield
    except Interrupted as stop:
        stop.run_dir = stop.run_dir or Path(run_dir)
        stop.job = stop.job or job
        raise


@contextmanager
def after_training() -> Iterator[None]:
    """An :class:`Interrupted` leaving the body came after the last training step was saved."""
    try:
        yield
    except Interrupted as stop:
        stop.after_training = True
        raise
