r"""BERT's masked-LM head (``cls.predictions``), converted: what ``minipt fill-mask --from hf-bert:FOLDER`` runs.

BERT does not score the vocabulary straight from the encoder's output. Its head first transforms each position's
vector, then scores it against the token embedding (the decoder is tied to ``word_embeddings``) plus one bias per
token:

.. math::
    u_t = \operatorname{LayerNorm}\bigl(\operatorname{act}(W h_t + c)\bigr), \qquad z_t = E\,u_t + d

with ``h_t`` ``(H,)`` the encoder's output, ``W`` ``(H, H)`` and ``c`` ``transform.dense``, ``act`` the
checkpoint's ``hidden_act`` (BERT's: the erf GELU), the layer norm ``transform.LayerNorm``, ``E`` ``(V, H)`` the
token embedding and ``d`` ``(V,)`` ``cls.predictions.bias``; ``z_t`` ``(V,)`` are the logits of the token at ``t``.
Filling a ``[MASK]`` is the softmax of ``z_t`` at that position: the top ``k`` tokens and their probabilities.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from minipt import functional as MF
from minipt.errors import MiniptError
from minipt.interop.bert import BertEncoder, load_hf_bert_encoder
from minipt.interop.hf_folder import check_shapes, read_hf_weights
from minipt.models.init import normal_init_
from minipt.nn import LayerNorm

__all__ = ["MaskedLMHead", "load_mlm_head", "mlm_head_state_dict", "load_hf_bert_mlm", "fill_mask"]

MLM_KEYS = {"dense.weight": "cls.predictions.transform.dense.weight",
            "dense.bias": "cls.predictions.transform.dense.bias",
            "norm.weight": "cls.predictions.transform.LayerNorm.weight",
            "norm.bias": "cls.predictions.transform.LayerNorm.bias",
            "bias": "cls.predictions.bias"}


class MaskedLMHead(nn.Module):
    """BERT's head (the formula is in the module docstring) on ``encoder``, its decoder tied to the encoder's
    token embedding. ``forward(features)``: ``(B, T, H)`` -> logits ``(B, T, V)``."""

    def __init__(self, encoder: BertEncoder) -> None:
        super().__init__()
        config = encoder.config
        self.activation = config["activation"]
        self.dense = nn.Linear(config["d_model"], config["d_model"])
        self.norm = LayerNorm(config["d_model"], eps=config["layer_norm_eps"])
        self.embedding = encoder.embedding.token  # tied: E is the encoder's own tensor (not a copy)
        self.bias = nn.Parameter(torch.zeros(config["vocab_size"]))
        normal_init_(self.dense)

    def act(self, x: Tensor) -> Tensor:
        if self.activation == "relu":
            return MF.relu(x)
        return MF.gelu(x, approximate="tanh" if self.activation == "gelu_tanh" else "none")

    def forward(self, features: Tensor) -> Tensor:
        u = self.norm(self.act(self.dense(features)))  # (B, T, H)
        return u @ self.embedding.weight.T + self.bias  # (B, T, V)


def load_mlm_head(head: MaskedLMHead, state: dict[str, Tensor], path: Path) -> None:
    """Copy ``cls.predictions`` of a BERT state_dict into ``head``; the decoder must be the tied embedding."""
    if "cls.predictions.bias" not in state and "cls.predictions.decoder.bias" in state:
        state = {**state, "cls.predictions.bias": state["cls.predictions.decoder.bias"]}
    missing = [key for key in MLM_KEYS.values() if key not in state]
    if missing:
        raise MiniptError(f"{path}: missing {missing[0]} (no masked-LM head: a BertForMaskedLM or "
                          "BertForPreTraining checkpoint has one)")
    decoder = state.get("cls.predictions.decoder.weight")
    if decoder is not None and not torch.equal(decoder, head.embedding.weight):
        raise MiniptError(f"{path}: cls.predictions.decoder.weight differs from the word embeddings (an untied "
                          "decoder is not supported)")
    converted = {mine: state[theirs] for mine, theirs in MLM_KEYS.items()}
    expected = {key: value for key, value in head.state_dict().items() if key in converted}
    check_shapes(converted, expected, MLM_KEYS, path)
    head.load_state_dict(converted, strict=False)  # embedding.weight is the encoder's, already loaded


def mlm_head_state_dict(head: MaskedLMHead) -> dict[str, Tensor]:
    """``head``'s weights under ``BertForMaskedLM``'s keys (the tied decoder weight included, as it saves it)."""
    state = {theirs: head.state_dict()[mine] for mine, theirs in MLM_KEYS.items()}
    state["cls.predictions.decoder.bias"] = state["cls.predictions.bias"]
    return state


def load_hf_bert_mlm(folder: str | Path, sep_id: int, fast: bool = False) -> tuple[BertEncoder, MaskedLMHead]:
    """The encoder and masked-LM head of the BERT in ``folder``, in eval mode."""
    encoder = load_hf_bert_encoder(folder, sep_id, fast)
    head = MaskedLMHead(encoder)
    load_mlm_head(head, *read_hf_weights(folder))
    return encoder, head.eval()


@torch.no_grad()
def fill_mask(encoder: BertEncoder, head: MaskedLMHead, ids: list[int], mask_id: int, top_k: int = 5
              ) -> list[list[tuple[int, float]]]:
    """For each ``mask_id`` position of ``ids`` (one sequence, ``[CLS]`` ... ``[SEP]``), the ``top_k`` token ids
    and their probabilities, most probable first (``transformers``' fill-mask pipeline gives the same)."""
    positions = [t for t, index in enumerate(ids) if index == mask_id]
    if not positions:
        raise MiniptError("--text: no [MASK] token in the text")
    idx = torch.tensor([ids])  # (1, T)
    logits = head(encoder.features(idx))[0, positions]  # (M, V)
    probabilities = MF.softmax(logits, dim=-1)  # (M, V)
    best = probabilities.topk(top_k, dim=-1)
    return [list(zip(rows.tolist(), values.tolist(), strict=True))
            for rows, values in zip(best.indices, best.values, strict=True)]
