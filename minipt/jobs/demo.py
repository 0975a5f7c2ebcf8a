"""``minipt demo``: the whole course in one command — what pretraining and frozen layers buy with few labels, on the
built-in task or on anyone's labelled file.

1. **Pretrain** the course's two language models with next-token prediction (:func:`minipt.jobs.pretrain.pretrain`):
   a Transformer and a GRU, both on a 2000-token BPE vocabulary. The text: Shakespeare's plays (the test plays
   held out) for the built-in task; for a labelled file ``--task FILE``, the ``--corpus FILE`` given, or else the
   texts of the file's training and validation splits (labels unused; never the test texts).
2. **Finetune** each on the task with only ``--labels`` labelled training examples, the embedding and the lower
   layer frozen (:func:`minipt.jobs.finetune.finetune`). The frozen part never changes, so its output is computed
   once per example (:mod:`minipt.training.frozen_cache`) and only the top layer and the head train.
3. **Controls**, on the same labels: the same Transformer architecture trained from scratch, a TF-IDF + logistic
   regression baseline (:mod:`minipt.jobs.baselines`) and the majority class.
4. **Every choice on validation.** Each neural row tries the learning rates of :data:`LR_GRID` and keeps, by
   validation macro-F1, the best epoch (early stopping, up to :data:`EPOCHS` epochs) and the best rate; the
   baseline picks its regularisation the same way. Only the chosen run of each row is scored on test, once.
5. **Report**: test accuracy, macro-F1, what each row chose, trainable parameters and wall time per row, and the
   time of each phase, printed and saved as ``report.md`` and ``report.png`` in the demo folder. With ``--seeds N``
   every seed runs in its own folder ``seed<S>/`` and the top report gives mean ± std per row and the paired
   differences of each pretrained row against scratch and against the baseline, with 95% t-intervals
   (:mod:`minipt.stats`).

The runs are ordinary run folders (``pretrain-transformer/``, ``pretrain-gru/``, ``frozen-transformer/lr*/``,
``frozen-gru/lr*/``, ``scratch/lr*/``) that ``minipt evaluate`` and ``minipt generate`` can read. The pretraining
recipe (tokenizer, sizes, batch, learning rate) is the one measured best per CPU-second in
``benchmarks/pretrain_recipe.py``; ``tiny=True`` shrinks everything so that a test runs the whole demo in seconds.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from minipt.data import CORPORA, TASKS, LabelledData
from minipt.errors import MiniptError
from minipt.jobs.baselines import tfidf_baseline
from minipt.jobs.finetune import (
    FinetuneConfig,
    evaluate_run,
    finetune,
    load_labelled_task,
    majority_baseline,
    select_train_examples,
    write_test_report,
)
from minipt.jobs.job import DEMO
from minipt.jobs.pretrain import PretrainConfig, pretrain
from minipt.plots import plot_demo_report, read_metrics
from minipt.runs import fingerprints
from minipt.runs.folder import lock_run, new_run_dir, read_config, read_json, remove_run, write_atomic, write_json
from minipt.runs.settings import (
    POSITIVE,
    POSITIVE_INT,
    absolute_path,
    check_settings,
    compile_setting,
    device_setting,
    seed_setting,
    setting,
    settings_from_saved,
    threads_setting,
)
from minipt.stats import mean_std, paired_interval
from minipt.training.checkpoint import load_checkpoint
from minipt.training.loop import use_threads

__all__ = ["DemoConfig", "DemoPlan", "demo_plan", "run_demo", "choose_setting", "format_report",
           "format_seeds_report"]

TASK = "shakespeare-verse"
VALIDATION = 400  # validation examples scored after each finetuning epoch (a stratified sample; all if fewer)
LR_GRID = (3e-4, 1e-3, 3e-3)  # the learning rates every neural row tries, each keeping its best epoch
EPOCHS = 20  # at most; a row stops after PATIENCE epochs without a better validation macro-F1
PATIENCE = 4
# The pretraining recipe (benchmarks/pretrain_recipe.py): BPE 2000, 16 x 128 tokens per step, peak lr 3e-3, no dropout.
RECIPE = dict(tokenizer="bpe", bpe_vocab_size=2000, batch_size=16, block_size=128, lr=3e-3, dropout=0.0, d_model=128)
TRANSFORMER = dict(model="transformer", n_layers=2, n_heads=4, d_ff=512)
GRU = dict(model="gru", n_layers=2, hidden_size=256, lr=1e-2)  # the GRU leaves its initial plateau faster at 1e-2
# Seconds per pretraining step of each model with 2 threads on a quiet 2-core CPU (the median of four 60-step
# runs of benchmarks/budget.py's seconds_per_step, 2026-11-30, with the fast cross-entropy), the time the other
# phases take together (three learning rates per neural row; estimated from the phases' share of a run on a busy
# machine), and the Transformer's share of the pretraining time.
SECONDS_PER_STEP = {"transformer": 0.093, "gru": 0.144}
FINETUNING_SECONDS = 150.0
TRANSFORMER_SHARE = 0.65
ROWS = ("frozen-transformer", "frozen-gru", "scratch", "tfidf", "majority")  # the report's rows, in order
PRETRAINED_ROWS = ("frozen-transformer", "frozen-gru")
# What this project measured about when pretraining pays (benchmarks/RESULTS.md: demo_seeds_builtin,
# demo_seeds_tweets, demo_seeds_amazon and when_pretraining_pays; 200 labels): every report ends with it.
WHEN_IT_PAYS = (
    "Measured in this project (benchmarks/RESULTS.md, `demo_seeds_*` and `when_pretraining_pays`; 3 seeds, 200 "
    "labels): pretrained on 1.5M tokens of in-domain text (the plays), these small models beat TF-IDF by 11 to 12 "
    "points; on 80k to 100k tokens (two outside sentiment sets of 3,600 and 4,200 sentences) they lost to it by 5 "
    "to 7 points, and no pretraining text tried there (10%, 30% or all of the task's text, the plays, the plays "
    "and then the task's text) closed the gap (4 to 11 points behind). The gap was smallest with 50 labels (1 to 4 "
    "points) and widest with 1,000 (8 to 14). With much less unlabelled text like your task's than a million "
    "tokens, prefer the TF-IDF row, or finetune a downloaded checkpoint (`minipt finetune --from hf-gpt2:DIR`)."
)


@dataclass
class DemoConfig:
    """The settings of ``minipt demo``."""

    out: str = setting("demo", "new (or empty) folder for the runs and the report", metavar="DIR")
    task: str = setting(TASK, "the labelled task: shakespeare-verse, shakespeare-genre, or a labelled CSV/TSV/JSONL "
                        "file (its split column, or 80/10/10 stratified by label)", metavar="TASK")
    corpus: str = setting("", "the text to pretrain on (default: the plays for a built-in task; for a labelled "
                          "file, the texts of its train and validation splits, never test)", metavar="FILE")
    text_column: str = setting("text", "the column of a labelled file that holds the text", metavar="NAME")
    label_column: str = setting("label", "the column of a labelled file that holds the label", metavar="NAME")
    labels: int = setting(200, "labelled training examples every row learns from (a stratified seeded sample)",
                          rule=POSITIVE_INT)
    minutes: float = setting(6.0, "time budget of one seed on a quiet 2-core CPU; the two pretraining runs get what "
                             "the finetuning leaves", rule=POSITIVE)
    seed: int = seed_setting(0, "random seed of every run (the first seed with --seeds)")
    seeds: int = setting(1, "run the whole comparison for this many seeds (--seed, --seed + 1, ...) and report mean "
                         "± std per row and paired t-intervals of the differences", rule=POSITIVE_INT)
    device: str = device_setting()
    threads: int = threads_setting()
    compile: bool = compile_setting()
    tiny: bool = setting(False, "a seconds-long run with tiny models, to check the pipeline end to end")

    def check(self) -> None:
        """Raise :class:`~minipt.errors.MiniptError` naming the first invalid setting (as its ``--flag``)."""
        check_settings(self)
        if self.task in TASKS and (self.text_column, self.label_column) != ("text", "label"):
            raise MiniptError(f"--text-column and --label-column name the columns of a labelled file; --task "
                              f"{self.task} is built in")


@dataclass
class DemoPlan:
    """What the demo trains for one seed: two pretraining runs, then their frozen finetuning and the from-scratch
    control (each over the learning rates of ``lrs``)."""

    transformer: PretrainConfig
    gru: PretrainConfig
    frozen: FinetuneConfig  # from_run and lr are filled in per row and candidate by demo_runs
    labels: int
    lrs: tuple[float, ...]


def pretraining_steps(config: DemoConfig) -> dict[str, int]:
    r"""Steps of each pretraining run so that the demo fits ``config.minutes``:
    :math:`s_m = \text{share}_m (60\,\text{minutes} - \text{finetuning}) / \text{seconds per step}_m`."""
    seconds = max(60.0, 60.0 * config.minutes - FINETUNING_SECONDS)
    shares = {"transformer": TRANSFORMER_SHARE, "gru": 1.0 - TRANSFORMER_SHARE}
    return {name: max(100, int(shares[name] * seconds / SECONDS_PER_STEP[name])) for name in shares}


def demo_plan(config: DemoConfig, seed: int, corpus: str) -> DemoPlan:
    """The runs of one seed, pretraining on ``corpus``. ``tiny``: 1-layer, 16-wide models, 10 pretraining steps,
    two learning rates, 2 epochs, 20 labels and 40 validation examples — only for checking the pipeline."""
    common = dict(device=config.device, threads=config.threads, seed=seed, compile=config.compile)
    columns = dict(text_column=config.text_column, label_column=config.label_column)
    frozen = FinetuneConfig(from_run="", task=config.task, freeze="1", epochs=EPOCHS, patience=PATIENCE,
                            batch_size=32, pooling="mean", train_examples=config.labels, val_examples=VALIDATION,
                            balanced=True, select="macro_f1", **columns, **common)
    if config.tiny:
        tiny = dict(tokenizer="char", d_model=16, n_layers=1, n_heads=2, d_ff=32, hidden_size=16, steps=10,
                    batch_size=8, block_size=32, warmup=2, eval_every=5, eval_batches=2, corpus=corpus, **common)
        return DemoPlan(PretrainConfig(model="transformer", **tiny), PretrainConfig(model="gru", **tiny),
                        replace(frozen, epochs=2, patience=0, batch_size=8, train_examples=20, val_examples=40),
                        labels=20, lrs=(1e-3, 3e-3))
    steps = pretraining_steps(config)
    runs = {name: PretrainConfig(**{**RECIPE, **architecture}, steps=steps[name], warmup=min(100, steps[name] // 10),
                                 eval_every=max(1, steps[name] // 6), eval_batches=10, corpus=corpus, **common)
            for name, architecture in (("transformer", TRANSFORMER), ("gru", GRU))}
    return DemoPlan(runs["transformer"], runs["gru"], frozen, labels=config.labels, lrs=LR_GRID)


# ----------------------------------------------------------------------------------------------------------
# The task and the pretraining text, checked before anything trains
# ----------------------------------------------------------------------------------------------------------


def load_demo_task(config: DemoConfig) -> LabelledData:
    """The labelled task, with the demo's own checks: at least 2 validation examples of each class (macro-F1 on
    validation picks every setting), and ``--labels`` that fit the training split and give every class one."""
    task = load_labelled_task(config.task, config.text_column, config.label_column)
    for label, count in task.counts()["validation"].items():
        if count < 2:
            raise MiniptError(f"{config.task}: the validation split has {count} example(s) of class {label!r}; the "
                              "demo chooses every setting on validation and needs at least 2 of each class")
    labels = 20 if config.tiny else config.labels
    if labels > len(task.train):
        raise MiniptError(f"--labels {labels} is larger than the training split of {config.task} "
                          f"({len(task.train)} examples)")
    chosen = {label for _, label in select_train_examples(task.train, labels, config.seed)}
    missing = [label for label in task.labels if label not in chosen]
    if missing:
        raise MiniptError(f"--labels {labels}: the stratified sample has no example of class "
                          f"{', '.join(map(repr, missing))}; use more labels")
    return task


def pretraining_corpus(config: DemoConfig, task: LabelledData, out: Path) -> tuple[str, str]:
    """The corpus to pretrain on and the sentence saying what it is: ``--corpus``; the plays (test plays held out)
    for a built-in task; or ``out/corpus.txt``, the texts of the file's train and validation splits, one a line."""
    if config.corpus:
        return config.corpus, f"`{config.corpus}` (--corpus)"
    if config.task in TASKS:
        return "shakespeare", "Shakespeare's plays as printed, the test plays held out"
    path = out / "corpus.txt"
    if not path.exists():  # a resumed demo keeps the one its runs were pretrained on
        write_atomic(path, "\n".join(text for text, _ in task.train + task.validation) + "\n")
    return str(path), (f"`corpus.txt`: the texts of the task's training and validation splits ({len(task.train)} + "
                       f"{len(task.validation)} texts, labels unused; no test text)")


