"""A data file's fingerprint: its SHA-256 and its size, recorded in the run's ``config.json``.

A run trained on ``corpus.txt`` should be continued on the same ``corpus.txt``: an edited file silently changes
the vocabulary's coverage (new characters become ``<unk>``) and moves the cut between training and validation
text. So a run records ``{"path", "sha256", "bytes"}`` of its corpus or labelled file (the digest is the one
``sha256sum FILE`` prints), ``--resume`` refuses a file whose fingerprint changed, and ``minipt evaluate``
warns when the labelled file differs from the one the run trained on. The built-in corpora and tasks come
from an installed package and get no fingerprint (``None``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from minipt.errors import MiniptError

__all__ = ["fingerprint", "changed", "check_unchanged"]


def fingerprint(name_or_path: str | Path, builtins: tuple[str, ...] = ()) -> dict | None:
    """``{"path", "sha256", "bytes"}`` of a file; None for a built-in name (one of ``builtins``) or a missing
    file (reading it will fail with its own message)."""
    path = Path(name_or_path)
    if str(name_or_path) in builtins or not path.is_file():
        return None
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):  # 1 MiB at a time
            digest.update(chunk)
    return {"path": str(path), "sha256": digest.hexdigest(), "bytes": path.stat().st_size}


def changed(recorded: dict | None, now: dict | None) -> bool:
    """Both fingerprints exist and differ (a run from before fingerprints, or a built-in, never counts)."""
    return recorded is not None and now is not None and (recorded["sha256"], recorded["bytes"]) != (
        now["sha256"], now["bytes"])


def describe(recorded: dict, now: dict) -> str:
    """``{path} changed since the run started (sha256 1a2b3c4d5e6f, 3400 bytes; now 9f8e7d6c5b4a, 3410 bytes)``."""
    return (f"{now['path']} changed since the run started (sha256 {recorded['sha256'][:12]}, {recorded['bytes']} "
            f"bytes; now {now['sha256'][:12]}, {now['bytes']} bytes)")


def check_unchanged(recorded: dict | None, name_or_path: str | Path, context: str) -> None:
    """Raise :class:`MiniptError` (``context`` first, e.g. ``--resume runs/clm``) when the file changed."""
    now = fingerprint(name_or_path)
    if changed(recorded, now):
        raise MiniptError(f"{context}: {describe(recorded, now)}; restore that file, or start a new run with --out")
