r"""``TransformerLM``: a GPT-style (causal) or BERT-style (bidirectional) Transformer language model.

.. math::
    h^{(0)} &= \operatorname{dropout}\bigl(E[x_t] + P[t]\bigr)                                   \\
    h^{(l)} &= \operatorname{Block}_l\bigl(h^{(l-1)}\bigr), \qquad l = 1, \dots, n_{\text{layers}} \\
    z_t     &= \operatorname{LayerNorm}\bigl(h^{(n_{\text{layers}})}_t\bigr)\, W_{\text{head}}^\top

Each block is a pre-norm :class:`minipt.nn.TransformerEncoderLayer` with GELU,
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

``fast=True`` runs every layer's hand-derived fast path (:mod:`minipt.fast`); the default runs the readable
formulas. Both give the same values and gradients (``tests/test_models.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from minipt.models.embedding import TokenAndPositionEmbedding
from minipt.models.init import normal_init_, transformer_layer_init_
from minipt.models.language_model import (
    LanguageModel,
    ModelInputError,
    check_pad_id,
    check_positive,
    check_probability,
    check_sampling_arguments,
    language_model_loss,
    sample_next_token,
)
from minipt.models.modes import evaluation_mode
from minipt.nn import LayerNorm, TransformerEncoderLayer

__all__ = ["TransformerLM"]


class TransformerLM(LanguageModel):
    r"""Token + learned position embeddings, ``n_layers`` pre-norm GELU encoder layers, a final layer norm,
    and an LM head (the formulas are in this module's docstring).

    Parts (the interface shared with :class:`~minipt.models.gru.GRULM`):

    * ``embedding``: :class:`~minipt.models.embedding.TokenAndPositionEmbedding` (``token``, ``position``);
    * ``layers``: ``nn.ModuleList`` of :class:`minipt.nn.TransformerEncoderLayer`, lowest first;
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
    nothing is masked. Every layer adds it to its attention scores as it is (``additive_mask=``, see
    :mod:`minipt.nn`), readable and fast path alike: no layer converts it again. So no position ever attends
    to a padding key.

    Split for a frozen-feature cache: :meth:`lower_layers` (embedding and ``layers[:k]``) and
    :meth:`upper_layers` (``layers[k:]`` and the final norm); ``features`` is their composition.

    ``fast`` (last argument): every layer runs its fast path (:mod:`minipt.fast`); stored in ``config``.
    Initialisation: :mod:`minipt.models.init` (GPT-2's).
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
            "fast": fast,
        }
        self.vocab_size = vocab_size
        self.hidden_size = d_model  # the size of `features`, which a classification head reads
        self.max_len = max_len
        self.causal = causal
        self.fast = fast  # the loss's fast path too (minipt.nn.set_fast switches it with the layers)

        self.embedding = TokenAndPositionEmbedding(
            vocab_size, d_model, max_len, pad_id, dropout, type_vocab_size=type_vocab_size,
            norm=not norm_first, layer_norm_eps=layer_norm_eps, fast=fast,
        )
        self.layers = nn.ModuleList(
            TransformerEncoderLayer(
                d_model, n_heads, dim_feedforward=d_ff, dropout=dropout, activation=activation,
                layer_norm_eps=layer_norm_eps, norm_first=norm_first, fast=fast,
            )
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

    def _check_inputs(self, idx: Tensor, attention_mask: Tensor | None, token_type_ids: Tensor | None = None) -> None:
        """``idx`` ``(B, T)`` ids with ``T <= max_len``; ``attention_mask`` ``(B, T)`` or None; ``token_type_ids``
        ``(B, T)`` in ``[0, type_vocab_size)`` or None."""
        self._check_idx(idx)
        self._check_attention_mask(attention_mask, idx)
        if token_type_ids is not None:
            types = self.config["type_vocab_size"]  # 0: the model has no segment vectors at all
            in_range = token_type_ids.numel() == 0 or (
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
        self, x: Tensor, attention_mask: Tensor | None, layers: nn.ModuleList, need_weights: bool = False
    ) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """Run ``layers`` on ``x`` ``(B, T, C)`` with one mask converted here for all of them: the last output
        ``(B, T, C)``, each layer's output and (``need_weights``) each layer's weights ``(B, heads, T, T)``."""
        mask = self.layer_mask(attention_mask, x) if len(layers) > 0 else None  # once per forward pass
        outputs, attention_weights = [], []
        for layer in layers:
            output = layer(x, need_weights=need_weights, additive_mask=mask)
            if need_weights:
                x, weights = output  # (B, T, C), (B, heads, T, T)
                attention_weights.append(weights)
            else:
                x = output  # (B, T, C)
            outputs.append(x)
        return x, outputs, attention_weights

    def _check_split(self, k: int) -> None:
        if not isinstance(k, int) or not 0 <= k <= len(self.layers):
            raise ModelInputError(f"TransformerLM: k must be an integer in [0, {len(self.layers)}], got {k!r}")

    def lower_layers(
        self, idx: Tensor, attention_mask: Tensor | None, k: int, token_type_ids: Tensor | None = None
    ) -> Tensor:
        """The embedding and ``layers[:k]``: the hidden states ``(B, T, d_model)`` after layer ``k - 1`` (after
        the embedding when ``k == 0``). ``upper_layers(lower_layers(idx, m, k), m, k)`` is ``features(idx, m)``,
        bit for bit, for every ``k`` in ``[0, n_layers]``. ``token_type_ids`` ``(B, T)``: the segment of each
        token (all 0 when None; only a model with ``type_vocab_size > 0`` has segment vectors)."""
        self._check_inputs(idx, attention_mask, token_type_ids)
        self._check_split(k)
        x = self.embedding(idx, token_type_ids)  # (B, T, C)
        x, _, _ = self._run_layers(x, attention_mask, self.layers[:k])
        return x

    def upper_layers(self, hidden: Tensor, attention_mask: Tensor | None, k: int) -> Tensor:
        """``layers[k:]`` and the final norm on the output of :meth:`lower_layers`: what :meth:`features`
        returns. Shapes: ``hidden`` ``(B, T, d_model)``, ``attention_mask`` ``(B, T)`` or None; output
        ``(B, T, d_model)``."""
        self._check_split(k)
        self._check_attention_mask(attention_mask, hidden)
        x, _, _ = self._run_layers(hidden, attention_mask, self.layers[k:])
        return self.norm(x)  # (B, T, C)

    def features(
        self, idx: Tensor, attention_mask: Tensor | None = None, token_type_ids: Tensor | None = None
    ) -> Tensor:
        """Final hidden states after the final layer norm, ``(B, T, d_model)``: what a task head reads."""
        return self.upper_layers(self.lower_layers(idx, attention_mask, 0, token_type_ids), attention_mask, 0)

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
        ``token_type_ids`` ``(B, T)``: segment ids (see :meth:`lower_layers`).
        """
        if return_intermediates:  # the same pass, keeping what each layer produced
            embedded = self.lower_layers(idx, attention_mask, 0, token_type_ids)  # (B, T, C)
            x, outputs, weights = self._run_layers(embedded, attention_mask, self.layers, need_weights=True)
            features = self.norm(x)  # (B, T, C)
        else:
            features = self.features(idx, attention_mask, token_type_ids)  # (B, T, C)
        logits = self.lm_head(features)  # (B, T, vocab_size)
        loss = None if targets is None else language_model_loss(logits, targets, fast=self.fast)
        if return_intermediates:
            return logits, loss, {"hidden_states": [embedded, *outputs], "attention_weights": weights}
        return logits, loss

    # ------------------------------------------------------------------------------------------------
    # Generation
    # ------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def generate(
        self,
        idx: Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
        suppress_tokens: Sequence[int] = (),
        top_p: float | None = None,
    ) -> Tensor:
        """Extend ``idx`` ``(B, T)`` by ``max_new_tokens`` sampled tokens -> ``(B, T + max_new_tokens)``; the ids in
        ``suppress_tokens`` are never sampled.

        Each step runs the model on the last ``max_len`` tokens (the positions it has learned), samples from
        the last position's distribution (:func:`~minipt.models.language_model.next_token_probabilities`) and
        appends the draw. Dropout is off while generating; each module's train/eval mode is restored after.
        """
        if not self.causal:
            raise ModelInputError(
                "TransformerLM: generate needs a causal model (causal=True); a bidirectional encoder is "
                "trained to fill in masked tokens, not to continue text"
            )
        check_sampling_arguments(temperature, top_k, self.vocab_size, top_p)
        with evaluation_mode(self):
            for _ in range(max_new_tokens):
                context = idx[:, -self.max_len :]  # (B, <= max_len)
                logits, _ = self(context)  # (B, T', V)
                last = logits[:, -1, :]  # (B, V)
                next_token = sample_next_token(last, temperature, top_k, generator, suppress_tokens, top_p)  # (B, 1)
                idx = torch.cat([idx, next_token], dim=1)
        return idx