def split_rule(config: DemoConfig, task: LabelledData) -> str:
    """How the task was split, for the report."""
    sizes = f"{len(task.train)} / {len(task.validation)} / {len(task.test)} train / validation / test examples"
    if config.task in TASKS:
        return f"the built-in split ({sizes}; the test plays are never seen in pretraining or finetuning)"
    with open(config.task, encoding="utf-8-sig") as file:
        header = file.readline().strip()
    columns = json.loads(header) if Path(config.task).suffix.lower() == ".jsonl" else re.split("[,\t]", header)
    if "split" in columns:
        return f"the file's `split` column ({sizes})"
    return f"80/10/10 stratified by label, seeded ({sizes})"


# ----------------------------------------------------------------------------------------------------------
# One seed
# ----------------------------------------------------------------------------------------------------------


class Phases:
    """Wall time of each phase, measured as it runs, printed as ``[i/n] what`` and kept in ``path``
    (``phases.json``): a resumed demo keeps the times of the phases an earlier process finished."""

    def __init__(self, count: int, path: Path) -> None:
        self.count, self.path = count, path
        self.seconds = dict(read_json(path)) if path.exists() else {}
        self.started = 0

    def run(self, name: str, work: Callable[[], object]) -> object:
        self.started += 1
        finished = name in self.seconds  # by an earlier process: its work only reads the results back
        print(f"[{self.started}/{self.count}] {name} ...{' (finished earlier)' if finished else ''}", flush=True)
        start = time.perf_counter()
        result = work()
        if not finished:
            self.seconds[name] = time.perf_counter() - start
            write_atomic(self.path, json.dumps(list(self.seconds.items()), indent=1) + "\n")
        return result


