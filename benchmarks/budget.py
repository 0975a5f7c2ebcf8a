"""Pretraining for a wall-clock budget, and scoring a pretrained run's frozen features: shared by
``pretrain_recipe.py`` and ``pretraining_pays.py``.

A run's learning-rate schedule needs its number of steps in advance, so a budget of ``seconds`` becomes
``steps = seconds / (seconds per step)``, the step time measured first by a short run of the same configuration
(its training tokens per second, evaluation excluded). The real run's own wall time is recorded beside it.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from minipt.jobs.finetune import FinetuneConfig, finetune
from minipt.jobs.pretrain import PretrainConfig, pretrain


def seconds_per_step(config: PretrainConfig, steps: int = 30) -> float:
    """A ``steps``-step run of ``config``; its training seconds per step (evaluation and saving excluded)."""
    with tempfile.TemporaryDirectory() as folder:
        short = replace(config, steps=steps, warmup=min(config.warmup, steps - 1), eval_every=steps, eval_batches=1)
        pretrain(short, Path(folder) / "run", progress=False)
        record = [json.loads(line) for line in (Path(folder) / "run" / "metrics.jsonl").open()][-1]
    return config.batch_size * config.block_size / record["tokens_per_second"]


def pretrain_for(config: PretrainConfig, seconds: float, run_dir: Path, evaluations: int = 8) -> dict:
    """Pretrain ``config`` for about ``seconds`` of training into ``run_dir``; returns the steps, the measured
    wall time (tokenizer and evaluations included), the final validation loss and the validation curve."""
    steps = max(20, round(seconds / seconds_per_step(config)))
    config = replace(config, steps=steps, warmup=min(100, steps // 10), eval_every=max(1, steps // evaluations))
    start = time.perf_counter()
    pretrain(config, run_dir, progress=False)
    wall = time.perf_counter() - start
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    curve = [(record["elapsed_seconds"], record["val_loss"]) for record in records]
    return {"steps": steps, "wall_seconds": wall, "val_loss": records[-1]["val_loss"], "curve": curve,
            "tokens": records[-1]["tokens"]}


def frozen_scores(run_dir: Path, work: Path, seeds: list[int], **finetuning) -> dict:
    """Validation and test macro-F1 of ``run_dir``'s model finetuned on shakespeare-verse with 200 labels (the
    demo's finetuning settings, updated by ``finetuning``), one run per seed: the test ``scores``, their ``mean``
    and sample ``std``, and the same of the best epoch's validation macro-F1 (``val_scores``, ``val_mean``,
    ``val_std``). A study that ranks configurations ranks by ``val_mean``; test is reported, never used to choose."""
    scores, val_scores = [], []
    for seed in seeds:
        config = FinetuneConfig(from_run=str(run_dir), task="shakespeare-verse", train_examples=200, val_examples=400,
                                epochs=10, seed=seed, device="cpu", **finetuning)
        summary = finetune(config, work / f"{run_dir.name}-{'-'.join(f'{k}{v}' for k, v in finetuning.items())}"
                           f"-seed{seed}", progress=False, verbose=False)
        scores.append(summary["test_macro_f1"])
        val_scores.append(summary["best_val_macro_f1"])
    return {"scores": scores, "mean": statistics.mean(scores), "std": spread(scores),
            "val_scores": val_scores, "val_mean": statistics.mean(val_scores), "val_std": spread(val_scores)}


def spread(values: list[float]) -> float:
    """The sample standard deviation (0 for one value)."""
    return statistics.stdev(values) if len(values) > 1 else 0.0
