"""A whole training step of minipt's language models beside the same model built from PyTorch's built-ins.

Run ``python benchmarks/step_time.py`` on a quiet machine: prints a table and rewrites the ``step_time`` section
of ``benchmarks/RESULTS.md``. ``--device cuda`` times the same steps on a GPU (``benchmarks/gpu_check.sh``).

One step is forward, loss, backward and the optimizer update:

* minipt, fast: :class:`minipt.models.TransformerLM` / :class:`minipt.models.GRULM` with the fast path on and
  :class:`minipt.optim.AdamW` ``fast=True`` (as the CLI's training jobs run them);
* minipt, readable: the same model and AdamW on their readable paths (the defaults);
* the nanoGPT-style reference (Transformer shapes): a GPT written below from a fused qkv ``nn.Linear``,
  ``F.scaled_dot_product_attention(is_causal=True)``, ``nn.GELU``, ``nn.LayerNorm``, a tied head,
  ``F.cross_entropy`` and ``torch.optim.AdamW`` with its defaults — the block of nanoGPT's ``model.py``;
* the encoder-layer reference: ``nn.Embedding``, ``nn.TransformerEncoderLayer`` (pre-norm, GELU, causal mask) or
  ``nn.GRU``, ``nn.LayerNorm``, ``F.cross_entropy`` and ``torch.optim.AdamW``.

All start from the same weights (the references load minipt's ``state_dict``, renamed where their names differ)
and see the same batches. Rounds alternate the contenders in one process (the order rotates from round to
round), so load from other processes hits all alike; each ratio reported is the median of the per-round ratios
minipt / reference. torch's default thread count is used unless ``--threads`` says otherwise.

The loop's overhead: a real :func:`minipt.pretrain.pretrain` run of the same model, evaluated only at its last
step, reports training tokens per second (evaluation and saving excluded) in ``metrics.jsonl``; it is compared
with the tokens per second of the bare fast step measured here.
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


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention: one fused ``(C, 3C)`` projection, then PyTorch's fused kernel."""

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads, self.dropout = n_heads, dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.proj_dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)  # 3 x (B, T, C)
        q, k, v = (z.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2) for z in (q, k, v))  # (B, h, T, d)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True)
        return self.proj_dropout(self.proj(y.transpose(1, 2).reshape(B, T, C)))  # (B, T, C)


class NanoGPTBlock(nn.Module):
    """Pre-norm block: ``x + attention(norm1(x))``, then ``x + MLP(norm2(x))`` with a GELU MLP."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attention = CausalSelfAttention(d_model, n_heads, dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Linear(d_ff, d_model), nn.Dropout(dropout))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attention(self.norm1(x))  # (B, T, C)
        return x + self.mlp(self.norm2(x))


class NanoGPTStyleLM(nn.Module):
    """A GPT as nanoGPT's ``model.py`` builds it, with minipt's names for embeddings, final norm and head."""

    def __init__(self, vocab_size: int, d_model: int, n_layers: int, n_heads: int, d_ff: int, max_len: int,
                 dropout: float) -> None:
        super().__init__()
        self.embedding = TokenAndPosition(vocab_size, d_model, max_len)
        self.embedding.dropout.p = dropout
        self.blocks = nn.ModuleList(NanoGPTBlock(d_model, n_heads, d_ff, dropout) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        self.lm_head.weight = self.embedding.token.weight  # tied

    def forward(self, idx: Tensor, targets: Tensor) -> Tensor:
        x = self.embedding(idx)  # (B, T, C)
        for block in self.blocks:
            x = block(x)
        logits = self.lm_head(self.norm(x))  # (B, T, V)
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


# minipt's layer names -> NanoGPTStyleLM's (the rest is named alike)
NANOGPT_NAMES = {
    "self_attn.in_proj_weight": "attention.qkv.weight", "self_attn.in_proj_bias": "attention.qkv.bias",
    "self_attn.out_proj.": "attention.proj.", "linear1.": "mlp.0.", "linear2.": "mlp.2.",
}


def nanogpt_state_dict(minipt_state: dict[str, Tensor]) -> dict[str, Tensor]:
    """minipt's TransformerLM ``state_dict`` under NanoGPTStyleLM's names."""
    renamed = {}
    for name, tensor in minipt_state.items():
        if name.startswith("layers."):
            name = "blocks." + name[len("layers."):]
            for old, new in NANOGPT_NAMES.items():
                name = name.replace(old, new)
        renamed[name] = tensor
    return renamed


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


FAST, READABLE = "minipt fast", "minipt readable"
REFERENCES = {"transformer": ("nanoGPT-style", "encoder layer"), "gru": ("nn.GRU",)}


@dataclass
class Contender:
    """A model, its optimizer, and whether it is minipt's (which returns ``(logits, loss)``)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    is_minipt: bool


