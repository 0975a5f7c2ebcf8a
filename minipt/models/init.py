r"""How minipt's models are initialised (GPT-2's recipe for the Transformer, torch's for the GRU).

Transformer and all embeddings, heads and projections:

* every ``nn.Linear`` / ``nn.Embedding`` weight and the attention's stacked input projection
  ``in_proj_weight``: :math:`\mathcal{N}(0, 0.02^2)`;
* every bias: 0; every layer norm: :math:`\gamma = 1, \beta = 0` (a fresh norm only standardises);
* the two projections that write into the residual stream, ``self_attn.out_proj`` and ``linear2``:
  :math:`\mathcal{N}\bigl(0, (0.02 / \sqrt{2 n_{\text{layers}}})^2\bigr)`. Each layer adds two such terms to
  the stream, so after :math:`n` layers :math:`2n` roughly independent terms have been summed; shrinking
  each one's standard deviation by :math:`\sqrt{2n}` keeps the stream's variance from growing with depth
  (Radford et al., 2019, GPT-2);
* the padding token's embedding row: 0 (``nn.Embedding(padding_idx=...)``'s convention).

GRU layers keep torch's initialisation, every weight and bias uniform in :math:`[-1/\sqrt{H}, 1/\sqrt{H}]`:
a GRU has no residual stream, and this range keeps its sigmoid and tanh gates away from saturation.

The GRU language model's embedding is drawn wider, :math:`\mathcal{N}(0, 0.1^2)` (``GRU_EMBEDDING_STD``). A GRU
has no layer norm to rescale its input: with 0.02, a gate's input term
:math:`W x` has a standard deviation of about :math:`\sqrt{128} \cdot 0.02 \cdot 0.036 \approx 0.008` (``d_embed``
128, weights uniform in :math:`\pm 1/16`), drowned by its random bias (up to :math:`\pm 1/16`), so the first
hundreds of steps learn only word frequencies. Measured on the demo's GRU (BPE 2000, seed 2): validation loss
6.22 nats/token after 115 steps with 0.02, 4.86 with 0.1 (``benchmarks/RESULTS.md``).

Small weights everywhere make a fresh model's logits nearly equal, so its first loss is close to
:math:`\ln V`, the cross-entropy of the uniform guess (``tests/test_models.py`` checks this).

Every function takes an optional ``generator`` so that a re-initialisation can be reproduced exactly.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from minipt.models.attention import SelfAttention
from minipt.nn import GRU, LayerNorm

__all__ = ["INIT_STD", "GRU_EMBEDDING_STD", "normal_init_", "transformer_layer_init_", "gru_layer_init_"]

INIT_STD = 0.02
GRU_EMBEDDING_STD = 0.1  # the GRU LM's embedding: it has no layer norm to scale its input up (see above)


def normal_init_(module: nn.Module, std: float = INIT_STD, generator: torch.Generator | None = None) -> None:
    """Linear, embedding and attention-projection weights ~ N(0, std²), biases 0, layer norms (1, 0).

    Walks every submodule of ``module`` (the module itself included), in registration order, so that the
    same generator state gives the same weights.
    """
    for submodule in module.modules():
        if isinstance(submodule, nn.Linear):
            nn.init.normal_(submodule.weight, mean=0.0, std=std, generator=generator)
            if submodule.bias is not None:
                nn.init.zeros_(submodule.bias)
        elif isinstance(submodule, nn.Embedding):
            nn.init.normal_(submodule.weight, mean=0.0, std=std, generator=generator)
            if submodule.padding_idx is not None:
                with torch.no_grad():
                    submodule.weight[submodule.padding_idx].zero_()
        elif isinstance(submodule, SelfAttention):  # its out_proj is an nn.Linear, handled above
            nn.init.normal_(submodule.in_proj_weight, mean=0.0, std=std, generator=generator)
            if submodule.in_proj_bias is not None:
                nn.init.zeros_(submodule.in_proj_bias)
        elif isinstance(submodule, LayerNorm):
            nn.init.ones_(submodule.weight)
            nn.init.zeros_(submodule.bias)


def transformer_layer_init_(layer: nn.Module, n_layers: int, generator: torch.Generator | None = None) -> None:
    r"""GPT-2's init of one Transformer block (:class:`minipt.models.transformer.Block`): :func:`normal_init_`,
    then the two residual output projections drawn again with standard deviation
    :math:`0.02 / \sqrt{2\,n_{\text{layers}}}`."""
    normal_init_(layer, generator=generator)
    residual_std = INIT_STD / math.sqrt(2 * n_layers)
    for projection in (layer.self_attn.out_proj, layer.linear2):
        nn.init.normal_(projection.weight, mean=0.0, std=residual_std, generator=generator)


def gru_layer_init_(layer: GRU, generator: torch.Generator | None = None) -> None:
    r"""torch's GRU init: every weight and bias uniform in :math:`[-1/\sqrt{H}, 1/\sqrt{H}]`."""
    bound = 1.0 / math.sqrt(layer.hidden_size)
    for parameter in layer.parameters():
        nn.init.uniform_(parameter, -bound, bound, generator=generator)
