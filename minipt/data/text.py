"""Reading the user's own data: a plain-text corpus, or a labelled file (CSV, TSV or JSONL).

Every problem with a file raises ``DataError`` (:class:`minipt.errors.MiniptError`, a ``ValueError``) whose
message is one line that starts with the file's path and says what is wrong, e.g. ``reviews.csv: line 7: empty
text``.

A labelled file has one example per row: a text column and a label column (names chosen by the caller). When it
also has a ``split`` column (values ``train``, ``validation``, ``test``) that split is used as given; otherwise the
rows are split 80 / 10 / 10, stratified by label (each class is shuffled with a seeded generator and cut in the
same proportions), so every class appears in every split in the proportion it has in the file.
"""

from __future__ import annotations

import csv
import io
import json
import random
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from minipt.errors import MiniptError, warn

__all__ = ["DataError", "LabelledData", "read_text", "read_labelled", "SPLITS"]

SPLITS = ("train", "validation", "test")
VALIDATION_FRACTION = 0.1
TEST_FRACTION = 0.1
SINGLETON_WARNING_ROWS = 20  # in a file of at least this many rows, a label seen once is likely a typo


DataError = MiniptError  # bad input data: minipt's one error class, under the name the data modules raise it by


Example = tuple[str, str]  # (text, label name)


