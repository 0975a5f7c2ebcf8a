"""How much pretraining it takes before frozen layers pay: the gain over scratch against pretraining minutes.

Run ``python benchmarks/pretraining_pays.py`` on a quiet machine (the budgets add up to 31 minutes of pretraining,
plus the finetuning): prints a table, writes ``benchmarks/pretraining_pays.json``, ``benchmarks/pretraining_pays.png``
and the ``pretraining_pays`` section of ``benchmarks/RESULTS.md``.

For each budget (1, 2, 4, 8, 16 minutes): one pretraining run of the demo's Transformer recipe
(:mod:`minipt.jobs.demo`), then finetuned on ``shakespeare-verse`` with 200 labels and its embedding and lower layer
frozen, 3 finetuning seeds. The control: the same architecture from scratch on the same labels, the same 3 seeds
(its score does not depend on the budget). The plot shows the test macro-F1 gain over scratch, mean and spread.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from budget import frozen_scores, pretrain_for
from matplotlib.figure import Figure
from results import machine_line, write_section

from minipt.jobs.demo import RECIPE, TRANSFORMER
from minipt.jobs.pretrain import PretrainConfig

HERE = Path(__file__).resolve().parent
RESULTS_FILE = HERE / "pretraining_pays.json"
SEEDS = [0, 1, 2]


def gains(result: dict, scratch: dict) -> tuple[float, float]:
    """Mean and sample std of the per-seed gains (pretrained minus scratch, the same labels per seed)."""
    per_seed = [a - b for a, b in zip(result["frozen"]["scores"], scratch["scores"], strict=True)]
    return statistics.mean(per_seed), statistics.stdev(per_seed)


def plot(results: dict, scratch: dict, path: Path) -> None:
    minutes = sorted(results, key=float)
    means, spreads = zip(*(gains(results[m], scratch) for m in minutes), strict=True)
    figure = Figure(figsize=(6.5, 4.2))
    axes = figure.add_subplot()
    walls = [results[m]["wall_seconds"] / 60 for m in minutes]  # the measured time, tokenizer included
    axes.errorbar(walls, [100 * g for g in means], yerr=[100 * s for s in spreads],
                  marker="o", capsize=4, label="pretrained, embedding + lower layer frozen")
    axes.axhline(0.0, color="gray", linestyle="--", label="same Transformer from scratch")
    axes.axhline(8.0, color="tab:green", linestyle=":", label="the demo's target (+8 points)")
    axes.set_xscale("log", base=2)
    axes.set_xticks([1, 2, 4, 8, 16], ["1", "2", "4", "8", "16"])
    axes.set_xlabel("pretraining wall time, minutes (quiet 2-core CPU)")
    axes.set_ylabel("test macro-F1 gain over scratch (points)")
    axes.set_title("How long pretraining must run before freezing pays (200 labels)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.savefig(path, dpi=120, bbox_inches="tight")


def markdown(results: dict, scratch: dict, args: argparse.Namespace) -> str:
    lines = [
        "## How much pretraining it takes (benchmarks/pretraining_pays.py)",
        "",
        "The demo's Transformer recipe pretrained for each budget (one run each), finetuned on shakespeare-verse "
        "with 200 labels, embedding + lower layer frozen, 3 seeds; scratch: the same architecture from a random "
        f"start, the same seeds and labels: test macro-F1 {scratch['mean']:.3f} ± {scratch['std']:.3f}. "
        f"{machine_line()} Quiet: {'yes' if args.quiet_machine == 'yes' else 'no, other jobs ran'}. Plot: "
        "`benchmarks/pretraining_pays.png`.",
        "",
        "| budget (min) | steps | tokens | wall (s) | val loss | frozen macro-F1 | gain over scratch (points) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for minutes in sorted(results, key=float):
        r = results[minutes]
        gain, spread = gains(r, scratch)
        lines.append(f"| {float(minutes):g} | {r['steps']} | {r['tokens']:,} | {r['wall_seconds']:.0f} | "
                     f"{r['val_loss']:.3f} | {r['frozen']['mean']:.3f} ± {r['frozen']['std']:.3f} | "
                     f"{100 * gain:+.1f} ± {100 * spread:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", default="1,2,4,8,16", help="comma-separated pretraining budgets")
    parser.add_argument("--quiet-machine", choices=["yes", "no"], default="yes")
    parser.add_argument("--render", action="store_true", help="only rewrite the table and plot from the saved runs")
    args = parser.parse_args()
    saved = json.loads(RESULTS_FILE.read_text()) if RESULTS_FILE.exists() else {}
    results, scratch = saved.get("budgets", {}), saved.get("scratch")
    with tempfile.TemporaryDirectory() as temporary:
        work = Path(temporary)
        for minutes in [] if args.render else args.minutes.split(","):
            config = PretrainConfig(**RECIPE, **TRANSFORMER, device="cpu", eval_batches=10, seed=1337)
            run_dir = work / f"pretrain-{minutes}min"
            result = pretrain_for(config, 60 * float(minutes), run_dir)
            result["frozen"] = frozen_scores(run_dir, work, SEEDS, freeze="1")
            if scratch is None:
                scratch = frozen_scores(run_dir, work, SEEDS, freeze="none", from_scratch=True)
            results[minutes] = result
            print(minutes, {k: v for k, v in result.items() if k != "curve"}, flush=True)
            RESULTS_FILE.write_text(json.dumps({"budgets": results, "scratch": scratch}, indent=1) + "\n")
    plot(results, scratch, HERE / "pretraining_pays.png")
    text = markdown(results, scratch, args)
    print(text)
    write_section("pretraining_pays", text)


if __name__ == "__main__":
    main()
