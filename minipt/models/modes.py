"""The modules' modes: ``train()`` (dropout on) and ``eval()`` (dropout off), decided in two places only.

* :func:`train_mode` — what the training loop sets at every step: the model trains, except the modules whose
  parameters are all frozen, which stay in ``eval()``;
* :func:`evaluation_mode` — everything in ``eval()`` for the body of a ``with`` (evaluation, generation, the frozen
  cache), then each module's own mode back.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

__all__ = ["train_mode", "evaluation_mode"]


def train_mode(model: nn.Module) -> None:
    """``model.train()``, then every module whose parameters are all frozen back to ``eval()`` (no dropout).

    The one place that decides the modes during training: finetuning freezes the lower layers
    (:mod:`minipt.training.strategies`), and their dropout should not fire either.
    """
    model.train()
    for module in model.modules():
        parameters = list(module.parameters())
        if parameters and not any(p.requires_grad for p in parameters):
            module.eval()


@contextmanager
def evaluation_mode(model: nn.Module) -> Iterator[None]:
    """Run the body with every submodule in ``eval()`` mode (no dropout), then restore each one's own mode.

    Restoring module by module (not ``model.train()``) keeps frozen parts of a finetuned model in eval mode.
    """
    previous_modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for module, was_training in previous_modes.items():
            module.training = was_training
