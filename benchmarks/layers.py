"""Speed of minipt's hand-written layers beside their PyTorch counterparts (forward + backward).

Run ``python benchmarks/layers.py``: prints a table and rewrites the ``layers`` section of
``benchmarks/RESULTS.md``. minipt's pieces run their fast path (``fast=True``, :mod:`minipt.fast`), as the
training jobs run them. Each pair is timed side by side in one run, alternating minipt and torch rounds so
that load from other processes hits both alike; the figure is the median over all rounds.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from results import machine_line, write_section

from minipt import fast
from minipt import nn as mnn


def forward_backward(run: Callable[[], torch.Tensor], upstream: torch.Tensor) -> Callable[[], None]:
    """A closure doing one forward pass and one backward pass with a fixed upstream gradient."""

    def step() -> None:
        run().backward(upstream)

    return step


def gru_pair() -> tuple[Callable[[], None], Callable[[], None]]:
    batch, length, input_size, hidden_size, layers = 32, 128, 128, 256, 2
    torch_gru = torch.nn.GRU(input_size, hidden_size, num_layers=layers, batch_first=True)
    minipt_gru = mnn.GRU(input_size, hidden_size, num_layers=layers, batch_first=True, fast=True)
    minipt_gru.load_state_dict(torch_gru.state_dict())
    x = torch.randn(batch, length, input_size, requires_grad=True)
    upstream = torch.randn(batch, length, hidden_size)
    return (
        forward_backward(lambda: minipt_gru(x)[0], upstream),
        forward_backward(lambda: torch_gru(x)[0], upstream),
    )


def attention_pair(length: int) -> tuple[Callable[[], None], Callable[[], None]]:
    batch, heads, head_dim = 12, 4, 32
    q, k, v = (torch.randn(batch, heads, length, head_dim, requires_grad=True) for _ in range(3))
    upstream = torch.randn(batch, heads, length, head_dim)
    return (
        forward_backward(lambda: fast.attention(q, k, v, is_causal=True), upstream),
        forward_backward(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True), upstream),
    )


def encoder_pair(
    activation: str = "relu", dropout: float = 0.0
) -> tuple[Callable[[], None], Callable[[], None]]:
    batch, length, d_model, heads = 12, 64, 128, 4
    config = dict(
        dim_feedforward=4 * d_model, dropout=dropout, activation=activation, batch_first=True, norm_first=True
    )
    torch_layer = torch.nn.TransformerEncoderLayer(d_model, heads, **config)
    minipt_layer = mnn.TransformerEncoderLayer(d_model, heads, **config, fast=True)
    minipt_layer.load_state_dict(torch_layer.state_dict())
    causal = torch.nn.Transformer.generate_square_subsequent_mask(length)
    x = torch.randn(batch, length, d_model, requires_grad=True)
    upstream = torch.randn(batch, length, d_model)
    return (
        forward_backward(lambda: minipt_layer(x, src_mask=causal, is_causal=True), upstream),
        forward_backward(lambda: torch_layer(x, src_mask=causal, is_causal=True), upstream),
    )


def interleaved_medians(
    minipt_step: Callable[[], None], torch_step: Callable[[], None], rounds: int, warmup: int = 2
) -> tuple[float, float, float]:
    """Median seconds of each step over ``rounds`` alternating runs, and the median of per-round ratios."""
    for _ in range(warmup):
        minipt_step()
        torch_step()
    minipt_times, torch_times = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        minipt_step()
        minipt_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        torch_step()
        torch_times.append(time.perf_counter() - start)
    ratios = [m / t for m, t in zip(minipt_times, torch_times, strict=True)]
    return statistics.median(minipt_times), statistics.median(torch_times), statistics.median(ratios)


CASES = [
    ("GRU (in 128, hidden 256, 2 layers, B 32, T 128)", gru_pair, 1.5),
    ("causal attention (B 12, 4 heads, d 32, T 64)", lambda: attention_pair(64), 1.2),
    ("causal attention (B 12, 4 heads, d 32, T 256)", lambda: attention_pair(256), 1.6),
    ("encoder layer (d 128, 4 heads, ff 512, B 12, T 64)", encoder_pair, 1.2),
    ("encoder layer as above, GELU, dropout 0.1", lambda: encoder_pair("gelu", 0.1), None),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="timed rounds per case (default 15)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    torch.manual_seed(0)

    rows = []
    for name, make_pair, target in CASES:
        minipt_step, torch_step = make_pair()
        minipt_s, torch_s, ratio = interleaved_medians(minipt_step, torch_step, args.rounds)
        rows.append((name, minipt_s, torch_s, ratio, target))
        print(f"{name:52s} minipt {minipt_s * 1e3:8.2f} ms  torch {torch_s * 1e3:8.2f} ms  {ratio:4.2f}x")

    lines = [
        machine_line(),
        "",
        f"Median forward + backward time over {args.rounds} alternating rounds (after 2 warm-up rounds);",
        "the ratio is the median of the per-round ratios minipt / torch. Float32, CPU, training mode,",
        "pre-norm encoder layers with a causal mask; dropout 0 except in the last row (which has no target).",
        "",
        "| piece | minipt (ms) | torch (ms) | ratio | target |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, minipt_s, torch_s, ratio, target in rows:
        goal = "-" if target is None else f"<= {target}x"
        lines.append(f"| {name} | {minipt_s * 1e3:.2f} | {torch_s * 1e3:.2f} | {ratio:.2f}x | {goal} |")
    if not args.no_write:
        write_section("layers", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
