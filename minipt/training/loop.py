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
3. every ``eval_every`` steps: evaluate, hand the evaluation's ``metrics.jsonl`` line to the callbacks, keep
   ``best.pt`` when the monitored metric improves, stop early after ``patience`` evaluations without improvement
   (when asked);
4. ``last.pt`` is saved at every evaluation (and every ``save_every`` steps), so a run can resume exactly;
5. at the end, the callbacks close the run (the records write ``loss.png`` and ``summary.json``).

What a checkpoint saves is :mod:`~.state`'s, the ranks of a torchrun job are :mod:`~.distributed`'s (no-ops in one
process). Everything else around the steps is a :class:`~minipt.training.callbacks.Callback` the loop is given, each
from its own file: the run's records (:mod:`~.records`: ``metrics.jsonl``, ``loss.png``, ``summary.json``), the
progress bar (:mod:`~.progress`) and the stop on Ctrl-C (:mod:`~.stopping`), which :func:`standard_callbacks`
lists, and whatever a job adds (e.g. gradual unfreezing). The loop alone sets the modules' modes: the model
trains, except the modules whose parameters are all frozen, which stay in ``eval()`` (no dropout).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import Tensor, nn

from minipt.errors import MiniptError, TrainingDivergedError
from minipt.models.modes import evaluation_mode, train_mode
from minipt.optim import AdamW, clip_grad_norm_, param_groups, warmup_cosine
from minipt.runs.settings import (
    COUNT,
    NONE_OR_POSITIVE_INT,
    POSITIVE_INT,
    between,
    check_settings,
    device_setting,
    grad_accum_setting,
    grad_clip_setting,
    lr_setting,
    one_of,
    setting,
    weight_decay_setting,
)
from minipt.training import distributed
from minipt.training.callbacks import Callback
from minipt.training.clock import Clock
from minipt.training.device import Batch, autocast_context, count_tokens, move_to_device, resolve_device, use_threads
from minipt.training.progress import Progress
from minipt.training.records import RunRecords, evaluation_record
from minipt.training.state import LoopState, TrainingState
from minipt.training.stopping import StopOnSignal

__all__ = ["TrainConfig", "TrainResult", "Callback", "standard_callbacks", "train", "resolve_device", "use_threads",
           "count_tokens"]


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

    steps: int = setting(help="optimizer steps", rule=POSITIVE_INT)
    lr: float = lr_setting(1e-3)
    weight_decay: float = weight_decay_setting(0.1)
    betas: tuple[float, float] = (0.9, 0.99)
    warmup: int = setting(100, "linear warmup steps before the cosine decay", rule=COUNT)
    min_lr_ratio: float = setting(0.1, "the lr at the end, as a fraction of the peak", rule=between(0, 1, "[]"))
    grad_clip: float = grad_clip_setting()
    grad_accum: int = grad_accum_setting()
    eval_every: int = setting(100, "evaluate every this many steps", rule=POSITIVE_INT)
    save_every: int | None = setting(None, "also save last.pt every this many steps", rule=NONE_OR_POSITIVE_INT)
    monitor: str = "val_loss"
    mode: str = setting("min", "min (a loss) or max (an accuracy)", rule=one_of("min", "max"))
    patience: int | None = setting(None, "evaluations without improvement before stopping", rule=NONE_OR_POSITIVE_INT)
    device: str = device_setting()
    progress: bool = True
    loss_unit: str = "token"
    fast_optimizer: bool = False

    def check(self) -> None:
        """Raise :class:`~minipt.errors.MiniptError` naming the first setting out of range, by its rule (the
        rules are the job settings' own, :mod:`minipt.runs.settings`). For a config built by hand: the jobs check
        their settings when they start, and build this one from them."""
        check_settings(self)
        if not self.warmup < self.steps:
            raise MiniptError(f"--warmup ({self.warmup}) must be smaller than --steps ({self.steps})")


@dataclass
class TrainResult:
    """What :func:`train` reports: where it stopped and the best monitored value (and its step)."""

    step: int
    tokens_seen: int
    best_metric: float
    best_step: int
    stopped_early: bool
    last_evaluation: dict[str, float]


def standard_callbacks(config: TrainConfig, run_dir: str | Path) -> list[Callback]:
    """What every minipt run has around its steps, in this order: the stop on Ctrl-C (before a step begins), the
    run's records (``metrics.jsonl``, ``loss.png``, ``summary.json``) and the progress bar (``config.progress``)."""
    run_dir = Path(run_dir)
    return [StopOnSignal(run_dir / "last.pt"), RunRecords(run_dir, config.loss_unit),
            Progress(config.steps, config.monitor, shown=config.progress)]


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


def optimizer_step(state: TrainingState, parallel: distributed.DataParallel, next_batch: Callable[[int], Batch],
                   config: TrainConfig, device: torch.device, last_path: Path) -> float:
    """Step 2: the gradients of ``grad_accum`` micro-batches, averaged, clipped, and one AdamW step. Returns the
    step's loss. A NaN or infinite loss raises :class:`~minipt.errors.TrainingDivergedError` before anything about
    the step is saved."""
    loop, model, optimizer = state.loop, state.model, state.optimizer
    step_loss = 0.0
    for micro_step in range(config.grad_accum):
        batch = move_to_device(next_batch(loop.step * config.grad_accum + micro_step), device)
        with autocast_context(device):
            loss = parallel.loss(batch, sync=micro_step == config.grad_accum - 1)
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            good = last_path if last_path.exists() else "none (nothing was saved yet)"
            raise TrainingDivergedError(f"the loss is {loss_value} at step {loop.step + 1}; stopping. The last good "
                                        f"checkpoint is {good}")
        (loss / config.grad_accum).backward()  # gradients add up over the micro-batches
        step_loss += loss_value / config.grad_accum
        loop.tokens_seen += count_tokens(batch) * distributed.world_size()  # every rank's batch
    clip_grad_norm_([p for p in model.parameters() if p.requires_grad], config.grad_clip)
    optimizer.step()
    state.scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return step_loss


