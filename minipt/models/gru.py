r"""``GRULM``: a recurrent language model, a stack of hand-written GRU layers over token embeddings.

.. math::
    h^{(0)}_t &= \operatorname{dropout}\bigl(E[x_t]\bigr)                                          \\
    h^{(l)}_t &= \operatorname{GRU}_l\bigl(\operatorname{dropout}(h^{(l-1)}_t),\ h^{(l)}_{t-1}\bigr),
                 \qquad l = 1, \dots, n_{\text{layers}}                                             \\
    z_t       &= \operatorname{dropout}\bigl(h^{(n_{\text{layers}})}_t\bigr)\, W_{\text{head}}^\top

(no dropout before the first layer beyond the embedding's own). The state :math:`h^{(l)}_t` summarises
everything up to ``t``, so a GRU language model is causal by construction. Each layer is its own
:class:`minipt.nn.GRU` with ``num_layers=1``, so that finetuning can freeze the layers one by one.

With ``tie_weights=True`` the output layer reuses the embedding, :math:`W_{\text{head}} = E`
``(vocab_size, d_embed)``. That needs vectors of size ``d_embed``; when ``hidden_size != d_embed`` a linear
projection comes first, :math:`z_t = (W_p h_t + b_p) E^\top` (:class:`ProjectedLMHead`).

Padding: the recurrence has no attention mask. With ``attention_mask`` (1 = real, 0 = padding) the model
passes each sequence's length to the GRU, which then leaves the state unchanged on padded steps; this assumes
**right padding** (real tokens first, padding at the end) and raises an error otherwise. Real positions
never see padding anyway (it comes after them), and ``h_n`` is each sequence's state at its last real token.

``fast=True`` runs every GRU layer's loop over time in :func:`minipt.fast.gru_sequence` (backward pass through
time derived by hand); the default runs the readable loop over :func:`minipt.nn.gru_cell_step`. Both give the
same values and gradients (``tests/test_models.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from minipt.models.embedding import TokenEmbedding
from minipt.models.init import GRU_EMBEDDING_STD, gru_layer_init_, normal_init_
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
from minipt.nn import GRU

__all__ = ["GRULM", "ProjectedLMHead"]


class ProjectedLMHead(nn.Module):
    r"""Hidden state to logits through the (tied) embedding size: :math:`z = (W_p h + b_p)\,W_{\text{dec}}^\top`.

    ``projection``: ``nn.Linear(hidden_size, embedding_dim)``; ``decoder``: ``nn.Linear(embedding_dim,
    vocab_size, bias=False)``, whose weight is the token embedding when tied.
    Shapes: ``(..., hidden_size)`` -> ``(..., vocab_size)``.
    """

    def __init__(self, hidden_size: int, embedding_dim: int, vocab_size: int) -> None:
        super().__init__()
        self.projection = nn.Linear(hidden_size, embedding_dim)
        self.decoder = nn.Linear(embedding_dim, vocab_size, bias=False)

    def forward(self, hidden: Tensor) -> Tensor:
        return self.decoder(self.projection(hidden))  # (..., vocab_size)


class GRULM(LanguageModel):
    r"""Token embedding, ``n_layers`` stacked GRU layers, and an LM head (formulas in this module's docstring).

    Parts (the interface shared with :class:`~minipt.models.transformer.TransformerLM`):

    * ``embedding``: :class:`~minipt.models.embedding.TokenEmbedding` (``token``);
    * ``layers``: ``nn.ModuleList`` of :class:`minipt.nn.GRU` (one layer each), lowest first;
    * ``lm_head``: ``nn.Linear(hidden_size, vocab_size, bias=False)``, or a :class:`ProjectedLMHead` when
      tying with ``hidden_size != d_embed``; with ``tie_weights=True`` its decoder weight *is*
      ``embedding.token.weight`` (so freezing ``embedding`` freezes that weight of the head too).

    There is no final ``norm``. Initialisation: :mod:`minipt.models.init` (normal(0, 0.1) for the embedding,
    normal(0, 0.02) for the head's projection, torch's uniform for the GRU layers).

    Split for a frozen-feature cache: :meth:`lower_layers` (embedding and ``layers[:k]``) and
    :meth:`upper_layers` (``layers[k:]``); ``features`` is their composition. ``fast`` (last argument): every
    layer runs its fast path; stored in ``config``.
    """

    architecture = "gru"

    def __init__(
        self,
        vocab_size: int,
        d_embed: int,
        hidden_size: int,
        n_layers: int,
        dropout: float = 0.1,
        tie_weights: bool = True,
        pad_id: int = 0,
        fast: bool = False,
    ) -> None:
        super().__init__()
        check_positive("GRULM", vocab_size=vocab_size, d_embed=d_embed, hidden_size=hidden_size, n_layers=n_layers)
        check_probability("GRULM", "dropout", dropout)
        check_pad_id("GRULM", pad_id, vocab_size)
        self.config = {
            "vocab_size": vocab_size,
            "d_embed": d_embed,
            "hidden_size": hidden_size,
            "n_layers": n_layers,
            "dropout": dropout,
            "tie_weights": tie_weights,
            "pad_id": pad_id,
            "fast": fast,
        }
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size  # the size of `features`, which a classification head reads
        self.fast = fast  # the loss's fast path too (minipt.nn.set_fast switches it with the layers)

        self.embedding = TokenEmbedding(vocab_size, d_embed, pad_id, dropout)
        self.layers = nn.ModuleList(
            GRU(d_embed if layer == 0 else hidden_size, hidden_size, num_layers=1, batch_first=True, fast=fast)
            for layer in range(n_layers)
        )
        self.dropout = nn.Dropout(dropout)  # between layers and before the head
        if tie_weights and hidden_size != d_embed:
            self.lm_head = ProjectedLMHead(hidden_size, d_embed, vocab_size)
        else:
            self.lm_head = nn.Linear(hidden_size, vocab_size, bias=False)
        self.init_weights()
        if tie_weights:
            self._output_embedding().weight = self.embedding.token.weight  # one tensor, two uses

    def _output_embedding(self) -> nn.Linear:
        """The ``(vocab_size, d)`` linear map that produces the logits (tied to the embedding if asked)."""
        return self.lm_head.decoder if isinstance(self.lm_head, ProjectedLMHead) else self.lm_head

    # ------------------------------------------------------------------------------------------------
    # Initialisation
    # ------------------------------------------------------------------------------------------------

    def init_weights(self, generator: torch.Generator | None = None) -> None:
        """(Re-)initialise every parameter as documented in :mod:`minipt.models.init`."""
        normal_init_(self.embedding, std=GRU_EMBEDDING_STD, generator=generator)
        for layer in self.layers:
            self.init_layer(layer, generator=generator)
        for submodule in self.lm_head.modules():
            is_tied = isinstance(submodule, nn.Linear) and submodule.weight is self.embedding.token.weight
            if isinstance(submodule, nn.Linear) and not is_tied:  # a tied weight was drawn with the embedding
                normal_init_(submodule, generator=generator)

    def init_layer(self, layer: nn.Module, generator: torch.Generator | None = None) -> None:
        """Initialise one of ``self.layers`` afresh (torch's GRU scheme; used to re-initialise top layers)."""
        gru_layer_init_(layer, generator=generator)

    # ------------------------------------------------------------------------------------------------
    # Forward
    # ------------------------------------------------------------------------------------------------

    def _lengths(self, attention_mask: Tensor | None, idx: Tensor) -> Tensor | None:
        """Each sequence's number of real tokens ``(B,)``, checking that the padding is on the right."""
        if attention_mask is None:
            return None
        self._check_attention_mask(attention_mask, idx)
        lengths = attention_mask.long().sum(dim=1)  # (B,)
        positions = torch.arange(idx.shape[1], device=idx.device)  # (T,)
        right_padded = positions.unsqueeze(0) < lengths.unsqueeze(1)  # (B, T): 1s, then 0s
        if not torch.equal(attention_mask.bool(), right_padded):
            raise ModelInputError(
                "GRULM: attention_mask must be right-padded (each row: 1s for the real tokens, then 0s), "
                "since the recurrence reads left to right"
            )
        if int(lengths.min()) < 1:
            raise ModelInputError("GRULM: every sequence needs at least one real token (a row of attention_mask is 0)")
        return lengths

    def _run_layers(
        self, x: Tensor, attention_mask: Tensor | None, first: int, last: int
    ) -> tuple[Tensor, list[Tensor], list[Tensor], list[Tensor]]:
        """Run ``layers[first:last]`` on ``x`` ``(B, T, d)``: the last output ``(B, T, H)``, and each layer's
        output, reset gates and update gates (each ``(B, T, H)``)."""
        lengths = self._lengths(attention_mask, x) if first < last else None  # (B,) or None
        outputs, reset_gates, update_gates = [], [], []
        for index in range(first, last):
            layer = self.layers[index]
            # Dropout on a layer's input belongs to that layer: the embedding has its own, and a frozen layer
            # (kept in eval mode by the training loop) gets none, just as a frozen Transformer layer.
            # .contiguous(): the dropout mask then depends on the values' positions only, not on the memory
            # layout of the layer below's output, so cached lower layers
            # (minipt.training.frozen_cache) draw the same mask.
            layer_input = self.dropout(x.contiguous()) if index > 0 and layer.training else x
            x, _, gates = layer(layer_input, lengths=lengths, return_gates=True)  # x: (B, T, H)
            outputs.append(x)
            reset_gates.extend(gates.reset)  # one (B, T, H) per layer
            update_gates.extend(gates.update)
        return x, outputs, reset_gates, update_gates

    def _check_split(self, k: int) -> None:
        if not isinstance(k, int) or not 0 <= k <= len(self.layers):
            raise ModelInputError(f"GRULM: k must be an integer in [0, {len(self.layers)}], got {k!r}")

    def lower_layers(self, idx: Tensor, attention_mask: Tensor | None, k: int) -> Tensor:
        """The embedding and ``layers[:k]``: the states after layer ``k - 1``, ``(B, T, hidden_size)`` (the
        embedding's output ``(B, T, d_embed)`` when ``k == 0``). ``upper_layers(lower_layers(idx, m, k), m, k)``
        is ``features(idx, m)``, bit for bit, for every ``k`` in ``[0, n_layers]``."""
        self._check_idx(idx)
        self._check_attention_mask(attention_mask, idx)
        self._check_split(k)
        x = self.embedding(idx)  # (B, T, d_embed)
        x, _, _, _ = self._run_layers(x, attention_mask, 0, k)
        return x

    def upper_layers(self, hidden: Tensor, attention_mask: Tensor | None, k: int) -> Tensor:
        """``layers[k:]`` on the output of :meth:`lower_layers` (layer ``k``'s input dropout included): what
        :meth:`features` returns, ``(B, T, hidden_size)``. ``attention_mask`` ``(B, T)`` or None."""
        self._check_split(k)
        self._check_attention_mask(attention_mask, hidden)
        x, _, _, _ = self._run_layers(hidden, attention_mask, k, len(self.layers))
        return x

    def features(self, idx: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """The top GRU layer's states ``(B, T, hidden_size)`` (zero at padded steps): what a task head reads."""
        return self.upper_layers(self.lower_layers(idx, attention_mask, 0), attention_mask, 0)

    def forward(
        self,
        idx: Tensor,
        targets: Tensor | None = None,
        attention_mask: Tensor | None = None,
        return_intermediates: bool = False,
    ) -> tuple[Tensor, Tensor | None] | tuple[Tensor, Tensor | None, dict[str, list[Tensor]]]:
        """Logits ``(B, T, vocab_size)`` and the loss against ``targets`` ``(B, T)`` (None without targets;
        ``-100`` targets are ignored).

        ``return_intermediates=True`` adds a dict with ``hidden_states`` (the embedding output ``(B, T, d_embed)``,
        then each layer's output ``(B, T, H)``), ``reset_gates`` and ``update_gates`` (each layer's ``(B, T, H)``).
        """
        embedded = self.lower_layers(idx, attention_mask, 0)  # (B, T, d_embed)
        features, outputs, reset_gates, update_gates = self._run_layers(
            embedded, attention_mask, 0, len(self.layers)
        )  # (B, T, H), then per layer
        logits = self.lm_head(self.dropout(features))  # (B, T, vocab_size)
        loss = None if targets is None else language_model_loss(logits, targets, fast=self.fast)
        if return_intermediates:
            hidden_states = [embedded, *outputs]
            intermediates = {"hidden_states": hidden_states, "reset_gates": reset_gates, "update_gates": update_gates}
            return logits, loss, intermediates
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

        The recurrence makes this cheap: the prompt is read once, then each new token is one step of every
        layer from the carried states :math:`h^{(l)}` (no context limit, no re-reading). Sampling follows
        :func:`~minipt.models.language_model.next_token_probabilities`. Dropout is off while generating; each
        module's train/eval mode is restored after.
        """
        self._check_idx(idx)
        check_sampling_arguments(temperature, top_k, self.vocab_size, top_p)
        with evaluation_mode(self):
            states: list[Tensor | None] = [None] * len(self.layers)  # each (1, B, H) once set
            new_tokens = idx  # the whole prompt first, then one token per step
            for _ in range(max_new_tokens):
                x = self.embedding(new_tokens)  # (B, T', d_embed)
                for index, layer in enumerate(self.layers):
                    x, states[index] = layer(x, states[index])  # (B, T', H), (1, B, H)
                logits = self.lm_head(x[:, -1, :])  # (B, V)
                new_tokens = sample_next_token(logits, temperature, top_k, generator, suppress_tokens, top_p)  # (B, 1)
                idx = torch.cat([idx, new_tokens], dim=1)
        return idx
