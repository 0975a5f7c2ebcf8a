r"""Opt-in fast paths: hand-derived backward passes as ``torch.autograd.Function``s, each tested equal to the
readable formula it speeds up.

The readable formulas are in :mod:`minipt.functional` (and :func:`minipt.nn.gru_cell_step` for the GRU); they
are what runs by default. Autograd differentiates any composition of tensor operations, but it records every
small operation and replays each one backwards. Where a formula is applied many times (a recurrent layer in a
Python loop over time steps) or touches big tensors elementwise (the attention scores), that bookkeeping and
memory traffic cost more than the arithmetic. Deriving the gradient once by hand lets the backward pass run
as a few fused tensor operations.

Each Function has its backward pass written right under its forward pass, with the derivation in its docstring,
and a small wrapper with the signature of the readable function (:func:`cross_entropy`, :func:`attention` as
:func:`~minipt.functional.scaled_dot_product_attention`, :func:`layer_norm`, :func:`gelu`, and
:func:`gru_sequence` for one GRU layer). A layer of :mod:`minipt.nn` takes them when built with
``fast=True``; a language model built with ``fast=True`` also takes :func:`cross_entropy` for its loss.
``tests/test_fast.py`` checks every one against its readable formula (values and gradients in float64) and
with ``torch.autograd.gradcheck``; ``tests/test_models.py`` does the same for whole models.

The forward arithmetic of each Function is fixed (the same operations in the same order), so that training
runs stay bit-for-bit reproducible; :class:`LayerNorm` and :class:`GELU` (exact form) give the same bits as
the readable formulas in the forward direction, and so does :class:`CrossEntropy`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from minipt import functional as MF

__all__ = [
    "FastSwitch", "as_switch", "cross_entropy", "CrossEntropy", "attention", "Attention", "layer_norm", "LayerNorm",
    "gelu", "GELU", "gru_sequence", "GRUSequence",
]

LOG2_E = 1.0 / math.log(2.0)  # log2(e)
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


# ----------------------------------------------------------------------------------------------------------
# The switch
# ----------------------------------------------------------------------------------------------------------


class FastSwitch:
    """The one switch between the readable formulas and the fast paths, shared by everything in a model.

    A model makes one and hands it to each of its layers, so ``if self.fast:`` in any layer, and the choice of
    its loss, read the same switch; :func:`minipt.nn.set_fast` flips it once for them all. ``bool(switch)``
    is its state. It is not a parameter or a buffer, so ``state_dict`` keys do not change.
    """

    def __init__(self, on: bool = False) -> None:
        self.on = bool(on)

    def __bool__(self) -> bool:
        return self.on

    def __repr__(self) -> str:
        return f"FastSwitch({self.on})"


def as_switch(fast: bool | FastSwitch) -> FastSwitch:
    """``fast`` itself when it is a :class:`FastSwitch` (a switch shared with the caller), else a new one."""
    return fast if isinstance(fast, FastSwitch) else FastSwitch(fast)


# ----------------------------------------------------------------------------------------------------------
# Cross-entropy
# ----------------------------------------------------------------------------------------------------------


class CrossEntropy(torch.autograd.Function):
    r"""Cross-entropy of logits against class indices, with its gradient written out.

    Forward, as :func:`minipt.functional.cross_entropy` (every number it uses is computed by the same
    operations, so the loss has the same bits): :math:`p_n = \operatorname{softmax}(z_n)` and

    .. math::
        \ell_n = -\sum_c q_{n,c} \log p_{n,c}, \qquad
        q_{n,c} = (1 - \varepsilon)\,[c = y_n] + \frac{\varepsilon}{C}

    Backward: since :math:`\sum_c q_{n,c} = 1`, the gradient of :math:`\ell_n` with respect to the logits is
    the softmax minus the target distribution,

    .. math::
        \frac{\partial \ell_n}{\partial z_{n,c}} = p_{n,c} - q_{n,c},

    scaled per row by the incoming gradient and the reduction (:math:`1/\text{count}` for ``"mean"``) and by 0 for
    ignored rows. Autograd would walk back through every step of the log-softmax and the ``gather``, each a pass
    over the ``(N, C)`` logits; here it is one multiplication and one scatter. The exponentials
    :math:`e^{z - \max z}` and their row sums are kept from the forward pass, and the forward pass computes
    :math:`\log p` only at the true class (and for every class only with label smoothing).

    Inputs: ``input`` ``(N, C)``, ``target`` ``(N,)``, ``ignore_index``, ``reduction``, ``label_smoothing``.
    """

    @staticmethod
    def forward(ctx, input, target, ignore_index, reduction, label_smoothing):
        num_classes = input.shape[1]
        row_max = input.amax(dim=1, keepdim=True)  # (N, 1)
        exps = (input - row_max).exp_()  # e^{z - max z}, (N, C)
        sum_exps = exps.sum(dim=1, keepdim=True)  # (N, 1)
        log_sum_exps = sum_exps.log()  # LSE(z) - max z, (N, 1)
        keep = target != ignore_index  # (N,)
        safe_target = target.masked_fill(~keep, 0)
        # only the true class's log p is needed: (z_y - max z) - (LSE(z) - max z), no pass over all C classes
        shifted_true = input.gather(1, safe_target.unsqueeze(1)) - row_max  # (N, 1)
        nll = -(shifted_true - log_sum_exps).squeeze(1)  # (N,)
        if label_smoothing > 0.0:
            log_probs = (input - row_max) - log_sum_exps  # every log p_{n,c}, (N, C)
            uniform = -log_probs.sum(dim=1) / num_classes  # (N,)
            losses = (1.0 - label_smoothing) * nll + label_smoothing * uniform
        else:
            losses = nll
        losses = losses * keep
        ctx.save_for_backward(exps, sum_exps, safe_target, keep)
        ctx.reduction, ctx.label_smoothing = reduction, label_smoothing
        if reduction == "none":
            return losses
        if reduction == "sum":
            return losses.sum()
        return losses.sum() / keep.sum().clamp_min(1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        exps, sum_exps, safe_target, keep = ctx.saved_tensors
        smoothing, num_classes = ctx.label_smoothing, exps.shape[1]
        row_scale = keep.to(exps.dtype) * grad_output  # (N,): 0 for ignored rows
        if ctx.reduction == "mean":
            row_scale = row_scale / keep.sum().clamp_min(1)
        row_scale = row_scale.unsqueeze(1)  # (N, 1)
        grad_input = exps * (row_scale / sum_exps)  # s p, (N, C)
        if smoothing > 0.0:
            grad_input.sub_(row_scale * (smoothing / num_classes))  # s (p - eps / C)
        grad_input.scatter_add_(1, safe_target.unsqueeze(1), row_scale * -(1.0 - smoothing))  # s (p - q)
        return grad_input, None, None, None, None


def cross_entropy(
    input: Tensor,
    target: Tensor,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> Tensor:
    """:func:`minipt.functional.cross_entropy` through :class:`CrossEntropy`: the same arguments, shapes and
    forward bits; the backward pass is softmax minus the target distribution, computed in one go."""
    MF.check_cross_entropy_arguments(input, target, reduction)
    return CrossEntropy.apply(input, target, ignore_index, reduction, label_smoothing)


# ----------------------------------------------------------------------------------------------------------
# Attention
# ----------------------------------------------------------------------------------------------------------


class Attention(torch.autograd.Function):
    r"""Scaled dot-product attention with its backward pass derived by hand (the flash-attention identities).

    Forward, with :math:`Q` already multiplied by the scale and :math:`M` the additive mask (:math:`-\infty`
    where a query may not look):

    .. math::
        S = Q K^\top + M, \qquad E = e^{S - \max_j S}, \qquad s = \textstyle\sum_j E, \qquad
        O = \frac{E\,V}{s}

    (computed as :math:`E = 2^{\log_2 e\,(S - \max_j S)}`, the same number, because ``exp2`` is faster).

    The weights :math:`A = E / s` are never divided out: dividing the small output ``(L, Ev)`` by :math:`s`
    is cheaper than dividing the big ``(L, S)`` weights. A fully blocked row has :math:`E = 0` and gets
    :math:`O = 0` (its :math:`s = 0` is replaced by 1; every other row has :math:`s \ge 1`).

    Backward, given :math:`\bar O`. The softmax gradient :math:`\bar S = A \odot (\bar A - D)` needs the row
    sums :math:`D_i = \sum_j \bar A_{ij} A_{ij}`, and since :math:`\bar A = \bar O V^\top` these equal
    :math:`D_i = \bar O_i \cdot O_i`, a sum over the small output instead of the big weights. Then:

    .. math::
        \bar V = A^\top \bar O = E^\top \frac{\bar O}{s}, \qquad
        \bar S = E \odot \Bigl(\frac{\bar O}{s} V^\top - \frac{D}{s}\Bigr), \qquad
        \bar Q = \bar S K, \qquad \bar K = \bar S^\top Q, \qquad \bar M = \bar S \text{ (summed to M's shape)}

    Dropout with probability :math:`p` multiplies the weights by :math:`K / (1 - p)`, :math:`K_{ij}` = 1
    (kept) or 0: with :math:`E' = E \odot K / (1 - p)` the output is :math:`O = E' V / s`. The identity
    :math:`D_i = \bar O_i \cdot O_i` still holds, and :math:`\bar V = E'^\top \bar O / s`,
    :math:`\bar S = E' \odot (\bar O / s)\,V^\top - E \odot D / s`.

    Inputs: ``scaled_query`` ``(..., L, E)``, ``key`` ``(..., S, E)``, ``value`` ``(..., S, Ev)``,
    ``additive_mask`` broadcastable to ``(..., L, S)`` or None (natural units, as in
    :func:`~minipt.functional.scaled_dot_product_attention`), ``dropout_p`` in ``[0, 1)``, ``generator`` for
    the dropout draws or None (the draws are those of :func:`minipt.functional.dropout`), ``return_weights``.
    Output ``(..., L, Ev)``, and with ``return_weights`` also the weights :math:`A = E' / s` ``(..., L, S)``
    (after dropout, as applied; for inspection, not differentiable). The backward pass works in place, so it
    cannot itself be differentiated again (``once_differentiable``).
    """

    @staticmethod
    def forward(ctx, scaled_query, key, value, additive_mask, dropout_p, generator, return_weights):
        # Work in base 2: e^x = 2^(x log2 e), and exp2 is several times faster than exp on CPU (above all on
        # the -inf of masked scores). Multiplying the small query (L, E) by log2 e costs less than the scores,
        # and the mask is scaled inside the addition (alpha), so no base-2 copy of it is ever made.
        scores = (scaled_query * LOG2_E) @ key.transpose(-2, -1)  # log2(e) * Q K^T, (..., L, S)
        if additive_mask is not None:  # + log2(e) * M
            if torch.broadcast_shapes(additive_mask.shape, scores.shape) == scores.shape:
                scores.add_(additive_mask, alpha=LOG2_E)
            else:  # a mask with more batch dims than Q K^T
                scores = torch.add(scores, additive_mask, alpha=LOG2_E)
        # a fully blocked row has max -inf; clamping it to a finite number makes its E exactly 0, not nan
        row_max = scores.amax(dim=-1, keepdim=True).clamp_min(torch.finfo(scores.dtype).min)  # (..., L, 1)
        exponentials = scores.sub_(row_max).exp2_()  # E = e^(S - max S), (..., L, S), computed in place
        inverse_sums = exponentials.sum(dim=-1, keepdim=True).clamp_min(1.0).reciprocal()  # 1/s, (..., L, 1)
        kept_exponentials = exponentials  # E', the weights actually applied to V
        if dropout_p > 0.0:
            uniform = torch.rand(
                exponentials.shape, generator=generator, dtype=exponentials.dtype, device=exponentials.device
            )
            kept_exponentials = exponentials * (uniform >= dropout_p) * (1.0 / (1.0 - dropout_p))
        output = (kept_exponentials @ value) * inverse_sums  # (..., L, Ev)
        ctx.save_for_backward(scaled_query, key, value, exponentials, kept_exponentials, inverse_sums, output)
        ctx.mask_shape = None if additive_mask is None else additive_mask.shape
        if not return_weights:
            return output
        weights = kept_exponentials * inverse_sums  # A = E' / s, (..., L, S): only when asked, for inspection
        ctx.mark_non_differentiable(weights)
        return output, weights

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output, _grad_weights=None):
        scaled_query, key, value, exponentials, kept_exponentials, inverse_sums, output = ctx.saved_tensors
        scaled_grad_output = grad_output * inverse_sums  # dO / s, (..., L, Ev)
        row_dots = (grad_output * output).sum(dim=-1, keepdim=True) * inverse_sums  # D / s, (..., L, 1)
        grad_value = kept_exponentials.transpose(-2, -1) @ scaled_grad_output  # (..., S, Ev)
        grad_scores = scaled_grad_output @ value.transpose(-2, -1)  # (dO / s) V^T, (..., L, S)
        if kept_exponentials is exponentials:  # no dropout: E ((dO / s) V^T - D / s)
            grad_scores.sub_(row_dots).mul_(exponentials)
        else:  # E' (dO / s) V^T - E D / s
            grad_scores.mul_(kept_exponentials).sub_(exponentials * row_dots)
        grad_query = grad_scores @ key  # (..., L, E)
        grad_key = grad_scores.transpose(-2, -1) @ scaled_query  # (..., S, E)
        grad_mask = None
        if ctx.mask_shape is not None and ctx.needs_input_grad[3]:
            grad_mask = grad_scores.sum_to_size(ctx.mask_shape)
        return (
            _sum_to_shape(grad_query, scaled_query.shape),
            _sum_to_shape(grad_key, key.shape),
            _sum_to_shape(grad_value, value.shape),
            grad_mask,
            None,
            None,
            None,
        )



def _sum_to_shape(gradient: Tensor, shape: torch.Size) -> Tensor:
    """Undo broadcasting over leading dims (e.g. one key shared by every head) by summing the gradient."""
    return gradient if gradient.shape == shape else gradient.sum_to_size(shape)


def attention(
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
    """:func:`minipt.functional.scaled_dot_product_attention` through :class:`Attention`: the same arguments
    and mask conventions (read by :func:`minipt.functional.attention_mask_parts`). The weights returned with
    ``return_weights=True`` are for inspection: no gradient flows back through them.

    A float ``attn_mask`` goes to the kernel as it is. A boolean mask or ``is_causal`` becomes one additive
    mask first, ``0`` where a query may look and ``-inf`` where not (adding a float mask is several times
    faster than ``masked_fill`` with a broadcast boolean one). Shapes as in the readable function.
    """
    if dropout_p >= 1.0:  # every weight dropped: the kernel would divide by 1 - p = 0; the formula gives 0
        return MF.scaled_dot_product_attention(
            query, key, value, attn_mask, dropout_p, is_causal, scale, return_weights, generator
        )
    L, S = query.shape[-2], key.shape[-2]
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    blocked, mask = MF.attention_mask_parts(attn_mask, is_causal, L, S, query.device)
    if blocked is not None:
        minus_infinity = torch.zeros(blocked.shape, dtype=query.dtype, device=query.device)
        minus_infinity.masked_fill_(blocked, float("-inf"))  # (..., L, S): 0 = may look, -inf = blocked
        mask = minus_infinity if mask is None else minus_infinity + mask
    return Attention.apply(query * scale, key, value, mask, dropout_p, generator, return_weights)


# ----------------------------------------------------------------------------------------------------------
# Layer normalisation
# ----------------------------------------------------------------------------------------------------------


class LayerNorm(torch.autograd.Function):
    r"""Layer normalisation over the last ``D``-sized dims with its backward pass derived by hand.

    Forward, per row of ``D`` entries:

    .. math::
        \mu = \tfrac1D \textstyle\sum_d x_d, \quad
        \rho = \bigl(\tfrac1D \sum_d (x_d - \mu)^2 + \epsilon\bigr)^{-1/2}, \quad
        \hat x = (x - \mu)\,\rho, \quad y = \hat x \odot \gamma + \beta

    Backward, given :math:`\bar y` (means over the row, the last ``D``-sized dims):

    .. math::
        \bar{\hat x} = \bar y \odot \gamma, \qquad
        \bar x = \rho\,\Bigl(\bar{\hat x} - \operatorname{mean}(\bar{\hat x})
                 - \hat x \operatorname{mean}(\bar{\hat x} \odot \hat x)\Bigr), \qquad
        \bar\gamma = \textstyle\sum_{\text{rows}} \bar y \odot \hat x, \qquad
        \bar\beta = \sum_{\text{rows}} \bar y

    (the two means are what normalising takes away: shifting all of ``x`` or scaling it changes nothing).
    Inputs: ``input`` ``(..., *normalized_shape)``, ``weight`` and ``bias`` ``normalized_shape`` or None,
    ``num_dims = len(normalized_shape)``, ``eps``.
    """

    @staticmethod
    def forward(ctx, input, weight, bias, num_dims, eps):
        dims = tuple(range(-num_dims, 0))
        mean = input.mean(dim=dims, keepdim=True)
        centred = input - mean
        inverse_std = (centred * centred).mean(dim=dims, keepdim=True).add_(eps).rsqrt_()  # rho, (..., 1)
        normalised = centred.mul_(inverse_std)  # x hat, in place of the centred values
        output = normalised
        if weight is not None:
            output = output * weight
        if bias is not None:
            output = output + bias
        elif weight is None:
            output = output.clone()  # never hand out the tensor saved for backward
        ctx.save_for_backward(normalised, inverse_std, weight)
        ctx.dims, ctx.has_bias = dims, bias is not None
        return output

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        normalised, inverse_std, weight = ctx.saved_tensors
        dims = ctx.dims
        grad_normalised = grad_output if weight is None else grad_output * weight  # (..., *normalized_shape)
        mean_grad = grad_normalised.mean(dim=dims, keepdim=True)
        mean_grad_dot = (grad_normalised * normalised).mean(dim=dims, keepdim=True)
        grad_input = (grad_normalised - mean_grad).sub_(normalised * mean_grad_dot).mul_(inverse_std)
        row_dims = tuple(range(grad_output.dim() - len(dims)))  # every dim that is not normalised
        grad_weight = (grad_output * normalised).sum(dim=row_dims) if weight is not None else None
        grad_bias = grad_output.sum(dim=row_dims) if ctx.has_bias else None
        return grad_input, grad_weight, grad_bias, None, None


def layer_norm(
    input: Tensor,
    normalized_shape: int | tuple[int, ...] | list[int] | torch.Size,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    """:func:`minipt.functional.layer_norm` through :class:`LayerNorm`: the same arguments and shapes.

    Its forward pass runs the same operations in the same order as the readable formula, so the two give
    the same bits (``tests/test_nn.py`` checks it); only the backward pass differs.
    """
    num_dims = len(MF.layer_norm_dims(input, normalized_shape))
    return LayerNorm.apply(input, weight, bias, num_dims, eps)


# ----------------------------------------------------------------------------------------------------------
# GELU
# ----------------------------------------------------------------------------------------------------------


class GELU(torch.autograd.Function):
    r"""GELU with its derivative written out (autograd would replay every elementwise step of the formula).

    Exact form, with :math:`\Phi` the standard normal CDF and :math:`\varphi` its density:

    .. math::
        y = x\,\Phi(x), \qquad \frac{dy}{dx} = \Phi(x) + x\,\varphi(x), \qquad
        \Phi(x) = \tfrac12\bigl(1 + \operatorname{erf}(x/\sqrt2)\bigr), \quad
        \varphi(x) = \frac{e^{-x^2/2}}{\sqrt{2\pi}}

    ``approximate="tanh"``, with :math:`u = \sqrt{2/\pi}\,(x + 0.044715\,x^3)` and :math:`t = \tanh u`:

    .. math::
        y = \tfrac12 x (1 + t), \qquad
        \frac{dy}{dx} = \tfrac12 (1 + t) + \tfrac12 x\,(1 - t^2)\,\sqrt{2/\pi}\,(1 + 3 \cdot 0.044715\,x^2)

    Shapes: elementwise.
    """

    @staticmethod
    def forward(ctx, input, approximate):
        # in-place steps on fresh temporaries: each full-size pass over memory costs as much as the maths
        if approximate == "tanh":
            cubic = (input * input).mul_(0.044715).add_(1.0).mul_(input)  # x + 0.044715 x^3
            tanh_u = cubic.mul_(SQRT_2_OVER_PI).tanh_()  # t = tanh(u)
            gate = (tanh_u + 1.0).mul_(0.5)  # plays the role of Phi(x)
            ctx.save_for_backward(input, tanh_u)
        else:
            gate = (input * (1.0 / math.sqrt(2.0))).erf_().add_(1.0).mul_(0.5)  # Phi(x)
            ctx.save_for_backward(input, gate)
        ctx.approximate = approximate
        return input * gate

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        input, saved = ctx.saved_tensors
        squared = input * input
        if ctx.approximate == "tanh":
            tanh_u = saved
            du_dx = squared.mul_(3.0 * 0.044715).add_(1.0).mul_(SQRT_2_OVER_PI)  # u'(x)
            # 1/2 (1 + t) + 1/2 x (1 - t^2) u'  =  1/2 (1 + t + x (1 - t^2) u')
            derivative = (1.0 - tanh_u * tanh_u).mul_(du_dx).mul_(input).add_(tanh_u).add_(1.0).mul_(0.5)
        else:
            cdf = saved
            density = squared.mul_(-0.5).exp_().mul_(1.0 / math.sqrt(2.0 * math.pi))  # phi(x)
            derivative = density.mul_(input).add_(cdf)  # Phi(x) + x phi(x)
        return derivative.mul_(grad_output), None


def gelu(input: Tensor, approximate: str = "none") -> Tensor:
    """:func:`minipt.functional.gelu` through :class:`GELU`; ``approximate`` is ``"none"`` or ``"tanh"``.

    The exact form's forward pass gives the same bits as the readable formula (it multiplies by one half at
    another place, which is exact in binary floating point); the tanh form's differs by rounding, since it
    computes :math:`x (1 + 0.044715 x^2)` where the formula has :math:`x + 0.044715 x^3`.
    """
    MF.check_gelu_form(approximate)
    return GELU.apply(input, approximate)


# ----------------------------------------------------------------------------------------------------------
# GRU layer over a whole sequence
# ----------------------------------------------------------------------------------------------------------


class GRUSequence(torch.autograd.Function):
    r"""One GRU layer run over all time steps, with its backward pass through time derived by hand.

    Forward, for ``t = 1..T`` (torch's gate equations; :math:`i = W_{ih} x_t + b_{ih}` is precomputed for all
    steps, :math:`g = W_{hh} h_{t-1} + b_{hh}`, both split into r, z, n thirds):

    .. math::
        r = \sigma(i_r + g_r), \quad z = \sigma(i_z + g_z), \quad n = \tanh(i_n + r \odot g_n), \quad
        h' = (1 - z) \odot n + z \odot h_{t-1}

    With a validity mask :math:`m_t \in \{0, 1\}` (padding): :math:`h_t = m_t h' + (1 - m_t) h_{t-1}` and the
    output is :math:`o_t = m_t h'`.

    Backward, for ``t = T..1``, with :math:`\bar h` the gradient reaching :math:`h_t` from later steps and
    :math:`\bar o_t` the gradient of the output (all products elementwise):

    .. math::
        \bar h' &= m_t (\bar o_t + \bar h), \\
        \bar a_n &= \bar h' (1 - z)(1 - n^2), \qquad
        \bar a_z = \bar h' (h_{t-1} - n)\, z (1 - z), \qquad
        \bar a_r = \bar a_n\, g_n\, r (1 - r), \\
        \bar i &= [\bar a_r, \bar a_z, \bar a_n], \qquad \bar g = [\bar a_r, \bar a_z, r\,\bar a_n], \\
        \bar h_{t-1} &= (1 - m_t)\,\bar h + z\,\bar h' + \bar g\, W_{hh}

    and once the loop is done :math:`\bar W_{hh} = \sum_t \bar g_t^\top h_{t-1}`,
    :math:`\bar b_{hh} = \sum_t \bar g_t` (two big matmuls instead of ``T`` small ones).

    Inputs: ``input_gates`` ``(B, T, 3H)``, ``h0`` ``(B, H)``, ``weight_hh`` ``(3H, H)``, ``bias_hh``
    ``(3H,)`` or None, ``valid`` ``(B, T)`` boolean or None. Outputs: ``output`` ``(B, T, H)``, ``h_n``
    ``(B, H)``, and the gates ``reset`` and ``update`` ``(B, T, H)`` (for inspection; not differentiable).
    """

    @staticmethod
    def forward(ctx, input_gates, h0, weight_hh, bias_hh, valid):
        B, T, _ = input_gates.shape
        H = h0.shape[1]
        time_major_gates = input_gates.transpose(0, 1)  # (T, B, 3H), a view
        mask = None if valid is None else valid.transpose(0, 1).unsqueeze(-1).to(h0.dtype)  # (T, B, 1)
        previous_states = h0.new_empty(T, B, H)  # h_{t-1} for every t
        reset_update = h0.new_empty(T, B, 2 * H)  # [r, z]
        candidates = h0.new_empty(T, B, H)  # n
        hidden_n = h0.new_empty(T, B, H)  # g_n = W_hn h_{t-1} + b_hn
        outputs = h0.new_empty(T, B, H)
        h = h0
        for t in range(T):
            previous_states[t] = h
            hidden_gates = h @ weight_hh.t() if bias_hh is None else torch.addmm(bias_hh, h, weight_hh.t())
            step_gates = time_major_gates[t]  # (B, 3H)
            # each step's results go into slices of the (T, B, .) buffers by assignment (torch.compile takes no
            # strided out=)
            reset_update[t] = torch.sigmoid(step_gates[:, : 2 * H] + hidden_gates[:, : 2 * H])
            reset, update = reset_update[t, :, :H], reset_update[t, :, H:]
            hidden_n[t] = hidden_gates[:, 2 * H :]
            n = torch.tanh(torch.addcmul(step_gates[:, 2 * H :], reset, hidden_n[t]))
            candidates[t] = n
            new_h = torch.addcmul(n, update, h - n)  # n + z (h - n) = (1 - z) n + z h
            if mask is None:
                outputs[t] = h = new_h
            else:
                outputs[t] = masked = new_h * mask[t]  # 0 at a padded step
                h = torch.addcmul(masked, 1.0 - mask[t], h)  # m h' + (1 - m) h_{t-1}
        ctx.save_for_backward(weight_hh, previous_states, reset_update, candidates, hidden_n, mask)
        ctx.has_bias = bias_hh is not None
        reset_all, update_all = reset_update.split(H, dim=-1)
        ctx.mark_non_differentiable(reset_all, update_all)
        return outputs.transpose(0, 1), h, reset_all.transpose(0, 1), update_all.transpose(0, 1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output, grad_h_n, _grad_reset, _grad_update):
        weight_hh, previous_states, reset_update, candidates, hidden_n, mask = ctx.saved_tensors
        T, B, H = previous_states.shape
        grad_output = grad_output.transpose(0, 1)  # (T, B, H)
        grad_input_gates = previous_states.new_empty(T, B, 3 * H)  # [a_r, a_z, a_n] bars
        grad_hidden_gates = previous_states.new_empty(T, B, 3 * H)  # [a_r, a_z, r a_n] bars
        grad_h = grad_h_n.clone()  # gradient reaching h_t from the later steps
        for t in range(T - 1, -1, -1):
            reset, update = reset_update[t, :, :H], reset_update[t, :, H:]
            n, h_prev = candidates[t], previous_states[t]
            grad_new_h = grad_output[t] + grad_h
            if mask is not None:
                grad_new_h = grad_new_h * mask[t]
            # written into slices of the (T, B, 3H) buffers (by assignment: torch.compile takes no strided out=)
            d_gates = grad_input_gates[t]
            d_a_n = torch.mul(grad_new_h * (1.0 - update), 1.0 - n * n)
            d_gates[:, 2 * H :] = d_a_n
            d_gates[:, H : 2 * H] = torch.mul(grad_new_h * (h_prev - n), update * (1.0 - update))
            d_gates[:, :H] = torch.mul(d_a_n * hidden_n[t], reset * (1.0 - reset))
            d_hidden = grad_hidden_gates[t]
            d_hidden[:, : 2 * H] = d_gates[:, : 2 * H]
            d_hidden[:, 2 * H :] = torch.mul(d_a_n, reset)
            carried = grad_new_h * update
            if mask is not None:
                carried = torch.addcmul(carried, 1.0 - mask[t], grad_h)
            grad_h = torch.addmm(carried, d_hidden, weight_hh)  # (B, H)
        flat_hidden_grads = grad_hidden_gates.reshape(T * B, 3 * H)
        grad_weight_hh = flat_hidden_grads.t() @ previous_states.reshape(T * B, H)  # (3H, H)
        grad_bias_hh = flat_hidden_grads.sum(dim=0) if ctx.has_bias else None
        return grad_input_gates.transpose(0, 1), grad_h, grad_weight_hh, grad_bias_hh, None


def gru_sequence(
    input_gates: Tensor, h0: Tensor, weight_hh: Tensor, bias_hh: Tensor | None, valid: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One GRU layer over all steps through :class:`GRUSequence`: ``(output, h_n, reset, update)``.

    The fast twin of the readable loop over :func:`minipt.nn.gru_cell_step` in :class:`minipt.nn.GRU`;
    shapes as in :class:`GRUSequence`.
    """
    return GRUSequence.apply(input_gates, h0, weight_hh, bias_hh, valid)
