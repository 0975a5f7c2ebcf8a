"""Which pretraining recipe buys the most per CPU-second? Every configuration gets the same wall-clock budget.

Run ``python benchmarks/pretrain_recipe.py`` on a quiet machine (about ``--minutes`` + 1 minutes per
configuration): prints a table, writes ``benchmarks/pretrain_recipe.json``, ``benchmarks/pretrain_recipe.png``
(validation loss against seconds, one line per configuration) and the ``pretrain_recipe`` section of
``benchmarks/RESULTS.md``. Another budget, e.g. ``--minutes 2`` (the demo's Transformer pretrains for about two
minutes), writes ``pretrain_recipe_2min.*`` and its own section.

For each configuration: the validation loss it reaches (nats per token of its own tokenizer, so only
configurations with the same tokenizer compare directly), and the frozen-feature probe: the pretrained model,
every layer frozen (``--freeze all``, a linear probe on the mean of the final hidden states), finetuned on
``shakespeare-verse`` with 200 labels, test macro-F1 over 3 seeds; and the same with only the embedding and lower
layer frozen (``--freeze 1``, the demo's finetuning). A configuration's budget includes its tokenizer's training.

The ranking is by **validation** macro-F1 (the freeze-1 runs' best epoch, mean over the seeds): the test column is
reported beside it and never used to choose a recipe.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from budget import frozen_scores, pretrain_for
from matplotlib.figure import Figure
from results import machine_line, write_section

from minipt.jobs.pretrain import PretrainConfig

HERE = Path(__file__).resolve().parent

BASE = dict(model="transformer", objective="clm", tokenizer="bpe", bpe_vocab_size=2000, d_model=128, n_layers=2,
            n_heads=4, d_ff=512, batch_size=16, block_size=128, lr=3e-3, dropout=0.0, device="cpu", eval_batches=10)
CONFIGS = {  # name -> what differs from BASE
    "char L4 d128 12x64 lr1e-3 (nanoGPT CPU)": dict(tokenizer="char", n_layers=4, batch_size=12, block_size=64,
                                                   lr=1e-3),
    "char L4 d128 32x128 lr1e-3 drop0.1 (old default)": dict(tokenizer="char", n_layers=4, batch_size=32, lr=1e-3,
                                                             dropout=0.1),
    "char L2 d128 16x128 lr3e-3": dict(tokenizer="char"),
    "bpe512 L2 d128 16x128 lr3e-3": dict(bpe_vocab_size=512),
    "bpe1000 L2 d128 16x128 lr3e-3": dict(bpe_vocab_size=1000),
    "bpe2000 L2 d128 16x128 lr3e-3 (demo)": dict(),
    "bpe2000 L4 d128 16x128 lr3e-3": dict(n_layers=4),
    "bpe2000 L2 d192 16x128 lr3e-3": dict(d_model=192, d_ff=768),
    "bpe2000 L2 d128 32x128 lr3e-3": dict(batch_size=32),
    "bpe2000 L2 d128 12x64 lr3e-3": dict(batch_size=12, block_size=64),
    "bpe2000 L2 d128 16x128 lr1e-3": dict(lr=1e-3),
    "bpe2000 L2 d128 16x128 lr4e-3": dict(lr=4e-3),
    "bpe2000 L2 d128 16x128 lr3e-3 drop0.1": dict(dropout=0.1),
    "bpe2000 L2 d128 16x128 lr3e-3 mlm": dict(objective="mlm"),
}


def plot(results: dict, path: Path) -> None:
    figure = Figure(figsize=(9, 5.5))
    axes = figure.add_subplot()
    for name, result in results.items():
        seconds, losses = zip(*result["curve"], strict=True)
        axes.plot(seconds, losses, marker=".", label=name)
    axes.set_xlabel("training seconds (evaluation excluded)")
    axes.set_ylabel("validation loss (nats per token of its own tokenizer)")
    axes.set_title("Pretraining recipes, same wall-clock budget")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    figure.savefig(path, dpi=120, bbox_inches="tight")


def markdown(results: dict, args: argparse.Namespace) -> str:
    lines = [
        "## Pretraining recipe, same wall-clock budget (benchmarks/pretrain_recipe.py)",
        "",
        f"Each configuration: {args.minutes:g} minutes of pretraining (steps from its measured step time), then "
        "finetuned on shakespeare-verse with 200 labels, 3 seeds: every layer frozen (probe) and embedding + lower "
        f"layer frozen. {machine_line()} Quiet: {'yes' if args.quiet_machine == 'yes' else 'no, other jobs ran'}. "
        "Validation loss is in nats per token of the configuration's own tokenizer. Plot: "
        "`benchmarks/pretrain_recipe.png`.",
        "",
        "Ranked by the freeze-1 runs' validation macro-F1 (the choice); test macro-F1 is reported, not used to rank. "
        "Configurations measured before validation was recorded have no validation number and come last.",
        "",
        "| rank | configuration | steps | tokens | wall (s) | val loss | freeze-1 validation macro-F1 | "
        "probe test macro-F1 | freeze-1 test macro-F1 |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for rank, (name, r) in enumerate(ranked(results), start=1):
        validation = (f"{r['freeze1']['val_mean']:.3f} ± {r['freeze1']['val_std']:.3f}"
                      if "val_mean" in r["freeze1"] else "not recorded")
        lines.append(f"| {rank} | {name} | {r['steps']} | {r['tokens']:,} | {r['wall_seconds']:.0f} | "
                     f"{r['val_loss']:.3f} | {validation} | {r['probe']['mean']:.3f} ± {r['probe']['std']:.3f} | "
                     f"{r['freeze1']['mean']:.3f} ± {r['freeze1']['std']:.3f} |")
    return "\n".join(lines)


def ranked(results: dict) -> list[tuple[str, dict]]:
    """The configurations, best validation macro-F1 of the freeze-1 runs first (never a test number); those
    without a validation number last, in their listed order."""
    return sorted(results.items(), key=lambda item: -item[1]["freeze1"].get("val_mean", float("-inf")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=4.0, help="pretraining budget per configuration")
    parser.add_argument("--configs", default="all", help="comma-separated indices into CONFIGS, or all")
    parser.add_argument("--quiet-machine", choices=["yes", "no"], default="yes")
    parser.add_argument("--render", action="store_true", help="only rewrite the table and plot from the saved results")
    args = parser.parse_args()
    suffix = "" if args.minutes == 4.0 else f"_{args.minutes:g}min"  # each budget its own files and section
    results_file = HERE / f"pretrain_recipe{suffix}.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    results = {name: r for name, r in results.items() if r.get("minutes") == args.minutes}
    names = list(CONFIGS) if args.configs == "all" else [list(CONFIGS)[int(i)] for i in args.configs.split(",")]
    names = [] if args.render else names
    with tempfile.TemporaryDirectory() as temporary:
        work = Path(temporary)
        for index, name in enumerate(names):
            config = PretrainConfig(**{**BASE, **CONFIGS[name]}, seed=1337)
            run_dir = work / f"config{index}"
            result = pretrain_for(config, 60 * args.minutes, run_dir)
            result["probe"] = frozen_scores(run_dir, work, [0, 1, 2], freeze="all")
            result["freeze1"] = frozen_scores(run_dir, work, [0, 1, 2], freeze="1")
            results[name] = {**result, "minutes": args.minutes}
            print(name, {k: v for k, v in result.items() if k != "curve"}, flush=True)
            results_file.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    ordered = {name: results[name] for name in CONFIGS if name in results}
    plot(ordered, HERE / f"pretrain_recipe{suffix}.png")
    text = markdown(ordered, args).replace("(benchmarks/pretrain_recipe.py)", f"(benchmarks/pretrain_recipe.py"
                                           f"{' --minutes ' + format(args.minutes, 'g') if suffix else ''})")
    text = text.replace("`benchmarks/pretrain_recipe.png`", f"`benchmarks/pretrain_recipe{suffix}.png`")
    print(text)
    write_section(f"pretrain_recipe{suffix}", text)


if __name__ == "__main__":
    main()
