"""When does pretraining a small model of your own pay? The gain of the pretrained + frozen Transformer over the
TF-IDF baseline against the number of labels and against the amount of unlabelled in-domain text.

The pretraining text of each row (``--sources``):

* ``task``: the demo's own run on the task's train + validation texts, as ``benchmarks/demo_seeds.py --keep DIR``
  left it (``DIR/<name>-seed<S>/pretrain-transformer``);
* ``plays``: the built-in demo's run on Shakespeare's plays (``DIR/builtin-seed<S>/``; pretrained here if absent);
* ``task10``, ``task30``, ``task100``: the same Transformer and recipe pretrained here on the first 10%, 30% or all
  of a seeded shuffle of the task's train + validation texts (nested samples), evaluated every 1/24 of the run so
  that ``best.pt`` (lowest validation loss) catches the early optimum of a small text;
* ``plays+task10`` ... ``plays+task100``: the plays run pretrained further on that text (``--init-from``, with the
  plays' tokenizer): ULMFiT's general-domain, then in-domain stages.

For each task, seed, source and number of labels: the demo's frozen finetuning (embedding + lower layer frozen,
learning rate from the demo's grid and best epoch, both on validation; test scored once) against the TF-IDF
baseline on the same labels (C on validation). The gain is paired by seed, with its 95% t-interval over the seeds
(:mod:`minipt.stats`).

    python benchmarks/when_pretraining_pays.py --keep /tmp/demo-runs --tasks amazon,tweets --labels 50,200,1000
    python benchmarks/when_pretraining_pays.py --keep /tmp/demo-runs --labels 200 --seeds 0 \
        --sources task10,task30,task100,plays+task10,plays+task30,plays+task100

Writes ``benchmarks/when_pretraining_pays.json`` (every cell, resumable), ``benchmarks/when_pretraining_pays.png``
and the ``when_pretraining_pays`` section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
from dataclasses import replace
from pathlib import Path

from matplotlib.figure import Figure
from results import machine_line, write_section

from minipt.data import load_task
from minipt.jobs.baselines import tfidf_baseline
from minipt.jobs.demo import LR_GRID, DemoConfig, demo_plan, tuned_finetune
from minipt.jobs.finetune import load_labelled_task, select_train_examples
from minipt.jobs.pretrain import pretrain
from minipt.runs.folder import read_config
from minipt.stats import mean_std, paired_interval

HERE = Path(__file__).resolve().parent
RESULTS_FILE = HERE / "when_pretraining_pays.json"
OUTSIDE = HERE.parents[1] / "shared" / "data" / "outside"  # ../shared beside the checkout
FRACTIONS = {"task10": 0.1, "task30": 0.3, "task100": 1.0}  # of the task's train + validation texts
SOURCES = ("task", "plays", *FRACTIONS, *(f"plays+{name}" for name in FRACTIONS))  # the table's order


def task_file(name: str, outside: str) -> str:
    """The labelled file of a task name (``amazon``, ``tweets``: ``outside/<name>.tsv``) or the built-in task."""
    return "shakespeare-verse" if name == "builtin" else str(Path(outside) / f"{name}.tsv")


def plays_run(keep: Path, seed: int) -> Path:
    """The built-in demo's Transformer pretrained on the plays for ``seed``: ``demo_seeds.py``'s, or made here."""
    run = keep / f"builtin-seed{seed}" / "pretrain-transformer"
    if (run / "best.pt").exists():
        return run
    run = keep / "pays-pretrain" / f"plays-seed{seed}"
    if not (run / "summary.json").exists():
        shutil.rmtree(run, ignore_errors=True)
        plan = demo_plan(DemoConfig(), seed, "shakespeare").transformer
        pretrain(replace(plan, device="cpu", threads=1), run, progress=False)
    return run


def fraction_corpus(task: str, fraction: float, path: Path) -> str:
    """The first ``fraction`` of a seeded shuffle of the task's train + validation texts (never test), one a line."""
    data = load_labelled_task(task)
    texts = [text for text, _ in data.train + data.validation]
    random.Random(0).shuffle(texts)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(texts[:round(fraction * len(texts))]) + "\n", encoding="utf-8")
    return str(path)


