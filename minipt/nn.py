r"""PyTorch-compatible layers built from :mod:`minipt.functional`.

Every class here re-implements a ``torch.nn`` module with the same constructor arguments, defaults,
parameter names and ``state_dict`` keys, so ``mine.load_state_dict(theirs.state_dict())`` works and the two
can be compared output for output (``tests/test_nn.py`` does exactly that). Parameters are initialised as
torch initialises them.

Two conventions differ on purpose from torch:

* ``batch_first=True`` is the default everywhere (torch's default is ``False``).
* A query that may attend to no key at all gets a zero output, where ``torch.nn.MultiheadAttention`` gives
  ``nan`` (torch 2.13's ``F.scaled_dot_product_attention`` gives zeros too; see
  :func:`minipt.functional.scaled_dot_product_attention`).

One switch, ``fast``: every layer that has a fast path (:class:`LayerNorm`, :class:`MultiheadAttention`,
:class:`TransformerEncoderLayer`, :class:`GRU`) takes ``fast: bool = False`` as its last constructor argument.
By default a layer runs the readable formulas of :mod:`minipt.functional` (and :func:`gru_cell_step`), in
training and in evaluation alike, so stepping through it in a debugger lands on the formula. With
``fast=True`` it runs the hand-derived autograd Functions of :mod:`minipt.fast` instead, which give the same
values and gradients (tested) in less time; the choice is one visible ``if self.fast:`` line in each forward.
``self.fast`` is a :class:`minipt.fast.FastSwitch`: a layer made of layers (and a model) hands its own switch
to every part, so one switch is stored per model and :func:`set_fast` flips it. ``fast`` is not a parameter,
so ``state_dict`` keys do not change.

Mask conventions, which learners often trip on, because torch itself is not consistent:

===========================================  ===============  ==================================
mask                                         ``True`` means   float mask
===========================================  ===============  ==================================
``MultiheadAttention(key_padding_mask=)``    ignore this key  added to the scores
``MultiheadAttention(attn_mask=)``           NOT allowed      added to the scores
``functional.scaled_dot_product_attention``  allowed          added to the scores
a model's additive mask                      (float only)     0 = may attend, ``-inf`` = blocked
===========================================  ===============  ==================================

The models convert their masks once per forward pass into that additive form (see
:class:`minipt.models.TransformerLM`), which their attention (:class:`minipt.models.attention.SelfAttention`)
adds to its scores as it is.

Shape letters: ``B`` batch, ``T`` time steps, ``L`` queries, ``S`` keys, ``E`` embedding size,
``H`` hidden size.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

from minipt import fast
from minipt import functional as MF
from minipt.errors import MiniptError
from minipt.fast import FastSwitch, as_switch

__all__ = [
    "LayerInputError",
    "set_fast",
    "LayerNorm",
    "MultiheadAttention",
    "TransformerEncoderLayer",
    "feed_forward",
    "check_activation",
    "gru_cell_step",
    "gru_sequence",
    "GRUCell",
    "GRU",
    "GRUGates",
]


LayerInputError = MiniptError  # a tensor or an argument a layer cannot use: minipt's one error class

ACTIVATIONS = ("relu", "gelu", "gelu_tanh")  # an encoder layer's feed-forward nonlinearities (and the models' blocks)


def set_fast(module: nn.Module, fast: bool) -> nn.Module:
    """Switch ``module`` and everything inside it to the fast paths (``fast=True``) or the readable ones;
    returns it.

    Flips the :class:`~minipt.fast.FastSwitch` of ``module`` and of every submodule (a model's layers share
    one, so it is flipped once for them all). Values and gradients do not change, only the code that computes
    them.
    """
    for submodule in module.modules():
        switch = getattr(submodule, "fast", None)
        if isinstance(switch, FastSwitch):
            switch.on = bool(fast)
    return module


# ----------------------------------------------------------------------------------------------------
# Layer normalisation
# ----------------------------------------------------------------------------------------------------


class LayerNorm(nn.Module):
    r"""Layer normalisation with a learned scale and shift (``torch.nn.LayerNorm``).

    .. math::
        y = \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} \odot \gamma + \beta

    with :math:`\mu, \sigma^2` the mean and biased variance over the last ``len(normalized_shape)`` dims,
    :math:`\gamma` = ``weight`` (initialised to ones) and :math:`\beta` = ``bias`` (zeros), so a fresh layer
    only standardises. ``fast=True``: :func:`minipt.fast.layer_norm` (hand-derived backward pass; its forward
    pass gives the same bits). Shapes: input ``(..., *normalized_shape)``; output the same.
    """

    def __init__(
        self, normalized_shape: int | tuple[int, ...] | list[int], eps: float = 1e-5, fast: bool | FastSwitch = False
    ) -> None:
        super().__init__()
        if isinstance(normalized_shape, int):
            normalized_shape = (normalized_shape,)
        self.normalized_shape = tuple(normalized_shape)
        self.eps = eps
        self.fast = as_switch(fast)
        self.weight = nn.Parameter(torch.ones(self.normalized_shape))
        self.bias = nn.Parameter(torch.zeros(self.normalized_shape))

    def forward(self, input: Tensor) -> Tensor:
        if self.fast:
            return fast.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)
        return MF.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}" + (", fast=True" if self.fast else "")


# ----------------------------------------------------------------------------------------------------
# Multi-head attention
# ----------------------------------------------------------------------------------------------------


def _as_additive_mask(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """torch's module convention: a boolean mask becomes ``-inf`` where True, ``0`` elsewhere; floats stay."""
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))
    return mask.to(dtype)


