r"""Finetuning a pretrained language model on a classification task: the job behind ``minipt finetune``.

The pieces, top to bottom in :func:`finetune`:

1. the backbone: the pretrained language model of a run folder (:func:`minipt.jobs.pretrain.load_run`) or of a
   Hugging Face GPT-2 or BERT folder (``hf-gpt2:FOLDER``, ``hf-bert:FOLDER``,
   :func:`minipt.jobs.sources.load_pretrained`; a BERT classifies through its pooler), or — the control,
   ``from_scratch=True`` — a freshly initialised model of the same architecture with the same tokenizer;
2. the classifier: :class:`minipt.models.SequenceClassifier` (pooling + one linear layer) on that backbone;
3. the strategy (:mod:`minipt.training.strategies`): freeze the embedding and the lowest ``k`` layers; or unfreeze them
   gradually (ULMFiT); or give every layer its own learning rate; optionally re-initialise the top layers and
   pull the pretrained weights toward their starting point (L2-SP);
4. the objective, for :func:`minipt.training.loop.train` (the one training loop): mean cross-entropy of the class logits

   .. math:: \mathcal{L} = \frac{1}{B}\sum_{b=1}^{B} -\log \operatorname{softmax}(z_b)_{y_b}
             \; + \; \lambda_{\text{L2-SP}} \sum_{w} \lVert w - w^0 \rVert^2 ,

   on shuffled mini-batches (a new permutation of the training examples each epoch), evaluated once per epoch
   on the validation split; the best checkpoint is the one with the best validation ``select`` metric
   (accuracy or macro-F1);
5. the test split, scored once with that best checkpoint: accuracy, per-class precision / recall / F1, macro-F1
   and the confusion matrix (``confusion.png``, ``classification_report.txt``, ``summary.json``).

More next-token training of a language model on new text (domain adaptation) is a pretraining option:
``minipt pretrain --init-from RUN --corpus FILE`` (:func:`minipt.pretrain.pretrain`).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from minipt import functional as MF
from minipt.data import TASKS, LabelledData, load_task
from minipt.data.datasets import ClassificationDataset, balanced_sampler, collate_classification
from minipt.data.tokenizers import Tokenizer, load_tokenizer
from minipt.errors import MiniptError, warn
from minipt.jobs.job import FINETUNE
from minipt.jobs.pretrain import check_model_section
from minipt.jobs.sources import HF_BERT, HF_GPT2, build_backbone, load_pretrained
from minipt.metrics import accuracy, classification_report, confusion_matrix, macro_f1
from minipt.models import SequenceClassifier
from minipt.models.heads import POOLINGS
from minipt.nn import set_fast
from minipt.plots import plot_confusion_matrix, read_metrics
from minipt.runs import fingerprints
from minipt.runs.folder import lock_run, new_run_dir, read_config, read_json, write_atomic, write_config, write_json
from minipt.runs.settings import (
    COUNT,
    NON_NEGATIVE,
    POSITIVE_INT,
    absolute_path,
    between,
    check_settings,
    compile_setting,
    device_setting,
    lr_setting,
    one_of,
    seed_setting,
    setting,
    settings_from_saved,
    threads_setting,
    weight_decay_setting,
)
from minipt.training import distributed, frozen_cache, interrupts, strategies
from minipt.training.checkpoint import check_architecture, load_checkpoint, load_weights
from minipt.training.loop import TrainConfig, TrainResult, resolve_device, standard_callbacks, train, use_threads

__all__ = [
    "FinetuneConfig",
    "SELECT_METRICS",
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

SELECT_METRICS = ("accuracy", "macro_f1")  # the validation metric that picks best.pt
UNKNOWN_WARNING_SHARE = 0.2  # more of the training tokens <unk> than this: the model cannot read the texts


@dataclass
class FinetuneConfig:
    """Every setting of a finetuning run; the names are the CLI flags with underscores (``--from`` is
    ``from_run``)."""

    from_run: str = setting(help="the pretraining run folder (its model, tokenizer and settings), hf-gpt2:FOLDER "
                            "(a Hugging Face GPT-2 folder) or hf-bert:FOLDER (a BERT folder with vocab.txt)",
                            flag="--from", metavar="RUN_DIR")
    task: str = setting("shakespeare-verse", "shakespeare-verse, shakespeare-genre, or a labelled CSV/TSV/JSONL file")
    text_column: str = setting("text", "the column of a labelled file that holds the text; two columns A,B make "
                               "sentence pairs (BERT: [CLS] A [SEP] B [SEP], segments 0 and 1)", metavar="NAME")
    label_column: str = setting("label", "the column of a labelled file that holds the label", metavar="NAME")
    freeze: str = setting("none", "embedding + this many lowest layers frozen: an integer, 'all' (a linear probe) "
                          "or 'none'")
    strategy: str = setting("plain", "plain, gradual (ULMFiT: unfreeze one more layer from the top in equal stages) "
                            "or discriminative (each layer down learns at --lr-decay times the rate of the one "
                            "above)", rule=one_of(*strategies.STRATEGIES))
    epochs: int = setting(5, "passes over the labelled training examples", rule=POSITIVE_INT)
    lr: float = lr_setting(1e-3)
    batch_size: int = setting(32, "examples per batch", rule=POSITIVE_INT)
    max_len: int = setting(0, "tokens kept per example (0: the pretrained model's context length)", rule=COUNT)
    pooling: str = setting("auto", "how the per-token vectors become one: mean, first, last, or pooler (BERT's "
                           "dense + tanh on [CLS]); auto: pooler for hf-bert:, mean otherwise",
                           rule=one_of("auto", *POOLINGS))
    dropout: float = setting(0.1, "dropout before the classification head", rule=between(0, 1, "[)"))
    weight_decay: float = weight_decay_setting(0.01)
    lr_decay: float = setting(1 / 2.6, "per-layer learning-rate factor of --strategy discriminative",
                              rule=between(0, 1, "(]"))
    l2sp: float = setting(0.0, "strength of the L2-SP penalty pulling pretrained weights toward their start (0: off)",
                          rule=NON_NEGATIVE)
    reinit_top: int = setting(0, "re-initialise this many top layers before finetuning", rule=COUNT)
    patience: int = setting(0, "stop after this many epochs without a better validation --select metric "
                            "(0: never)", rule=COUNT, aliases=("--early-stopping",))
    train_examples: int = setting(0, "use only this many labelled training examples, a stratified seeded sample "
                                  "(0: all)", rule=COUNT)
    val_examples: int = setting(0, "score only this many validation examples after each epoch, a stratified sample "
                                "(0: all; the test split is always scored in full)", rule=COUNT)
    seed: int = seed_setting(0)
    device: str = device_setting()
    threads: int = threads_setting()
    compile: bool = compile_setting()
    from_scratch: bool = setting(False, "random initialisation of the same architecture (the control; --from still "
                                 "names the run whose architecture and tokenizer are copied)")
    balanced: bool = setting(True, "class-balanced batches: every class drawn equally often on average (against "
                             "collapsing to the majority class when labels are few; --no-balanced: each example "
                             "once per epoch)")
    no_cache: bool = setting(False, "run the frozen lower layers at every step instead of computing their output "
                             "once per example (slower; the same numbers up to float rounding)")
    select: str = setting("macro_f1", "validation metric that picks best.pt and decides early stopping: macro_f1 "
                          "(every class counts alike) or accuracy (rewards always answering the majority class on "
                          "imbalanced tasks)", rule=one_of(*SELECT_METRICS))

    def check(self) -> None:
        """Raise :class:`~minipt.errors.MiniptError` naming the first invalid setting (as its ``--flag``)."""
        if self.task.startswith("lm:"):
            raise MiniptError(f"--task {self.task}: more next-token training on a text file is now "
                              f"`minipt pretrain --init-from RUN_DIR --corpus {self.task[3:]}`")
        check_settings(self)
        if self.text_column == self.label_column:
            raise MiniptError(f"--text-column and --label-column are both {self.text_column!r}; the text and the "
                              "label must be two different columns")
        if self.pooling == "auto":  # resolved once, so that the run's config.json says what was used
            self.pooling = "pooler" if self.from_run.startswith(HF_BERT) else "mean"
        resolve_device(self.device)  # no CUDA: fail now, before anything is written


# ----------------------------------------------------------------------------------------------------------
# Data: the task, the few-label subset and the batches
# ----------------------------------------------------------------------------------------------------------


def load_labelled_task(task: str, text_column: str = "text", label_column: str = "label") -> LabelledData:
    """A built-in task, or a labelled file read with its ``--text-column`` and ``--label-column``."""
    if task in TASKS:
        if (text_column, label_column) != ("text", "label"):
            raise MiniptError(f"--text-column and --label-column name the columns of a labelled file; --task {task} "
                              "is built in")
        return load_task(task)
    if "," in text_column:
        return load_pair_task(task, text_column, label_column)
    return load_task(task, text_column=text_column, label_column=label_column)


def load_pair_task(task: str, text_columns: str, label_column: str) -> LabelledData:
    """A labelled file with two text columns ``A,B``: every example's text is the pair ``(a, b)``.

    The file is read once per column; a row's split depends only on its label, its ``split`` cell and the seed,
    never on its text, so the two readings list the same rows in the same order and pair up row by row.
    """
    columns = text_columns.split(",")
    if len(columns) != 2 or not all(columns):
        raise MiniptError(f"--text-column {text_columns}: name one column, or two separated by a comma (A,B)")
    first, second = (load_task(task, text_column=column, label_column=label_column) for column in columns)
    splits = {split: [((a, b), label) for (a, label), (b, _) in zip(first.split(split), second.split(split),
                                                                     strict=True)]
              for split in ("train", "validation", "test")}
    return LabelledData(splits["train"], splits["validation"], splits["test"], first.labels, first.name)


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
    items: Sequence[tuple[Any, int]], batch_size: int, collate: Callable[[list], dict], seed: int,
    balanced: bool = False,
) -> Callable[[int], dict]:
    """``next_batch(index)`` for the training loop: epoch ``e`` walks an order seeded by ``seed + e``.

    ``items`` are ``(example, label id)`` pairs — token ids (a :class:`ClassificationDataset`) or cached hidden
    states (:mod:`minipt.training.frozen_cache`) — and ``collate`` turns a list of them into a batch. The order is a
    permutation of the items, or with ``balanced=True`` ``len(items)`` draws with replacement, item weight
    ``1 / count(its class)``, so each class fills about the same share of every batch. A batch is a pure
    function of its index (no sampler state), so the same seed gives the same batches whatever the items are.
    Under torchrun each rank walks its own share of the epoch's order (:func:`minipt.training.distributed.shard`, the
    distributed sampler's rule), so together the ranks see every item once per epoch.
    """
    steps_per_epoch = math.ceil(math.ceil(len(items) / distributed.world_size()) / batch_size)
    label_ids = [label for _, label in items]

    def next_batch(index: int) -> dict:
        epoch, position = divmod(index, steps_per_epoch)
        generator = torch.Generator().manual_seed(seed + epoch)
        if balanced:
            order = list(balanced_sampler(label_ids, generator))  # N draws, classes equally likely
        else:
            order = torch.randperm(len(items), generator=generator).tolist()  # (N,)
        order = distributed.shard(order)  # (ceil(N / ranks),): this rank's share
        chosen = order[position * batch_size : (position + 1) * batch_size]
        return collate([items[i] for i in chosen])

    return next_batch


# ----------------------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------------------


def classify_batch(model: SequenceClassifier, batch: dict, from_layer: int | None = None) -> tuple[Tensor, Tensor]:
    """The class logits ``(B, C)`` of a batch and its mean cross-entropy: a batch of token ids (``input_ids``),
    or with ``from_layer=k`` the frozen layers' cached output (``hidden``, :mod:`minipt.training.frozen_cache`),
    which enters the model at layer ``k``."""
    device = next(model.parameters()).device
    inputs = batch["input_ids"] if from_layer is None else batch["hidden"]
    labels = batch["labels"].to(device)  # (B,)
    return model(inputs.to(device), batch["attention_mask"].to(device), labels, from_layer=from_layer)


@torch.no_grad()
def predict(model: SequenceClassifier, batches: list[dict], from_layer: int | None = None) -> tuple[Tensor, Tensor]:
    """The class logits ``(N, C)`` and the true classes ``(N,)`` of every example in ``batches`` (token ids, or
    with ``from_layer`` cached hidden states: see :func:`classify_batch`)."""
    logits, targets = [], []
    for batch in batches:
        batch_logits, _ = classify_batch(model, batch, from_layer)  # (B, C)
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
# The model
# ----------------------------------------------------------------------------------------------------------


def load_backbone(config: FinetuneConfig) -> tuple[nn.Module, Tokenizer, dict]:
    """The pretrained language model, tokenizer and saved config of ``config.from_run``; with
    ``from_scratch`` the same architecture re-initialised (seeded by ``config.seed``). The backbone computes on
    its fast path (:func:`minipt.nn.set_fast`)."""
    try:
        backbone, tokenizer, saved = load_pretrained(config.from_run, fast=True)  # a run, hf-gpt2: or hf-bert:
    except ValueError as error:
        message = str(error) if str(error).startswith("--from") else f"--from {config.from_run}: {error}"
        raise MiniptError(message) from None
    if config.from_scratch:
        settings = dict(saved["model"])
        architecture = settings.pop("architecture")
        torch.manual_seed(config.seed)
        backbone = set_fast(build_backbone(architecture, **settings), True)
    return backbone, tokenizer, saved


def build_classifier(backbone: nn.Module, num_classes: int, config: FinetuneConfig) -> SequenceClassifier:
    """The classification head on ``backbone``, seeded by ``config.seed``, with the top layers re-initialised
    if asked (``--reinit-top``)."""
    torch.manual_seed(config.seed)
    model = SequenceClassifier(backbone, num_classes, pooling=config.pooling, dropout=config.dropout)
    strategies.reinit_top_layers(model, config.reinit_top, torch.Generator().manual_seed(config.seed))
    return model


def resolve_max_len(config: FinetuneConfig, saved: dict) -> int:
    """``--max-len``, or the backbone's context (the Transformer's ``max_len``, the pretraining block size)."""
    model_max_len = saved["model"].get("max_len", saved["pretrain"]["block_size"])
    if config.max_len == 0:
        return model_max_len
    if saved["model"]["architecture"] == "transformer" and config.max_len > model_max_len:
        raise MiniptError(
            f"--max-len {config.max_len} exceeds the pretrained Transformer's {model_max_len} learned positions"
        )
    return config.max_len


# ----------------------------------------------------------------------------------------------------------
# The job
# ----------------------------------------------------------------------------------------------------------


@dataclass
class FinetuneData:
    """The task's examples as the run uses them: the few-label training subset, the batches scored on the
    validation and test splits, and how the examples were encoded (``max_len`` tokens, ``<cls>`` or not)."""

    task: LabelledData
    train_examples: list[tuple[str, str]]
    validation_examples: list[tuple[str, str]]
    train_set: ClassificationDataset
    validation_batches: list[dict]
    test_batches: list[dict]
    max_len: int
    add_cls: bool

    def steps_per_epoch(self, batch_size: int) -> int:
        """Batches per epoch of each rank (under torchrun the ranks share the epoch's examples)."""
        return math.ceil(math.ceil(len(self.train_set) / distributed.world_size()) / batch_size)


def prepare_data(config: FinetuneConfig, task: LabelledData, tokenizer: Tokenizer, max_len: int) -> FinetuneData:
    """A stratified few-label subset of the training (and validation) split, encoded; the validation and test
    batches."""
    train_examples = select_train_examples(task.train, config.train_examples, config.seed)
    check_every_class_trains(train_examples, task, config.train_examples)
    validation_examples = select_train_examples(task.validation, config.val_examples, config.seed)
    add_cls = config.pooling in ("first", "pooler")  # the <cls> position only matters when it is the one read
    make_dataset = partial(ClassificationDataset, tokenizer=tokenizer, labels=task.labels, max_len=max_len,
                           add_cls=add_cls)
    validation_batches = classification_batches(make_dataset(validation_examples), config.batch_size, tokenizer.pad_id)
    test_batches = classification_batches(make_dataset(task.test), config.batch_size, tokenizer.pad_id)
    train_set = make_dataset(train_examples)
    warn_unknown_tokens(train_set, train_examples, tokenizer, config.task, skip_first=add_cls)
    return FinetuneData(task, train_examples, validation_examples, train_set, validation_batches, test_batches,
                        max_len, add_cls)


def check_every_class_trains(train_examples: list[tuple[str, str]], task: LabelledData, asked: int) -> None:
    """Every class needs at least one training example (``--train-examples`` may take too few): an error."""
    if len(train_examples) < len(task.labels):
        raise MiniptError(f"--train-examples {asked} is fewer than the {len(task.labels)} classes of {task.name}; "
                          f"take at least {len(task.labels)}")
    seen = {label for _, label in train_examples}
    missing = [label for label in task.labels if label not in seen]
    if missing:
        raise MiniptError(f"--train-examples {asked} leaves class {missing[0]!r} of {task.name} without a training "
                          "example (its share of the file is too small); take more")


def warn_unknown_tokens(train_set: ClassificationDataset, train_examples: list[tuple[str, str]],
                        tokenizer: Tokenizer, task_name: str, skip_first: bool) -> None:
    """Warn when more than 20% of the training tokens are ``<unk>`` (characters the pretraining corpus never had),
    with the share and one such character. ``skip_first``: each example starts with ``<cls>``, not counted."""
    unk = tokenizer.unk_id
    if unk == getattr(tokenizer, "eos_id", None):  # GPT-2's byte-level tokenizer: no <unk> of its own
        return
    tokens = [ids[1:] if skip_first else ids for ids, _ in train_set]
    total, unknown = sum(map(len, tokens)), sum(ids.count(unk) for ids in tokens)
    if total == 0 or unknown / total <= UNKNOWN_WARNING_SHARE:
        return
    example = next((char for text, _ in train_examples for char in text if tokenizer.encode(char) == [unk]), "?")
    warn(f"{task_name}: {unknown / total:.0%} of the training tokens are <unk> (characters the pretraining corpus "
         f"never had, e.g. {example!r}); the model cannot read them")


def uses_cache(config: FinetuneConfig, frozen_k: int) -> bool:
    """The frozen lower layers are computed once per example (:mod:`minipt.training.frozen_cache`) when they stay frozen
    for the whole run: the plain strategy with the embedding and at least one layer frozen, unless
    ``--no-cache``."""
    return config.strategy == "plain" and frozen_k > 0 and not config.no_cache


def classification_objective(
    model: SequenceClassifier, config: FinetuneConfig, data: FinetuneData, frozen_k: int, pad_id: int
) -> tuple[Callable, Callable, Callable]:
    """``next_batch``, ``loss_fn`` (cross-entropy, plus the L2-SP penalty when asked) and ``evaluate``
    (validation loss, accuracy and macro-F1) for the training loop.

    With the cache (:func:`uses_cache`), the batches hold the frozen layers' output instead of token ids, computed
    here once for every training and validation example; the numbers are the same up to float rounding.
    """
    reference = strategies.snapshot(model) if config.l2sp > 0 else {}
    reference = {name: value for name, value in reference.items() if name.startswith("backbone.")}
    if uses_cache(config, frozen_k):
        model.to(resolve_device(config.device))
        items = frozen_cache.cache_lower_layers(model, data.train_set, frozen_k, pad_id)
        collate = frozen_cache.collate_hidden
        validation = frozen_cache.cache_batches(model, data.validation_batches, frozen_k)
        from_layer = frozen_k  # the batches hold the frozen layers' output, which enters the model at layer k
    else:
        items, collate = data.train_set, partial(collate_classification, pad_id=pad_id)
        validation, from_layer = data.validation_batches, None

    def loss_fn(model: SequenceClassifier, batch: dict) -> Tensor:
        _, loss = classify_batch(model, batch, from_layer)
        if config.l2sp > 0:
            loss = loss + strategies.l2sp_penalty(model, reference, config.l2sp)
        return loss

    def evaluate(model: SequenceClassifier) -> dict[str, float]:
        metrics = classification_metrics(*predict(model, validation, from_layer))
        return {"val_loss": metrics["loss"], "val_accuracy": metrics["accuracy"], "val_macro_f1": metrics["macro_f1"]}

    next_batch = epoch_batch_sampler(items, config.batch_size, collate, config.seed, config.balanced)
    return next_batch, loss_fn, evaluate


def train_config(config: FinetuneConfig, steps: int, steps_per_epoch: int, progress: bool) -> TrainConfig:
    """The loop's settings: one evaluation per epoch, best.pt by the ``select`` metric, 10% warmup."""
    return TrainConfig(steps=steps, lr=config.lr, weight_decay=config.weight_decay, warmup=steps // 10,
                       eval_every=steps_per_epoch, monitor=f"val_{config.select}", mode="max",
                       patience=config.patience or None, device=config.device, progress=progress, loss_unit="example",
                       fast_optimizer=True)


def write_run_files(run_dir: Path, config: FinetuneConfig, tokenizer: Tokenizer, saved: dict,
                    model: SequenceClassifier, data: FinetuneData) -> None:
    """``tokenizer.json`` and ``config.json`` (what :func:`load_classifier` and :func:`evaluate_run` read)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save(run_dir / "tokenizer.json")
    write_config(run_dir, {
        "finetune": asdict(config),
        "model": saved["model"],
        "classifier": model.config,
        "labels": data.task.labels,
        "max_len": data.max_len,
        "add_cls": data.add_cls,
        "pretrain": saved["pretrain"],
        "data": {"train_examples": len(data.train_examples), "validation_examples": len(data.validation_examples),
                 "test_examples": len(data.task.test), "task_file": fingerprints.fingerprint(config.task, TASKS)},
    })


def finetune(
    config: FinetuneConfig, run_dir: str | Path, progress: bool = True, verbose: bool = True, resume: bool = False,
    on_start: Callable[[], None] | None = None,
    score_test: bool = True,
) -> dict:
    """Finetune ``config.from_run``'s model on ``config.task`` into ``run_dir``; returns the summary dict.

    ``progress`` shows the training loop's progress bar; ``verbose`` prints the table of trainable parameters
    per layer before training. ``resume=True`` continues the interrupted run in ``run_dir`` from its ``last.pt``
    with its saved settings (``config`` then only supplies ``device`` and ``threads``). A new run that fails or
    is interrupted before its first ``last.pt`` leaves no folder (:func:`minipt.runs.folder.new_run_dir`); the run
    folder is locked while the job runs (:func:`minipt.runs.folder.lock_run`: one process per run).
    Under torchrun the ranks share each epoch's examples, rank 0 writes the run, and every rank returns rank 0's
    summary. The run records its labelled file and ``--from`` run as absolute paths, so it continues and is
    evaluated from any working directory. ``on_start()`` is called once the run really starts (its backbone, data
    and folder are ready; the command line prints "writing the run into RUN" there). ``score_test=False`` leaves
    the test split unread (a candidate of a selection on validation; the chosen one is scored afterwards with
    :func:`evaluate_run`): the summary then holds validation numbers only.
    """
    run_dir = Path(run_dir)
    with interrupts.in_run(run_dir, "finetune"):  # Ctrl-C: the message says what this run saved
        if resume:
            with distributed.on_main(lambda: lock_run(run_dir)):  # one process per run
                config = resumed_config(config, run_dir)
                config.check()
                return finetune_run(config, run_dir, progress, verbose, resume=True, on_start=on_start,
                                    score_test=score_test)
        config.check()  # the settings and the device, before anything is written
        config = replace(config, task=absolute_path(config.task, TASKS), from_run=absolute_source(config.from_run))
        with distributed.on_main(lambda: new_run_dir(run_dir)):  # checked and locked by rank 0
            return finetune_run(config, run_dir, progress, verbose, resume=False, on_start=on_start,
                                score_test=score_test)


def absolute_source(from_run: str) -> str:
    """``--from`` as a run records it: an absolute run folder, or ``hf-gpt2:`` / ``hf-bert:`` and an absolute
    folder."""
    for prefix in (HF_GPT2, HF_BERT):
        if from_run.startswith(prefix):
            return prefix + absolute_path(from_run.removeprefix(prefix))
    return absolute_path(from_run)


def check_files_are_there(config: FinetuneConfig, run_dir: Path, flag: str) -> None:
    """The labelled file and the pretraining run a finetuning run recorded must still be there: one line with the
    path looked for."""
    if config.task not in TASKS and not Path(config.task).is_file():
        raise MiniptError(f"{flag} {run_dir}: its labelled file is not at {Path(config.task).absolute()} (moved or "
                          "deleted?); put it back there" + (", or pass --task FILE" if flag == "--from" else ""))
    source = config.from_run.removeprefix(HF_GPT2).removeprefix(HF_BERT)
    if flag == "--resume" and not Path(source).is_dir():
        raise MiniptError(f"--resume {run_dir}: the run it finetunes is not at {Path(source).absolute()} (moved or "
                          "deleted?); put it back there")


def resumed_config(config: FinetuneConfig, run_dir: Path) -> FinetuneConfig:
    """The saved settings of the unfinished finetuning run in ``run_dir``, with ``config``'s device and threads;
    its labelled file must be unchanged. A run whose training ended but whose test split was not scored (Ctrl-C
    came then) is unfinished: resuming it scores the test split."""
    saved = read_config(run_dir)
    if not FINETUNE.made(saved):
        raise MiniptError(f"--resume {run_dir} is a pretraining run; continue it with minipt pretrain --resume")
    saved_config = check_finetune_sections(saved, run_dir / "config.json")
    if not (run_dir / "last.pt").exists():
        raise MiniptError(f"--resume {run_dir}: there is no last.pt to continue from")
    if "test_accuracy" in (read_json(run_dir / "summary.json") if (run_dir / "summary.json").exists() else {}):
        raise MiniptError(f"--resume {run_dir}: the run is finished (summary.json); start a new one with --out")
    check_files_are_there(saved_config, run_dir, "--resume")
    fingerprints.check_unchanged(saved.get("data", {}).get("task_file"), saved_config.task, f"--resume {run_dir}")
    return FINETUNE.resumed(saved_config, config)


def check_finetune_sections(saved: dict, path: Path) -> FinetuneConfig:
    """The sections of a finetuning run's ``config.json`` that reading it back needs, checked (a missing section
    or an unknown key is one line naming it); returns the run's settings."""
    config = settings_from_saved(FinetuneConfig, saved, "finetune", path)
    check_model_section(saved, path)
    classifier = saved.get("classifier")
    if not isinstance(classifier, dict):
        raise MiniptError(f"{path}: no 'classifier' section (a config.json that minipt wrote has one; was it edited?)")
    for key in classifier:
        if key not in ("num_classes", "pooling", "dropout"):
            raise MiniptError(f"{path}: section 'classifier': unknown key {key!r}")
    expected = {"labels": list, "max_len": int, "add_cls": bool}
    for key, kind in expected.items():
        if not isinstance(saved.get(key), kind):
            raise MiniptError(f"{path}: {key!r} is missing or not a {kind.__name__} (a config.json that minipt wrote "
                              "has it; was it edited?)")
    return config


