"""Each setting in one place: a dataclass field that carries its default, its help text and its rule.

A job's config is a dataclass whose fields are declared with :func:`setting`::

    @dataclass
    class PretrainConfig:
        steps: int = setting(700, "optimizer steps", rule=POSITIVE_INT)
        dropout: float = setting(0.1, "dropout probability", rule=between(0, 1, "[)"))

From those fields alone come the command line's options and their ``--help`` (:mod:`minipt.cli`), the keys a
``--config FILE`` may hold (:func:`read_settings_file`), and the checks run once when a job starts
(:func:`check_settings`), whose messages name the setting by its flag: ``--steps must be a positive integer,
got -5``. A setting is called the same from the flag (``--grad-accum``) to the field (``grad_accum``) and on down to
:class:`minipt.training.loop.TrainConfig`.
"""

from __future__ import annotations

import json
import math
import os
import tomllib
from collections.abc import Callable
from dataclasses import MISSING, Field, dataclass, field, fields
from pathlib import Path
from typing import Any

from minipt.errors import MiniptError

__all__ = [
    "Rule",
    "DEVICES",
    "HOW_TO_COMPUTE",
    "device_setting",
    "threads_setting",
    "compile_setting",
    "seed_setting",
    "lr_setting",
    "weight_decay_setting",
    "grad_clip_setting",
    "grad_accum_setting",
    "POSITIVE_INT",
    "NONE_OR_POSITIVE_INT",
    "COUNT",
    "SEED",
    "MAX_SEED",
    "POSITIVE",
    "NON_NEGATIVE",
    "one_of",
    "between",
    "setting",
    "flag",
    "check_settings",
    "read_settings_file",
    "settings_from_saved",
    "absolute_path",
]


