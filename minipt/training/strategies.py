r"""Finetuning strategies: small functions over the models' common interface.

Every minipt model (``TransformerLM``, ``GRULM``, and ``SequenceClassifier`` wrapping either) exposes

* ``embedding`` — the token (and position) embeddings, the lowest part;
* ``layers``    — an ``nn.ModuleList``, **lowest first**: "freeze the lower k layers" counts these;
* everything else (final norm, LM head, classification head) is the *top*, and always trains.

The strategies:

* :func:`freeze` — embedding + lowest ``k`` layers frozen (``k="all"``: a linear probe; ``k=0``: full finetuning);
* :func:`gradual_unfreezing_k` — ULMFiT's schedule, one more layer from the top every ``every`` steps/epochs;
* :func:`discriminative_param_groups` — layer ``l`` learns at ``lr * decay**(top - l)``;
* :func:`reinit_top_layers` — start the top ``r`` layers afresh;
* :func:`l2sp_penalty` — :math:`\lambda \lVert\theta - \theta^{0}\rVert^2`, pulling weights to their pretrained values;
* :func:`optimizer_groups` — the AdamW parameter groups each strategy needs, and :class:`GradualUnfreezing`, the
  training-loop callback that moves the model from stage to stage.

Freezing only sets ``requires_grad``. The training loop keeps a module whose parameters are all frozen in
evaluation mode (no dropout): :func:`minipt.models.modes.train_mode` is the one place that decides the modes.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from minipt.errors import MiniptError
from minipt.optim import param_groups
from minipt.training.callbacks import Callback

STRATEGIES = ("plain", "gradual", "discriminative")  # how the layers train: see optimizer_groups


def _layer_count(model: nn.Module) -> int:
    return len(model.layers)


def parse_freeze(value: str | int, n_layers: int) -> int:
    """Turn ``"all"`` / ``"none"`` / an integer into the number of frozen layers, checking the range."""
    if value == "all":
        return n_layers
    if value == "none":
        return 0
    try:
        k = int(value)
    except (TypeError, ValueError):
        raise MiniptError(f"--freeze must be an integer, 'all' or 'none', got {value!r}") from None
    if not 0 <= k <= n_layers:
        raise MiniptError(f"--freeze must be between 0 and {n_layers} (the model has {n_layers} layers), got {k}")
    return k


def freeze(model: nn.Module, k: int | str) -> list[nn.Module]:
    """Freeze the embedding and the lowest ``k`` layers; unfreeze everything else.

    ``k = 0`` is full finetuning (nothing frozen, the embedding trains too); ``k = len(model.layers)`` or
    ``"all"`` trains only what sits above the layers (final norm and heads): a linear probe.
    Returns the frozen modules, lowest first. The optimizer should be given only the trainable parameters
    (:func:`minipt.optim.param_groups` leaves the frozen ones out); the training loop turns the frozen modules'
    dropout off (:func:`minipt.models.modes.train_mode`).
    """
    k = parse_freeze(k, _layer_count(model))
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    frozen: list[nn.Module] = [model.embedding, *model.layers[:k]] if k > 0 else []
    for module in frozen:
        module.requires_grad_(False)
    return frozen


def gradual_unfreezing_k(step: int, every: int, n_layers: int) -> int:
    """ULMFiT's gradual unfreezing: how many layers are frozen at ``step``.

    Stage ``s = step // every`` (``every`` steps or epochs per stage). At stage 0 only the top (head) trains, so
    all ``n_layers`` layers are frozen; each stage unfreezes **one more layer from the top**; at stage
    ``n_layers`` nothing is frozen (embedding included) and it stays so:

    .. math::
        k(s) = \\max(n_{\\text{layers}} - s, 0), \\qquad s = \\lfloor \\text{step} / \\text{every} \\rfloor

    Example with 3 layers, every = 10: steps 0-9 freeze 3 (head only), 10-19 freeze 2 (top layer trains),
    20-29 freeze 1, from step 30 on freeze 0 (full finetuning).
    """
    if every <= 0:
        raise MiniptError(f"gradual unfreezing needs a positive stage length, got {every}")
    stage = step // every
    return max(n_layers - stage, 0)


class GradualUnfreezing(Callback):
    """Gradual unfreezing in the training loop: before each step the model is frozen to the step's stage,
    :func:`gradual_unfreezing_k` layers, never fewer than ``floor``. (Finetuning runs without gradient
    accumulation, so a step is one batch.)"""

    def __init__(self, every: int, floor: int = 0) -> None:
        self.every, self.floor = every, floor

    def on_step_start(self, step: int, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        freeze(model, max(gradual_unfreezing_k(step, self.every, _layer_count(model)), self.floor))


def discriminative_param_groups(
    model: nn.Module, lr: float, decay: float = 1 / 2.6, weight_decay: float = 0.0
) -> list[dict]:
    r"""Parameter groups per level, the lower the level the smaller the learning rate (ULMFiT).

    Levels: the embedding is level 0, ``layers[i]`` is level ``i + 1``, everything above the layers (final norm
    and heads) is the top level :math:`T = n_{\text{layers}} + 1`. Level ``l`` learns at

    .. math::
        \text{lr}_l = \text{lr} \cdot \text{decay}^{\,T - l}

    so the head gets ``lr``, the top layer ``lr * decay``, ..., the embedding ``lr * decay**T``.
    Within a level, weight decay follows :func:`minipt.optim.param_groups` (none for biases, norms and
    embeddings), so a level may give two groups with the same ``lr``. Frozen parameters are left out. Each group
    carries a ``name`` (the level) for logging.
    """
    decay_group, _ = param_groups(model, weight_decay)
    decayed = {id(p) for p in decay_group["params"]}
    top = len(model.layers) + 1
    levels = [("embedding", 0, model.embedding)]
    levels += [(f"layers.{i}", i + 1, layer) for i, layer in enumerate(model.layers)]
    levels.append(("top", top, model))  # whatever the levels below did not take
    seen: set[int] = set()
    groups = []
    for name, level, module in levels:
        params = [p for p in module.parameters() if p.requires_grad and id(p) not in seen]
        seen |= {id(p) for p in params}
        level_lr = lr * decay ** (top - level)
        with_decay = [p for p in params if id(p) in decayed]
        without_decay = [p for p in params if id(p) not in decayed]
        if with_decay:
            groups.append({"name": name, "params": with_decay, "lr": level_lr, "weight_decay": weight_decay})
        if without_decay:
            groups.append({"name": name, "params": without_decay, "lr": level_lr, "weight_decay": 0.0})
    return groups


def reinit_top_layers(model: nn.Module, r: int, generator: torch.Generator | None = None) -> None:
    """Re-initialise the top ``r`` layers with the model's own initialisation (``model.init_weights``).

    Pretraining's top layers are the most specialised to the pretraining objective; starting them afresh can
    help a different task (Zhang et al., 2021, "Revisiting few-sample BERT fine-tuning").
    """
    n_layers = _layer_count(model)
    if not 0 <= r <= n_layers:
        raise MiniptError(f"--reinit-top must be between 0 and {n_layers}, got {r}")
    if r == 0:
        return
    for layer in model.layers[n_layers - r :]:
        model.init_layer(layer, generator=generator)


def snapshot(model: nn.Module) -> dict[str, Tensor]:
    """A detached copy of every parameter, by name: the reference point :math:`\\theta^0` for L2-SP."""
    return {name: parameter.detach().clone() for name, parameter in model.named_parameters()}


def l2sp_penalty(model: nn.Module, reference: dict[str, Tensor], strength: float) -> Tensor:
    r"""L2-SP (Li et al., 2018): pull each pretrained weight toward its starting point.

    .. math::
        \Omega(\theta) = \lambda \sum_{w \in \text{pretrained}} \lVert w - w^{0} \rVert_2^2

    Plain weight decay pulls weights toward **zero**, which for a pretrained model means forgetting; L2-SP pulls
    them toward what pretraining learned. Only trainable parameters present in ``reference`` count (a new head
    has no pretrained value).
    """
    penalty = None
    for name, parameter in model.named_parameters():
        if parameter.requires_grad and name in reference:
            term = (parameter - reference[name]).pow(2).sum()
            penalty = term if penalty is None else penalty + term
    if penalty is None:  # nothing pretrained is trainable (a linear probe): no penalty
        return next(model.parameters()).new_zeros(())
    return strength * penalty


def trainable_parameter_table(model: nn.Module) -> list[tuple[str, int, int]]:
    """Rows ``(part, trainable, total)`` for the embedding, each layer, and the top — printed before finetuning."""
    def count(params: Iterable[Tensor]) -> tuple[int, int]:
        params = list(params)
        return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)

    rows = [("embedding", *count(model.embedding.parameters()))]
    seen = {id(p) for p in model.embedding.parameters()}
    for i, layer in enumerate(model.layers):
        rows.append((f"layers.{i}", *count(layer.parameters())))
        seen |= {id(p) for p in layer.parameters()}
    rows.append(("top (norm + heads)", *count(p for p in model.parameters() if id(p) not in seen)))
    return rows


def format_parameter_table(rows: list[tuple[str, int, int]]) -> str:
    """:func:`trainable_parameter_table`'s rows as aligned text, with a total line."""
    lines = [f"{'part':<20} {'trainable':>10} {'total':>10}"]
    lines += [f"{part:<20} {trainable:>10,} {total:>10,}" for part, trainable, total in rows]
    trainable, total = sum(row[1] for row in rows), sum(row[2] for row in rows)
    lines.append(f"{'all':<20} {trainable:>10,} {total:>10,}  ({100 * trainable / total:.1f}% trainable)")
    return "\n".join(lines)


