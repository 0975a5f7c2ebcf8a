"""Tests of minipt.data.tokenizers: the char tokenizer, byte-level BPE (a merge sequence derived by hand, equality with
a naive re-count-everything BPE, exact round trips), saving and loading, and BPE's compression on real plays."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from minipt.data import shakespeare
from minipt.data.tokenizers import (
    SPECIAL_TOKENS,
    BPETokenizer,
    CharTokenizer,
    TokenizerError,
    load_tokenizer,
    pre_split,
    tokenizer_from_dict,
    train_merges,
)

# Byte b has id 5 + b (ids 0..4 are the special tokens); merged tokens start at 261.
A, B, C, D = (5 + ord(letter) for letter in "abcd")  # 102, 103, 104, 105

MINI_PLAY = Path(__file__).parent / "fixtures" / "mini_play.md"

UNUSUAL_TEXTS = [
    "Crème brûlée à la française, naïve façade, Ærø, Œuvre",
    "emoji: 🎭👑🗡️ and a family 👨‍👩‍👧 and flags 🇬🇧",
    "日本語のテキスト、中文文本，한국어",
    "e\u0301 combining accent, ﬁ ligature, ² superscript, snake_case_name",
    "tabs\tand\r\nwindows newlines\n\n\n   trailing spaces   ",
    "",
    "'s 't 're 've 'm 'll 'd — contractions at the start",
]


def small_corpus() -> str:
    """A few hundred characters of the hand-written fixture play, as pretraining text."""
    speeches = shakespeare.parse_play(MINI_PLAY.read_text(encoding="utf-8"), "mini-play", "tragedies")
    return "".join(shakespeare.format_speech(speech) for speech in speeches) * 3


# ------------------------------------------------------------------------------------------------- special tokens


@pytest.mark.parametrize("tokenizer", [CharTokenizer.from_text("abc"), BPETokenizer([])])
def test_special_tokens_have_fixed_ids(tokenizer):
    assert SPECIAL_TOKENS == ("<pad>", "<unk>", "<mask>", "<cls>", "<sep>")
    ids = (tokenizer.pad_id, tokenizer.unk_id, tokenizer.mask_id, tokenizer.cls_id, tokenizer.sep_id)
    assert ids == (0, 1, 2, 3, 4)
    assert tuple(tokenizer.special_ids) == (0, 1, 2, 3, 4)
    # A special token decodes to its name, so a masked input stays readable.
    assert tokenizer.decode([3, 2, 4, 0]) == "<cls><mask><sep><pad>"


# ------------------------------------------------------------------------------------------------- characters


def test_char_tokenizer_vocabulary_and_unknown_characters():
    tokenizer = CharTokenizer.from_text("banana")
    # Distinct characters sorted by code point: a, b, n -> ids 5, 6, 7 after the 5 special tokens.
    assert tokenizer.chars == ["a", "b", "n"]
    assert tokenizer.vocab_size == 8
    assert tokenizer.encode("nab") == [7, 5, 6]
    # "z" and "🎭" were never seen: <unk> (id 1), never an exception.
    assert tokenizer.encode("az🎭") == [5, 1, 1]
    assert tokenizer.decode(tokenizer.encode("az")) == "a<unk>"


def test_char_tokenizer_round_trips_its_corpus():
    text = small_corpus()
    tokenizer = CharTokenizer.from_text(text)
    ids = tokenizer.encode(text)
    assert len(ids) == len(text)
    assert tokenizer.decode(ids) == text


# ------------------------------------------------------------------------------------------------- BPE


def test_bpe_merges_on_aaabdaaabac_by_hand():
    # Pairs in a a a b d a a a b a c: aa x4 (two in each "aaa"), ab x2, bd, da, ba, ac x1.
    # 1. aa is the most frequent -> Z (id 261). Left to right, "aaa" becomes "Z a":  Z a b d Z a b a c.
    # 2. Now Za x2 and ab x2 tie. Tie rule: the smallest pair of ids, first id then second:
    #    ab = (102, 103) < Za = (261, 102), so ab -> Y (262):  Z Y d Z Y a c.
    # 3. ZY x2 is the only pair seen twice -> X (263):  X d X a c.
    # 4. All four pairs (Xd, dX, Xa, ac) occur once; the smallest is ac = (102, 104) -> W (264).
    assert train_merges("aaabdaaabac", 4) == [(A, A), (A, B), (261, 262), (A, C)]

    tokenizer = BPETokenizer.train("aaabdaaabac", vocab_size=5 + 256 + 3)  # three merges: Z, Y, X
    assert tokenizer.vocab_size == 264
    assert tokenizer.encode("aaabdaaabac") == [263, D, 263, A, C]  # X d X a c
    assert tokenizer.decode([263]) == "aaab"
    assert tokenizer.decode([263, D, 263, A, C]) == "aaabdaaabac"


def naive_merges(text: str, num_merges: int) -> list[tuple[int, int]]:
    """The textbook BPE loop, re-counting every pair from scratch at every step (slow, obviously right)."""
    words = [[5 + byte for byte in piece.encode("utf-8")] for piece in pre_split(text)]
    merges = []
    for new_id in range(261, 261 + num_merges):
        counts = Counter(pair for word in words for pair in zip(word, word[1:], strict=False))
        if not counts:
            break
        best = min(counts, key=lambda pair: (-counts[pair], pair))  # most frequent, then smallest ids
        merges.append(best)
        merged_words = []
        for word in words:
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(new_id)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged_words.append(out)
        words = merged_words
    return merges


def test_incremental_bpe_training_equals_the_naive_loop():
    text = small_corpus() + " ".join(UNUSUAL_TEXTS)
    assert train_merges(text, 80) == naive_merges(text, 80)


def test_bpe_stops_when_no_pair_is_left():
    # "ab ab": pieces "ab", " ab"; merges ab, then " " + ab; then nothing is left to merge.
    tokenizer = BPETokenizer.train("ab ab", vocab_size=1000)
    assert tokenizer.merges == [(A, B), (5 + ord(" "), 261)]
    assert tokenizer.vocab_size == 263


def test_bpe_training_is_deterministic_and_checks_vocab_size():
    text = small_corpus()
    assert BPETokenizer.train(text, 300).merges == BPETokenizer.train(text, 300).merges
    with pytest.raises(TokenizerError, match="vocab_size must be at least 261"):
        BPETokenizer.train(text, 100)


def test_pre_split_pieces_join_back_to_the_text():
    for text in UNUSUAL_TEXTS + [small_corpus()]:
        assert "".join(pre_split(text)) == text
    assert pre_split("Show'd like a rebel's whore") == ["Show", "'d", " like", " a", " rebel", "'s", " whore"]


@pytest.mark.parametrize("text", UNUSUAL_TEXTS)
def test_bpe_round_trips_any_unicode(text):
    tokenizer = BPETokenizer.train(small_corpus(), 320)
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_bpe_round_trips_its_corpus_and_decodes_broken_bytes_without_crashing():
    text = small_corpus()
    tokenizer = BPETokenizer.train(text, 320)
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text
    assert len(ids) < len(text)
    # The first byte of "é" (0xC3) alone is not UTF-8: replaced by U+FFFD, no exception.
    assert tokenizer.decode([5 + 0xC3, 5 + ord("x")]) == "\ufffdx"


def test_bpe_compresses_real_plays_at_least_1_8_times():
    # Train a 512-token BPE on two plays, measure on a third it never saw. Measured: 1.95 characters per token
    # on the training plays, 1.90 on Julius Caesar.
    folder = shakespeare.plays_dir()

    def play_text(genre: str, play: str) -> str:
        speeches = shakespeare.parse_play((folder / genre / f"{play}.md").read_text(encoding="utf-8"), play, genre)
        return "".join(shakespeare.format_speech(speech) for speech in speeches)

    training_text = play_text("tragedies", "hamlet") + play_text("comedies", "twelfth-night")
    unseen_text = play_text("roman", "julius-caesar")
    tokenizer = BPETokenizer.train(training_text, 512)
    unseen_ids = tokenizer.encode(unseen_text)
    assert tokenizer.decode(unseen_ids) == unseen_text
    assert len(unseen_text) / len(unseen_ids) >= 1.8


# ------------------------------------------------------------------------------------------------- saving


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_save_and_load_round_trip(tmp_path, kind):
    text = small_corpus()
    tokenizer = CharTokenizer.from_text(text) if kind == "char" else BPETokenizer.train(text, 300)
    path = tmp_path / "sub" / "tokenizer.json"
    tokenizer.save(path)
    assert json.loads(path.read_text(encoding="utf-8"))["type"] == kind
    assert [p.name for p in path.parent.iterdir()] == ["tokenizer.json"]  # no temporary file left behind
    for loaded in (load_tokenizer(path), tokenizer_from_dict(tokenizer.to_dict())):
        assert type(loaded) is type(tokenizer)
        assert loaded.vocab_size == tokenizer.vocab_size
        assert loaded.to_dict() == tokenizer.to_dict()
        assert loaded.encode(text + "🎭") == tokenizer.encode(text + "🎭")


def test_loading_bad_tokenizer_files_raises_one_line_errors(tmp_path):
    with pytest.raises(TokenizerError, match="got 'wordpiece'"):
        tokenizer_from_dict({"type": "wordpiece"})
    not_json = tmp_path / "tok.json"
    not_json.write_text("{not json", encoding="utf-8")
    with pytest.raises(TokenizerError, match="tok.json: cannot read tokenizer JSON"):
        load_tokenizer(not_json)
    with pytest.raises(TokenizerError, match="missing.json: cannot read"):
        load_tokenizer(tmp_path / "missing.json")
    with pytest.raises(TokenizerError, match="unknown id"):
        BPETokenizer([(A, 999)])
    assert issubclass(TokenizerError, ValueError)
