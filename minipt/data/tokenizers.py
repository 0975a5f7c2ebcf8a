r"""Tokenizers: text -> list of integer ids -> text.

Two are written out here:

* :class:`CharTokenizer` — one id per character seen in the training text. Tiny vocabulary, long sequences.
* :class:`BPETokenizer` — byte-level byte-pair encoding (Sennrich et al. 2016; GPT-2's byte-level variant).
  Start from the 256 byte values, then repeatedly merge the most frequent adjacent pair of tokens into a new
  token. Any string round-trips exactly, because every string is a sequence of UTF-8 bytes.

:class:`GPT2BPETokenizer` is the same BPE with GPT-2's own pre-split pattern and GPT-2's ids (loaded from its
``vocab.json`` and ``merges.txt`` by :func:`minipt.interop.load_gpt2_tokenizer`); its only special token is
``<|endoftext|>``.

Both share the layout of their vocabulary's first ids, the special tokens:

====  ==========  ============================================================
 id   token       used for
====  ==========  ============================================================
 0    ``<pad>``   padding a batch of unequal sequences to one length
 1    ``<unk>``   a character the char tokenizer never saw (BPE never needs it)
 2    ``<mask>``  a hidden token in masked language modelling (BERT)
 3    ``<cls>``   the first token of a sequence to classify
 4    ``<sep>``   the end of a segment (next-sentence prediction)
====  ==========  ============================================================

``encode`` never produces special tokens (the data pipeline inserts them); ``decode`` writes a special token as
its name, e.g. ``"<mask>"``, so that a masked or padded input can be printed and read.

A tokenizer is saved as JSON with a ``"type"`` field (``"char"``, ``"bpe"``, ``"gpt2-bpe"``, or ``"wordpiece"`` for
BERT's :class:`~minipt.data.wordpiece.WordPieceTokenizer`);
:func:`load_tokenizer` and :func:`tokenizer_from_dict` read any kind back, so a checkpoint can carry its tokenizer
as a dictionary.
"""

from __future__ import annotations

import heapq
import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from itertools import pairwise
from pathlib import Path

from minipt.data.wordpiece import WordPieceTokenizer
from minipt.errors import MiniptError
from minipt.runs.folder import write_atomic

__all__ = [
    "SPECIAL_TOKENS",
    "TokenizerError",
    "CharTokenizer",
    "BPETokenizer",
    "GPT2BPETokenizer",
    "WordPieceTokenizer",
    "GPT2_PRE_SPLIT",
    "Tokenizer",
    "load_tokenizer",
    "tokenizer_from_dict",
    "pre_split",
    "train_merges",
]

SPECIAL_TOKENS = ("<pad>", "<unk>", "<mask>", "<cls>", "<sep>")


TokenizerError = MiniptError  # a tokenizer file that cannot be read, an impossible request: minipt's one error