def optimizer_groups(
    model: nn.Module,
    strategy: str,
    frozen_k: int,
    *,
    lr: float,
    weight_decay: float,
    lr_decay: float = 1 / 2.6,
    l2sp: float = 0.0,
) -> list[dict]:
    """AdamW groups for the strategy (the freezing is applied here too).

    * ``plain``: the trainable parameters only, decay / no-decay groups (:func:`minipt.optim.param_groups`);
    * ``discriminative``: one group per level, lr shrinking by ``lr_decay`` per level down;
    * ``gradual``: **every** parameter, grouped while all are trainable, then the model is frozen to its
      first stage; a frozen parameter has ``grad = None``, so AdamW gives it no state and no decay until its
      layer is unfrozen.

    With L2-SP (``l2sp > 0``) the backbone's parameters get no weight decay (the penalty pulls them toward their
    pretrained values instead of toward 0); the head keeps plain weight decay.
    """
    if strategy == "gradual":
        freeze(model, 0)
        groups = param_groups(model, weight_decay)
        freeze(model, len(model.layers))  # stage 0: only the top trains
    else:
        freeze(model, frozen_k)
        if strategy == "discriminative":
            groups = discriminative_param_groups(model, lr, lr_decay, weight_decay)
        else:
            groups = param_groups(model, weight_decay)
    if l2sp > 0:
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
