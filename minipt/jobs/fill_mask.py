"""Filling in ``[MASK]`` with a BERT folder's masked-LM head: the job behind ``minipt fill-mask``.

The text is encoded as BERT reads it (``[CLS] text [SEP]``, a ``[MASK]`` in the text kept whole), the encoder and
its converted head (:mod:`minipt.interop.bert_mlm`) score every token at each mask, and the ``top_k`` most
probable tokens are reported, most probable first; ``transformers``' fill-mask pipeline gives the same on the same
folder (``tests/test_interop.py``).
"""

from __future__ import annotations

from pathlib import Path

from minipt.errors import MiniptError
from minipt.interop.bert import load_bert_tokenizer
from minipt.interop.bert_mlm import fill_mask, load_hf_bert_mlm
from minipt.jobs.sources import HF_BERT

__all__ = ["fill_mask_text"]


def fill_mask_text(source: str, text: str, top_k: int = 5) -> list[list[tuple[str, int, float]]]:
    """For each ``[MASK]`` of ``text``, in order, the ``top_k`` ``(token, id, probability)`` of the BERT in
    ``source`` (``hf-bert:FOLDER``)."""
    if not source.startswith(HF_BERT):
        raise MiniptError(f"--from {source}: fill-mask needs a BERT folder with its masked-LM head, hf-bert:FOLDER")
    folder = Path(source.removeprefix(HF_BERT))
    tokenizer = load_bert_tokenizer(folder)
    if not 1 <= top_k <= tokenizer.vocab_size:
        raise MiniptError(f"--top-k must be between 1 and the vocabulary size {tokenizer.vocab_size}, got {top_k}")
    encoder, head = load_hf_bert_mlm(folder, tokenizer.sep_id)
    if tokenizer.vocab_size > encoder.vocab_size:
        raise MiniptError(f"{folder / 'vocab.txt'}: {tokenizer.vocab_size} tokens, but the model has only "
                          f"vocab_size={encoder.vocab_size} (shape mismatch)")
    ids = tokenizer.encode_inputs(text)  # [CLS] text [SEP]
    if len(ids) > encoder.max_len:
        raise MiniptError(f"--text: {len(ids)} tokens, more than the model's {encoder.max_len} positions")
    best = fill_mask(encoder, head, ids, tokenizer.mask_id, top_k)
    return [[(tokenizer.tokens[index], index, probability) for index, probability in mask] for mask in best]