def evaluate_on_main(model: nn.Module, evaluate: Callable, monitor: str) -> dict[str, float]:
    """Step 3: ``evaluate(model)`` under ``torch.no_grad()`` with dropout off. Under torchrun rank 0 alone evaluates
    (the whole validation split, once) and every rank gets its numbers."""
    evaluation, device = None, next(model.parameters()).device
    if distributed.is_main():
        with torch.no_grad(), evaluation_mode(model), autocast_context(device):
            evaluation = {name: float(value) for name, value in evaluate(model).items()}
    evaluation = distributed.broadcast(evaluation)
    if monitor not in evaluation:
        raise MiniptError(f"monitor {monitor!r} is not among the evaluation's results {sorted(evaluation)}")
    return evaluation


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
    callbacks: Sequence[Callback] | None = None,
) -> TrainResult:
    """Train ``model`` for ``config.steps`` optimizer steps, writing checkpoints into ``run_dir``.

    ``next_batch(index)`` gives micro-batch ``index = step * grad_accum + a``; the state of ``generator``, the
    sampler's, goes into the checkpoints. ``optimizer_groups``: AdamW groups (default: decay / no-decay groups).
    ``resume=True`` continues from ``run_dir/last.pt``. ``config`` is taken as it is: the jobs check their settings
    when they start, and :meth:`TrainConfig.check` checks one built by hand. ``callbacks``: what runs around the
    steps, in order (default: :func:`standard_callbacks`, which a job extends with its own). With them, inside
    :func:`minipt.training.interrupts.deferred` (the jobs call ``train`` there), Ctrl-C or SIGTERM stops the loop at
    the start of the next step (under torchrun, every rank at the same step): ``last.pt`` is saved (after at least
    one step) and :class:`~minipt.training.interrupts.Interrupted` is raised.
    """
    device, run_dir = resolve_device(config.device), Path(run_dir)
    callbacks = standard_callbacks(config, run_dir) if callbacks is None else callbacks
    run_dir.mkdir(parents=True, exist_ok=True)
    model.to(device)
    optimizer, scheduler = build_optimizer(model, config, optimizer_groups)  # 1.
    state = TrainingState(model, optimizer, scheduler, generator, LoopState.start(config.mode))
    if resume:
        state.restore(run_dir / "last.pt")
    elif distributed.is_distributed():
        torch.manual_seed(distributed.rank_seed(torch.initial_seed()))  # each rank its own dropout masks
    loop, clock = state.loop, Clock(state.loop.elapsed_seconds, state.loop.tokens_seen)
    parallel = distributed.DataParallel(model, loss_fn)  # under torchrun: DDP averages the ranks' gradients
    evaluation, stopped_early = {}, loop.out_of_patience(config.patience)  # resuming a run that stopped early
    try:
        for callback in callbacks:
            callback.on_train_start(state, resume)
        while loop.step < config.steps and not stopped_early:
            for callback in callbacks:
                callback.on_step_start(loop.step, model, optimizer)
            clock.step_started(loop.tokens_seen)
            train_mode(model)
            lr = optimizer.param_groups[0]["lr"]
            step_loss = optimizer_step(state, parallel, next_batch, config, device, run_dir / "last.pt")  # 2.
            loop.step_done(step_loss)
            loop.elapsed_seconds, step_tokens_per_second = clock.step_done(loop.tokens_seen)
            for callback in callbacks:
                callback.on_step_end(loop, step_loss, lr, step_tokens_per_second)

            # 3. and 4. evaluate, log, keep the best and the latest state; maybe stop early
            if loop.step % config.eval_every == 0 or loop.step == config.steps:
                tokens_per_second = clock.tokens_per_second(loop.tokens_seen)  # of the training since the last one
                evaluation = evaluate_on_main(model, evaluate, config.monitor)
                record = evaluation_record(loop, evaluation, lr, tokens_per_second)  # a line of metrics.jsonl
                for callback in callbacks:
                    callback.on_evaluation(record)
                if loop.evaluated(evaluation[config.monitor], config.mode):
                    state.save(run_dir / "best.pt")
                state.save(run_dir / "last.pt")
                clock.mark(loop.tokens_seen)  # tokens/s measures training only, not evaluating and saving
                stopped_early = loop.out_of_patience(config.patience)
            elif config.save_every is not None and loop.step % config.save_every == 0:
                state.save(run_dir / "last.pt")
        result = TrainResult(loop.step, loop.tokens_seen, loop.best_metric, loop.best_step, stopped_early, evaluation)
        for callback in callbacks:
            callback.on_train_end(result, loop)  # 5. (the records: loss.png, summary.json)
    finally:
        for callback in callbacks:
            callback.close()
    return result
