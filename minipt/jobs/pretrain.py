r"""Pretraining: the objectives, and the job that builds tokenizer, data and model from one config.

Three objectives, each a pair of small functions for :func:`minipt.training.loop.train`:

* ``clm`` — causal (next-token) language modelling, GPT's objective: the model reads ``x_{<t+1}`` and is scored
  on ``x_{t+1}``, :math:`\mathcal{L} = -\frac{1}{BT}\sum_{b,t} \log p_\theta(x_{b,t+1} \mid x_{b,\le t})`;
* ``mlm`` — masked language modelling, BERT's objective: a bidirectional Transformer (``causal=False``) sees a
  window where about 15% of the tokens were hidden and is scored only on those,
  :math:`\mathcal{L} = -\frac{1}{|M|}\sum_{(b,t) \in M} \log p_\theta(x_{b,t} \mid \tilde x_b)`;
* ``mlm+nsp`` — MLM plus next-sentence prediction: the input is ``<cls> A <sep> B <sep>`` where B follows A in
  the corpus half of the time; a small binary head on the ``<cls>`` position predicts which
  (:class:`minipt.models.MaskedLMWithNextSentenceHead`), and the two losses are added,
  :math:`\mathcal{L} = \mathcal{L}_{\text{MLM}} + \mathcal{L}_{\text{NSP}}`.

Validation loss is the token-weighted mean over the whole validation split (every target token counted once),
and perplexity is :math:`e^{\text{val\_loss}}` (:func:`minipt.metrics.perplexity`). For the masked objectives the
validation loss and accuracy count the ``<mask>`` positions only (:func:`masked_lm_metrics`): at the 10% of chosen
positions left unchanged the answer is in the input, so a loss over every chosen position flatters the model.
That figure stays, as ``val_chosen_loss``, for comparison.

:func:`pretrain` is the job behind ``minipt pretrain``; :func:`load_run` rebuilds a run's language model and
tokenizer (for ``minipt generate`` and for finetuning). ``init_from`` continues the training of another run's model
on a new corpus — domain adaptation — with that run's tokenizer and architecture, the lower layers frozen if asked.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch
from torch import Tensor, nn

from minipt import functional as MF
from minipt.data import (
    CORPORA,
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
from minipt.data.tokenizers import FIRST_MERGE_ID, BPETokenizer, CharTokenizer, Tokenizer, load_tokenizer
from minipt.errors import MiniptError
from minipt.interop.bert import BertEncoder
from minipt.jobs.job import FINETUNE, PRETRAIN
from minipt.metrics import perplexity
from minipt.models import MODEL_CLASSES, MaskedLMWithNextSentenceHead, TransformerLM, build_model
from minipt.models.language_model import LanguageModel, cross_entropy, language_model_loss
from minipt.models.modes import evaluation_mode
from minipt.nn import set_fast
from minipt.runs import fingerprints
from minipt.runs.folder import lock_run, new_run_dir, read_config, read_json, write_config, write_json
from minipt.runs.settings import (
    COUNT,
    POSITIVE_INT,
    Rule,
    absolute_path,
    between,
    check_settings,
    compile_setting,
    device_setting,
    grad_accum_setting,
    grad_clip_setting,
    lr_setting,
    one_of,
    seed_setting,
    setting,
    settings_from_saved,
    threads_setting,
    weight_decay_setting,
)
from minipt.training import distributed, interrupts, strategies
from minipt.training.checkpoint import check_architecture, load_checkpoint, load_weights
from minipt.training.loop import TrainConfig, TrainResult, resolve_device, standard_callbacks, train, use_threads

__all__ = [
    "PretrainConfig",
    "Objective",
    "PretrainingData",
    "load_data",
    "train_config",
    "build_pretraining_model",
    "causal_lm_objective",
    "masked_lm_objective",
    "masked_positions",
    "masked_lm_scores",
    "masked_lm_metrics",
    "masked_lm_nsp_objective",
    "pretrain",
    "load_run",
]

MODELS = ("transformer", "gru")
OBJECTIVES = ("clm", "mlm", "mlm+nsp")
TOKENIZERS = ("char", "bpe")
WARMUP = Rule(lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= -1,
              "{flag} must be an integer >= 0 (or -1: the default, a tenth of --steps, at most 50), got {value!r}")


def default_warmup(steps: int) -> int:
    """The warmup of a run that does not set one: a tenth of the steps, at most 50 (50 of the default 2000)."""
    return min(50, steps // 10)


@dataclass
class PretrainConfig:
    """Every setting of a pretraining run; the names are the CLI flags with underscores (``--d-model`` ->
    ``d_model``). The defaults are the recipe measured best per CPU-second (``benchmarks/RESULTS.md``,
    ``pretrain_recipe``): a 2-layer Transformer on a 2000-token BPE vocabulary, 16 x 128 tokens per step, peak lr
    3e-3, no dropout. ``d_model`` is the GRU's embedding size too; ``hidden_size`` is used by the GRU only.
    The settings marked ``architecture=True`` define the model and the tokenizer: with ``init_from`` they are
    taken from that run."""

    model: str = setting("transformer", "architecture: transformer or gru", rule=one_of(*MODELS), architecture=True)
    objective: str = setting("clm", "clm (next token), mlm (masked tokens, Transformer only) or mlm+nsp (MLM + "
                             "next-sentence head)", rule=one_of(*OBJECTIVES), architecture=True)
    corpus: str = setting("shakespeare", "'shakespeare' (built in, as printed), 'shakespeare-flat' (built in, "
                          "each speech lower-cased on one line, as the classifiers read it) or the path of a UTF-8 "
                          "text file")
    init_from: str = setting("", "a pretraining run folder whose model to train further on --corpus (domain "
                             "adaptation): its tokenizer and architecture settings are used, its weights are the "
                             "start (default: none, a new model)", metavar="RUN_DIR")
    freeze: str = setting("none", "with --init-from: embedding + this many lowest layers frozen, an integer, 'all' "
                          "or 'none'")
    tokenizer: str = setting("bpe", "char or bpe (byte-level BPE)", rule=one_of(*TOKENIZERS), architecture=True)
    bpe_vocab_size: int = setting(2000, "vocabulary size of the BPE tokenizer", rule=POSITIVE_INT, architecture=True)
    val_fraction: float = setting(0.1, "the last fraction of the corpus's tokens held out for validation",
                                  rule=between(0, 1, "()"))
    d_model: int = setting(128, "Transformer width (and the GRU's embedding size)", rule=POSITIVE_INT,
                           architecture=True)
    n_layers: int = setting(2, "number of Transformer or GRU layers", rule=POSITIVE_INT, architecture=True)
    n_heads: int = setting(4, "attention heads per Transformer layer", rule=POSITIVE_INT, architecture=True)
    d_ff: int = setting(512, "hidden size of the Transformer's feed-forward block", rule=POSITIVE_INT,
                        architecture=True)
    hidden_size: int = setting(256, "GRU hidden state size", rule=POSITIVE_INT, architecture=True)
    dropout: float = setting(0.0, "dropout probability", rule=between(0, 1, "[)"), architecture=True)
    steps: int = setting(2000, "optimizer steps", rule=POSITIVE_INT)
    batch_size: int = setting(16, "sequences per batch", rule=POSITIVE_INT)
    block_size: int = setting(128, "tokens per sequence (the context length; the Transformer's learned positions)",
                              rule=POSITIVE_INT, architecture=True)
    lr: float = lr_setting(3e-3)
    warmup: int = setting(-1, "linear warmup steps before the cosine decay (default: a tenth of --steps, at most "
                          "50)", rule=WARMUP, default_text="")
    weight_decay: float = weight_decay_setting(0.1)
    grad_clip: float = grad_clip_setting()
    grad_accum: int = grad_accum_setting()
    eval_every: int = setting(250, "evaluate (and save last.pt) every this many steps", rule=POSITIVE_INT)
    eval_batches: int = setting(20, "cap on validation batches per evaluation (0: the whole validation split)",
                                rule=COUNT)
    seed: int = seed_setting(1337)
    device: str = device_setting()
    threads: int = threads_setting()
    compile: bool = compile_setting()

    def check(self) -> None:
        """Raise :class:`~minipt.errors.MiniptError` naming the first invalid setting (as its ``--flag``); a
        device that is not there (``cuda`` without a GPU) is one too."""
        check_settings(self)
        if not self.warmup < self.steps:
            raise MiniptError(f"--warmup ({self.warmup}) must be smaller than --steps ({self.steps})")
        if self.tokenizer == "bpe" and self.bpe_vocab_size < FIRST_MERGE_ID:
            raise MiniptError(f"--bpe-vocab-size must be at least {FIRST_MERGE_ID} (5 special tokens and 256 bytes), "
                              f"got {self.bpe_vocab_size}")
        if self.objective != "clm" and self.model == "gru":
            raise MiniptError(
                f"--objective {self.objective} needs a bidirectional model: use --model transformer "
                "(a GRU reads left to right, so it can only be pretrained with --objective clm)"
            )
        if self.model == "transformer" and self.d_model % self.n_heads != 0:
            raise MiniptError(f"--d-model ({self.d_model}) must be divisible by --n-heads ({self.n_heads})")
        if self.init_from:
            strategies.parse_freeze(self.freeze, self.n_layers)
        elif self.freeze != "none":
            raise MiniptError("--freeze needs --init-from RUN_DIR (the run whose model is trained further)")
        check_fits_in_memory(self, resolve_device(self.device))  # no CUDA: fail now, before anything is written


# ----------------------------------------------------------------------------------------------------------
# Will it fit? The memory a run needs, estimated from its settings before anything is allocated
# ----------------------------------------------------------------------------------------------------------

FLOAT_BYTES = 4  # float32
CHAR_VOCABULARY = 100  # a character tokenizer's vocabulary is known only after reading the corpus; about this


def parameter_count(config: PretrainConfig) -> int:
    r"""The number of parameters the settings give, before the corpus is read (``V``: ``--bpe-vocab-size``, or
    about 100 characters). Transformer (tied head, learned positions):
    :math:`Vd + Td + L(4d^2 + 4d + 2 d f + f + d + 4d) + 2d`; GRU: :math:`Vd` plus per layer
    :math:`3(i H + H^2 + 2H)` (``i`` = d for the first layer, H above), plus :math:`HV + V` when the head is not
    tied (``H != d``)."""
    V = config.bpe_vocab_size if config.tokenizer == "bpe" else CHAR_VOCABULARY
    d, L = config.d_model, config.n_layers
    if config.model == "transformer":
        f, T = config.d_ff, config.block_size
        return V * d + T * d + L * (4 * d * d + 4 * d + 2 * d * f + f + d + 4 * d) + 2 * d
    H = config.hidden_size
    layers = 3 * (d * H + H * H + 2 * H) + (L - 1) * 3 * (2 * H * H + 2 * H)
    return V * d + layers + (0 if d == H else H * V + V)


def activation_floats(config: PretrainConfig) -> int:
    """A lower bound on the numbers one training step keeps for the backward pass, for one micro-batch of
    ``B x T`` tokens: per token and layer about ``10 d + 2 f`` for a Transformer block plus ``2 h T`` attention
    weights (scores and probabilities), about ``10 H`` for a GRU layer; and the logits with their softmax, ``2 V``."""
    V = config.bpe_vocab_size if config.tokenizer == "bpe" else CHAR_VOCABULARY
    B, T, L = config.batch_size, config.block_size, config.n_layers
    if config.model == "transformer":
        per_layer = 10 * config.d_model + 2 * config.d_ff + 2 * config.n_heads * T
    else:
        per_layer = 10 * config.hidden_size
    return B * T * (L * per_layer + 2 * V)


def memory_of(device: torch.device) -> int | None:
    """Bytes of memory of ``device``: the GPU's, or the machine's RAM (None where the system does not say)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # e.g. Windows
        return None


