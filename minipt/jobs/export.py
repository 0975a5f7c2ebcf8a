"""``minipt export RUN --to hf DIR``: a pretraining run as a Hugging Face folder.

The run's model decides the format (:mod:`minipt.interop.export`): a causal Transformer is written as GPT-2. A
model with no Hugging Face equivalent is refused in one line, before anything is written:

* a GRU language model (``transformers`` has no GRU LM);
* minipt's masked-LM Transformer (``--objective mlm``): it is pre-norm with a final layer norm and scores tokens
  with the tied embedding alone, while BERT is post-norm with a layer norm on the embedding and a dense + GELU +
  layer norm transform before its decoder; no ``BertConfig`` expresses minipt's arrangement (a BERT-shaped model,
  as read from ``hf-bert:``, is written from Python with :func:`minipt.interop.export.save_bert_folder`).
"""

from __future__ import annotations

from pathlib import Path

from minipt.errors import MiniptError
from minipt.interop.export import gpt2_export_problem, save_gpt2_folder
from minipt.jobs.pretrain import load_run
from minipt.models import TransformerLM
from minipt.runs.folder import new_run_dir

__all__ = ["export_run"]

MLM_PROBLEM = ("minipt's masked-LM Transformer is pre-norm and scores tokens with the tied embedding alone; BERT is "
               "post-norm with a transform before its decoder, so no BertConfig expresses it")


def export_run(run_dir: str | Path, folder: str | Path) -> str:
    """Write the pretraining run ``run_dir`` into the new (or empty) ``folder``; returns the format written."""
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise MiniptError(f"{folder}: already exists and is not an empty folder; choose a new one")
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
