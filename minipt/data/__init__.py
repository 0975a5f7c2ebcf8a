"""Data: corpora to pretrain on, labelled tasks to finetune on, and the batches built from them.

Two entry points treat the built-in Shakespeare data and the user's own files alike:

* ``load_corpus("shakespeare")`` or ``load_corpus("my_text.txt")`` -> the pretraining text (a ``str``);
* ``load_task("shakespeare-verse")``, ``load_task("shakespeare-genre")`` or ``load_task("reviews.csv",
  text_column="review", label_column="stars")`` -> a :class:`LabelledData` with train / validation / test.

Modules: :mod:`minipt.data.text` (reading and checking files), :mod:`minipt.data.shakespeare` (the built-in
corpus and tasks), :mod:`minipt.data.datasets` (language-model windows, masking, NSP pairs, classification batches),
:mod:`minipt.data.tokenizers` (characters, byte-level BPE) and :mod:`minipt.data.wordpiece` (BERT's WordPiece).
"""

from __future__ import annotations

from pathlib import Path

from minipt.data import shakespeare
from minipt.data.datasets import (
    ClassificationDataset,
    balanced_sampler,
    causal_lm_batch,
    collate_classification,
    lm_eval_batches,
    lm_split,
    mask_tokens,
    masked_lm_batch,
    next_sentence_pairs,
)
from minipt.data.text import DataError, LabelledData, read_labelled, read_text

__all__ = [
    "DataError",
    "LabelledData",
    "read_text",
    "read_labelled",
    "load_corpus",
    "load_task",
    "CORPORA",
    "TASKS",
    "lm_split",
    "causal_lm_batch",
    "lm_eval_batches",
    "mask_tokens",
    "masked_lm_batch",
    "next_sentence_pairs",
    "ClassificationDataset",
    "collate_classification",
    "balanced_sampler",
]

CORPORA = ("shakespeare", "shakespeare-flat")
TASKS = shakespeare.TASKS


def load_corpus(name_or_path: str | Path, hold_out_test_plays: bool = True) -> str:
    """The pretraining text of a built-in corpus or of a UTF-8 text file.

    ``"shakespeare"`` is the plays as printed (speaker, one line per printed line); ``"shakespeare-flat"`` the
    same speeches the way the built-in tasks' classifiers read them (lines joined, lower-cased).
    ``hold_out_test_plays`` applies to Shakespeare only: it leaves out the plays the built-in tasks test on.
    """
    if str(name_or_path) in CORPORA:
        return shakespeare.corpus(hold_out_test_plays, as_task_text=str(name_or_path) == "shakespeare-flat")
    if not Path(name_or_path).exists():
        raise DataError(f"{name_or_path}: no such file, and not a built-in corpus ({', '.join(CORPORA)})")
    return read_text(name_or_path)


def load_task(name_or_path: str | Path, **kw) -> LabelledData:
    """A built-in task (``"shakespeare-verse"``, ``"shakespeare-genre"``) or a labelled file.

    Keyword arguments go to :func:`read_labelled` (``text_column``, ``label_column``, ``seed``); built-in tasks
    take none.
    """
    if str(name_or_path) in TASKS:
        if kw:
            raise DataError(f"{name_or_path}: a built-in task takes no options, got {', '.join(sorted(kw))}")
        return shakespeare.task(str(name_or_path))
    if not Path(name_or_path).exists():
        raise DataError(f"{name_or_path}: no such file, and not a built-in task ({', '.join(TASKS)})")
    return read_labelled(name_or_path, **kw)