def build_minipt(shape: Shape, fast: bool) -> nn.Module:
    """minipt's model of ``shape``, seeded (every call gives the same weights), on the fast or readable path."""
    torch.manual_seed(0)
    if shape.model == "transformer":
        return TransformerLM(shape.vocab_size, shape.d_model, shape.n_layers, shape.n_heads, shape.d_ff,
                             shape.block_size, dropout=shape.dropout, fast=fast)
    return GRULM(shape.vocab_size, shape.d_model, shape.hidden_size, shape.n_layers, dropout=shape.dropout, fast=fast)


def build_references(shape: Shape, weights: dict[str, Tensor]) -> dict[str, nn.Module]:
    """The reference models of ``shape``, loaded with minipt's ``weights``."""
    if shape.model == "gru":
        references = {"nn.GRU": ReferenceGRULM(shape.vocab_size, shape.d_model, shape.hidden_size, shape.n_layers,
                                               shape.dropout)}
    else:
        sizes = (shape.vocab_size, shape.d_model, shape.n_layers, shape.n_heads, shape.d_ff, shape.block_size,
                 shape.dropout)
        references = {"nanoGPT-style": NanoGPTStyleLM(*sizes), "encoder layer": ReferenceTransformerLM(*sizes)}
    for name, reference in references.items():
        state = nanogpt_state_dict(weights) if name == "nanoGPT-style" else weights
        missing, unexpected = reference.load_state_dict(state, strict=False)
        assert not missing and not unexpected, (name, missing, unexpected)
    return references


def build_contenders(shape: Shape, device: str) -> dict[str, Contender]:
    """minipt fast and readable, and the references: the same weights, the same AdamW settings and groups."""
    contenders = {}
    for name, fast in ((FAST, True), (READABLE, False)):
        model = build_minipt(shape, fast).to(device).train()
        optimizer = AdamW(param_groups(model, 0.1), lr=shape.lr, betas=(0.9, 0.99), fast=fast)
        contenders[name] = Contender(model, optimizer, True)
    for name, reference in build_references(shape, build_minipt(shape, False).state_dict()).items():
        reference = reference.to(device).train()
        optimizer = torch.optim.AdamW(param_groups(reference, 0.1), lr=shape.lr, betas=(0.9, 0.99))
        contenders[name] = Contender(reference, optimizer, False)
    return contenders


def make_batches(shape: Shape, device: str, count: int = 4) -> list[tuple[Tensor, Tensor]]:
    generator = torch.Generator().manual_seed(0)
    size = (shape.batch_size, shape.block_size)
    return [(torch.randint(1, shape.vocab_size, size, generator=generator).to(device),
             torch.randint(1, shape.vocab_size, size, generator=generator).to(device)) for _ in range(count)]


