"""The whole ``minipt demo`` for several seeds: mean ± spread of every row, and the demo's targets checked.

Run ``python benchmarks/demo_seeds.py`` on a quiet machine (about 6 minutes a seed): prints a table, writes
``benchmarks/demo_seeds.json`` (every seed's rows and phase times), ``benchmarks/demo_seeds.png`` (the demo's
picture with the spread over seeds) and the ``demo_seeds`` section of ``benchmarks/RESULTS.md``.

Each seed changes everything random: the pretraining runs' initialisation and batches, the 200 labelled speeches,
the finetuning runs and the baselines. The targets, in test macro-F1: the pretrained Transformer with frozen
lower layers at least 8 points above the same Transformer from scratch and 5 above bag-of-words; the pretrained
GRU with frozen lower layers at least 3 above the Transformer from scratch.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from results import machine_line, write_section

from minipt.jobs.demo import DemoConfig, run_demo
from minipt.plots import plot_demo_report, read_metrics

HERE = Path(__file__).resolve().parent
RESULTS_FILE = HERE / "demo_seeds.json"


def mean_and_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(runs: dict[str, dict]) -> list[dict]:
    """One row per demo row: the mean and spread of each number over the seeds."""
    names = [row["name"] for row in next(iter(runs.values()))["rows"]]
    summary = []
    for index, name in enumerate(names):
        per_seed = [run["rows"][index] for run in runs.values()]
        row = {"name": name, "seeds": len(per_seed)}
        for key in ("test_accuracy", "test_macro_f1", "wall_seconds", "trainable_params"):
            row[key], row[f"{key}_std"] = mean_and_std([r[key] for r in per_seed])
        summary.append(row)
    return summary


def targets(summary: list[dict]) -> list[str]:
    """The demo's targets, each with its measured distance."""
    transformer, gru, scratch, bag = (summary[index]["test_macro_f1"] for index in range(4))  # the demo's rows
    checks = [("pretrained + frozen Transformer - scratch", transformer - scratch, 0.08),
              ("pretrained + frozen Transformer - bag-of-words", transformer - bag, 0.05),
              ("pretrained + frozen GRU - scratch", gru - scratch, 0.03)]
    return [f"| {what} | {100 * gap:+.1f} points | >= +{100 * need:.0f} | {'met' if gap >= need else 'MISSED'} |"
            for what, gap, need in checks]


def markdown(runs: dict[str, dict], summary: list[dict], args: argparse.Namespace) -> str:
    totals = [sum(run["phases"].values()) for run in runs.values()]
    phase_names = list(next(iter(runs.values()))["phases"])
    lines = [
        "## The demo over seeds (benchmarks/demo_seeds.py)",
        "",
        f"`minipt demo --minutes {args.minutes:g} --seed S` for S in {', '.join(runs)}; mean ± sample std over "
        f"the seeds. {machine_line()} Quiet: {'yes' if args.quiet_machine == 'yes' else 'no, other jobs ran'}.",
        "",
        "| row | test accuracy | test macro-F1 | trainable params | wall time (s) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for row in summary:
        lines.append(f"| {row['name']} | {row['test_accuracy']:.3f} ± {row['test_accuracy_std']:.3f} | "
                     f"{row['test_macro_f1']:.3f} ± {row['test_macro_f1_std']:.3f} | {row['trainable_params']:,.0f} | "
                     f"{row['wall_seconds']:.1f} |")
    lines += ["", "| target (test macro-F1) | measured | target | |", "| --- | ---: | ---: | --- |", *targets(summary)]
    lines += ["", "| phase | " + " | ".join(f"seed {seed} (s)" for seed in runs) + " |",
              "| --- |" + " ---: |" * len(runs)]
    for name in phase_names:
        lines.append(f"| {name} | " + " | ".join(f"{run['phases'][name]:.1f}" for run in runs.values()) + " |")
    lines.append("| total | " + " | ".join(f"{total:.1f}" for total in totals) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--minutes", type=float, default=DemoConfig.minutes)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--quiet-machine", choices=["yes", "no"], default="yes")
    parser.add_argument("--keep", default=None, help="folder to keep the demo runs in (default: a temporary one)")
    parser.add_argument("--tiny", action="store_true", help="tiny models, to check this script (writes nothing)")
    parser.add_argument("--render", action="store_true", help="only rewrite the table and plot from the saved runs")
    args = parser.parse_args()
    runs = json.loads(RESULTS_FILE.read_text()) if RESULTS_FILE.exists() and not args.tiny else {}
    runs = {seed: run for seed, run in runs.items() if run.get("minutes") == args.minutes}
    with tempfile.TemporaryDirectory() as temporary:
        work = Path(args.keep or temporary)
        for seed in [] if args.render else args.seeds.split(","):
            config = DemoConfig(out=str(work / f"seed{seed}"), minutes=args.minutes, seed=int(seed),
                                threads=args.threads, device="cpu", tiny=args.tiny)
            result = run_demo(config, progress=False)
            curves = {label: read_metrics(work / f"seed{seed}" / f"pretrain-{name}" / "metrics.jsonl")
                      for label, name in (("Transformer", "transformer"), ("GRU", "gru"))}
            runs[seed] = {"minutes": args.minutes, "rows": result["rows"], "phases": result["phases"],
                          "curves": curves}
            if not args.tiny:
                RESULTS_FILE.write_text(json.dumps(runs, indent=1) + "\n", encoding="utf-8")
    summary = summarise(runs)
    text = markdown(runs, summary, args)
    print(text)
    if not args.tiny:
        plot_demo_report(summary, next(iter(runs.values()))["curves"], HERE / "demo_seeds.png")
        write_section("demo_seeds", text)


if __name__ == "__main__":
    main()
