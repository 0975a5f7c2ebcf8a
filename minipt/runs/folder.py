r"""A run is a folder: the new-folder check, ``config.json`` read and write, and the one atomic writer.

Every job writes into a folder of its own::

    runs/clm/
        config.json      the settings and the model's constructor arguments (:func:`write_config`)
        tokenizer.json   the tokenizer
        best.pt last.pt  checkpoints (:mod:`minipt.training.checkpoint`)
        metrics.jsonl    one line per evaluation
        loss.png         the curves
        summary.json     the outcome

A new run never overwrites an old one (:func:`check_new_run_dir`), and a later command reads the run back through
:func:`read_config`.

Every file minipt writes goes through :func:`write_atomic`. A plain ``open(path, "w")`` that dies halfway (out of
memory, Ctrl-C, a killed job) leaves half a file, and the previous good one is already gone. :func:`write_atomic`
never writes onto the final name; it writes a temporary file next to it, then *renames* it over the final name::

    .last.pt.tmp-k3j9x   <- the bytes are written here, then flush + fsync (they reach the disk)
    last.pt              <- os.replace(temporary, "last.pt"): one atomic step

``os.replace`` within one folder is atomic: anyone opening ``last.pt`` sees either the old file or the new one,
never a mix. A write that dies halfway leaves only its temporary file behind, and the next write to the same path
removes such leftovers (one writer per path: a run owns its folder).

This module sits low (it imports only :mod:`minipt.errors`), so the tokenizers, the data cache and the checkpoints
can all use its writer. Its files get the mode of an ordinary new file (``0o666`` less the umask, typically
``0644``), so that a course's TA can read a student's run.

A new run is created inside :func:`new_run_dir`: a run that fails or is interrupted before it saved its first
``last.pt`` removes what it created, so no folder is left that neither ``--out`` (not empty) nor ``--resume``
(nothing to continue) accepts. A folder that holds a ``last.pt`` is never removed.

One process per run: a run holds an exclusive lock on its folder while it runs (:func:`lock_run`), so a second
``--resume`` (or an ``--out`` naming the same folder) fails at once instead of writing every record twice.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from minipt.errors import MiniptError

try:
    import fcntl  # POSIX (Linux, macOS)
except ImportError:  # Windows: runs are not locked there
    fcntl = None

__all__ = ["write_atomic", "write_json", "read_json", "check_new_run_dir", "new_run_dir", "lock_run", "write_config",
           "read_config", "make_run_dir"]

LOCK = ".lock"  # the lock file in a running run's folder (removed when the run ends)

Content = bytes | str | Callable[[IO[bytes]], object]  # the bytes, text (UTF-8), or a function writing to a file


def _temporary_prefix(path: Path) -> str:
    """Temporary files for ``run/last.pt`` are named ``run/.last.pt.tmp-XXXXXXXX`` (hidden, easy to spot)."""
    return f".{path.name}.tmp-"


def _remove_leftover_temporaries(path: Path) -> None:
    """Delete temporary files that an interrupted earlier write of ``path`` left behind."""
    for leftover in path.parent.glob(_temporary_prefix(path) + "*"):
        leftover.unlink(missing_ok=True)


def _fsync_directory(folder: Path) -> None:
    """Ask the OS to write the folder's entry list to disk, so the rename survives a power cut.

    Opening a folder is not possible on every system (Windows refuses); the rename is still atomic there.
    """
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass  # some file systems do not support fsync on a folder; the rename itself already happened
    finally:
        os.close(descriptor)


def _ordinary_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file: ``0o666`` less the process's umask (typically ``0o644``)."""
    umask = os.umask(0)  # reading the umask means setting it; put it straight back
    os.umask(umask)
    return 0o666 & ~umask


def write_atomic(path: str | os.PathLike, content: Content, one_writer: bool = True) -> None:
    """Write ``content`` to ``path`` atomically: a temporary file beside ``path``, renamed onto it.

    ``content`` is bytes, text (written as UTF-8), or a function that writes into the open binary file (e.g.
    ``lambda file: torch.save(state, file)``). On any exception the temporary file is removed and the old
    ``path`` (if any) is left untouched. ``one_writer``: the path has a single writer (a run owns its folder), so
    temporaries an interrupted earlier write left behind are removed first; pass ``False`` for a shared cache
    file that several processes may write at the same time.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise MiniptError(f"{path}: cannot save, the folder {path.parent} does not exist")
    if one_writer:
        _remove_leftover_temporaries(path)
    temporary = None
    try:
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=_temporary_prefix(path), delete=False) as file:
            temporary = Path(file.name)
            if callable(content):
                content(file)
            else:
                file.write(content.encode("utf-8") if isinstance(content, str) else content)
            file.flush()  # Python's buffer -> the OS
            os.fsync(file.fileno())  # the OS's cache -> the disk
        os.chmod(temporary, _ordinary_mode())  # temporary files are made 0600; the final file is an ordinary one
        os.replace(temporary, path)  # atomic: readers see the old file or the new one
    except BaseException:  # also on KeyboardInterrupt: never leave a half-written temporary file
        if temporary is not None:
            temporary.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON with sorted keys (``config.json``, ``summary.json``), atomically."""
    text = json.dumps(obj, indent=2, sort_keys=True) + "\n"  # fails before any file is touched
    write_atomic(path, text)


