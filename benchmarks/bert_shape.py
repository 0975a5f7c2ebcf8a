"""What finetuning bert-base-uncased costs on a CPU: memory from the parameter count, time from a measured step.

Run ``python benchmarks/bert_shape.py`` on a quiet machine: prints a table and rewrites the ``bert_shape`` section
of ``benchmarks/RESULTS.md``. Nothing is downloaded: the model is a minipt :class:`~minipt.interop.bert.BertEncoder`
with bert-base-uncased's shape (vocabulary 30,522, 12 post-norm layers, width 768, 12 heads, feed-forward 3072, 512
positions, 2 segments, erf GELU, the pooler) and random weights; a real BERT loaded with ``minipt finetune --from
hf-bert:FOLDER`` is this very model with other numbers in it, so it costs the same.

One step is what ``minipt finetune`` does per batch without the frozen-feature cache (``--no-cache``): a
:class:`~minipt.models.SequenceClassifier` on the pooler, forward, cross-entropy, backward through the trainable
layers and a :class:`minipt.optim.AdamW` update, on the fast path, for ``--freeze`` 0 (everything trains), 8 and
11 of the 12 blocks (the embedding frozen with them). Batches are sentence pairs ``[CLS] A [SEP] B [SEP]`` (half
the tokens in each segment).

Memory, float32: ``4 N`` bytes of weights for ``N`` parameters, plus ``12 N_train`` bytes (a gradient and AdamW's
two moments per trainable parameter); activations of the trainable blocks come on top. The peak resident memory
of this process is printed beside the estimate.
"""

from __future__ import annotations

import argparse

import torch
from gpt2_shape import GIB, freezing_table, measure_freezing
from results import machine_line, write_section

from minipt.interop.bert import BertEncoder
from minipt.models import SequenceClassifier

BERT_BASE = dict(vocab_size=30522, d_model=768, n_layers=12, n_heads=12, d_ff=3072, max_len=512, dropout=0.1,
                 causal=False, pad_id=0, activation="gelu", norm_first=False, layer_norm_eps=1e-12,
                 type_vocab_size=2, sep_id=102)


def pair_batch(batch_size: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """Random ``[CLS] A [SEP] B [SEP]`` ids ``(B, length)``, the two texts of equal length."""
    half = (length - 3) // 2
    ids = torch.randint(1000, BERT_BASE["vocab_size"], (batch_size, length), generator=generator)  # (B, T)
    ids[:, 0], ids[:, 1 + half], ids[:, -1] = 101, 102, 102  # [CLS], the first [SEP], the last [SEP]
    return ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--length", type=int, default=128, help="tokens per example")
    parser.add_argument("--freeze", type=int, nargs="+", default=[0, 8, 11], help="blocks frozen (with the embedding)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--note", default="", help="appended to the machine line, e.g. that it was not quiet")
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md alone")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = SequenceClassifier(BertEncoder(**BERT_BASE, fast=True), num_classes=2, pooling="pooler")
    total = model.num_parameters()
    generator = torch.Generator().manual_seed(0)
    ids = pair_batch(args.batch_size, args.length, generator)
    labels = torch.randint(0, 2, (args.batch_size,), generator=generator)
    rows = measure_freezing(model, ids, labels, args.freeze, args.repeats, lr=2e-5)
    lines = [
        f"bert-base-uncased's shape in minipt (`BertEncoder`, fast path, random weights): {total / 1e6:.1f}M "
        f"parameters with a 2-class head on the pooler ({4 * total / GIB:.2f} GiB of float32 weights). One "
        f"finetuning step (sentence pairs, batch {args.batch_size} x {args.length} tokens, AdamW) with the embedding "
        "and the lowest k of 12 blocks frozen:",
        "",
        *freezing_table(rows, args.batch_size * args.length),
    ]
    lines += ["", f"`python benchmarks/bert_shape.py --batch-size {args.batch_size} --length {args.length}`. "
              + machine_line() + (f" {args.note}" if args.note else "")]
    markdown = "\n".join(lines)
    print(markdown)
    if not args.no_write:
        write_section("bert_shape", "## bert_shape: finetuning bert-base-uncased's shape on CPU\n\n" + markdown)


if __name__ == "__main__":
    main()