def finetune_run(config: FinetuneConfig, run_dir: Path, progress: bool, verbose: bool, resume: bool,
                 on_start: Callable[[], None] | None = None, score_test: bool = True) -> dict:
    """The body of :func:`finetune`: backbone, task, classifier, strategy, the training loop, the test split."""
    distributed.barrier()  # under torchrun: every rank checked the folder before rank 0 writes into it
    distributed.log_global_batch(config.batch_size, 1, "examples")
    use_threads(config.threads)
    backbone, tokenizer, saved = load_backbone(config)
    task = load_labelled_task(config.task, config.text_column, config.label_column)
    max_len = resolve_max_len(config, saved)
    frozen_k = strategies.parse_freeze(config.freeze, len(backbone.layers))
    model = build_classifier(backbone, len(task.labels), config)
    if config.compile:
        model.compile()  # in place: the state_dict's names stay the same
    data = prepare_data(config, task, tokenizer, max_len)
    steps_per_epoch = data.steps_per_epoch(config.batch_size)
    steps = config.epochs * steps_per_epoch

    # the strategy: which parameters train, at what learning rates, and when
    groups = strategies.optimizer_groups(model, config.strategy, frozen_k, lr=config.lr,
                                         weight_decay=config.weight_decay, lr_decay=config.lr_decay, l2sp=config.l2sp)
    loop_config = train_config(config, steps, steps_per_epoch, progress)
    callbacks = standard_callbacks(loop_config, run_dir)  # the stop on Ctrl-C, metrics.jsonl, the progress bar
    if config.strategy == "gradual":  # spread the n_layers - k + 1 stages evenly over the run
        every = max(1, math.ceil(steps / (len(model.layers) - frozen_k + 1)))
        callbacks.append(strategies.GradualUnfreezing(every, floor=frozen_k))
    if not resume and distributed.is_main():
        write_run_files(run_dir, config, tokenizer, saved, model, data)
    if on_start is not None:
        on_start()
    table = strategies.trainable_parameter_table(model)
    if verbose and distributed.is_main():
        print(strategies.format_parameter_table(table), flush=True)
    start = time.perf_counter()  # the wall time counts computing the cache
    next_batch, loss_fn, evaluate = classification_objective(model, config, data, frozen_k, tokenizer.pad_id)
    with interrupts.deferred():  # Ctrl-C: the loop stops between two steps and saves last.pt
        result = train(model, next_batch=next_batch, loss_fn=loss_fn, evaluate=evaluate, run_dir=run_dir,
                       config=loop_config, optimizer_groups=groups,
                       callbacks=callbacks, resume=resume)
    wall_seconds = time.perf_counter() - start
    if not distributed.is_main():
        return distributed.broadcast(None)  # rank 0 scores the test split, writes the summary and shares it
    if config.strategy == "gradual":
        strategies.freeze(model, 0)  # count what trained by the end of the schedule
    trainable_params = model.num_parameters(trainable_only=True)
    with interrupts.after_training():  # Ctrl-C now keeps best.pt and last.pt: --resume scores the test split
        test = score_best_checkpoint(model, run_dir, data, config.task) if score_test else None
        summary = {
            **summary_of(result, run_dir, data, test, config),
            "trainable_params": trainable_params,
            "total_params": model.num_parameters(),
            "parameter_table": table,
            "wall_seconds": wall_seconds,
            "seconds_per_step": wall_seconds / max(result.step, 1),
        }
        write_json(run_dir / "summary.json", summary)
    return distributed.broadcast(summary)


