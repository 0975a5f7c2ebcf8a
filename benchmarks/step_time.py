"""A whole training step of minipt's language models beside the same model built from PyTorch's built-ins.

Run ``python benchmarks/step_time.py`` on a quiet machine: prints a table and rewrites the ``step_time`` section
of ``benchmarks/RESULTS.md``.

One step is forward, loss, backward and the optimizer update:

* minipt: :class:`minipt.models.TransformerLM` / :class:`minipt.models.GRULM` with the fast path on (as the
  CLI's training jobs run them), :func:`minipt.functional.cross_entropy` inside the model, :class:`minipt.optim.AdamW`;
* the reference: a model written below from ``nn.Embedding``, ``nn.TransformerEncoderLayer`` (pre-norm, GELU,
  causal mask) or ``nn.GRU``, ``nn.LayerNorm``, ``F.cross_entropy`` and ``torch.optim.AdamW``.

Both start from the same weights (the reference loads minipt's ``state_dict``: the parameter names are the same)
and see the same batches. Rounds alternate minipt and reference in one process, so load from other processes
hits both alike; the ratio reported is the median of the per-round ratios minipt / reference. torch's default
thread count is used unless ``--threads`` says otherwise.

The loop's overhead: a real :func:`minipt.pretrain.pretrain` run of the same model, evaluated only at its last
step, reports training tokens per second (evaluation and saving excluded) in ``metrics.jsonl``; it is compared
with the tokens per second of the bare step measured here.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from results import machine_line, write_section
from torch import Tensor, nn

from minipt.models import GRULM, TransformerLM
from minipt.optim import AdamW, param_groups

# ----------------------------------------------------------------------------------------------------------
# The reference models: PyTorch built-ins only, minipt's parameter names
# ----------------------------------------------------------------------------------------------------------


class TokenAndPosition(nn.Module):
    """``token`` and ``position`` embeddings, summed (minipt's ``TokenAndPositionEmbedding`` names)."""

    def __init__(self, vocab_size: int, d_model: int, max_len: int) -> None:
        super().__init__()
        self.token = nn.Embedding(vocab_size, d_model)
        self.position = nn.Embedding(max_len, d_model)
        self.dropout = nn.Dropout(0.0)

    def forward(self, idx: Tensor) -> Tensor:
        positions = torch.arange(idx.shape[1], device=idx.device)  # (T,)
        return self.dropout(self.token(idx) + self.position(positions))  # (B, T, C)


class ReferenceTransformerLM(nn.Module):
    """GPT-style LM from ``nn.TransformerEncoderLayer`` (pre-norm, GELU, causal), tied LM head."""

    def __init__(self, vocab_size: int, d_model: int, n_layers: int, n_heads: int, d_ff: int, max_len: int,
                 dropout: float) -> None:
        super().__init__()
        self.embedding = TokenAndPosition(vocab_size, d_model, max_len)
        self.embedding.dropout.p = dropout
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(d_model, n_heads, d_ff, dropout, activation="gelu", batch_first=True,
                                       norm_first=True)
            for _ in range(n_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        self.lm_head.weight = self.embedding.token.weight

    def forward(self, idx: Tensor, targets: Tensor) -> Tensor:
        T = idx.shape[1]
        causal = nn.Transformer.generate_square_subsequent_mask(T, device=idx.device)  # (T, T), -inf above
        x = self.embedding(idx)  # (B, T, C)
        for layer in self.layers:
            x = layer(x, src_mask=causal, is_causal=True)
        logits = self.lm_head(self.norm(x))  # (B, T, V)
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


class ReferenceGRULM(nn.Module):
    """An LM on ``nn.GRU`` layers (one module per layer, as minipt's ``GRULM``), tied head."""

    def __init__(self, vocab_size: int, d_embed: int, hidden_size: int, n_layers: int, dropout: float) -> None:
        super().__init__()
        self.embedding = nn.Module()
        self.embedding.token = nn.Embedding(vocab_size, d_embed)
        self.layers = nn.ModuleList(
            nn.GRU(d_embed if i == 0 else hidden_size, hidden_size, batch_first=True) for i in range(n_layers)
        )
        self.dropout = nn.Dropout(dropout)
        self.lm_head = nn.Module()  # hidden -> embedding size -> the tied vocabulary (minipt's ProjectedLMHead)
        self.lm_head.projection = nn.Linear(hidden_size, d_embed)
        self.lm_head.decoder = nn.Linear(d_embed, vocab_size, bias=False)
        self.lm_head.decoder.weight = self.embedding.token.weight
        self.embedding_dropout = nn.Dropout(dropout)

    def forward(self, idx: Tensor, targets: Tensor) -> Tensor:
        x = self.embedding_dropout(self.embedding.token(idx))  # (B, T, E)
        for i, layer in enumerate(self.layers):
            x, _ = layer(self.dropout(x) if i > 0 else x)  # (B, T, H)
        logits = self.lm_head.decoder(self.lm_head.projection(self.dropout(x)))  # (B, T, V)
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


# ----------------------------------------------------------------------------------------------------------
# The shapes
# ----------------------------------------------------------------------------------------------------------


@dataclass
class Shape:
    name: str
    model: str  # "transformer" or "gru"
    vocab_size: int
    d_model: int
    n_layers: int
    batch_size: int
    block_size: int
    n_heads: int = 4
    d_ff: int = 512
    hidden_size: int = 256
    dropout: float = 0.0
    lr: float = 1e-3


SHAPES = {
    # nanoGPT's CPU configuration for character-level Shakespeare
    "nanogpt": Shape("nanoGPT CPU config: 4 layers, 4 heads, d 128, block 64, batch 12, vocab 65", "transformer",
                     vocab_size=65, d_model=128, n_layers=4, batch_size=12, block_size=64),
    # the demo's pretraining configuration (see minipt/jobs/demo.py)
    "demo": Shape("demo pretraining: 2 layers, 4 heads, d 128, block 128, batch 16, vocab 2000, dropout 0",
                  "transformer", vocab_size=2000, d_model=128, n_layers=2, batch_size=16, block_size=128, lr=3e-3),
    "gru": Shape("demo GRU LM: 2 layers, embed 128, hidden 256, block 128, batch 16, vocab 2000", "gru",
                 vocab_size=2000, d_model=128, n_layers=2, batch_size=16, block_size=128, lr=1e-2),
}


def build_pair(shape: Shape) -> tuple[nn.Module, nn.Module]:
    """minipt's model (fast path on) and the reference with the same weights."""
    torch.manual_seed(0)
    if shape.model == "transformer":
        mine = TransformerLM(shape.vocab_size, shape.d_model, shape.n_layers, shape.n_heads, shape.d_ff,
                             shape.block_size, dropout=shape.dropout, fast=True)
        reference = ReferenceTransformerLM(shape.vocab_size, shape.d_model, shape.n_layers, shape.n_heads,
                                           shape.d_ff, shape.block_size, shape.dropout)
    else:
        mine = GRULM(shape.vocab_size, shape.d_model, shape.hidden_size, shape.n_layers, dropout=shape.dropout,
                     fast=True)
        reference = ReferenceGRULM(shape.vocab_size, shape.d_model, shape.hidden_size, shape.n_layers, shape.dropout)
    missing, unexpected = reference.load_state_dict(mine.state_dict(), strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    return mine.train(), reference.train()


def step_function(model: nn.Module, optimizer: torch.optim.Optimizer, batches: list[tuple[Tensor, Tensor]],
                  minipt_model: bool) -> Callable[[], float]:
    """One training step per call, cycling through ``batches``; returns the loss."""
    counter = [0]

    def step() -> float:
        inputs, targets = batches[counter[0] % len(batches)]
        counter[0] += 1
        loss = model(inputs, targets)[1] if minipt_model else model(inputs, targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    return step


def time_pair(shape: Shape, rounds: int, steps_per_round: int) -> dict:
    """Median step times and the median per-round ratio, minipt / reference, over alternating rounds."""
    mine, reference = build_pair(shape)
    generator = torch.Generator().manual_seed(0)
    batches = [
        (torch.randint(0, shape.vocab_size, (shape.batch_size, shape.block_size), generator=generator),
         torch.randint(0, shape.vocab_size, (shape.batch_size, shape.block_size), generator=generator))
        for _ in range(4)
    ]
    # the same hyper-parameters and decay / no-decay groups for both optimizers
    mine_opt = AdamW(param_groups(mine, 0.1), lr=shape.lr, betas=(0.9, 0.99))
    reference_opt = torch.optim.AdamW(param_groups(reference, 0.1), lr=shape.lr, betas=(0.9, 0.99))
    steps = {"minipt": step_function(mine, mine_opt, batches, True),
             "reference": step_function(reference, reference_opt, batches, False)}
    for step in steps.values():  # warm-up
        for _ in range(3):
            step()
    times: dict[str, list[float]] = {"minipt": [], "reference": []}
    ratios = []
    for round_index in range(rounds):
        order = ["minipt", "reference"] if round_index % 2 == 0 else ["reference", "minipt"]
        this_round = {}
        for name in order:
            start = time.perf_counter()
            for _ in range(steps_per_round):
                steps[name]()
            this_round[name] = (time.perf_counter() - start) / steps_per_round
            times[name].append(this_round[name])
        ratios.append(this_round["minipt"] / this_round["reference"])
    return {
        "minipt_ms": 1000 * statistics.median(times["minipt"]),
        "reference_ms": 1000 * statistics.median(times["reference"]),
        "ratio": statistics.median(ratios),
        "tokens_per_step": shape.batch_size * shape.block_size,
    }


def loop_overhead(shape: Shape, bare_ms: float, steps: int) -> dict:
    """Training tokens/s of a real ``pretrain`` run of this shape (one evaluation, at the end) against the bare
    step's tokens/s."""
    from minipt.jobs.pretrain import PretrainConfig, pretrain

    config = PretrainConfig(d_model=shape.d_model, n_layers=shape.n_layers, n_heads=shape.n_heads, d_ff=shape.d_ff,
                            steps=steps, batch_size=shape.batch_size, block_size=shape.block_size,
                            dropout=shape.dropout,
                            lr=shape.lr, warmup=min(10, steps - 1), eval_every=steps, eval_batches=1, device="cpu",
                            tokenizer="bpe" if shape.vocab_size > 100 else "char", bpe_vocab_size=shape.vocab_size,
                            threads=torch.get_num_threads())
    with tempfile.TemporaryDirectory() as folder:
        pretrain(config, Path(folder) / "run", progress=False)
        record = [json.loads(line) for line in (Path(folder) / "run" / "metrics.jsonl").open()][-1]
    loop_tokens_per_second = record["tokens_per_second"]
    bare_tokens_per_second = shape.batch_size * shape.block_size / (bare_ms / 1000)
    return {"loop": loop_tokens_per_second, "bare": bare_tokens_per_second,
            "ratio": loop_tokens_per_second / bare_tokens_per_second}


def thread_rows(shape_keys: list[str], rounds: int, steps_per_round: int) -> list[str]:
    """minipt's step with 1 thread against 2 threads, alternating round by round in one process."""
    rows = []
    for key in shape_keys:
        shape = SHAPES[key]
        mine, _ = build_pair(shape)
        optimizer = AdamW(param_groups(mine, 0.1), lr=shape.lr, betas=(0.9, 0.99))
        generator = torch.Generator().manual_seed(0)
        batches = [(torch.randint(0, shape.vocab_size, (shape.batch_size, shape.block_size), generator=generator),
                    torch.randint(0, shape.vocab_size, (shape.batch_size, shape.block_size), generator=generator))]
        step = step_function(mine, optimizer, batches, True)
        times: dict[int, list[float]] = {1: [], 2: []}
        for round_index in range(rounds + 1):
            for threads in ((1, 2) if round_index % 2 == 0 else (2, 1)):
                torch.set_num_threads(threads)
                step()  # the first step after a change of thread count is not timed
                start = time.perf_counter()
                for _ in range(steps_per_round):
                    step()
                if round_index > 0:  # round 0 is a warm-up
                    times[threads].append((time.perf_counter() - start) / steps_per_round)
        one, two = statistics.median(times[1]), statistics.median(times[2])
        rows.append(f"| {shape.name} | {1000 * one:.1f} | {1000 * two:.1f} | {one / two:.2f}x |")
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default="nanogpt,demo,gru", help="comma-separated: " + ", ".join(SHAPES))
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--steps-per-round", type=int, default=5)
    parser.add_argument("--overhead-steps", type=int, default=60, help="steps of the real pretrain run (0: skip)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--quiet-machine", choices=["yes", "no"], default="yes",
                        help="say in RESULTS.md whether nothing else ran (default: yes)")
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md alone")
    parser.add_argument("--threads-only", action="store_true",
                        help="only the 1-thread against 2-thread comparison (the `threads` section)")
    args = parser.parse_args()
    if args.threads_only:
        rows = thread_rows(args.shapes.split(","), args.rounds, args.steps_per_round)
        markdown = "\n".join([
            "## One thread against two (benchmarks/step_time.py --threads-only)",
            "",
            f"{machine_line()} Quiet: {'yes' if args.quiet_machine == 'yes' else 'no'}. minipt's training step "
            f"(fast path), median over {args.rounds} rounds of {args.steps_per_round} steps, 1 and 2 threads "
            "alternating in one process (`torch.set_num_threads`).",
            "",
            "| shape | 1 thread (ms / step) | 2 threads (ms / step) | speed-up |",
            "|---|---:|---:|---:|",
            *rows,
        ])
        print(markdown)
        if not args.no_write:
            write_section("threads", markdown)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    targets = {"transformer": 1.05, "gru": 1.15}
    rows = ["| shape | minipt (ms / step) | reference (ms / step) | ratio | target |", "|---|---:|---:|---:|---:|"]
    overhead_rows = []
    for key in args.shapes.split(","):
        shape = SHAPES[key]
        result = time_pair(shape, args.rounds, args.steps_per_round)
        target = targets[shape.model]
        met = "met" if result["ratio"] <= target else "MISSED"
        rows.append(f"| {shape.name} | {result['minipt_ms']:.1f} | {result['reference_ms']:.1f} | "
                    f"{result['ratio']:.3f}x | <= {target:.2f}x ({met}) |")
        print(rows[-1], flush=True)
        if args.overhead_steps and shape.model == "transformer":
            overhead = loop_overhead(shape, result["minipt_ms"], args.overhead_steps)
            met = "met" if overhead["ratio"] >= 0.95 else "MISSED"
            overhead_rows.append(f"| {shape.name} | {overhead['loop']:,.0f} | {overhead['bare']:,.0f} | "
                                 f"{overhead['ratio']:.3f} | >= 0.95 ({met}) |")
            print(overhead_rows[-1], flush=True)
    quiet = "nothing else ran on the machine" if args.quiet_machine == "yes" else "other jobs shared the machine"
    markdown = "\n".join([
        "## Training step against PyTorch's built-ins (benchmarks/step_time.py)",
        "",
        f"{machine_line()} Quiet: {quiet}.",
        "",
        f"One step = forward, loss, backward, optimizer update. Median over {args.rounds} alternating rounds of "
        f"{args.steps_per_round} steps (after 3 warm-up steps each); the ratio is the median of the per-round ratios "
        "minipt / reference. minipt runs with the fast path on (`fast=True`, as the CLI's training jobs do); the "
        "reference is nn.Embedding + nn.TransformerEncoderLayer (or nn.GRU) + nn.LayerNorm + F.cross_entropy + "
        "torch.optim.AdamW, loaded with the same weights.",
        "",
        *rows,
    ])
    if overhead_rows:
        markdown += "\n".join([
            "",
            "",
            f"The loop's overhead: tokens/s of a real `minipt pretrain` run ({args.overhead_steps} steps, one "
            "evaluation at the end, excluded from the timing) against the bare step above.",
            "",
            "| shape | pretrain loop (tokens/s) | bare step (tokens/s) | ratio | target |",
            "|---|---:|---:|---:|---:|",
            *overhead_rows,
        ])
    print(markdown)
    if not args.no_write:
        write_section("step_time", markdown)


if __name__ == "__main__":
    main()
