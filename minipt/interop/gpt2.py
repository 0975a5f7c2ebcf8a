r"""GPT-2 (Hugging Face layout) <-> minipt's :class:`~minipt.models.TransformerLM`, both ways, bit for bit.

GPT-2 is the shape minipt's causal Transformer already has: learned positions, pre-norm blocks, a final layer
norm, an LM head tied to the token embedding. Two things differ in how the weights are stored:

* GPT-2's linear layers are ``Conv1D`` modules that compute :math:`y = x W + b` with ``W`` stored
  ``(in, out)``; ``nn.Linear`` computes :math:`y = x W^\top + b` with ``W`` stored ``(out, in)``. So every
  ``Conv1D`` weight is transposed on the way in and on the way out (exact: no arithmetic).
* GPT-2 projects queries, keys and values with one fused ``c_attn`` ``(E, 3E)``, output columns in the order
  q, k, v; transposed it is ``(3E, E)`` with rows q, k, v: exactly ``MultiheadAttention.in_proj_weight``.

The feed-forward GELU is the tanh form (``activation_function="gelu_new"``), ``activation="gelu_tanh"`` here.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from minipt.errors import MiniptError
from minipt.interop.hf_folder import build_transformer, check_shapes, config_value, read_hf_config, read_hf_weights
from minipt.models import TransformerLM

__all__ = ["gpt2_key_table", "minipt_config_from_gpt2", "gpt2_config_from_minipt", "load_gpt2_state_dict",
           "gpt2_state_dict", "load_hf_gpt2"]

ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu", "relu": "relu"}
IGNORED = (".attn.bias", ".attn.masked_bias")  # causal-mask buffers of older checkpoints: not weights


def gpt2_key_table(n_layers: int) -> list[tuple[str, str, bool]]:
    """``(minipt key, GPT-2 key, is a Conv1D weight)`` for every tensor (GPT-2 keys without ``transformer.``)."""
    table = [("embedding.token.weight", "wte.weight", False), ("embedding.position.weight", "wpe.weight", False)]
    for i in range(n_layers):
        mine, theirs = f"layers.{i}.", f"h.{i}."
        table += [
            (mine + "norm1.weight", theirs + "ln_1.weight", False),
            (mine + "norm1.bias", theirs + "ln_1.bias", False),
            (mine + "self_attn.in_proj_weight", theirs + "attn.c_attn.weight", True),  # (E, 3E) -> rows q, k, v
            (mine + "self_attn.in_proj_bias", theirs + "attn.c_attn.bias", False),
            (mine + "self_attn.out_proj.weight", theirs + "attn.c_proj.weight", True),
            (mine + "self_attn.out_proj.bias", theirs + "attn.c_proj.bias", False),
            (mine + "norm2.weight", theirs + "ln_2.weight", False),
            (mine + "norm2.bias", theirs + "ln_2.bias", False),
            (mine + "linear1.weight", theirs + "mlp.c_fc.weight", True),  # (E, 4E) -> (4E, E)
            (mine + "linear1.bias", theirs + "mlp.c_fc.bias", False),
            (mine + "linear2.weight", theirs + "mlp.c_proj.weight", True),  # (4E, E) -> (E, 4E)
            (mine + "linear2.bias", theirs + "mlp.c_proj.bias", False),
        ]
    return table + [("norm.weight", "ln_f.weight", False), ("norm.bias", "ln_f.bias", False)]


def minipt_config_from_gpt2(config: dict, path: Path = Path("config.json")) -> dict:
    """``TransformerLM``'s constructor arguments for a GPT-2 ``config.json`` (checked; ``path`` names it)."""
    unsupported = {"scale_attn_by_inverse_layer_idx": True, "scale_attn_weights": False, "add_cross_attention": True,
                   "tie_word_embeddings": False}
    for key, value in unsupported.items():
        if config.get(key) is value:
            raise MiniptError(f"{path}: {key}={value} is not supported (minipt's Transformer has no such variant)")
    activation = config.get("activation_function", "gelu_new")
    if activation not in ACTIVATIONS:
        raise MiniptError(f"{path}: activation_function {activation!r} is not one of {sorted(ACTIVATIONS)}")
    d_model = config_value(config, "n_embd", path)
    vocab_size = config_value(config, "vocab_size", path)
    # GPT-2 has no padding token; batches are padded with <|endoftext|> (the attention mask hides it)
    pad_id = next((config[key] for key in ("pad_token_id", "eos_token_id") if config.get(key) is not None), 0)
    if not isinstance(pad_id, int) or not 0 <= pad_id < vocab_size:
        raise MiniptError(f"{path}: pad_token_id / eos_token_id {pad_id!r} is outside vocab_size {vocab_size}")
    return {
        "vocab_size": vocab_size,
        "d_model": d_model,
        "n_layers": config_value(config, "n_layer", path),
        "n_heads": config_value(config, "n_head", path),
        "d_ff": config_value(config, "n_inner", path) if config.get("n_inner") is not None else 4 * d_model,
        "max_len": config_value(config, "n_positions", path),
        "dropout": config_value(config, "resid_pdrop", path, float, default=0.1),
        "causal": True,
        "tie_weights": True,
        "pad_id": pad_id,
        "activation": ACTIVATIONS[activation],
        "norm_first": True,
        "layer_norm_eps": config_value(config, "layer_norm_epsilon", path, float, default=1e-5),
    }


