"""Where a pretrained language model comes from: a minipt pretraining run folder, or a Hugging Face folder.

On the command line a GPT-2 folder is named ``hf-gpt2:FOLDER`` and a BERT folder ``hf-bert:FOLDER`` wherever a
pretraining run folder is expected (``minipt finetune --from``, ``minipt generate --from`` for GPT-2). The BERT
folder holds ``config.json``, ``model.safetensors`` or ``pytorch_model.bin`` and ``vocab.txt`` (and optionally
``tokenizer_config.json``, whose ``do_lower_case`` says whether the vocabulary is cased). :mod:`minipt.interop`
converts the weights and the tokenizer; these job-level functions decide which loader a source names and rebuild
a saved backbone.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from minipt.data.tokenizers import Tokenizer
from minipt.errors import MiniptError
from minipt.interop import load_gpt2_tokenizer, load_hf_gpt2
from minipt.interop.bert import BertEncoder, load_bert_tokenizer, load_hf_bert_encoder
from minipt.jobs.pretrain import load_run
from minipt.models import LanguageModel, build_model

HF_GPT2 = "hf-gpt2:"  # the prefix that names a Hugging Face GPT-2 folder on the command line
HF_BERT = "hf-bert:"  # and a BERT folder


def load_pretrained(
    source: str, device: str | torch.device = "cpu", fast: bool = False
) -> tuple[nn.Module, Tokenizer, dict]:
    """The language model, tokenizer and config dict of ``source``: a pretraining run folder
    (:func:`minipt.jobs.pretrain.load_run`), ``hf-gpt2:FOLDER`` (a Hugging Face GPT-2 folder) or ``hf-bert:FOLDER``
    (a BERT folder: a :class:`~minipt.interop.bert.BertEncoder` with its pooler, and the WordPiece tokenizer).

    For a Hugging Face folder the config dict has the shape of a run's ``config.json``: ``model`` (the architecture
    and constructor arguments, so :func:`build_backbone` rebuilds it) and ``pretrain`` (``objective`` clm or mlm,
    ``block_size`` the number of positions, and the ``source``).
    """
    if source.startswith(HF_GPT2):
        folder = Path(source.removeprefix(HF_GPT2))
        model, tokenizer, objective = load_hf_gpt2(folder, fast=fast), load_gpt2_tokenizer(folder), "clm"
        vocab_file = folder / "vocab.json"
    elif source.startswith(HF_BERT):
        folder = Path(source.removeprefix(HF_BERT))
        tokenizer = load_bert_tokenizer(folder)
        model, objective = load_hf_bert_encoder(folder, tokenizer.sep_id, fast=fast), "mlm"
        vocab_file = folder / "vocab.txt"
    else:
        return load_run(source, device, fast=fast)
    if tokenizer.vocab_size > model.vocab_size:
        raise MiniptError(f"{vocab_file}: {tokenizer.vocab_size} tokens, but the model has only "
                          f"vocab_size={model.vocab_size} (shape mismatch)")
    saved = {"model": {"architecture": model.architecture, **model.config},
             "pretrain": {"objective": objective, "block_size": model.max_len, "source": source}}
    return model.to(device), tokenizer, saved


def build_backbone(architecture: str, **settings) -> LanguageModel:
    """A fresh backbone from a saved ``model`` config: minipt's models (:func:`minipt.models.build_model`) or
    ``"bert"`` (:class:`~minipt.interop.bert.BertEncoder`, a BERT folder's)."""
    if architecture == BertEncoder.architecture:
        return BertEncoder(**settings)
    return build_model(architecture, **settings)
