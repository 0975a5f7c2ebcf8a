"""minipt's errors: one class for every mistake a user can make, and one for a training run that failed.

* :class:`MiniptError` (a ``ValueError``) — a bad setting, a missing or broken file, a run folder that cannot be
  used. The message is one line that names the setting (as its ``--flag``), the file or the argument, and the
  problem. ``minipt`` prints it and exits with status 2.
* :class:`TrainingDivergedError` — the loss became NaN or infinite. Not the user's input but the run itself
  failed, so ``minipt`` exits with status 1; the message names the step and the last good checkpoint.
* :class:`RankLostError` — under ``torchrun``, another rank stopped (failed or was killed); status 1 too.

* :func:`warn` — something looks wrong but the job can go on (a label seen only once, a changed data file): one
  line on stderr, ``minipt: warning: ...``.

This is the lowest module of the package: it imports only ``sys``.
"""

from __future__ import annotations

import sys

__all__ = ["MiniptError", "TrainingDivergedError", "RankLostError", "warn"]


class MiniptError(ValueError):
    """A user mistake (setting, file, run folder); the one-line message names it and says what is wrong."""


class TrainingDivergedError(MiniptError):
    """The loss became NaN or infinite; the message names the step and the last good checkpoint."""


class RankLostError(MiniptError):
    """Another rank of a ``torchrun`` job stopped (it failed or was killed), so this one cannot go on."""


def warn(message: str) -> None:
    """Print ``minipt: warning: {message}`` on stderr (one line; the job goes on)."""
    print(f"minipt: warning: {message}", file=sys.stderr, flush=True)
