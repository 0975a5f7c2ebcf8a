"""When does pretraining a small model of your own pay? The gain of the pretrained + frozen Transformer over the
TF-IDF baseline against the number of labels, for each pretraining text.

Reuses the Transformers that ``benchmarks/demo_seeds.py --keep DIR`` pretrained (``DIR/<name>-seed<S>/``): for a
labelled file, the demo's own run on the task's train + validation texts (``--sources task``), and the built-in
demo's run on the plays (``--sources plays``, folder ``DIR/builtin-seed<S>/``). For each task, seed, source and
number of labels: the demo's frozen finetuning (embedding + lower layer frozen, learning rate from the demo's grid
and best epoch, both on validation; test scored once) against the TF-IDF baseline on the same labels (C on
validation). The gain is paired by seed, with its 95% t-interval over the seeds (:mod:`minipt.stats`).

    python benchmarks/when_pretraining_pays.py --keep /tmp/demo-runs --tasks amazon,tweets --labels 50,200,1000

Writes ``benchmarks/when_pretraining_pays.json`` (every cell, resumable), ``benchmarks/when_pretraining_pays.png``
and the ``when_pretraining_pays`` section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import replace
from pathlib import Path

from matplotlib.figure import Figure
from results import machine_line, write_section

from minipt.data import load_task
from minipt.jobs.baselines import tfidf_baseline
from minipt.jobs.demo import LR_GRID, DemoConfig, demo_plan, tuned_finetune
from minipt.jobs.finetune import select_train_examples
from minipt.stats import mean_std, paired_interval

HERE = Path(__file__).resolve().parent
RESULTS_FILE = HERE / "when_pretraining_pays.json"
OUTSIDE = HERE.parents[1] / "shared" / "data" / "outside"  # ../shared beside the checkout


def task_file(name: str, outside: str) -> str:
    """The labelled file of a task name (``amazon``, ``tweets``: ``outside/<name>.tsv``) or the built-in task."""
    return "shakespeare-verse" if name == "builtin" else str(Path(outside) / f"{name}.tsv")


def cell(task: str, run: Path, labels: int, seed: int, work: Path) -> dict:
    """One (task, pretrained run, labels, seed): the tuned frozen Transformer and the TF-IDF baseline."""
    plan = demo_plan(DemoConfig(task=task, labels=labels), seed, "")
    config = replace(plan.frozen, from_run=str(run), train_examples=labels, device="cpu", threads=1)
    if work.exists():
        shutil.rmtree(work)  # a cell interrupted midway starts again
    frozen = tuned_finetune(config, LR_GRID, work, progress=False)
    data = load_task(task)
    train = select_train_examples(data.train, labels, seed)
    validation = select_train_examples(data.validation, config.val_examples, seed)
    tfidf = tfidf_baseline(train, validation, data.test, data.labels, seed=seed)
    return {"frozen": frozen["test_macro_f1"], "frozen_val": frozen["best_val_macro_f1"], "frozen_lr": frozen["lr"],
            "tfidf": tfidf["test_macro_f1"], "tfidf_val": tfidf["best_val_macro_f1"], "tfidf_c": tfidf["c"]}


def summary(results: dict, task: str, source: str, labels: int) -> dict | None:
    """Mean ± std of both rows and the paired gain over the seeds of one (task, source, labels)."""
    cells = [value for key, value in sorted(results.items()) if key.startswith(f"{task}/{source}/{labels}/")]
    if not cells:
        return None
    frozen, tfidf = [c["frozen"] for c in cells], [c["tfidf"] for c in cells]
    return {"seeds": len(cells), "frozen": mean_std(frozen), "tfidf": mean_std(tfidf),
            "gain": paired_interval(frozen, tfidf)}


def markdown(results: dict, args: argparse.Namespace) -> str:
    lines = ["## When pretraining pays (benchmarks/when_pretraining_pays.py)", "",
             "The demo's pretrained + frozen Transformer (learning rate and epoch on validation) against the TF-IDF "
             "baseline (C on validation), test macro-F1, mean ± std over the seeds; the gain is paired by seed, "
             f"with its 95% t-interval. Pretraining text: `task` = the task's own train + validation texts, `plays` "
             f"= Shakespeare's plays (the built-in demo's run). {machine_line()}", "",
             "| task | pretraining text | labels | seeds | pretrained + frozen | TF-IDF | gain (points) | "
             "95% interval |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for task in args.tasks.split(","):
        for source in args.sources.split(","):
            for labels in map(int, args.labels.split(",")):
                s = summary(results, task, source, labels)
                if s is None:
                    continue
                gain = s["gain"]
                interval = "-" if gain["low"] is None else f"[{100 * gain['low']:+.1f}, {100 * gain['high']:+.1f}]"
                lines.append(f"| {task} | {source} | {labels} | {s['seeds']} | {s['frozen'][0]:.3f} ± "
                             f"{s['frozen'][1]:.3f} | {s['tfidf'][0]:.3f} ± {s['tfidf'][1]:.3f} | "
                             f"{100 * gain['mean']:+.1f} | {interval} |")
    return "\n".join(lines)


def plot(results: dict, args: argparse.Namespace, path: Path) -> None:
    """Gain over TF-IDF (points) against labels, one line per task and pretraining text, 95% intervals."""
    figure = Figure(figsize=(7, 4.5))
    axes = figure.add_subplot()
    for task in args.tasks.split(","):
        for source in args.sources.split(","):
            points = [(labels, summary(results, task, source, labels)) for labels in map(int, args.labels.split(","))]
            points = [(labels, s["gain"]) for labels, s in points if s is not None]
            if not points:
                continue
            x = [labels for labels, _ in points]
            y = [100 * gain["mean"] for _, gain in points]
            errors = [100 * (gain["high"] - gain["mean"]) if gain["high"] is not None else 0 for _, gain in points]
            axes.errorbar(x, y, yerr=errors, marker="o", capsize=4, label=f"{task}, pretrained on {source}")
    axes.axhline(0.0, color="black", linewidth=0.8)
    axes.set_xscale("log")
    axes.set_xlabel("labelled training examples")
    axes.set_ylabel("pretrained + frozen − TF-IDF (macro-F1 points)")
    axes.set_title("When pretraining a small model pays (95% intervals over seeds)")
    axes.grid(alpha=0.3)
    if axes.lines:
        axes.legend(fontsize=8)
    figure.savefig(path, dpi=120, bbox_inches="tight")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", required=True, help="the folder benchmarks/demo_seeds.py --keep wrote")
    parser.add_argument("--tasks", default="amazon,tweets")
    parser.add_argument("--sources", default="task,plays")
    parser.add_argument("--labels", default="50,200,1000")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--outside", default=str(OUTSIDE), help="the folder of amazon.tsv and tweets.tsv")
    parser.add_argument("--render", action="store_true", help="only rewrite the table and plot from the saved cells")
    args = parser.parse_args()
    results = json.loads(RESULTS_FILE.read_text()) if RESULTS_FILE.exists() else {}
    keep = Path(args.keep)
    for seed in [] if args.render else map(int, args.seeds.split(",")):
        for task in args.tasks.split(","):
            for source in args.sources.split(","):
                run = keep / f"{task if source == 'task' else 'builtin'}-seed{seed}" / "pretrain-transformer"
                for labels in map(int, args.labels.split(",")):
                    key = f"{task}/{source}/{labels}/{seed}"
                    if key in results or not (run / "best.pt").exists():
                        continue
                    work = keep / "pays" / key.replace("/", "-")
                    results[key] = cell(task_file(task, args.outside), run, labels, seed, work)
                    print(key, results[key], flush=True)
                    RESULTS_FILE.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    text = markdown(results, args)
    print(text)
    plot(results, args, HERE / "when_pretraining_pays.png")
    write_section("when_pretraining_pays", text)


if __name__ == "__main__":
    main()