def choose_setting(validation_scores: dict) -> object:
    """The selection rule of every row: the key with the best validation score (the first of ties). It is given
    validation scores only — never a test number."""
    return max(validation_scores, key=lambda key: (validation_scores[key], -list(validation_scores).index(key)))


def remove_unfinished(run_dir: Path) -> None:
    """Remove a run folder that holds no ``last.pt`` (a killed process's): there is nothing in it to continue."""
    if run_dir.exists() and not (run_dir / "last.pt").exists():
        remove_run(run_dir, keep_folder=False)


def pretrain_or_continue(config: PretrainConfig, run_dir: Path, progress: bool) -> None:
    """Pretrain into ``run_dir``; a run that an interrupted demo left continues from its ``last.pt`` (bit-identical
    to a run never stopped), and a finished one is kept."""
    last = run_dir / "last.pt"
    if last.exists():
        if load_checkpoint(last, mmap=True)["loop"]["step"] < config.steps:
            pretrain(config, run_dir, resume=True, progress=progress)
        return
    remove_unfinished(run_dir)
    pretrain(config, run_dir, progress=progress)


def finetune_candidate(config: FinetuneConfig, run_dir: Path, progress: bool) -> dict:
    """One candidate setting of a row, finetuned into ``run_dir`` with the test split unread; its summary. A
    finished candidate's summary is read back; an interrupted one continues from its ``last.pt``."""
    summary = run_dir / "summary.json"
    if summary.exists() and "best_val_macro_f1" in (saved := read_json(summary)):
        return saved
    resume = (run_dir / "last.pt").exists()
    if not resume:
        remove_unfinished(run_dir)
    return finetune(config, run_dir, progress=progress, verbose=False, resume=resume, score_test=False)