def check_fits_in_memory(config: PretrainConfig, device: torch.device) -> None:
    """One line with the estimate in GiB when the parameters (with their gradients and AdamW's two moments, 16
    bytes each) and one step's activations cannot fit in the device's memory: ``--d-model 100000000`` or
    ``--batch-size 1000000000`` end here instead of in the allocator."""
    memory = memory_of(device)
    n_parameters = parameter_count(config)
    weights = 4 * FLOAT_BYTES * n_parameters / 2**30
    activations = FLOAT_BYTES * activation_floats(config) / 2**30
    if memory is not None and (weights + activations) * 2**30 > memory:
        raise MiniptError(
            f"these sizes cannot fit: about {weights + activations:,.1f} GiB, {weights:,.1f} GiB for "
            f"{n_parameters:,} parameters with their gradients and AdamW's moments and {activations:,.1f} GiB of "
            f"activations for --batch-size {config.batch_size} x --block-size {config.block_size} tokens, "
            f"against {memory / 2**30:,.1f} GiB of memory ({device.type}); choose smaller sizes"
        )


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
    """What :func:`minipt.training.loop.train` needs for one objective (see that module)."""

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
    generator = torch.Generator().manual_seed(distributed.rank_seed(config.seed))  # each rank its own batches
    val_batches = validation_windows(config, val_ids)

    def next_batch(index: int) -> tuple[Tensor, Tensor]:
        return causal_lm_batch(train_ids, config.batch_size, config.block_size, generator)

    return Objective(next_batch, lm_loss, lambda model: lm_validation(model, val_batches), generator)


