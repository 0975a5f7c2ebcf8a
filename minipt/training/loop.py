r"""The one training loop, shared by pretraining and finetuning.

What is being learned is not written here: the loop is *given* three small functions,

* ``next_batch(index) -> batch`` — the ``index``-th micro-batch (a tensor or a tuple/dict of tensors);
* ``loss_fn(model, batch) -> loss`` — a scalar tensor to minimise;
* ``evaluate(model) -> {"val_loss": ..., ...}`` — numbers measured on the validation split,

and it does the rest, top to bottom in :func:`train`:

1. AdamW (:class:`minipt.optim.AdamW`) with decay / no-decay groups, and the warmup + cosine schedule
   :math:`\gamma_s = \gamma \cdot f(s)` (:func:`minipt.optim.warmup_cosine`);
2. each optimizer step averages the gradients of ``grad_accum`` micro-batches,
   :math:`g = \frac{1}{A}\sum_{a=1}^{A} \nabla \mathcal{L}_a` (the same as one batch ``A`` times larger), then
   clips their global norm to ``grad_clip`` (:func:`minipt.optim.clip_grad_norm_`);
3. every ``eval_every`` steps: evaluate, append a line to ``metrics.jsonl``, keep ``best.pt`` when the monitored
   metric improves, stop early after ``patience`` evaluations without improvement (when asked);
4. ``last.pt`` is saved at every evaluation (and every ``save_every`` steps), so a run can resume exactly;
5. at the end, ``loss.png`` (train and validation curves) and ``summary.json``.

Anything else a job needs during training is a :class:`Callback` (e.g. gradual unfreezing, which freezes the
model to the step's stage in :meth:`Callback.on_step_start`). The loop is the one place that decides the modules'
modes: at every step the model trains, except the modules whose parameters are all frozen, which stay in
``eval()`` (no dropout) — :func:`train_mode`.

A checkpoint holds plain types and tensors only (it loads with ``weights_only=True``): the model, optimizer and
scheduler states, the step, tokens seen, the best metric, and every random state (torch, Python, NumPy and the
data sampler's generator), so training ``N`` steps, saving, resuming and training ``N`` more gives bit for bit
the parameters of ``2N`` uninterrupted steps on the CPU.

Under ``torchrun`` (:mod:`minipt.training.distributed`) every rank runs this same loop on its own batches: the loss goes
through DDP (:class:`minipt.training.distributed.DataParallel`), which averages the gradients over the ranks, and rank 0
alone evaluates and writes the run folder. In a single process those hooks do nothing.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm  # a plain text bar: works in terminals and notebooks alike, no widgets needed

from minipt.errors import MiniptError, TrainingDivergedError
from minipt.models.modes import evaluation_mode, train_mode
from minipt.optim import AdamW, clip_grad_norm_, param_groups, warmup_cosine
from minipt.plots import plot_loss_curves, read_metrics
from minipt.runs.folder import write_atomic, write_json
from minipt.training import distributed, interrupts, progress
from minipt.training.checkpoint import load_checkpoint, load_weights, rng_state, save_checkpoint, set_rng_state

__all__ = [
    "TrainConfig",
    "TrainResult",
    "Callback",
    "resolve_device",
    "use_threads",
    "move_to_device",
    "count_tokens",
    "train",
]

Batch = Any  # a tensor, or a tuple / list / dict of tensors (and plain values)


@dataclass
class TrainConfig:
    """Every setting of the loop (the objective's own settings live with the objective).

    ``warmup`` steps of linear warmup, then a cosine decay to ``min_lr_ratio * lr`` at ``steps``;
    ``grad_accum`` micro-batches per optimizer step.
    ``monitor`` names the key of ``evaluate``'s dict that decides the best checkpoint and early stopping;
    ``mode`` says whether lower (``"min"``, losses) or higher (``"max"``, accuracies) is better.
    ``patience`` counts evaluations without improvement before stopping (None: never stop early).
    ``save_every`` saves ``last.pt`` that often in steps as well as at each evaluation (None: only at evaluations).
    ``loss_unit`` is what one loss value averages over (``"token"`` or ``"example"``): the label of ``loss.png``.
    ``fast_optimizer`` runs AdamW on its multi-tensor path (:class:`minipt.optim.AdamW` ``fast=True``, the same
    numbers); the CLI's jobs turn it on.
    """

    steps: int
    lr: float = 1e-3
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.99)
    warmup: int = 100
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    grad_accum: int = 1
    eval_every: int = 100
    save_every: int | None = None
    monitor: str = "val_loss"
    mode: str = "min"
    patience: int | None = None
    device: str = "auto"
    progress: bool = True
    loss_unit: str = "token"
    fast_optimizer: bool = False

    def check(self) -> None:
        """Raise :class:`~minipt.errors.MiniptError` naming the first setting out of range."""
        positive = {"steps": self.steps, "grad_accum": self.grad_accum, "eval_every": self.eval_every}
        if self.save_every is not None:
            positive["save_every"] = self.save_every
        if self.patience is not None:
            positive["patience"] = self.patience
        for name, value in positive.items():
            if not isinstance(value, int) or value < 1:
                raise MiniptError(f"{name} must be a positive integer, got {value!r}")
        if not self.lr > 0:
            raise MiniptError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.warmup < self.steps:
            raise MiniptError(f"warmup must be in [0, steps={self.steps}), got {self.warmup}")
        if not self.grad_clip > 0:
            raise MiniptError(f"grad_clip must be > 0, got {self.grad_clip}")
        if self.mode not in ("min", "max"):
            raise MiniptError(f"mode must be 'min' or 'max', got {self.mode!r}")


@dataclass
class TrainResult:
    """What :func:`train` reports: where it stopped and the best monitored value (and its step)."""

    step: int
    tokens_seen: int
    best_metric: float
    best_step: int
    stopped_early: bool
    last_evaluation: dict[str, float]


class Callback:
    """A hook into :func:`train`; subclass it and override what you need (each method does nothing by default).

    ``on_step_start(step, model, optimizer)`` runs before optimizer step ``step`` (counting from 0) fetches its
    first micro-batch, before the loop sets the modules' modes (:func:`train_mode`). Changing which parameters are
    frozen here is safe: a frozen parameter gets no gradient, so AdamW neither updates nor decays it.
    """

    def on_step_start(self, step: int, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Called at the start of every optimizer step."""


# ----------------------------------------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------------------------------------


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> CUDA when present, else CPU; ``"cuda"`` without a GPU is a :class:`~minipt.errors.MiniptError`."""
    if device not in ("auto", "cpu", "cuda"):
        raise MiniptError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise MiniptError("device 'cuda' was asked for but no CUDA GPU is available (use --device cpu or auto)")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def use_threads(threads: int) -> None:
    """Let torch use ``threads`` CPU threads; 0 means every core (``os.cpu_count()``), shared out among the ranks
    of a torchrun job on this machine."""
    torch.set_num_threads(threads or distributed.cores_per_rank())


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


def autocast_context(device: torch.device) -> AbstractContextManager:
    """bf16 autocast on CUDA (matrix products in bfloat16, reductions in float32); nothing on the CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def is_improvement(value: float, best: float, mode: str) -> bool:
    """``value`` beats ``best``: smaller when ``mode == "min"``, larger when ``"max"``."""
    return value < best if mode == "min" else value > best


def append_jsonl(path: Path, record: dict) -> None:
    """Append one JSON line and flush it to disk (a crash loses at most the line being written)."""
    with path.open("a", encoding="utf-8") as file:
        file.write(json.dumps(record) + "\n")


def truncate_metrics(path: Path, step: int) -> None:
    """Keep only the records up to ``step`` (used on resume: later lines belong to the lost future)."""
    if path.exists():
        records = [record for record in read_metrics(path) if record["step"] <= step]
        write_atomic(path, "".join(json.dumps(record) + "\n" for record in records))


def check_finite(loss_value: float, step: int, last_path: Path) -> None:
    """Raise :class:`~minipt.errors.TrainingDivergedError` for a NaN or infinite loss, naming the last good
    checkpoint."""
    if not math.isfinite(loss_value):
        good = last_path if last_path.exists() else "none (nothing was saved yet)"
        raise TrainingDivergedError(
            f"the loss is {loss_value} at step {step + 1}; stopping. The last good checkpoint is {good}"
        )


# ----------------------------------------------------------------------------------------------------------
# The state a checkpoint holds, and the bookkeeping around the steps
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

    def step_done(self, step_loss: float) -> None:
        """Count the optimizer step and add its loss to the running train-loss sum."""
        self.step += 1
        self.train_loss_sum += step_loss
        self.train_loss_count += 1


@dataclass
class TrainingState:
    """Everything needed to continue exactly: weights, optimizer, schedule, counters and random states."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    generator: torch.Generator | None  # the data sampler's
    loop: LoopState

    def random_states(self) -> dict:
        """This process's random states: torch, Python and NumPy, and the data sampler's generator."""
        return {"rng": rng_state(), "data_generator": None if self.generator is None else self.generator.get_state()}

    def save(self, path: Path) -> None:
        """Write a checkpoint (atomically): plain types and tensors only. Under torchrun every rank calls this;
        rank 0 writes, with the random states of the other ranks under ``"other_ranks"``."""
        first, *others = distributed.gather(self.random_states())  # one per rank
        if not distributed.is_main():
            return
        save_checkpoint(path, {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "loop": asdict(self.loop),
            **first,
            **({"other_ranks": others} if others else {}),
        })

    def restore(self, path: Path) -> None:
        """Load a checkpoint written by :meth:`save` back into the objects and the counters (each rank of a
        torchrun job takes its own random states: the number of ranks must be the same)."""
        checkpoint = load_checkpoint(path)
        ranks = 1 + len(checkpoint.get("other_ranks", []))
        if ranks != distributed.world_size():
            raise MiniptError(f"{path} was written by {ranks} process(es) and this job has "
                              f"{distributed.world_size()}: resume it with torchrun --nproc-per-node {ranks} "
                              "(or without torchrun for 1)")
        load_weights(self.model, checkpoint["model"], path)
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        mine = checkpoint if distributed.is_main() else checkpoint["other_ranks"][distributed.rank() - 1]
        set_rng_state(mine["rng"])
        if self.generator is not None:
            self.generator.set_state(mine["data_generator"])
        self.loop = LoopState(**checkpoint["loop"])


class Meter:
    """Wall time and throughput, and the progress bar that shows them.

    Tokens per second are measured per step (the bar) and over the training since the last evaluation ended
    (``metrics.jsonl``: evaluating and saving are not counted). The elapsed time carries over a resume.
    """

    def __init__(self, loop: LoopState, config: TrainConfig) -> None:
        now = time.perf_counter()
        self.start = now - loop.elapsed_seconds
        self.step_time, self.step_tokens = now, loop.tokens_seen
        self.mark_time, self.mark_tokens = now, loop.tokens_seen
        shown = config.progress and distributed.is_main()  # under torchrun only rank 0 shows progress
        self.plain = shown and not progress.is_terminal()  # a log file: one line per evaluation
        self.bar = tqdm(total=config.steps, initial=loop.step, disable=not shown or self.plain,
                        dynamic_ncols=True)
        self.postfix: dict[str, str] = {}  # what the bar shows after the counter

    def step_started(self, loop: LoopState) -> None:
        self.step_time, self.step_tokens = time.perf_counter(), loop.tokens_seen

    def step_done(self, loop: LoopState, loss: float, lr: float) -> None:
        """Set ``loop.elapsed_seconds``; show the step's loss, learning rate and tokens per second."""
        now = time.perf_counter()
        loop.elapsed_seconds = now - self.start
        tokens_per_second = (loop.tokens_seen - self.step_tokens) / max(now - self.step_time, 1e-9)
        self.show(loss=f"{loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{tokens_per_second:.0f}")
        self.bar.update(1)

    def tokens_per_second(self, loop: LoopState) -> float:
        """Training throughput since :meth:`mark` (the end of the last evaluation)."""
        return (loop.tokens_seen - self.mark_tokens) / max(time.perf_counter() - self.mark_time, 1e-9)

    def mark(self, loop: LoopState) -> None:
        self.mark_time, self.mark_tokens = time.perf_counter(), loop.tokens_seen

    def show(self, **values: str) -> None:
        self.postfix.update(values)
        self.bar.set_postfix(self.postfix)


def evaluation_step(
    state: TrainingState, evaluate: Callable, config: TrainConfig, run_dir: Path, meter: Meter, lr: float
) -> dict[str, float]:
    """Steps 3 and 4 of the loop: evaluate, append the record to ``metrics.jsonl``, save ``best.pt`` when the
    monitored value improved, then ``last.pt``. Returns the evaluation's numbers.

    Under torchrun rank 0 alone evaluates (the whole validation split, once) and writes; every rank gets its
    numbers, and the train loss logged is the mean over the ranks."""
    loop, device = state.loop, next(state.model.parameters()).device
    tokens_per_second = meter.tokens_per_second(loop)
    evaluation = None
    if distributed.is_main():
        with torch.no_grad(), evaluation_mode(state.model), autocast_context(device):
            evaluation = {name: float(value) for name, value in evaluate(state.model).items()}
    evaluation = distributed.broadcast(evaluation)
    train_loss = distributed.all_reduce_mean(loop.train_loss_sum / loop.train_loss_count)
    if config.monitor not in evaluation:
        raise MiniptError(f"monitor {config.monitor!r} is not among the evaluation's results {sorted(evaluation)}")
    if meter.plain:
        print(progress.progress_line(loop.step, config.steps, train_loss, evaluation, tokens_per_second,
                                     loop.elapsed_seconds), flush=True)
    if distributed.is_main():
        append_jsonl(run_dir / "metrics.jsonl", {
            "step": loop.step,
            "tokens": loop.tokens_seen,
            "train_loss": train_loss,
            **evaluation,
            "lr": lr,
            "elapsed_seconds": round(loop.elapsed_seconds, 3),
            "tokens_per_second": round(tokens_per_second, 1),
        })
    loop.train_loss_sum, loop.train_loss_count = 0.0, 0
    meter.show(**{config.monitor: f"{evaluation[config.monitor]:.4f}"})
    if is_improvement(evaluation[config.monitor], loop.best_metric, config.mode):
        loop.best_metric, loop.best_step = evaluation[config.monitor], loop.step
        loop.evaluations_without_improvement = 0
        state.save(run_dir / "best.pt")
    else:
        loop.evaluations_without_improvement += 1
    state.save(run_dir / "last.pt")
    meter.mark(loop)  # tokens/s measures training only, not evaluating and saving
    return evaluation


def build_optimizer(
    model: nn.Module, config: TrainConfig, groups: list[dict] | None
) -> tuple[AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over ``groups`` (default: decay / no-decay groups) and its schedule: the lr of optimizer step ``s``
    is ``lr * warmup_cosine(s)``."""
    groups = groups if groups is not None else param_groups(model, config.weight_decay)
    optimizer = AdamW(groups, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay,
                      fast=config.fast_optimizer)
    schedule = partial(warmup_cosine, warmup_steps=config.warmup, total_steps=config.steps,
                       min_ratio=config.min_lr_ratio)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def stop_interrupted(state: TrainingState, run_dir: Path, meter: Meter, signum: int) -> None:
    """Between two steps, after a signal: save ``last.pt`` (when a step was taken) and raise
    :class:`~minipt.training.interrupts.Interrupted`."""
    meter.bar.close()
    saved = state.loop.step >= 1
    if saved:
        state.save(run_dir / "last.pt")
    raise interrupts.Interrupted(signum, step=state.loop.step, saved=saved, run_dir=run_dir)


def finish(run_dir: Path, loop: LoopState, config: TrainConfig, stopped_early: bool, evaluation: dict) -> TrainResult:
    """Step 5: ``loss.png`` from ``metrics.jsonl``, and ``summary.json`` (rank 0 only, under torchrun)."""
    result = TrainResult(loop.step, loop.tokens_seen, loop.best_metric, loop.best_step, stopped_early, evaluation)
    if not distributed.is_main():
        return result
    if (run_dir / "metrics.jsonl").exists():
        plot_loss_curves(read_metrics(run_dir / "metrics.jsonl"), run_dir / "loss.png", loss_unit=config.loss_unit)
    write_json(run_dir / "summary.json", {**asdict(result), "elapsed_seconds": loop.elapsed_seconds})
    return result


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
    callbacks: Sequence[Callback] = (),
) -> TrainResult:
    """Train ``model`` for ``config.steps`` optimizer steps, writing checkpoints and metrics into ``run_dir``.

    ``next_batch(index)`` gives micro-batch ``index = step * grad_accum + a``; the state of ``generator``, the
    sampler's, goes into the checkpoints. ``optimizer_groups``: AdamW groups (default: decay / no-decay groups).
    ``resume=True`` continues from ``run_dir/last.pt``. ``callbacks``: :class:`Callback` hooks. ``evaluate`` runs
    under ``torch.no_grad()`` with dropout off. A non-finite loss raises
    :class:`~minipt.errors.TrainingDivergedError` before anything about that step is saved. Inside
    :func:`minipt.training.interrupts.deferred` (the jobs call ``train`` there), Ctrl-C or SIGTERM stops the loop at
    the start of the next step: ``last.pt`` is saved (after at least one step) and
    :class:`~minipt.training.interrupts.Interrupted` is raised.
    """
    config.check()
    device, run_dir = resolve_device(config.device), Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    model.to(device)
    optimizer, scheduler = build_optimizer(model, config, optimizer_groups)  # 1.
    state = TrainingState(model, optimizer, scheduler, generator,
                          LoopState(best_metric=math.inf if config.mode == "min" else -math.inf))
    if resume:
        state.restore(run_dir / "last.pt")
        if distributed.is_main():
            truncate_metrics(run_dir / "metrics.jsonl", state.loop.step)
    elif distributed.is_distributed():
        torch.manual_seed(distributed.rank_seed(torch.initial_seed()))  # each rank its own dropout masks
    loop, meter = state.loop, Meter(state.loop, config)
    parallel = distributed.DataParallel(model, loss_fn)  # under torchrun: DDP averages the ranks' gradients
    evaluation, stopped_early = {}, False

    while loop.step < config.steps and not stopped_early:
        if interrupts.pending() is not None:  # Ctrl-C or SIGTERM during interrupts.deferred(): stop here, whole
            stop_interrupted(state, run_dir, meter, interrupts.pending())
        meter.step_started(loop)
        for callback in callbacks:
            callback.on_step_start(loop.step, model, optimizer)
        train_mode(model)
        lr = optimizer.param_groups[0]["lr"]
        # 2. one optimizer step: average the gradients of grad_accum micro-batches
        step_loss = 0.0
        for micro_step in range(config.grad_accum):
            batch = move_to_device(next_batch(loop.step * config.grad_accum + micro_step), device)
            with autocast_context(device):
                loss = parallel.loss(batch, sync=micro_step == config.grad_accum - 1)
            loss_value = loss.item()
            check_finite(loss_value, loop.step, run_dir / "last.pt")
            (loss / config.grad_accum).backward()  # gradients add up over the micro-batches
            step_loss += loss_value / config.grad_accum
            loop.tokens_seen += count_tokens(batch) * distributed.world_size()  # every rank's batch
        clip_grad_norm_([p for p in model.parameters() if p.requires_grad], config.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        loop.step_done(step_loss)
        meter.step_done(loop, step_loss, lr)

        # 3. and 4. evaluate, log, keep the best and the latest state; maybe stop early
        if loop.step % config.eval_every == 0 or loop.step == config.steps:
            evaluation = evaluation_step(state, evaluate, config, run_dir, meter, lr)
            stopped_early = config.patience is not None and loop.evaluations_without_improvement >= config.patience
        elif config.save_every is not None and loop.step % config.save_every == 0:
            state.save(run_dir / "last.pt")
    meter.bar.close()
    return finish(run_dir, loop, config, stopped_early, evaluation)  # 5.