def score_best_checkpoint(model: SequenceClassifier, run_dir: Path, data: FinetuneData, task_name: str) -> dict:
    """The test split, scored once with ``best.pt``: metrics, ``classification_report.txt`` and ``confusion.png``."""
    model.load_state_dict(load_checkpoint(run_dir / "best.pt")["model"])
    model.eval()
    test = classification_metrics(*predict(model, data.test_batches))
    write_test_report(run_dir, test, data.task.labels, title=f"{data.task.name} test split ({task_name})")
    return test


def summary_of(result: TrainResult, run_dir: Path, data: FinetuneData, test: dict | None,
               config: FinetuneConfig) -> dict:
    """The run's outcome: the best validation numbers (and their step), the test numbers and the baseline (none
    of the test's when ``test`` is None)."""
    evaluations = {record["step"]: record for record in read_metrics(run_dir / "metrics.jsonl")}
    best_evaluation = evaluations.get(result.best_step, {})
    outcome = {
        "task": data.task.name,
        "labels": data.task.labels,
        "train_examples": len(data.train_examples),
        "best_val_accuracy": best_evaluation.get("val_accuracy"),
        "best_val_macro_f1": best_evaluation.get("val_macro_f1"),
        "best_step": result.best_step,
        "steps": result.step,
        "stopped_early": result.stopped_early,
        "settings": asdict(config),
    }
    if test is None:
        return outcome
    return {**outcome, "test_accuracy": test["accuracy"], "test_macro_f1": test["macro_f1"],
            "test_examples": len(data.task.test),
            "majority_baseline": majority_baseline(data.task, train=data.train_examples)}


