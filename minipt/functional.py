r"""The explicit math of minipt: every formula the course teaches, written with elementary tensor operations.

Each function mirrors the signature and semantics of its namesake in ``torch.nn.functional`` so that a learner
can swap one for the other; ``tests/test_functional.py`` checks that they agree, and
``tests/test_worked_examples.py`` works small cases out by hand.

Allowed building blocks are elementwise maths (``exp``, ``log``, ``erf``, ``tanh``), reductions (``sum``,
``amax``, ``mean``), ``matmul`` and indexing. Nothing here calls torch's own softmax, cross-entropy, attention,
layer norm or GELU.

This module imports nothing from the rest of minipt: what runs here is exactly what is written here, in
training and in evaluation alike. The opt-in fast paths (hand-derived backward passes) live in
:mod:`minipt.fast`, which builds on this module and is tested equal to it.

Shape letters used below: ``N`` examples, ``C`` classes, ``L`` queries, ``S`` keys, ``E`` query/key size,
``Ev`` value size.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "softmax",
    "log_softmax",
    "cross_entropy",
    "scaled_dot_product_attention",
    "layer_norm",
    "gelu",
    "relu",
    "dropout",
]


def softmax(input: Tensor, dim: int = -1) -> Tensor:
    r"""Softmax along ``dim``: turns scores into probabilities that sum to one.

    .. math::
        \operatorname{softmax}(x)_i = \frac{e^{x_i - m}}{\sum_j e^{x_j - m}}, \qquad m = \max_j x_j

    Subtracting the maximum ``m`` changes nothing mathematically (it cancels between numerator and
    denominator) but keeps every exponent ``<= 0``, so ``exp`` never overflows: logits of size 1e4 are fine.

    Shapes: ``input`` any shape; output the same shape, non-negative, summing to 1 along ``dim``.
    """
    # The shift is a constant for the gradient (softmax is shift-invariant), so it is detached:
    # autograd then does not back-propagate through the max.
    row_max = input.amax(dim=dim, keepdim=True).detach()
    exponentials = (input - row_max).exp()
    return exponentials / exponentials.sum(dim=dim, keepdim=True)


def log_softmax(input: Tensor, dim: int = -1) -> Tensor:
    r"""Logarithm of the softmax, computed with the log-sum-exp trick.

    .. math::
        \log \operatorname{softmax}(x)_i = x_i - \operatorname{LSE}(x), \qquad
        \operatorname{LSE}(x) = m + \log \sum_j e^{x_j - m}, \quad m = \max_j x_j

    Computing ``log(softmax(x))`` directly would give ``log(0) = -inf`` once a probability underflows;
    this form stays finite for logits of size 1e4.

    Shapes: ``input`` any shape; output the same shape.
    """
    row_max = input.amax(dim=dim, keepdim=True).detach()
    shifted = input - row_max
    log_sum_exp = shifted.exp().sum(dim=dim, keepdim=True).log()
    return shifted - log_sum_exp


def cross_entropy(
    input: Tensor,
    target: Tensor,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> Tensor:
    r"""Cross-entropy between logits and class indices (``torch.nn.functional.cross_entropy``).

    For example ``n`` with logits :math:`z_n` and true class :math:`y_n`, with :math:`\varepsilon` the label
    smoothing and :math:`C` the number of classes:

    .. math::
        \ell_n = (1 - \varepsilon)\,\bigl(-\log p_{n, y_n}\bigr)
                 + \frac{\varepsilon}{C} \sum_{c=1}^{C} \bigl(-\log p_{n, c}\bigr),
        \qquad p_n = \operatorname{softmax}(z_n)

    i.e. the target distribution puts :math:`1 - \varepsilon + \varepsilon / C` on the true class and
    :math:`\varepsilon / C` on every other class. Examples whose target equals ``ignore_index`` get
    :math:`\ell_n = 0` and do not count.

    ``reduction="mean"`` divides the sum by the number of non-ignored examples (as torch does, not by ``N``);
    ``"sum"`` returns the sum; ``"none"`` returns :math:`\ell` of shape ``(N,)``.

    Edge case: when every target is ignored, torch's mean is ``0/0 = nan``. minipt returns ``0.0`` instead
    (the batch carries no signal, so no gradient), so one all-padding batch can never poison training.

    The gradient with respect to the logits is :math:`p_n - q_n` (softmax minus the target distribution),
    divided by the count for ``"mean"``.

    Shapes: ``input`` ``(N, C)`` logits; ``target`` ``(N,)`` integer class indices in ``[0, C)`` or
    ``ignore_index``. Output: a scalar, or ``(N,)`` for ``reduction="none"``.
    """
    check_cross_entropy_arguments(input, target, reduction)
    num_classes = input.shape[1]
    log_probs = log_softmax(input, dim=-1)  # (N, C)
    keep = target != ignore_index  # (N,)
    safe_target = target.masked_fill(~keep, 0)  # any valid index; the loss there is zeroed below
    # -log p_{n, y_n}: pick each row's log-probability of its true class
    nll = -log_probs.gather(1, safe_target.unsqueeze(1)).squeeze(1)  # (N,)
    if label_smoothing > 0.0:
        uniform = -log_probs.sum(dim=1) / num_classes  # (N,)  (1/C) sum_c -log p_{n,c}
        losses = (1.0 - label_smoothing) * nll + label_smoothing * uniform
    else:
        losses = nll
    losses = losses * keep  # ignored examples contribute exactly 0
    if reduction == "none":
        return losses
    if reduction == "sum":
        return losses.sum()
    count = keep.sum().clamp_min(1)  # all ignored -> 0 / 1 = 0, not nan
    return losses.sum() / count


def check_cross_entropy_arguments(input: Tensor, target: Tensor, reduction: str) -> None:
    """The argument checks of :func:`cross_entropy`, shared with its fast path (:func:`minipt.fast.cross_entropy`)."""
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if input.dim() != 2 or target.dim() != 1 or input.shape[0] != target.shape[0]:
        raise ValueError(
            f"cross_entropy expects input (N, C) and target (N,), got {tuple(input.shape)} and {tuple(target.shape)}"
        )


def scaled_dot_product_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attn_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    return_weights: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    r"""Scaled dot-product attention (``torch.nn.functional.scaled_dot_product_attention``).

    .. math::
        A = \operatorname{softmax}\!\Bigl(\frac{Q K^\top}{\sqrt{E}} + M\Bigr), \qquad
        \operatorname{Attention}(Q, K, V) = A\,V

    Row ``i`` of the weights :math:`A` says how much query ``i`` takes from each key; every row sums to 1.
    Dividing by :math:`\sqrt{E}` keeps the scores' variance near 1 when ``Q`` and ``K`` have unit-variance
    entries, so the softmax does not saturate.

    Masks (torch's conventions, which learners often trip on):

    * a **boolean** ``attn_mask`` means ``True`` = *may attend*: :math:`M_{ij} = 0` where True, :math:`-\infty`
      where False. (``nn.MultiheadAttention``'s ``key_padding_mask`` is the opposite: True = ignore.)
    * a **float** ``attn_mask`` is added to the scores as it is (:math:`M` itself).
    * ``is_causal=True`` lets query ``i`` see keys ``j <= i`` only (the top-left-aligned lower triangle).

    Fully masked rows: a query that may attend to no key at all gets all-zero weights and a zero output
    (the softmax formula alone gives :math:`0/0 =` ``nan`` there, and so does ``torch.nn.MultiheadAttention``;
    torch 2.13's ``F.scaled_dot_product_attention`` returns zeros too). Zero is what a padding query should
    produce; a ``nan`` would spread through the whole batch at the next layer.

    ``dropout_p`` drops attention weights (inverted dropout) and is applied whenever it is > 0: pass 0 in
    evaluation, as with torch.

    Shapes: ``query`` ``(..., L, E)``, ``key`` ``(..., S, E)``, ``value`` ``(..., S, Ev)``,
    ``attn_mask`` broadcastable to ``(..., L, S)``. Output ``(..., L, Ev)``; with ``return_weights=True``
    also the weights ``(..., L, S)`` (after dropout, as used for the output).
    """
    L, S = query.shape[-2], key.shape[-2]
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    blocked, added = attention_mask_parts(attn_mask, is_causal, L, S, query.device)

    scores = (query @ key.transpose(-2, -1)) * scale  # (..., L, S)
    if added is not None:
        scores = scores + added
    if blocked is not None:
        scores = scores.masked_fill(blocked, float("-inf"))

    if attn_mask is None:
        attention_weights = softmax(scores, dim=-1)  # (..., L, S)
    else:
        # A row whose scores are all -inf has no key to attend to: give it zero weights instead of 0/0 = nan.
        dead_rows = scores.amax(dim=-1, keepdim=True) == float("-inf")  # (..., L, 1)
        attention_weights = softmax(scores.masked_fill(dead_rows, 0.0), dim=-1)
        attention_weights = attention_weights.masked_fill(dead_rows, 0.0)

    if dropout_p > 0.0:
        attention_weights = dropout(attention_weights, p=dropout_p, training=True, generator=generator)
    output = attention_weights @ value  # (..., L, Ev)
    if return_weights:
        return output, attention_weights
    return output


def attention_mask_parts(
    attn_mask: Tensor | None, is_causal: bool, L: int, S: int, device: torch.device
) -> tuple[Tensor | None, Tensor | None]:
    """torch's attention-mask conventions, read once: ``(blocked, added)``.

    ``blocked`` is boolean, broadcastable to ``(..., L, S)``, True where a query may NOT look (from
    ``is_causal`` and a boolean ``attn_mask``, whose True means *may attend*); ``added`` is a float
    ``attn_mask``, added to the scores as it is. Either is None when absent. Shared with :mod:`minipt.fast`,
    so both paths read a mask the same way.
    """
    blocked = None  # (..., L, S) boolean, True where a query may not look
    added = None  # a float attn_mask, added to the scores
    if is_causal:
        blocked = torch.ones(L, S, dtype=torch.bool, device=device).triu(diagonal=1)  # key j > query i
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            blocked = ~attn_mask if blocked is None else blocked | ~attn_mask
        else:
            added = attn_mask
    return blocked, added


def layer_norm(
    input: Tensor,
    normalized_shape: int | tuple[int, ...] | list[int] | torch.Size,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    r"""Layer normalisation over the last ``len(normalized_shape)`` dimensions.

    .. math::
        \mu = \frac{1}{D}\sum_{d} x_d, \qquad \sigma^2 = \frac{1}{D}\sum_d (x_d - \mu)^2, \qquad
        y = \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} \odot \gamma + \beta

    The variance is the *biased* one (divide by ``D``, not ``D - 1``), as in torch; ``gamma = weight`` and
    ``beta = bias`` are optional.

    Shapes: ``input`` ``(..., *normalized_shape)``; ``weight`` and ``bias`` ``normalized_shape``;
    output the shape of ``input``.
    """
    dims = layer_norm_dims(input, normalized_shape)  # the last len(normalized_shape) dims
    mean = input.mean(dim=dims, keepdim=True)
    centred = input - mean
    variance = (centred * centred).mean(dim=dims, keepdim=True)  # biased: divide by D
    output = centred * (variance + eps).rsqrt()
    if weight is not None:
        output = output * weight
    if bias is not None:
        output = output + bias
    return output


def layer_norm_dims(
    input: Tensor, normalized_shape: int | tuple[int, ...] | list[int] | torch.Size
) -> tuple[int, ...]:
    """The dims a layer norm averages over, ``(-len(normalized_shape), ..., -1)``, after checking that
    ``input``'s shape ends with ``normalized_shape`` (shared with :mod:`minipt.fast`)."""
    if isinstance(normalized_shape, int):
        normalized_shape = (normalized_shape,)
    normalized_shape = tuple(normalized_shape)
    if tuple(input.shape[input.dim() - len(normalized_shape) :]) != normalized_shape:
        raise ValueError(
            f"layer_norm: input shape {tuple(input.shape)} does not end with normalized_shape {normalized_shape}"
        )
    return tuple(range(-len(normalized_shape), 0))


def gelu(input: Tensor, approximate: str = "none") -> Tensor:
    r"""Gaussian Error Linear Unit: the input weighted by the probability that a standard normal is below it.

    .. math::
        \operatorname{GELU}(x) = x\,\Phi(x) = \tfrac12 x\Bigl(1 + \operatorname{erf}\bigl(x/\sqrt2\bigr)\Bigr)

    ``approximate="tanh"`` is the form GPT-2 used:

    .. math::
        \operatorname{GELU}(x) \approx \tfrac12 x\Bigl(1 + \tanh\bigl(\sqrt{2/\pi}\,(x + 0.044715\,x^3)\bigr)\Bigr)

    Shapes: elementwise; output the shape of ``input``.
    """
    check_gelu_form(approximate)
    if approximate == "none":
        return 0.5 * input * (1.0 + torch.erf(input * (1.0 / math.sqrt(2.0))))
    inner = math.sqrt(2.0 / math.pi) * (input + 0.044715 * input * input * input)  # approximate == "tanh"
    return 0.5 * input * (1.0 + torch.tanh(inner))


def check_gelu_form(approximate: str) -> None:
    """``approximate`` must be ``"none"`` (the exact GELU) or ``"tanh"`` (shared with :mod:`minipt.fast`)."""
    if approximate not in ("none", "tanh"):
        raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")


def relu(input: Tensor) -> Tensor:
    r"""Rectified linear unit, :math:`\operatorname{ReLU}(x) = \max(x, 0)`. Elementwise.

    The gradient is 1 where :math:`x > 0` and 0 elsewhere (0 at :math:`x = 0` too, as torch). ``torch.relu``
    computes exactly this max; its backward is several times faster on CPU than that of ``clamp_min``.
    """
    return torch.relu(input)


def dropout(
    input: Tensor, p: float = 0.5, training: bool = True, generator: torch.Generator | None = None
) -> Tensor:
    r"""Inverted dropout: zero each entry with probability ``p`` and scale the survivors by ``1/(1-p)``.

    .. math::
        y = \frac{m \odot x}{1 - p}, \qquad m_i \sim \operatorname{Bernoulli}(1 - p)

    Scaling at training time keeps :math:`\mathbb{E}[y] = x`, so evaluation (``training=False``) is the
    identity. ``p = 1`` drops everything (output zeros).

    Shapes: elementwise; output the shape of ``input``.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return input
    if p == 1.0:
        return input * 0.0
    uniform = torch.rand(input.shape, generator=generator, device=input.device, dtype=input.dtype)
    keep = uniform >= p  # True with probability 1 - p
    return input * keep / (1.0 - p)
