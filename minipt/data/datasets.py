r"""From token ids to training batches, for each objective minipt trains.

* Causal language modelling (GPT): :func:`lm_split`, :func:`causal_lm_batch`, :func:`lm_eval_batches`.
* Masked language modelling (BERT): :func:`mask_tokens`, :func:`masked_lm_batch`.
* Next-sentence prediction (BERT's second objective): :func:`next_sentence_pairs`.
* Classification: :class:`ClassificationDataset`, :func:`collate_classification`, :func:`balanced_sampler`.

Everything returns CPU tensors (moving them to a device is the training loop's job), and every random choice
draws from a ``torch.Generator`` the caller seeds, so a run can be repeated exactly.

Shape letters: ``B`` batch size, ``T`` block size (tokens per sequence), ``N`` number of tokens or examples.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset, WeightedRandomSampler

from minipt.data.text import DataError
from minipt.data.tokenizers import Tokenizer

__all__ = [
    "IGNORE_INDEX",
    "lm_split",
    "causal_lm_batch",
    "lm_eval_batches",
    "mask_tokens",
    "masked_lm_batch",
    "next_sentence_pairs",
    "ClassificationDataset",
    "collate_classification",
    "balanced_sampler",
]

IGNORE_INDEX = -100  # a target the loss skips (cross_entropy's ignore_index default)


# ----------------------------------------------------------------------------------------------------------------
# Causal language modelling


def lm_split(ids: Tensor, val_fraction: float = 0.1) -> tuple[Tensor, Tensor]:
    """Split a token stream into train (the first 90%) and validation (the last 10%), without shuffling:
    neighbouring windows overlap in content, so a random split would leak validation text into training."""
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"lm_split: val_fraction must be in (0, 1), got {val_fraction}")
    n_validation = int(len(ids) * val_fraction)
    return ids[: len(ids) - n_validation], ids[len(ids) - n_validation :]


def _check_long_enough(ids: Tensor, block_size: int) -> None:
    """A window needs ``block_size + 1`` tokens: ``block_size`` inputs, each with the next token as target."""
    if ids.dim() != 1:
        raise DataError(f"token ids must be a 1-D tensor, got shape {tuple(ids.shape)}")
    if len(ids) < block_size + 1:
        raise DataError(
            f"the text is too short: {len(ids)} tokens, but one block needs block_size + 1 = {block_size + 1}; "
            "use more text or a smaller block_size"
        )


def causal_lm_batch(ids: Tensor, batch_size: int, block_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``batch_size`` random windows ``w`` of ``block_size + 1`` consecutive tokens; inputs ``x = w[:-1]`` and
    targets ``y = w[1:]``, so ``y[b, t]`` is the token that follows ``x[b, t]``.

    ``ids`` ``(N,)`` long -> ``x``, ``y`` ``(B, T)`` long.
    """
    _check_long_enough(ids, block_size)
    starts = torch.randint(len(ids) - block_size, (batch_size,), generator=generator)  # (B,)
    positions = starts[:, None] + torch.arange(block_size + 1)  # (B, T + 1)
    windows = ids[positions]  # (B, T + 1)
    return windows[:, :-1], windows[:, 1:]


def lm_eval_batches(ids: Tensor, batch_size: int, block_size: int) -> Iterator[tuple[Tensor, Tensor]]:
    """Deterministic, non-overlapping windows covering ``ids`` for a validation loss, in batches.

    Window ``k`` has inputs ``ids[kT : kT + T]`` and targets ``ids[kT + 1 : kT + T + 1]``; every token but a
    tail shorter than one block is predicted exactly once. The last batch may hold fewer than ``batch_size``.
    """
    _check_long_enough(ids, block_size)
    num_windows = (len(ids) - 1) // block_size
    for first in range(0, num_windows, batch_size):
        starts = torch.arange(first, min(first + batch_size, num_windows)) * block_size  # (B,)
        positions = starts[:, None] + torch.arange(block_size + 1)  # (B, T + 1)
        windows = ids[positions]  # (B, T + 1)
        yield windows[:, :-1], windows[:, 1:]


# ----------------------------------------------------------------------------------------------------------------
# Masked language modelling


