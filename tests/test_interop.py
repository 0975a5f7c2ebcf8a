"""minipt.interop: Hugging Face GPT-2 and BERT checkpoints in minipt's models and tokenizer, with no download.

The oracle is ``transformers`` itself (a dev dependency): small models built from a config with random weights
(2 layers, width 64), converted, and compared output for output in float32 within 1e-5, with padding; minipt ->
Hugging Face -> minipt is bit for bit. The tokenizer is compared with ``transformers``' GPT-2 tokenizer on files
trained by ``tokenizers`` and on files written by minipt. A bad folder is a one-line error.
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers is imported: no network, even by accident

import pytest
import torch
from safetensors.torch import save_file
from tokenizers import ByteLevelBPETokenizer
from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel, GPT2Tokenizer

from minipt import cli
from minipt.data.tokenizers import BPETokenizer, GPT2BPETokenizer, load_tokenizer
from minipt.errors import MiniptError
from minipt.interop import (
    bert_config_from_minipt,
    bert_state_dict,
    gpt2_config_from_minipt,
    gpt2_state_dict,
    load_bert_state_dict,
    load_gpt2_state_dict,
    load_gpt2_tokenizer,
    load_hf_bert,
    load_hf_gpt2,
    save_gpt2_tokenizer,
)
from minipt.jobs.sources import load_pretrained
from minipt.models import TransformerLM

CLOSE = dict(atol=1e-5, rtol=1e-5)  # float32, two implementations of the same formulas
VOCAB = 300
STRINGS = [
    "Hello world", "  two  spaces   and a tab\there", "I'm sure you'll see they're right, it's theirs'd",
    "numbers 12345 and 3.14159, x² + ½", "naïve café résumé über", "日本語のテキスト", "emoji 🙂🚀 mixed",
    "line one\nline two\n\n", "CAPS and MiXeD case", "under_score and hyphen-ated", "   ", "don't DON'T 'quoted'",
]
CORPUS = " ".join(STRINGS[:6]) + " the quick brown fox jumps over the lazy dog " * 20


def gpt2_hf_config(**overrides) -> GPT2Config:
    settings = dict(vocab_size=VOCAB, n_positions=32, n_embd=64, n_layer=2, n_head=4, bos_token_id=VOCAB - 1,
                    eos_token_id=VOCAB - 1)
    return GPT2Config(**{**settings, **overrides})


def bert_hf_config(**overrides) -> BertConfig:
    settings = dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=128, max_position_embeddings=32, type_vocab_size=2)
    return BertConfig(**{**settings, **overrides})


def random_hf(model_class, config, seed: int = 0):
    """A transformers model with random weights, every one moved by N(0, 0.1²): layer norms and biases are not
    the fresh 1 and 0, and the GELU's inputs are large enough (std about 1) for its two forms to differ."""
    torch.manual_seed(seed)
    model = model_class(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    return model


def batch(seed: int = 1, padding: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
    """Random ids ``(3, 12)`` and an attention mask with three lengths (12, 9, 5), padded on ``padding``'s side."""
    ids = torch.randint(0, VOCAB, (3, 12), generator=torch.Generator().manual_seed(seed))
    mask = (torch.arange(12)[None, :] < torch.tensor([12, 9, 5])[:, None]).long()  # (3, 12)
    return ids, (mask if padding == "right" else mask.flip(1))


# ------------------------------------------------------------------------------------------------------
# GPT-2
# ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fast", [False, True])
@pytest.mark.parametrize("padding", ["right", "left"])
def test_gpt2_logits_and_hidden_states_equal_transformers(padding, fast):
    theirs = random_hf(GPT2LMHeadModel, gpt2_hf_config())
    mine = TransformerLM(**minipt_gpt2_config(), fast=fast).eval()
    load_gpt2_state_dict(mine, theirs.state_dict())
    ids, mask = batch(padding=padding)
    real = mask.bool()  # padded positions are compared nowhere: what they compute is nobody's business
    with torch.no_grad():
        expected = theirs(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        logits, _, intermediates = mine(ids, attention_mask=mask, return_intermediates=True)
    torch.testing.assert_close(logits[real], expected.logits[real], **CLOSE)
    hidden = intermediates["hidden_states"]
    assert len(hidden) == len(expected.hidden_states) == 3
    for layer in range(2):  # the embedding and the first layer's output; HF's last one is after ln_f
        torch.testing.assert_close(hidden[layer][real], expected.hidden_states[layer][real], **CLOSE)
    torch.testing.assert_close(mine.features(ids, mask)[real], expected.hidden_states[2][real], **CLOSE)


def minipt_gpt2_config() -> dict:
    from minipt.interop.gpt2 import minipt_config_from_gpt2

    return minipt_config_from_gpt2(gpt2_hf_config().to_dict())


def test_gpt2_config_becomes_minipts_shape():
    config = minipt_gpt2_config()
    assert config == {"vocab_size": VOCAB, "d_model": 64, "n_layers": 2, "n_heads": 4, "d_ff": 256, "max_len": 32,
                      "dropout": 0.1, "causal": True, "tie_weights": True, "pad_id": VOCAB - 1,
                      "activation": "gelu_tanh", "norm_first": True, "layer_norm_eps": 1e-5}


def test_gpt2_conv1d_weights_are_transposed_and_c_attn_is_the_in_projection():
    theirs = random_hf(GPT2LMHeadModel, gpt2_hf_config())
    mine = TransformerLM(**minipt_gpt2_config())
    load_gpt2_state_dict(mine, theirs.state_dict())
    block = theirs.transformer.h[1]
    assert block.attn.c_attn.weight.shape == (64, 192) and mine.layers[1].self_attn.in_proj_weight.shape == (192, 64)
    assert torch.equal(mine.layers[1].self_attn.in_proj_weight[64:128], block.attn.c_attn.weight[:, 64:128].T)  # keys
    assert torch.equal(mine.layers[1].linear1.weight, block.mlp.c_fc.weight.T)
    assert mine.lm_head.weight is mine.embedding.token.weight  # still tied


def test_minipt_to_gpt2_to_minipt_is_bit_for_bit():
    torch.manual_seed(3)
    original = TransformerLM(vocab_size=VOCAB, d_model=64, n_layers=2, n_heads=4, d_ff=128, max_len=32,
                             activation="gelu_tanh", pad_id=VOCAB - 1)
    with torch.no_grad():
        for parameter in original.parameters():
            parameter.add_(torch.randn_like(parameter))
    theirs = GPT2LMHeadModel(GPT2Config(**gpt2_config_from_minipt(original)))
    theirs.load_state_dict(gpt2_state_dict(original))  # strict: every key of GPT-2 is there
    back = TransformerLM(**original.config)
    load_gpt2_state_dict(back, theirs.state_dict())
    assert back.config == original.config
    for (name, a), (_, b) in zip(original.state_dict().items(), back.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


# ------------------------------------------------------------------------------------------------------
# BERT
# ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fast", [False, True])
def test_bert_hidden_states_equal_transformers(fast):
    theirs = random_hf(BertModel, bert_hf_config())
    from minipt.interop.bert import minipt_config_from_bert

    config = minipt_config_from_bert(bert_hf_config().to_dict())
    assert (config["norm_first"], config["causal"], config["activation"], config["type_vocab_size"]) == (
        False, False, "gelu", 2)
    mine = TransformerLM(**config, fast=fast).eval()
    load_bert_state_dict(mine, theirs.state_dict())
    ids, mask = batch()
    types = (torch.arange(12) >= 4).long().expand(3, 12) * mask  # segment 1 from position 4 on
    with torch.no_grad():
        expected = theirs(input_ids=ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True)
        _, _, intermediates = mine(ids, attention_mask=mask, token_type_ids=types, return_intermediates=True)
    assert len(intermediates["hidden_states"]) == len(expected.hidden_states) == 3
    for layer, hidden in enumerate(intermediates["hidden_states"]):  # every position: padding queries too
        torch.testing.assert_close(hidden, expected.hidden_states[layer], **CLOSE)
    torch.testing.assert_close(mine.features(ids, mask, types), expected.last_hidden_state, **CLOSE)


def test_minipt_to_bert_to_minipt_is_bit_for_bit():
    torch.manual_seed(4)
    original = TransformerLM(vocab_size=VOCAB, d_model=64, n_layers=2, n_heads=4, d_ff=128, max_len=32, causal=False,
                             norm_first=False, type_vocab_size=2, layer_norm_eps=1e-12)
    with torch.no_grad():
        for parameter in original.parameters():
            parameter.add_(torch.randn_like(parameter))
    theirs = BertModel(BertConfig(**bert_config_from_minipt(original)))
    missing, unexpected = theirs.load_state_dict(bert_state_dict(original), strict=False)
    assert sorted(missing) == ["pooler.dense.bias", "pooler.dense.weight"] and unexpected == []  # no pooler
    back = TransformerLM(**original.config)
    load_bert_state_dict(back, {"bert." + k: v for k, v in theirs.state_dict().items()})  # BertFor...'s prefix
    for (name, a), (_, b) in zip(original.state_dict().items(), back.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


# ------------------------------------------------------------------------------------------------------
# Folders
# ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf_folders(tmp_path_factory):
    """A GPT-2 folder (safetensors, with a tokenizer trained by `tokenizers`), the same GPT-2 as
    pytorch_model.bin, and a BERT folder."""
    root = tmp_path_factory.mktemp("hf")
    trainer = ByteLevelBPETokenizer()
    trainer.train_from_iterator([CORPUS], vocab_size=VOCAB, min_frequency=1, special_tokens=["<|endoftext|>"],
                                show_progress=False)
    gpt2 = root / "gpt2"
    gpt2.mkdir()
    trainer.save_model(str(gpt2))
    vocab_size = len(json.loads((gpt2 / "vocab.json").read_text()))
    eos = json.loads((gpt2 / "vocab.json").read_text())["<|endoftext|>"]
    model = random_hf(GPT2LMHeadModel, gpt2_hf_config(vocab_size=vocab_size, eos_token_id=eos, bos_token_id=eos))
    model.save_pretrained(gpt2)
    pickled = root / "gpt2-bin"
    pickled.mkdir()
    model.config.to_json_file(pickled / "config.json")
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")
    bert = root / "bert"
    random_hf(BertModel, bert_hf_config()).save_pretrained(bert)
    return {"gpt2": gpt2, "gpt2-bin": pickled, "bert": bert, "model": model}


def test_a_gpt2_folder_loads_from_safetensors_or_pytorch_model_bin(hf_folders):
    ids, mask = batch()
    ids = ids % hf_folders["model"].config.vocab_size
    with torch.no_grad():
        expected = hf_folders["model"](input_ids=ids, attention_mask=mask).logits
        for name in ("gpt2", "gpt2-bin"):
            logits, _ = load_hf_gpt2(hf_folders[name])(ids, attention_mask=mask)
            torch.testing.assert_close(logits[mask.bool()], expected[mask.bool()], **CLOSE)


def test_a_bert_folder_loads(hf_folders):
    model = load_hf_bert(hf_folders["bert"])
    assert not model.training and model.config["layer_norm_eps"] == 1e-12 and model.config["pad_id"] == 0


def corrupt(folder, tmp_path, name, change):
    """A copy of ``folder`` with ``change(copy)`` applied."""
    import shutil

    copy = tmp_path / name
    shutil.copytree(folder, copy)
    change(copy)
    return copy


def edit_config(**changes):
    def change(folder):
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, **changes}))
    return change


def drop_tensor(key):
    def change(folder):
        from safetensors.torch import load_file

        state = load_file(folder / "model.safetensors")
        del state[key]
        save_file(state, folder / "model.safetensors")
    return change


def add_untied_head(folder):
    """An LM head that is not the token embedding (save_pretrained leaves a tied one out of the file)."""
    from safetensors.torch import load_file

    state = load_file(folder / "model.safetensors")
    state["lm_head.weight"] = state["transformer.wte.weight"] + 1.0
    save_file(state, folder / "model.safetensors")


BAD_FOLDERS = [
    ("no-config", lambda f: (f / "config.json").unlink(), r"config\.json: missing"),
    ("not-json", lambda f: (f / "config.json").write_text("{"), r"config\.json: cannot read JSON"),
    ("bert-as-gpt2", edit_config(model_type="bert"), r"model_type is 'bert', expected 'gpt2' \(wrong architecture\)"),
    ("no-weights", lambda f: (f / "model.safetensors").unlink(), r"missing weights \(neither model\.safetensors"),
    ("fewer-positions", edit_config(n_positions=16), r"shape mismatch: wpe\.weight is \(32, 64\) but config\.json "
                                                     r"implies \(16, 64\)"),
    ("more-layers", edit_config(n_layer=3), r"missing h\.2\.ln_1\.weight"),
    ("bad-field", edit_config(n_embd="wide"), r"config\.json: n_embd must be an int, got 'wide'"),
    ("bad-heads", edit_config(n_head=5), r"config\.json: TransformerLM: d_model=64 must be divisible by n_heads=5"),
    ("other-variant", edit_config(scale_attn_by_inverse_layer_idx=True), r"scale_attn_by_inverse_layer_idx=True is "
                                                                         r"not supported"),
    ("fewer-layers", edit_config(n_layer=1), r"unexpected tensor h\.1\..* \(not part of a 1-layer GPT-2\)"),
    ("missing-tensor", drop_tensor("transformer.h.0.mlp.c_fc.bias"), r"missing h\.0\.mlp\.c_fc\.bias"),
    ("untied-head", add_untied_head, r"lm_head\.weight differs from wte\.weight"),
    ("no-vocab", lambda f: (f / "vocab.json").unlink(), r"vocab\.json: missing"),
    ("bad-merges", lambda f: (f / "merges.txt").write_text("#version: 0.2\na b c\n"), r"merges\.txt: line 2"),
]


@pytest.mark.parametrize(("name", "change", "message"), BAD_FOLDERS, ids=[case[0] for case in BAD_FOLDERS])
def test_a_bad_gpt2_folder_is_a_one_line_error(hf_folders, tmp_path, capsys, name, change, message):
    folder = corrupt(hf_folders["gpt2"], tmp_path, name, change)
    with pytest.raises(MiniptError, match=message):
        load_pretrained(f"hf-gpt2:{folder}")
    assert cli.main(["generate", "--from", f"hf-gpt2:{folder}", "--tokens", "1"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("minipt generate: error: ") and "Traceback" not in error


def test_a_missing_folder_and_a_bert_shape_mismatch_are_one_line_errors(hf_folders, tmp_path):
    with pytest.raises(MiniptError, match="no such folder"):
        load_hf_gpt2(tmp_path / "nothing")
    folder = corrupt(hf_folders["bert"], tmp_path, "bert-wide", edit_config(intermediate_size=96))
    with pytest.raises(MiniptError, match=r"shape mismatch: encoder\.layer\.0\.intermediate\.dense\.weight is "
                                          r"\(128, 64\) but config\.json implies \(96, 64\)"):
        load_hf_bert(folder)


# ------------------------------------------------------------------------------------------------------
# The tokenizer
# ------------------------------------------------------------------------------------------------------


def test_gpt2_tokenizer_gives_the_ids_of_transformers_on_files_trained_by_tokenizers(hf_folders):
    folder = hf_folders["gpt2"]
    theirs = GPT2Tokenizer(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"))
    mine = load_gpt2_tokenizer(folder)
    assert isinstance(mine, BPETokenizer) and mine.vocab_size == len(theirs)
    for text in STRINGS:
        ids = mine.encode(text)
        assert ids == theirs.encode(text, add_special_tokens=False), text
        assert mine.decode(ids) == text
    assert mine.decode([mine.eos_id, *mine.encode("hi")]) == "<|endoftext|>hi"
    assert len(mine.encode("the quick brown fox")) < len(b"the quick brown fox")  # merges did apply


def test_minipt_bpe_written_as_gpt2_files_gives_transformers_ids_and_survives_a_run_folder(tmp_path):
    trained = BPETokenizer.train(CORPUS, vocab_size=400)
    save_gpt2_tokenizer(trained, tmp_path)
    vocab = json.loads((tmp_path / "vocab.json").read_text())
    assert vocab["!"] == 0 and vocab["Ġ"] == 220 and vocab["<|endoftext|>"] == len(vocab) - 1  # GPT-2's layout
    theirs = GPT2Tokenizer(vocab=str(tmp_path / "vocab.json"), merges=str(tmp_path / "merges.txt"))
    mine = load_gpt2_tokenizer(tmp_path)
    for text in STRINGS:
        assert mine.encode(text) == theirs.encode(text, add_special_tokens=False), text
    mine.save(tmp_path / "tokenizer.json")  # how a finetuning run stores it
    reloaded = load_tokenizer(tmp_path / "tokenizer.json")
    assert isinstance(reloaded, GPT2BPETokenizer) and reloaded.encode(STRINGS[3]) == mine.encode(STRINGS[3])
    assert reloaded.pad_id == reloaded.eos_id == vocab["<|endoftext|>"]


def test_gpt2s_pre_split_differs_from_minipts_on_other_numbers():
    from minipt.data.tokenizers import pre_split

    gpt2 = GPT2BPETokenizer([], list(range(256)), eos_id=256)
    assert gpt2.pattern.findall("x² costs 3½") == ["x", "²", " costs", " 3½"]
    assert pre_split("x² costs 3½") == ["x²", " costs", " 3", "½"]  # Python's \d is only decimal digits


# ------------------------------------------------------------------------------------------------------
# The command line
# ------------------------------------------------------------------------------------------------------


def test_cli_generate_and_finetune_with_frozen_layers_from_a_gpt2_folder(hf_folders, tmp_path, capsys):
    source = f"hf-gpt2:{hf_folders['gpt2']}"
    assert cli.main(["generate", "--from", source, "--prompt", "the quick", "--tokens", "5", "--seed", "0"]) == 0
    assert capsys.readouterr().out.startswith("the quick")
    rows = ["text,label"] + [f'"the quick fox {i}, a rose",rose' for i in range(12)]  # a comma: quoted
    rows += [f'"the lazy dog {i}, a bird",bird' for i in range(12)]
    task = tmp_path / "task.csv"
    task.write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "run"
    status = cli.main(["finetune", "--from", source, "--task", str(task), "--freeze", "1", "--epochs", "1",
                       "--batch-size", "8", "--device", "cpu", "--threads", "1", "--out", str(out), "--quiet"])
    assert status == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["model"]["activation"] == "gelu_tanh" and saved["pretrain"]["source"] == source
    assert cli.main(["evaluate", "--from", str(out)]) == 0  # rebuilt from config.json and tokenizer.json
    best = torch.load(out / "best.pt", weights_only=True)["model"]
    original = load_hf_gpt2(hf_folders["gpt2"]).state_dict()
    assert torch.equal(best["backbone.layers.0.linear1.weight"], original["layers.0.linear1.weight"])  # frozen
    assert not torch.equal(best["backbone.layers.1.linear1.weight"], original["layers.1.linear1.weight"])  # trained


def test_a_bert_checkpoint_finetunes_with_frozen_lower_layers_in_minipts_code(hf_folders):
    from minipt.models import SequenceClassifier
    from minipt.optim import AdamW
    from minipt.training.strategies import freeze

    backbone = load_hf_bert(hf_folders["bert"], fast=True)
    before = {name: value.clone() for name, value in backbone.state_dict().items()}
    torch.manual_seed(0)
    model = SequenceClassifier(backbone, num_classes=2, pooling="first")
    freeze(model, 1)  # the embedding (with its segment vectors and layer norm) and layer 0
    optimizer = AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ids, mask = batch()
    _, loss = model(ids, mask, torch.tensor([0, 1, 1]))
    loss.backward()
    optimizer.step()
    after = backbone.state_dict()
    frozen = [name for name in before if name.startswith(("embedding.", "layers.0.", "lm_head."))]
    assert "embedding.token_type.weight" in frozen and "embedding.norm.weight" in frozen
    assert all(torch.equal(before[name], after[name]) for name in frozen)
    assert not torch.equal(before["layers.1.linear1.weight"], after["layers.1.linear1.weight"])


def test_the_demo_and_the_cli_import_no_hugging_face_package():
    import subprocess
    import sys

    code = ("import sys, minipt.cli, minipt.jobs.demo, minipt.jobs.finetune, minipt.interop; "
            "print(sorted({'transformers', 'safetensors', 'regex', 'tokenizers'} & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# ------------------------------------------------------------------------------------------------------
# BERT end to end: WordPiece, the pooler, token types from [SEP], the masked-LM head, hf-bert: on the CLI
# ------------------------------------------------------------------------------------------------------

BERT_WORDS = ["the", "cat", "sat", "on", "mat", "a", "dog", "ran", "##s", "##ing", "hello", "world", "!", ",", ".",
              "'", "quick", "brown", "fox", "lazy", "rose", "bird", "中", "国", "1", "##2", "cafe"]
BERT_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *BERT_WORDS]
BERT_VOCAB += [f"word{i}" for i in range(VOCAB - len(BERT_VOCAB))]  # real shapes: one row per token


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory):
    """A BERT pretraining checkpoint (encoder, pooler, masked-LM and next-sentence heads; random weights) with an
    uncased vocab.txt built here, as save_pretrained writes it."""
    from transformers import BertForPreTraining

    folder = tmp_path_factory.mktemp("hf") / "bert-mlm"
    random_hf(BertForPreTraining, bert_hf_config()).save_pretrained(folder)
    (folder / "vocab.txt").write_text("".join(token + "\n" for token in BERT_VOCAB), encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}), encoding="utf-8")
    return folder


def bert_pair_batch(folder):
    from transformers import BertTokenizer

    tokenizer = BertTokenizer(str(folder / "vocab.txt"))
    return tokenizer([("The cat sat.", "On the mat!"), ("hello", "a dog ran"), ("quick brown fox", "lazy")],
                     padding=True, return_tensors="pt")


def test_segments_from_sep_by_hand():
    from minipt.interop.bert import segments_from_sep

    # [CLS] a [SEP] b [SEP] <pad>: [SEP]s strictly before each position 0 0 0 1 1 2 -> types 0 0 0 1 1 1
    ids = torch.tensor([[2, 7, 3, 8, 3, 0], [2, 7, 8, 3, 0, 0]])
    assert segments_from_sep(ids, sep_id=3).tolist() == [[0, 0, 0, 1, 1, 1], [0, 0, 0, 0, 1, 1]]


@pytest.mark.parametrize("fast", [False, True])
def test_bert_pairs_and_pooler_equal_transformers(bert_folder, fast):
    from transformers import BertModel as HFBert

    from minipt.interop.bert import load_bert_tokenizer, load_hf_bert_encoder

    tokenizer = load_bert_tokenizer(bert_folder)
    encoder = load_hf_bert_encoder(bert_folder, tokenizer.sep_id, fast=fast)
    inputs = bert_pair_batch(bert_folder)
    assert [tokenizer.encode_inputs(pair) for pair in [("The cat sat.", "On the mat!")]] == [
        [i for i, m in zip(inputs["input_ids"][0].tolist(), inputs["attention_mask"][0].tolist(), strict=True) if m]]
    with torch.no_grad():
        expected = HFBert.from_pretrained(bert_folder).eval()(**inputs)  # explicit token_type_ids
        features = encoder.features(inputs["input_ids"], inputs["attention_mask"])  # types from [SEP]
    real = inputs["attention_mask"].bool()
    torch.testing.assert_close(features[real], expected.last_hidden_state[real], **CLOSE)
    torch.testing.assert_close(encoder.pooler(features), expected.pooler_output, **CLOSE)


def test_bert_masked_lm_head_equals_transformers(bert_folder):
    from transformers import BertForMaskedLM

    from minipt.interop.bert_mlm import load_hf_bert_mlm

    encoder, head = load_hf_bert_mlm(bert_folder, sep_id=3)
    assert head.embedding.weight is encoder.embedding.token.weight  # the decoder is tied
    inputs = bert_pair_batch(bert_folder)
    with torch.no_grad():
        expected = BertForMaskedLM.from_pretrained(bert_folder).eval()(**inputs).logits
        logits = head(encoder.features(inputs["input_ids"], inputs["attention_mask"]))
    real = inputs["attention_mask"].bool()
    torch.testing.assert_close(logits[real], expected[real], **CLOSE)


def test_fill_mask_top5_equals_the_transformers_pipeline(bert_folder, capsys):
    from transformers import pipeline

    text = "The quick [MASK] fox sat on the [MASK]."
    theirs = pipeline("fill-mask", model=str(bert_folder), tokenizer=str(bert_folder), top_k=5)(text)
    assert cli.main(["fill-mask", "--from", f"hf-bert:{bert_folder}", "--text", text]) == 0
    lines = capsys.readouterr().out.splitlines()
    for number, expected in enumerate(theirs):
        block = lines[6 * number + 1 : 6 * number + 6]
        ids = [int(line.rsplit("(id ", 1)[1].rstrip(")")) for line in block]
        probabilities = [float(line.split()[0]) for line in block]
        assert ids == [guess["token"] for guess in expected]
        assert probabilities == pytest.approx([guess["score"] for guess in expected], abs=1e-4)


def pair_task(tmp_path):
    rows = ["first,second,label"]
    rows += [f'"the cat sat {i}",on the mat,same' for i in range(12)]
    rows += [f'"a dog ran {i}","hello, world",other' for i in range(12)]
    task = tmp_path / "pairs.csv"
    task.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return task


def test_cli_finetunes_a_bert_folder_on_pairs_with_frozen_lower_layers(bert_folder, tmp_path):
    from minipt.interop.bert import load_hf_bert_encoder

    out = tmp_path / "run"
    status = cli.main(["finetune", "--from", f"hf-bert:{bert_folder}", "--task", str(pair_task(tmp_path)),
                       "--text-column", "first,second", "--freeze", "1", "--epochs", "1", "--batch-size", "8",
                       "--device", "cpu", "--threads", "1", "--out", str(out), "--quiet"])
    assert status == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["classifier"]["pooling"] == "pooler" and saved["model"]["architecture"] == "bert"
    assert cli.main(["evaluate", "--from", str(out)]) == 0  # rebuilt from config.json and tokenizer.json
    best = torch.load(out / "best.pt", weights_only=True)["model"]
    original = load_hf_bert_encoder(bert_folder, sep_id=3).state_dict()
    assert torch.equal(best["backbone.layers.0.linear1.weight"], original["layers.0.linear1.weight"])  # frozen
    assert torch.equal(best["backbone.embedding.token_type.weight"], original["embedding.token_type.weight"])
    assert not torch.equal(best["backbone.layers.1.linear1.weight"], original["layers.1.linear1.weight"])
    assert not torch.equal(best["backbone.pooler.dense.weight"], original["pooler.dense.weight"])  # trains


def test_the_frozen_cache_is_exact_for_bert_pairs(bert_folder):
    from minipt.data.datasets import ClassificationDataset, collate_classification
    from minipt.interop.bert import load_bert_tokenizer, load_hf_bert_encoder
    from minipt.models import SequenceClassifier
    from minipt.training import frozen_cache
    from minipt.training.strategies import freeze

    tokenizer = load_bert_tokenizer(bert_folder)
    torch.manual_seed(0)
    model = SequenceClassifier(load_hf_bert_encoder(bert_folder, tokenizer.sep_id), 2, pooling="pooler").eval()
    freeze(model, 1)
    examples = [(("the cat sat", "on the mat"), "a"), (("hello", "a dog ran fox"), "b"), ("lazy", "a")]
    data = ClassificationDataset(examples, tokenizer, ["a", "b"], max_len=32)
    assert data[0][0] == [2, 5, 6, 7, 3, 8, 5, 9, 3]  # [CLS] the cat sat [SEP] on the mat [SEP]
    batch = collate_classification(list(data), tokenizer.pad_id)
    with torch.no_grad():
        expected, _ = model(batch["input_ids"], batch["attention_mask"])
        cached = frozen_cache.cache_batches(model, [batch], 1)[0]
        logits, _ = model(cached["hidden"], cached["attention_mask"], from_layer=1)
    torch.testing.assert_close(logits, expected, atol=1e-6, rtol=0)


BAD_BERT_FOLDERS = [
    ("no-vocab", lambda f: (f / "vocab.txt").unlink(), r"vocab\.txt: missing"),
    ("no-cls", lambda f: (f / "vocab.txt").write_text("[PAD]\n[UNK]\n[SEP]\n[MASK]\nthe\n"), r"vocab\.txt: no \[CLS\]"),
    ("big-vocab", lambda f: (f / "vocab.txt").write_text("".join(t + "\n" for t in BERT_VOCAB + ["extra"])),
     r"vocab\.txt: 301 tokens, but the model has only vocab_size=300"),
    ("bad-case", lambda f: (f / "tokenizer_config.json").write_text('{"do_lower_case": "yes"}'),
     r"tokenizer_config\.json: do_lower_case must be true or false"),
    ("gpt2-config", edit_config(model_type="gpt2"), r"model_type is 'gpt2', expected 'bert'"),
    ("missing-tensor", drop_tensor("bert.encoder.layer.1.output.dense.bias"),
     r"missing encoder\.layer\.1\.output\.dense\.bias"),
]


@pytest.mark.parametrize(("name", "change", "message"), BAD_BERT_FOLDERS, ids=[c[0] for c in BAD_BERT_FOLDERS])
def test_a_bad_bert_folder_is_a_one_line_error(bert_folder, tmp_path, capsys, name, change, message):
    folder = corrupt(bert_folder, tmp_path, name, change)
    with pytest.raises(MiniptError, match=message):
        load_pretrained(f"hf-bert:{folder}")
    assert cli.main(["fill-mask", "--from", f"hf-bert:{folder}", "--text", "the [MASK]"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("minipt fill-mask: error: ") and "Traceback" not in error


def test_fill_mask_needs_the_masked_lm_head_and_a_mask(hf_folders, bert_folder, capsys):
    (hf_folders["bert"] / "vocab.txt").write_text("".join(t + "\n" for t in BERT_VOCAB), encoding="utf-8")
    assert cli.main(["fill-mask", "--from", f"hf-bert:{hf_folders['bert']}", "--text", "the [MASK]"]) == 2
    assert "missing cls.predictions.transform.dense.weight (no masked-LM head" in capsys.readouterr().err
    (hf_folders["bert"] / "vocab.txt").unlink()
    assert cli.main(["fill-mask", "--from", f"hf-bert:{bert_folder}", "--text", "no mask here"]) == 2
    assert "--text: no [MASK] token" in capsys.readouterr().err
    assert cli.main(["fill-mask", "--from", str(bert_folder), "--text", "the [MASK]"]) == 2
    assert "fill-mask needs a BERT folder" in capsys.readouterr().err


def test_pooler_pooling_needs_a_bert_backbone():
    from minipt.models import SequenceClassifier

    with pytest.raises(MiniptError, match="pooling 'pooler' needs a backbone with BERT's pooler"):
        SequenceClassifier(TransformerLM(50, 16, 1, 2, 32, 8), 2, pooling="pooler")


def test_text_columns_are_one_or_two(bert_folder, tmp_path, capsys):
    status = cli.main(["finetune", "--from", f"hf-bert:{bert_folder}", "--task", str(pair_task(tmp_path)),
                       "--text-column", "first,second,label", "--out", str(tmp_path / "run")])
    assert status == 2 and "--text-column first,second,label: name one column, or two" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
