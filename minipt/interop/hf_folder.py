"""Reading a Hugging Face model folder: ``config.json`` and the weights, with one-line errors.

A folder saved by ``transformers`` (``model.save_pretrained(folder)``, or downloaded from the Hub) holds
``config.json`` (the architecture's sizes) and the weights in ``model.safetensors`` (a plain table of tensors,
read with the ``safetensors`` package) or ``pytorch_model.bin`` (a pickle, read weights-only by
:func:`minipt.training.checkpoint.load_checkpoint`, so a tampered file is refused instead of executed). Nothing is ever
downloaded: the user points at a folder they already have.
"""

from __future__ import annotations

import json
from pathlib import Path

from torch import Tensor

from minipt.errors import MiniptError
from minipt.models import TransformerLM
from minipt.training.checkpoint import load_checkpoint

__all__ = ["read_hf_config", "read_hf_weights", "config_value", "check_shapes", "build_transformer"]

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # the first one present is read


def read_hf_config(folder: str | Path, model_type: str) -> dict:
    """``folder/config.json`` as a dict, after checking that it describes a ``model_type`` model."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MiniptError(f"{folder}: no such folder (a Hugging Face model folder with config.json)")
    path = folder / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MiniptError(f"{path}: missing (a Hugging Face model folder has config.json)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise MiniptError(f"{path}: cannot read JSON ({type(error).__name__}: {error})") from None
    if not isinstance(config, dict) or config.get("model_type") != model_type:
        found = config.get("model_type") if isinstance(config, dict) else None
        raise MiniptError(f"{path}: model_type is {found!r}, expected {model_type!r} (wrong architecture)")
    return config


def config_value(config: dict, key: str, path: Path, kind: type = int, default: float | None = None) -> int | float:
    """``config[key]``, an ``int`` (or, for ``kind=float``, any number); ``default`` when the key is absent and a
    default exists (``transformers``' own default for a field older configs may lack)."""
    value = config.get(key, default)
    kinds = (int, float) if kind is float else (int,)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise MiniptError(f"{path}: {key} must be a{'n' if kind is int else ''} {kind.__name__}, got {value!r}")
    return value


def read_hf_weights(folder: str | Path) -> tuple[dict[str, Tensor], Path]:
    """The state_dict in ``folder/model.safetensors`` (preferred) or ``folder/pytorch_model.bin``, and that file."""
    folder = Path(folder)
    safetensors_path, pickle_path = (folder / name for name in WEIGHT_FILES)
    if safetensors_path.exists():
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise MiniptError(f"{safetensors_path}: reading it needs the `safetensors` package: "
                              "pip install 'minipt[hf]'") from None
        try:
            return load_file(safetensors_path), safetensors_path
        except Exception as error:  # the library's own error types; one line is enough
            raise MiniptError(f"{safetensors_path}: cannot read ({type(error).__name__}: {error})") from None
    if pickle_path.exists():
        return load_checkpoint(pickle_path), pickle_path
    raise MiniptError(f"{folder}: missing weights (neither {' nor '.join(WEIGHT_FILES)})")


def check_shapes(converted: dict[str, Tensor], expected: dict[str, Tensor], names: dict[str, str], path: Path) -> None:
    """Every converted tensor must have the shape the config says; ``names`` maps minipt keys to the file's."""
    for key, tensor in converted.items():
        if tensor.shape != expected[key].shape:
            raise MiniptError(
                f"{path}: shape mismatch: {names[key]} is {tuple(tensor.shape)} but config.json implies "
                f"{tuple(expected[key].shape)}"
            )


def build_transformer(config: dict, folder: Path, fast: bool, model_class: type = TransformerLM) -> TransformerLM:
    """A fresh :class:`TransformerLM` (or subclass ``model_class``) with the constructor arguments ``config`` read
    from ``folder/config.json``; an argument it cannot take is a one-line error naming that file."""
    try:
        return model_class(**config, fast=fast)
    except MiniptError as error:  # e.g. a width that the number of heads does not divide
        raise MiniptError(f"{folder / 'config.json'}: {error}") from None