class _SpecialTokens:
    """The special tokens at fixed ids 0..4, shared by both tokenizers."""

    pad_id = 0
    unk_id = 1
    mask_id = 2
    cls_id = 3
    sep_id = 4
    special_ids = (0, 1, 2, 3, 4)

    def to_dict(self) -> dict:
        raise NotImplementedError

    def encode_inputs(self, text: str | tuple[str, str], add_cls: bool = True) -> list[int]:
        """One example as the model reads it: ``[<cls>] A`` (``<cls>`` when ``add_cls``), or ``[<cls>] A <sep> B``
        for a pair of texts ``(A, B)``."""
        first, second = (text, None) if isinstance(text, str) else text
        ids = ([self.cls_id] if add_cls else []) + self.encode(first)
        return ids if second is None else ids + [self.sep_id] + self.encode(second)

    def save(self, path: str | Path) -> None:
        """Write the tokenizer as JSON, atomically (a temporary file renamed over ``path``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(self.to_dict(), ensure_ascii=False, indent=1))


# ----------------------------------------------------------------------------------------------------------------
# Characters


class CharTokenizer(_SpecialTokens):
    """One token per character: ids 0..4 are the special tokens, then ``chars`` in the order given.

    >>> tokenizer = CharTokenizer.from_text("abba")
    >>> tokenizer.encode("abc")          # "c" was never seen: <unk>
    [5, 6, 1]
    """

    def __init__(self, chars: Iterable[str]) -> None:
        self.chars = list(chars)
        if any(len(char) != 1 for char in self.chars) or len(set(self.chars)) != len(self.chars):
            raise TokenizerError("CharTokenizer: chars must be distinct single characters")
        self.id_of = {char: index for index, char in enumerate(self.chars, start=len(SPECIAL_TOKENS))}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        """The vocabulary of ``text``: its distinct characters, sorted by code point."""
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(SPECIAL_TOKENS) + len(self.chars)

    def encode(self, text: str) -> list[int]:
        """One id per character; a character outside the vocabulary becomes ``<unk>``."""
        return [self.id_of.get(char, self.unk_id) for char in text]

    def decode(self, ids: Iterable[int]) -> str:
        """The characters of ``ids``; a special token is written as its name."""
        tokens = SPECIAL_TOKENS + tuple(self.chars)
        return "".join(tokens[index] for index in ids)

    def to_dict(self) -> dict:
        return {"type": "char", "chars": self.chars}


# ----------------------------------------------------------------------------------------------------------------
# Byte-level BPE

# The pre-split: a piece is an English contraction ending ('s 't 're 've 'm 'll 'd), a run of letters, a run of
# digits or a run of other symbols (each optionally led by one space), or whitespace. Merges never cross pieces,
# so " the" and " thee" share their first tokens wherever they appear, and training only needs to count each
# distinct piece once (times its frequency). Every character matches one branch, so the pieces concatenate
# back to the text exactly.
PRE_SPLIT = re.compile(r"'(?:s|t|re|ve|m|ll|d)| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+")

# GPT-2's pre-split (Radford et al. 2019), the same idea with Unicode classes: \p{L} any letter, \p{N} any number
# (also "²" or "½", which Python's \d does not match). The standard `re` module has no \p{...}, so this pattern is
# compiled with the `regex` package (installed with `pip install minipt[hf]`).
GPT2_PRE_SPLIT = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

FIRST_BYTE_ID = len(SPECIAL_TOKENS)  # byte b has id 5 + b
FIRST_MERGE_ID = FIRST_BYTE_ID + 256  # the first merged token has id 261

Pair = tuple[int, int]


def pre_split(text: str) -> list[str]:
    """The text cut into pieces that BPE merges within (see :data:`PRE_SPLIT`)."""
    return PRE_SPLIT.findall(text)


def _byte_ids(piece: str) -> list[int]:
    """The ids of the UTF-8 bytes of a piece."""
    return [FIRST_BYTE_ID + byte for byte in piece.encode("utf-8")]


def _merge_pair(ids: list[int], pair: Pair, new_id: int) -> list[int]:
    """Replace every occurrence of ``pair`` in ``ids`` by ``new_id``, scanning left to right.

    ``[a, a, a]`` with pair ``(a, a)`` becomes ``[Z, a]``: occurrences do not overlap.
    """
    merged = []
    position = 0
    while position < len(ids):
        if position + 1 < len(ids) and (ids[position], ids[position + 1]) == pair:
            merged.append(new_id)
            position += 2
        else:
            merged.append(ids[position])
            position += 1
    return merged


def _pairs(ids: list[int]) -> Counter:
    """How often each adjacent pair occurs in ``ids``."""
    return Counter(pairwise(ids))


def train_merges(text: str, num_merges: int) -> list[Pair]:
    """Learn up to ``num_merges`` BPE merges from ``text``; merge ``k`` creates token ``261 + k``.

    The algorithm, with the two tricks that make it fast:

    1. Pre-split the text and count the distinct pieces (``" the"`` occurs ~25,000 times in Shakespeare but
       is stored once, with its count).
    2. Count every adjacent pair over the pieces, each weighted by its piece's frequency; remember which
       pieces contain which pair.
    3. Repeat: take the most frequent pair, merge it in the pieces that contain it, and update the counts of
       only those pieces' pairs. A heap finds the most frequent pair; its entries are ``(-count, pair)`` and
       stale ones (a pair whose count changed since it was pushed) are skipped when popped.

    Tie rule: among pairs with the same count, the smallest pair of ids wins, comparing the first id, then the
    second. Bytes are ordered by value and merged tokens by creation, so the result is deterministic.
    """
    piece_counts = Counter(pre_split(text))
    pieces = [_byte_ids(piece) for piece in piece_counts]  # each distinct piece as a list of ids
    frequencies = list(piece_counts.values())

    pair_counts: Counter = Counter()
    pieces_with_pair: defaultdict[Pair, set[int]] = defaultdict(set)
    for index, ids in enumerate(pieces):
        for pair, count in _pairs(ids).items():
            pair_counts[pair] += count * frequencies[index]
            pieces_with_pair[pair].add(index)
    heap = [(-count, pair) for pair, count in pair_counts.items()]
    heapq.heapify(heap)

    merges: list[Pair] = []
    while len(merges) < num_merges and heap:
        negative_count, pair = heapq.heappop(heap)
        if pair_counts.get(pair, 0) != -negative_count:
            continue  # stale entry: this pair's count changed after the entry was pushed
        new_id = FIRST_MERGE_ID + len(merges)
        merges.append(pair)
        changed: Counter = Counter()  # pair -> change of its count during this merge
        for index in pieces_with_pair.pop(pair):
            old_ids = pieces[index]
            new_ids = _merge_pair(old_ids, pair, new_id)
            frequency = frequencies[index]
            for old_pair, count in _pairs(old_ids).items():
                changed[old_pair] -= count * frequency
            for new_pair, count in _pairs(new_ids).items():
                changed[new_pair] += count * frequency
                pieces_with_pair[new_pair].add(index)
            pieces[index] = new_ids
        for changed_pair, delta in changed.items():
            if delta == 0:
                continue
            pair_counts[changed_pair] += delta
            if pair_counts[changed_pair] > 0:
                heapq.heappush(heap, (-pair_counts[changed_pair], changed_pair))
            else:
                del pair_counts[changed_pair]
    return merges


class BPETokenizer(_SpecialTokens):
    """Byte-level BPE: ids 0..4 special tokens, 5..260 the bytes 0..255, then one id per merge, in order.

    ``merges[k] = (a, b)`` means: the pair of tokens ``a, b`` becomes the new token ``261 + k``.
    """

    pattern = PRE_SPLIT  # the pre-split (see PRE_SPLIT); GPT2BPETokenizer uses GPT-2's

    def __init__(self, merges: Iterable[tuple[int, int]]) -> None:
        self.merges: list[Pair] = [(int(a), int(b)) for a, b in merges]
        self.token_bytes: list[bytes] = [b""] * FIRST_BYTE_ID + [bytes([byte]) for byte in range(256)]
        for new_id, (a, b) in enumerate(self.merges, start=FIRST_MERGE_ID):
            if not (FIRST_BYTE_ID <= a < new_id and FIRST_BYTE_ID <= b < new_id):
                raise TokenizerError(f"BPETokenizer: merge {new_id - FIRST_MERGE_ID} ({a}, {b}) uses an unknown id")
            self.token_bytes.append(self.token_bytes[a] + self.token_bytes[b])
        self.rank = {pair: rank for rank, pair in enumerate(self.merges)}  # earlier merges apply first
        self._piece_cache: dict[str, list[int]] = {}  # piece -> ids; texts repeat their pieces a lot

    @classmethod
    def train(cls, text: str, vocab_size: int) -> BPETokenizer:
        """Learn merges on ``text`` until the vocabulary has ``vocab_size`` tokens (fewer if the text runs out
        of pairs to merge). ``vocab_size`` counts the 5 special tokens and the 256 bytes."""
        if vocab_size < FIRST_MERGE_ID:
            raise TokenizerError(f"BPETokenizer: vocab_size must be at least {FIRST_MERGE_ID}, got {vocab_size}")
        return cls(train_merges(text, vocab_size - FIRST_MERGE_ID))

    @property
    def vocab_size(self) -> int:
        return FIRST_MERGE_ID + len(self.merges)

    def _encode_piece(self, piece: str) -> list[int]:
        """Apply the merges to one piece: repeatedly merge the adjacent pair that was learnt first."""
        ids = _byte_ids(piece)
        while len(ids) > 1:
            pair = min(pairwise(ids), key=lambda p: self.rank.get(p, len(self.rank)))
            if pair not in self.rank:
                break  # no learnt merge applies any more
            ids = _merge_pair(ids, pair, FIRST_MERGE_ID + self.rank[pair])
        return ids

    def encode(self, text: str) -> list[int]:
        """The ids of ``text``: pre-split, then each piece's bytes merged in the order the merges were learnt."""
        ids: list[int] = []
        for piece in self.pattern.findall(text):
            if piece not in self._piece_cache:
                self._piece_cache[piece] = self._encode_piece(piece)
            ids += self._piece_cache[piece]
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """The text of ``ids``: the tokens' bytes joined and read as UTF-8; a special token is written as its
        name. Byte sequences that are not valid UTF-8 (possible in sampled output) decode to U+FFFD."""
        parts: list[str] = []
        pending = b""  # bytes since the last special token
        for index in ids:
            if index < FIRST_BYTE_ID:
                parts += [pending.decode("utf-8", errors="replace"), SPECIAL_TOKENS[index]]
                pending = b""
            else:
                pending += self.token_bytes[index]
        parts.append(pending.decode("utf-8", errors="replace"))
        return "".join(parts)

    def to_dict(self) -> dict:
        return {"type": "bpe", "merges": [list(pair) for pair in self.merges]}