@dataclass
class LabelledData:
    """A classification task split three ways.

    ``train``, ``validation``, ``test`` are lists of ``(text, label)`` pairs with the label as a string;
    ``labels`` lists the class names sorted, and a class's id is its index in that list; ``name`` names the task
    (a built-in task's name or the file's stem).
    """

    train: list[Example]
    validation: list[Example]
    test: list[Example]
    labels: list[str]
    name: str

    def split(self, split: str) -> list[Example]:
        """The examples of one split by name: ``"train"``, ``"validation"`` or ``"test"``."""
        if split not in SPLITS:
            raise DataError(f"{self.name}: unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        return getattr(self, split)

    def counts(self) -> dict[str, dict[str, int]]:
        """Examples per split and per label: ``{"train": {"prose": 2046, "verse": 6563}, ...}``."""
        return {
            split: {label: sum(1 for _, y in self.split(split) if y == label) for label in self.labels}
            for split in SPLITS
        }


# ----------------------------------------------------------------------------------------------------------------
# Reading bytes safely


def _read_utf8(path: str | Path) -> str:
    """The file decoded as UTF-8 (a leading byte-order mark is dropped), or a DataError saying why not."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a file")
    data = path.read_bytes()
    if not data.strip():
        raise DataError(f"{path}: file is empty")
    nul_offset = data.find(b"\x00")
    if nul_offset >= 0:
        raise DataError(f"{path}: looks like a binary file (NUL byte at byte offset {nul_offset}), expected text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        bad_byte = data[error.start]
        raise DataError(
            f"{path}: not UTF-8 (byte 0x{bad_byte:02x} at byte offset {error.start}); re-save the file as UTF-8"
        ) from None


def read_text(path: str | Path) -> str:
    """A UTF-8 pretraining corpus, returned as one string (checked: exists, not empty, text, valid UTF-8)."""
    return _read_utf8(path)


# ----------------------------------------------------------------------------------------------------------------
# Labelled files: rows -> (text, label, split)


def _rows(path: Path, content: str) -> tuple[list[str], list[tuple[int, dict]]]:
    """The column names and the ``(line number, row)`` pairs of a CSV, TSV or JSONL file (chosen by extension)."""
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        reader = csv.DictReader(io.StringIO(content, newline=""), delimiter="\t" if suffix == ".tsv" else ",")
        _check_unique_header(path, reader.fieldnames or [])
        rows = []
        for row in reader:
            if None in row or None in row.values():  # more fields than the header (key None), or fewer (value None)
                count = len(row) - 1 + len(row[None]) if None in row else sum(v is not None for v in row.values())
                raise DataError(
                    f"{path}: line {reader.line_num}: {count} fields, but the header has {len(reader.fieldnames)}; "
                    'a text with a comma (or a tab in a .tsv) must be quoted: "hello, world"'
                )
            if any(value for value in row.values()):  # blank lines are skipped
                rows.append((reader.line_num, row))
        return list(reader.fieldnames or []), rows
    if suffix == ".jsonl":
        columns: list[str] = []
        rows = []
        for line_number, line in enumerate(content.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line, object_pairs_hook=partial(_unique_keys, path, line_number))
            except json.JSONDecodeError as error:
                raise DataError(f"{path}: line {line_number}: not valid JSON ({error.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}: line {line_number}: expected a JSON object, got {type(row).__name__}")
            columns += [key for key in row if key not in columns]
            rows.append((line_number, row))
        return columns, rows
    raise DataError(f"{path}: unknown labelled-file type {suffix or '(no extension)'!r}; use .csv, .tsv or .jsonl")


def _check_unique_header(path: Path, names: list[str]) -> None:
    """A header that names a column twice (``text,label,label``) is an error: a row would keep only the last."""
    for index, name in enumerate(names):
        if name in names[:index]:
            raise DataError(f"{path}: line 1: the header names the column {name!r} twice; rename one of them")


def _unique_keys(path: Path, line_number: int, pairs: list[tuple[str, object]]) -> dict:
    """A JSON object with a key twice (``{"label": "a", "label": "b"}``) is an error, as in a CSV header."""
    row = {}
    for key, value in pairs:
        if key in row:
            raise DataError(f"{path}: line {line_number}: the key {key!r} appears twice; rename one of them")
        row[key] = value
    return row


def _field(path: Path, line_number: int, row: dict, column: str, what: str) -> str:
    """One cell as a stripped string; an empty or missing cell is an error naming the line."""
    value = row.get(column)
    if isinstance(value, bool | int | float):  # JSONL labels may be numbers or booleans
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{path}: line {line_number}: empty {what} (column {column!r})")
    return value.strip()


def _stratified_split(examples: list[Example], seed: int) -> dict[str, list[Example]]:
    """80/10/10 split of each class separately (shuffled with ``seed``); each split keeps the file's order."""
    rng = random.Random(seed)
    split_of = [""] * len(examples)
    for label in sorted({label for _, label in examples}):
        indices = [i for i, (_, y) in enumerate(examples) if y == label]
        rng.shuffle(indices)
        n_validation = round(len(indices) * VALIDATION_FRACTION)
        n_test = round(len(indices) * TEST_FRACTION)
        for position, index in enumerate(indices):
            if position < n_validation:
                split_of[index] = "validation"
            elif position < n_validation + n_test:
                split_of[index] = "test"
            else:
                split_of[index] = "train"
    return {split: [ex for ex, s in zip(examples, split_of, strict=True) if s == split] for split in SPLITS}


def check_labelled(name: str, splits: dict[str, list[Example]]) -> list[str]:
    """Check a split task and return its sorted class names.

    Raises DataError when there are fewer than two classes, when a split is empty, or when a label of the
    validation or test split never appears in train (the model could never learn it).
    """
    all_labels = {label for split in SPLITS for _, label in splits[split]}
    if len(all_labels) < 2:
        found = ", ".join(map(repr, sorted(all_labels)))
        raise DataError(f"{name}: found {len(all_labels)} class ({found}), need at least 2")
    for split in SPLITS:
        if not splits[split]:
            raise DataError(
                f"{name}: the {split} split is empty; add rows, or a 'split' column naming each row's split"
            )
    train_labels = {label for _, label in splits["train"]}
    for split in ("validation", "test"):
        unseen = sorted({label for _, label in splits[split]} - train_labels)
        if unseen:
            raise DataError(f"{name}: label(s) {', '.join(map(repr, unseen))} appear in {split} but never in train")
    return sorted(train_labels)


def warn_singleton_labels(path: Path, lines: list[int], examples: list[Example]) -> None:
    """Warn about each label that occurs once in a file of many rows (likely a typo, or a misplaced comma)."""
    if len(examples) < SINGLETON_WARNING_ROWS:
        return
    counts: dict[str, int] = {}
    for _, label in examples:
        counts[label] = counts.get(label, 0) + 1
    for line, (_, label) in zip(lines, examples, strict=True):
        if counts[label] == 1:
            warn(f"{path}: line {line}: label {label!r} occurs only once in {len(examples)} rows; a typo?")


def read_labelled(
    path: str | Path, text_column: str = "text", label_column: str = "label", seed: int = 0
) -> LabelledData:
    """Read a labelled CSV / TSV / JSONL file into a :class:`LabelledData`.

    An optional ``split`` column assigns rows to ``train`` / ``validation`` / ``test``; without it the rows are
    split 80/10/10 stratified by label, shuffled by ``seed`` (the same seed gives the same split).
    """
    path = Path(path)
    if text_column == label_column:
        raise DataError(f"{path}: the text column and the label column are both {text_column!r}; choose two "
                        "different columns (--text-column, --label-column)")
    columns, rows = _rows(path, _read_utf8(path))
    missing = [column for column in (text_column, label_column) if column not in columns]
    if missing:
        raise DataError(
            f"{path}: no column {' or '.join(map(repr, missing))}; columns found: {', '.join(map(repr, columns))} "
            "(choose them with --text-column / --label-column)"
        )
    if not rows:
        raise DataError(f"{path}: no rows after the header")
    examples = [
        (_field(path, line, row, text_column, "text"), _field(path, line, row, label_column, "label"))
        for line, row in rows
    ]
    warn_singleton_labels(path, [line for line, _ in rows], examples)
    if "split" in columns:
        splits: dict[str, list[Example]] = {split: [] for split in SPLITS}
        for (line, row), example in zip(rows, examples, strict=True):
            split = _field(path, line, row, "split", "split")
            if split not in splits:
                raise DataError(f"{path}: line {line}: split must be one of {', '.join(SPLITS)}, got {split!r}")
            splits[split].append(example)
    else:
        splits = _stratified_split(examples, seed)
    labels = check_labelled(str(path), splits)
    return LabelledData(splits["train"], splits["validation"], splits["test"], labels, path.stem)
