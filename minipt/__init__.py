"""minipt: language-model pretraining and finetuning, written out by hand for learning.

The folders are the layers, lowest first (docs/architecture.md; nothing imports upward):

- ``minipt.functional``, ``minipt.fast``  the readable formulas and their opt-in fast paths
- ``minipt.nn``, ``minipt.optim``         LayerNorm, MultiheadAttention, TransformerEncoderLayer, GRU; AdamW
- ``minipt.models``    TransformerLM, GRULM, SequenceClassifier
- ``minipt.runs``      a run folder (config.json, the one atomic writer), settings, fingerprints
- ``minipt.data``      tokenizers, corpora, labelled tasks and batching
- ``minipt.training``  the one training loop, checkpoints, strategies, the frozen cache, interrupts, distributed
- ``minipt.interop``   Hugging Face folders in and out
- ``minipt.jobs``      pretrain, finetune, demo, baselines
- ``minipt.cli``       the ``minipt`` command
"""

__version__ = "0.1.0"