def read_json(path: str | os.PathLike) -> Any:
    """The JSON in ``path``, or a :class:`~minipt.errors.MiniptError` naming the file and why it cannot be read."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise MiniptError(f"{path}: cannot read it ({error})") from None


# ----------------------------------------------------------------------------------------------------------
# The run folder
# ----------------------------------------------------------------------------------------------------------


def check_new_run_dir(run_dir: str | os.PathLike, hint: str = "") -> None:
    """A new run must not overwrite an old one: the folder must be absent or empty (a lock file left by a killed
    process does not count). ``hint`` ends the message (e.g. how to continue the old run instead)."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise MiniptError(f"--out {run_dir} is a file, not a folder; choose a new folder")
    if run_dir.exists() and holds_files(run_dir):
        holder = locked_by(run_dir)
        if holder is not None:
            raise in_use(run_dir, holder)
        raise MiniptError(f"--out {run_dir} already exists and is not empty; choose a new folder{hint}")


def holds_files(run_dir: Path) -> bool:
    """The folder holds something besides a lock file."""
    return any(entry.name != LOCK for entry in run_dir.iterdir())


@contextmanager
def new_run_dir(run_dir: str | os.PathLike, hint: str = "") -> Iterator[Path]:
    """Check the new run's folder (:func:`check_new_run_dir`), create it, lock it (:func:`lock_run`) and create the
    run in the body. When the body fails or is interrupted before any ``last.pt`` exists in the folder, everything
    it created goes: the folder itself if it did not exist, else its contents (it was empty). A folder with a
    ``last.pt`` stays: ``--resume`` takes it."""
    run_dir = Path(run_dir)
    check_new_run_dir(run_dir, hint)
    existed = run_dir.exists()
    make_run_dir(run_dir)  # a parent that is a file, or no right to write there: one line
    with lock_run(run_dir):
        try:
            if holds_files(run_dir):  # another process wrote here between the check and the lock
                raise MiniptError(f"--out {run_dir} already exists and is not empty; choose a new folder{hint}")
            yield run_dir
        except BaseException:
            if not any(run_dir.rglob("last.pt")):
                remove_run(run_dir, keep_folder=existed)
            raise


def remove_run(run_dir: Path, keep_folder: bool) -> None:
    """Delete what a run created in ``run_dir``: its contents, and the folder too unless ``keep_folder``."""
    if not keep_folder:
        shutil.rmtree(run_dir, ignore_errors=True)
        return
    for entry in run_dir.iterdir():
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def in_use(run_dir: Path, holder: str) -> MiniptError:
    return MiniptError(f"{run_dir} is in use by another minipt process (pid {holder}); one process per run: wait for "
                       "it to end, or stop it")


def locked_by(run_dir: Path) -> str | None:
    """The pid written in the lock of a run folder that another process holds now, or None (no lock, or a lock file
    whose process is gone: the kernel released it)."""
    path = Path(run_dir) / LOCK
    if fcntl is None or not path.is_file():
        return None
    try:
        with path.open("rb") as file:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released when the file closes
        return None
    except BlockingIOError:
        return path.read_text(encoding="utf-8", errors="replace").strip() or "unknown"
    except OSError:
        return None


@contextmanager
def lock_run(run_dir: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on the run folder ``run_dir`` during the body: ``fcntl.flock`` on ``run_dir/.lock``,
    which holds this process's pid. Another process asking for it fails at once with a
    :class:`~minipt.errors.MiniptError` naming that pid. The kernel releases the lock when its process ends, however
    it ends (even ``kill -9``), so a lock file a killed process left behind does not block. The file goes at the
    end."""
    run_dir = Path(run_dir)
    check_run_folder(run_dir)
    if fcntl is None:
        yield
        return
    path = run_dir / LOCK
    while True:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)  # the mode less the umask, like any new file
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            raise in_use(run_dir, locked_by(run_dir) or "unknown") from None
        try:  # the holder may have removed the file between our open and our lock: then lock the new one
            same_file = os.path.samestat(os.fstat(descriptor), os.stat(path))
        except FileNotFoundError:
            same_file = False
        if same_file:
            break
        os.close(descriptor)
    os.ftruncate(descriptor, 0)
    os.write(descriptor, f"{os.getpid()}\n".encode())
    try:
        yield
    finally:
        path.unlink(missing_ok=True)  # before the lock goes, so that no one locks a file about to vanish
        os.close(descriptor)


def write_config(run_dir: str | os.PathLike, config: dict) -> None:
    """Write the run's ``config.json`` (atomically)."""
    write_json(Path(run_dir) / "config.json", config)


def check_run_folder(run_dir: Path) -> None:
    """A one-line error when ``run_dir`` is a file or does not exist."""
    if run_dir.is_file():
        raise MiniptError(f"{run_dir} is a file, not a run folder")
    if not run_dir.is_dir():
        raise MiniptError(f"run folder {run_dir} does not exist")


def read_config(run_dir: str | os.PathLike) -> dict:
    """The ``config.json`` of a run folder, with a clear error when the folder or the file is missing or broken."""
    run_dir = Path(run_dir)
    check_run_folder(run_dir)
    config = read_json(run_dir / "config.json")
    if not isinstance(config, dict):
        raise MiniptError(f"{run_dir / 'config.json'}: expected a JSON object, got {type(config).__name__}")
    return config


def make_run_dir(run_dir: str | os.PathLike, flag: str = "--out") -> None:
    """Create a new run's folder (and its parents), or raise a one-line :class:`MiniptError` naming ``flag`` when it
    cannot be: a parent that is a file (``afile.txt/sub``), a place where nothing may be created (``/proc/foo``)."""
    run_dir = Path(run_dir)
    for parent in run_dir.parents:
        if parent.exists():
            if not parent.is_dir():
                raise MiniptError(f"{flag} {run_dir}: {parent} is a file, not a folder; choose another place")
            break
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise MiniptError(f"{flag} {run_dir}: cannot create the folder ({error.strerror or error})") from None
