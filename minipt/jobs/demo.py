"""``minipt demo``: the whole course in one command — what pretraining and frozen layers buy with few labels.

1. **Pretrain** the course's two language models on Shakespeare's plays (the test plays held out) with
   next-token prediction (:func:`minipt.pretrain.pretrain`): a Transformer and a GRU, both on a 2000-token BPE
   vocabulary.
2. **Finetune** each on ``shakespeare-verse`` (is a speech verse or prose?) with only 200 labelled speeches, the
   embedding and the lower layer frozen (:func:`minipt.finetune.finetune`). The frozen part never changes, so its
   output is computed once per speech (:mod:`minipt.training.frozen_cache`) and only the top layer and the head train.
3. **Controls**, on the same 200 speeches: the same Transformer architecture trained from scratch, a bag-of-words
   logistic regression (:mod:`minipt.jobs.baselines`) and the majority class.
4. **Report**: test accuracy, macro-F1, trainable parameters and wall time per row, and the time of each phase,
   printed and saved as ``report.md`` and ``report.png`` in the demo folder.

The runs are ordinary run folders (``pretrain-transformer/``, ``pretrain-gru/``, ``frozen-transformer/``,
``frozen-gru/``, ``scratch/``) that ``minipt evaluate`` and ``minipt generate`` can read. The pretraining
recipe (tokenizer, sizes, batch, learning rate) is the one measured best per CPU-second in
``benchmarks/pretrain_recipe.py``; ``tiny=True`` shrinks everything so that a test runs the whole demo in seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from minipt.data import load_task
from minipt.jobs.baselines import bag_of_words_baseline
from minipt.jobs.finetune import FinetuneConfig, finetune, select_train_examples
from minipt.jobs.pretrain import DEVICES, PretrainConfig, pretrain
from minipt.plots import plot_demo_report, read_metrics
from minipt.runs.folder import new_run_dir
from minipt.runs.settings import COUNT, POSITIVE, check_settings, one_of, setting
from minipt.training.loop import use_threads

__all__ = ["DemoConfig", "DemoPlan", "demo_plan", "run_demo", "format_report"]

TASK = "shakespeare-verse"
LABELS = 200  # labelled training speeches: the few-label regime
VALIDATION = 400  # validation speeches scored after each finetuning epoch
# The pretraining recipe (benchmarks/pretrain_recipe.py): BPE 2000, 16 x 128 tokens per step, peak lr 3e-3, no dropout.
RECIPE = dict(tokenizer="bpe", bpe_vocab_size=2000, batch_size=16, block_size=128, lr=3e-3, dropout=0.0, d_model=128)
TRANSFORMER = dict(model="transformer", n_layers=2, n_heads=4, d_ff=512)
GRU = dict(model="gru", n_layers=2, hidden_size=256, lr=1e-2)  # the GRU leaves its initial plateau faster at 1e-2
# Seconds per pretraining step of each model with 2 threads on a quiet 2-core CPU (the median of four 60-step
# runs of benchmarks/budget.py's seconds_per_step, 2026-11-30, with the fast cross-entropy), the time the other
# phases take together, and the Transformer's share of the pretraining time.
SECONDS_PER_STEP = {"transformer": 0.093, "gru": 0.144}
FINETUNING_SECONDS = 60.0
TRANSFORMER_SHARE = 0.65


@dataclass
class DemoConfig:
    """The settings of ``minipt demo``."""

    out: str = setting("demo", "new (or empty) folder for the runs and the report", metavar="DIR")
    minutes: float = setting(6.0, "time budget of the whole demo on a quiet 2-core CPU; the two pretraining runs "
                             "get what the finetuning leaves", rule=POSITIVE)
    seed: int = setting(0, "random seed of every run (benchmarks/demo_seeds.py runs seeds 0, 1, 2)", rule=COUNT)
    device: str = setting("auto", "auto (CUDA when present), cpu or cuda", rule=one_of(*DEVICES))
    threads: int = setting(0, "CPU threads torch may use (0: every core)", rule=COUNT)
    compile: bool = setting(False, "torch.compile the model's forward (and backward): faster steps after a compilation "
                            "that takes tens of seconds (benchmarks/RESULTS.md, compile)")
    tiny: bool = setting(False, "a seconds-long run with tiny models, to check the pipeline end to end")

    def check(self) -> None:
        """Raise :class:`~minipt.errors.MiniptError` naming the first invalid setting (as its ``--flag``)."""
        check_settings(self)


@dataclass
class DemoPlan:
    """What the demo trains: two pretraining runs, then their frozen finetuning and the from-scratch control."""

    transformer: PretrainConfig
    gru: PretrainConfig
    frozen: FinetuneConfig  # from_run is filled in per backbone by run_demo
    labels: int


def pretraining_steps(config: DemoConfig) -> dict[str, int]:
    r"""Steps of each pretraining run so that the demo fits ``config.minutes``:
    :math:`s_m = \text{share}_m (60\,\text{minutes} - \text{finetuning}) / \text{seconds per step}_m`."""
    seconds = max(60.0, 60.0 * config.minutes - FINETUNING_SECONDS)
    shares = {"transformer": TRANSFORMER_SHARE, "gru": 1.0 - TRANSFORMER_SHARE}
    return {name: max(100, int(shares[name] * seconds / SECONDS_PER_STEP[name])) for name in shares}


def demo_plan(config: DemoConfig) -> DemoPlan:
    """The demo's runs. ``tiny``: 1-layer, 16-wide models, 10 pretraining steps, 20 labels and 40 validation
    speeches — only for checking that the pipeline runs end to end."""
    common = dict(device=config.device, threads=config.threads, seed=config.seed, compile=config.compile)
    frozen = FinetuneConfig(from_run="", task=TASK, freeze="1", epochs=10, lr=1e-3, batch_size=32, pooling="mean",
                            train_examples=LABELS, val_examples=VALIDATION, balanced=True, select="macro_f1", **common)
    if config.tiny:
        tiny = dict(tokenizer="char", d_model=16, n_layers=1, n_heads=2, d_ff=32, hidden_size=16, steps=10,
                    batch_size=8, block_size=32, warmup=2, eval_every=5, eval_batches=2, **common)
        return DemoPlan(PretrainConfig(model="transformer", **tiny), PretrainConfig(model="gru", **tiny),
                        replace(frozen, epochs=2, batch_size=8, train_examples=20, val_examples=40), labels=20)
    steps = pretraining_steps(config)
    runs = {name: PretrainConfig(**{**RECIPE, **architecture}, steps=steps[name], warmup=min(100, steps[name] // 10),
                                 eval_every=max(1, steps[name] // 6), eval_batches=10, **common)
            for name, architecture in (("transformer", TRANSFORMER), ("gru", GRU))}
    return DemoPlan(runs["transformer"], runs["gru"], frozen, labels=LABELS)


class Phases:
    """Wall time of each phase, measured as it runs and printed as ``[i/n] what``."""

    def __init__(self, count: int) -> None:
        self.count, self.seconds = count, {}

    def run(self, name: str, work: Callable[[], dict]) -> dict:
        print(f"[{len(self.seconds) + 1}/{self.count}] {name} ...", flush=True)
        start = time.perf_counter()
        result = work()
        self.seconds[name] = time.perf_counter() - start
        return result


def run_demo(config: DemoConfig, progress: bool = True) -> dict:
    """Pretrain both models, finetune them frozen, train the controls, and write ``out/report.md`` and
    ``out/report.png``. Returns ``{"rows": [...], "phases": {name: seconds}, "report": text}``."""
    config.check()
    with new_run_dir(config.out) as out:  # removed again if stopped before any run saved a last.pt
        return demo_runs(config, out, progress)


def demo_runs(config: DemoConfig, out: Path, progress: bool) -> dict:
    """The body of :func:`run_demo`: the runs, the controls and the report, in ``out``."""
    use_threads(config.threads)
    plan, phases, start = demo_plan(config), Phases(6), time.perf_counter()
    frozen = {"transformer": replace(plan.frozen, from_run=str(out / "pretrain-transformer")),
              "gru": replace(plan.frozen, from_run=str(out / "pretrain-gru"))}
    for name, pretraining in (("Transformer", plan.transformer), ("GRU", plan.gru)):
        phases.run(f"pretrain the {name} ({pretraining.steps} steps)",
                   lambda p=pretraining: pretrain(p, out / f"pretrain-{p.model}", progress=progress))
    finetuned = {name: phases.run(f"finetune the pretrained {label}, embedding + lower layer frozen ({plan.labels} "
                                  "labels)", lambda c=c, n=name: finetune(c, out / f"frozen-{n}", progress=progress))
                 for (name, c), label in zip(frozen.items(), ("Transformer", "GRU"), strict=True)}
    scratch = phases.run("train the same Transformer from scratch (same labels)",
                         lambda: finetune(replace(frozen["transformer"], from_scratch=True, freeze="none"),
                                          out / "scratch", progress=progress))
    bag = phases.run("bag-of-words logistic regression and the majority class", lambda: bag_of_words_row(plan.frozen))
    rows = report_rows(finetuned, scratch, bag, plan)
    report = format_report(rows, phases.seconds, plan, time.perf_counter() - start)
    (out / "report.md").write_text(report, encoding="utf-8")
    curves = {label: read_metrics(out / f"pretrain-{name}" / "metrics.jsonl")
              for label, name in (("Transformer", "transformer"), ("GRU", "gru"))}
    plot_demo_report(rows, curves, out / "report.png")
    print(report, flush=True)
    return {"rows": rows, "phases": phases.seconds, "report": report}


def bag_of_words_row(config: FinetuneConfig) -> dict:
    """The bag-of-words baseline on the finetuning runs' own labelled and validation speeches."""
    task = load_task(config.task)
    train = select_train_examples(task.train, config.train_examples, config.seed)
    validation = select_train_examples(task.validation, config.val_examples, config.seed)
    return bag_of_words_baseline(train, validation, task.test, task.labels, seed=config.seed)


