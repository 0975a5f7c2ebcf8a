r"""The lowest part of each language model: token ids to vectors.

Both models expose this module as ``model.embedding``, so that finetuning can freeze it as one piece.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

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

    Shapes: ``idx`` ``(B, T)`` with ``T <= max_len`` -> ``(B, T, embedding_dim)``.
    """

    def __init__(self, vocab_size: int, embedding_dim: int, max_len: int, pad_id: int, dropout: float) -> None:
        super().__init__()
        self.token = nn.Embedding(vocab_size, embedding_dim, padding_idx=pad_id)
        self.position = nn.Embedding(max_len, embedding_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, idx: Tensor) -> Tensor:
        T = idx.shape[1]
        positions = torch.arange(T, device=idx.device)  # (T,)
        return self.dropout(self.token(idx) + self.position(positions))  # (B, T, C) + (T, C) -> (B, T, C)
