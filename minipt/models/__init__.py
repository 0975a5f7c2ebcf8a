"""minipt's models: two language models with one interface, and the heads put on them.

* :class:`TransformerLM` — GPT-style (``causal=True``) or BERT-style (``causal=False``) Transformer;
* :class:`GRULM` — stacked GRU layers;
* :class:`SequenceClassifier` — pooling and a linear layer on either one's ``features``;
* :class:`MaskedLMWithNextSentenceHead` — a bidirectional Transformer plus BERT's next-sentence head.

Both language models expose ``embedding``, ``layers`` (lowest first), ``norm`` (``nn.Identity`` for the GRU),
``lm_head``, ``forward(idx, targets=None, attention_mask=None, return_intermediates=False)``, ``embed``,
``features``, the split ``lower_layers`` / ``upper_layers``, ``generate``, ``num_parameters``, ``init_weights``,
``init_layer``, ``fast`` (the model's one :class:`~minipt.fast.FastSwitch`), a ``config`` dict of their
constructor arguments and an ``architecture`` name. :func:`build_model` maps that name back to the class, so a
checkpoint storing ``(model.architecture, model.config)`` can rebuild the model.
"""

from __future__ import annotations

from minipt.models.gru import GRULM
from minipt.models.heads import MaskedLMWithNextSentenceHead, SequenceClassifier
from minipt.models.language_model import LanguageModel, ModelInputError
from minipt.models.transformer import TransformerLM

__all__ = ["MODEL_CLASSES", "build_model", "TransformerLM", "GRULM", "SequenceClassifier",
           "MaskedLMWithNextSentenceHead", "LanguageModel", "ModelInputError"]

MODEL_CLASSES: dict[str, type[LanguageModel]] = {
    TransformerLM.architecture: TransformerLM,  # "transformer"
    GRULM.architecture: GRULM,  # "gru"
}


def build_model(name: str, **config) -> LanguageModel:
    """Build the language model called ``name`` (``"transformer"`` or ``"gru"``) from its constructor arguments.

    ``build_model(model.architecture, **model.config)`` gives a fresh model of the same shape.
    """
    if name not in MODEL_CLASSES:
        raise ModelInputError(f"unknown model architecture {name!r}; choose one of {sorted(MODEL_CLASSES)}")
    model_class = MODEL_CLASSES[name]
    try:
        return model_class(**config)
    except TypeError as error:  # a misspelt or missing config key
        raise ModelInputError(f"{model_class.__name__}: bad config {sorted(config)}: {error}") from None