def gpt2_config_from_minipt(model: TransformerLM) -> dict:
    """The ``GPT2Config`` keyword arguments of a minipt GPT-2-shaped model (the inverse of the function above)."""
    c = model.config
    if not (c["causal"] and c["tie_weights"] and c["norm_first"] and c["type_vocab_size"] == 0):
        raise MiniptError("gpt2_config_from_minipt: the model must be causal, pre-norm, tied, without segments")
    activation = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu"}[c["activation"]]
    return {"vocab_size": c["vocab_size"], "n_embd": c["d_model"], "n_layer": c["n_layers"], "n_head": c["n_heads"],
            "n_inner": c["d_ff"], "n_positions": c["max_len"], "resid_pdrop": c["dropout"], "embd_pdrop": c["dropout"],
            "attn_pdrop": c["dropout"], "activation_function": activation, "layer_norm_epsilon": c["layer_norm_eps"],
            "pad_token_id": c["pad_id"], "eos_token_id": c["pad_id"], "bos_token_id": c["pad_id"],
            "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}


def load_gpt2_state_dict(
    model: TransformerLM, state: dict[str, Tensor], path: Path = Path("model.safetensors")
) -> None:
    """Copy a GPT-2 state_dict (``GPT2Model`` or ``GPT2LMHeadModel`` keys) into ``model``, in place.

    Conv1D weights are transposed; ``lm_head.weight`` is the token embedding (tied) and is not read; every other
    key must be used exactly once and have the shape ``model`` expects (one-line errors naming ``path``).
    """
    state = {key.removeprefix("transformer."): value for key, value in state.items()}
    table = gpt2_key_table(len(model.layers))
    names = {mine: theirs for mine, theirs, _ in table}
    missing = [theirs for _, theirs, _ in table if theirs not in state]
    if missing:
        raise MiniptError(f"{path}: missing {missing[0]} ({len(missing)} GPT-2 tensors missing in all)")
    used = set(names.values()) | {"lm_head.weight"}
    extra = [key for key in state if key not in used and not key.endswith(IGNORED)]
    if extra:
        raise MiniptError(f"{path}: unexpected tensor {extra[0]} (not part of a {len(model.layers)}-layer GPT-2)")
    converted = {mine: state[theirs].t() if conv1d else state[theirs] for mine, theirs, conv1d in table}
    check_shapes(converted, model.state_dict(), names, path)
    if "lm_head.weight" in state and not torch.equal(state["lm_head.weight"], state["wte.weight"]):
        raise MiniptError(f"{path}: lm_head.weight differs from wte.weight (an untied LM head is not supported)")
    converted["lm_head.weight"] = converted["embedding.token.weight"]  # tied: the same tensor
    model.load_state_dict(converted)


def gpt2_state_dict(model: TransformerLM) -> dict[str, Tensor]:
    """``model``'s weights under ``GPT2LMHeadModel``'s keys (Conv1D weights transposed back, contiguous)."""
    state = model.state_dict()
    converted = {"transformer." + theirs: (state[mine].t() if conv1d else state[mine]).contiguous()
                 for mine, theirs, conv1d in gpt2_key_table(len(model.layers))}
    converted["lm_head.weight"] = converted["transformer.wte.weight"]
    return converted


def load_hf_gpt2(folder: str | Path, fast: bool = False) -> TransformerLM:
    """A :class:`TransformerLM` with the weights of the GPT-2 in ``folder`` (``config.json`` + weights), in eval
    mode; it computes on the fast path with ``fast=True``."""
    folder = Path(folder)
    config = minipt_config_from_gpt2(read_hf_config(folder, "gpt2"), folder / "config.json")
    model = build_transformer(config, folder, fast)
    load_gpt2_state_dict(model, *read_hf_weights(folder))
    return model.eval()
