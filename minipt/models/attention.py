r"""``SelfAttention``: the models' multi-head self-attention on one screen (causal or bidirectional).

Each head ``h`` projects the hidden states to its own queries, keys and values of size ``C / heads``, attends,
and the heads' outputs are concatenated and projected back:

.. math::
    \operatorname{head}_h = \operatorname{softmax}\!\Bigl(\frac{Q_h K_h^\top}{\sqrt{C/\text{heads}}} + M\Bigr) V_h,
    \qquad
    \operatorname{SA}(x) = [\operatorname{head}_1, \dots, \operatorname{head}_{\text{heads}}]\,W^O + b^O

with :math:`[Q, K, V] = x W_{\text{in}}^\top + b_{\text{in}}`. The mask :math:`M` is the model's one additive mask
(``0`` = may attend, ``-inf`` = may not; :meth:`minipt.models.TransformerLM.layer_mask` builds it from causality
and padding), so this module never converts a mask. The parameters have ``torch.nn.MultiheadAttention``'s names
and shapes (``in_proj_weight`` ``(3C, C)``, rows query, key, value; ``in_proj_bias``; ``out_proj``), so
checkpoints and GPT-2 / BERT weights load as they are. :class:`minipt.nn.MultiheadAttention` is the PyTorch-
compatible twin with torch's whole mask surface, over the same two attention functions.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from minipt import fast as fast_paths
from minipt import functional as MF

__all__ = ["SelfAttention"]


class SelfAttention(nn.Module):
    r"""Multi-head self-attention of ``d_model``-sized hidden states with ``n_heads`` heads (formulas above).

    ``forward(x, additive_mask=None, need_weights=False)``: ``x`` ``(B, T, C)``, ``additive_mask``
    broadcastable to ``(B, heads, T, T)`` or None; returns the output ``(B, T, C)`` and, with
    ``need_weights=True``, every head's weights ``(B, heads, T, T)`` (else None). Dropout acts on the weights,
    in training mode only. ``fast`` (a bool or a shared :class:`minipt.fast.FastSwitch`) picks the
    hand-derived kernel of :mod:`minipt.fast` over the formula of :mod:`minipt.functional`; both give the same
    values and gradients (``tests/test_models.py``).
    """

    def __init__(
        self, d_model: int, n_heads: int, dropout: float = 0.0, fast: bool | fast_paths.FastSwitch = False
    ) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.dropout = dropout
        self.fast = fast_paths.as_switch(fast)
        self.in_proj_weight = nn.Parameter(torch.empty(3 * d_model, d_model))  # W_in: query, key, value rows
        self.in_proj_bias = nn.Parameter(torch.empty(3 * d_model))
        self.out_proj = nn.Linear(d_model, d_model)
        nn.init.xavier_uniform_(self.in_proj_weight)  # torch's init; a model re-initialises it (models/init.py)
        nn.init.zeros_(self.in_proj_bias)
        nn.init.zeros_(self.out_proj.bias)

    def forward(
        self, x: Tensor, additive_mask: Tensor | None = None, need_weights: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        B, T, C = x.shape
        q, k, v = nn.functional.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)  # (B, T, C) x 3
        q, k, v = (t.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2) for t in (q, k, v))  # (B, h, T, C/h)
        dropout_p = self.dropout if self.training else 0.0
        if self.fast:  # the same attention with its backward pass derived by hand (minipt/fast.py)
            y = fast_paths.attention(q, k, v, additive_mask, dropout_p, return_weights=need_weights)
        else:  # the formula as written (minipt/functional.py)
            y = MF.scaled_dot_product_attention(q, k, v, additive_mask, dropout_p, return_weights=need_weights)
        y, weights = y if need_weights else (y, None)  # (B, h, T, C/h), (B, h, T, T) or None
        y = y.transpose(1, 2).reshape(B, T, C)  # the heads side by side again, (B, T, C)
        return self.out_proj(y), weights
