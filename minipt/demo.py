"""``minipt demo``: the whole story of pretraining in a few minutes on a laptop CPU.

1. **Pretrain** a small character-level Transformer on Shakespeare's plays (the test plays held out) with
   next-token prediction (:func:`minipt.pretrain.pretrain`).
2. **Finetune** it on ``shakespeare-verse`` (is a speech verse or prose?) with only a few hundred labelled
   speeches, its embedding and lower layers frozen (:func:`minipt.finetune.finetune`).
3. **Control**: the same architecture, randomly initialised, trained on the same labelled speeches.
4. **Report**: test accuracy, macro-F1, trainable parameters and wall time side by side, beside the
   majority-class baseline, printed and saved as ``report.md`` (with each run's plots) in the demo folder.

The three runs are ordinary run folders (``pretrain/``, ``finetuned/``, ``scratch/``) that ``minipt evaluate`` and
``minipt generate`` can read. ``tiny=True`` shrinks everything so that a test runs the whole demo in seconds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

from minipt.finetune import FinetuneConfig, finetune
from minipt.pretrain import DEVICES, PretrainConfig, pretrain
from minipt.runs import check_new_run_dir
from minipt.settings import COUNT, POSITIVE, check_settings, one_of, setting
from minipt.train import use_threads

__all__ = ["DemoConfig", "DemoSettings", "demo_settings", "run_demo", "format_report"]

PRETRAIN_SHARE = 0.6  # of the time budget, for pretraining; the finetuning runs are short and fixed
SECONDS_PER_STEP = 0.6  # the demo model's pretraining step on the shared 2-core development CPU


@dataclass
class DemoConfig:
    """The settings of ``minipt demo``."""

    out: str = setting("demo", "new (or empty) folder for the three runs and the report", metavar="DIR")
    minutes: float = setting(5.0, "rough time budget on a 2-core CPU", rule=POSITIVE)
    device: str = setting("auto", "auto (CUDA when present), cpu or cuda", rule=one_of(*DEVICES))
    threads: int = setting(0, "CPU threads torch may use (0: every core)", rule=COUNT)
    tiny: bool = setting(False, "a seconds-long run for the tests", hidden=True)

    def check(self) -> None:
        """Raise :class:`~minipt.errors.MiniptError` naming the first invalid setting (as its ``--flag``)."""
        check_settings(self)


@dataclass
class DemoSettings:
    """What the demo trains: a pretraining config, then the finetuning of it (frozen) and the control."""

    pretrain: PretrainConfig
    finetuned: FinetuneConfig  # from_run is filled in by run_demo
    labels: int  # labelled training speeches (the few-label regime)


def demo_settings(config: DemoConfig) -> DemoSettings:
    """The demo's settings. Pretraining gets ``PRETRAIN_SHARE`` of the time budget at ``SECONDS_PER_STEP``, so
    ``minutes=5`` gives 300 steps; the finetuning runs are short and fixed.

    ``tiny``: a 1-layer, 16-wide model, 10 pretraining steps, 20 labels and 40 validation speeches — only for
    checking that the pipeline runs end to end.
    """
    device, threads = config.device, config.threads
    if config.tiny:
        pretrain_config = PretrainConfig(d_model=16, n_layers=1, n_heads=2, d_ff=32, steps=10, batch_size=8,
                                         block_size=32, warmup=2, eval_every=5, eval_batches=2, device=device,
                                         threads=threads)
        finetuned = FinetuneConfig(from_run="", freeze="all", epochs=2, batch_size=8, train_examples=20,
                                   val_examples=40, balanced=True, select="macro_f1", device=device, threads=threads)
        return DemoSettings(pretrain_config, finetuned, labels=20)
    pretrain_steps = max(100, int(config.minutes * 60 * PRETRAIN_SHARE / SECONDS_PER_STEP))
    pretrain_config = PretrainConfig(d_model=128, n_layers=4, n_heads=4, d_ff=512, steps=pretrain_steps,
                                     batch_size=32, block_size=128, warmup=100, eval_every=max(1, pretrain_steps // 6),
                                     eval_batches=20, device=device, threads=threads)
    # 200 labels in class-balanced batches, best epoch by validation macro-F1 (plain batches and accuracy pick a
    # model that always answers "verse", the 76% majority, for the pretrained and the scratch model alike);
    # 400 validation speeches scored after each epoch keep it quick.
    finetuned = FinetuneConfig(from_run="", freeze="3", epochs=10, lr=1e-3, batch_size=32, train_examples=200,
                               val_examples=400, balanced=True, select="macro_f1", pooling="mean", device=device,
                               threads=threads)
    return DemoSettings(pretrain_config, finetuned, labels=200)


def format_report(rows: list[dict], baseline: dict, settings: DemoSettings, task: str) -> str:
    """The side-by-side table as Markdown."""
    lines = [
        "# minipt demo: does pretraining help with few labels?",
        "",
        f"Task: `{task}` (test plays never seen in pretraining or finetuning), "
        f"{settings.labels} labelled training speeches.",
        "",
        "| model | test accuracy | test macro-F1 | trainable params | wall time (s) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        lines.append(f"| {row['name']} | {row['test_accuracy']:.3f} | {row['test_macro_f1']:.3f} | "
                     f"{row['trainable_params']:,} | {row['wall_seconds']:.1f} |")
    lines.append(f"| majority class ({baseline['label']}) | {baseline['accuracy']:.3f} | {baseline['macro_f1']:.3f} "
                 "| 0 | 0.0 |")
    lines += [
        "",
        f"Pretraining: {settings.pretrain.steps} steps of next-token prediction "
        f"({settings.pretrain.n_layers} layers, d_model {settings.pretrain.d_model}), "
        "curves in `pretrain/loss.png`.",
        f"Finetuned: embedding and lowest {settings.finetuned.freeze} layers frozen, {settings.finetuned.epochs} "
        "epochs; from scratch: same architecture and data, every parameter trained from a random start.",
        "",
        "Confusion matrices: `finetuned/confusion.png`, `scratch/confusion.png`; per-class tables: "
        "`*/classification_report.txt`.",
    ]
    return "\n".join(lines) + "\n"


def run_demo(config: DemoConfig, progress: bool = True) -> str:
    """Pretrain, finetune, train the control, and write ``out/report.md``; returns the report text."""
    config.check()
    out = Path(config.out)
    check_new_run_dir(out)
    use_threads(config.threads)
    settings = demo_settings(config)
    start = time.perf_counter()

    print(f"[1/3] pretraining a {settings.pretrain.n_layers}-layer Transformer on Shakespeare "
          f"({settings.pretrain.steps} steps)", flush=True)
    pretrain(settings.pretrain, out / "pretrain", progress=progress)
    finetuned_config = replace(settings.finetuned, from_run=str(out / "pretrain"))

    print(f"[2/3] finetuning it on {finetuned_config.task} with {settings.labels} labels, "
          f"lower {finetuned_config.freeze} layers frozen", flush=True)
    finetuned = finetune(finetuned_config, out / "finetuned", progress=progress)

    print("[3/3] the control: same architecture and labels, trained from scratch", flush=True)
    scratch = finetune(replace(finetuned_config, from_scratch=True, freeze="none"), out / "scratch", progress=progress)

    rows = [{"name": "pretrained + frozen lower layers", **finetuned}, {"name": "from scratch", **scratch}]
    report = format_report(rows, finetuned["majority_baseline"], settings, finetuned_config.task)
    report += f"\nTotal demo time: {time.perf_counter() - start:.0f} s.\n"
    (out / "report.md").write_text(report, encoding="utf-8")
    print(report)
    return report
