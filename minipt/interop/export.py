r"""minipt models out to Hugging Face: a folder that ``transformers``' Auto classes and ``tokenizers`` load.

Two formats, the inverses of :mod:`minipt.interop.gpt2` and :mod:`minipt.interop.bert`:

* a causal, pre-norm :class:`~minipt.models.TransformerLM` is GPT-2: ``config.json`` (``model_type`` gpt2),
  ``model.safetensors`` (``GPT2LMHeadModel``'s keys, Conv1D weights transposed back; the LM head is tied, so it is
  not stored twice) and ``tokenizer.json``;
* a BERT-shaped :class:`~minipt.interop.bert.BertEncoder` with its :class:`~minipt.interop.bert_mlm.MaskedLMHead`
  is BERT: ``config.json`` (``BertForMaskedLM``), the weights under ``bert.`` / ``cls.predictions.``,
  ``vocab.txt`` and ``tokenizer.json``.

The ids stay minipt's: a minipt token ``i`` is Hugging Face's token ``i``, so the logits line up one for one.
``tokenizer.json`` describes the same tokenizer to the ``tokenizers`` library, stage by stage:

* minipt's characters: a ``Split`` that isolates every character, then the ``WordLevel`` model (one id per
  character, ``<unk>`` for the others) and the ``Fuse`` decoder (the characters joined back as they were);
* minipt's byte-level BPE: a ``Split`` on :data:`~minipt.data.tokenizers.PRE_SPLIT` (rewritten with Unicode
  classes, :data:`PRE_SPLIT_UNICODE`), then ``ByteLevel`` (each byte as GPT-2's printable character, no regex of
  its own), then the ``BPE`` model with minipt's merges in order and the five special tokens as added tokens;
* BERT's WordPiece: ``BertNormalizer`` (clean, CJK spaces, lower-case and strip accents when uncased),
  ``BertPreTokenizer`` (whitespace and punctuation), the ``WordPiece`` model over the vocabulary (``##``, 100
  characters at most) and the ``[CLS] A [SEP] B [SEP]`` template.

Only ``safetensors`` is needed to write the folder (``pip install 'minipt[hf]'``).
"""

from __future__ import annotations

import json
from pathlib import Path

from torch import Tensor

from minipt.data.tokenizers import FIRST_BYTE_ID, SPECIAL_TOKENS, BPETokenizer, CharTokenizer, GPT2BPETokenizer
from minipt.data.wordpiece import MAX_WORD_CHARS, WordPieceTokenizer
from minipt.errors import MiniptError
from minipt.interop.bert import BertEncoder, bert_config_from_minipt, bert_state_dict
from minipt.interop.bert_mlm import MaskedLMHead, mlm_head_state_dict
from minipt.interop.gpt2 import gpt2_config_from_minipt, gpt2_state_dict
from minipt.interop.gpt2_tokenizer import byte_characters
from minipt.models import TransformerLM
from minipt.runs.folder import write_atomic, write_json

__all__ = ["PRE_SPLIT_UNICODE", "char_tokenizer_json", "bpe_tokenizer_json", "wordpiece_tokenizer_json",
           "save_gpt2_folder", "save_bert_folder", "gpt2_export_problem"]

# minipt's PRE_SPLIT with Python's classes spelt out for the `tokenizers` library's regex engine (Oniguruma):
# Python's \d is \p{Nd}, its \w is [\p{L}\p{N}_], so a letter run [^\W\d_] is [\p{L}\p{Nl}\p{No}]
PRE_SPLIT_UNICODE = (r"'(?:s|t|re|ve|m|ll|d)| ?[\p{L}\p{Nl}\p{No}]+| ?\p{Nd}+| ?(?:[^\s\p{L}\p{N}_]|_)+"
                     r"|\s+(?!\S)|\s+")


def _special(tokens: list[tuple[int, str]]) -> list[dict]:
    """``tokenizers``' added-token records: matched whole, before the model, never split or normalised."""
    return [{"id": index, "content": token, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True} for index, token in tokens]


def char_tokenizer_json(tokenizer: CharTokenizer) -> dict:
    """minipt's character tokenizer as a ``tokenizers`` ``tokenizer.json`` (ids unchanged)."""
    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS)} | tokenizer.id_of
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": _special(list(enumerate(SPECIAL_TOKENS))),
        "normalizer": None,
        "pre_tokenizer": {"type": "Split", "pattern": {"Regex": r"[\s\S]"}, "behavior": "Isolated", "invert": False},
        "post_processor": None,
        "decoder": {"type": "Fuse"},
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"},
    }


def bpe_tokenizer_json(tokenizer: BPETokenizer) -> dict:
    """minipt's byte-level BPE as a ``tokenizers`` ``tokenizer.json`` (ids unchanged). A merge that makes the
    same bytes as an earlier token keeps the earlier id there (``tokenizers`` names a token by its text)."""
    if isinstance(tokenizer, GPT2BPETokenizer):
        raise MiniptError("bpe_tokenizer_json: a GPT-2 tokenizer is already GPT-2's (vocab.json + merges.txt)")
    characters = byte_characters()

    def text(index: int) -> str:  # a token's bytes, each as GPT-2's printable character
        return "".join(characters[byte] for byte in tokenizer.token_bytes[index])

    vocab = {text(index): index for index in range(len(tokenizer.token_bytes) - 1, FIRST_BYTE_ID - 1, -1)}
    vocab.update({token: index for index, token in enumerate(SPECIAL_TOKENS)})  # added tokens must be in it too
    merges = [[text(a), text(b)] for a, b in tokenizer.merges]
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": _special(list(enumerate(SPECIAL_TOKENS))),
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": PRE_SPLIT_UNICODE}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": dict(sorted(vocab.items(), key=lambda item: item[1])), "merges": merges},
    }


