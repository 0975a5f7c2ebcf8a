"""What finetuning GPT-2 small costs on a CPU: memory from the parameter count, time from a measured step.

Run ``python benchmarks/gpt2_shape.py`` on a quiet machine: prints a table and rewrites the ``gpt2_shape`` section
of ``benchmarks/RESULTS.md``. Nothing is downloaded: the model is a minipt :class:`~minipt.models.TransformerLM`
with GPT-2 small's shape (vocabulary 50,257, 12 layers, width 768, 12 heads, feed-forward 3072, 1024 positions,
tanh GELU) and random weights; a real GPT-2 loaded with ``minipt finetune --from hf-gpt2:FOLDER`` is this very
model with other numbers in it, so it costs the same.

One step is what ``minipt finetune`` does per batch without the frozen-feature cache (``--no-cache``): a
:class:`~minipt.models.SequenceClassifier` on the model, forward, cross-entropy, backward through the trainable
layers and a :class:`minipt.optim.AdamW` update, on the fast path, for ``--freeze`` 0 (everything trains),
6 and 11 of the 12 blocks (the embedding frozen with them).

Memory, float32 (4 bytes a number): the weights are ``4 N`` bytes for ``N`` parameters; each trainable parameter
adds its gradient and AdamW's two moments, ``12 N_train`` bytes; activations kept for the backward pass come on
top and grow with batch x length. The peak resident memory of this process is printed beside the estimate.
"""

from __future__ import annotations

import argparse
import resource
import time
from functools import partial

import torch
from results import machine_line, median_seconds, write_section

from minipt.models import SequenceClassifier, TransformerLM
from minipt.optim import AdamW, param_groups
from minipt.training.strategies import freeze

GPT2_SMALL = dict(vocab_size=50257, d_model=768, n_layers=12, n_heads=12, d_ff=3072, max_len=1024, dropout=0.1,
                  pad_id=50256, activation="gelu_tanh")
GIB = 2**30


def training_step(model: SequenceClassifier, optimizer: AdamW, ids: torch.Tensor, labels: torch.Tensor) -> None:
    """Forward, loss, backward and one AdamW update."""
    optimizer.zero_grad(set_to_none=True)
    _, loss = model(ids, torch.ones_like(ids), labels)
    loss.backward()
    optimizer.step()


def peak_rss_gib() -> float:
    """The largest resident memory this process has had so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB


def measure_freezing(model: SequenceClassifier, ids: torch.Tensor, labels: torch.Tensor, freezes: list[int],
                     repeats: int, lr: float) -> list[tuple]:
    """For each k of ``freezes``: the embedding and the lowest k blocks frozen, the median seconds of a training
    step (AdamW at ``lr``), the trainable parameters, the estimate of weights + gradients + AdamW moments in GiB
    (4 bytes per weight, 12 per trainable one) and the peak RSS so far."""
    total, rows = model.num_parameters(), []
    for k in freezes:
        freeze(model, k)
        model.train()
        trainable = model.num_parameters(trainable_only=True)
        optimizer = AdamW(param_groups(model, weight_decay=0.01), lr=lr)
        start = time.perf_counter()
        seconds = median_seconds(partial(training_step, model, optimizer, ids, labels), repeats=repeats, warmup=1)
        estimate = (4 * total + 12 * trainable) / GIB
        rows.append((k, trainable, estimate, seconds, peak_rss_gib()))
        print(f"freeze {k:2d}: {trainable / 1e6:6.1f}M trainable, weights + grads + AdamW {estimate:.2f} GiB, "
              f"step {seconds:.2f} s (measured over {time.perf_counter() - start:.0f} s), peak RSS so far "
              f"{peak_rss_gib():.2f} GiB", flush=True)
        del optimizer
    return rows


def freezing_table(rows: list[tuple], tokens: int) -> list[str]:
    """The markdown table of :func:`measure_freezing`'s rows (``tokens`` per step, for tokens / s)."""
    lines = ["| frozen blocks | trainable | weights + gradients + AdamW moments | median step | tokens / s "
             "| peak RSS |", "| --- | --- | --- | --- | --- | --- |"]
    for k, trainable, estimate, seconds, rss in rows:
        lines.append(f"| {k} | {trainable / 1e6:.1f}M | {estimate:.2f} GiB | {seconds:.2f} s | {tokens / seconds:.0f} "
                     f"| {rss:.2f} GiB |")
    return [*lines, "", "Peak RSS is the process's maximum so far, so a row includes the rows above it."]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--length", type=int, default=128, help="tokens per example")
    parser.add_argument("--freeze", type=int, nargs="+", default=[0, 6, 11], help="blocks frozen (with the embedding)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md alone")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = SequenceClassifier(TransformerLM(**GPT2_SMALL, fast=True), num_classes=2)
    total = model.num_parameters()
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, GPT2_SMALL["vocab_size"], (args.batch_size, args.length), generator=generator)
    labels = torch.randint(0, 2, (args.batch_size,), generator=generator)
    rows = measure_freezing(model, ids, labels, args.freeze, args.repeats, lr=1e-5)
    lines = [
        f"GPT-2 small's shape in minipt (`TransformerLM`, fast path, random weights): {total / 1e6:.1f}M parameters "
        f"({4 * total / GIB:.2f} GiB of float32 weights). One finetuning step (classifier, batch {args.batch_size} x "
        f"{args.length} tokens, AdamW) with the embedding and the lowest k of 12 blocks frozen:",
        "",
        *freezing_table(rows, args.batch_size * args.length),
    ]
    lines += ["", f"`python benchmarks/gpt2_shape.py --batch-size {args.batch_size} --length {args.length}`. "
              + machine_line()]
    markdown = "\n".join(lines)
    print(markdown)
    if not args.no_write:
        write_section("gpt2_shape", "## gpt2_shape: finetuning GPT-2 small's shape on CPU\n\n" + markdown)


if __name__ == "__main__":
    main()