class GPT2BPETokenizer(BPETokenizer):
    """:class:`BPETokenizer` with GPT-2's pre-split (:data:`GPT2_PRE_SPLIT`) and GPT-2's ids.

    The merges are minipt's (pairs of minipt ids, merge ``k`` making token ``261 + k``) and run exactly as in
    :class:`BPETokenizer`; only the names of the tokens differ: ``ids[i]`` is the GPT-2 id of minipt's token
    ``5 + i`` (bytes first, then merges), so ``encode`` renames minipt's ids to GPT-2's at the end and ``decode``
    renames them back. GPT-2 has one special token, ``<|endoftext|>`` (``eos_id``), which also pads a batch and
    stands in for every special token of minipt's data pipeline (GPT-2 has no ``<cls>``, ``<mask>``, ...).
    """

    EOS = "<|endoftext|>"

    def __init__(self, merges: Iterable[tuple[int, int]], ids: Iterable[int], eos_id: int) -> None:
        super().__init__(merges)
        self.ids = [int(index) for index in ids]  # GPT-2 id of minipt token 5 + i
        if len(self.ids) != len(self.token_bytes) - FIRST_BYTE_ID:
            raise TokenizerError(f"GPT2BPETokenizer: {len(self.ids)} ids for {len(self.token_bytes) - FIRST_BYTE_ID} "
                                 "tokens (256 bytes and one per merge)")
        self.eos_id = self.pad_id = self.unk_id = self.mask_id = self.cls_id = self.sep_id = int(eos_id)
        self.special_ids = (self.eos_id,)
        self.minipt_id: dict[int, int] = {}  # GPT-2 id -> minipt id (the first token of that name)
        for minipt_id, gpt2_id in enumerate(self.ids, start=FIRST_BYTE_ID):
            self.minipt_id.setdefault(gpt2_id, minipt_id)
        try:
            import regex
        except ImportError:
            raise TokenizerError("GPT-2's pre-split needs the `regex` package: pip install 'minipt[hf]'") from None
        self.pattern = regex.compile(GPT2_PRE_SPLIT)

    @property
    def vocab_size(self) -> int:
        return max(*self.ids, self.eos_id) + 1

    def encode(self, text: str) -> list[int]:
        """GPT-2's ids of ``text``: minipt's BPE, then each minipt id renamed to GPT-2's."""
        return [self.ids[index - FIRST_BYTE_ID] for index in super().encode(text)]

    def decode(self, ids: Iterable[int]) -> str:
        """The text of GPT-2 ids; ``<|endoftext|>`` is written as its name."""
        parts: list[str] = []
        pending: list[int] = []  # minipt ids since the last <|endoftext|>
        for index in ids:
            if index == self.eos_id:
                parts += [super().decode(pending), self.EOS]
                pending = []
            elif index in self.minipt_id:
                pending.append(self.minipt_id[index])
            else:
                raise TokenizerError(f"GPT2BPETokenizer: id {index} is not a token of this vocabulary")
        parts.append(super().decode(pending))
        return "".join(parts)

    def to_dict(self) -> dict:
        return {"type": "gpt2-bpe", "merges": [list(pair) for pair in self.merges], "ids": self.ids,
                "eos_id": self.eos_id}