def wordpiece_tokenizer_json(tokenizer: WordPieceTokenizer) -> dict:
    """BERT's WordPiece as a ``tokenizers`` ``tokenizer.json`` (the same stages as :mod:`minipt.data.wordpiece`)."""
    special = [(tokenizer.vocab[token], token) for token in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")]
    cls, sep = ["[CLS]", tokenizer.cls_id], ["[SEP]", tokenizer.sep_id]
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": _special(sorted(special)),
        "normalizer": {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True,
                       "strip_accents": tokenizer.accents, "lowercase": tokenizer.lowercase},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "[SEP]", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}},
                     {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
            "special_tokens": {name: {"id": name, "ids": [index], "tokens": [name]} for name, index in (cls, sep)}},
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": True},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": MAX_WORD_CHARS, "vocab": dict(tokenizer.vocab)},
    }


def _save_safetensors(state: dict[str, Tensor], path: Path) -> None:
    try:
        from safetensors.torch import save_file
    except ImportError:
        raise MiniptError(f"{path}: writing it needs the `safetensors` package: pip install 'minipt[hf]'") from None
    save_file({key: value.detach().cpu().contiguous().clone() for key, value in state.items()}, str(path),
              metadata={"format": "pt"})


def gpt2_export_problem(model: TransformerLM) -> str | None:
    """Why ``model`` cannot be written as GPT-2 (one line), or None when it can."""
    c = model.config
    if not c["causal"]:
        return "a bidirectional Transformer is not GPT-2 (a causal decoder)"
    if not c["norm_first"] or c["type_vocab_size"] or not c["tie_weights"]:
        return "GPT-2 is pre-norm, without segments, with the LM head tied to the embedding"
    if c["activation"] not in ("gelu", "gelu_tanh", "relu"):
        return f"GPT-2's config has no activation {c['activation']!r}"
    return None


def save_gpt2_folder(model: TransformerLM, tokenizer: BPETokenizer | CharTokenizer, folder: str | Path) -> None:
    """Write ``model`` and its character or byte-level BPE ``tokenizer`` as a Hugging Face GPT-2 folder."""
    folder = Path(folder)
    problem = gpt2_export_problem(model)
    if problem is not None:
        raise MiniptError(f"cannot export as GPT-2: {problem}")
    if isinstance(tokenizer, CharTokenizer):
        tokenizer_json = char_tokenizer_json(tokenizer)
    elif isinstance(tokenizer, BPETokenizer) and not isinstance(tokenizer, GPT2BPETokenizer):
        tokenizer_json = bpe_tokenizer_json(tokenizer)
    else:
        raise MiniptError(f"cannot export a {type(tokenizer).__name__}: minipt's character and byte-level BPE "
                          "tokenizers have a tokenizer.json form")
    folder.mkdir(parents=True, exist_ok=True)
    config = gpt2_config_from_minipt(model)
    config.update({"bos_token_id": None, "eos_token_id": None})  # minipt's tokenizers have no end-of-text token
    write_json(folder / "config.json", config)
    state = gpt2_state_dict(model)
    del state["lm_head.weight"]  # tied to transformer.wte.weight: GPT2LMHeadModel ties it again on loading
    _save_safetensors(state, folder / "model.safetensors")
    write_atomic(folder / "tokenizer.json", json.dumps(tokenizer_json, ensure_ascii=False))
    write_json(folder / "tokenizer_config.json", {"tokenizer_class": "PreTrainedTokenizerFast",
                                                  "pad_token": "<pad>", "unk_token": "<unk>", "mask_token": "<mask>",
                                                  "cls_token": "<cls>", "sep_token": "<sep>",
                                                  "model_max_length": model.max_len})


def save_bert_folder(encoder: BertEncoder, head: MaskedLMHead, tokenizer: WordPieceTokenizer,
                     folder: str | Path) -> None:
    """Write a BERT encoder, its masked-LM head and its WordPiece tokenizer as a Hugging Face BERT folder
    (``BertForMaskedLM``; ``AutoModel`` reads the encoder and pooler from it)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = {**bert_config_from_minipt(encoder), "architectures": ["BertForMaskedLM"]}
    write_json(folder / "config.json", config)
    state = {"bert." + key: value for key, value in bert_state_dict(encoder).items()}
    state.update({"bert.pooler.dense." + key: value for key, value in encoder.pooler.dense.state_dict().items()})
    state.update(mlm_head_state_dict(head))
    del state["cls.predictions.decoder.bias"]  # the same tensor as cls.predictions.bias
    _save_safetensors(state, folder / "model.safetensors")
    tokenizer.save_vocab_txt(folder)
    write_atomic(folder / "tokenizer.json", json.dumps(wordpiece_tokenizer_json(tokenizer), ensure_ascii=False))
    write_json(folder / "tokenizer_config.json", {"tokenizer_class": "BertTokenizer",
                                                  "do_lower_case": tokenizer.lowercase,
                                                  "strip_accents": tokenizer.accents,
                                                  "model_max_length": encoder.max_len})