def mask_tokens(
    input_ids: Tensor,
    mask_id: int,
    vocab_size: int,
    special_ids: Sequence[int],
    generator: torch.Generator,
    mask_prob: float = 0.15,
    attention_mask: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    r"""BERT's masking recipe: corrupt a copy of ``input_ids`` and say which tokens to predict.

    1. Each real position (not a special token, not padding where ``attention_mask == 0``) is chosen with
       probability ``mask_prob`` (15%), independently.
    2. A chosen position becomes ``<mask>`` with probability 0.8, a random non-special token with
       probability 0.1, and keeps its token with probability 0.1 (so the model cannot assume that an
       unmasked token is always correct).
    3. ``targets`` holds the original token at chosen positions and ``-100`` (ignored by the loss) elsewhere.

    ``input_ids`` ``(B, T)`` long -> ``inputs``, ``targets`` ``(B, T)`` long.
    """
    can_choose = ~torch.isin(input_ids, torch.tensor(list(special_ids)))  # (B, T) bool
    if attention_mask is not None:
        can_choose &= attention_mask.bool()
    chosen = (torch.rand(input_ids.shape, generator=generator) < mask_prob) & can_choose  # (B, T)
    targets = torch.where(chosen, input_ids, IGNORE_INDEX)

    action = torch.rand(input_ids.shape, generator=generator)  # (B, T): < 0.8 mask, < 0.9 random, else keep
    to_mask = chosen & (action < 0.8)
    to_randomize = chosen & (action >= 0.8) & (action < 0.9)
    is_ordinary = torch.ones(vocab_size, dtype=torch.bool)
    is_ordinary[list(special_ids)] = False
    ordinary_ids = torch.arange(vocab_size)[is_ordinary]  # the ids a random replacement may take
    random_tokens = ordinary_ids[torch.randint(len(ordinary_ids), input_ids.shape, generator=generator)]  # (B, T)

    inputs = input_ids.clone()
    inputs[to_mask] = mask_id
    inputs[to_randomize] = random_tokens[to_randomize]
    return inputs, targets


def masked_lm_batch(
    ids: Tensor, batch_size: int, block_size: int, tokenizer: Tokenizer, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """``batch_size`` random windows of ``block_size`` tokens from ``ids``, masked by :func:`mask_tokens`.

    ``ids`` ``(N,)`` long -> ``x`` (corrupted inputs), ``y`` (targets, -100 where nothing is predicted) ``(B, T)``.
    """
    _check_long_enough(ids, block_size)
    starts = torch.randint(len(ids) - block_size + 1, (batch_size,), generator=generator)  # (B,)
    windows = ids[starts[:, None] + torch.arange(block_size)]  # (B, T)
    return mask_tokens(windows, tokenizer.mask_id, tokenizer.vocab_size, tokenizer.special_ids, generator)


# ----------------------------------------------------------------------------------------------------------------
# Next-sentence prediction


def _truncate_pair(first: list[int], second: list[int], max_tokens: int) -> tuple[list[int], list[int]]:
    """Drop tokens from the end of the longer segment until both fit in ``max_tokens`` together (BERT's rule)."""
    first, second = list(first), list(second)
    while len(first) + len(second) > max_tokens:
        longer = first if len(first) > len(second) else second
        longer.pop()
    return first, second


def next_sentence_pairs(
    texts: Sequence[str],
    scene_ids: Sequence[Hashable],
    tokenizer: Tokenizer,
    max_len: int,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Pairs for next-sentence prediction, one per pair of consecutive texts of the same scene.

    With probability 1/2 the pair is ``(text i, text i+1)`` (``is_next = 1``); otherwise text i+1 is replaced
    by a random text from another scene (``is_next = 0``). Each pair becomes
    ``<cls> A <sep> B <sep>`` with segment ids 0 for ``<cls> A <sep>`` and 1 for ``B <sep>``, the longer of
    A and B cut until it fits ``max_len``, then padded on the right.

    Returns ``input_ids``, ``segment_ids``, ``attention_mask`` ``(N, max_len)`` and ``is_next`` ``(N,)``, all long.
    """
    if len(texts) != len(scene_ids):
        raise DataError(f"next_sentence_pairs: {len(texts)} texts but {len(scene_ids)} scene ids")
    if len(set(scene_ids)) < 2:
        raise DataError("next_sentence_pairs: need texts from at least two scenes to draw negative pairs")
    if max_len < 5:
        raise DataError(f"next_sentence_pairs: max_len must fit 3 special tokens and 2 segments, got {max_len}")
    encoded = [tokenizer.encode(text) for text in texts]
    rows, segments, is_next = [], [], []
    for i in range(len(texts) - 1):
        if scene_ids[i] != scene_ids[i + 1]:
            continue
        partner = i + 1
        if torch.rand((), generator=generator) < 0.5:
            partner = int(torch.randint(len(texts), (), generator=generator))
            while scene_ids[partner] == scene_ids[i]:  # draw again until the text comes from another scene
                partner = int(torch.randint(len(texts), (), generator=generator))
        first, second = _truncate_pair(encoded[i], encoded[partner], max_len - 3)
        rows.append([tokenizer.cls_id, *first, tokenizer.sep_id, *second, tokenizer.sep_id])
        segments.append([0] * (len(first) + 2) + [1] * (len(second) + 1))
        is_next.append(int(partner == i + 1))
    if not rows:
        raise DataError("next_sentence_pairs: no two consecutive texts share a scene")

    input_ids = torch.full((len(rows), max_len), tokenizer.pad_id)  # (N, max_len)
    segment_ids = torch.zeros((len(rows), max_len), dtype=torch.long)  # (N, max_len)
    attention_mask = torch.zeros((len(rows), max_len), dtype=torch.long)  # (N, max_len)
    for row_index, (row, segment) in enumerate(zip(rows, segments, strict=True)):
        input_ids[row_index, : len(row)] = torch.tensor(row)
        segment_ids[row_index, : len(row)] = torch.tensor(segment)
        attention_mask[row_index, : len(row)] = 1
    return input_ids, segment_ids, attention_mask, torch.tensor(is_next)


# ----------------------------------------------------------------------------------------------------------------
# Classification


class ClassificationDataset(Dataset):
    """Labelled texts as token ids: each item is ``(ids, label_id)``.

    ``examples`` are ``(text, label)`` pairs; ``labels`` the class names (a label's id is its index).
    Each text is encoded by the tokenizer's ``encode_inputs``: led by ``<cls>`` when ``add_cls`` is set (BERT's
    WordPiece always adds ``[CLS]`` and ``[SEP]``); a text may be a pair ``(A, B)``, joined by ``<sep>``. The ids
    are cut to their first ``max_len``.
    """

    def __init__(
        self,
        examples: Sequence[tuple[str, str]],
        tokenizer: Tokenizer,
        labels: Sequence[str],
        max_len: int,
        add_cls: bool = True,
    ) -> None:
        label_id = {label: index for index, label in enumerate(labels)}
        self.items: list[tuple[list[int], int]] = []
        for number, (text, label) in enumerate(examples):
            if label not in label_id:
                raise DataError(f"example {number}: label {label!r} is not one of the classes {list(labels)}")
            ids = tokenizer.encode_inputs(text, add_cls)  # a text, or a pair of texts (A, B)
            self.items.append((ids[:max_len], label_id[label]))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[list[int], int]:
        return self.items[index]

    @property
    def label_ids(self) -> list[int]:
        """Every example's label id, in order (what :func:`balanced_sampler` needs)."""
        return [label for _, label in self.items]


def collate_classification(batch: Sequence[tuple[list[int], int]], pad_id: int) -> dict[str, Tensor]:
    """Pad a list of ``(ids, label_id)`` on the right to the longest sequence of the batch.

    Returns ``input_ids`` ``(B, T)``, ``attention_mask`` ``(B, T)`` (1 = real token, 0 = padding) and
    ``labels`` ``(B,)``, all long.
    """
    longest = max(len(ids) for ids, _ in batch)
    input_ids = torch.full((len(batch), longest), pad_id)  # (B, T)
    attention_mask = torch.zeros((len(batch), longest), dtype=torch.long)  # (B, T)
    for row, (ids, _) in enumerate(batch):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, : len(ids)] = 1
    labels = torch.tensor([label for _, label in batch])  # (B,)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def balanced_sampler(labels: Sequence[int], generator: torch.Generator) -> WeightedRandomSampler:
    """A sampler that draws each class equally often on average: example weight ``1 / count(its class)``,
    ``len(labels)`` draws with replacement per epoch."""
    counts: dict[int, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    weights = [1.0 / counts[label] for label in labels]
    return WeightedRandomSampler(weights, num_samples=len(labels), replacement=True, generator=generator)