class MultiheadAttention(nn.Module):
    r"""Multi-head attention (``torch.nn.MultiheadAttention``, with ``kdim = vdim = embed_dim``).

    Each head ``h`` projects the inputs to its own queries, keys and values of size ``E / heads`` and attends:

    .. math::
        \operatorname{head}_h = \operatorname{softmax}\!\Bigl(
            \frac{Q W^Q_h (K W^K_h)^\top}{\sqrt{E/\text{heads}}} + M\Bigr) V W^V_h, \qquad
        \operatorname{MHA}(Q, K, V) = [\operatorname{head}_1, \dots, \operatorname{head}_{\text{heads}}]\,W^O
                                      + b^O

    The three input projections are stacked in one parameter ``in_proj_weight`` ``(3E, E)`` (rows: query, key,
    value) with ``in_proj_bias`` ``(3E,)``; ``out_proj`` is the Linear :math:`W^O, b^O`.

    This is the PyTorch-compatible adapter, for loading torch's weights and testing against it: the models use
    the compact :class:`minipt.models.attention.SelfAttention`, which takes their one additive mask. Both call
    the same two functions, :func:`minipt.functional.scaled_dot_product_attention` and
    :func:`minipt.fast.attention`. Masks follow **torch's module convention**, the opposite of
    ``scaled_dot_product_attention``'s:

    * ``key_padding_mask`` ``(B, S)``: boolean ``True`` = *ignore this key* (padding); a float mask is added.
    * ``attn_mask`` ``(L, S)`` or ``(B * heads, L, S)``: boolean ``True`` = *NOT allowed to attend*; a float
      mask is added. (In ``functional.scaled_dot_product_attention`` a boolean ``True`` means *allowed*.)
    * ``is_causal=True`` is only a hint that ``attn_mask`` is the causal mask, as in torch: ``attn_mask`` must
      be given too (``torch.nn.Transformer.generate_square_subsequent_mask(T)`` builds one).

    Both masks become additive masks (``-inf`` where blocked) and are summed, as torch does. Dropout acts on
    the attention weights, only in training mode. ``fast=True`` runs :func:`minipt.fast.attention`, whose
    weights (returned when ``need_weights``) are for inspection only: no gradient flows back through them.
    Shapes (``batch_first=True``): ``query`` ``(B, L, E)``, ``key`` and ``value`` ``(B, S, E)``; output
    ``(B, L, E)``; weights ``(B, L, S)`` averaged over heads, or ``(B, heads, L, S)`` with
    ``average_attn_weights=False``, or ``None`` with ``need_weights=False``. With ``batch_first=False`` the
    inputs and output are ``(L, B, E)``; the weights keep the batch first.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        batch_first: bool = True,
        fast: bool | FastSwitch = False,
    ) -> None:
        super().__init__()
        if embed_dim % num_heads != 0:
            raise LayerInputError(
                f"MultiheadAttention: embed_dim={embed_dim} must be divisible by num_heads={num_heads}"
            )
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.dropout = dropout
        self.batch_first = batch_first
        self.fast = as_switch(fast)
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * embed_dim)) if bias else None
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        nn.init.xavier_uniform_(self.in_proj_weight)  # as torch: Xavier-uniform input projections, zero biases
        if self.in_proj_bias is not None:
            nn.init.zeros_(self.in_proj_bias)
            nn.init.zeros_(self.out_proj.bias)

    def _project(self, query: Tensor, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``Q W^Q + b^Q``, ``K W^K + b^K``, ``V W^V + b^V``, each split into heads ``(B, heads, T, E / heads)``."""
        if query is key and key is value:  # self-attention: one matmul
            projected = nn.functional.linear(query, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        else:
            biases = self.in_proj_bias.chunk(3) if self.in_proj_bias is not None else (None, None, None)
            projected = (
                nn.functional.linear(x, w, b)
                for x, w, b in zip((query, key, value), self.in_proj_weight.chunk(3), biases, strict=True)
            )
        return tuple(x.view(*x.shape[:2], self.num_heads, self.head_dim).transpose(1, 2) for x in projected)

    def _merged_mask(
        self, attn_mask: Tensor | None, key_padding_mask: Tensor | None, B: int, L: int, S: int, dtype: torch.dtype
    ) -> Tensor | None:
        """One additive mask broadcastable to ``(B, heads, L, S)``, or None when nothing is masked."""
        merged = None
        if attn_mask is not None:
            if attn_mask.shape == (L, S):
                merged = _as_additive_mask(attn_mask, dtype)  # (L, S)
            elif attn_mask.shape == (B * self.num_heads, L, S):
                merged = _as_additive_mask(attn_mask, dtype).view(B, self.num_heads, L, S)
            else:
                raise LayerInputError(
                    f"MultiheadAttention: attn_mask must be ({L}, {S}) or ({B * self.num_heads}, {L}, {S}), "
                    f"got {tuple(attn_mask.shape)}"
                )
        if key_padding_mask is not None:
            if key_padding_mask.shape != (B, S):
                raise LayerInputError(
                    f"MultiheadAttention: key_padding_mask must be (batch, keys) = ({B}, {S}), "
                    f"got {tuple(key_padding_mask.shape)}"
                )
            padding = _as_additive_mask(key_padding_mask, dtype).view(B, 1, 1, S)
            merged = padding if merged is None else merged + padding
        return merged

    def _check_inputs(
        self, query: Tensor, key: Tensor, value: Tensor, attn_mask: Tensor | None, is_causal: bool
    ) -> None:
        """Shapes of ``query``, ``key`` and ``value``; ``is_causal`` needs ``attn_mask``."""
        if query.dim() != 3 or key.dim() != 3 or value.dim() != 3:
            raise LayerInputError(
                "MultiheadAttention: query, key and value must be 3-D (batch, time, embed_dim), got shapes "
                f"{tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}"
            )
        if query.shape[-1] != self.embed_dim:
            raise LayerInputError(
                f"MultiheadAttention: query's last dim is {query.shape[-1]}, expected embed_dim={self.embed_dim}"
            )
        if is_causal and attn_mask is None:
            raise LayerInputError(
                "MultiheadAttention: is_causal=True is a hint about attn_mask and needs attn_mask too "
                "(as in torch); pass the causal mask as attn_mask"
            )

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = True,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        self._check_inputs(query, key, value, attn_mask, is_causal)
        if not self.batch_first:  # (T, B, E) -> (B, T, E), preserving `query is key` for self-attention
            same_kv, same_qk = key is value, query is key
            query = query.transpose(0, 1)
            key = query if same_qk else key.transpose(0, 1)
            value = key if same_kv else value.transpose(0, 1)
        B, L, E = query.shape
        q, k, v = self._project(query, key, value)  # (B, heads, L or S, E/heads)
        mask = self._merged_mask(attn_mask, key_padding_mask, B, L, key.shape[1], q.dtype)  # or None
        dropout_p = self.dropout if self.training else 0.0
        if self.fast:  # the hand-derived kernel (minipt/fast.py)
            heads = fast.attention(q, k, v, mask, dropout_p, return_weights=need_weights)
        else:  # the formula as written in minipt/functional.py
            heads = MF.scaled_dot_product_attention(q, k, v, mask, dropout_p, return_weights=need_weights)
        heads, weights = heads if need_weights else (heads, None)  # (B, heads, L, E/heads), (B, heads, L, S)
        output = self.out_proj(heads.transpose(1, 2).reshape(B, L, E))  # (B, L, E)
        if not self.batch_first:
            output = output.transpose(0, 1)  # (L, B, E)
        if weights is not None and average_attn_weights:
            weights = weights.mean(dim=1)  # (B, L, S)
        return output, weights


# ----------------------------------------------------------------------------------------------------
# Transformer encoder layer
# ----------------------------------------------------------------------------------------------------


class TransformerEncoderLayer(nn.Module):
    r"""Self-attention, then a position-wise feed-forward network (``torch.nn.TransformerEncoderLayer``).

    With :math:`\operatorname{SA}(x) = \operatorname{dropout1}(\operatorname{MHA}(x, x, x))` and
    :math:`\operatorname{FF}(x) = \operatorname{dropout2}(W_2\,\operatorname{dropout}(
    \operatorname{act}(W_1 x + b_1)) + b_2)`:

    * ``norm_first=False`` (post-norm, the original Transformer):

      .. math:: x \leftarrow \operatorname{norm1}(x + \operatorname{SA}(x)), \qquad
                x \leftarrow \operatorname{norm2}(x + \operatorname{FF}(x))

    * ``norm_first=True`` (pre-norm, GPT-2 and most modern models; trains more stably when deep):

      .. math:: x \leftarrow x + \operatorname{SA}(\operatorname{norm1}(x)), \qquad
                x \leftarrow x + \operatorname{FF}(\operatorname{norm2}(x))

    ``activation`` is ``"relu"``, ``"gelu"`` (the exact, erf form: BERT's) or ``"gelu_tanh"`` (minipt's addition:
    the tanh approximation, GPT-2's; torch would take ``partial(F.gelu, approximate="tanh")``). Masks follow
    :class:`MultiheadAttention`: ``src_mask`` boolean ``True`` = NOT allowed, ``src_key_padding_mask`` boolean
    ``True`` = padding to ignore;
    ``is_causal=True`` is a hint that needs ``src_mask`` too. ``need_weights=True`` (minipt's addition, for
    stepping through a layer) also returns the attention weights of every head.

    ``fast=True``: the layer's one switch is shared with its attention and both norms, and the feed-forward
    block's GELU runs :func:`minipt.fast.gelu` (ReLU has no fast path: it is one elementwise max already). The
    models' own block (:class:`minipt.models.transformer.Block`) has the same parts and the same
    ``state_dict`` keys.

    Shapes (``batch_first=True``): ``src`` ``(B, T, d_model)``; output the same; weights ``(B, nhead, T, T)``.
    """

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: str = "relu",
        layer_norm_eps: float = 1e-5,
        batch_first: bool = True,
        norm_first: bool = False,
        fast: bool | FastSwitch = False,
    ) -> None:
        super().__init__()
        check_activation("TransformerEncoderLayer", activation)
        fast = as_switch(fast)  # one switch for the attention, the norms and the GELU
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=batch_first, fast=fast)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm_first = norm_first
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, fast=fast)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, fast=fast)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.activation = activation
        self.fast = fast  # the GELU's switch, the same one as the attention's and the norms'

    def _self_attention_block(
        self, x: Tensor, src_mask: Tensor | None, src_key_padding_mask: Tensor | None, is_causal: bool,
        need_weights: bool,
    ) -> tuple[Tensor, Tensor | None]:
        """``dropout1(MHA(x, x, x))`` and the per-head weights ``(B, nhead, T, T)`` (None unless asked)."""
        attended, weights = self.self_attn(
            x, x, x, key_padding_mask=src_key_padding_mask, need_weights=need_weights, attn_mask=src_mask,
            average_attn_weights=False, is_causal=is_causal,
        )
        return self.dropout1(attended), weights

    def forward(
        self,
        src: Tensor,
        src_mask: Tensor | None = None,
        src_key_padding_mask: Tensor | None = None,
        is_causal: bool = False,
        need_weights: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        attention_arguments = (src_mask, src_key_padding_mask, is_causal, need_weights)
        x = src  # (B, T, d_model)
        if self.norm_first:
            attended, weights = self._self_attention_block(self.norm1(x), *attention_arguments)
            x = x + attended
            x = x + feed_forward(self, self.norm2(x))
        else:
            attended, weights = self._self_attention_block(x, *attention_arguments)
            x = self.norm1(x + attended)
            x = self.norm2(x + feed_forward(self, x))
        if need_weights:
            return x, weights
        return x


def check_activation(layer_name: str, activation: str) -> None:
    """``activation`` must be one of :data:`ACTIVATIONS` (shared with the models' block)."""
    if activation not in ACTIVATIONS:
        raise LayerInputError(f"{layer_name}: activation must be one of {ACTIVATIONS}, got {activation!r}")


def feed_forward(layer: nn.Module, x: Tensor) -> Tensor:
    """An encoder layer's position-wise feed-forward block, ``dropout2(W_2 dropout(act(W_1 x + b_1)) + b_2)``,
    from the layer's ``linear1``, ``dropout``, ``linear2``, ``dropout2``, ``activation`` and ``fast`` (shared with
    the models' block). Shapes: ``(B, T, d_model)`` -> ``(B, T, d_model)``."""
    hidden = layer.linear1(x)  # (B, T, dim_feedforward)
    approximate = "tanh" if layer.activation == "gelu_tanh" else "none"
    if layer.activation == "relu":
        hidden = MF.relu(hidden)
    elif layer.fast:  # GELU with its derivative written out (minipt/fast.py)
        hidden = fast.gelu(hidden, approximate)
    else:  # the GELU formula
        hidden = MF.gelu(hidden, approximate)
    return layer.dropout2(layer.linear2(layer.dropout(hidden)))  # (B, T, d_model)


# ----------------------------------------------------------------------------------------------------
# Gated recurrent unit
# ----------------------------------------------------------------------------------------------------


def gru_cell_step(
    input_gates: Tensor, hidden: Tensor, weight_hh: Tensor, bias_hh: Tensor | None
) -> tuple[Tensor, Tensor, Tensor]:
    r"""One GRU step from precomputed input projections: returns ``(h', r, z)``.

    With ``input_gates`` :math:`= W_{ih} x + b_{ih}` split into :math:`(i_r, i_z, i_n)` and
    :math:`W_{hh} h + b_{hh}` split into :math:`(h_r, h_z, h_n)` (torch's gate order r, z, n):

    .. math::
        r = \sigma(i_r + h_r), \quad z = \sigma(i_z + h_z), \quad n = \tanh(i_n + r \odot h_n), \quad
        h' = (1 - z) \odot n + z \odot h

    Note that the reset gate multiplies :math:`h_n = W_{hn} h + b_{hn}` *including its bias*, as torch (and
    cuDNN) do, not :math:`W_{hn}(r \odot h)` as in the original paper.

    Shapes: ``input_gates`` ``(B, 3H)``, ``hidden`` ``(B, H)``, ``weight_hh`` ``(3H, H)``,
    ``bias_hh`` ``(3H,)``; each output ``(B, H)``.
    """
    hidden_gates = nn.functional.linear(hidden, weight_hh, bias_hh)  # (B, 3H)
    input_r, input_z, input_n = input_gates.chunk(3, dim=-1)  # (B, H) each
    hidden_r, hidden_z, hidden_n = hidden_gates.chunk(3, dim=-1)  # (B, H) each
    reset = torch.sigmoid(input_r + hidden_r)
    update = torch.sigmoid(input_z + hidden_z)
    candidate = torch.tanh(input_n + reset * hidden_n)
    new_hidden = (1.0 - update) * candidate + update * hidden
    return new_hidden, reset, update


def gru_sequence(
    input_gates: Tensor, h0: Tensor, weight_hh: Tensor, bias_hh: Tensor | None, valid: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    r"""One GRU layer over all time steps: :func:`gru_cell_step` at every step, in a plain loop.

    With a validity mask :math:`m_t \in \{0, 1\}` (1 at a real step, 0 at padding), a padded step keeps the
    state and outputs zero, as with torch's ``pack_padded_sequence``:

    .. math:: h_t = m_t h' + (1 - m_t) h_{t-1}, \qquad o_t = m_t h'

    Returns ``(output, h_n, reset, update)``. Shapes: ``input_gates`` ``(B, T, 3H)`` (:math:`W_{ih} x_t +
    b_{ih}` for every step), ``h0`` ``(B, H)``, ``weight_hh`` ``(3H, H)``, ``bias_hh`` ``(3H,)`` or None,
    ``valid`` ``(B, T)`` boolean or None; ``output``, ``reset`` and ``update`` ``(B, T, H)``, ``h_n``
    ``(B, H)``. The gates are for inspection, detached from the graph (as the fast path's).
    :func:`minipt.fast.gru_sequence` is the same with its backward pass derived by hand.
    """
    h = h0  # (B, H)
    outputs, resets, updates = [], [], []
    for t in range(input_gates.shape[1]):
        new_h, reset, update = gru_cell_step(input_gates[:, t], h, weight_hh, bias_hh)  # (B, H) each
        if valid is None:
            h = new_h
        else:
            m = valid[:, t].unsqueeze(1).to(h.dtype)  # (B, 1)
            new_h, h = m * new_h, m * new_h + (1.0 - m) * h
        outputs.append(new_h)
        resets.append(reset)
        updates.append(update)
    # stacked time-major, then viewed batch-first: the memory layout of minipt.fast.gru_sequence's outputs, so
    # that a dropout mask drawn on them later lands on the same entries on both paths
    output, reset, update = (torch.stack(steps).transpose(0, 1) for steps in (outputs, resets, updates))
    return output, h, reset.detach(), update.detach()  # (B, T, H), (B, H); the gates for inspection only


def _gru_uniform_(module: nn.Module, hidden_size: int) -> None:
    """torch's GRU init: every weight and bias uniform in :math:`[-1/\\sqrt{H}, 1/\\sqrt{H}]`."""
    bound = 1.0 / math.sqrt(hidden_size)
    for parameter in module.parameters():
        nn.init.uniform_(parameter, -bound, bound)


class GRUCell(nn.Module):
    r"""One step of a gated recurrent unit (``torch.nn.GRUCell``); the equations are in :func:`gru_cell_step`.

    Parameters: ``weight_ih`` ``(3H, input_size)``, ``weight_hh`` ``(3H, H)``, ``bias_ih`` and ``bias_hh``
    ``(3H,)``, rows stacked in the gate order reset, update, new (r, z, n) as in torch.

    Shapes: ``input`` ``(B, input_size)``, ``hx`` ``(B, H)`` (zeros when None); output ``(B, H)``.
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.weight_ih = nn.Parameter(torch.empty(3 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(3 * hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(3 * hidden_size)) if bias else None
        self.bias_hh = nn.Parameter(torch.empty(3 * hidden_size)) if bias else None
        _gru_uniform_(self, hidden_size)

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        if input.dim() != 2 or input.shape[1] != self.input_size:
            raise LayerInputError(
                f"GRUCell: input must be (batch, input_size={self.input_size}), got {tuple(input.shape)}"
            )
        if hx is None:
            hx = input.new_zeros(input.shape[0], self.hidden_size)
        input_gates = nn.functional.linear(input, self.weight_ih, self.bias_ih)  # (B, 3H)
        new_hidden, _, _ = gru_cell_step(input_gates, hx, self.weight_hh, self.bias_hh)
        return new_hidden


class GRUGates(NamedTuple):
    """Gate activations of a :class:`GRU`, one ``(B, T, H)`` tensor per layer (batch-first layout)."""

    reset: list[Tensor]
    update: list[Tensor]


class GRU(nn.Module):
    r"""A stack of GRU layers run over whole sequences (``torch.nn.GRU``, unidirectional).

    Layer ``k`` reads the outputs of layer ``k - 1`` (the input for ``k = 0``) and applies the step of
    :func:`gru_cell_step` at every time step ``t``:

    .. math:: h_t^{(k)} = \operatorname{GRUCell}^{(k)}\bigl(h_t^{(k-1)}, h_{t-1}^{(k)}\bigr)

    The input projections :math:`W_{ih} x_t + b_{ih}` of all time steps are one matmul before the loop over
    time, :func:`gru_sequence`, a plain loop over :func:`gru_cell_step`. With ``fast=True`` that loop runs in
    :func:`minipt.fast.gru_sequence` instead, whose backward pass through time is derived by hand (tested
    equal). Training and evaluation take the same path. In training mode, dropout with probability
    ``dropout`` acts on the outputs of every layer except the last, as in torch.

    Parameters per layer ``k``: ``weight_ih_l{k}`` ``(3H, in)``, ``weight_hh_l{k}`` ``(3H, H)``,
    ``bias_ih_l{k}``, ``bias_hh_l{k}`` ``(3H,)`` (gate order r, z, n).

    ``forward(input, hx=None, lengths=None, return_gates=False)``:

    * ``input`` ``(B, T, input_size)`` (``(T, B, input_size)`` with ``batch_first=False``);
      ``hx`` ``(num_layers, B, H)``, zeros when None.
    * returns ``(output, h_n)``: ``output`` ``(B, T, H)`` the last layer's states, ``h_n``
      ``(num_layers, B, H)`` every layer's final state.
    * ``lengths`` ``(B,)``: each sequence's true length (padding at the end). Padded steps leave the state
      unchanged, so ``h_n`` is the state at each sequence's last real step, and their outputs are zero, as
      with torch's ``pack_padded_sequence``.
    * ``return_gates=True`` also returns a :class:`GRUGates` with the reset and update gates of every layer,
      each ``(B, T, H)``.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = True,
        dropout: float = 0.0,
        fast: bool | FastSwitch = False,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise LayerInputError(f"GRU: num_layers must be at least 1, got {num_layers}")
        if not 0.0 <= dropout <= 1.0:
            raise LayerInputError(f"GRU: dropout must be in [0, 1], got {dropout}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = dropout
        self.fast = as_switch(fast)
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else hidden_size
            self.register_parameter(
                f"weight_ih_l{layer}", nn.Parameter(torch.empty(3 * hidden_size, layer_input))
            )
            self.register_parameter(
                f"weight_hh_l{layer}", nn.Parameter(torch.empty(3 * hidden_size, hidden_size))
            )
            if bias:
                self.register_parameter(f"bias_ih_l{layer}", nn.Parameter(torch.empty(3 * hidden_size)))
                self.register_parameter(f"bias_hh_l{layer}", nn.Parameter(torch.empty(3 * hidden_size)))
        _gru_uniform_(self, hidden_size)

    def layer_parameters(self, layer: int) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """``(weight_ih, weight_hh, bias_ih, bias_hh)`` of one layer (biases None when ``bias=False``)."""
        return (
            getattr(self, f"weight_ih_l{layer}"),
            getattr(self, f"weight_hh_l{layer}"),
            getattr(self, f"bias_ih_l{layer}", None),
            getattr(self, f"bias_hh_l{layer}", None),
        )

    def _valid_steps(self, lengths: Tensor, B: int, T: int, device: torch.device) -> Tensor:
        """``(B, T)`` boolean, True at each sequence's real (non-padding) steps."""
        if lengths.dim() != 1 or lengths.shape[0] != B:
            raise LayerInputError(
                f"GRU: lengths must be 1-D with one entry per sequence ({B}), got {tuple(lengths.shape)}"
            )
        if not torch.compiler.is_compiling() and (int(lengths.min()) < 1 or int(lengths.max()) > T):  # eager only
            raise LayerInputError(
                f"GRU: lengths must lie in [1, {T}] (the padded length), got {lengths.tolist()}"
            )
        steps = torch.arange(T, device=device)  # (T,)
        return steps.unsqueeze(0) < lengths.to(device).unsqueeze(1)  # (B, T)

    def _check_inputs(self, input: Tensor, hx: Tensor | None) -> None:
        """``input`` ``(B, T, input_size)`` (time first without ``batch_first``), ``hx`` ``(layers, B, H)``."""
        if input.dim() != 3 or input.shape[-1] != self.input_size:
            raise LayerInputError(
                f"GRU: input must be 3-D with last dim input_size={self.input_size}, got {tuple(input.shape)}"
            )
        B = input.shape[0] if self.batch_first else input.shape[1]
        if hx is not None and hx.shape != (self.num_layers, B, self.hidden_size):
            raise LayerInputError(
                "GRU: hx must be (num_layers, batch, hidden_size) = "
                f"({self.num_layers}, {B}, {self.hidden_size}), "
                f"got {tuple(hx.shape)}"
            )

    def forward(
        self,
        input: Tensor,
        hx: Tensor | None = None,
        lengths: Tensor | None = None,
        return_gates: bool = False,
    ) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, GRUGates]:
        self._check_inputs(input, hx)
        if not self.batch_first:
            input = input.transpose(0, 1)  # (T, B, in) -> (B, T, in)
        B, T, _ = input.shape
        if hx is None:
            hx = input.new_zeros(self.num_layers, B, self.hidden_size)
        valid = None if lengths is None else self._valid_steps(lengths, B, T, input.device)  # (B, T)

        layer_input = input  # (B, T, in)
        final_states, reset_gates, update_gates = [], [], []
        for layer in range(self.num_layers):
            weight_ih, weight_hh, bias_ih, bias_hh = self.layer_parameters(layer)
            # W_ih x_t + b_ih for all steps in one matmul, then the recurrence
            input_gates = nn.functional.linear(layer_input, weight_ih, bias_ih)  # (B, T, 3H)
            # output, reset, update (B, T, H); last_state (B, H)
            if self.fast:  # the same loop with its backward pass through time derived by hand (minipt/fast.py)
                output, last_state, reset, update = fast.gru_sequence(input_gates, hx[layer], weight_hh, bias_hh, valid)
            else:  # the equations step by step: a plain loop over gru_cell_step
                output, last_state, reset, update = gru_sequence(input_gates, hx[layer], weight_hh, bias_hh, valid)
            final_states.append(last_state)  # (B, H)
            reset_gates.append(reset)
            update_gates.append(update)
            is_last = layer == self.num_layers - 1
            layer_input = output if is_last else MF.dropout(output, self.dropout, self.training)
        h_n = torch.stack(final_states)  # (num_layers, B, H)
        if not self.batch_first:
            output = output.transpose(0, 1)  # (T, B, H)
        if return_gates:
            return output, h_n, GRUGates(reset_gates, update_gates)
        return output, h_n