def mask_with(
    inputs: Tensor, tokenizer: Tokenizer, generator: torch.Generator, attention_mask: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """BERT masking of ``inputs`` ``(B, T)`` (:func:`minipt.data.mask_tokens`) -> corrupted inputs, targets."""
    return mask_tokens(
        inputs, tokenizer.mask_id, tokenizer.vocab_size, tokenizer.special_ids, generator, attention_mask=attention_mask
    )


def masked_positions(inputs: Tensor, targets: Tensor, mask_id: int) -> Tensor:
    """The chosen positions that show ``<mask>`` ``(B, T)`` bool: there the input holds no trace of the answer.
    (At a chosen position left unchanged the answer is in the input, and a model learns to copy it.)"""
    return (targets != IGNORE_INDEX) & (inputs == mask_id)


def masked_lm_scores(logits: Tensor, inputs: Tensor, targets: Tensor, mask_id: int) -> dict[str, float]:
    r"""Sums for the masked-LM metrics of one batch: ``logits`` ``(B, T, V)``, ``inputs``, ``targets`` ``(B, T)``.

    Over the ``<mask>`` positions :math:`M` (:func:`masked_positions`): ``masked_loss_sum``
    :math:`\sum_{M} -\log p(x_{b,t})`, ``masked_correct`` (top-1 right) and ``masked_count`` :math:`|M|`; over every
    chosen position: ``chosen_loss_sum`` and ``chosen_count``.
    """
    chosen = targets != IGNORE_INDEX  # (B, T)
    masked = masked_positions(inputs, targets, mask_id)  # (B, T)
    losses = MF.cross_entropy(logits[chosen].double(), targets[chosen], reduction="none")  # (n_chosen,)
    on_mask = masked[chosen]  # (n_chosen,): which of the chosen show <mask>
    right = logits[chosen].argmax(dim=-1) == targets[chosen]  # (n_chosen,)
    return {
        "masked_loss_sum": losses[on_mask].sum().item(),
        "masked_correct": int(right[on_mask].sum()),
        "masked_count": int(on_mask.sum()),
        "chosen_loss_sum": losses.sum().item(),
        "chosen_count": int(chosen.sum()),
    }


def masked_lm_metrics(totals: dict[str, float]) -> dict[str, float]:
    """Summed :func:`masked_lm_scores` -> ``val_loss`` and ``val_accuracy`` on the ``<mask>`` positions only (the
    honest masked-LM figures), their ``perplexity``, and ``val_chosen_loss``: every chosen position, including
    those whose input shows the answer (kept for comparison, never for selection)."""
    masked = max(totals["masked_count"], 1)
    val_loss = totals["masked_loss_sum"] / masked
    return {
        "val_loss": val_loss,
        "val_accuracy": totals["masked_correct"] / masked,
        "perplexity": perplexity(val_loss),
        "val_chosen_loss": totals["chosen_loss_sum"] / max(totals["chosen_count"], 1),
    }


def add_scores(totals: dict[str, float], scores: dict[str, float]) -> dict[str, float]:
    """``totals + scores``, key by key (``totals`` may be empty)."""
    return {name: totals.get(name, 0) + value for name, value in scores.items()}


def masked_lm_validation(model: nn.Module, batches: list[tuple[Tensor, Tensor]], mask_id: int) -> dict[str, float]:
    """:func:`masked_lm_metrics` over masked validation ``batches`` of ``(inputs, targets)`` ``(B, T)``."""
    device = next(model.parameters()).device
    totals: dict[str, float] = {}
    for inputs, targets in batches:
        logits, _ = model(inputs.to(device))  # (B, T, V)
        totals = add_scores(totals, masked_lm_scores(logits, inputs.to(device), targets.to(device), mask_id))
    return masked_lm_metrics(totals)


def masked_lm_objective(train_ids: Tensor, val_ids: Tensor, config: PretrainConfig, tokenizer: Tokenizer) -> Objective:
    """Masked-token prediction on random training windows (the loss over every chosen position). The validation
    windows are masked once, with their own fixed seed, so every evaluation scores the same positions; validation
    scores the ``<mask>`` positions only (:func:`masked_lm_metrics`)."""
    generator = torch.Generator().manual_seed(distributed.rank_seed(config.seed))  # each rank its own batches
    val_generator = torch.Generator().manual_seed(config.seed + 1)
    windows = validation_windows(config, val_ids)
    val_batches = [mask_with(inputs, tokenizer, val_generator) for inputs, _ in windows]

    def next_batch(index: int) -> tuple[Tensor, Tensor]:
        return masked_lm_batch(train_ids, config.batch_size, config.block_size, tokenizer, generator)

    return Objective(
        next_batch, lm_loss, lambda model: masked_lm_validation(model, val_batches, tokenizer.mask_id), generator
    )


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
    reports ``val_mlm_loss`` and ``val_mlm_accuracy`` on the ``<mask>`` positions only (with its ``perplexity``),
    ``val_mlm_chosen_loss`` over every chosen position, ``val_nsp_loss``, ``val_nsp_accuracy``, and ``val_loss``,
    the sum of the masked-only MLM loss and the NSP loss.
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
    generator = torch.Generator().manual_seed(distributed.rank_seed(config.seed))  # each rank its own batches

    def next_batch(index: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        input_ids, attention_mask, is_next = train_pairs
        rows = torch.randint(len(is_next), (config.batch_size,), generator=generator)  # (B,)
        inputs, targets = mask_with(input_ids[rows], tokenizer, generator, attention_mask[rows])
        return inputs, targets, attention_mask[rows], is_next[rows]

    def losses(model: MaskedLMWithNextSentenceHead, batch: tuple[Tensor, ...]) -> tuple[Tensor, Tensor, Tensor]:
        inputs, targets, attention_mask, is_next = batch  # (B, T) x 3, (B,)
        token_logits, nsp_logits = model(inputs, attention_mask)  # (B, T, V), (B, 2)
        mlm_loss = language_model_loss(token_logits, targets, fast=model.fast)  # on the model's fast switch
        return mlm_loss, cross_entropy(nsp_logits, is_next, fast=model.fast), nsp_logits

    def loss_fn(model: MaskedLMWithNextSentenceHead, batch: tuple[Tensor, ...]) -> Tensor:
        mlm_loss, nsp_loss, _ = losses(model, batch)
        return mlm_loss + nsp_loss

    def evaluate(model: MaskedLMWithNextSentenceHead) -> dict[str, float]:
        device = next(model.parameters()).device
        totals: dict[str, float] = {}
        nsp, correct = [], []
        for batch in val_batches:
            inputs, targets, attention_mask, is_next = (tensor.to(device) for tensor in batch)
            token_logits, nsp_logits = model(inputs, attention_mask)  # (B, T, V), (B, 2)
            totals = add_scores(totals, masked_lm_scores(token_logits, inputs, targets, tokenizer.mask_id))
            nsp.append((MF.cross_entropy(nsp_logits, is_next).item(), len(is_next)))
            correct.append((float((nsp_logits.argmax(dim=-1) == is_next).float().mean()), len(is_next)))
        mlm, val_nsp_loss = masked_lm_metrics(totals), weighted_mean(nsp)
        return {
            "val_loss": mlm["val_loss"] + val_nsp_loss,
            "val_mlm_loss": mlm["val_loss"],
            "val_mlm_accuracy": mlm["val_accuracy"],
            "perplexity": mlm["perplexity"],
            "val_mlm_chosen_loss": mlm["val_chosen_loss"],
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
        warmup=config.warmup if config.warmup >= 0 else default_warmup(config.steps),
        grad_clip=config.grad_clip,
        grad_accum=config.grad_accum,
        eval_every=config.eval_every,
        device=config.device,
        progress=progress,
        fast_optimizer=True,
    )


def build_pretraining_model(config: PretrainConfig, tokenizer: Tokenizer, fast: bool = False) -> nn.Module:
    """The language model (wrapped with a next-sentence head for ``mlm+nsp``), seeded by ``config.seed``.
    ``fast=True`` switches its layers to their fast paths (:func:`minipt.nn.set_fast`): same numbers, less time."""
    torch.manual_seed(config.seed)
    architecture, settings = model_settings(config, tokenizer)
    model = build_model(architecture, **settings)
    if config.objective == "mlm+nsp":
        model = MaskedLMWithNextSentenceHead(model)
    return set_fast(model, True) if fast else model


def checkpoint_path(run_dir: Path) -> Path:
    """A run's ``best.pt``, or its ``last.pt`` when there is no best."""
    path = run_dir / "best.pt" if (run_dir / "best.pt").exists() else run_dir / "last.pt"
    if not path.exists():
        raise MiniptError(f"run folder {run_dir} has neither best.pt nor last.pt")
    return path


def read_pretraining_config(run_dir: Path, flag: str) -> dict:
    """The ``config.json`` of a pretraining run, checked: a finetuning run, a Hugging Face folder, a missing
    section or an unknown key is a one-line error naming ``flag``, the file or the key."""
    saved = read_config(run_dir)
    if "model_type" in saved:  # the config.json of a Hugging Face folder
        prefix = "hf-bert:" if saved["model_type"] == "bert" else "hf-gpt2:"
        hint = f"; name it {prefix}{run_dir}" if flag == "--from" else " (a minipt pretraining run is needed here)"
        raise MiniptError(f"{flag} {run_dir} is a Hugging Face folder (config.json has model_type "
                          f"{saved['model_type']!r}), not a minipt run{hint}")
    if FINETUNE.made(saved):
        raise MiniptError(f"{flag} {run_dir} is a finetuning run; a pretraining run (from minipt pretrain) is needed")
    settings_from_saved(PretrainConfig, saved, "pretrain", run_dir / "config.json")
    check_model_section(saved, run_dir / "config.json")
    return saved


def check_model_section(saved: dict, path: Path) -> None:
    """The ``model`` section of a run's ``config.json``: an ``architecture`` minipt knows and only the keys its
    constructor takes; otherwise one line naming the key."""
    model = saved.get("model")
    if not isinstance(model, dict):
        raise MiniptError(f"{path}: no 'model' section (a config.json that minipt wrote has one; was it edited?)")
    backbones = {**MODEL_CLASSES, BertEncoder.architecture: BertEncoder}  # a finetuned BERT folder's too
    if model.get("architecture") not in backbones:
        raise MiniptError(f"{path}: section 'model': architecture must be one of {', '.join(backbones)}, got "
                          f"{model.get('architecture')!r}")
    known = {**inspect.signature(TransformerLM).parameters, "sep_id": None} if model["architecture"] == "bert" else (
        inspect.signature(backbones[model["architecture"]]).parameters)
    for key in model:
        if key != "architecture" and key not in known:
            raise MiniptError(f"{path}: section 'model': unknown key {key!r}")


def check_corpus_is_there(corpus: str, run_dir: Path, flag: str) -> None:
    """A run's corpus file must still be where the run recorded it: one line with the path looked for."""
    if corpus not in CORPORA and not Path(corpus).is_file():
        raise MiniptError(f"{flag} {run_dir}: its corpus is not at {Path(corpus).absolute()} (moved or deleted?); "
                          "put it back there")


def resumed_config(config: PretrainConfig, run_dir: Path, steps: int | None = None) -> tuple[PretrainConfig, Tokenizer]:
    """The saved config of the run in ``run_dir`` (with ``config``'s device and threads, and ``steps`` when
    given) and its tokenizer. A finished run continues only with more ``steps``; its corpus must be unchanged."""
    saved = read_pretraining_config(run_dir, "--resume")
    settings = asdict(PRETRAIN.resumed(settings_from_saved(PretrainConfig, saved, "pretrain", run_dir / "config.json"),
                                       config))
    tokenizer = load_tokenizer(run_dir / "tokenizer.json")
    if not (run_dir / "last.pt").exists():
        raise MiniptError(f"--resume {run_dir}: there is no last.pt to continue from")
    done = load_checkpoint(run_dir / "last.pt")["loop"]["step"]
    if steps is not None and steps <= done:
        raise MiniptError(f"--steps {steps} must be larger than the {done} steps {run_dir} has done")
    if steps is None and done >= settings["steps"]:
        raise MiniptError(f"--resume {run_dir}: the run already did its {done} steps; pass a larger --steps to "
                          "train it further")
    check_corpus_is_there(settings["corpus"], run_dir, "--resume")
    fingerprints.check_unchanged(saved.get("data", {}).get("corpus"), settings["corpus"], f"--resume {run_dir}")
    return PretrainConfig(**{**settings, "steps": steps or settings["steps"]}), tokenizer


def config_from_run(config: PretrainConfig) -> tuple[PretrainConfig, Tokenizer]:
    """For ``init_from``: ``config`` with the architecture and tokenizer settings of that run, and its tokenizer."""
    run_dir = Path(config.init_from)
    saved = read_pretraining_config(run_dir, "--init-from")
    trained = settings_from_saved(PretrainConfig, saved, "pretrain", run_dir / "config.json")
    architecture = {field.name: getattr(trained, field.name) for field in fields(config)
                    if field.metadata["architecture"]}
    return replace(config, **architecture), load_tokenizer(run_dir / "tokenizer.json")


def start_from_run(model: nn.Module, config: PretrainConfig, objective: Objective) -> dict[str, float | str]:
    """Load the ``init_from`` run's weights into ``model``; return the validation loss and perplexity on the new
    corpus before any training (for ``summary.json``)."""
    path = checkpoint_path(Path(config.init_from))
    checkpoint = load_checkpoint(path)
    check_architecture(model, checkpoint, path)
    load_weights(model, checkpoint["model"], path)
    with torch.no_grad(), evaluation_mode(model):
        before = objective.evaluate(model)
    return {"init_from": config.init_from, "val_loss_before": before["val_loss"],
            "perplexity_before": before["perplexity"]}


def write_run_files(run_dir: Path, config: PretrainConfig, data: PretrainingData) -> None:
    """The new run folder's ``tokenizer.json`` and ``config.json`` (settings, model, tokenizer, loop, data sizes)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    data.tokenizer.save(run_dir / "tokenizer.json")
    architecture, settings = model_settings(config, data.tokenizer)
    write_config(run_dir, {
        "pretrain": asdict(config),
        "model": {"architecture": architecture, **settings},
        "tokenizer": {"kind": config.tokenizer, "vocab_size": data.tokenizer.vocab_size},
        "train": asdict(train_config(config, progress=False)),
        "data": {"train_tokens": len(data.train_ids), "val_tokens": len(data.val_ids),
                 "corpus": fingerprints.fingerprint(config.corpus, CORPORA)},
    })


def pretrain(
    config: PretrainConfig, run_dir: str | Path, resume: bool = False, progress: bool = True, steps: int | None = None,
    on_start: Callable[[], None] | None = None,
) -> TrainResult:
    """Build tokenizer, data, model and objective from ``config`` and train, writing the run into ``run_dir``.

    ``resume=True`` continues the run in ``run_dir`` with its own ``config.json`` and ``tokenizer.json``
    (``config`` then only supplies ``device`` and ``threads``); ``steps`` then sets a new end, e.g. more steps for
    a finished run: the cosine schedule is stretched to end there, so the learning rate continues from that longer
    schedule's value at the step reached. A new run that fails or is interrupted before its first ``last.pt``
    leaves no folder (:func:`minipt.runs.folder.new_run_dir`); the run folder is locked while the job runs
    (:func:`minipt.runs.folder.lock_run`: one process per run). With ``config.init_from`` the model starts from
    that run's weights, with its tokenizer and architecture settings (``config``'s own are replaced), and the
    embedding and the lowest ``config.freeze`` layers stay fixed; ``summary.json`` then also holds the validation
    loss before training. The model trains on its fast path (:func:`minipt.nn.set_fast`). Under torchrun each
    rank draws its own batches (seed ``seed + rank``) of ``batch_size`` sequences, and rank 0 writes the run.
    The run records its corpus and ``init_from`` as absolute paths, so it continues from any working directory.
    ``on_start()`` is called once the run really starts: its settings, folder and corpus file are checked (the
    command line prints "writing the run into RUN" there).
    """
    run_dir = Path(run_dir)
    with interrupts.in_run(run_dir, "pretrain"):  # Ctrl-C: the message says what this run saved
        if resume:
            with distributed.on_main(lambda: lock_run(run_dir)):  # one process per run
                config, tokenizer = resumed_config(config, run_dir, steps)
                config.check()
                if steps is not None and distributed.is_main():  # the run's new end, for the next --resume
                    saved = read_config(run_dir)
                    write_config(run_dir, {**saved, "pretrain": asdict(config),
                                           "train": asdict(train_config(config, False))})
                return train_run(config, run_dir, tokenizer, resume=True, progress=progress, on_start=on_start)
        hint = f", or continue that run with --resume {run_dir}"
        with distributed.on_main(lambda: new_run_dir(run_dir, hint=hint)):  # checked and locked by rank 0
            config, tokenizer = config_from_run(config) if config.init_from else (config, None)
            config.check()  # the settings and the device, before anything is written
            if config.warmup < 0:
                config = replace(config, warmup=default_warmup(config.steps))  # recorded as the number it is
            config = replace(config, corpus=absolute_path(config.corpus, CORPORA),
                             init_from=absolute_path(config.init_from))  # recorded absolute: resume from anywhere
            if config.corpus not in CORPORA and not Path(config.corpus).exists():
                raise DataError(f"--corpus {config.corpus}: no such file, and not a built-in corpus "
                                f"({', '.join(CORPORA)})")
            return train_run(config, run_dir, tokenizer, resume=False, progress=progress, on_start=on_start)


def train_run(
    config: PretrainConfig, run_dir: Path, tokenizer: Tokenizer | None, resume: bool, progress: bool,
    on_start: Callable[[], None] | None = None,
) -> TrainResult:
    """Data, model, objective and the training loop of :func:`pretrain` (``tokenizer``: the run's, or None)."""
    distributed.barrier()  # under torchrun: every rank checked the folder before rank 0 writes into it
    if on_start is not None:  # settings, folder and corpus checked; reading the corpus may take a while
        on_start()
    distributed.log_global_batch(config.batch_size, config.grad_accum, "sequences")
    use_threads(config.threads)
    data = load_data(config, tokenizer)
    model = build_pretraining_model(config, data.tokenizer, fast=True)
    if config.compile:
        model.compile()  # in place: the state_dict's names stay the same
    objective = build_objective(config, data)
    before = start_from_run(model, config, objective) if config.init_from and not resume else {}
    if config.init_from:
        strategies.freeze(model, config.freeze)  # on resume too: the optimizer must leave the frozen part out
    if not resume and distributed.is_main():
        write_run_files(run_dir, config, data)
    with interrupts.deferred():  # Ctrl-C: the loop stops between two steps and saves last.pt
        loop_config = train_config(config, progress)
        result = train(model, next_batch=objective.next_batch, loss_fn=objective.loss_fn,
                       evaluate=objective.evaluate, config=loop_config, run_dir=run_dir,
                       generator=objective.generator, resume=resume,
                       callbacks=standard_callbacks(loop_config, run_dir))
        if before and distributed.is_main():
            write_json(run_dir / "summary.json", {**read_json(run_dir / "summary.json"), **before})
    return result


def load_run(
    run_dir: str | Path, device: str | torch.device = "cpu", fast: bool = False
) -> tuple[LanguageModel, Tokenizer, dict]:
    """The language model of a pretraining run (``best.pt``, or ``last.pt`` when there is no best), its
    tokenizer and its config dict. For ``mlm+nsp`` runs the next-sentence head is dropped. The model computes on
    the readable path unless ``fast=True`` (:func:`minipt.nn.set_fast`)."""
    run_dir = Path(run_dir)
    saved = read_pretraining_config(run_dir, "--from")
    config = settings_from_saved(PretrainConfig, saved, "pretrain", run_dir / "config.json")
    tokenizer = load_tokenizer(run_dir / "tokenizer.json")
    trained_on = saved["model"].get("vocab_size", tokenizer.vocab_size)
    if tokenizer.vocab_size != trained_on:
        raise MiniptError(f"{run_dir / 'tokenizer.json'} has {tokenizer.vocab_size} tokens but the run's model was "
                          f"trained on {trained_on}: that tokenizer does not belong to this run")
    path = checkpoint_path(run_dir)
    model = build_pretraining_model(config, tokenizer, fast=fast)
    checkpoint = load_checkpoint(path)
    check_architecture(model, checkpoint, path)  # an edited config.json must not silently change the model
    load_weights(model, checkpoint["model"], path)
    if isinstance(model, MaskedLMWithNextSentenceHead):
        model = model.lm
    return model.to(device).eval(), tokenizer, saved
