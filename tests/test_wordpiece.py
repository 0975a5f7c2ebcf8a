"""minipt.data.wordpiece: BERT's basic tokenizer + WordPiece, against ``transformers``' ``BertTokenizer``.

Both vocabularies are built here (nothing is downloaded): an uncased one (lower-case words, accents stripped)
and a cased one; each string is tokenized by both implementations and the ids must be equal.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
from transformers import BertTokenizer

from minipt.data.tokenizers import load_tokenizer
from minipt.data.wordpiece import WordPieceTokenizer, basic_tokenize, wordpiece
from minipt.errors import MiniptError

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ["the", "cat", "sat", "on", "mat", "un", "##aff", "##able", "play", "##ing", "##ed", "##s", "run", "##ning",
         "cafe", "naive", "resume", "don", "t", "hello", "world", "1", "2", "3", "##1", "##2", "##3", "19", "##99",
         "$", "!", ",", ".", "'", "?", "-", "(", ")", "中", "国", "日", "本", "人", "a", "b", "c", "##a", "##b", "##c",
         "x", "##x", "über", "ü", "é", "ß", "straße", "##o", "##l", "h", "##e", "¿", "q", "##u", "é"]
CASED = ["The", "Cat", "Hello", "World", "Paris", "##ian", "Über", "Café", "É"]

STRINGS = [
    "The cat sat on the mat.",
    "Unaffable!",
    "unaffablex",  # no piece for the last x: the whole word is [UNK]
    "playing played plays running",
    "Café naïve résumé",  # accents
    "CAFÉ",
    "Über straße",
    "Hello, world! Don't.",  # punctuation inside and around words
    "(hello)-world?",
    "$19.99 and 123",  # digits
    "1999 2001 3",
    "中国人 日本",  # CJK: one word per ideograph
    "中国hello日本",
    "¿qué?",
    "zebra quokka",  # unknown words
    "a" * 101,  # longer than 100 characters: [UNK] at once
    "abcabcabcabcabc",  # a long word made of many pieces
    "  tabs\tand\nnewlines\r\n  ",
    "zero\u200bwidth and soft\u00adhyphen",  # format characters are dropped
    "the [MASK] sat on [SEP] the mat",  # special tokens are kept whole
    "",
    "Parisian Paris paris",
    "e\u0301 vs é",  # a decomposed accent
    "hello\u3000world",  # an ideographic space is whitespace
]


def write_vocab(path, words):
    path.write_text("".join(token + "\n" for token in SPECIAL + words), encoding="utf-8")
    return path


@pytest.fixture(params=["uncased", "cased"])
def tokenizers(request, tmp_path):
    lowercase = request.param == "uncased"
    words = WORDS + ([] if lowercase else CASED)
    vocab = write_vocab(tmp_path / "vocab.txt", list(dict.fromkeys(words)))
    theirs = BertTokenizer(str(vocab), do_lower_case=lowercase)
    return WordPieceTokenizer.from_vocab_txt(vocab, lowercase=lowercase), theirs


@pytest.mark.parametrize("text", STRINGS)
def test_ids_equal_bert_tokenizer(tokenizers, text):
    mine, theirs = tokenizers
    assert mine.encode(text) == theirs(text, add_special_tokens=False)["input_ids"]
    assert mine.encode_inputs(text) == theirs(text)["input_ids"]  # [CLS] ... [SEP]


def test_pairs_equal_bert_tokenizer(tokenizers):
    mine, theirs = tokenizers
    for first, second in [("The cat sat.", "On the mat!"), ("中国", "Café 19.99")]:
        assert mine.encode_inputs((first, second)) == theirs(first, second)["input_ids"]


def test_basic_tokenizer_steps():
    assert basic_tokenize("Don't STOP, Café!") == ["don", "'", "t", "stop", ",", "cafe", "!"]
    assert basic_tokenize("Café", lowercase=False) == ["Café"]
    assert basic_tokenize("Café", lowercase=True, accents=False) == ["café"]
    assert basic_tokenize("ab中c") == ["ab", "中", "c"]


def test_wordpiece_is_greedy_longest_first():
    vocab = {"un": 0, "una": 1, "##ffable": 2, "##aff": 3, "##able": 4}
    assert wordpiece("unaffable", vocab) == ["una", "##ffable"]  # "una" is longer than "un"
    assert wordpiece("unx", vocab) == ["[UNK]"]


def test_decode_and_save_round_trip(tmp_path):
    vocab = write_vocab(tmp_path / "vocab.txt", WORDS)
    tokenizer = WordPieceTokenizer.from_vocab_txt(vocab)
    ids = tokenizer.encode("Playing the cat!")
    assert tokenizer.decode(ids) == "playing the cat !"
    tokenizer.save(tmp_path / "tokenizer.json")
    again = load_tokenizer(tmp_path / "tokenizer.json")
    assert isinstance(again, WordPieceTokenizer)
    assert again.encode("Playing the cat!") == ids and again.vocab_size == tokenizer.vocab_size


def test_bad_vocab_is_one_line(tmp_path):
    with pytest.raises(MiniptError, match=r"vocab.txt: missing"):
        WordPieceTokenizer.from_vocab_txt(tmp_path / "vocab.txt")
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\nhello\n", encoding="utf-8")
    with pytest.raises(MiniptError, match=r"vocab.txt: no \[CLS\] token"):
        WordPieceTokenizer.from_vocab_txt(tmp_path / "vocab.txt")


def test_minipts_own_tokenizers_join_a_pair_with_sep():
    from minipt.data.tokenizers import CharTokenizer

    tokenizer = CharTokenizer.from_text("abc")  # a 5, b 6, c 7; <cls> 3, <sep> 4
    assert tokenizer.encode_inputs("ab", add_cls=False) == [5, 6]
    assert tokenizer.encode_inputs(("ab", "c")) == [3, 5, 6, 4, 7]  # <cls> A <sep> B
