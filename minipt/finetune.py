r"""Finetuning a pretrained language model on a classification task: the job behind ``minipt finetune``.

The pieces, top to bottom in :func:`finetune`:

1. the backbone: the pretrained language model of a run folder (:func:`minipt.pretrain.load_run`), or — the
   control, ``from_scratch=True`` — a freshly initialised model of the same architecture with the same tokenizer;
2. the classifier: :class:`minipt.models.SequenceClassifier` (pooling + one linear layer) on that backbone;
3. the strategy (:mod:`minipt.finetune`): freeze the embedding and the lowest ``k`` layers; or unfreeze them
   gradually (ULMFiT); or give every layer its own learning rate; optionally re-initialise the top layers and
   pull the pretrained weights toward their starting point (L2-SP);
4. the objective, for :func:`minipt.train.train` (the one training loop): mean cross-entropy of the class logits

   .. math:: \mathcal{L} = \frac{1}{B}\sum_{b=1}^{B} -\log \operatorname{softmax}(z_b)_{y_b}
             \; + \; \lambda_{\text{L2-SP}} \sum_{w} \lVert w - w^0 \rVert^2 ,

   on shuffled mini-batches (a new permutation of the training examples each epoch), evaluated once per epoch
   on the validation split; the best checkpoint is the one with the highest validation accuracy;
5. the test split, scored once with that best checkpoint: accuracy, per-class precision / recall / F1, macro-F1
   and the confusion matrix (``confusion.png``, ``classification_report.txt``, ``summary.json``).

``task="lm:PATH"`` is the other finetuning: domain adaptation, i.e. more next-token training of the pretrained
language model on the text file ``PATH`` (with the lower layers frozen if asked), reusing pretraining's objective.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from functools import partial
from pathlib import Path

import torch
from torch import Tensor, nn

from minipt import finetune as strategies
from minipt import functional as MF
from minipt.checkpoint import load_checkpoint, write_json_atomic
from minipt.data import DataError, LabelledData, load_task, read_text
from minipt.data.datasets import ClassificationDataset, balanced_sampler, collate_classification, lm_split
from minipt.metrics import accuracy, classification_report, confusion_matrix, macro_f1
from minipt.models import SequenceClassifier, build_model
from minipt.models.heads import POOLINGS
from minipt.optim import param_groups
from minipt.plots import plot_confusion_matrix, read_metrics
from minipt.pretrain import PretrainConfig, causal_lm_objective, load_run
from minipt.tokenizers import load_tokenizer
from minipt.train import TrainConfig, TrainResult, resolve_device, train

__all__ = [
    "FinetuneConfig",
    "FinetuneConfigError",
    "STRATEGIES",
    "LM_TASK_PREFIX",
    "select_train_examples",
    "classification_batches",
    "predict",
    "classification_metrics",
    "majority_baseline",
    "build_classifier",
    "finetune",
    "load_classifier",
    "evaluate_run",
]

STRATEGIES = ("plain", "gradual", "discriminative")
SELECT_METRICS = ("accuracy", "macro_f1")  # the validation metric that picks best.pt
LM_TASK_PREFIX = "lm:"  # --task lm:PATH continues next-token training on the text file PATH


class FinetuneConfigError(ValueError):
    """A finetuning setting is invalid, or a run folder cannot be used; the message names the flag."""


@dataclass
class FinetuneConfig:
    """Every setting of a finetuning run; the names are the CLI flags with underscores (``--from`` is
    ``from_run``). ``freeze`` is an integer, ``"all"`` or ``"none"``; ``max_len`` 0 means the backbone's
    longest context; ``early_stopping`` 0 means never stop early; ``train_examples`` 0 means every training
    example; ``val_examples`` (0: all) caps the validation examples scored after every epoch (a stratified
    sample; the test split is always scored in full); ``balanced`` draws each epoch's batches so that every
    class is seen equally often on average (against the collapse to the majority class with few labels)."""

    from_run: str
    task: str = "shakespeare-verse"
    freeze: str = "none"
    strategy: str = "plain"
    epochs: int = 5
    lr: float = 1e-3
    batch_size: int = 32
    max_len: int = 0
    pooling: str = "mean"
    dropout: float = 0.1
    weight_decay: float = 0.01
    lr_decay: float = 1 / 2.6
    l2sp: float = 0.0
    reinit_top: int = 0
    early_stopping: int = 0
    train_examples: int = 0
    val_examples: int = 0
    seed: int = 0
    device: str = "auto"
    from_scratch: bool = False
    balanced: bool = False
    select: str = "accuracy"

    def check(self) -> None:
        """Raise :class:`FinetuneConfigError` naming the first invalid setting (as its ``--flag``)."""
        if self.strategy not in STRATEGIES:
            raise FinetuneConfigError(f"--strategy must be one of {', '.join(STRATEGIES)}; got {self.strategy!r}")
        if self.pooling not in POOLINGS:
            raise FinetuneConfigError(f"--pooling must be one of {', '.join(POOLINGS)}; got {self.pooling!r}")
        if self.select not in SELECT_METRICS:
            raise FinetuneConfigError(f"--select must be one of {', '.join(SELECT_METRICS)}; got {self.select!r}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise FinetuneConfigError(f"{flag(name)} must be a positive integer, got {getattr(self, name)}")
        for name in ("max_len", "reinit_top", "early_stopping", "train_examples", "val_examples", "seed"):
            if getattr(self, name) < 0:
                raise FinetuneConfigError(f"{flag(name)} must be an integer >= 0, got {getattr(self, name)}")
        if not self.lr > 0:
            raise FinetuneConfigError(f"--lr must be > 0, got {self.lr}")
        if not 0 < self.lr_decay <= 1:
            raise FinetuneConfigError(f"--lr-decay must be in (0, 1], got {self.lr_decay}")
        for name in ("weight_decay", "l2sp"):
            if getattr(self, name) < 0:
                raise FinetuneConfigError(f"{flag(name)} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.dropout < 1:
            raise FinetuneConfigError(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise FinetuneConfigError(f"--device must be one of auto, cpu, cuda; got {self.device!r}")


def flag(name: str) -> str:
    """The CLI flag of a setting: ``batch_size`` -> ``--batch-size`` (``from_run`` -> ``--from``)."""
    return "--from" if name == "from_run" else "--" + name.replace("_", "-")


# ----------------------------------------------------------------------------------------------------------
# Data: the few-label subset and the batches
# ----------------------------------------------------------------------------------------------------------


def select_train_examples(examples: list[tuple[str, str]], n: int, seed: int) -> list[tuple[str, str]]:
    """The first ``n`` examples of a seeded shuffle, stratified: each label keeps its share of the split.

    Class ``c`` with :math:`n_c` of the :math:`N` examples gets :math:`\\lfloor n\\, n_c / N \\rfloor` places,
    and the places left over go to the classes with the largest remainders (Hamilton's method), so the counts
    add up to ``n`` exactly. ``n = 0`` or ``n >= N`` keeps every example (shuffled).
    """
    rng = random.Random(seed)
    shuffled = list(examples)
    rng.shuffle(shuffled)
    if n == 0 or n >= len(shuffled):
        return shuffled
    by_label: dict[str, list[tuple[str, str]]] = {}
    for example in shuffled:
        by_label.setdefault(example[1], []).append(example)
    labels = sorted(by_label)
    exact = {label: n * len(by_label[label]) / len(shuffled) for label in labels}
    quota = {label: math.floor(exact[label]) for label in labels}
    by_remainder = sorted(labels, key=lambda label: (-(exact[label] - quota[label]), label))
    for label in by_remainder[: n - sum(quota.values())]:
        quota[label] += 1
    chosen = [example for label in labels for example in by_label[label][: quota[label]]]
    rng.shuffle(chosen)  # mix the classes again
    return chosen


def classification_batches(dataset: ClassificationDataset, batch_size: int, pad_id: int) -> list[dict]:
    """Every example of ``dataset`` once, in batches sorted by length (less padding, same predictions).

    Each batch is ``collate_classification``'s dict (``input_ids`` and ``attention_mask`` ``(B, T)``,
    ``labels`` ``(B,)``); the order changes nothing in the metrics, which only count.
    """
    order = sorted(range(len(dataset)), key=lambda index: len(dataset[index][0]))
    return [
        collate_classification([dataset[index] for index in order[start : start + batch_size]], pad_id)
        for start in range(0, len(order), batch_size)
    ]


def epoch_batch_sampler(
    dataset: ClassificationDataset, batch_size: int, pad_id: int, seed: int, balanced: bool = False
) -> Callable:
    """``next_batch(index)`` for the training loop: epoch ``e`` walks an order seeded by ``seed + e``.

    The order is a permutation of the examples, or with ``balanced=True`` ``len(dataset)`` draws with
    replacement, example weight ``1 / count(its class)``, so each class fills about the same share of every
    batch. A batch is a pure function of its index (no sampler state), so the same seed gives the same batches.
    """
    steps_per_epoch = math.ceil(len(dataset) / batch_size)

    def next_batch(index: int) -> dict:
        epoch, position = divmod(index, steps_per_epoch)
        generator = torch.Generator().manual_seed(seed + epoch)
        if balanced:
            order = list(balanced_sampler(dataset.label_ids, generator))  # N draws, classes equally likely
        else:
            order = torch.randperm(len(dataset), generator=generator).tolist()  # (N,)
        chosen = order[position * batch_size : (position + 1) * batch_size]
        return collate_classification([dataset[i] for i in chosen], pad_id)

    return next_batch


# ----------------------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------------------


@torch.no_grad()
def predict(model: SequenceClassifier, batches: list[dict]) -> tuple[Tensor, Tensor]:
    """The class logits ``(N, C)`` and the true classes ``(N,)`` of every example in ``batches``."""
    device = next(model.parameters()).device
    logits, targets = [], []
    for batch in batches:
        batch_logits, _ = model(batch["input_ids"].to(device), batch["attention_mask"].to(device))  # (B, C)
        logits.append(batch_logits.float().cpu())
        targets.append(batch["labels"])
    return torch.cat(logits), torch.cat(targets)


def classification_metrics(logits: Tensor, targets: Tensor) -> dict:
    """Mean cross-entropy ``loss``, ``accuracy`` and ``macro_f1`` of the predictions (the arg-max of ``logits``
    ``(N, C)``), and the ``confusion`` matrix ``(C, C)`` (rows = true class, columns = predicted)."""
    predictions = logits.argmax(dim=-1)  # (N,)
    confusion = confusion_matrix(predictions, targets, logits.shape[1])  # (C, C)
    return {
        "loss": MF.cross_entropy(logits, targets).item(),
        "accuracy": accuracy(predictions, targets),
        "macro_f1": macro_f1(confusion),
        "confusion": confusion,
    }


def majority_baseline(data: LabelledData, split: str = "test", train: list | None = None) -> dict:
    """Always predict the most frequent training label: the floor every model must beat.

    ``train`` (default ``data.train``) are the examples whose majority counts (e.g. the few-label subset).
    """
    train = data.train if train is None else train
    counts = {label: sum(1 for _, y in train if y == label) for label in data.labels}
    majority = max(data.labels, key=lambda label: (counts[label], -data.labels.index(label)))
    targets = torch.tensor([data.labels.index(y) for _, y in data.split(split)])  # (N,)
    predictions = torch.full_like(targets, data.labels.index(majority))
    confusion = confusion_matrix(predictions, targets, len(data.labels))  # (C, C)
    return {"label": majority, "accuracy": accuracy(predictions, targets), "macro_f1": macro_f1(confusion)}


# ----------------------------------------------------------------------------------------------------------
# The model and its optimizer groups
# ----------------------------------------------------------------------------------------------------------


def load_backbone(config: FinetuneConfig) -> tuple[nn.Module, object, dict]:
    """The pretrained language model, tokenizer and saved config of ``config.from_run``; with
    ``from_scratch`` the same architecture re-initialised (seeded by ``config.seed``)."""
    try:
        backbone, tokenizer, saved = load_run(config.from_run)
    except ValueError as error:
        raise FinetuneConfigError(f"--from {config.from_run}: {error}") from None
    if config.from_scratch:
        architecture, settings = saved["model"]["architecture"], dict(saved["model"])
        settings.pop("architecture")
        torch.manual_seed(config.seed)
        backbone = build_model(architecture, **settings)
    return backbone, tokenizer, saved


def build_classifier(backbone: nn.Module, num_classes: int, config: FinetuneConfig) -> SequenceClassifier:
    """The classification head on ``backbone``, seeded by ``config.seed``, with the top layers re-initialised
    if asked (``--reinit-top``)."""
    torch.manual_seed(config.seed)
    model = SequenceClassifier(backbone, num_classes, pooling=config.pooling, dropout=config.dropout)
    strategies.reinit_top_layers(model, config.reinit_top, torch.Generator().manual_seed(config.seed))
    return model


def optimizer_groups(model: SequenceClassifier, config: FinetuneConfig, frozen_k: int) -> list[dict]:
    """AdamW groups for the strategy (the freezing is applied here too).

    * ``plain``: the trainable parameters only, decay / no-decay groups (:func:`minipt.optim.param_groups`);
    * ``discriminative``: one group per level, lr shrinking by ``lr_decay`` per level down;
    * ``gradual``: **every** parameter, grouped while all are trainable, then the model is frozen to its
      first stage; a frozen parameter has ``grad = None``, so AdamW gives it no state and no decay until its
      layer is unfrozen.

    With L2-SP the backbone's parameters get no weight decay (the penalty pulls them toward their pretrained
    values instead of toward 0); the head keeps plain weight decay.
    """
    if config.strategy == "gradual":
        strategies.freeze(model, 0)
        groups = param_groups(model, config.weight_decay)
        strategies.freeze(model, len(model.layers))  # stage 0: only the top trains
    else:
        strategies.freeze(model, frozen_k)
        if config.strategy == "discriminative":
            groups = strategies.discriminative_param_groups(model, config.lr, config.lr_decay, config.weight_decay)
        else:
            groups = param_groups(model, config.weight_decay)
    if config.l2sp > 0:
        backbone = {id(p) for p in model.backbone.parameters()}
        split_groups = []
        for group in groups:
            for in_backbone in (True, False):
                params = [p for p in group["params"] if (id(p) in backbone) == in_backbone]
                if params:
                    decay = 0.0 if in_backbone else group["weight_decay"]
                    split_groups.append({**group, "params": params, "weight_decay": decay})
        groups = split_groups
    return [group for group in groups if group["params"]]


def gradual_next_batch(
    next_batch: Callable[[int], dict], model: SequenceClassifier, every: int, floor: int
) -> Callable[[int], dict]:
    """Wrap ``next_batch`` so that, before each step's first batch, the model is frozen to the step's stage.

    The training loop knows nothing of strategies; it asks for micro-batch ``index`` at the start of every step,
    so this is where the schedule :func:`minipt.finetune.gradual_unfreezing_k` (never below ``floor`` frozen
    layers) is applied. Unfrozen parts take the training mode back; frozen ones stay in ``eval()``.
    (Finetuning runs without gradient accumulation, so micro-batch ``index`` is step ``index``.)
    """

    def wrapped(step: int) -> dict:
        k = max(strategies.gradual_unfreezing_k(step, every, len(model.layers)), floor)
        strategies.freeze(model, k)  # frozen parts: requires_grad False and eval(); the rest trainable
        for module in [model.embedding, *model.layers][(k + 1 if k > 0 else 0) :]:
            module.train(model.training)
        return next_batch(step)

    return wrapped


# ----------------------------------------------------------------------------------------------------------
# The job
# ----------------------------------------------------------------------------------------------------------


def check_new_run_dir(run_dir: Path) -> None:
    """A new run must not overwrite an old one: the folder must be absent or empty."""
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise FinetuneConfigError(f"--out {run_dir} already exists and is not empty; choose a new folder")


def resolve_max_len(config: FinetuneConfig, saved: dict) -> int:
    """``--max-len``, or the backbone's context (the Transformer's ``max_len``, the pretraining block size)."""
    model_max_len = saved["model"].get("max_len", saved["pretrain"]["block_size"])
    if config.max_len == 0:
        return model_max_len
    if saved["model"]["architecture"] == "transformer" and config.max_len > model_max_len:
        raise FinetuneConfigError(
            f"--max-len {config.max_len} exceeds the pretrained Transformer's {model_max_len} learned positions"
        )
    return config.max_len


def finetune(config: FinetuneConfig, run_dir: str | Path, progress: bool = True, verbose: bool = True) -> dict:
    """Finetune ``config.from_run``'s model on ``config.task`` into ``run_dir``; returns the summary dict.

    ``progress`` shows the training loop's progress bar; ``verbose`` prints the table of trainable parameters
    per layer before training.

    ``task`` of the form ``lm:PATH`` continues next-token training instead (see :func:`finetune_language_model`).
    """
    config.check()
    run_dir = Path(run_dir)
    check_new_run_dir(run_dir)
    if config.task.startswith(LM_TASK_PREFIX):
        return finetune_language_model(config, run_dir, progress, verbose)
    backbone, tokenizer, saved = load_backbone(config)
    data = load_task(config.task)
    max_len = resolve_max_len(config, saved)
    frozen_k = strategies.parse_freeze(config.freeze, len(backbone.layers))
    model = build_classifier(backbone, len(data.labels), config)

    # the data: a stratified few-label subset, token ids, batches
    train_examples = select_train_examples(data.train, config.train_examples, config.seed)
    validation_examples = select_train_examples(data.validation, config.val_examples, config.seed)
    test_examples = data.test
    add_cls = config.pooling == "first"  # the <cls> position only matters when it is the one read
    make_dataset = partial(ClassificationDataset, tokenizer=tokenizer, labels=data.labels, max_len=max_len,
                           add_cls=add_cls)
    train_set = make_dataset(train_examples)
    validation_batches = classification_batches(make_dataset(validation_examples), config.batch_size, tokenizer.pad_id)
    test_batches = classification_batches(make_dataset(test_examples), config.batch_size, tokenizer.pad_id)
    steps_per_epoch = math.ceil(len(train_set) / config.batch_size)
    steps = config.epochs * steps_per_epoch

    # the strategy
    groups = optimizer_groups(model, config, frozen_k)
    next_batch = epoch_batch_sampler(train_set, config.batch_size, tokenizer.pad_id, config.seed, config.balanced)
    if config.strategy == "gradual":  # spread the n_layers - k + 1 stages evenly over the run
        every = max(1, math.ceil(steps / (len(model.layers) - frozen_k + 1)))
        next_batch = gradual_next_batch(next_batch, model, every, floor=frozen_k)
    reference = strategies.snapshot(model) if config.l2sp > 0 else {}
    reference = {name: value for name, value in reference.items() if name.startswith("backbone.")}

    def loss_fn(model: SequenceClassifier, batch: dict) -> Tensor:
        _, loss = model(batch["input_ids"], batch["attention_mask"], batch["labels"])
        if config.l2sp > 0:
            loss = loss + strategies.l2sp_penalty(model, reference, config.l2sp)
        return loss

    def evaluate(model: SequenceClassifier) -> dict[str, float]:
        metrics = classification_metrics(*predict(model, validation_batches))
        return {"val_loss": metrics["loss"], "val_accuracy": metrics["accuracy"], "val_macro_f1": metrics["macro_f1"]}

    run_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save(run_dir / "tokenizer.json")
    write_json_atomic(
        run_dir / "config.json",
        {
            "finetune": asdict(config),
            "model": saved["model"],
            "classifier": model.config,
            "labels": data.labels,
            "max_len": max_len,
            "add_cls": add_cls,
            "pretrain": saved["pretrain"],
            "data": {"train_examples": len(train_examples), "validation_examples": len(validation_examples),
                     "test_examples": len(test_examples)},
        },
    )
    table = strategies.trainable_parameter_table(model)
    if verbose:
        print(strategies.format_parameter_table(table), flush=True)
    train_config = TrainConfig(
        steps=steps,
        lr=config.lr,
        weight_decay=config.weight_decay,
        warmup_steps=steps // 10,
        eval_every=steps_per_epoch,
        monitor=f"val_{config.select}",
        mode="max",
        patience=config.early_stopping or None,
        device=config.device,
        progress=progress,
        loss_unit="example",
    )
    start = time.perf_counter()
    result = train(model, next_batch=next_batch, loss_fn=loss_fn, evaluate=evaluate, config=train_config,
                   run_dir=run_dir, optimizer_groups=groups)
    wall_seconds = time.perf_counter() - start

    # the test split, scored once with the best checkpoint
    evaluations = {record["step"]: record for record in read_metrics(run_dir / "metrics.jsonl")}
    best_evaluation = evaluations.get(result.best_step, {})
    if config.strategy == "gradual":
        strategies.freeze(model, 0)  # count what trained by the end of the schedule
    trainable_params = model.num_parameters(trainable_only=True)
    model.load_state_dict(load_checkpoint(run_dir / "best.pt")["model"])
    model.eval()
    test = classification_metrics(*predict(model, test_batches))
    write_test_report(run_dir, test, data.labels, title=f"{data.name} test split ({config.task})")
    summary = {
        "task": data.name,
        "labels": data.labels,
        "trainable_params": trainable_params,
        "total_params": model.num_parameters(),
        "parameter_table": table,
        "train_examples": len(train_examples),
        "best_val_accuracy": best_evaluation.get("val_accuracy"),
        "best_val_macro_f1": best_evaluation.get("val_macro_f1"),
        "best_step": result.best_step,
        "steps": result.step,
        "stopped_early": result.stopped_early,
        "test_accuracy": test["accuracy"],
        "test_macro_f1": test["macro_f1"],
        "test_examples": len(test_examples),
        "majority_baseline": majority_baseline(data, train=train_examples),
        "wall_seconds": wall_seconds,
        "seconds_per_step": wall_seconds / max(result.step, 1),
        "settings": asdict(config),
    }
    write_json_atomic(run_dir / "summary.json", summary)
    return summary


def write_test_report(run_dir: Path, metrics: dict, labels: list[str], title: str) -> str:
    """``classification_report.txt`` (per-class precision / recall / F1) and ``confusion.png``; returns the text."""
    report = classification_report(metrics["confusion"], labels)
    (run_dir / "classification_report.txt").write_text(f"{title}\n\n{report}\n", encoding="utf-8")
    plot_confusion_matrix(metrics["confusion"], labels, run_dir / "confusion.png", title=title)
    return report


def finetune_language_model(config: FinetuneConfig, run_dir: Path, progress: bool = True, verbose: bool = True) -> dict:
    """Domain adaptation: continue next-token training of the pretrained model on the text file after ``lm:``.

    The pretraining run's tokenizer encodes the new text (unknown characters become ``<unk>``); the lowest
    ``--freeze`` layers and the embedding stay fixed; the objective is pretraining's own
    (:func:`minipt.pretrain.causal_lm_objective`), ``--epochs`` passes' worth of random windows. Summary:
    validation loss and perplexity before and after.
    """
    path = config.task[len(LM_TASK_PREFIX) :]
    backbone, tokenizer, saved = load_backbone(config)
    if saved["pretrain"]["objective"] != "clm":
        raise FinetuneConfigError(f"--task lm:... needs a --objective clm pretraining run; {config.from_run} is "
                                  f"{saved['pretrain']['objective']}")
    block_size = resolve_max_len(config, saved)
    pretrain_config = PretrainConfig(**{**saved["pretrain"], "batch_size": config.batch_size,
                                        "block_size": block_size, "seed": config.seed, "device": config.device})
    ids = torch.tensor(tokenizer.encode(read_text(path)), dtype=torch.long)
    train_ids, val_ids = lm_split(ids, pretrain_config.val_fraction)
    if len(val_ids) < block_size + 1:
        raise DataError(f"{path}: too short for finetuning ({len(ids)} tokens); the validation part needs "
                        f"at least --max-len + 1 = {block_size + 1}")
    objective = causal_lm_objective(train_ids, val_ids, pretrain_config)
    frozen_k = strategies.parse_freeze(config.freeze, len(backbone.layers))
    strategies.freeze(backbone, frozen_k)
    table = strategies.trainable_parameter_table(backbone)
    if verbose:
        print(strategies.format_parameter_table(table), flush=True)
    before = objective.evaluate(backbone.eval())
    steps = max(2, config.epochs * math.ceil(len(train_ids) / (config.batch_size * block_size)))
    run_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save(run_dir / "tokenizer.json")
    write_json_atomic(run_dir / "config.json", {"finetune": asdict(config), "model": saved["model"],
                                                "pretrain": {**asdict(pretrain_config)}})
    train_config = TrainConfig(steps=steps, lr=config.lr, weight_decay=config.weight_decay, warmup_steps=steps // 10,
                               eval_every=max(1, steps // config.epochs), patience=config.early_stopping or None,
                               device=config.device, progress=progress)
    start = time.perf_counter()
    result: TrainResult = train(
        backbone, next_batch=objective.next_batch, loss_fn=objective.loss_fn, evaluate=objective.evaluate,
        config=train_config, run_dir=run_dir, generator=objective.generator,
        optimizer_groups=param_groups(backbone, config.weight_decay),
    )
    wall_seconds = time.perf_counter() - start
    summary = {
        "task": config.task,
        "trainable_params": backbone.num_parameters(trainable_only=True),
        "total_params": backbone.num_parameters(),
        "parameter_table": table,
        "val_loss_before": before["val_loss"],
        "perplexity_before": before["perplexity"],
        "best_val_loss": result.best_metric,
        "perplexity_after": math.exp(result.best_metric),
        "steps": result.step,
        "wall_seconds": wall_seconds,
        "seconds_per_step": wall_seconds / max(result.step, 1),
        "settings": asdict(config),
    }
    write_json_atomic(run_dir / "summary.json", summary)
    return summary


# ----------------------------------------------------------------------------------------------------------
# Reading a finetuning run back: minipt evaluate
# ----------------------------------------------------------------------------------------------------------


def read_finetune_run(run_dir: Path) -> dict:
    """The ``config.json`` of a finetuning run, with a clear error when the folder is not one."""
    path = run_dir / "config.json"
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise FinetuneConfigError(f"--from {run_dir}: cannot read {path} ({error})") from None
    if "classifier" not in saved:
        raise FinetuneConfigError(f"--from {run_dir}: not a classification run (config.json has no classifier)")
    if not (run_dir / "best.pt").exists():
        raise FinetuneConfigError(f"--from {run_dir}: there is no best.pt")
    return saved


def load_classifier(run_dir: str | Path, device: str = "cpu") -> tuple[SequenceClassifier, object, dict]:
    """The best checkpoint's classifier of a finetuning run (in eval mode), its tokenizer and its config."""
    run_dir = Path(run_dir)
    saved = read_finetune_run(run_dir)
    settings = dict(saved["model"])
    backbone = build_model(settings.pop("architecture"), **settings)
    model = SequenceClassifier(backbone, **saved["classifier"])
    model.load_state_dict(load_checkpoint(run_dir / "best.pt")["model"])
    return model.to(resolve_device(device)).eval(), load_tokenizer(run_dir / "tokenizer.json"), saved


def evaluate_run(run_dir: str | Path, task: str | None = None, split: str = "test", device: str = "cpu") -> dict:
    """Score a finetuning run's best checkpoint on ``split`` of ``task`` (default: the task it was trained on).

    Returns ``accuracy``, ``macro_f1``, ``confusion`` and the per-class ``report`` text.
    """
    model, tokenizer, saved = load_classifier(run_dir, device)
    data = load_task(task or saved["finetune"]["task"])
    if data.labels != saved["labels"]:
        raise FinetuneConfigError(
            f"--task {task}: its labels {data.labels} differ from the run's {saved['labels']}"
        )
    dataset = ClassificationDataset(
        data.split(split), tokenizer, data.labels, saved["max_len"], add_cls=saved["add_cls"]
    )
    batches = classification_batches(dataset, saved["finetune"]["batch_size"], tokenizer.pad_id)
    metrics = classification_metrics(*predict(model, batches))
    return {**metrics, "report": classification_report(metrics["confusion"], data.labels), "examples": len(dataset)}


def config_keys() -> list[str]:
    """The setting names of :class:`FinetuneConfig`, in order."""
    return [field.name for field in fields(FinetuneConfig)]
