"""Interoperability: Hugging Face GPT-2 and BERT checkpoints in minipt's hand-written models and tokenizer.

* :mod:`~minipt.interop.gpt2` — GPT-2 <-> :class:`~minipt.models.TransformerLM` (Conv1D transposes, the fused
  ``c_attn`` as the attention's in-projection); :func:`load_hf_gpt2` reads a local folder;
* :mod:`~minipt.interop.bert` — BERT encoders <-> ``TransformerLM(norm_first=False, type_vocab_size=...)``;
  :func:`load_hf_bert`;
* :mod:`~minipt.interop.gpt2_tokenizer` — GPT-2's ``vocab.json`` + ``merges.txt`` <-> minipt's byte-level BPE;
* :mod:`~minipt.interop.hf_folder` — reading ``config.json`` and the weights, with one-line errors.

Nothing here downloads anything: the user points at a folder (``config.json``, ``model.safetensors`` or
``pytorch_model.bin``, and for GPT-2 ``vocab.json`` + ``merges.txt``). ``safetensors`` and ``regex`` (GPT-2's
pre-split) come with ``pip install 'minipt[hf]'``; ``transformers`` is needed only by the tests.

On the command line a GPT-2 folder is named ``hf-gpt2:FOLDER`` wherever a pretraining run folder is expected
(``minipt finetune --from``, ``minipt generate --from``): :func:`load_pretrained`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from minipt.errors import MiniptError
from minipt.interop.bert import bert_config_from_minipt, bert_state_dict, load_bert_state_dict, load_hf_bert
from minipt.interop.gpt2 import gpt2_config_from_minipt, gpt2_state_dict, load_gpt2_state_dict, load_hf_gpt2
from minipt.interop.gpt2_tokenizer import load_gpt2_tokenizer, save_gpt2_tokenizer
from minipt.tokenizers import Tokenizer

__all__ = ["HF_GPT2", "load_pretrained", "load_hf_gpt2", "load_hf_bert", "load_gpt2_tokenizer",
           "save_gpt2_tokenizer", "gpt2_state_dict", "load_gpt2_state_dict", "gpt2_config_from_minipt",
           "bert_state_dict", "load_bert_state_dict", "bert_config_from_minipt"]

HF_GPT2 = "hf-gpt2:"  # the prefix that names a Hugging Face GPT-2 folder on the command line


def load_pretrained(
    source: str, device: str | torch.device = "cpu", fast: bool = False
) -> tuple[nn.Module, Tokenizer, dict]:
    """The language model, tokenizer and config dict of ``source``: a pretraining run folder
    (:func:`minipt.pretrain.load_run`), or ``hf-gpt2:FOLDER``, a Hugging Face GPT-2 folder.

    For a GPT-2 folder the config dict has the shape of a run's ``config.json``: ``model`` (the architecture and
    constructor arguments, so :func:`minipt.models.build_model` rebuilds it) and ``pretrain`` (``objective`` clm,
    ``block_size`` the number of positions, and the ``source``).
    """
    if not source.startswith(HF_GPT2):
        from minipt.pretrain import load_run

        return load_run(source, device, fast=fast)
    folder = Path(source.removeprefix(HF_GPT2))
    model = load_hf_gpt2(folder, fast=fast)
    tokenizer = load_gpt2_tokenizer(folder)
    if tokenizer.vocab_size > model.vocab_size:
        raise MiniptError(f"{folder / 'vocab.json'}: {tokenizer.vocab_size} tokens, but the model has only "
                          f"vocab_size={model.vocab_size} (shape mismatch)")
    settings = {key: value for key, value in model.config.items() if key != "fast"}
    saved = {"model": {"architecture": model.architecture, **settings},
             "pretrain": {"objective": "clm", "block_size": model.max_len, "source": source}}
    return model.to(device), tokenizer, saved
