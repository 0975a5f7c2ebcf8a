"""Interoperability: Hugging Face GPT-2 and BERT checkpoints in minipt's hand-written models and tokenizer.

* :mod:`~minipt.interop.gpt2` — GPT-2 <-> :class:`~minipt.models.TransformerLM` (Conv1D transposes, the fused
  ``c_attn`` as the attention's in-projection); :func:`load_hf_gpt2` reads a local folder;
* :mod:`~minipt.interop.bert` — BERT encoders <-> ``TransformerLM(norm_first=False, type_vocab_size=...)``;
  :func:`load_hf_bert`; ``BertEncoder`` (the pooler, token types from ``[SEP]``) and BERT's ``vocab.txt``;
* :mod:`~minipt.interop.bert_mlm` — BERT's masked-LM head (``cls.predictions``), filling ``[MASK]``;
* :mod:`~minipt.interop.export` — minipt models written as GPT-2 or BERT folders, tokenizers as ``tokenizer.json``;
* :mod:`~minipt.interop.gpt2_tokenizer` — GPT-2's ``vocab.json`` + ``merges.txt`` <-> minipt's byte-level BPE;
* :mod:`~minipt.interop.hf_folder` — reading ``config.json`` and the weights, with one-line errors.

Nothing here downloads anything: the user points at a folder (``config.json``, ``model.safetensors`` or
``pytorch_model.bin``, and for GPT-2 ``vocab.json`` + ``merges.txt``, for BERT ``vocab.txt``). ``safetensors``
and ``regex`` (GPT-2's pre-split) come with ``pip install 'minipt[hf]'``; ``transformers`` is needed only by the
tests.

Weights and tokenizer files only, no job logic: which folder a ``--from`` names (a run, ``hf-gpt2:FOLDER`` or
``hf-bert:FOLDER``) is decided by :func:`minipt.jobs.sources.load_pretrained`; ``minipt export`` is
:mod:`minipt.jobs.export`.
"""

from __future__ import annotations

from minipt.interop.bert import bert_config_from_minipt, bert_state_dict, load_bert_state_dict, load_hf_bert
from minipt.interop.gpt2 import gpt2_config_from_minipt, gpt2_state_dict, load_gpt2_state_dict, load_hf_gpt2
from minipt.interop.gpt2_tokenizer import load_gpt2_tokenizer, save_gpt2_tokenizer

__all__ = ["load_hf_gpt2", "load_hf_bert", "load_gpt2_tokenizer",
           "save_gpt2_tokenizer", "gpt2_state_dict", "load_gpt2_state_dict", "gpt2_config_from_minipt",
           "bert_state_dict", "load_bert_state_dict", "bert_config_from_minipt"]
