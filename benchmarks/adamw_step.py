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
import math
import statistics

import torch
from results import machine_line, write_section
from step_time import SHAPES, alternate, build_minipt

from minipt.optim import AdamW, param_groups


class FlatSketch:
    """What a flat-buffer AdamW would cost, as a sketch for this table (not an optimizer of minipt's): the
    parameters become views of one flat tensor, the two moments are flat tensors, and the update of
    :class:`minipt.optim.AdamW` runs once over all of it (every parameter decayed: the same work as two groups).

    ``gather=True``: every step copies the gradients into a flat buffer (one ``torch._foreach_copy_``), as an
    optimizer must when autograd writes one gradient per parameter. ``gather=False``: the gradients are taken as
    already flat, the bound an optimizer reaches only if autograd writes every gradient into one shared buffer.
    Every buffer is allocated once."""

    def __init__(self, groups: list[dict], gather: bool, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.99),
                 eps: float = 1e-8, weight_decay: float = 0.1) -> None:
        self.params = [param for group in groups for param in group["params"]]
        self.flat = torch.cat([param.detach().reshape(-1) for param in self.params])  # (P,)
        offset = 0
        for param in self.params:  # each parameter now lives inside the flat tensor
            param.data = self.flat[offset : offset + param.numel()].view_as(param)
            offset += param.numel()
        self.exp_avg, self.exp_avg_sq = torch.zeros_like(self.flat), torch.zeros_like(self.flat)  # (P,) each
        self.denominator = torch.zeros_like(self.flat)  # (P,)
        self.flat_grad = torch.cat([param.grad.reshape(-1) for param in self.params])  # (P,)
        sizes = [param.numel() for param in self.params]
        self.grad_views = [view.view_as(p) for view, p in zip(self.flat_grad.split(sizes), self.params, strict=True)]
        self.gather = gather
        self.lr, self.betas, self.eps, self.weight_decay, self.t = lr, betas, eps, weight_decay, 0

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        beta1, beta2 = self.betas
        if self.gather:
            torch._foreach_copy_(self.grad_views, [param.grad for param in self.params])
        grad = self.flat_grad
        root_c2 = math.sqrt(1.0 - beta2**self.t)
        self.flat.mul_(1.0 - self.lr * self.weight_decay)
        self.exp_avg.lerp_(grad, 1.0 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
        torch.sqrt(self.exp_avg_sq, out=self.denominator).add_(self.eps * root_c2)
        self.flat.addcdiv_(self.exp_avg, self.denominator, value=-self.lr * root_c2 / (1.0 - beta1**self.t))


OPTIMIZERS = {
    "minipt readable": lambda groups: AdamW(groups, lr=1e-3, betas=(0.9, 0.99)),
    "minipt fast": lambda groups: AdamW(groups, lr=1e-3, betas=(0.9, 0.99), fast=True),
    "torch fused": lambda groups: torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.99), fused=True),
    "torch default": lambda groups: torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.99)),
    "torch foreach": lambda groups: torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.99), foreach=True),
    "sketch: flat, gradients copied": lambda groups: FlatSketch(groups, gather=True),
    "sketch: flat, gradients already flat": lambda groups: FlatSketch(groups, gather=False),
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
        "`torch default`: no flag (on the CPU torch picks its per-parameter loop; on CUDA its foreach one). "
        "The two `sketch` rows measure what a flat-buffer AdamW would cost (`FlatSketch` in the script, not part of "
        "minipt): the parameters and moments as views of flat tensors and the update run once over them, with the "
        "gradients copied into a flat buffer every step (what an optimizer must do when autograd writes one gradient "
        "per parameter), or taken as already flat (the bound reached only if autograd wrote every gradient into one "
        "shared buffer).",
        "",
        *rows,
    ])
    print(markdown)
    if not args.no_write:
        write_section("adamw" if args.device == "cpu" else f"adamw_{args.device}", markdown)


if __name__ == "__main__":
    main()