@dataclass(frozen=True)
class Rule:
    """What a setting's value must be: ``test(value)`` is True for a good value; ``message`` is the error, with
    ``{flag}`` and ``{value!r}`` filled in."""

    test: Callable[[Any], bool]
    message: str


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """An int or a finite float: ``inf`` is refused like ``nan`` (an infinite learning rate is no setting)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


MAX_SEED = 2**63 - 1  # torch.manual_seed takes up to 2**64 - 1: room for the small offsets added (rank, split, epoch)
POSITIVE_INT = Rule(lambda v: _is_int(v) and v >= 1, "{flag} must be a positive integer, got {value!r}")
NONE_OR_POSITIVE_INT = Rule(lambda v: v is None or (_is_int(v) and v >= 1),
                            "{flag} must be None or a positive integer, got {value!r}")  # a library-only setting
COUNT = Rule(lambda v: _is_int(v) and v >= 0, "{flag} must be an integer >= 0, got {value!r}")
SEED = Rule(lambda v: _is_int(v) and 0 <= v <= MAX_SEED, "{flag} must be an integer from 0 to 2**63 - 1, got {value!r}")
POSITIVE = Rule(lambda v: _is_number(v) and v > 0, "{flag} must be > 0 and finite, got {value!r}")
NON_NEGATIVE = Rule(lambda v: _is_number(v) and v >= 0, "{flag} must be >= 0 and finite, got {value!r}")


def one_of(*choices: str) -> Rule:
    """The value must be one of ``choices``."""
    return Rule(lambda v: v in choices, "{flag} must be one of " + ", ".join(choices) + "; got {value!r}")


def between(low: float, high: float, brackets: str) -> Rule:
    """A number in the interval from ``low`` to ``high``; ``brackets`` says which ends belong to it: ``"()"``
    neither, ``"[)"`` the low end, ``"(]"`` the high end, ``"[]"`` both."""
    opening, closing = brackets

    def test(v: Any) -> bool:
        return (_is_number(v) and (low <= v if opening == "[" else low < v)
                and (v <= high if closing == "]" else v < high))

    return Rule(test, "{flag} must be in " + f"{opening}{low:g}, {high:g}{closing}" + ", got {value!r}")


def setting(
    default: Any = MISSING,
    help: str = "",
    *,
    rule: Rule | None = None,
    flag: str | None = None,
    aliases: tuple[str, ...] = (),
    architecture: bool = False,
    hidden: bool = False,
    metavar: str | None = None,
    default_text: str | None = None,
) -> Any:
    """A config field with its ``help`` text (shown by ``--help``) and ``rule`` (checked at the job's start).

    ``flag`` overrides the flag made from the name (``from_run`` -> ``--from``); ``aliases`` are older spellings
    still accepted but not shown; ``architecture`` marks a setting that defines the model or the tokenizer, which a
    run continued from another run takes from that run; ``hidden`` keeps the flag out of ``--help``; ``metavar``
    names the value in ``--help`` (default: the name in capitals); ``default_text`` replaces the ``(default: ...)``
    that ``--help`` adds (``""``: none, when the help text says it).
    """
    metadata = {"help": help, "rule": rule, "flag": flag, "aliases": aliases, "architecture": architecture,
                "hidden": hidden, "metavar": metavar, "default_text": default_text}
    return field(default=default, metadata=metadata)


def flag(setting_field: Field) -> str:
    """The command-line flag of a setting: ``batch_size`` -> ``--batch-size`` (unless the field names its own)."""
    return setting_field.metadata.get("flag") or "--" + setting_field.name.replace("_", "-")


def check_settings(config: Any) -> None:
    """Raise :class:`~minipt.errors.MiniptError` for the first field of ``config`` that breaks its rule."""
    for setting_field in fields(config):
        rule = setting_field.metadata.get("rule")
        value = getattr(config, setting_field.name)
        if rule is not None and not rule.test(value):
            raise MiniptError(rule.message.format(flag=flag(setting_field), value=value))


def read_settings_file(path: str, config_class: type, extra: dict[str, type] | None = None) -> dict:
    """The settings of a JSON or TOML ``--config`` file for ``config_class``: keys are the field names (plus the
    ``extra`` keys, e.g. ``{"out": str}``), each value of its field's type (an integer is accepted for a float).
    An unknown key or a value of the wrong type is an error naming the key and the file."""
    file = Path(path)
    if file.suffix.lower() in (".yaml", ".yml"):
        raise MiniptError(f"--config {path}: YAML is not read (minipt has no YAML library); write the settings as "
                          "JSON (.json) or TOML (.toml)")
    try:
        text = file.read_text(encoding="utf-8")
        settings = tomllib.loads(text) if file.suffix == ".toml" else json.loads(text)
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise MiniptError(f"--config {path}: cannot read it ({error})") from None
    if not isinstance(settings, dict):
        raise MiniptError(f"--config {path}: expected a table of settings, got {type(settings).__name__}")
    return _typed_settings(settings, config_class, f"--config {path}", extra)


def _typed_settings(settings: dict, config_class: type, where: str, extra: dict[str, type] | None = None) -> dict:
    """``settings`` checked against the fields of ``config_class`` (and the ``extra`` keys): an unknown key or a
    value of the wrong type is an error that starts with ``where``; an integer becomes a float where one is due."""
    types = {f.name: type(f.default) if f.default is not MISSING else str for f in fields(config_class)}
    types.update(extra or {})
    settings = dict(settings)
    for key, value in settings.items():
        if key not in types:
            raise MiniptError(f"{where}: unknown key {key!r} (known keys: {', '.join(types)})")
        expected = types[key]
        if expected is float and _is_int(value):
            settings[key] = float(value)
        elif not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool):
            raise MiniptError(f"{where}: key {key!r} must be a {expected.__name__}, got {value!r}")
    return settings


def settings_from_saved(config_class: type, saved: dict, section: str, path: str | Path) -> Any:
    """The ``config_class`` of a run, from the ``section`` of its ``config.json`` (``path``, for the messages).

    A missing section, an unknown key (edited, or written by another minipt) or a value of the wrong type is one
    line naming the file, the section and the key, not a ``KeyError`` or ``TypeError``. A key the section lacks
    takes its default (a run written before that setting existed)."""
    if not isinstance(saved.get(section), dict):
        raise MiniptError(f"{path}: no {section!r} section (a config.json that minipt wrote has one; was it edited?)")
    return config_class(**_typed_settings(saved[section], config_class, f"{path}: section {section!r}"))


def absolute_path(name_or_path: str, builtins: tuple[str, ...] = ()) -> str:
    """A path setting as a run records it: absolute (``data/my.txt`` -> ``/home/ana/course/data/my.txt``), so that
    ``--resume`` and ``minipt evaluate`` find the file from any working directory. Built-in names (one of
    ``builtins``), and ``""`` (not set), stay as they are."""
    if not name_or_path or name_or_path in builtins:
        return name_or_path
    return os.path.abspath(os.path.expanduser(name_or_path))


# ----------------------------------------------------------------------------------------------------------
# How a job optimizes: AdamW's settings, defined here once (each job picks its own default)
# ----------------------------------------------------------------------------------------------------------


def lr_setting(default: float) -> Any:
    """``--lr``: AdamW's peak learning rate."""
    return setting(default, "peak learning rate of AdamW", rule=POSITIVE)


def weight_decay_setting(default: float) -> Any:
    """``--weight-decay``: AdamW's decoupled weight decay."""
    return setting(default, "AdamW weight decay (weight matrices only)", rule=NON_NEGATIVE)


def grad_clip_setting() -> Any:
    """``--grad-clip``: the largest global gradient norm."""
    return setting(1.0, "clip the global gradient norm to this value", rule=POSITIVE)


def grad_accum_setting() -> Any:
    """``--grad-accum``: micro-batches per optimizer step."""
    return setting(1, "micro-batches whose gradients are averaged per step", rule=POSITIVE_INT)


# ----------------------------------------------------------------------------------------------------------
# How a job computes: the same settings in every job, defined here once
# ----------------------------------------------------------------------------------------------------------

DEVICES = ("auto", "cpu", "cuda")  # "auto": CUDA when present, else the CPU
HOW_TO_COMPUTE = ("device", "threads", "compile")  # the settings a resumed run may change: how it computes, not what


def seed_setting(default: int, help: str = "random seed (same seed and settings give the same run)") -> Any:
    """``--seed``: every random draw of a job follows from it."""
    return setting(default, help, rule=SEED)


def device_setting() -> Any:
    """``--device``: where a job computes."""
    return setting("auto", "auto (CUDA when present), cpu or cuda", rule=one_of(*DEVICES))


def threads_setting() -> Any:
    """``--threads``: how many CPU threads torch may use."""
    return setting(0, "CPU threads torch may use (0: every core)", rule=COUNT)


def compile_setting() -> Any:
    """``--compile``: ``torch.compile`` the model (benchmarks/RESULTS.md says when it pays)."""
    return setting(False, "torch.compile the model's forward (and backward): faster steps after a compilation "
                   "that takes tens of seconds (benchmarks/RESULTS.md, compile)")
