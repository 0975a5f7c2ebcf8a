r"""BERT encoders (Hugging Face layout) <-> minipt's :class:`~minipt.models.TransformerLM`, both ways, bit for bit.

A BERT encoder is minipt's bidirectional Transformer (``causal=False``) with BERT's arrangement
(``norm_first=False``): post-norm blocks, segment vectors added to the input (``type_vocab_size``), a layer norm
on the embedding and no final norm; its GELU is the exact, erf form (``hidden_act="gelu"``). The weights map one
to one, except that BERT keeps separate ``query``, ``key`` and ``value`` Linears, which stacked (rows q, k, v) are
``MultiheadAttention.in_proj_weight`` ``(3E, E)``. BERT's Linears are ``nn.Linear``: nothing is transposed.

:class:`BertEncoder` is that Transformer with BERT's two extras on top, so that ``minipt finetune --from
hf-bert:FOLDER`` runs it like any backbone:

* the **pooler**, :math:`p = \tanh(W h_{\texttt{[CLS]}} + b)`, a dense layer and tanh on the first position
  (``pooler.dense``), which BERT's classifiers read (``SequenceClassifier(pooling="pooler")``);
* **token types from the ids**: when no ``token_type_ids`` are given, a token is in segment 0 up to and including
  the first ``[SEP]`` and in segment 1 after it (:func:`segments_from_sep`), exactly what BERT's tokenizer gives a
  pair ``[CLS] A [SEP] B [SEP]``; so a batch of token ids is all a pair classifier needs, frozen cache included.

The masked-LM head (``cls.predictions``) is :mod:`minipt.interop.bert_mlm`. The ``lm_head`` of the converted model
is its tied token embedding, not BERT's masked-LM head.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor, nn

from minipt.data.wordpiece import WordPieceTokenizer
from minipt.errors import MiniptError, warn
from minipt.interop.hf_folder import build_transformer, check_shapes, config_value, read_hf_config, read_hf_weights
from minipt.models import TransformerLM
from minipt.models.init import normal_init_

__all__ = ["bert_key_table", "minipt_config_from_bert", "bert_config_from_minipt", "load_bert_state_dict",
           "bert_state_dict", "load_hf_bert", "segments_from_sep", "BertPooler", "BertEncoder", "load_bert_pooler",
           "load_hf_bert_encoder", "load_bert_tokenizer"]

ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu"}
NOT_READ = ("pooler.", "cls.", "embeddings.position_ids", "embeddings.token_type_ids")  # heads and index buffers
QKV = ("query", "key", "value")


def bert_key_table(n_layers: int) -> list[tuple[str, str]]:
    """``(minipt key, BERT key)`` for every tensor but the fused attention input (see :func:`fused_keys`)."""
    table = [
        ("embedding.token.weight", "embeddings.word_embeddings.weight"),
        ("embedding.position.weight", "embeddings.position_embeddings.weight"),
        ("embedding.token_type.weight", "embeddings.token_type_embeddings.weight"),
        ("embedding.norm.weight", "embeddings.LayerNorm.weight"),
        ("embedding.norm.bias", "embeddings.LayerNorm.bias"),
    ]
    for i in range(n_layers):
        mine, theirs = f"layers.{i}.", f"encoder.layer.{i}."
        for minipt_name, bert_name in [("self_attn.out_proj", "attention.output.dense"),
                                       ("norm1", "attention.output.LayerNorm"), ("linear1", "intermediate.dense"),
                                       ("linear2", "output.dense"), ("norm2", "output.LayerNorm")]:
            table += [(f"{mine}{minipt_name}.{p}", f"{theirs}{bert_name}.{p}") for p in ("weight", "bias")]
    return table


def fused_keys(n_layers: int) -> list[tuple[str, list[str]]]:
    """``(minipt in_proj key, [BERT query, key, value keys])`` per layer and parameter: stacked rows q, k, v."""
    return [(f"layers.{i}.self_attn.in_proj_{p}", [f"encoder.layer.{i}.attention.self.{n}.{p}" for n in QKV])
            for i in range(n_layers) for p in ("weight", "bias")]


def minipt_config_from_bert(config: dict, path: Path = Path("config.json")) -> dict:
    """``TransformerLM``'s constructor arguments for a BERT ``config.json`` (checked; ``path`` names it)."""
    if config.get("position_embedding_type", "absolute") != "absolute" or config.get("is_decoder"):
        raise MiniptError(f"{path}: only BERT encoders with absolute positions are supported")
    activation = config.get("hidden_act", "gelu")
    if activation not in ACTIVATIONS:
        raise MiniptError(f"{path}: hidden_act {activation!r} is not one of {sorted(ACTIVATIONS)}")
    return {
        "vocab_size": config_value(config, "vocab_size", path),
        "d_model": config_value(config, "hidden_size", path),
        "n_layers": config_value(config, "num_hidden_layers", path),
        "n_heads": config_value(config, "num_attention_heads", path),
        "d_ff": config_value(config, "intermediate_size", path),
        "max_len": config_value(config, "max_position_embeddings", path),
        "dropout": config_value(config, "hidden_dropout_prob", path, float, default=0.1),
        "causal": False,
        "tie_weights": True,
        "pad_id": config.get("pad_token_id") or 0,
        "activation": ACTIVATIONS[activation],
        "norm_first": False,
        "layer_norm_eps": config_value(config, "layer_norm_eps", path, float, default=1e-12),
        "type_vocab_size": config_value(config, "type_vocab_size", path, default=2),
    }


