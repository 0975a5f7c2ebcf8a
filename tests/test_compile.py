"""``--compile``: a training step compiles without graph breaks, and a compiled tiny run equals the eager one.

``torch.compile`` traces the model's forward (and, through it, the backward) into graphs. A graph break, Python
that the tracer cannot follow (reading a tensor's value back, say), splits the step into several graphs and
loses most of the gain; ``torch._dynamo.explain`` counts them without compiling anything.
"""

from __future__ import annotations

import json

import pytest
import torch

from minipt.jobs.pretrain import PretrainConfig, pretrain
from minipt.models import GRULM, TransformerLM

TEXT = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n" * 40


@pytest.mark.parametrize("architecture,fast", [("transformer", True), ("transformer", False), ("gru", True),
                                               ("gru", False)])
def test_a_training_forward_traces_in_one_graph(architecture, fast):
    torch.manual_seed(0)
    if architecture == "transformer":
        model = TransformerLM(50, 16, 1, 2, 32, 16, fast=fast)
    else:
        model = GRULM(50, 16, 16, 1, fast=fast)
    idx, targets = torch.randint(0, 50, (2, 8)), torch.randint(0, 50, (2, 8))
    explanation = torch._dynamo.explain(model)(idx, targets)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def test_a_compiled_tiny_run_equals_the_eager_run(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runs = {}
        for compiled in (False, True):
            config = PretrainConfig(corpus=str(corpus), tokenizer="char", d_model=16, n_layers=1, n_heads=2, d_ff=32,
                                    block_size=16, batch_size=4, steps=3, warmup=1, eval_every=3, eval_batches=1,
                                    device="cpu", threads=1, compile=compiled)
            pretrain(config, tmp_path / f"compiled-{compiled}", progress=False)
            runs[compiled] = tmp_path / f"compiled-{compiled}"
    finally:
        torch.set_num_threads(threads)
    eager_weights = torch.load(runs[False] / "last.pt", weights_only=True)["model"]
    compiled_weights = torch.load(runs[True] / "last.pt", weights_only=True)["model"]
    assert eager_weights.keys() == compiled_weights.keys()  # the checkpoint's names do not change
    for name, tensor in eager_weights.items():
        torch.testing.assert_close(compiled_weights[name], tensor, atol=1e-5, rtol=0, msg=name)
    eager_metrics, compiled_metrics = ([json.loads(line) for line in (run / "metrics.jsonl").open()]
                                       for run in (runs[False], runs[True]))
    for eager, compiled in zip(eager_metrics, compiled_metrics, strict=True):
        for key in ("train_loss", "val_loss"):
            if key in eager:
                assert compiled[key] == pytest.approx(eager[key], abs=1e-5), key