def tuned_finetune(config: FinetuneConfig, lrs: tuple[float, ...], folder: Path, progress: bool) -> dict:
    """Finetune ``config`` once per learning rate into ``folder/lr<lr>/`` (the best epoch of each kept by
    validation macro-F1, the test split unread), choose the rate by validation macro-F1 (:func:`choose_setting`),
    and score the chosen run's ``best.pt`` on test once (its ``summary.json`` then holds the test numbers too)."""
    candidates = {lr: finetune_candidate(replace(config, lr=lr), folder / f"lr{lr:g}", progress) for lr in lrs}
    lr = choose_setting({lr: summary["best_val_macro_f1"] for lr, summary in candidates.items()})
    chosen, run_dir = candidates[lr], folder / f"lr{lr:g}"
    test = evaluate_run(run_dir, device=config.device)
    write_test_report(run_dir, test, chosen["labels"], title=f"{chosen['task']} test split ({config.task})")
    steps_per_epoch = -(-chosen["train_examples"] // config.batch_size)
    summary = {**chosen, "test_accuracy": test["accuracy"], "test_macro_f1": test["macro_f1"],
               "test_examples": test["examples"], "lr": lr, "epoch": chosen["best_step"] // steps_per_epoch,
               "epochs_run": chosen["steps"] // steps_per_epoch,
               "val_macro_f1_per_lr": {f"{rate:g}": s["best_val_macro_f1"] for rate, s in candidates.items()}}
    write_json(run_dir / "summary.json", summary)
    return summary


def baseline_rows(config: FinetuneConfig, task: LabelledData) -> dict:
    """The TF-IDF baseline and the majority class, on the finetuning runs' own labelled and validation examples."""
    train = select_train_examples(task.train, config.train_examples, config.seed)
    validation = select_train_examples(task.validation, config.val_examples, config.seed)
    return {"tfidf": tfidf_baseline(train, validation, task.test, task.labels, seed=config.seed),
            "majority": majority_baseline(task, train=train)}


def run_seed(config: DemoConfig, task: LabelledData, corpus: str, out: Path, seed: int, progress: bool) -> dict:
    """Pretrain, finetune and train the controls for one seed in ``out``; write its ``report.md`` and
    ``report.png``. Returns ``{"seed", "rows", "phases", "plan", "corpus_tokens", "curves"}``. What an interrupted
    demo left in ``out`` is kept: finished phases are read back, the interrupted run continues."""
    out.mkdir(parents=True, exist_ok=True)
    plan, phases = demo_plan(config, seed, corpus), Phases(6, out / "phases.json")
    for name, pretraining in (("Transformer", plan.transformer), ("GRU", plan.gru)):
        phases.run(f"pretrain the {name} ({pretraining.steps} steps)",
                   lambda p=pretraining: pretrain_or_continue(p, out / f"pretrain-{p.model}", progress))
    frozen = {name: replace(plan.frozen, from_run=str(out / f"pretrain-{name}")) for name in ("transformer", "gru")}
    finetuned = {}
    for name, label in (("transformer", "Transformer"), ("gru", "GRU")):
        finetuned[f"frozen-{name}"] = phases.run(
            f"finetune the pretrained {label}, embedding + lower layer frozen ({plan.labels} labels, "
            f"{len(plan.lrs)} learning rates)",
            lambda n=name: tuned_finetune(frozen[n], plan.lrs, out / f"frozen-{n}", progress))
    finetuned["scratch"] = phases.run(
        "train the same Transformer from scratch (same labels, same learning rates)",
        lambda: tuned_finetune(replace(frozen["transformer"], from_scratch=True, freeze="none"), plan.lrs,
                               out / "scratch", progress))
    baselines = phases.run("TF-IDF + logistic regression, and the majority class",
                           lambda: baseline_rows(plan.frozen, task))
    data = read_config(out / "pretrain-transformer")["data"]
    result = {"seed": seed, "rows": report_rows(finetuned, baselines, plan), "phases": phases.seconds,
              "corpus_tokens": data["train_tokens"] + data["val_tokens"],
              "steps": {"transformer": plan.transformer.steps, "gru": plan.gru.steps},
              "curves": {label: read_metrics(out / f"pretrain-{name}" / "metrics.jsonl")
                         for label, name in (("Transformer", "transformer"), ("GRU", "gru"))}}
    return result


def report_rows(finetuned: dict[str, dict], baselines: dict, plan: DemoPlan) -> list[dict]:
    """The table's rows in :data:`ROWS` order: each a dict of ``key``, ``name``, test accuracy and macro-F1,
    validation macro-F1, what it ``chose``, trainable parameters and wall seconds."""
    keys = ("test_accuracy", "test_macro_f1", "trainable_params", "wall_seconds")
    frozen_what = f"embedding + lower {plan.frozen.freeze} of {{layers}} layers frozen"

    def neural(key: str, name: str) -> dict:
        run = finetuned[key]
        chose = f"lr {run['lr']:g}, epoch {run['epoch']} of {run['epochs_run']}"
        return {"key": key, "name": name, **{k: run[k] for k in keys}, "val_macro_f1": run["best_val_macro_f1"],
                "chose": chose}

    tfidf, majority = baselines["tfidf"], baselines["majority"]
    return [
        neural("frozen-transformer",
               "Transformer, pretrained, " + frozen_what.format(layers=plan.transformer.n_layers)),
        neural("frozen-gru", "GRU LM, pretrained, " + frozen_what.format(layers=plan.gru.n_layers)),
        neural("scratch", "Transformer from scratch (same architecture)"),
        {"key": "tfidf", "name": "TF-IDF word + char n-grams, logistic regression",
         **{k: tfidf[k] for k in keys}, "val_macro_f1": tfidf["best_val_macro_f1"], "chose": f"C {tfidf['c']:g}"},
        {"key": "majority", "name": f"majority class ({majority['label']})", "test_accuracy": majority["accuracy"],
         "test_macro_f1": majority["macro_f1"], "trainable_params": 0, "wall_seconds": 0.0, "val_macro_f1": None,
         "chose": "-"},
    ]


# ----------------------------------------------------------------------------------------------------------
# The demo: one or more seeds, and the reports
# ----------------------------------------------------------------------------------------------------------


DEMO_FILE = "demo.json"  # the demo's settings and its task file's fingerprint, for --resume


def run_demo(config: DemoConfig, progress: bool = True, resume: bool = False) -> dict:
    """Check the task, then run every seed and write ``out/report.md`` and ``out/report.png``. Returns
    ``{"seeds": [per-seed results], "rows": [...], "report": text, "context": {task, split, corpus}}`` (``rows``:
    the one seed's, or the means). ``resume=True`` continues the interrupted demo in ``config.out`` with its saved
    settings (``config`` then only says how to compute: device, threads, compile): finished runs are kept, the
    interrupted one continues from its ``last.pt``, and the report is the one an uninterrupted demo writes."""
    if resume:
        out = Path(config.out)
        if not out.is_dir():
            raise MiniptError(f"--resume {out}: no such demo folder")
        with lock_run(out):  # one process per demo
            config = resumed_demo_config(config, out)
            return demo_runs(config, load_demo_task(config), out, progress)
    config.check()
    config = replace(config, task=absolute_path(config.task, TASKS), corpus=absolute_path(config.corpus, CORPORA))
    task = load_demo_task(config)
    hint = f", or continue that demo with --resume {config.out}"
    with new_run_dir(config.out, hint=hint) as out:  # removed again if stopped before any run saved a last.pt
        write_json(out / DEMO_FILE, {"demo": asdict(config), "task_file": fingerprints.fingerprint(config.task)})
        return demo_runs(config, task, out, progress)


def resumed_demo_config(config: DemoConfig, out: Path) -> DemoConfig:
    """The saved settings of the unfinished demo in ``out``, with ``config``'s device, threads and compile."""
    path = out / DEMO_FILE
    if not path.is_file():
        raise MiniptError(f"--resume {out}: not a demo folder (it has no {DEMO_FILE}); start a demo with --out")
    if (out / "report.md").exists():
        raise MiniptError(f"--resume {out}: the demo is finished (report.md); start a new one with --out")
    saved = read_json(path)
    settings = settings_from_saved(DemoConfig, saved, "demo", path)
    fingerprints.check_unchanged(saved.get("task_file"), settings.task, f"--resume {out}")
    settings = replace(DEMO.resumed(settings, config), out=str(out))
    settings.check()
    return settings


def demo_runs(config: DemoConfig, task: LabelledData, out: Path, progress: bool) -> dict:
    """The body of :func:`run_demo`: each seed's runs (in ``out``, or ``out/seed<S>`` with several seeds)."""
    use_threads(config.threads)
    corpus, corpus_text = pretraining_corpus(config, task, out)
    context = {"task": config.task, "split": split_rule(config, task), "corpus": corpus_text}
    results = []
    for seed in range(config.seed, config.seed + config.seeds):
        folder = out if config.seeds == 1 else out / f"seed{seed}"
        results.append(seed_result(config, task, corpus, folder, seed, context, progress))
    total_seconds = sum(sum(result["phases"].values()) for result in results)
    if config.seeds == 1:
        report = format_report(results[0], demo_plan(config, config.seed, corpus), context, total_seconds)
        rows = results[0]["rows"]
        plot_demo_report(rows, results[0]["curves"], out / "report.png")
    else:
        report, rows = format_seeds_report(results, demo_plan(config, config.seed, corpus), context, total_seconds)
        plot_demo_report(rows, results[0]["curves"], out / "report.png")
    write_atomic(out / "report.md", report)  # last: a demo with its report.md is finished
    print(report, flush=True)
    return {"seeds": results, "rows": rows, "report": report, "context": context}


def seed_result(config: DemoConfig, task: LabelledData, corpus: str, folder: Path, seed: int, context: dict,
                progress: bool) -> dict:
    """One seed's result: read back from ``folder/result.json`` when an earlier process finished the seed; else
    its runs (:func:`run_seed`), saved there with the seed's own ``report.md`` and ``report.png``."""
    path = folder / "result.json"
    if path.exists():
        return read_json(path)
    try:
        result = run_seed(config, task, corpus, folder, seed, progress)
    except MiniptError as error:
        if corpus.endswith("corpus.txt") and "fewer than one block" in str(error):
            raise MiniptError(f"--task {config.task}: the texts of its train and validation splits are too "
                              f"little to pretrain on ({error}); give a larger --corpus FILE") from None
        raise
    write_atomic(path, json.dumps(result, indent=1) + "\n")
    if config.seeds > 1:  # the seed's own report (one seed: the demo's report, written last)
        report = format_report(result, demo_plan(config, seed, corpus), context, sum(result["phases"].values()))
        write_atomic(folder / "report.md", report)
        plot_demo_report(result["rows"], result["curves"], folder / "report.png")
    return result


def setting_lines(plan: DemoPlan, context: dict, corpus_tokens: int) -> list[str]:
    """What was run, for the report: the task and its split, the corpus and its size, and every setting."""
    transformer, gru, frozen = plan.transformer, plan.gru, plan.frozen
    tokenizer = f"BPE {transformer.bpe_vocab_size}" if transformer.tokenizer == "bpe" else "character"
    return [
        f"Task: `{context['task']}`, split: {context['split']}; {plan.labels} labelled training examples (a "
        f"stratified sample per seed), validation: up to {frozen.val_examples} examples (stratified). Macro-F1 is the "
        "score to read: every class counts alike, however rare.",
        "",
        f"Pretraining text: {context['corpus']}; {corpus_tokens:,} tokens of its own {tokenizer} tokenizer (90% "
        "trained on, 10% validation). Next-token prediction, "
        f"{transformer.batch_size} x {transformer.block_size} tokens per step: the Transformer "
        f"({transformer.n_layers} layers, width {transformer.d_model}) {transformer.steps} steps at peak lr "
        f"{transformer.lr:g}, the GRU ({gru.n_layers} layers, hidden {gru.hidden_size}) {gru.steps} steps at "
        f"{gru.lr:g} (curves in `report.png` and `pretrain-*/loss.png`).",
        "",
        f"Every choice on validation macro-F1, test scored once per row: each neural row tries peak lr "
        f"{', '.join(f'{lr:g}' for lr in plan.lrs)}, class-balanced batches of {frozen.batch_size}, pooling "
        f"{frozen.pooling}, up to {frozen.epochs} epochs with early stopping (patience {frozen.patience}), and keeps "
        "its best epoch and rate; the frozen layers' output is computed once per example. From scratch: every "
        "parameter trained from a random start. TF-IDF: word 1-2-grams + character 2-5-grams, sublinear tf, l2, "
        "class-balanced logistic regression, C chosen from 0.1 ... 100.",
    ]


def format_report(result: dict, plan: DemoPlan, context: dict, total_seconds: float) -> str:
    """One seed's side-by-side table, what each row chose, and the phase times, as Markdown."""
    lines = [
        "# minipt demo: what pretraining and frozen layers buy with few labels",
        "",
        f"Seed {result['seed']}.",
        "",
        "| model | test accuracy | test macro-F1 | validation macro-F1 | chose (on validation) | trainable params "
        "| wall time (s) |",
        "| --- | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for row in result["rows"]:
        validation = "-" if row["val_macro_f1"] is None else f"{row['val_macro_f1']:.3f}"
        lines.append(f"| {row['name']} | {row['test_accuracy']:.3f} | {row['test_macro_f1']:.3f} | {validation} | "
                     f"{row['chose']} | {row['trainable_params']:,} | {row['wall_seconds']:.1f} |")
    lines += ["", *verdict_lines([result]), "", *setting_lines(plan, context, result["corpus_tokens"]), ""]
    lines += ["| phase | wall time (s) |", "| --- | ---: |"]
    lines += [f"| {name} | {seconds:.1f} |" for name, seconds in result["phases"].items()]
    lines += [f"| total | {total_seconds:.1f} |", "",
              "Confusion matrices and per-class tables: the chosen run of `frozen-*/`, `scratch/` "
              "(`lr*/classification_report.txt`)."]
    return "\n".join(lines) + "\n"


def seeds_summary(results: list[dict]) -> list[dict]:
    """One row per demo row: mean and sample std over the seeds of test accuracy, test macro-F1 and wall time."""
    summary = []
    for index, first in enumerate(results[0]["rows"]):
        per_seed = [result["rows"][index] for result in results]
        row = {"key": first["key"], "name": first["name"].split(" (")[0] if first["key"] == "majority"
               else first["name"], "seeds": len(per_seed), "trainable_params": first["trainable_params"],
               "chose": [r["chose"] for r in per_seed]}
        for key in ("test_accuracy", "test_macro_f1", "wall_seconds"):
            row[key], row[f"{key}_std"] = mean_std([r[key] for r in per_seed])
        row["per_seed"] = [r["test_macro_f1"] for r in per_seed]
        summary.append(row)
    return summary


def paired_differences(results: list[dict]) -> list[dict]:
    """Each pretrained row against scratch and against TF-IDF: test macro-F1 differences paired by seed."""
    scores = {key: [next(r["test_macro_f1"] for r in result["rows"] if r["key"] == key) for result in results]
              for key in ROWS}
    names = {row["key"]: row["name"] for row in results[0]["rows"]}
    return [{"row": names[a], "against": names[b], **paired_interval(scores[a], scores[b])}
            for a in PRETRAINED_ROWS for b in ("scratch", "tfidf")]


def best_pretrained_row(results: list[dict]) -> str:
    """The key of the pretrained row with the best mean validation macro-F1 over the seeds: the row the verdict
    reads, chosen on validation like every setting (never by a test number)."""
    def validation(key: str) -> float:
        return sum(row_of(result, key)["val_macro_f1"] for result in results) / len(results)
    return max(PRETRAINED_ROWS, key=validation)


def row_of(result: dict, key: str) -> dict:
    return next(row for row in result["rows"] if row["key"] == key)


def verdict_lines(results: list[dict]) -> list[str]:
    """Whether pretraining paid on this task, in words: the best pretrained row (chosen on validation) against
    scratch and against TF-IDF, test macro-F1 paired by seed, and when this project measured it to pay."""
    best = best_pretrained_row(results)
    lines = [f"**Did pretraining pay here?** The pretrained row with the best validation macro-F1 is the "
             f"{row_of(results[0], best)['name'].split(',')[0]} (test macro-F1, paired by seed):", ""]
    for against, label in (("scratch", "the same Transformer trained from scratch"), ("tfidf", "TF-IDF")):
        difference = paired_interval(*([row_of(result, key)["test_macro_f1"] for result in results]
                                       for key in (best, against)))
        points = f"{100 * difference['mean']:+.1f} points"
        if difference["low"] is None:
            verdict = "one seed, so no interval (`--seeds 3` gives one)"
        else:
            interval = f"95% interval [{100 * difference['low']:+.1f}, {100 * difference['high']:+.1f}]"
            verdict = interval + (": not distinguishable from zero" if not difference["distinguishable"] else
                                  ": pretraining paid" if difference["mean"] > 0 else ": pretraining lost")
        lines.append(f"- against {label}: {points}, {verdict};")
    tokens = results[0]["corpus_tokens"]
    lines += ["", f"Its pretraining text was {tokens:,} tokens. {WHEN_IT_PAYS}"]
    return lines


def format_seeds_report(results: list[dict], plan: DemoPlan, context: dict, total_seconds: float
                        ) -> tuple[str, list[dict]]:
    """The report over seeds: mean ± std per row, the per-seed scores, what each row chose per seed, and the
    paired differences with 95% t-intervals. Returns the Markdown and the summary rows."""
    summary, seeds = seeds_summary(results), [result["seed"] for result in results]
    lines = [
        "# minipt demo: what pretraining and frozen layers buy with few labels",
        "",
        f"Seeds {', '.join(map(str, seeds))}: mean ± sample std over the seeds (each seed its own pretraining, "
        "labels and finetuning; its folder `seed<S>/` holds its runs and report).",
        "",
        "| model | test accuracy | test macro-F1 | macro-F1 per seed | chose (on validation), per seed |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for row in summary:
        lines.append(f"| {row['name']} | {row['test_accuracy']:.3f} ± {row['test_accuracy_std']:.3f} | "
                     f"{row['test_macro_f1']:.3f} ± {row['test_macro_f1_std']:.3f} | "
                     f"{' / '.join(f'{v:.3f}' for v in row['per_seed'])} | {'; '.join(row['chose'])} |")
    lines += ["", "Paired differences in test macro-F1 (points; the same seed's runs paired), 95% t-interval over "
              f"{len(seeds)} seeds:", "",
              "| difference | mean | per seed | 95% interval | distinguishable from 0? |",
              "| --- | ---: | ---: | ---: | --- |"]
    for difference in paired_differences(results):
        lines.append(format_difference(difference))
    lines += ["", *verdict_lines(results), "", *setting_lines(plan, context, results[0]["corpus_tokens"]), "",
              f"Wall time, all seeds: {total_seconds:.0f} s."]
    return "\n".join(lines) + "\n", summary


def format_difference(difference: dict) -> str:
    """One line of the paired-differences table."""
    points = [f"{100 * d:+.1f}" for d in difference["differences"]]
    if difference["low"] is None:
        interval, verdict = "- (one seed)", "-"
    else:
        interval = f"[{100 * difference['low']:+.1f}, {100 * difference['high']:+.1f}]"
        verdict = "yes" if difference["distinguishable"] else "no: the interval contains 0"
    return (f"| {difference['row']} − {difference['against']} | {100 * difference['mean']:+.1f} | "
            f"{' / '.join(points)} | {interval} | {verdict} |")
