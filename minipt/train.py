r"""The one training loop, shared by pretraining and finetuning.

What is being learned is not written here: the loop is *given* three small functions,

* ``next_batch(index) -> batch`` — the ``index``-th micro-batch (a tensor or a tuple/dict of tensors);
* ``loss_fn(model, batch) -> loss`` — a scalar tensor to minimise;
* ``evaluate(model) -> {"val_loss": ..., ...}`` — numbers measured on the validation split,

and it does the rest, top to bottom in :func:`train`:

1. AdamW (:class:`minipt.optim.AdamW`) with decay / no-decay groups, and the warmup + cosine schedule
   :math:`\gamma_s = \gamma \cdot f(s)` (:func:`minipt.optim.warmup_cosine`);
2. each optimizer step averages the gradients of ``grad_accum_steps`` micro-batches,
   :math:`g = \frac{1}{A}\sum_{a=1}^{A} \nabla \mathcal{L}_a` (the same as one batch ``A`` times larger), then
   clips their global norm to ``grad_clip`` (:func:`minipt.optim.clip_grad_norm_`);
3. every ``eval_every`` steps: evaluate, append a line to ``metrics.jsonl``, keep ``best.pt`` when the monitored
   metric improves, stop early after ``patience`` evaluations without improvement (when asked);
4. ``last.pt`` is saved at every evaluation (and every ``save_every`` steps), so a run can resume exactly;
5. at the end, ``loss.png`` (train and validation curves) and ``summary.json``.

A checkpoint holds plain types and tensors only (it loads with ``weights_only=True``): the model, optimizer and
scheduler states, the step, tokens seen, the best metric, and every random state (torch, Python, NumPy and the
data sampler's generator), so training ``N`` steps, saving, resuming and training ``N`` more gives bit for bit
the parameters of ``2N`` uninterrupted steps on the CPU.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm  # a plain text bar: works in terminals and notebooks alike, no widgets needed

from minipt.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state, write_json_atomic
from minipt.models.language_model import evaluation_mode
from minipt.optim import AdamW, clip_grad_norm_, param_groups, warmup_cosine
from minipt.plots import plot_loss_curves, read_metrics

__all__ = [
    "TrainConfig",
    "TrainConfigError",
    "DeviceError",
    "TrainingDivergedError",
    "TrainResult",
    "resolve_device",
    "move_to_device",
    "count_tokens",
    "train",
]

Batch = Any  # a tensor, or a tuple / list / dict of tensors (and plain values)


class TrainConfigError(ValueError):
    """A training setting is out of range; the message names the setting."""


class DeviceError(ValueError):
    """The requested device does not exist on this machine (e.g. ``cuda`` without a GPU)."""


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; the message names the step and the last good checkpoint."""


@dataclass
class TrainConfig:
    """Every setting of the loop (the objective's own settings live with the objective).

    ``monitor`` names the key of ``evaluate``'s dict that decides the best checkpoint and early stopping;
    ``mode`` says whether lower (``"min"``, losses) or higher (``"max"``, accuracies) is better.
    ``patience`` counts evaluations without improvement before stopping (None: never stop early).
    ``save_every`` saves ``last.pt`` that often in steps as well as at each evaluation (None: only at evaluations).
    ``loss_unit`` is what one loss value averages over (``"token"`` or ``"example"``): the label of ``loss.png``.
    """

    steps: int
    lr: float = 1e-3
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.99)
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    grad_accum_steps: int = 1
    eval_every: int = 100
    save_every: int | None = None
    monitor: str = "val_loss"
    mode: str = "min"
    patience: int | None = None
    device: str = "auto"
    progress: bool = True
    loss_unit: str = "token"

    def check(self) -> None:
        """Raise :class:`TrainConfigError` naming the first setting out of range."""
        positive = {"steps": self.steps, "grad_accum_steps": self.grad_accum_steps, "eval_every": self.eval_every}
        if self.save_every is not None:
            positive["save_every"] = self.save_every
        if self.patience is not None:
            positive["patience"] = self.patience
        for name, value in positive.items():
            if not isinstance(value, int) or value < 1:
                raise TrainConfigError(f"{name} must be a positive integer, got {value!r}")
        if not self.lr > 0:
            raise TrainConfigError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.warmup_steps < self.steps:
            raise TrainConfigError(f"warmup_steps must be in [0, steps={self.steps}), got {self.warmup_steps}")
        if not self.grad_clip > 0:
            raise TrainConfigError(f"grad_clip must be > 0, got {self.grad_clip}")
        if self.mode not in ("min", "max"):
            raise TrainConfigError(f"mode must be 'min' or 'max', got {self.mode!r}")


@dataclass
class TrainResult:
    """What :func:`train` reports: where it stopped and the best monitored value (and its step)."""

    step: int
    tokens_seen: int
    best_metric: float
    best_step: int
    stopped_early: bool
    last_evaluation: dict[str, float]


