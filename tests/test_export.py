"""``minipt export RUN --to hf DIR`` and :mod:`minipt.interop.export`: minipt models out to Hugging Face.

The oracle is ``transformers`` (and ``tokenizers``) loading the written folder with its Auto classes: the logits
of a padded batch within 1e-5 of minipt's, the same token ids on 15 strings, the same greedy continuation. A model
with no Hugging Face equivalent (a GRU LM, minipt's pre-norm masked-LM Transformer) is a one-line refusal.
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers is imported: no network, even by accident

from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer
from transformers import AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer, BertConfig

from minipt import cli
from minipt.jobs.pretrain import load_run

CLOSE = dict(atol=1e-5, rtol=1e-5)
CORPUS = Path(__file__).parent / "fixtures" / "mini_play.md"
TINY = ["--corpus", str(CORPUS), "--bpe-vocab-size", "300", "--d-model", "32", "--n-layers", "2", "--n-heads", "4",
        "--d-ff", "64", "--block-size", "32", "--batch-size", "4", "--steps", "3", "--eval-every", "3",
        "--threads", "1", "--device", "cpu", "--quiet"]
STRINGS = [
    "Hello world", "ROMEO: But soft! what light", " a leading space", "a trailing space ", "tabs\tand\nnewlines\n\n",
    "don't we'll you're they've I'm", "numbers 12345 and 3.14", "naïve café résumé Über", "中文字符 测试",
    "emoji 🙂🚀", "multiple   spaces", "punct!!?? ... --", "under_score_", "x² ½ ٣", "\u00a0nbsp\u2003em space",
]


def pretrain(tmp_path, name, *extra):
    out = tmp_path / name
    assert cli.main(["pretrain", "--out", str(out), *TINY, *extra]) == 0
    return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    run = pretrain(root, "clm")
    assert cli.main(["export", str(run), "--to", "hf", str(root / "hf")]) == 0
    return run, root / "hf"


def test_the_folder_holds_gpt2_files(exported):
    _, folder = exported
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json",
                                                        "tokenizer_config.json"]
    assert json.loads((folder / "config.json").read_text())["model_type"] == "gpt2"


def test_logits_of_a_padded_batch_equal_minipts(exported):
    run, folder = exported
    model, tokenizer, _ = load_run(run)
    ids = [tokenizer.encode(text)[:24] for text in STRINGS[:4]]
    longest = max(map(len, ids))
    x = torch.tensor([row + [tokenizer.pad_id] * (longest - len(row)) for row in ids])  # (4, T)
    mask = torch.tensor([[1] * len(row) + [0] * (longest - len(row)) for row in ids])  # (4, T)
    real = mask.bool()
    with torch.no_grad():
        logits, _ = model(x, attention_mask=mask)
        theirs = AutoModelForCausalLM.from_pretrained(folder).eval()(input_ids=x, attention_mask=mask).logits
        hidden = AutoModel.from_pretrained(folder).eval()(input_ids=x, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(theirs[real], logits[real], **CLOSE)
    torch.testing.assert_close(hidden[real], model.features(x, mask)[real], **CLOSE)


def test_autotokenizer_gives_minipts_ids(exported):
    run, folder = exported
    _, tokenizer, _ = load_run(run)
    theirs = AutoTokenizer.from_pretrained(folder)
    from_json = Tokenizer.from_file(str(folder / "tokenizer.json"))  # the `tokenizers` library alone
    for text in STRINGS:
        assert theirs(text)["input_ids"] == tokenizer.encode(text), text
        assert from_json.encode(text).ids == tokenizer.encode(text), text
        assert theirs.decode(tokenizer.encode(text)) == text


def test_the_same_greedy_continuation(exported):
    run, folder = exported
    model, tokenizer, _ = load_run(run)
    prompt = torch.tensor([tokenizer.encode("ROMEO: But soft")])
    theirs = AutoModelForCausalLM.from_pretrained(folder).eval()
    expected = theirs.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=12, do_sample=False)
    assert model.generate(prompt, 12, top_k=1).tolist() == expected.tolist()


def one_line_error(capsys, status, message):
    error = capsys.readouterr().err
    assert status == 2 and error.count("\n") == 1 and message in error and "Traceback" not in error


def test_models_without_a_hugging_face_equivalent_are_refused_in_one_line(tmp_path, capsys, exported):
    gru = pretrain(tmp_path, "gru", "--model", "gru", "--hidden-size", "32")
    status = cli.main(["export", str(gru), "--to", "hf", str(tmp_path / "a")])
    one_line_error(capsys, status, "a GRULM has no Hugging Face equivalent")
    mlm = pretrain(tmp_path, "mlm", "--objective", "mlm")
    status = cli.main(["export", str(mlm), "--to", "hf", str(tmp_path / "b")])
    one_line_error(capsys, status, "no BertConfig expresses it")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    status = cli.main(["export", str(exported[0]), "--to", "hf", str(exported[1])])
    one_line_error(capsys, status, "already exists and is not an empty folder")


def test_a_bert_folder_round_trips_through_minipt(tmp_path):
    from transformers import BertForPreTraining

    from minipt.interop.bert import load_bert_tokenizer
    from minipt.interop.bert_mlm import load_hf_bert_mlm

    words = ["the", "cat", "sat", "on", "mat", "hello", "world", "!", ",", ".", "'", "##s", "a", "dog", "中", "国",
             "cafe", "1", "##2", "don", "t", "naive"]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words] + [f"w{i}" for i in range(73)]
    source = tmp_path / "source"
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=32)
    BertForPreTraining(config).save_pretrained(source)
    (source / "vocab.txt").write_text("".join(token + "\n" for token in vocab), encoding="utf-8")
    assert cli.main(["export", f"hf-bert:{source}", "--to", "hf", str(tmp_path / "out")]) == 0  # in and out again
    tokenizer = load_bert_tokenizer(source)
    encoder, head = load_hf_bert_mlm(source, tokenizer.sep_id)
    theirs = AutoTokenizer.from_pretrained(tmp_path / "out")
    from_json = Tokenizer.from_file(str(tmp_path / "out" / "tokenizer.json"))  # the `tokenizers` library alone
    for text in [*STRINGS, "the [MASK] sat", "Café DON'T 12"]:
        assert theirs(text)["input_ids"] == tokenizer.encode_inputs(text), text
        assert from_json.encode(text).ids == tokenizer.encode_inputs(text), text
    assert from_json.encode("the cat", "a dog").ids == tokenizer.encode_inputs(("the cat", "a dog"))
    inputs = theirs([("the cat sat", "on the mat!"), ("hello", "a dog")], padding=True, return_tensors="pt")
    real = inputs["attention_mask"].bool()
    assert [row for row in inputs["input_ids"][1].tolist() if row] == tokenizer.encode_inputs(("hello", "a dog"))
    with torch.no_grad():
        features = encoder.features(inputs["input_ids"], inputs["attention_mask"])
        logits = AutoModelForMaskedLM.from_pretrained(tmp_path / "out").eval()(**inputs).logits
        base = AutoModel.from_pretrained(tmp_path / "out").eval()(**inputs)
    torch.testing.assert_close(logits[real], head(features)[real], **CLOSE)
    torch.testing.assert_close(base.last_hidden_state[real], features[real], **CLOSE)
    torch.testing.assert_close(base.pooler_output, encoder.pooler(features), **CLOSE)


def test_a_character_run_exports_too(tmp_path):
    run = pretrain(tmp_path, "char", "--tokenizer", "char")
    assert cli.main(["export", str(run), "--to", "hf", str(tmp_path / "hf")]) == 0
    model, tokenizer, _ = load_run(run)
    theirs = AutoTokenizer.from_pretrained(tmp_path / "hf")
    for text in [*STRINGS, "ROMEO:\nBut soft"]:  # characters the play never had are <unk> on both sides
        assert theirs(text)["input_ids"] == tokenizer.encode(text), text
    ids = torch.tensor([tokenizer.encode("ROMEO: But soft, what light")])
    with torch.no_grad():
        logits, _ = model(ids)
        expected = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()(input_ids=ids).logits
    torch.testing.assert_close(expected, logits, **CLOSE)
    assert theirs.decode(ids[0]) == tokenizer.decode(ids[0].tolist())  # an unseen character: "<unk>" in both


def test_a_bidirectional_model_is_not_written_as_gpt2(tmp_path):
    from minipt.data.tokenizers import BPETokenizer
    from minipt.errors import MiniptError
    from minipt.interop.export import save_gpt2_folder
    from minipt.models import TransformerLM

    with pytest.raises(MiniptError, match="a bidirectional Transformer is not GPT-2"):
        save_gpt2_folder(TransformerLM(300, 16, 1, 2, 32, 8, causal=False), BPETokenizer([]), tmp_path / "b")