def report_rows(finetuned: dict[str, dict], scratch: dict, bag: dict, plan: DemoPlan) -> list[dict]:
    """The table's rows, best-informed first: each a dict of ``name``, test accuracy and macro-F1, trainable
    parameters and wall seconds."""
    keys = ("test_accuracy", "test_macro_f1", "trainable_params", "wall_seconds")
    frozen_what = f"embedding + lower {plan.frozen.freeze} of {{layers}} layers frozen"
    majority = scratch["majority_baseline"]
    return [
        {"name": "Transformer, pretrained, " + frozen_what.format(layers=plan.transformer.n_layers),
         **{key: finetuned["transformer"][key] for key in keys}},
        {"name": "GRU LM, pretrained, " + frozen_what.format(layers=plan.gru.n_layers),
         **{key: finetuned["gru"][key] for key in keys}},
        {"name": "Transformer from scratch (same architecture)", **{key: scratch[key] for key in keys}},
        {"name": "bag-of-words logistic regression", **{key: bag[key] for key in keys}},
        {"name": f"majority class ({majority['label']})", "test_accuracy": majority["accuracy"],
         "test_macro_f1": majority["macro_f1"], "trainable_params": 0, "wall_seconds": 0.0},
    ]


def format_report(rows: list[dict], phases: dict[str, float], plan: DemoPlan, total_seconds: float) -> str:
    """The side-by-side table and the phase times as Markdown."""
    lines = [
        "# minipt demo: what pretraining and frozen layers buy with few labels",
        "",
        f"Task: `{TASK}` (verse or prose; the test plays were never seen in pretraining or finetuning), "
        f"{plan.labels} labelled training speeches. Macro-F1 is the score to read: 71% of the test speeches are "
        "verse, so accuracy rewards always answering \"verse\".",
        "",
        "| model | test accuracy | test macro-F1 | trainable params | wall time (s) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        lines.append(f"| {row['name']} | {row['test_accuracy']:.3f} | {row['test_macro_f1']:.3f} | "
                     f"{row['trainable_params']:,} | {row['wall_seconds']:.1f} |")
    lines += ["", "| phase | wall time (s) |", "| --- | ---: |"]
    lines += [f"| {name} | {seconds:.1f} |" for name, seconds in phases.items()]
    lines += [
        f"| total | {total_seconds:.1f} |",
        "",
        f"Pretraining: next-token prediction, {plan.transformer.tokenizer.upper()} {plan.transformer.bpe_vocab_size} "
        f"tokens, {plan.transformer.batch_size} x {plan.transformer.block_size} tokens per step: the Transformer "
        f"{plan.transformer.steps} steps at peak lr {plan.transformer.lr:g}, the GRU {plan.gru.steps} steps at "
        f"{plan.gru.lr:g} (curves in `report.png` and `pretrain-*/loss.png`).",
        f"Finetuning: {plan.frozen.epochs} epochs, class-balanced batches, best epoch by validation macro-F1; the "
        "frozen layers' output is computed once per speech. From scratch: every parameter trained from a random "
        "start.",
        "",
        "Confusion matrices and per-class tables: `frozen-*/`, `scratch/`.",
    ]
    return "\n".join(lines) + "\n"
