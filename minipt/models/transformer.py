r"""``TransformerLM``: a GPT-style (causal) or BERT-style (bidirectional) Transformer language model.

.. math::
    h^{(0)} &= \operatorname{dropout}\bigl(E[x_t] + P[t]\bigr)                                   \\
    h^{(l)} &= \operatorname{Block}_l\bigl(h^{(l-1)}\bigr), \qquad l = 1, \dots, n_{\text{layers}} \\
    z_t     &= \operatorname{LayerNorm}\bigl(h^{(n_{\text{layers}})}_t\bigr)\, W_{\text{head}}^\top

Each block (:class:`Block`, with the parts and ``state_dict`` keys of :class:`minipt.nn.TransformerEncoderLayer`)
is pre-norm with GELU,
:math:`h \leftarrow h + \operatorname{SA}(\operatorname{LN}_1 h)`,
:math:`h \leftarrow h + \operatorname{FF}(\operatorname{LN}_2 h)`. With ``tie_weights=True`` the LM head
reuses the token embedding, :math:`W_{\text{head}} = E` (one tensor, Press & Wolf, 2017), so the score of
token ``v`` is the dot product of the final hidden state with ``v``'s own embedding.

``causal=True``: position ``t`` attends to positions ``<= t`` only, so ``z_t`` can be trained to predict
``x_{t+1}`` (next-token pretraining). ``causal=False``: every position sees the whole sequence, for masked-LM
pretraining (predict the masked tokens from both sides); such a model cannot ``generate``.

``norm_first=False`` builds BERT's post-norm arrangement instead: each block is
:math:`h \leftarrow \operatorname{LN}_1(h + \operatorname{SA}(h))`, :math:`h \leftarrow \operatorname{LN}_2(h +
\operatorname{FF}(h))`, so every block already ends in a layer norm; the layer norm moves from the top of the
stack to the embedding (:math:`h^{(0)} = \operatorname{dropout}(\operatorname{LN}(E[x_t] + S[s_t] + P[t]))`, with
the segment vectors :math:`S` when ``type_vocab_size > 0``) and ``norm`` is the identity. ``activation`` picks the
feed-forward GELU: ``"gelu"`` (erf, BERT's) or ``"gelu_tanh"`` (GPT-2's). :mod:`minipt.interop` loads GPT-2 and
BERT checkpoints into these shapes.

``fast=True`` runs every layer's hand-derived fast path (:mod:`minipt.fast`) and the loss's; the default runs the
readable formulas. Both give the same values and gradients (``tests/test_models.py``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from minipt.fast import FastSwitch
from minipt.models.attention import SelfAttention
from minipt.models.embedding import TokenAndPositionEmbedding
from minipt.models.init import normal_init_, transformer_layer_init_
from minipt.models.language_model import (
    LanguageModel,
    ModelInputError,
    check_pad_id,
    check_positive,
    check_probability,
    language_model_loss,
)
from minipt.nn import LayerNorm, check_activation, feed_forward

__all__ = ["Block", "TransformerLM"]


class Block(nn.Module):
    r"""One Transformer layer: self-attention, then a position-wise feed-forward network, each with a residual.

    With :math:`\operatorname{SA}(x) = \operatorname{dropout1}(\operatorname{SelfAttention}(x))` and
    :math:`\operatorname{FF}(x) = \operatorname{dropout2}(W_2\,\operatorname{dropout}(\operatorname{act}(W_1 x +
    b_1)) + b_2)`, pre-norm (``norm_first=True``, GPT-2) is :math:`x \leftarrow x + \operatorname{SA}(
    \operatorname{norm1}(x))`, :math:`x \leftarrow x + \operatorname{FF}(\operatorname{norm2}(x))`; post-norm
    (BERT) is :math:`x \leftarrow \operatorname{norm1}(x + \operatorname{SA}(x))`, :math:`x \leftarrow
    \operatorname{norm2}(x + \operatorname{FF}(x))`.

    The parts have :class:`minipt.nn.TransformerEncoderLayer`'s names, order and ``state_dict`` keys, whose
    PyTorch-compatible mask arguments a model does not need: it passes its one additive mask.
    ``forward(x, additive_mask=None, need_weights=False)`` returns ``(B, T, d_model)`` and the per-head weights
    ``(B, heads, T, T)`` (None unless asked). ``fast``: the model's switch, shared with the attention and norms.
    """

    def __init__(
        self, d_model: int, n_heads: int, d_ff: int, dropout: float, activation: str, layer_norm_eps: float,
        norm_first: bool, fast: FastSwitch,
    ) -> None:
        super().__init__()
        check_activation("TransformerLM", activation)
        self.self_attn = SelfAttention(d_model, n_heads, dropout, fast)
        self.linear1 = nn.Linear(d_model, d_ff)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ff, d_model)
        self.norm_first = norm_first
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, fast=fast)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, fast=fast)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.activation = activation
        self.fast = fast  # the GELU's switch (minipt.nn.feed_forward)

    def forward(
        self, x: Tensor, additive_mask: Tensor | None = None, need_weights: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        if self.norm_first:
            attended, weights = self.self_attn(self.norm1(x), additive_mask, need_weights)
            x = x + self.dropout1(attended)
            x = x + feed_forward(self, self.norm2(x))
        else:
            attended, weights = self.self_attn(x, additive_mask, need_weights)
            x = self.norm1(x + self.dropout1(attended))
            x = self.norm2(x + feed_forward(self, x))
        return x, weights  # (B, T, d_model), (B, heads, T, T) or None


class TransformerLM(LanguageModel):
    r"""Token + learned position embeddings, ``n_layers`` pre-norm GELU encoder layers, a final layer norm,
    and an LM head (the formulas are in this module's docstring).

    Parts (the interface shared with :class:`~minipt.models.gru.GRULM`):

    * ``embedding``: :class:`~minipt.models.embedding.TokenAndPositionEmbedding` (``token``, ``position``);
    * ``layers``: ``nn.ModuleList`` of :class:`Block`, lowest first;
    * ``norm``: the final :class:`minipt.nn.LayerNorm` (``nn.Identity`` when ``norm_first=False``);
    * ``lm_head``: ``nn.Linear(d_model, vocab_size, bias=False)``, whose weight *is* ``embedding.token.weight``
      when ``tie_weights=True`` (so freezing ``embedding`` freezes the LM head too: it is the same tensor).

    Masks, one convention inside the model. ``attention_mask`` ``(B, T)`` follows the Hugging Face convention,
    1 = real token, 0 = padding. Once per forward pass, :meth:`layer_mask` turns it and causality into one
    *additive* mask :math:`M`, ``0`` where query ``i`` may attend to key ``j`` and ``-inf`` where it may not
    (``j > i`` when causal, or ``j`` is padding):

    .. math:: M_{b,i,j} = \begin{cases} -\infty & j > i \text{ (causal) or } x_{b,j} \text{ is padding} \\
              0 & \text{otherwise} \end{cases}

    shaped ``(T, T)`` (causal only), ``(B, 1, 1, T)`` (padding only) or ``(B, 1, T, T)`` (both), None when
    nothing is masked. Every layer's attention (:class:`~minipt.models.attention.SelfAttention`) adds it to its
    scores as it is, readable and fast path alike: no layer converts it again. So no position ever attends to
    a padding key.

    ``forward`` is one straight line, embed -> layers -> norm -> head. The split for the frozen cache
    (:meth:`lower_layers`, :meth:`upper_layers`) and :meth:`generate` are the base class's
    (:class:`~minipt.models.language_model.LanguageModel`).

    ``fast`` (last argument): the model's one :class:`~minipt.fast.FastSwitch` (``self.fast``), shared by every
    layer and the loss; :func:`minipt.nn.set_fast` flips it. Initialisation: :mod:`minipt.models.init` (GPT-2's).
    """

    architecture = "transformer"

    def __init__(
        self,
        vocab_size: int,
        d_model: int,
        n_layers: int,
        n_heads: int,
        d_ff: int,
        max_len: int,
        dropout: float = 0.1,
        causal: bool = True,
        tie_weights: bool = True,
        pad_id: int = 0,
        activation: str = "gelu",
        norm_first: bool = True,
        layer_norm_eps: float = 1e-5,
        type_vocab_size: int = 0,
        fast: bool = False,
    ) -> None:
        super().__init__()
        sizes = dict(vocab_size=vocab_size, d_model=d_model, n_layers=n_layers, n_heads=n_heads, d_ff=d_ff)
        check_positive("TransformerLM", **sizes, max_len=max_len)
        if d_model % n_heads != 0:
            raise ModelInputError(f"TransformerLM: d_model={d_model} must be divisible by n_heads={n_heads}")
        check_probability("TransformerLM", "dropout", dropout)
        check_pad_id("TransformerLM", pad_id, vocab_size)
        self.config = {
            **sizes,
            "max_len": max_len,
            "dropout": dropout,
            "causal": causal,
            "tie_weights": tie_weights,
            "pad_id": pad_id,
            "activation": activation,
            "norm_first": norm_first,
            "layer_norm_eps": layer_norm_eps,
            "type_vocab_size": type_vocab_size,
        }
        self.vocab_size = vocab_size
        self.hidden_size = d_model  # the size of `features`, which a classification head reads
        self.max_len = max_len
        self.causal = causal
        self.fast = fast = FastSwitch(fast)  # the one switch of the layers and the loss

        self.embedding = TokenAndPositionEmbedding(
            vocab_size, d_model, max_len, pad_id, dropout, type_vocab_size=type_vocab_size,
            norm=not norm_first, layer_norm_eps=layer_norm_eps, fast=fast,
        )
        self.layers = nn.ModuleList(
            Block(d_model, n_heads, d_ff, dropout, activation, layer_norm_eps, norm_first, fast)
            for _ in range(n_layers)
        )
        self.norm = LayerNorm(d_model, eps=layer_norm_eps, fast=fast) if norm_first else nn.Identity()
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        self.init_weights()
        if tie_weights:
            self.lm_head.weight = self.embedding.token.weight  # one tensor, two uses

    # ------------------------------------------------------------------------------------------------
    # Initialisation
    # ------------------------------------------------------------------------------------------------

    def init_weights(self, generator: torch.Generator | None = None) -> None:
        """(Re-)initialise every parameter as documented in :mod:`minipt.models.init`."""
        normal_init_(self.embedding, generator=generator)
        for layer in self.layers:
            self.init_layer(layer, generator=generator)
        normal_init_(self.norm)
        if self.lm_head.weight is not self.embedding.token.weight:
            normal_init_(self.lm_head, generator=generator)

    def init_layer(self, layer: nn.Module, generator: torch.Generator | None = None) -> None:
        """Initialise one of ``self.layers`` afresh (GPT-2's scheme; used to re-initialise top layers)."""
        transformer_layer_init_(layer, n_layers=len(self.layers), generator=generator)

    # ------------------------------------------------------------------------------------------------
    # Forward
    # ------------------------------------------------------------------------------------------------

    def embed(
        self, idx: Tensor, attention_mask: Tensor | None = None, token_type_ids: Tensor | None = None
    ) -> Tensor:
        """The checked input's embedding, ``(B, T, d_model)``: ``idx`` ``(B, T)`` ids with ``T <= max_len``,
        ``attention_mask`` ``(B, T)`` or None, ``token_type_ids`` ``(B, T)`` in ``[0, type_vocab_size)`` or None
        (the segment of each token, all 0 when None; only a model with ``type_vocab_size > 0`` has segment
        vectors)."""
        self._check_idx(idx)
        self._check_attention_mask(attention_mask, idx)
        if token_type_ids is not None:
            types = self.config["type_vocab_size"]  # 0: the model has no segment vectors at all
            in_range = torch.compiler.is_compiling() or token_type_ids.numel() == 0 or (  # a value check: eager only
                int(token_type_ids.min()) >= 0 and int(token_type_ids.max()) < types
            )
            if token_type_ids.shape != idx.shape or not in_range:
                raise ModelInputError(
                    f"TransformerLM: token_type_ids must have the shape of idx {tuple(idx.shape)} and values in "
                    f"[0, type_vocab_size={types}), got shape {tuple(token_type_ids.shape)}"
                )
        if idx.shape[1] > self.max_len:
            raise ModelInputError(
                f"TransformerLM: sequence length {idx.shape[1]} exceeds max_len={self.max_len} "
                "(the number of learned positions)"
            )
        return self.embedding(idx, token_type_ids)  # (B, T, C)

    def features(
        self, idx: Tensor, attention_mask: Tensor | None = None, token_type_ids: Tensor | None = None
    ) -> Tensor:
        """Final hidden states after the final layer norm, ``(B, T, d_model)``: what a task head reads
        (:meth:`LanguageModel.features`, with the segment ids as a third argument)."""
        return super().features(idx, attention_mask, token_type_ids=token_type_ids)

    def layer_mask(self, attention_mask: Tensor | None, x: Tensor) -> Tensor | None:
        """The one additive mask every layer of a forward pass adds to its attention scores (see the class
        docstring): ``0`` = may attend, ``-inf`` = may not, in ``x``'s dtype; None when nothing is masked.

        Shapes: ``attention_mask`` ``(B, T)`` (1 = real token) or None, ``x`` ``(B, T, C)``; output ``(T, T)``,
        ``(B, 1, 1, T)`` or ``(B, 1, T, T)``, broadcastable to the scores ``(B, heads, T, T)``.
        """
        T = x.shape[1]
        blocked = None  # True where query i may not attend to key j
        if self.causal:
            blocked = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(diagonal=1)  # (T, T): j > i
        if attention_mask is not None:
            padding = (attention_mask == 0)[:, None, None, :]  # (B, 1, 1, T): key j is padding
            blocked = padding if blocked is None else blocked | padding  # (B, 1, T, T)
        if blocked is None:
            return None
        return torch.zeros(blocked.shape, dtype=x.dtype, device=x.device).masked_fill_(blocked, float("-inf"))

    def _run_layers(
        self, x: Tensor, attention_mask: Tensor | None, first: int, last: int, keep: bool = False
    ) -> tuple[Tensor, dict[str, list[Tensor]]]:
        """Run ``layers[first:last]`` on ``x`` ``(B, T, C)`` with one mask converted here for all of them: the
        last output ``(B, T, C)`` and, with ``keep``, each layer's output (``hidden_states``) and per-head
        weights (``attention_weights``, each ``(B, heads, T, T)``)."""
        mask = self.layer_mask(attention_mask, x) if first < last else None  # once per forward pass
        kept = {"hidden_states": [], "attention_weights": []}
        for layer in self.layers[first:last]:
            x, weights = layer(x, mask, need_weights=keep)  # (B, T, C), (B, heads, T, T) or None
            if keep:
                kept["hidden_states"].append(x)
                kept["attention_weights"].append(weights)
        return x, kept

    def forward(
        self,
        idx: Tensor,
        targets: Tensor | None = None,
        attention_mask: Tensor | None = None,
        return_intermediates: bool = False,
        token_type_ids: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None] | tuple[Tensor, Tensor | None, dict[str, list[Tensor]]]:
        """Logits ``(B, T, vocab_size)`` and the loss against ``targets`` ``(B, T)`` (None without targets;
        ``-100`` targets are ignored).

        ``return_intermediates=True`` adds a dict with ``hidden_states`` (the embedding output, then each
        layer's output, each ``(B, T, d_model)``) and ``attention_weights`` (each layer's ``(B, heads, T, T)``).
        ``token_type_ids`` ``(B, T)``: segment ids (see :meth:`embed`).
        """
        x = self.embed(idx, attention_mask, token_type_ids)  # (B, T, C)
        h, kept = self._run_layers(x, attention_mask, 0, len(self.layers), keep=return_intermediates)  # (B, T, C)
        logits = self.lm_head(self.norm(h))  # (B, T, vocab_size)
        loss = None if targets is None else language_model_loss(logits, targets, fast=self.fast)
        if return_intermediates:
            kept["hidden_states"].insert(0, x)  # the embedding output first
            return logits, loss, kept
        return logits, loss

    def _next_token_logits(self, idx: Tensor, new_tokens: Tensor, state: None) -> tuple[Tensor, None]:
        """For :meth:`generate`: run the model on the last ``max_len`` tokens (the positions it has learned) and
        take the last position's logits ``(B, V)``; nothing is carried between steps."""
        logits, _ = self(idx[:, -self.max_len :])  # (B, T', V)
        return logits[:, -1, :], None
