"""The AdamW step alone: minipt's readable and fast paths against torch's fused and default AdamW.

Run ``python benchmarks/adamw_step.py`` on a quiet machine: prints a table and rewrites the ``adamw`` section of
``benchmarks/RESULTS.md``.

Each optimizer updates the parameters of the same model (``step_time.py``'s shapes; decay / no-decay groups, as
the training loop builds them) from fixed random gradients; only ``optimizer.step()`` is timed. The optimizers
take turns round by round in one process (the order rotating), and each ratio is the median of the per-round
ratios to torch's fused AdamW. Every optimizer gets its own copy of the parameters, so all do the same work.
"""

from __future__ import annotations

import argparse
import copy
import statistics

import torch
from results import machine_line, write_section
from step_time import SHAPES, alternate, build_minipt

from minipt.optim import AdamW, param_groups

OPTIMIZERS = {
    "minipt readable": lambda groups: AdamW(groups, lr=1e-3, betas=(0.9, 0.99)),
    "minipt fast": lambda groups: AdamW(groups, lr=1e-3, betas=(0.9, 0.99), fast=True),
    "torch fused": lambda groups: torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.99), fused=True),
    "torch default": lambda groups: torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.99)),
    "torch foreach": lambda groups: torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.99), foreach=True),
}


def time_optimizers(shape_key: str, rounds: int, steps_per_round: int, device: str) -> dict:
    """Median ms per step of every optimizer, and the median per-round ratio to torch's fused AdamW."""
    model = build_minipt(SHAPES[shape_key], fast=True).to(device)
    steps = {}
    for name, make in OPTIMIZERS.items():
        copy_of_model = copy.deepcopy(model)  # its own parameters, gradients and (soon) moments
        torch.manual_seed(1)
        for parameter in copy_of_model.parameters():
            parameter.grad = torch.randn_like(parameter)  # the same gradients for every optimizer
        steps[name] = make(param_groups(copy_of_model, 0.1)).step
    for step in steps.values():  # the first step allocates the moments: not timed
        step()
    times = alternate(steps, rounds, steps_per_round)
    if device == "cuda":
        torch.cuda.synchronize()
    fused = times["torch fused"]
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "ms": {name: 1000 * statistics.median(seconds) for name, seconds in times.items()},
        "ratio": {name: statistics.median(a / b for a, b in zip(seconds, fused, strict=True))
                  for name, seconds in times.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default="nanogpt,demo", help="comma-separated: nanogpt, demo")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps-per-round", type=int, default=20)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--quiet-machine", choices=["yes", "no"], default="no",
                        help="say in RESULTS.md whether nothing else ran (default: no)")
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md alone")
    args = parser.parse_args()
    rows = ["| model | parameters | optimizer | ms / step | ratio to torch fused | target |",
            "|---|---:|---|---:|---:|---:|"]
    for key in args.shapes.split(","):
        result = time_optimizers(key, args.rounds, args.steps_per_round, args.device)
        for name, ms in result["ms"].items():
            ratio = result["ratio"][name]
            target = f"<= 1.50x ({'met' if ratio <= 1.5 else 'MISSED'})" if name == "minipt fast" else "-"
            rows.append(f"| {SHAPES[key].name} | {result['parameters']:,} | {name} | {ms:.2f} | {ratio:.2f}x "
                        f"| {target} |")
            print(rows[-1], flush=True)
    quiet = ("nothing else ran on the machine" if args.quiet_machine == "yes"
             else "NO, other jobs shared the machine: read the ratios (alternating rounds), not the milliseconds")
    markdown = "\n".join([
        f"## The AdamW step alone (benchmarks/adamw_step.py, {args.device})",
        "",
        f"{machine_line()} Device: {args.device}. Quiet: {quiet}.",
        "",
        f"`optimizer.step()` over the model's decay / no-decay groups, fixed gradients; median over {args.rounds} "
        f"rounds of {args.steps_per_round} steps, the optimizers' order rotating each round; the ratio is the median "
        "of the per-round ratios to `torch.optim.AdamW(fused=True)`. `minipt readable`: one parameter at a time; "
        "`minipt fast`: `AdamW(fast=True)`, the same lines over all parameters with `torch._foreach_*`; "
        "`torch default`: no flag (on the CPU torch picks its per-parameter loop; on CUDA its foreach one).",
        "",
        *rows,
    ])
    print(markdown)
    if not args.no_write:
        write_section("adamw" if args.device == "cpu" else f"adamw_{args.device}", markdown)


if __name__ == "__main__":
    main()
