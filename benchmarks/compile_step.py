"""``--compile``: the training step compiled with ``torch.compile`` against the eager step, and what it costs.

Run ``python benchmarks/compile_step.py`` on a quiet machine: prints a table and rewrites the ``compile`` section of
``benchmarks/RESULTS.md``.

For each shape and path (minipt's model and AdamW, fast or readable, as ``step_time.py`` builds them):

* compile time: the first compiled training step, then the first evaluation forward (``eval()`` under
  ``no_grad``, which compiles a second graph), less an eager step each;
* step time: compiled and eager steps of two copies of the model, in alternating rounds in one process; the
  speed-up is the median of the per-round ratios eager / compiled;
* break-even: the steps after which the compilation has paid for itself, against the steps of a default
  ``minipt pretrain`` run (2000 at the demo's shape).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from results import machine_line, write_section
from step_time import SHAPES, Contender, alternate, build_minipt, make_batches, step_function

from minipt.jobs.pretrain import PretrainConfig
from minipt.optim import AdamW, param_groups


def contender(shape_key: str, fast: bool, compiled: bool) -> Contender:
    shape = SHAPES[shape_key]
    model = build_minipt(shape, fast).train()
    if compiled:
        model.compile()
    return Contender(model, AdamW(param_groups(model, 0.1), lr=shape.lr, betas=(0.9, 0.99), fast=fast), True)


def first_call_seconds(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def measure(shape_key: str, fast: bool, rounds: int, steps_per_round: int) -> dict:
    """Compile seconds (training step, evaluation forward), ms per eager and compiled step, the speed-up."""
    shape = SHAPES[shape_key]
    batches = make_batches(shape, "cpu")
    eager, compiled = contender(shape_key, fast, False), contender(shape_key, fast, True)
    steps = {"eager": step_function(eager, batches), "compiled": step_function(compiled, batches)}
    eager_step = first_call_seconds(steps["eager"])
    compile_train = first_call_seconds(steps["compiled"]) - eager_step

    def evaluate(model: torch.nn.Module) -> None:
        model.eval()
        with torch.no_grad():
            model(*batches[0])
        model.train()

    eager_eval = first_call_seconds(lambda: evaluate(eager.model))
    compile_eval = first_call_seconds(lambda: evaluate(compiled.model)) - eager_eval
    for step in steps.values():  # warm-up (a compiled model may specialise once more on its second call)
        for _ in range(2):
            step()
    times = alternate(steps, rounds, steps_per_round)
    eager_s, compiled_s = statistics.median(times["eager"]), statistics.median(times["compiled"])
    speedup = statistics.median(a / b for a, b in zip(times["eager"], times["compiled"], strict=True))
    saved_per_step = eager_s - compiled_s
    return {"compile_s": compile_train + compile_eval, "compile_train_s": compile_train,
            "compile_eval_s": compile_eval, "eager_ms": 1000 * eager_s, "compiled_ms": 1000 * compiled_s,
            "speedup": speedup, "break_even": compile_train / saved_per_step + compile_eval / saved_per_step
            if saved_per_step > 0 else float("inf")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default="nanogpt,demo", help="comma-separated: nanogpt, demo")
    parser.add_argument("--paths", default="fast,readable")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--steps-per-round", type=int, default=5)
    parser.add_argument("--quiet-machine", choices=["yes", "no"], default="no",
                        help="say in RESULTS.md whether nothing else ran (default: no)")
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md alone")
    args = parser.parse_args()
    default_steps = PretrainConfig().steps
    rows = ["| shape | path | compile: train step + eval (s) | eager (ms / step) | compiled (ms / step) | speed-up "
            f"| break-even (steps) | pays within {default_steps} steps |",
            "|---|---|---:|---:|---:|---:|---:|---|"]
    for key in args.shapes.split(","):
        for path in args.paths.split(","):
            result = measure(key, path == "fast", args.rounds, args.steps_per_round)
            pays = "yes" if result["break_even"] < default_steps else "no"
            rows.append(f"| {SHAPES[key].name} | {path} | {result['compile_train_s']:.0f} + "
                        f"{result['compile_eval_s']:.0f} | {result['eager_ms']:.1f} | {result['compiled_ms']:.1f} | "
                        f"{result['speedup']:.2f}x | {result['break_even']:.0f} | {pays} |")
            print(rows[-1], flush=True)
    quiet = ("nothing else ran on the machine" if args.quiet_machine == "yes"
             else "NO, other jobs shared the machine: the compile times and the milliseconds are inflated by an "
                  "unknown factor; read the speed-ups (alternating rounds) with care")
    markdown = "\n".join([
        "## `--compile`: torch.compile against the eager step (benchmarks/compile_step.py)",
        "",
        f"{machine_line()} Quiet: {quiet}.",
        "",
        "minipt's model and AdamW on one path, a copy of it compiled in place (`Module.compile()`, as `--compile` "
        "does). Compile time: the first compiled training step, and the first evaluation forward (a second graph), "
        "less an eager one each. Step times: median over "
        f"{args.rounds} alternating rounds of {args.steps_per_round} steps; the speed-up is the median of the "
        "per-round ratios eager / compiled. Break-even: compile time / time saved per step, against the "
        f"{default_steps} steps of a default `minipt pretrain` run (evaluations not counted).",
        "",
        *rows,
    ])
    print(markdown)
    if not args.no_write:
        write_section("compile", markdown)


if __name__ == "__main__":
    main()
