"""Where a pretrained language model comes from: a minipt pretraining run folder, or a Hugging Face folder.

On the command line a GPT-2 folder is named ``hf-gpt2:FOLDER`` wherever a pretraining run folder is expected
(``minipt finetune --from``, ``minipt generate --from``). :mod:`minipt.interop` converts the weights and the
tokenizer; this job-level function decides which loader a source names.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from minipt.data.tokenizers import Tokenizer
from minipt.errors import MiniptError
from minipt.interop import load_gpt2_tokenizer, load_hf_gpt2
from minipt.jobs.pretrain import load_run

HF_GPT2 = "hf-gpt2:"  # the prefix that names a Hugging Face GPT-2 folder on the command line


def load_pretrained(
    source: str, device: str | torch.device = "cpu", fast: bool = False
) -> tuple[nn.Module, Tokenizer, dict]:
    """The language model, tokenizer and config dict of ``source``: a pretraining run folder
    (:func:`minipt.jobs.pretrain.load_run`), or ``hf-gpt2:FOLDER``, a Hugging Face GPT-2 folder.

    For a GPT-2 folder the config dict has the shape of a run's ``config.json``: ``model`` (the architecture and
    constructor arguments, so :func:`minipt.models.build_model` rebuilds it) and ``pretrain`` (``objective`` clm,
    ``block_size`` the number of positions, and the ``source``).
    """
    if not source.startswith(HF_GPT2):
        return load_run(source, device, fast=fast)
    folder = Path(source.removeprefix(HF_GPT2))
    model = load_hf_gpt2(folder, fast=fast)
    tokenizer = load_gpt2_tokenizer(folder)
    if tokenizer.vocab_size > model.vocab_size:
        raise MiniptError(f"{folder / 'vocab.json'}: {tokenizer.vocab_size} tokens, but the model has only "
                          f"vocab_size={model.vocab_size} (shape mismatch)")
    saved = {"model": {"architecture": model.architecture, **model.config},
             "pretrain": {"objective": "clm", "block_size": model.max_len, "source": source}}
    return model.to(device), tokenizer, saved