def write_test_report(run_dir: Path, metrics: dict, labels: list[str], title: str) -> str:
    """``classification_report.txt`` (per-class precision / recall / F1) and ``confusion.png``; returns the text."""
    report = classification_report(metrics["confusion"], labels)
    write_atomic(run_dir / "classification_report.txt", f"{title}\n\n{report}\n")
    plot_confusion_matrix(metrics["confusion"], labels, run_dir / "confusion.png", title=title)
    return report


# ----------------------------------------------------------------------------------------------------------
# Reading a finetuning run back: minipt evaluate
# ----------------------------------------------------------------------------------------------------------


def read_finetune_run(run_dir: Path) -> dict:
    """The ``config.json`` of a finetuning run, with a clear error when the folder is not one."""
    saved = read_config(run_dir)
    if not FINETUNE.made(saved):
        raise MiniptError(f"--from {run_dir} is a pretraining run; evaluate needs a finetuning run (minipt finetune)")
    check_finetune_sections(saved, run_dir / "config.json")
    if not (run_dir / "best.pt").exists():
        raise MiniptError(f"--from {run_dir}: there is no best.pt")
    return saved


def load_classifier(
    run_dir: str | Path, device: str = "cpu", fast: bool = False
) -> tuple[SequenceClassifier, Tokenizer, dict]:
    """The best checkpoint's classifier of a finetuning run (in eval mode), its tokenizer and its config. The
    model computes on the readable path unless ``fast=True``."""
    run_dir = Path(run_dir)
    saved = read_finetune_run(run_dir)
    settings = dict(saved["model"])
    backbone = set_fast(build_backbone(settings.pop("architecture"), **settings), fast)
    model = SequenceClassifier(backbone, **saved["classifier"])
    checkpoint = load_checkpoint(run_dir / "best.pt")
    check_architecture(model, checkpoint, run_dir / "best.pt")  # an edited config.json must not change the model
    load_weights(model, checkpoint["model"], run_dir / "best.pt")
    return model.to(resolve_device(device)).eval(), load_tokenizer(run_dir / "tokenizer.json"), saved


