"""Time per finetuning step with half of the layers frozen vs none, side by side in one run.

Run ``python benchmarks/freeze_speed.py``: prints a table and rewrites the ``freeze_speed`` section of
``benchmarks/RESULTS.md``. One step is what :func:`minipt.train.train` does per batch: forward, cross-entropy,
backward, AdamW update. A frozen layer still runs forward, but no gradient flows into its weights, and
below the lowest trainable layer the backward pass stops altogether; so freezing the lower half should save
roughly the backward cost of that half. The settings are alternated round by round so that load from other
processes hits both alike; each figure is the median over all rounds.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from results import machine_line, write_section

from minipt import strategies
from minipt.models import GRULM, SequenceClassifier, TransformerLM
from minipt.optim import AdamW, param_groups


def make_model(kind: str) -> SequenceClassifier:
    """The demo's Transformer size (d_model 128, 4 layers, 128 positions) or a GRU of 4 layers."""
    torch.manual_seed(0)
    if kind == "transformer":
        backbone = TransformerLM(vocab_size=70, d_model=128, n_layers=4, n_heads=4, d_ff=512, max_len=128)
    else:
        backbone = GRULM(vocab_size=70, d_embed=128, hidden_size=256, n_layers=4)
    return SequenceClassifier(backbone, num_classes=2)


def training_step(model: SequenceClassifier, frozen: int | str, batch_size: int, length: int) -> Callable[[], None]:
    """A closure doing one optimizer step of ``model`` with ``frozen`` lower layers on a fixed random batch."""
    strategies.freeze(model, frozen)
    optimizer = AdamW(param_groups(model, 0.01), lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(5, 70, (batch_size, length), generator=generator)  # (B, T)
    labels = torch.randint(0, 2, (batch_size,), generator=generator)  # (B,)
    model.train()
    for module in [model.embedding, *model.layers]:  # as the training loop does: frozen parts in eval mode
        if not any(p.requires_grad for p in module.parameters()):
            module.eval()

    def step() -> None:
        _, loss = model(input_ids, labels=labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds per setting (default: 7)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--models", default="transformer,gru")
    args = parser.parse_args()

    rows = []
    for kind in args.models.split(","):
        settings = {"none (full finetuning)": 0, "lower half (embedding + 2 of 4 layers)": 2,
                    "all (linear probe)": "all"}
        steps = {name: training_step(make_model(kind), frozen, args.batch_size, args.length)
                 for name, frozen in settings.items()}
        times: dict[str, list[float]] = {name: [] for name in steps}
        for step in steps.values():  # warm-up
            step()
        for _ in range(args.rounds):
            for name, step in steps.items():
                start = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - start)
        reference = statistics.median(times["none (full finetuning)"])
        for name, measured in times.items():
            median = statistics.median(measured)
            rows.append(f"| {kind} | {name} | {1000 * median:.0f} | {reference / median:.2f}x |")
            print(rows[-1], flush=True)

    markdown = "\n".join([
        "Time per finetuning step (forward + backward + AdamW) of a classifier, batch "
        f"{args.batch_size} x {args.length} tokens, median of {args.rounds} rounds, settings alternated.",
        machine_line(),
        "",
        "| model | frozen | ms / step | speed-up vs none |",
        "| --- | --- | ---: | ---: |",
        *rows,
    ])
    write_section("freeze_speed", markdown)
    print(markdown)


if __name__ == "__main__":
    main()
