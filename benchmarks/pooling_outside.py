"""One more lever on the outside sets: how the frozen Transformer's per-token vectors become one. Mean pooling
(the demo's) against the last token's vector (for a causal model, the only position that has read the whole text),
each with the demo's learning-rate grid and early stopping, and the pooling itself chosen per seed on validation
macro-F1 (test scored for every row, read by no choice).

The backbone is ``when_pretraining_pays.py``'s ``task100`` run of each seed (the demo's Transformer and recipe on
all of the task's train + validation texts, ``DIR/pays-pretrain/<task>-task100-seed<S>``), 200 labels:

    python benchmarks/pooling_outside.py --keep /tmp/demo-runs

Writes ``benchmarks/pooling_outside.json`` (every cell, resumable) and the ``pooling_outside`` section of
``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from results import machine_line, write_section
from when_pretraining_pays import OUTSIDE, cell, task_file

from minipt.stats import mean_std, paired_interval

HERE = Path(__file__).resolve().parent
RESULTS_FILE = HERE / "pooling_outside.json"
POOLINGS = ("mean", "last")
LABELS = 200


def chosen(cells: dict[str, dict]) -> dict:
    """The pooling with the best validation macro-F1 (ties: the first of ``POOLINGS``) and its scores."""
    pooling = max(POOLINGS, key=lambda name: (cells[name]["frozen_val"], -POOLINGS.index(name)))
    return {**cells[pooling], "pooling": pooling}


def interval_text(a: list[float], b: list[float]) -> str:
    gain = paired_interval(a, b)
    if gain["low"] is None:
        return f"{100 * gain['mean']:+.1f} | -"
    return f"{100 * gain['mean']:+.1f} | [{100 * gain['low']:+.1f}, {100 * gain['high']:+.1f}]"


def markdown(results: dict, tasks: list[str], seeds: list[str]) -> str:
    lines = ["## Pooling on the outside sets (benchmarks/pooling_outside.py)", "",
             f"The frozen Transformer pretrained on all of the task's train + validation text (`task100` of "
             f"`when_pretraining_pays`), {LABELS} labels, the demo's learning-rate grid and early stopping; pooling "
             f"mean or last, chosen per seed on validation macro-F1. Test macro-F1, mean ± std over seeds "
             f"{', '.join(seeds)}; differences paired by seed with their 95% t-interval. {machine_line()}", "",
             "| task | row | validation macro-F1 | test macro-F1 | − TF-IDF (points) | 95% interval | chose |",
             "| --- | --- | ---: | ---: | ---: | ---: | --- |"]
    for task in tasks:
        per_seed = [results[f"{task}/{seed}"] for seed in seeds if f"{task}/{seed}" in results]
        if not per_seed:
            continue
        tfidf = [cells["mean"]["tfidf"] for cells in per_seed]
        rows = [(f"pooling {name}", [cells[name] for cells in per_seed]) for name in POOLINGS]
        rows.append(("pooling chosen on validation", [chosen(cells) for cells in per_seed]))
        for name, cells in rows:
            val, test = mean_std([c["frozen_val"] for c in cells]), mean_std([c["frozen"] for c in cells])
            picks = " / ".join(c["pooling"] for c in cells) if "pooling" in cells[0] else "-"
            lines.append(f"| {task} | {name} | {val[0]:.3f} ± {val[1]:.3f} | {test[0]:.3f} ± {test[1]:.3f} | "
                         f"{interval_text([c['frozen'] for c in cells], tfidf)} | {picks} |")
        last, mean = [c["last"]["frozen"] for c in per_seed], [c["mean"]["frozen"] for c in per_seed]
        last_minus_mean = interval_text(last, mean)
        lines.append(f"| {task} | last − mean (test) | | | {last_minus_mean} | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", required=True, help="the folder when_pretraining_pays.py --keep wrote")
    parser.add_argument("--tasks", default="tweets,amazon")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--outside", default=str(OUTSIDE), help="the folder of amazon.tsv and tweets.tsv")
    parser.add_argument("--render", action="store_true", help="only rewrite the table from the saved cells")
    args = parser.parse_args()
    tasks, seeds = args.tasks.split(","), args.seeds.split(",")
    results = json.loads(RESULTS_FILE.read_text()) if RESULTS_FILE.exists() else {}
    keep = Path(args.keep)
    for task in [] if args.render else tasks:
        for seed in seeds:
            run = keep / "pays-pretrain" / f"{task}-task100-seed{seed}"
            if f"{task}/{seed}" in results or not (run / "best.pt").exists():
                continue
            results[f"{task}/{seed}"] = {
                pooling: cell(task_file(task, args.outside), run, LABELS, int(seed),
                              keep / "pooling" / f"{task}-{pooling}-{seed}", pooling=pooling)
                for pooling in POOLINGS}
            print(task, seed, {p: round(c["frozen"], 3) for p, c in results[f"{task}/{seed}"].items()}, flush=True)
            RESULTS_FILE.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    text = markdown(results, tasks, seeds)
    print(text)
    write_section("pooling_outside", text)


if __name__ == "__main__":
    main()