# ----------------------------------------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------------------------------------


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> CUDA when present, else CPU; ``"cuda"`` without a GPU is a :class:`DeviceError`."""
    if device not in ("auto", "cpu", "cuda"):
        raise DeviceError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise DeviceError("device 'cuda' was asked for but no CUDA GPU is available (use --device cpu or auto)")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def move_to_device(batch: Batch, device: torch.device) -> Batch:
    """The same structure with every tensor moved to ``device`` (tuples, lists and dicts are walked)."""
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {key: move_to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, tuple | list):
        return type(batch)(move_to_device(value, device) for value in batch)
    return batch


def count_tokens(batch: Batch) -> int:
    """Tokens in a batch: the number of elements of its first tensor (the input ids ``(B, T)``)."""
    if isinstance(batch, Tensor):
        return batch.numel()
    values = batch.values() if isinstance(batch, dict) else batch
    return count_tokens(next(iter(values)))


def autocast_context(device: torch.device):
    """bf16 autocast on CUDA (matrix products in bfloat16, reductions in float32); nothing on the CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def is_improvement(value: float, best: float, mode: str) -> bool:
    """``value`` beats ``best``: smaller when ``mode == "min"``, larger when ``"max"``."""
    return value < best if mode == "min" else value > best


def keep_frozen_modules_in_eval(model: nn.Module) -> None:
    """After ``model.train()``: a module whose parameters are all frozen goes back to ``eval()`` (no dropout).

    Finetuning freezes the lower layers; their dropout should not fire either (see :mod:`minipt.finetune`).
    """
    for module in model.modules():
        parameters = list(module.parameters())
        if parameters and not any(p.requires_grad for p in parameters):
            module.eval()


def append_jsonl(path: Path, record: dict) -> None:
    """Append one JSON line and flush it to disk (a crash loses at most the line being written)."""
    with path.open("a", encoding="utf-8") as file:
        file.write(json.dumps(record) + "\n")


def truncate_metrics(path: Path, step: int) -> None:
    """Keep only the records up to ``step`` (used on resume: later lines belong to the lost future)."""
    if not path.exists():
        return
    records = [record for record in read_metrics(path) if record["step"] <= step]
    text = "".join(json.dumps(record) + "\n" for record in records)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


# ----------------------------------------------------------------------------------------------------------
# Checkpoint state
# ----------------------------------------------------------------------------------------------------------


@dataclass
class LoopState:
    """The loop's own counters, saved in every checkpoint (plain numbers only)."""

    step: int = 0
    tokens_seen: int = 0
    best_metric: float = math.nan
    best_step: int = 0
    evaluations_without_improvement: int = 0
    train_loss_sum: float = 0.0  # sum of the step losses since the last evaluation
    train_loss_count: int = 0
    elapsed_seconds: float = 0.0


def checkpoint_state(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    loop: LoopState,
    generator: torch.Generator | None,
) -> dict:
    """Everything needed to continue exactly: weights, optimizer, schedule, counters and random states."""
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "loop": asdict(loop),
        "rng": rng_state(),
        "data_generator": None if generator is None else generator.get_state(),
    }


def restore_state(
    checkpoint: dict,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    generator: torch.Generator | None,
) -> LoopState:
    """Load a :func:`checkpoint_state` dict back into the objects; return the loop counters."""
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    set_rng_state(checkpoint["rng"])
    if generator is not None:
        generator.set_state(checkpoint["data_generator"])
    return LoopState(**checkpoint["loop"])


# ----------------------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------------------


