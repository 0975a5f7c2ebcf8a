r"""BERT's tokenizer, written out: a basic tokenizer, then greedy longest-match-first WordPiece over ``vocab.txt``.

BERT (Devlin et al. 2019) cuts text in two stages.

**1. The basic tokenizer** turns a string into words and punctuation marks:

a. clean: drop the characters that are not text (code point 0, U+FFFD, control and format characters, Unicode
   category ``C*``) and turn every whitespace character (space, tab, newline, category ``Zs``) into a space;
b. put a space on both sides of every CJK ideograph (Chinese characters, and the kanji / hanja of Japanese and
   Korean): those scripts do not separate words by spaces, so each ideograph becomes a word of its own;
c. split on whitespace (no other Unicode normalisation: a decomposed "e" + U+0301 stays two code points, as in
   Google's BERT and the ``tokenizers`` library);
d. for an *uncased* vocabulary (``lowercase=True``), lower-case each word and strip its accents: decompose it
   (NFD: "é" becomes "e" + U+0301, a combining mark) and drop the combining marks (category ``Mn``);
e. split each word around every punctuation character (ASCII symbols such as ``$`` and ``^`` count, and every
   Unicode category ``P*``): "don't!" becomes ``don ' t !``.

**2. WordPiece** cuts each word into pieces of the vocabulary, greedily, longest match first:

.. code-block:: text

    start = 0
    while start < len(word):
        take the longest piece word[start:end] that is in the vocabulary,
            written "##" + piece when start > 0 (a piece that continues a word)
        no such piece: the whole word is [UNK]
        start = end

A word longer than 100 characters is ``[UNK]`` at once. Worked example (``tests/test_worked_examples.py``), with
the vocabulary ``[PAD] [UNK] [CLS] [SEP] [MASK] un ##aff ##able aff ##a a ! ,``: ``"Unaffable!"`` is lower-cased,
split into ``unaffable`` and ``!``; WordPiece tries ``unaffable``, ``unaffabl``, ... until ``un`` (in the
vocabulary), then from position 2 ``##affable``, ..., ``##aff``, then ``##able``: ``un ##aff ##able !``, ids
``5 6 7 11``. ``"unaffablex"`` finds no piece for the final ``x`` (there is no ``##x``), so the whole word is
``[UNK]``: id 1.

A token's id is its line number in ``vocab.txt`` (from 0). The special tokens ``[PAD] [UNK] [CLS] [SEP] [MASK]``
keep their ids; in a text they are kept whole (``"the [MASK] sat"`` holds the mask id), as BERT's own tokenizer
does. ``encode`` adds no ``[CLS]`` / ``[SEP]``; :meth:`WordPieceTokenizer.encode_inputs` builds BERT's model input,
``[CLS] A [SEP]`` or ``[CLS] A [SEP] B [SEP]``.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path

from minipt.errors import MiniptError
from minipt.runs.folder import write_atomic

__all__ = ["BERT_SPECIAL_TOKENS", "WordPieceTokenizer", "basic_tokenize", "wordpiece", "read_vocab_txt",
           "is_punctuation", "is_cjk"]

BERT_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
MAX_WORD_CHARS = 100  # a longer word is [UNK] without trying
CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
              (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))  # the CJK Unified Ideographs blocks


def is_whitespace(char: str) -> bool:
    """Space, tab, newline, carriage return, or any Unicode space separator (category ``Zs``)."""
    return char in " \t\n\r" or unicodedata.category(char) == "Zs"


def is_control(char: str) -> bool:
    """A control or format character (category ``C*``), except tab, newline and return (whitespace)."""
    return char not in "\t\n\r" and unicodedata.category(char).startswith("C")


def is_punctuation(char: str) -> bool:
    """Unicode punctuation (category ``P*``), and the ASCII symbols ``$ + < = > ^ ` | ~`` too."""
    code = ord(char)
    if 33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126:
        return True
    return unicodedata.category(char).startswith("P")


def is_cjk(char: str) -> bool:
    """A CJK ideograph (one of :data:`CJK_RANGES`); Hiragana, Katakana and Hangul are not, they form words."""
    code = ord(char)
    return any(low <= code <= high for low, high in CJK_RANGES)


def strip_accents(word: str) -> str:
    """``word`` decomposed (NFD) without its combining marks (category ``Mn``): ``"café"`` -> ``"cafe"``."""
    return "".join(char for char in unicodedata.normalize("NFD", word) if unicodedata.category(char) != "Mn")


def split_on_punctuation(word: str) -> list[str]:
    """``word`` cut before and after each punctuation character: ``"don't!"`` -> ``["don", "'", "t", "!"]``."""
    pieces: list[str] = []
    start_new = True
    for char in word:
        if is_punctuation(char):
            pieces.append(char)
            start_new = True
        else:
            if start_new:
                pieces.append("")
            pieces[-1] += char
            start_new = False
    return pieces


def basic_tokenize(text: str, lowercase: bool = True, accents: bool | None = None) -> list[str]:
    """Stage 1 (the module docstring's steps a-e): ``text`` as a list of words and punctuation marks.

    ``accents``: strip them (True) or not (False); None strips them exactly when ``lowercase`` is set (BERT's
    default).
    """
    strip = lowercase if accents is None else accents
    cleaned = "".join(" " if is_whitespace(char) else char for char in text
                      if ord(char) not in (0, 0xFFFD) and not is_control(char))  # a
    spaced = "".join(f" {char} " if is_cjk(char) else char for char in cleaned)  # b
    words = []
    for word in spaced.split():  # c
        if lowercase:
            word = word.lower()
        if strip:
            word = strip_accents(word)  # d
        words += split_on_punctuation(word)  # e
    return [word for word in words if word]  # a word of accents only is gone after stripping


def wordpiece(word: str, vocab: dict[str, int], unk: str = "[UNK]") -> list[str]:
    """Stage 2: the pieces of one word, greedy longest-match-first (see the module docstring); ``[unk]`` alone
    when some position has no piece in ``vocab`` or the word is longer than :data:`MAX_WORD_CHARS`."""
    if len(word) > MAX_WORD_CHARS:
        return [unk]
    pieces, start = [], 0
    while start < len(word):
        end = len(word)
        while end > start:
            piece = word[start:end] if start == 0 else "##" + word[start:end]
            if piece in vocab:
                break
            end -= 1
        if end == start:  # not even one character matched
            return [unk]
        pieces.append(piece)
        start = end
    return pieces


def read_vocab_txt(path: str | Path) -> list[str]:
    """The tokens of a ``vocab.txt``, one per line, the line number (from 0) being the id; one-line errors."""
    path = Path(path)
    try:
        tokens = path.read_text(encoding="utf-8").split("\n")
    except FileNotFoundError:
        raise MiniptError(f"{path}: missing (BERT's tokenizer is vocab.txt, one token per line)") from None
    except (OSError, UnicodeDecodeError) as error:
        raise MiniptError(f"{path}: cannot read ({type(error).__name__}: {error})") from None
    if tokens and tokens[-1] == "":
        tokens.pop()  # the newline that ends the last line
    return [token.rstrip("\r") for token in tokens]


class WordPieceTokenizer:
    """BERT's tokenizer over ``vocab`` (token ``i`` has id ``i``); ``lowercase=True`` for an uncased vocabulary.

    ``accents`` as in :func:`basic_tokenize`. The special ids (``pad_id``, ``unk_id``, ``cls_id``, ``sep_id``,
    ``mask_id``) are those of ``[PAD] [UNK] [CLS] [SEP] [MASK]`` in ``vocab``, which must hold all five.
    """

    def __init__(self, vocab: Sequence[str], lowercase: bool = True, accents: bool | None = None,
                 source: str = "vocab") -> None:
        self.tokens = list(vocab)
        self.lowercase, self.accents = lowercase, accents
        self.vocab: dict[str, int] = {}
        for index, token in enumerate(self.tokens):
            self.vocab[token] = index  # a repeated line: the later id wins, as in BERT's own reader
        missing = [token for token in BERT_SPECIAL_TOKENS if token not in self.vocab]
        if missing:
            needed = " ".join(BERT_SPECIAL_TOKENS)
            raise MiniptError(f"{source}: no {missing[0]} token (BERT's vocabulary needs {needed})")
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (
            self.vocab[token] for token in BERT_SPECIAL_TOKENS)
        self.special_ids = (self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id)
        self._special_split = re.compile("(" + "|".join(re.escape(token) for token in BERT_SPECIAL_TOKENS) + ")")

    @classmethod
    def from_vocab_txt(cls, path: str | Path, lowercase: bool = True, accents: bool | None = None
                       ) -> WordPieceTokenizer:
        """The tokenizer of a ``vocab.txt`` file."""
        return cls(read_vocab_txt(path), lowercase, accents, source=str(path))

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    def tokenize(self, text: str) -> list[str]:
        """The pieces of ``text``: special tokens kept whole, the rest through both stages."""
        pieces: list[str] = []
        for part in self._special_split.split(text):  # odd positions are the special tokens themselves
            if part in BERT_SPECIAL_TOKENS:
                pieces.append(part)
                continue
            for word in basic_tokenize(part, self.lowercase, self.accents):
                pieces += wordpiece(word, self.vocab)
        return pieces

    def encode(self, text: str) -> list[int]:
        """The ids of :meth:`tokenize`'s pieces (no ``[CLS]`` / ``[SEP]`` added)."""
        return [self.vocab[piece] for piece in self.tokenize(text)]

    def encode_inputs(self, text: str | tuple[str, str], add_cls: bool = True) -> list[int]:
        """BERT's model input: ``[CLS] A [SEP]``, or ``[CLS] A [SEP] B [SEP]`` for a pair ``(A, B)``. BERT always
        starts with ``[CLS]``, so ``add_cls`` is ignored. A model's token types follow from it: 0 up to and
        including the first ``[SEP]``, 1 after (:func:`minipt.interop.bert.segments_from_sep`)."""
        first, second = (text, None) if isinstance(text, str) else text
        ids = [self.cls_id, *self.encode(first), self.sep_id]
        if second is not None:
            ids += [*self.encode(second), self.sep_id]
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """The pieces of ``ids`` joined by spaces, ``##`` pieces glued to the one before (lower-cased and
        accent-stripped text does not come back as typed)."""
        text = " ".join(self.tokens[index] for index in ids)
        return text.replace(" ##", "")

    def to_dict(self) -> dict:
        return {"type": "wordpiece", "vocab": self.tokens, "lowercase": self.lowercase, "accents": self.accents}

    def save(self, path: str | Path) -> None:
        """Write the tokenizer as JSON, atomically (as minipt's other tokenizers)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(self.to_dict(), ensure_ascii=False, indent=1))

    def save_vocab_txt(self, folder: str | Path) -> None:
        """``folder/vocab.txt``: one token per line, in id order (what :meth:`from_vocab_txt` reads)."""
        write_atomic(Path(folder) / "vocab.txt", "".join(token + "\n" for token in self.tokens))
