"""Time per finetuning step with half of the layers frozen vs none, and a finetuning epoch with the frozen layers
computed once (:mod:`minipt.training.frozen_cache`) vs at every step, side by side in one run.

Run ``python benchmarks/freeze_speed.py``: prints two tables and rewrites the ``freeze_speed`` section of
``benchmarks/RESULTS.md``. The models run on the fast path, as the CLI's training jobs do. One step is what
:func:`minipt.training.loop.train` does per batch: forward, cross-entropy, backward, AdamW update. A frozen layer still
runs forward, but no gradient flows into its weights, and below the lowest trainable layer the backward pass
stops altogether; so freezing the lower half should save roughly the backward cost of that half. The cache also
saves the frozen layers' forward pass at every epoch. The settings are alternated round by round so that load
from other processes hits both alike; each figure is the median over all rounds.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from results import machine_line, write_section

from minipt.data.datasets import collate_classification
from minipt.jobs.finetune import predict
from minipt.models import GRULM, SequenceClassifier, TransformerLM
from minipt.models.modes import train_mode
from minipt.optim import AdamW, param_groups
from minipt.training import frozen_cache, strategies


def make_model(kind: str) -> SequenceClassifier:
    """The demo's Transformer size (d_model 128, 4 layers, 128 positions) or a GRU of 4 layers."""
    torch.manual_seed(0)
    if kind == "transformer":
        backbone = TransformerLM(vocab_size=70, d_model=128, n_layers=4, n_heads=4, d_ff=512, max_len=128, fast=True)
    else:
        backbone = GRULM(vocab_size=70, d_embed=128, hidden_size=256, n_layers=4, fast=True)
    return SequenceClassifier(backbone, num_classes=2)


def training_step(model: SequenceClassifier, frozen: int | str, batch_size: int, length: int) -> Callable[[], None]:
    """A closure doing one optimizer step of ``model`` with ``frozen`` lower layers on a fixed random batch."""
    strategies.freeze(model, frozen)
    optimizer = AdamW(param_groups(model, 0.01), lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(5, 70, (batch_size, length), generator=generator)  # (B, T)
    labels = torch.randint(0, 2, (batch_size,), generator=generator)  # (B,)
    train_mode(model)  # as the training loop does: frozen parts in eval mode

    def step() -> None:
        _, loss = model(input_ids, labels=labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def epoch_functions(kind: str, frozen: int, train_size: int, val_size: int, batch_size: int, length: int) -> dict:
    """One finetuning epoch (``train_size`` examples in batches, then scoring ``val_size`` validation examples)
    uncached and cached, on examples of random lengths in ``[length / 4, length]``; and building the cache."""
    generator = torch.Generator().manual_seed(0)
    def examples(n: int) -> list[tuple[list[int], int]]:
        lengths = torch.randint(length // 4, length + 1, (n,), generator=generator).tolist()
        return [(torch.randint(5, 70, (t,), generator=generator).tolist(), i % 2) for i, t in enumerate(lengths)]

    train_items, val_items = examples(train_size), examples(val_size)
    batches = [list(range(start, min(start + batch_size, train_size))) for start in range(0, train_size, batch_size)]
    val_batches = [collate_classification(val_items[s : s + 64], 0) for s in range(0, val_size, 64)]
    functions = {}
    for path in ("uncached", "cached"):
        model = make_model(kind)
        strategies.freeze(model, frozen)
        optimizer = AdamW(param_groups(model, 0.01), lr=1e-4)
        cache: dict = {}

        def build_cache(model=model, cache=cache) -> None:
            cache["train"] = frozen_cache.cache_lower_layers(model, train_items, frozen, pad_id=0)
            cache["val"] = frozen_cache.cache_batches(model, val_batches, frozen)

        def epoch(model=model, optimizer=optimizer, cache=cache, path=path) -> None:
            train_mode(model)
            for chosen in batches:
                if path == "cached":
                    batch = frozen_cache.collate_hidden([cache["train"][i] for i in chosen])
                    _, loss = model(batch["hidden"], batch["attention_mask"], batch["labels"], from_layer=frozen)
                else:
                    _, loss = model(**collate_classification([train_items[i] for i in chosen], 0))
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            model.eval()
            if path == "cached":
                predict(model, cache["val"], from_layer=frozen)
            else:
                predict(model, val_batches)

        if path == "cached":
            build_cache()
            functions["cache"] = build_cache
        functions[path] = epoch
    return functions


def epoch_rows(args: argparse.Namespace) -> list[str]:
    """Median epoch times, cached and uncached, alternating, for each model."""
    rows = []
    for kind in args.models.split(","):
        functions = epoch_functions(kind, 3, args.train_examples, args.val_examples, args.batch_size, args.length)
        times: dict[str, list[float]] = {name: [] for name in functions}
        for name in ("uncached", "cached"):
            functions[name]()  # warm-up
        for _ in range(args.rounds):
            for name, function in functions.items():
                start = time.perf_counter()
                function()
                times[name].append(time.perf_counter() - start)
        uncached, cached, cache = (statistics.median(times[name]) for name in ("uncached", "cached", "cache"))
        ten_epochs = 10 * uncached / (cache + 10 * cached)
        rows.append(f"| {kind} | {1000 * uncached:.0f} | {1000 * cached:.0f} | {uncached / cached:.2f}x | "
                    f"{1000 * cache:.0f} | {ten_epochs:.2f}x |")
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds per setting (default: 7)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--models", default="transformer,gru")
    parser.add_argument("--train-examples", type=int, default=200, help="per epoch (default: 200, the demo's)")
    parser.add_argument("--val-examples", type=int, default=400, help="scored per epoch (default: 400, the demo's)")
    parser.add_argument("--quiet-machine", choices=["yes", "no"], default="yes")
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
        "Quiet: " + ("nothing else ran on the machine." if args.quiet_machine == "yes" else "other jobs ran too."),
        "",
        "| model | frozen | ms / step | speed-up vs none |",
        "| --- | --- | ---: | ---: |",
        *rows,
        "",
        f"A finetuning epoch with the embedding and lower 3 of 4 layers frozen: {args.train_examples} training "
        f"examples (batches of {args.batch_size}, random lengths {args.length // 4}-{args.length} tokens), then "
        f"{args.val_examples} validation examples scored; the frozen layers run at every step (uncached) or once per "
        "example before the first epoch (cached, `minipt.training.frozen_cache`). Median of the same rounds. "
        "Target: the cached epoch >= 3x faster.",
        "",
        "| model | uncached epoch (ms) | cached epoch (ms) | speed-up | building the cache (ms, once) | "
        "speed-up over 10 epochs, cache included |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        *epoch_rows(args),
    ])
    write_section("freeze_speed", markdown)
    print(markdown)


if __name__ == "__main__":
    main()