def train(
    model: nn.Module,
    *,
    next_batch: Callable[[int], Batch],
    loss_fn: Callable[[nn.Module, Batch], Tensor],
    evaluate: Callable[[nn.Module], dict[str, float]],
    config: TrainConfig,
    run_dir: str | Path,
    generator: torch.Generator | None = None,
    optimizer_groups: list[dict] | None = None,
    resume: bool = False,
) -> TrainResult:
    """Train ``model`` for ``config.steps`` optimizer steps, writing checkpoints and metrics into ``run_dir``.

    ``next_batch(index)`` returns micro-batch number ``index = step * grad_accum_steps + a``; a sampler that draws
    from ``generator`` (a ``torch.Generator``) has that generator's state saved and restored with the checkpoints.
    ``optimizer_groups``: AdamW parameter groups (e.g. finetuning's per-layer learning rates, each with its own
    ``lr``); by default :func:`minipt.optim.param_groups` (decay for weight matrices, none for the rest).
    ``resume=True`` continues from ``run_dir/last.pt`` (model, optimizer, schedule, counters, random states).

    The model is moved to the device; batches are moved by :func:`move_to_device`. ``evaluate`` runs under
    ``torch.no_grad()`` with dropout off. Raises :class:`TrainingDivergedError` on a non-finite loss, before
    anything about that step is saved.
    """
    config.check()
    device = resolve_device(config.device)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    last_path, best_path, metrics_path = run_dir / "last.pt", run_dir / "best.pt", run_dir / "metrics.jsonl"
    model.to(device)

    # 1. optimizer and schedule: lr at optimizer step s is lr * warmup_cosine(s)
    groups = optimizer_groups if optimizer_groups is not None else param_groups(model, config.weight_decay)
    optimizer = AdamW(groups, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    schedule = partial(
        warmup_cosine, warmup_steps=config.warmup_steps, total_steps=config.steps, min_ratio=config.min_lr_ratio
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)

    loop = LoopState(best_metric=math.inf if config.mode == "min" else -math.inf)
    if resume:
        loop = restore_state(load_checkpoint(last_path), model, optimizer, scheduler, generator)
        truncate_metrics(metrics_path, loop.step)

    def save(path: Path) -> None:
        save_checkpoint(path, checkpoint_state(model, optimizer, scheduler, loop, generator))

    last_evaluation: dict[str, float] = {}
    postfix: dict[str, str] = {}  # what the progress bar shows after the counter
    stopped_early = False
    progress = tqdm(total=config.steps, initial=loop.step, disable=not config.progress, dynamic_ncols=True)
    start_time = time.perf_counter() - loop.elapsed_seconds  # elapsed time carries over a resume
    tokens_at_last_eval, time_at_last_eval = loop.tokens_seen, time.perf_counter()

    while loop.step < config.steps:
        # 2. one optimizer step: average the gradients of grad_accum_steps micro-batches
        step_start, tokens_before_step = time.perf_counter(), loop.tokens_seen
        model.train()
        keep_frozen_modules_in_eval(model)
        lr = optimizer.param_groups[0]["lr"]
        step_loss = 0.0
        for micro_step in range(config.grad_accum_steps):
            batch = move_to_device(next_batch(loop.step * config.grad_accum_steps + micro_step), device)
            with autocast_context(device):
                loss = loss_fn(model, batch)
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                good = last_path if last_path.exists() else "none (nothing was saved yet)"
                raise TrainingDivergedError(
                    f"the loss is {loss_value} at step {loop.step + 1}; "
                    f"stopping. The last good checkpoint is {good}"
                )
            (loss / config.grad_accum_steps).backward()  # gradients add up over the micro-batches
            step_loss += loss_value / config.grad_accum_steps
            loop.tokens_seen += count_tokens(batch)
        clip_grad_norm_([p for p in model.parameters() if p.requires_grad], config.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        loop.step += 1
        loop.train_loss_sum += step_loss
        loop.train_loss_count += 1
        loop.elapsed_seconds = time.perf_counter() - start_time
        step_tokens_per_second = (loop.tokens_seen - tokens_before_step) / max(time.perf_counter() - step_start, 1e-9)
        postfix.update(loss=f"{step_loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{step_tokens_per_second:.0f}")
        progress.update(1)
        progress.set_postfix(postfix)

        # 3. evaluate, log, keep the best, maybe stop early
        is_eval_step = loop.step % config.eval_every == 0 or loop.step == config.steps
        if is_eval_step:
            training_seconds = time.perf_counter() - time_at_last_eval  # since the last evaluation ended
            tokens_per_second = (loop.tokens_seen - tokens_at_last_eval) / max(training_seconds, 1e-9)
            with torch.no_grad(), evaluation_mode(model), autocast_context(device):
                last_evaluation = {name: float(value) for name, value in evaluate(model).items()}
            if config.monitor not in last_evaluation:
                raise TrainConfigError(
                    f"monitor {config.monitor!r} is not among the evaluation's results {sorted(last_evaluation)}"
                )
            record = {
                "step": loop.step,
                "tokens": loop.tokens_seen,
                "train_loss": loop.train_loss_sum / loop.train_loss_count,
                **last_evaluation,
                "lr": lr,
                "elapsed_seconds": round(loop.elapsed_seconds, 3),
                "tokens_per_second": round(tokens_per_second, 1),
            }
            loop.train_loss_sum, loop.train_loss_count = 0.0, 0
            append_jsonl(metrics_path, record)
            postfix[config.monitor] = f"{last_evaluation[config.monitor]:.4f}"
            progress.set_postfix(postfix)
            value = last_evaluation[config.monitor]
            if is_improvement(value, loop.best_metric, config.mode):
                loop.best_metric, loop.best_step = value, loop.step
                loop.evaluations_without_improvement = 0
                save(best_path)
            else:
                loop.evaluations_without_improvement += 1
            stopped_early = config.patience is not None and loop.evaluations_without_improvement >= config.patience

        # 4. the latest state, for resuming
        if is_eval_step or (config.save_every is not None and loop.step % config.save_every == 0):
            save(last_path)
        if is_eval_step:  # tokens/s measures training only, not evaluating and saving
            tokens_at_last_eval, time_at_last_eval = loop.tokens_seen, time.perf_counter()
        if stopped_early:
            break
    progress.close()

    # 5. the curves and a summary
    if metrics_path.exists():
        plot_loss_curves(read_metrics(metrics_path), run_dir / "loss.png", loss_unit=config.loss_unit)
    result = TrainResult(
        step=loop.step,
        tokens_seen=loop.tokens_seen,
        best_metric=loop.best_metric,
        best_step=loop.best_step,
        stopped_early=stopped_early,
        last_evaluation=last_evaluation,
    )
    write_json_atomic(run_dir / "summary.json", {**asdict(result), "elapsed_seconds": loop.elapsed_seconds})
    return result
