r"""The lowest part of each language model: token ids to vectors.

Both models expose this module as ``model.embedding``, so that finetuning can freeze it as one piece.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from minipt.fast import FastSwitch
from minipt.nn import LayerNorm

__all__ = ["TokenEmbedding", "TokenAndPositionEmbedding"]


class TokenEmbedding(nn.Module):
    r"""A learned vector per token, then dropout (the GRU's embedding: the recurrence itself knows the order).

    .. math:: e_{b,t} = \operatorname{dropout}\bigl(E[x_{b,t}]\bigr)

    ``E`` is ``token.weight`` ``(vocab_size, embedding_dim)``; the row of ``pad_id`` starts at zero and receives
    no gradient from the lookup (``nn.Embedding``'s ``padding_idx``). With a tied LM head the row still learns
from the head's side (the softmax pushes the padding token's logit down); padded positions are masked or
ignored, so this changes nothing for real tokens.

    Shapes: ``idx`` ``(B, T)`` -> ``(B, T, embedding_dim)``.
    """

    def __init__(self, vocab_size: int, embedding_dim: int, pad_id: int, dropout: float) -> None:
        super().__init__()
        self.token = nn.Embedding(vocab_size, embedding_dim, padding_idx=pad_id)
        self.dropout = nn.Dropout(dropout)

    def forward(self, idx: Tensor) -> Tensor:
        return self.dropout(self.token(idx))  # (B, T, embedding_dim)


class TokenAndPositionEmbedding(nn.Module):
    r"""Token vector plus a learned vector per position, then dropout (GPT-2 and BERT's input).

    Attention by itself is blind to order (permuting the keys permutes nothing in the result), so each
    position ``t`` gets its own learned vector :math:`P[t]`:

    .. math:: h^{(0)}_{b,t} = \operatorname{dropout}\bigl(E[x_{b,t}] + P[t]\bigr)

    ``E`` is ``token.weight`` ``(vocab_size, embedding_dim)`` (the ``pad_id`` row starts at zero, as in
    :class:`TokenEmbedding`), ``P`` is ``position.weight`` ``(max_len, embedding_dim)``.

    BERT's input adds two things (both off by default):

    * ``type_vocab_size > 0``: a learned vector per segment, ``token_type.weight`` :math:`S`
      ``(type_vocab_size, embedding_dim)``; ``token_type_ids`` :math:`s_{b,t}` (0 for the first sentence, 1 for
      the second; all 0 when not given) picks it;
    * ``norm=True``: a layer norm of the sum, before the dropout (``norm``, eps ``layer_norm_eps``):

    .. math:: h^{(0)}_{b,t} = \operatorname{dropout}\bigl(\operatorname{LayerNorm}(E[x_{b,t}] + S[s_{b,t}]
              + P[t])\bigr)

    Shapes: ``idx`` ``(B, T)`` with ``T <= max_len``, ``token_type_ids`` ``(B, T)`` or None ->
    ``(B, T, embedding_dim)``.
    """

    def __init__(
        self,
        vocab_size: int,
        embedding_dim: int,
        max_len: int,
        pad_id: int,
        dropout: float,
        type_vocab_size: int = 0,
        norm: bool = False,
        layer_norm_eps: float = 1e-5,
        fast: bool | FastSwitch = False,
    ) -> None:
        super().__init__()
        self.token = nn.Embedding(vocab_size, embedding_dim, padding_idx=pad_id)
        self.position = nn.Embedding(max_len, embedding_dim)
        self.token_type = nn.Embedding(type_vocab_size, embedding_dim) if type_vocab_size > 0 else None
        self.norm = LayerNorm(embedding_dim, eps=layer_norm_eps, fast=fast) if norm else None
        self.dropout = nn.Dropout(dropout)

    def forward(self, idx: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        T = idx.shape[1]
        positions = torch.arange(T, device=idx.device)  # (T,)
        x = self.token(idx)  # (B, T, C)
        if self.token_type is not None:
            x = x + self.token_type(torch.zeros_like(idx) if token_type_ids is None else token_type_ids)
        x = x + self.position(positions)  # (B, T, C) + (T, C) -> (B, T, C)
        if self.norm is not None:
            x = self.norm(x)
        return self.dropout(x)