def evaluate_run(run_dir: str | Path, task: str | None = None, split: str = "test", device: str = "cpu") -> dict:
    """Score a finetuning run's best checkpoint on ``split`` of ``task`` (default: the task it was trained on).

    Returns ``accuracy``, ``macro_f1``, ``confusion`` and the per-class ``report`` text.
    """
    model, tokenizer, saved = load_classifier(run_dir, device)
    trained_on = saved["finetune"]["task"]
    if task is None:
        check_files_are_there(FinetuneConfig(**saved["finetune"]), Path(run_dir), "--from")
    recorded, now = saved.get("data", {}).get("task_file"), fingerprints.fingerprint(task or trained_on, TASKS)
    if (task is None or Path(task) == Path(trained_on)) and fingerprints.changed(recorded, now):
        warn(f"{fingerprints.describe(recorded, now)}; the scores are on the file as it is now")
    columns = {"text_column": saved["finetune"].get("text_column", "text"),
               "label_column": saved["finetune"].get("label_column", "label")}
    data = load_labelled_task(task or trained_on, **columns)
    if data.labels != saved["labels"]:
        raise MiniptError(f"--task {task}: its labels {data.labels} differ from the run's {saved['labels']}")
    dataset = ClassificationDataset(
        data.split(split), tokenizer, data.labels, saved["max_len"], add_cls=saved["add_cls"]
    )
    batches = classification_batches(dataset, saved["finetune"]["batch_size"], tokenizer.pad_id)
    metrics = classification_metrics(*predict(model, batches))
    return {**metrics, "report": classification_report(metrics["confusion"], data.labels), "examples": len(dataset)}
