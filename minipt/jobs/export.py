"""``minipt export RUN --to hf DIR``: a pretraining run as a Hugging Face folder.

The run's model decides the format (:mod:`minipt.interop.export`): a causal Transformer is written as GPT-2. A
model with no Hugging Face equivalent is refused in one line, before anything is written:

* a GRU language model (``transformers`` has no GRU LM);
* minipt's masked-LM Transformer (``--objective mlm``): it is pre-norm with a final layer norm and scores tokens
  with the tied embedding alone, while BERT is post-norm with a layer norm on the embedding and a dense + GELU +
  layer norm transform before its decoder; no ``BertConfig`` expresses minipt's arrangement.

A BERT-shaped model is written as BERT (:func:`minipt.interop.export.save_bert_folder`): ``RUN`` may name a BERT
folder, ``hf-bert:FOLDER``, which is read into minipt (encoder, pooler, masked-LM head, WordPiece) and written
back, the round trip through minipt's own tensors and tokenizer.
"""

from __future__ import annotations

from pathlib import Path

from minipt.errors import MiniptError
from minipt.interop.bert import load_bert_tokenizer
from minipt.interop.bert_mlm import load_hf_bert_mlm
from minipt.interop.export import gpt2_export_problem, save_bert_folder, save_gpt2_folder
from minipt.jobs.pretrain import load_run
from minipt.jobs.sources import HF_BERT
from minipt.models import TransformerLM
from minipt.runs.folder import new_run_dir

__all__ = ["export_run"]

MLM_PROBLEM = ("minipt's masked-LM Transformer is pre-norm and scores tokens with the tied embedding alone; BERT is "
               "post-norm with a transform before its decoder, so no BertConfig expresses it")


def export_run(run_dir: str | Path, folder: str | Path) -> str:
    """Write the pretraining run ``run_dir`` (or a ``hf-bert:FOLDER``) into the new (or empty) ``folder``; returns
    the format written."""
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise MiniptError(f"{folder}: already exists and is not an empty folder; choose a new one")
    if str(run_dir).startswith(HF_BERT):
        source = Path(str(run_dir).removeprefix(HF_BERT))
        tokenizer = load_bert_tokenizer(source)
        encoder, head = load_hf_bert_mlm(source, tokenizer.sep_id)
        with new_run_dir(folder):
            save_bert_folder(encoder, head, tokenizer, folder)
        return "BERT"
    model, tokenizer, _ = load_run(run_dir)
    if not isinstance(model, TransformerLM):
        raise MiniptError(f"{run_dir}: a {type(model).__name__} has no Hugging Face equivalent (transformers has "
                          "no GRU language model); only a Transformer run can be exported")
    if not model.config["causal"]:
        raise MiniptError(f"{run_dir}: {MLM_PROBLEM}")
    problem = gpt2_export_problem(model)
    if problem is not None:
        raise MiniptError(f"{run_dir}: cannot export as GPT-2: {problem}")
    with new_run_dir(folder):
        save_gpt2_folder(model, tokenizer, folder)
    return "GPT-2"
