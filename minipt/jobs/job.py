"""A job as the command line asks about it: its settings, what a resumed run may change, and which run folders
are its own.

There is one :class:`Job` per training job, here: :data:`PRETRAIN`, :data:`FINETUNE`, :data:`DEMO` (the job
modules import this file, so it imports none of them). The ``minipt`` command asks them two questions and decides
nothing itself:

* ``--resume RUN_DIR`` with more flags: :meth:`Job.resume_config` keeps the run's saved settings, so only how it
  computes (:data:`~minipt.runs.settings.HOW_TO_COMPUTE`, plus the job's own exceptions, e.g. pretraining's
  ``--steps``) may be given; any other flag is one line naming it;
* "is this folder a finetuning run?": :meth:`Job.made` reads its ``config.json``. A finetuning run keeps the
  pretraining section of the run it started from, so a folder is a pretraining run only when no finetuning
  section is there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from minipt.errors import MiniptError
from minipt.runs.settings import HOW_TO_COMPUTE, flag

__all__ = ["Job", "PRETRAIN", "FINETUNE", "DEMO"]


@dataclass(frozen=True)
class Job:
    """``name`` (the sub-command), ``resumable`` (the settings a resumed run may change), ``sections`` (a
    ``config.json`` holding any of them is this job's) and ``not_sections`` (one holding any of them is not, though
    it has a section of this job's)."""

    name: str
    resumable: tuple[str, ...] = HOW_TO_COMPUTE
    sections: tuple[str, ...] = ()
    not_sections: tuple[str, ...] = ()

    def made(self, saved: dict) -> bool:
        """Whether the run whose ``config.json`` holds ``saved`` is a run of this job."""
        return any(name in saved for name in self.sections) and not any(name in saved for name in self.not_sections)

    def resume_config(self, config_class: type, given: dict[str, Any], other_options: Sequence[str] = (),
                      **placeholders: Any) -> Any:
        """The ``config_class`` a resumed run starts from: the settings ``given`` on the command line, which may only be
        resumable ones (``other_options``: the run options given too, e.g. ``--out``, refused as well), and
        ``placeholders`` for required settings the run's ``config.json`` will supply. The job then reads the saved
        settings and keeps these."""
        refused = [flag(field) for field in fields(config_class)
                   if field.name in given and field.name not in self.resumable]
        refused += [option for option in other_options if option not in refused]
        if refused:
            names = ", ".join(refused)
            raise MiniptError(f"--resume continues a run with its saved settings; do not also pass {names}")
        return config_class(**{**placeholders, **given})

    def resumed(self, saved: Any, given: Any) -> Any:
        """The settings a resumed run goes on with: its ``saved`` config, computing as the ``given`` one says
        (device, threads, compile). A resumable setting that changes what is trained (pretraining's ``--steps``, a
        new end) is the job's to apply."""
        return replace(saved, **{name: getattr(given, name) for name in HOW_TO_COMPUTE})


FINETUNE = Job("finetune", sections=("finetune", "classifier"))
PRETRAIN = Job("pretrain", resumable=(*HOW_TO_COMPUTE, "steps"), sections=("pretrain",),
               not_sections=FINETUNE.sections)
DEMO = Job("demo")  # a demo folder has demo.json, not config.json: --resume reads that