# ----------------------------------------------------------------------------------------------------------------
# Loading either kind

Tokenizer = CharTokenizer | BPETokenizer | WordPieceTokenizer


def tokenizer_from_dict(d: dict) -> Tokenizer:
    """Rebuild a tokenizer from :meth:`to_dict`'s output, choosing the class by its ``"type"`` field."""
    kind = d.get("type") if isinstance(d, dict) else None
    if kind == "char" and isinstance(d.get("chars"), list):
        return CharTokenizer(d["chars"])
    if kind == "bpe" and isinstance(d.get("merges"), list):
        return BPETokenizer(d["merges"])
    if kind == "gpt2-bpe" and all(isinstance(d.get(key), list) for key in ("merges", "ids")) and "eos_id" in d:
        return GPT2BPETokenizer(d["merges"], d["ids"], d["eos_id"])
    if kind == "wordpiece" and isinstance(d.get("vocab"), list):
        return WordPieceTokenizer(d["vocab"], bool(d.get("lowercase", True)), d.get("accents"))
    raise TokenizerError(f"tokenizer: expected a dict with type 'char' (and chars) or 'bpe' (and merges), got {kind!r}")


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Read a tokenizer saved with ``save(path)``."""
    path = Path(path)
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise TokenizerError(f"{path}: cannot read tokenizer JSON ({type(error).__name__}: {error})") from None
    try:
        return tokenizer_from_dict(d)
    except TokenizerError as error:
        raise TokenizerError(f"{path}: {error}") from None
