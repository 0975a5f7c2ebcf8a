"""Does pretraining help, and which finetuning strategy? The experiment of issue 6.

Every row of a model uses the same tokenizer (its pretraining run's), the same labelled data (the same stratified
few-label subset per seed) and the same number of finetuning epochs:

* ``scratch``   — the architecture, randomly initialised, every parameter trained (the control);
* ``head``      — pretrained, embedding and every layer frozen: only the final norm and the head train;
* ``freeze{k}`` — pretrained, embedding and the lowest k layers frozen (k = 1 .. n_layers - 1);
* ``full``      — pretrained, nothing frozen;
* ``gradual``   — ULMFiT's gradual unfreezing; ``discriminative`` — per-layer learning rates;
* ``tfidf``     — TF-IDF word + character n-grams and a class-balanced logistic regression, C chosen on validation
  (:mod:`minipt.jobs.baselines`);
* ``majority``  — always the most frequent training label.

Models: ``transformer-clm`` (next-token pretraining), ``transformer-mlm`` (masked-LM pretraining, bidirectional) and
``gru`` (next-token; 4 layers like the Transformer) and ``gru-2layer`` (the same with 2 layers), all on characters,
and ``transformer-clm-bpe`` (next-token on a 1000-token BPE vocabulary: 128 tokens cover about 300 characters
instead of 128) and ``transformer-clm-bpe-flat`` (the same on the ``shakespeare-flat`` corpus: the speeches
lower-cased with their lines joined, as the classifiers read them). ``--sizes`` gives the numbers of labelled
examples (``all`` = the whole training split); every (task, model, row, size, seed) is one entry of the results
JSON, which the script skips when it is already there, so an interrupted run resumes. At the end the ``finetune``
section of ``benchmarks/RESULTS.md`` gets the mean ± standard deviation over seeds, and
``benchmarks/sample_efficiency.png`` plots test accuracy against the number of labels for ``--curve-rows`` (default:
the frozen-lower-layers row and scratch).

A reduced run (what fits a shared 2-core CPU)::

    python benchmarks/finetune_experiment.py --tasks shakespeare-verse --models transformer-clm --sizes 200 \\
        --seeds 0,1,2 --pretrain-steps 1500 --epochs 15
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import replace
from pathlib import Path

from results import machine_line, write_section

from minipt.data import load_task
from minipt.jobs.baselines import tfidf_baseline
from minipt.jobs.finetune import FinetuneConfig, finetune, majority_baseline, select_train_examples
from minipt.jobs.pretrain import PretrainConfig, pretrain
from minipt.plots import plot_sample_efficiency
from minipt.runs.folder import write_json

HERE = Path(__file__).resolve().parent
MODELS = {  # name -> pretraining settings (everything else: PretrainConfig's defaults)
    "transformer-clm": {"model": "transformer", "objective": "clm"},
    "transformer-mlm": {"model": "transformer", "objective": "mlm"},
    "gru": {"model": "gru", "objective": "clm"},
    "gru-2layer": {"model": "gru", "objective": "clm", "n_layers": 2},
    "transformer-clm-bpe": {"model": "transformer", "objective": "clm", "tokenizer": "bpe", "bpe_vocab_size": 1000},
    "transformer-clm-bpe-flat": {"model": "transformer", "objective": "clm", "tokenizer": "bpe", "bpe_vocab_size": 1000,
                                 "corpus": "shakespeare-flat"},
}


# ----------------------------------------------------------------------------------------------------------
# The classical baseline
# ----------------------------------------------------------------------------------------------------------

def tfidf_row(data, train_examples: list, seed: int, val_examples: int) -> dict:
    """The TF-IDF + logistic-regression baseline (:func:`minipt.jobs.baselines.tfidf_baseline`, C chosen on the
    same validation examples the finetuning rows select on), scored once on the test split."""
    validation = select_train_examples(data.validation, val_examples, seed)
    result = tfidf_baseline(train_examples, validation, data.test, data.labels, seed=seed)
    return {**{key: result[key] for key in ("test_accuracy", "test_macro_f1", "trainable_params", "wall_seconds",
                                            "best_val_macro_f1", "c")}, "seconds_per_step": 0.0}


# ----------------------------------------------------------------------------------------------------------
# The rows
# ----------------------------------------------------------------------------------------------------------


def pretrained_run(model: str, steps: int, work: Path) -> Path:
    """The pretraining run of ``model`` with ``steps`` steps (trained once, then reused)."""
    run = work / f"pretrain-{model}-{steps}"
    if not (run / "best.pt").exists():
        if run.exists():  # an interrupted pretraining: start it again
            for path in sorted(run.iterdir()):
                path.unlink()
        config = PretrainConfig(**MODELS[model], steps=steps, warmup=min(100, steps // 10),
                                eval_every=max(1, steps // 5), eval_batches=20)
        print(f"pretraining {model} for {steps} steps into {run}", flush=True)
        pretrain(config, run, progress=True)
    return run


def row_config(row: str, base: FinetuneConfig) -> FinetuneConfig:
    """The finetuning settings of a neural row."""
    if row == "scratch":
        return replace(base, from_scratch=True, freeze="none")
    if row == "head":
        return replace(base, freeze="all")
    if row == "full":
        return replace(base, freeze="none")
    if row in ("gradual", "discriminative"):
        return replace(base, freeze="none", strategy=row)
    if row.startswith("freeze"):
        return replace(base, freeze=row[len("freeze"):])
    raise SystemExit(f"unknown row {row!r}")


def run_row(key: str, task: str, model: str, row: str, size: int, seed: int, args, work: Path) -> dict:
    data = load_task(task)
    train_examples = select_train_examples(data.train, size, seed)
    if row == "majority":
        baseline = majority_baseline(data, train=train_examples)
        return {"test_accuracy": baseline["accuracy"], "test_macro_f1": baseline["macro_f1"], "trainable_params": 0,
                "wall_seconds": 0.0, "seconds_per_step": 0.0}
    if row == "tfidf":
        return tfidf_row(data, train_examples, seed, args.val_examples)
    base = FinetuneConfig(from_run=str(pretrained_run(model, args.pretrain_steps, work)), task=task,
                          epochs=args.epochs, lr=args.lr, batch_size=32, pooling=args.pooling, train_examples=size,
                          val_examples=args.val_examples, balanced=args.balanced, select=args.select, seed=seed,
                          device=args.device)
    run_dir = work / "runs" / key.replace("/", "_")
    if run_dir.exists():  # a row interrupted midway: start it again
        for path in sorted(run_dir.iterdir()):
            path.unlink()
    summary = finetune(row_config(row, base), run_dir, progress=False, verbose=False)
    keep = ["test_accuracy", "test_macro_f1", "trainable_params", "total_params", "wall_seconds", "seconds_per_step",
            "best_val_accuracy", "steps"]
    return {name: summary[name] for name in keep}


# ----------------------------------------------------------------------------------------------------------
# Reporting
# ----------------------------------------------------------------------------------------------------------


def mean_and_spread(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 with one value)."""
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def grouped(results: dict) -> dict[tuple, list[dict]]:
    """Entries grouped by (task, model, variant, row, size), seeds pooled. The baselines do not depend on the
    model: their model is ``"-"``, and a seed measured under several models counts once."""
    groups: dict[tuple, list[dict]] = {}
    for entry in results.values():
        baseline = entry["row"] in ("tfidf", "majority")
        model = "-" if baseline else entry["model"]
        key = (entry["task"], model, entry.get("variant", ""), entry["row"], entry["size"])
        group = groups.setdefault(key, [])
        if not (baseline and any(other["seed"] == entry["seed"] for other in group)):
            group.append(entry)
    return groups