def step_function(contender: Contender, batches: list[tuple[Tensor, Tensor]]) -> Callable[[], float]:
    """One training step per call, cycling through ``batches``; returns the loss (``.item()``: a GPU step is
    finished when it returns)."""
    counter = [0]
    model, optimizer = contender.model, contender.optimizer

    def step() -> float:
        inputs, targets = batches[counter[0] % len(batches)]
        counter[0] += 1
        loss = model(inputs, targets)[1] if contender.is_minipt else model(inputs, targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    return step


def alternate(steps: dict[str, Callable[[], object]], rounds: int, steps_per_round: int) -> dict[str, list[float]]:
    """Seconds per step of each function, round by round; the order rotates each round."""
    names = list(steps)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            for _ in range(steps_per_round):
                steps[name]()
            times[name].append((time.perf_counter() - start) / steps_per_round)
    return times


def median_ratio(times: dict[str, list[float]], mine: str, reference: str) -> float:
    """The median over rounds of ``mine``'s time / ``reference``'s time in the same round."""
    return statistics.median(a / b for a, b in zip(times[mine], times[reference], strict=True))


def time_shape(shape: Shape, rounds: int, steps_per_round: int, device: str) -> dict:
    """Median step times (ms) of every contender and the median per-round ratios of minipt's two paths to
    each reference. The first steps' losses agree (the same weights and batches), checked before timing."""
    contenders = build_contenders(shape, device)
    batches = make_batches(shape, device)
    steps = {name: step_function(contender, batches) for name, contender in contenders.items()}
    first_losses = {name: step() for name, step in steps.items()}
    assert max(first_losses.values()) - min(first_losses.values()) < 1e-2, first_losses  # TF32 on a GPU: 1e-3
    for step in steps.values():  # warm-up
        for _ in range(2):
            step()
    times = alternate(steps, rounds, steps_per_round)
    return {
        "ms": {name: 1000 * statistics.median(seconds) for name, seconds in times.items()},
        "ratio": {(mine, reference): median_ratio(times, mine, reference)
                  for mine in (FAST, READABLE) for reference in REFERENCES[shape.model]},
    }


def loop_overhead(shape: Shape, bare_ms: float, steps: int, device: str) -> dict:
    """Training tokens/s of a real ``pretrain`` run of this shape (one evaluation, at the end) against the bare
    step's tokens/s."""
    from minipt.jobs.pretrain import PretrainConfig, pretrain

    config = PretrainConfig(d_model=shape.d_model, n_layers=shape.n_layers, n_heads=shape.n_heads, d_ff=shape.d_ff,
                            steps=steps, batch_size=shape.batch_size, block_size=shape.block_size,
                            dropout=shape.dropout,
                            lr=shape.lr, warmup=min(10, steps - 1), eval_every=steps, eval_batches=1, device=device,
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
        mine = build_minipt(shape, fast=True).train()
        optimizer = AdamW(param_groups(mine, 0.1), lr=shape.lr, betas=(0.9, 0.99), fast=True)
        step = step_function(Contender(mine, optimizer, True), make_batches(shape, "cpu", count=1))
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


def profile_rows(shape: Shape, steps: int, top: int) -> list[str]:
    """Self CPU time by op (``torch.profiler``) of ``steps`` steps of minipt fast and of the nanoGPT-style
    reference: the ops where the two differ most, in ms per step."""
    from torch.profiler import ProfilerActivity, profile

    contenders = build_contenders(shape, "cpu")
    batches = make_batches(shape, "cpu")
    per_op: dict[str, dict[str, float]] = {}
    for name in (FAST, "nanoGPT-style"):
        step = step_function(contenders[name], batches)
        for _ in range(3):
            step()
        with profile(activities=[ProfilerActivity.CPU]) as profiler:
            for _ in range(steps):
                step()
        for event in profiler.key_averages():
            per_op.setdefault(event.key, {})[name] = event.self_cpu_time_total / 1000 / steps
    totals = {name: sum(times.get(name, 0.0) for times in per_op.values()) for name in (FAST, "nanoGPT-style")}
    gaps = sorted(per_op.items(), key=lambda item: -abs(item[1].get(FAST, 0.0) - item[1].get("nanoGPT-style", 0.0)))
    rows = ["| op | minipt fast (ms / step) | nanoGPT-style (ms / step) | difference |", "|---|---:|---:|---:|"]
    for op, times in gaps[:top]:
        mine, theirs = times.get(FAST, 0.0), times.get("nanoGPT-style", 0.0)
        rows.append(f"| `{op}` | {mine:.2f} | {theirs:.2f} | {mine - theirs:+.2f} |")
    rows.append(f"| all ops (self time) | {totals[FAST]:.2f} | {totals['nanoGPT-style']:.2f} | "
                f"{totals[FAST] - totals['nanoGPT-style']:+.2f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default="nanogpt,demo,gru", help="comma-separated: " + ", ".join(SHAPES))
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--steps-per-round", type=int, default=5)
    parser.add_argument("--overhead-steps", type=int, default=60, help="steps of the real pretrain run (0: skip)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--quiet-machine", choices=["yes", "no"], default="no",
                        help="say in RESULTS.md whether nothing else ran (default: no)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the steps run")
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md alone")
    parser.add_argument("--threads-only", action="store_true",
                        help="only the 1-thread against 2-thread comparison (the `threads` section)")
    parser.add_argument("--profile", action="store_true",
                        help="only the profile by op of minipt fast against the nanoGPT-style reference (section "
                             "`step_profile`)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.profile:
        markdown = "\n".join([
            "## Where a step's time goes: minipt fast against the nanoGPT-style reference "
            "(benchmarks/step_time.py --profile)",
            "",
            f"{machine_line()} Quiet: {'yes' if args.quiet_machine == 'yes' else 'NO, other jobs shared the machine'}."
            " Self CPU time by op (`torch.profiler`), per step, averaged over the profiled steps; the ops where the "
            "two differ most first.",
            "",
        ])
        for key in args.shapes.split(","):
            if SHAPES[key].model == "transformer":
                markdown += f"\n{SHAPES[key].name}:\n\n" + "\n".join(profile_rows(SHAPES[key], 10, 15)) + "\n"
        print(markdown)
        if not args.no_write:
            write_section("step_profile", markdown)
        return
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
    step_time_section(args)


def step_time_section(args: argparse.Namespace) -> None:
    """The ``step_time`` section: times, ratios against each reference, and the loop's overhead."""
    targets = {(FAST, "nanoGPT-style"): 1.0, (READABLE, "nanoGPT-style"): 1.3, (FAST, "nn.GRU"): 1.15}
    time_rows = ["| shape | contender | ms / step |", "|---|---|---:|"]
    ratio_rows = ["| shape | minipt path | reference | ratio | target |", "|---|---|---|---:|---:|"]
    overhead_rows = []
    for key in args.shapes.split(","):
        shape = SHAPES[key]
        result = time_shape(shape, args.rounds, args.steps_per_round, args.device)
        time_rows += [f"| {shape.name} | {name} | {ms:.1f} |" for name, ms in result["ms"].items()]
        for (mine, reference), ratio in result["ratio"].items():
            target = targets.get((mine, reference))
            verdict = f"<= {target:.2f}x ({'met' if ratio <= target else 'MISSED'})" if target else "-"
            ratio_rows.append(f"| {shape.name} | {mine} | {reference} | {ratio:.3f}x | {verdict} |")
        print("\n".join(time_rows[-len(result["ms"]):] + ratio_rows[-len(result["ratio"]):]), flush=True)
        if args.overhead_steps and shape.model == "transformer":
            overhead = loop_overhead(shape, result["ms"][FAST], args.overhead_steps, args.device)
            met = "met" if overhead["ratio"] >= 0.95 else "MISSED"
            overhead_rows.append(f"| {shape.name} | {overhead['loop']:,.0f} | {overhead['bare']:,.0f} | "
                                 f"{overhead['ratio']:.3f} | >= 0.95 ({met}) |")
            print(overhead_rows[-1], flush=True)
    quiet = ("nothing else ran on the machine" if args.quiet_machine == "yes"
             else "NO, other jobs shared the machine: read the ratios (alternating rounds), not the milliseconds")
    markdown = "\n".join([
        f"## Training step against PyTorch's built-ins (benchmarks/step_time.py, {args.device})",
        "",
        f"{machine_line()} Device: {args.device}. Quiet: {quiet}.",
        "",
        f"One step = forward, loss, backward, optimizer update. Median over {args.rounds} rounds of "
        f"{args.steps_per_round} steps (after 3 untimed steps each), the contenders' order rotating each round; a "
        "ratio is the median of the per-round ratios minipt / reference. `minipt fast`: the model and AdamW with "
        "`fast=True`, as the CLI's training jobs run them; `minipt readable`: both on their readable defaults. "
        "`nanoGPT-style`: nanoGPT's block written from a fused qkv nn.Linear, F.scaled_dot_product_attention"
        "(is_causal=True), nn.GELU, nn.LayerNorm, a tied head, F.cross_entropy and torch.optim.AdamW's defaults. "
        "`encoder layer`: nn.Embedding + nn.TransformerEncoderLayer (pre-norm, GELU, causal) + nn.LayerNorm + "
        "F.cross_entropy + torch.optim.AdamW. `nn.GRU`: the GRU LM on nn.GRU. All load the same weights.",
        "",
        *ratio_rows,
        "",
        *time_rows,
    ])
    if overhead_rows:
        markdown += "\n".join([
            "",
            "",
            f"The loop's overhead: tokens/s of a real `minipt pretrain` run ({args.overhead_steps} steps, one "
            "evaluation at the end, excluded from the timing) against the bare fast step above.",
            "",
            "| shape | pretrain loop (tokens/s) | bare step (tokens/s) | ratio | target |",
            "|---|---:|---:|---:|---:|",
            *overhead_rows,
        ])
    print(markdown)
    if not args.no_write:
        write_section("step_time" if args.device == "cpu" else f"step_time_{args.device}", markdown)


if __name__ == "__main__":
    main()
