r"""Pretraining: the objectives, and the job that builds tokenizer, data and model from one config.

Three objectives, each a pair of small functions for :func:`minipt.train.train`:

* ``clm`` — causal (next-token) language modelling, GPT's objective: the model reads ``x_{<t+1}`` and is scored
  on ``x_{t+1}``, :math:`\mathcal{L} = -\frac{1}{BT}\sum_{b,t} \log p_\theta(x_{b,t+1} \mid x_{b,\le t})`;
* ``mlm`` — masked language modelling, BERT's objective: a bidirectional Transformer (``causal=False``) sees a
  window where about 15% of the tokens were hidden and is scored only on those,
  :math:`\mathcal{L} = -\frac{1}{|M|}\sum_{(b,t) \in M} \log p_\theta(x_{b,t} \mid \tilde x_b)`;
* ``mlm+nsp`` — MLM plus next-sentence prediction: the input is ``<cls> A <sep> B <sep>`` where B follows A in
  the corpus half of the time; a small binary head on the ``<cls>`` position predicts which, and the two
  losses are added, :math:`\mathcal{L} = \mathcal{L}_{\text{MLM}} + \mathcal{L}_{\text{NSP}}`.

Validation loss is the token-weighted mean over the whole validation split (every target token counted once),
and perplexity is :math:`e^{\text{val\_loss}}` (:func:`minipt.metrics.perplexity`).

:func:`pretrain` is the job behind ``minipt pretrain``; :func:`load_run` rebuilds a run's language model and
tokenizer (for ``minipt generate`` and for finetuning).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from torch import Tensor, nn

from minipt import functional as MF
from minipt.checkpoint import load_checkpoint, write_json_atomic
from minipt.data import (
    DataError,
    causal_lm_batch,
    lm_eval_batches,
    lm_split,
    load_corpus,
    mask_tokens,
    masked_lm_batch,
    next_sentence_pairs,
)
from minipt.data.datasets import IGNORE_INDEX
from minipt.metrics import perplexity
from minipt.models import build_model
from minipt.models.language_model import LanguageModel, language_model_loss
from minipt.tokenizers import BPETokenizer, CharTokenizer, Tokenizer, load_tokenizer
from minipt.train import TrainConfig, TrainResult, resolve_device, train

__all__ = [
    "PretrainConfig",
    "PretrainConfigError",
    "MaskedLMWithNextSentenceHead",
    "Objective",
    "PretrainingData",
    "load_data",
    "train_config",
    "build_pretraining_model",
    "causal_lm_objective",
    "masked_lm_objective",
    "masked_lm_nsp_objective",
    "pretrain",
    "load_run",
]

MODELS = ("transformer", "gru")
OBJECTIVES = ("clm", "mlm", "mlm+nsp")
TOKENIZERS = ("char", "bpe")


class PretrainConfigError(ValueError):
    """A pretraining setting is invalid, or a run folder cannot be used; the message names the setting."""


@dataclass
class PretrainConfig:
    """Every setting of a pretraining run; the names are the CLI flags with underscores (``--d-model`` ->
    ``d_model``). The defaults train a small character-level Transformer on Shakespeare in about 5 minutes on a
    quiet 2-core CPU (measured: 0.40 s per step of 32 x 128 tokens, so 700 steps, plus 7 evaluations of
    20 batches). ``d_model`` is the GRU's embedding size too; ``hidden_size`` is used by the GRU only."""

    model: str = "transformer"
    objective: str = "clm"
    corpus: str = "shakespeare"
    tokenizer: str = "char"
    bpe_vocab_size: int = 512
    val_fraction: float = 0.1
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    d_ff: int = 512
    hidden_size: int = 256
    dropout: float = 0.1
    steps: int = 700
    batch_size: int = 32
    block_size: int = 128
    lr: float = 1e-3
    warmup: int = 50
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    grad_accum: int = 1
    eval_every: int = 100
    eval_batches: int = 20
    seed: int = 1337
    device: str = "auto"

    @classmethod
    def setting_names(cls) -> list[str]:
        """The setting names, in order."""
        return [field.name for field in fields(cls)]

    def check(self) -> None:
        """Raise :class:`PretrainConfigError` naming the first invalid setting (as its ``--flag``)."""
        choices = {"model": MODELS, "objective": OBJECTIVES, "tokenizer": TOKENIZERS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                value = getattr(self, name)
                raise PretrainConfigError(f"{flag(name)} must be one of {', '.join(allowed)}; got {value!r}")
        positive = ["bpe_vocab_size", "d_model", "n_layers", "n_heads", "d_ff", "hidden_size", "steps", "batch_size",
                    "block_size", "grad_accum", "eval_every"]
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise PretrainConfigError(f"{flag(name)} must be a positive integer, got {value!r}")
        for name in ["warmup", "eval_batches", "seed"]:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise PretrainConfigError(f"{flag(name)} must be an integer >= 0, got {value!r}")
        if not self.warmup < self.steps:
            raise PretrainConfigError(f"--warmup ({self.warmup}) must be smaller than --steps ({self.steps})")
        if not 0.0 < self.val_fraction < 1.0:
            raise PretrainConfigError(f"--val-fraction must be in (0, 1), got {self.val_fraction}")
        if not 0.0 <= self.dropout < 1.0:
            raise PretrainConfigError(f"--dropout must be in [0, 1), got {self.dropout}")
        for name in ["lr", "grad_clip"]:
            if not getattr(self, name) > 0:
                raise PretrainConfigError(f"{flag(name)} must be > 0, got {getattr(self, name)}")
        if self.weight_decay < 0:
            raise PretrainConfigError(f"--weight-decay must be >= 0, got {self.weight_decay}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise PretrainConfigError(f"--device must be one of auto, cpu, cuda; got {self.device!r}")
        if self.objective != "clm" and self.model == "gru":
            raise PretrainConfigError(
                f"--objective {self.objective} needs a bidirectional model: use --model transformer "
                "(a GRU reads left to right, so it can only be pretrained with --objective clm)"
            )
        if self.model == "transformer" and self.d_model % self.n_heads != 0:
            raise PretrainConfigError(f"--d-model ({self.d_model}) must be divisible by --n-heads ({self.n_heads})")


def flag(name: str) -> str:
    """The CLI flag of a setting: ``d_model`` -> ``--d-model``."""
    return "--" + name.replace("_", "-")


# ----------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------


@dataclass
class PretrainingData:
    """The corpus text, its tokenizer, and the token ids split into the first 90% (train) and the last 10%
    (validation) by :func:`minipt.data.lm_split` (``val_fraction`` sets the share)."""

    text: str
    tokenizer: Tokenizer
    train_ids: Tensor  # (N_train,) long
    val_ids: Tensor  # (N_val,) long


def build_tokenizer(config: PretrainConfig, text: str) -> Tokenizer:
    """A character tokenizer of the text's characters, or a byte-level BPE tokenizer trained on it."""
    if config.tokenizer == "char":
        return CharTokenizer.from_text(text)
    return BPETokenizer.train(text, vocab_size=config.bpe_vocab_size)


def load_data(config: PretrainConfig, tokenizer: Tokenizer | None = None) -> PretrainingData:
    """Read the corpus, build the tokenizer (unless given, as on resume), encode and split.

    Each split must hold at least one block of ``block_size + 1`` tokens (inputs plus the next token).
    """
    text = load_corpus(config.corpus)
    if tokenizer is None:
        tokenizer = build_tokenizer(config, text)
    ids = torch.tensor(tokenizer.encode(text), dtype=torch.long)  # (N,)
    train_ids, val_ids = lm_split(ids, config.val_fraction)  # first 90% train, last 10% validation
    for name, part in (("training", train_ids), ("validation", val_ids)):
        if len(part) < config.block_size + 1:
            raise DataError(
                f"{config.corpus}: the {name} part has {len(part)} tokens, fewer than one block "
                f"(--block-size {config.block_size} + 1); use a longer corpus or a smaller --block-size"
            )
    return PretrainingData(text, tokenizer, train_ids, val_ids)


def model_settings(config: PretrainConfig, tokenizer: Tokenizer) -> tuple[str, dict]:
    """The architecture name and constructor arguments of the model this config asks for."""
    if config.model == "transformer":
        return "transformer", {
            "vocab_size": tokenizer.vocab_size,
            "d_model": config.d_model,
            "n_layers": config.n_layers,
            "n_heads": config.n_heads,
            "d_ff": config.d_ff,
            "max_len": config.block_size,
            "dropout": config.dropout,
            "causal": config.objective == "clm",
            "tie_weights": True,
            "pad_id": tokenizer.pad_id,
        }
    return "gru", {
        "vocab_size": tokenizer.vocab_size,
        "d_embed": config.d_model,
        "hidden_size": config.hidden_size,
        "n_layers": config.n_layers,
        "dropout": config.dropout,
        "tie_weights": True,
        "pad_id": tokenizer.pad_id,
    }


# ----------------------------------------------------------------------------------------------------------
# Objectives
# ----------------------------------------------------------------------------------------------------------


@dataclass
class Objective:
    """What :func:`minipt.train.train` needs for one objective (see that module)."""

    next_batch: Callable[[int], tuple]
    loss_fn: Callable[[nn.Module, tuple], Tensor]
    evaluate: Callable[[nn.Module], dict[str, float]]
    generator: torch.Generator  # the training sampler's; its state goes into the checkpoints


def lm_loss(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
    """Mean cross-entropy of the model's predictions against the targets (``-100`` = not scored)."""
    inputs, targets = batch  # (B, T), (B, T)
    _, loss = model(inputs, targets)
    return loss


def weighted_mean(values_and_counts: list[tuple[float, int]]) -> float:
    r"""Count-weighted mean :math:`\sum_i n_i v_i / \sum_i n_i` of per-batch means, so that every scored token
    (or pair) counts once whatever batch it was in."""
    total = sum(count for _, count in values_and_counts)
    return sum(value * count for value, count in values_and_counts) / total


def lm_validation(model: nn.Module, batches: list[tuple[Tensor, Tensor]]) -> dict[str, float]:
    """``val_loss``, the mean cross-entropy over every scored token of ``batches``, and its ``perplexity``."""
    device = next(model.parameters()).device
    results = []
    for inputs, targets in batches:
        _, loss = model(inputs.to(device), targets.to(device))
        results.append((loss.item(), int((targets != IGNORE_INDEX).sum())))
    val_loss = weighted_mean(results)
    return {"val_loss": val_loss, "perplexity": perplexity(val_loss)}


def validation_windows(config: PretrainConfig, val_ids: Tensor) -> list[tuple[Tensor, Tensor]]:
    """Non-overlapping windows over the validation split (:func:`minipt.data.lm_eval_batches`), the first
    ``eval_batches`` batches of them when that is set (0: all)."""
    batches = list(lm_eval_batches(val_ids, config.batch_size, config.block_size))
    return batches[: config.eval_batches] if config.eval_batches else batches


def causal_lm_objective(train_ids: Tensor, val_ids: Tensor, config: PretrainConfig) -> Objective:
    """Next-token prediction on random training windows; validation on fixed windows of the validation split."""
    generator = torch.Generator().manual_seed(config.seed)
    val_batches = validation_windows(config, val_ids)

    def next_batch(index: int) -> tuple[Tensor, Tensor]:
        return causal_lm_batch(train_ids, config.batch_size, config.block_size, generator)

    return Objective(next_batch, lm_loss, lambda model: lm_validation(model, val_batches), generator)


def mask_with(inputs: Tensor, tokenizer: Tokenizer, generator: torch.Generator, attention_mask=None):
    """BERT masking of ``inputs`` ``(B, T)`` (:func:`minipt.data.mask_tokens`) -> corrupted inputs, targets."""
    return mask_tokens(
        inputs, tokenizer.mask_id, tokenizer.vocab_size, tokenizer.special_ids, generator, attention_mask=attention_mask
    )


def masked_lm_objective(train_ids: Tensor, val_ids: Tensor, config: PretrainConfig, tokenizer: Tokenizer) -> Objective:
    """Masked-token prediction on random training windows. The validation windows are masked once, with their
    own fixed seed, so every evaluation scores the same positions."""
    generator = torch.Generator().manual_seed(config.seed)
    val_generator = torch.Generator().manual_seed(config.seed + 1)
    windows = validation_windows(config, val_ids)
    val_batches = [mask_with(inputs, tokenizer, val_generator) for inputs, _ in windows]

    def next_batch(index: int) -> tuple[Tensor, Tensor]:
        return masked_lm_batch(train_ids, config.batch_size, config.block_size, tokenizer, generator)

    return Objective(next_batch, lm_loss, lambda model: lm_validation(model, val_batches), generator)


class MaskedLMWithNextSentenceHead(nn.Module):
    r"""A bidirectional language model plus BERT's next-sentence head on the ``<cls>`` position (position 0):

    .. math:: z^{\text{NSP}}_b = W\, h_{b,0} + c \in \mathbb{R}^2 \quad (\text{class 1: B follows A})

    ``lm`` is the :class:`~minipt.models.TransformerLM` (``causal=False``); ``nsp_head`` is
    ``nn.Linear(d_model, 2)``. minipt's Transformer has no segment embeddings: the ``<sep>`` token alone marks
    where B starts (RoBERTa-style inputs).
    """

    def __init__(self, lm: LanguageModel) -> None:
        super().__init__()
        self.lm = lm
        self.nsp_head = nn.Linear(lm.hidden_size, 2)

    def forward(self, idx: Tensor, attention_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Token logits ``(B, T, V)`` and next-sentence logits ``(B, 2)``, from one pass over ``idx`` ``(B, T)``."""
        features = self.lm.features(idx, attention_mask)  # (B, T, C)
        return self.lm.lm_head(features), self.nsp_head(features[:, 0, :])  # (B, T, V), (B, 2)


def paragraphs_and_documents(text: str, paragraphs_per_document: int = 4) -> tuple[list[str], list[int]]:
    """The text's paragraphs (blocks separated by a blank line, e.g. Shakespeare's speeches; the lines, for a text
    without blank lines) and a document id for each: consecutive paragraphs are grouped
    ``paragraphs_per_document`` at a time. A true next sentence is the following paragraph of the same document;
    a false one comes from another document."""
    paragraphs = [block.strip() for block in text.split("\n\n") if block.strip()]
    if len(paragraphs) < 2:
        paragraphs = [line.strip() for line in text.splitlines() if line.strip()]
    return paragraphs, [index // paragraphs_per_document for index in range(len(paragraphs))]


def sentence_pairs(config: PretrainConfig, text: str, tokenizer: Tokenizer, seed: int) -> tuple[Tensor, ...]:
    """``<cls> A <sep> B <sep>`` pairs (:func:`minipt.data.next_sentence_pairs`), half with B following A:
    ``input_ids``, ``attention_mask`` ``(N, block_size)`` and ``is_next`` ``(N,)``."""
    paragraphs, documents = paragraphs_and_documents(text)
    generator = torch.Generator().manual_seed(seed)
    input_ids, _, attention_mask, is_next = next_sentence_pairs(
        paragraphs, documents, tokenizer, config.block_size, generator
    )
    return input_ids, attention_mask, is_next


def masked_lm_nsp_objective(train_text: str, val_text: str, config: PretrainConfig, tokenizer: Tokenizer) -> Objective:
    r"""MLM plus next-sentence prediction, trained jointly on masked sentence pairs:

    .. math::
        \mathcal{L} = \mathcal{L}_{\text{MLM}} + \frac{1}{B}\sum_b -\log\operatorname{softmax}(z^{\text{NSP}}_b)_{y_b}

    The pairs are built once from the paragraphs of each part of the text (:func:`split_text`). Validation
    reports ``val_mlm_loss`` (with its ``perplexity``), ``val_nsp_loss``, ``val_nsp_accuracy``, and ``val_loss``,
    the sum of the two losses.
    """
    train_pairs = sentence_pairs(config, train_text, tokenizer, seed=config.seed)
    val_input_ids, val_attention_mask, val_is_next = sentence_pairs(config, val_text, tokenizer, seed=config.seed + 1)
    val_generator = torch.Generator().manual_seed(config.seed + 2)
    val_batches = []
    for first in range(0, len(val_is_next), config.batch_size):
        rows = slice(first, first + config.batch_size)
        inputs, targets = mask_with(val_input_ids[rows], tokenizer, val_generator, val_attention_mask[rows])
        val_batches.append((inputs, targets, val_attention_mask[rows], val_is_next[rows]))
    if config.eval_batches:
        val_batches = val_batches[: config.eval_batches]
    generator = torch.Generator().manual_seed(config.seed)

    def next_batch(index: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        input_ids, attention_mask, is_next = train_pairs
        rows = torch.randint(len(is_next), (config.batch_size,), generator=generator)  # (B,)
        inputs, targets = mask_with(input_ids[rows], tokenizer, generator, attention_mask[rows])
        return inputs, targets, attention_mask[rows], is_next[rows]

    def losses(model: MaskedLMWithNextSentenceHead, batch: tuple[Tensor, ...]) -> tuple[Tensor, Tensor, Tensor]:
        inputs, targets, attention_mask, is_next = batch  # (B, T) x 3, (B,)
        token_logits, nsp_logits = model(inputs, attention_mask)  # (B, T, V), (B, 2)
        return language_model_loss(token_logits, targets), MF.cross_entropy(nsp_logits, is_next), nsp_logits

    def loss_fn(model: MaskedLMWithNextSentenceHead, batch: tuple[Tensor, ...]) -> Tensor:
        mlm_loss, nsp_loss, _ = losses(model, batch)
        return mlm_loss + nsp_loss

    def evaluate(model: MaskedLMWithNextSentenceHead) -> dict[str, float]:
        device = next(model.parameters()).device
        mlm, nsp, correct = [], [], []
        for batch in val_batches:
            inputs, targets, attention_mask, is_next = (tensor.to(device) for tensor in batch)
            mlm_loss, nsp_loss, nsp_logits = losses(model, (inputs, targets, attention_mask, is_next))
            mlm.append((mlm_loss.item(), int((targets != IGNORE_INDEX).sum())))
            nsp.append((nsp_loss.item(), len(is_next)))
            correct.append((float((nsp_logits.argmax(dim=-1) == is_next).float().mean()), len(is_next)))
        val_mlm_loss, val_nsp_loss = weighted_mean(mlm), weighted_mean(nsp)
        return {
            "val_loss": val_mlm_loss + val_nsp_loss,
            "val_mlm_loss": val_mlm_loss,
            "perplexity": perplexity(val_mlm_loss),
            "val_nsp_loss": val_nsp_loss,
            "val_nsp_accuracy": weighted_mean(correct),
        }

    return Objective(next_batch, loss_fn, evaluate, generator)


def split_text(data: PretrainingData) -> tuple[str, str]:
    """The text cut where :func:`minipt.data.lm_split` cut the tokens: the characters the training ids cover,
    and the rest (so no validation paragraph is trained on)."""
    cut = len(data.tokenizer.decode(data.train_ids.tolist()))
    return data.text[:cut], data.text[cut:]


def build_objective(config: PretrainConfig, data: PretrainingData) -> Objective:
    """The objective named by ``config.objective``."""
    if config.objective == "clm":
        return causal_lm_objective(data.train_ids, data.val_ids, config)
    if config.objective == "mlm":
        return masked_lm_objective(data.train_ids, data.val_ids, config, data.tokenizer)
    train_text, val_text = split_text(data)
    return masked_lm_nsp_objective(train_text, val_text, config, data.tokenizer)


# ----------------------------------------------------------------------------------------------------------
# The job
# ----------------------------------------------------------------------------------------------------------


def train_config(config: PretrainConfig, progress: bool) -> TrainConfig:
    """The training loop's settings for this pretraining config (no early stopping)."""
    return TrainConfig(
        steps=config.steps,
        lr=config.lr,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup,
        grad_clip=config.grad_clip,
        grad_accum_steps=config.grad_accum,
        eval_every=config.eval_every,
        device=config.device,
        progress=progress,
    )


def build_pretraining_model(config: PretrainConfig, tokenizer: Tokenizer) -> nn.Module:
    """The language model (wrapped with a next-sentence head for ``mlm+nsp``), seeded by ``config.seed``."""
    torch.manual_seed(config.seed)
    architecture, settings = model_settings(config, tokenizer)
    model = build_model(architecture, **settings)
    return MaskedLMWithNextSentenceHead(model) if config.objective == "mlm+nsp" else model


def check_new_run_dir(run_dir: Path) -> None:
    """A new run must not overwrite an old one: the folder must be absent or empty."""
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise PretrainConfigError(
            f"--out {run_dir} already exists and is not empty; choose a new folder, or continue that run "
            f"with --resume {run_dir}"
        )


def read_run_config(run_dir: Path) -> dict:
    """The ``config.json`` of a run folder (a clear error when the folder or file is missing or broken)."""
    path = run_dir / "config.json"
    if not run_dir.is_dir():
        raise PretrainConfigError(f"run folder {run_dir} does not exist")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise PretrainConfigError(f"{path}: cannot read the run's config ({error})") from None


def pretrain(
    config: PretrainConfig, run_dir: str | Path, resume: bool = False, progress: bool = True
) -> TrainResult:
    """Build tokenizer, data, model and objective from ``config`` and train, writing the run into ``run_dir``.

    ``resume=True`` continues the run in ``run_dir`` with its own ``config.json`` and ``tokenizer.json``
    (``config`` then only supplies ``device``).
    """
    run_dir = Path(run_dir)
    if resume:
        saved = read_run_config(run_dir)
        config = PretrainConfig(**{**saved["pretrain"], "device": config.device})
        tokenizer = load_tokenizer(run_dir / "tokenizer.json")
        if not (run_dir / "last.pt").exists():
            raise PretrainConfigError(f"--resume {run_dir}: there is no last.pt to continue from")
    else:
        check_new_run_dir(run_dir)
        tokenizer = None
    config.check()
    resolve_device(config.device)  # no CUDA: fail now, before anything is written
    data = load_data(config, tokenizer)
    model = build_pretraining_model(config, data.tokenizer)
    objective = build_objective(config, data)
    if not resume:
        tokenizer = data.tokenizer
        run_dir.mkdir(parents=True, exist_ok=True)
        tokenizer.save(run_dir / "tokenizer.json")
        architecture, settings = model_settings(config, tokenizer)
        write_json_atomic(
            run_dir / "config.json",
            {
                "pretrain": asdict(config),
                "model": {"architecture": architecture, **settings},
                "tokenizer": {"kind": config.tokenizer, "vocab_size": tokenizer.vocab_size},
                "train": asdict(train_config(config, progress=False)),
                "data": {"train_tokens": len(data.train_ids), "val_tokens": len(data.val_ids)},
            },
        )
    return train(
        model,
        next_batch=objective.next_batch,
        loss_fn=objective.loss_fn,
        evaluate=objective.evaluate,
        config=train_config(config, progress),
        run_dir=run_dir,
        generator=objective.generator,
        resume=resume,
    )


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[LanguageModel, Tokenizer, dict]:
    """The language model of a pretraining run (``best.pt``, or ``last.pt`` when there is no best), its
    tokenizer and its config dict. For ``mlm+nsp`` runs the next-sentence head is dropped."""
    run_dir = Path(run_dir)
    saved = read_run_config(run_dir)
    config = PretrainConfig(**saved["pretrain"])
    tokenizer = load_tokenizer(run_dir / "tokenizer.json")
    path = run_dir / "best.pt" if (run_dir / "best.pt").exists() else run_dir / "last.pt"
    if not path.exists():
        raise PretrainConfigError(f"run folder {run_dir} has neither best.pt nor last.pt")
    checkpoint = load_checkpoint(path)
    model = build_pretraining_model(config, tokenizer)
    model.load_state_dict(checkpoint["model"])
    if isinstance(model, MaskedLMWithNextSentenceHead):
        model = model.lm
    return model.to(device).eval(), tokenizer, saved