def bert_config_from_minipt(model: TransformerLM) -> dict:
    """The ``BertConfig`` keyword arguments of a minipt BERT-shaped model (the inverse of the function above)."""
    c = model.config
    if c["causal"] or c["norm_first"] or c["type_vocab_size"] == 0:
        raise MiniptError("bert_config_from_minipt: the model must be bidirectional, post-norm, with segments")
    activation = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu"}[c["activation"]]
    return {"vocab_size": c["vocab_size"], "hidden_size": c["d_model"], "num_hidden_layers": c["n_layers"],
            "num_attention_heads": c["n_heads"], "intermediate_size": c["d_ff"],
            "max_position_embeddings": c["max_len"], "hidden_dropout_prob": c["dropout"],
            "attention_probs_dropout_prob": c["dropout"], "hidden_act": activation,
            "layer_norm_eps": c["layer_norm_eps"], "type_vocab_size": c["type_vocab_size"],
            "pad_token_id": c["pad_id"], "model_type": "bert", "architectures": ["BertModel"]}


def load_bert_state_dict(
    model: TransformerLM, state: dict[str, Tensor], path: Path = Path("model.safetensors")
) -> None:
    """Copy a BERT state_dict (``BertModel`` keys, or ``bert.``-prefixed ones of a ``BertFor...`` model) into
    ``model``, in place; every encoder key must be used and have the shape ``model`` expects."""
    state = {key.removeprefix("bert."): value for key, value in state.items()}
    n_layers = len(model.layers)
    table, fused = bert_key_table(n_layers), fused_keys(n_layers)
    wanted = [theirs for _, theirs in table] + [key for _, parts in fused for key in parts]
    missing = [key for key in wanted if key not in state]
    if missing:
        raise MiniptError(f"{path}: missing {missing[0]} ({len(missing)} BERT tensors missing in all)")
    extra = [key for key in state if key not in set(wanted) and not key.startswith(NOT_READ)]
    if extra:
        raise MiniptError(f"{path}: unexpected tensor {extra[0]} (not part of a {n_layers}-layer BERT)")
    converted = {mine: state[theirs] for mine, theirs in table}
    names = dict(table)
    for mine, parts in fused:
        shapes = [tuple(state[key].shape) for key in parts]
        if len(set(shapes)) != 1:
            raise MiniptError(f"{path}: shape mismatch: {', '.join(parts)} are {shapes}, expected equal shapes")
        converted[mine] = torch.cat([state[key] for key in parts])  # (3E, E) rows q, k, v, or (3E,)
        names[mine] = parts[0].replace(".query.", ".{query,key,value}.")
    check_shapes(converted, model.state_dict(), names, path)
    converted["lm_head.weight"] = converted["embedding.token.weight"]  # tied: the same tensor
    if isinstance(model, BertEncoder):  # its pooler is read by load_bert_pooler; keep the current one here
        converted.update({f"pooler.{key}": value for key, value in model.pooler.state_dict().items()})
    model.load_state_dict(converted)


def bert_state_dict(model: TransformerLM) -> dict[str, Tensor]:
    """``model``'s encoder weights under ``BertModel``'s keys (no pooler: minipt has none)."""
    state = model.state_dict()
    converted = {theirs: state[mine] for mine, theirs in bert_key_table(len(model.layers))}
    for mine, parts in fused_keys(len(model.layers)):
        for key, chunk in zip(parts, state[mine].chunk(3), strict=True):
            converted[key] = chunk.contiguous()
    return converted


def load_hf_bert(folder: str | Path, fast: bool = False) -> TransformerLM:
    """A :class:`TransformerLM` with the encoder weights of the BERT in ``folder``, in eval mode."""
    folder = Path(folder)
    config = minipt_config_from_bert(read_hf_config(folder, "bert"), folder / "config.json")
    model = build_transformer(config, folder, fast)
    load_bert_state_dict(model, *read_hf_weights(folder))
    return model.eval()


# ------------------------------------------------------------------------------------------------------------
# BERT's extras on the encoder: token types from [SEP], the pooler