def pretrained_run(name: str, task: str, source: str, seed: int, keep: Path) -> Path:
    """The pretraining run of a row's ``source`` (module docstring), pretrained here when it is one of the text
    axis's."""
    if source == "task":
        return keep / f"{name}-seed{seed}" / "pretrain-transformer"
    if source == "plays":
        return plays_run(keep, seed)
    run = keep / "pays-pretrain" / f"{name}-{source}-seed{seed}"
    if (run / "summary.json").exists():
        return run
    shutil.rmtree(run, ignore_errors=True)  # a run interrupted midway starts again
    text = source.removeprefix("plays+")
    corpus = fraction_corpus(task, FRACTIONS[text], keep / "pays-pretrain" / f"{name}-{text}.txt")
    plan = demo_plan(DemoConfig(task=task), seed, corpus).transformer
    config = replace(plan, eval_every=max(1, plan.steps // 24), device="cpu", threads=1)
    if source.startswith("plays+"):
        config = replace(config, init_from=str(plays_run(keep, seed)))
    print(f"pretraining {run.name} on {corpus}", flush=True)
    pretrain(config, run, progress=False)
    return run


def cell(task: str, run: Path, labels: int, seed: int, work: Path, pooling: str = "mean") -> dict:
    """One (task, pretrained run, labels, seed): the tuned frozen Transformer (the demo's ``pooling`` unless
    another is given) and the TF-IDF baseline."""
    plan = demo_plan(DemoConfig(task=task, labels=labels), seed, "")
    config = replace(plan.frozen, from_run=str(run), train_examples=labels, pooling=pooling, device="cpu",
                     threads=1)
    if work.exists():
        shutil.rmtree(work)  # a cell interrupted midway starts again
    frozen = tuned_finetune(config, LR_GRID, work, progress=False)
    data = load_task(task)
    train = select_train_examples(data.train, labels, seed)
    validation = select_train_examples(data.validation, config.val_examples, seed)
    tfidf = tfidf_baseline(train, validation, data.test, data.labels, seed=seed)
    data_sizes = read_config(run)["data"]
    return {"frozen": frozen["test_macro_f1"], "frozen_val": frozen["best_val_macro_f1"], "frozen_lr": frozen["lr"],
            "tfidf": tfidf["test_macro_f1"], "tfidf_val": tfidf["best_val_macro_f1"], "tfidf_c": tfidf["c"],
            "text_tokens": data_sizes["train_tokens"] + data_sizes["val_tokens"]}


def summary(results: dict, task: str, source: str, labels: int) -> dict | None:
    """Mean ± std of both rows and the paired gain over the seeds of one (task, source, labels)."""
    cells = [value for key, value in sorted(results.items()) if key.startswith(f"{task}/{source}/{labels}/")]
    if not cells:
        return None
    frozen, tfidf = [c["frozen"] for c in cells], [c["tfidf"] for c in cells]
    return {"seeds": len(cells), "frozen": mean_std(frozen), "tfidf": mean_std(tfidf),
            "gain": paired_interval(frozen, tfidf), "text_tokens": cells[0].get("text_tokens")}


def present(results: dict, task: str, source: str) -> list[int]:
    """The label counts measured for (task, source), ascending."""
    return sorted({int(key.split("/")[2]) for key in results if key.startswith(f"{task}/{source}/")})


def markdown(results: dict, args: argparse.Namespace) -> str:
    lines = ["## When pretraining pays (benchmarks/when_pretraining_pays.py)", "",
             "The demo's pretrained + frozen Transformer (learning rate and epoch on validation) against the TF-IDF "
             "baseline (C on validation), test macro-F1, mean ± std over the seeds; the gain is paired by seed, "
             "with its 95% t-interval. Pretraining text: `task` = the demo's run on the task's own train + "
             "validation texts; `plays` = Shakespeare's plays (the built-in demo's run); `taskN` = the first N% of "
             "a seeded shuffle of those texts (nested), the demo's recipe and steps, evaluated every 1/24 of the run "
             "(best.pt: the lowest validation loss); `plays+taskN` = the plays run pretrained further on that text "
             "(`--init-from`, the plays' tokenizer). Tokens: the pretraining text in its run's own tokens. "
             f"{machine_line()}", "",
             "| task | pretraining text | tokens | labels | seeds | pretrained + frozen | TF-IDF | gain (points) | "
             "95% interval |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for task in args.tasks.split(","):
        for source in SOURCES:
            for labels in present(results, task, source):
                s = summary(results, task, source, labels)
                gain = s["gain"]
                interval = "-" if gain["low"] is None else f"[{100 * gain['low']:+.1f}, {100 * gain['high']:+.1f}]"
                tokens = "-" if s["text_tokens"] is None else f"{s['text_tokens']:,}"
                lines.append(f"| {task} | {source} | {tokens} | {labels} | {s['seeds']} | {s['frozen'][0]:.3f} ± "
                             f"{s['frozen'][1]:.3f} | {s['tfidf'][0]:.3f} ± {s['tfidf'][1]:.3f} | "
                             f"{100 * gain['mean']:+.1f} | {interval} |")
    return "\n".join(lines)


def error_bars(gains: list[dict]) -> list[float]:
    return [100 * (gain["high"] - gain["mean"]) if gain["high"] is not None else 0.0 for gain in gains]


def plot(results: dict, args: argparse.Namespace, path: Path) -> None:
    """Gain over TF-IDF (points), 95% intervals: against the labels (left, the demo's runs) and against the share
    of the task's text pretrained on, 200 labels (right, with and without the plays first)."""
    figure = Figure(figsize=(12, 4.5))
    by_labels, by_text = figure.add_subplot(1, 2, 1), figure.add_subplot(1, 2, 2)
    for task in args.tasks.split(","):
        for source in ("task", "plays"):
            points = [(labels, summary(results, task, source, labels)["gain"])
                      for labels in present(results, task, source)]
            if points:
                by_labels.errorbar([x for x, _ in points], [100 * g["mean"] for _, g in points],
                                   yerr=error_bars([g for _, g in points]), marker="o", capsize=4,
                                   label=f"{task}, pretrained on {source}")
        for prefix, label in (("", "the task's text"), ("plays+", "the plays, then the task's text")):
            points = [(100 * share, summary(results, task, f"{prefix}{name}", 200))
                      for name, share in FRACTIONS.items()]
            points = [(x, s["gain"]) for x, s in points if s is not None]
            if points:
                by_text.errorbar([x for x, _ in points], [100 * g["mean"] for _, g in points],
                                 yerr=error_bars([g for _, g in points]), marker="o", capsize=4,
                                 label=f"{task}: {label}")
    for axes, xlabel in ((by_labels, "labelled training examples"),
                         (by_text, "share of the task's train + validation text pretrained on (%), 200 labels")):
        axes.axhline(0.0, color="black", linewidth=0.8)
        axes.set_xscale("log")
        axes.set_xlabel(xlabel)
        axes.set_ylabel("pretrained + frozen − TF-IDF (macro-F1 points)")
        axes.grid(alpha=0.3)
        if axes.lines:
            axes.legend(fontsize=8)
    figure.suptitle("When pretraining a small model pays (95% intervals over seeds where there are several)")
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
                keys = {labels: f"{task}/{source}/{labels}/{seed}" for labels in map(int, args.labels.split(","))}
                if all(key in results for key in keys.values()):
                    continue
                run = pretrained_run(task, task_file(task, args.outside), source, seed, keep)
                for labels, key in keys.items():
                    if key in results or not (run / "best.pt").exists():
                        continue
                    work = keep / "pays" / key.replace("/", "-").replace("+", "-then-")
                    results[key] = cell(task_file(task, args.outside), run, labels, seed, work)
                    print(key, results[key], flush=True)
                    RESULTS_FILE.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    text = markdown(results, args)
    print(text)
    plot(results, args, HERE / "when_pretraining_pays.png")
    write_section("when_pretraining_pays", text)


if __name__ == "__main__":
    main()
