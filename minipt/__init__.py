"""minipt: language-model pretraining and finetuning, written out by hand for learning.

Where things live (lowest layer first; see docs/architecture.md):

- ``minipt.functional``  softmax, log_softmax, cross_entropy, scaled_dot_product_attention, layer_norm, gelu, dropout
- ``minipt.optim``       AdamW, SGD, learning-rate schedules, decay / no-decay parameter groups
- ``minipt.nn``          LayerNorm, MultiheadAttention, TransformerEncoderLayer, GRUCell, GRU
- ``minipt.models``      TransformerLM, GRULM, SequenceClassifier
- ``minipt.tokenizers``  CharTokenizer, BPETokenizer
- ``minipt.data``        corpora, labelled tasks and batching
- ``minipt.runs``        a run folder: config.json, the one atomic writer;  ``minipt.errors`` ``MiniptError``
- ``minipt.train``       the one training loop;  ``minipt.strategies`` freezing and friends
- ``minipt.pretrain``    the pretraining job;  ``minipt.finetune`` the finetuning job
- ``minipt.cli``         the ``minipt`` command
"""

__version__ = "0.1.0"