def segments_from_sep(idx: Tensor, sep_id: int) -> Tensor:
    """BERT's token types read off the ids: 0 up to and including the first ``[SEP]``, 1 after it.

    ``[CLS] A [SEP] B [SEP]`` -> ``0 0..0 0 1..1 1``; a single text ``[CLS] A [SEP]`` is all 0 (padding after it is
    1, but padding is never attended to). ``idx`` ``(B, T)`` -> ``(B, T)`` long. Worked example: ids
    ``[2, 7, 3, 8, 3, 0]`` with ``sep_id=3``: [SEP]s seen strictly before each position ``0 0 0 1 1 2``, so
    types ``0 0 0 1 1 1``.
    """
    is_sep = (idx == sep_id).long()  # (B, T)
    seps_before = is_sep.cumsum(dim=1) - is_sep  # (B, T): [SEP]s strictly before position t
    return (seps_before > 0).long()


class BertPooler(nn.Module):
    r"""BERT's pooler: :math:`p_b = \tanh(W h_{b,0} + c)`, the first (``[CLS]``) position through a dense layer
    and tanh. ``features`` ``(B, T, H)`` -> ``(B, H)``. ``dense`` is ``pooler.dense`` of a BERT checkpoint."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)

    def forward(self, features: Tensor) -> Tensor:
        return torch.tanh(self.dense(features[:, 0]))  # (B, H)


class BertEncoder(TransformerLM):
    """A BERT-shaped :class:`TransformerLM` (post-norm, segments) with BERT's pooler and token types derived from
    ``[SEP]`` (``sep_id``) when none are given; the other arguments are ``TransformerLM``'s."""

    architecture = "bert"

    def __init__(self, *args, sep_id: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.config["sep_id"] = sep_id
        self.sep_id = sep_id
        self.pooler = BertPooler(self.hidden_size)
        normal_init_(self.pooler)

    def embed(
        self, idx: Tensor, attention_mask: Tensor | None = None, token_type_ids: Tensor | None = None
    ) -> Tensor:
        """:meth:`TransformerLM.embed` with ``token_type_ids`` from :func:`segments_from_sep` when None: every path
        into the layers (the forward pass, ``features``, the frozen cache's ``lower_layers``) starts here."""
        if token_type_ids is None and self.config["type_vocab_size"] > 1:
            token_type_ids = segments_from_sep(idx, self.sep_id)  # (B, T)
        return super().embed(idx, attention_mask, token_type_ids)


def load_bert_pooler(pooler: BertPooler, state: dict[str, Tensor], path: Path) -> bool:
    """Copy ``pooler.dense`` of a BERT state_dict into ``pooler``; False (pooler untouched) when the file has none
    (a ``BertForMaskedLM`` checkpoint is saved without it)."""
    state = {key.removeprefix("bert."): value for key, value in state.items()}
    keys = {"dense.weight": "pooler.dense.weight", "dense.bias": "pooler.dense.bias"}
    if not all(key in state for key in keys.values()):
        return False
    converted = {mine: state[theirs] for mine, theirs in keys.items()}
    check_shapes(converted, pooler.state_dict(), keys, path)
    pooler.load_state_dict(converted)
    return True


def load_bert_tokenizer(folder: str | Path) -> WordPieceTokenizer:
    """BERT's tokenizer of ``folder``: ``vocab.txt``, cased or not as ``tokenizer_config.json`` says
    (``do_lower_case``, ``strip_accents``; uncased when the file is absent, as ``transformers``' default)."""
    folder = Path(folder)
    settings = {}
    path = folder / "tokenizer_config.json"
    if path.exists():
        try:
            settings = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise MiniptError(f"{path}: cannot read JSON ({type(error).__name__}: {error})") from None
        if not isinstance(settings, dict):
            raise MiniptError(f"{path}: expected a JSON object (do_lower_case, strip_accents, ...)")
    lowercase = settings.get("do_lower_case", True)
    accents = settings.get("strip_accents")
    if not isinstance(lowercase, bool) or accents not in (None, True, False):
        raise MiniptError(f"{path}: do_lower_case must be true or false and strip_accents true, false or null")
    return WordPieceTokenizer.from_vocab_txt(folder / "vocab.txt", lowercase, accents)


def load_hf_bert_encoder(folder: str | Path, sep_id: int, fast: bool = False) -> BertEncoder:
    """A :class:`BertEncoder` with the encoder and pooler weights of the BERT in ``folder``, in eval mode (a
    checkpoint without a pooler keeps a fresh one, with a warning)."""
    folder = Path(folder)
    config = minipt_config_from_bert(read_hf_config(folder, "bert"), folder / "config.json")
    model = build_transformer({**config, "sep_id": sep_id}, folder, fast, model_class=BertEncoder)
    state, path = read_hf_weights(folder)
    load_bert_state_dict(model, state, path)
    if not load_bert_pooler(model.pooler, state, path):
        warn(f"{path}: no pooler.dense (a masked-LM checkpoint?); the pooler starts from random weights")
    return model.eval()