def variant(settings: str, args: argparse.Namespace) -> str | None:
    """How an entry's settings differ from this run's: ``""`` if not at all, the differing parts (``"p2100"``,
    ``"lr0.01"``) if only the pretraining steps or the learning rate differ, None if anything else does."""
    mine, theirs = run_settings(args).split("-"), settings.split("-")
    if len(mine) != len(theirs):
        return None
    differing = [part for part, own in zip(theirs, mine, strict=True) if part != own]
    if any(not part.startswith(("p", "lr")) for part in differing):
        return None
    return " ".join(differing)


ROW_ORDER = ["majority", "tfidf", "scratch", "head", "freeze1", "freeze2", "freeze3", "full", "gradual",
             "discriminative"]


def table_order(item: tuple) -> tuple:
    """Sort key of a group: task, the baselines first, then model and variant, row in ROW_ORDER, labels."""
    (task, model, varied, row, size), _ = item
    baseline = row in ("majority", "tfidf")
    rank = ROW_ORDER.index(row) if row in ROW_ORDER else len(ROW_ORDER)
    return (task, not baseline, "" if baseline else model, varied, size or float("inf"), rank)


def markdown_table(results: dict, args) -> str:
    lines = [
        f"Finetuning experiment: {args.epochs} epochs, lr {args.lr}, pooling {args.pooling}, batch 32, "
        f"each model's pretraining tokenizer (characters; BPE 1000 for -bpe), pretraining {args.pretrain_steps} "
        f"steps{', class-balanced batches' if args.balanced else ''}, "
        f"best epoch by validation {args.select}; "
        "mean ± std over seeds; test split = held-out plays.",
        machine_line(),
        "",
        "| task | model | row | labels | seeds | test accuracy | test macro-F1 | trainable params | s / step | "
        "wall s |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for (task, model, varied, row, size), entries in sorted(grouped(results).items(), key=table_order):
        acc, acc_sd = mean_and_spread([e["test_accuracy"] for e in entries])
        f1, f1_sd = mean_and_spread([e["test_macro_f1"] for e in entries])
        per_step = statistics.mean(e["seconds_per_step"] for e in entries)
        wall = statistics.mean(e["wall_seconds"] for e in entries)
        model_name = model + (f" ({varied})" if varied else "")
        lines.append(f"| {task} | {model_name} | {row} | {size or 'all'} | {len(entries)} | {acc:.3f} ± {acc_sd:.3f} "
                     f"| {f1:.3f} ± {f1_sd:.3f} | {entries[0]['trainable_params']:,} | {per_step:.3f} | {wall:.0f} |")
    return "\n".join(lines)


ROW_DESCRIPTIONS = {"head": "all layers frozen (head only)", "freeze1": "lower 1 layer frozen",
                    "freeze2": "lower 2 layers frozen", "freeze3": "lower 3 layers frozen", "full": "full finetuning"}


def curve_label(row: str, pretrain_steps: int) -> str:
    """The legend entry of a row in the sample-efficiency plots."""
    if row == "scratch":
        return "from scratch"
    if row == "tfidf":
        return "TF-IDF logistic regression"
    return f"pretrained {pretrain_steps} steps, {ROW_DESCRIPTIONS.get(row, row)}"


def plot_curve(results: dict, args) -> None:
    """Test accuracy (``sample_efficiency.png``) and macro-F1 (``sample_efficiency_macro_f1.png``) against the
    number of labels for the first task and model: rows ``--curve-rows`` (of every pretraining length measured
    with these finetuning settings) and the TF-IDF baseline, where a row has >= 2 sizes; the majority class is a dashed
    line. The scratch control does not depend on the pretraining length (same tokenizer and architecture)."""
    task, model = args.tasks.split(",")[0], args.models.split(",")[0]
    n_train = len(load_task(task).train)
    for metric, name, path in (("test_accuracy", "accuracy", "sample_efficiency.png"),
                               ("test_macro_f1", "macro-F1", "sample_efficiency_macro_f1.png")):
        curves: dict[str, dict[int, tuple]] = {}
        baselines = {}
        for (t, m, varied, row, size), entries in grouped(results).items():
            if t != task or m not in (model, "-") or varied.startswith("lr") or " " in varied:
                continue
            steps = int(varied[1:]) if varied else args.pretrain_steps
            if row in args.curve_rows.split(",") or row == "tfidf":
                curve = curves.setdefault(curve_label(row, steps), {})
                curve.setdefault(size or n_train, mean_and_spread([e[metric] for e in entries]))
            if row == "majority":
                baselines["majority class"] = statistics.mean(e[metric] for e in entries)
        points = {label: [(size, *curve[size]) for size in sorted(curve)] for label, curve in sorted(curves.items())
                  if len(curve) >= 2}
        if points:
            plot_sample_efficiency(points, HERE / path, baselines=baselines,
                                   title=f"{task}: test {name} against labels ({model})", ylabel=name)


def run_settings(args: argparse.Namespace) -> str:
    """The finetuning settings a result was measured with (part of its key in the results JSON)."""
    settings = f"e{args.epochs}-lr{args.lr}-{args.pooling}-p{args.pretrain_steps}"
    return settings + ("-balanced" if args.balanced else "") + ("" if args.select == "accuracy" else f"-{args.select}")


def main() -> None:
    parser = argparse.ArgumentParser(description="The finetuning experiment (see the module docstring).")
    parser.add_argument("--tasks", default="shakespeare-verse")
    parser.add_argument("--models", default="transformer-clm", help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--rows", default="majority,tfidf,scratch,head,freeze1,freeze2,freeze3,full,gradual,"
                        "discriminative")
    parser.add_argument("--sizes", default="200", help="labelled examples per row, comma-separated; 'all' = all")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--pretrain-steps", type=int, default=1500)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--pooling", default="mean")
    parser.add_argument("--val-examples", type=int, default=500, help="validation examples scored per epoch")
    parser.add_argument("--curve-rows", default="freeze3,scratch")
    parser.add_argument("--balanced", action="store_true", help="class-balanced finetuning batches")
    parser.add_argument("--select", default="accuracy", help="validation metric picking best.pt")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--work", default="runs/finetune_experiment", help="folder for the runs (git-ignored)")
    parser.add_argument("--results", default=str(HERE / "finetune_results.json"))
    args = parser.parse_args()

    results_path, work = Path(args.results), Path(args.work)
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    sizes = [0 if size == "all" else int(size) for size in args.sizes.split(",")]
    for task in args.tasks.split(","):
        for model in args.models.split(","):
            for size in sizes:
                for row in args.rows.split(","):
                    for seed in [int(seed) for seed in args.seeds.split(",")]:
                        settings = run_settings(args)
                        key = f"{task}/{model}/{row}/{size}/{seed}/{settings}"
                        if key in results:
                            continue
                        entry = run_row(key, task, model, row, size, seed, args, work)
                        results[key] = {"task": task, "model": model, "row": row, "size": size, "seed": seed,
                                        "settings": settings, **entry}
                        # another process may have added results meanwhile (two runs on two cores): merge
                        on_disk = json.loads(results_path.read_text()) if results_path.exists() else {}
                        results = {**on_disk, **results}
                        write_json(results_path, results)
                        print(f"{key}: test accuracy {entry['test_accuracy']:.3f}, macro-F1 "
                              f"{entry['test_macro_f1']:.3f} ({entry['wall_seconds']:.0f} s)", flush=True)
    current = {}  # this run's settings, and the variants in pretraining steps or learning rate
    for key, entry in results.items():
        if (varied := variant(entry["settings"], args)) is not None:
            current[key] = {**entry, "variant": "" if entry["row"] in ("tfidf", "majority") else varied}
    markdown = markdown_table(current, args)
    write_section("finetune", markdown)
    plot_curve(current, args)
    print(markdown)


if __name__ == "__main__":
    main()
