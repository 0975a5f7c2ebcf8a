"""Training tokens per second of ``minipt pretrain`` with 1 and 2 CPU ranks (``torchrun``, gloo).

Run ``python benchmarks/ddp_scaling.py`` on a quiet machine. Three runs of the default model, each
``--steps`` steps evaluated at half-time and at the end, repeated ``--repeats`` times (the median is reported):

* 1 process, ``--batch-size 16`` (plain ``minipt pretrain``; torch uses every core);
* 2 ranks x ``--batch-size 16``: the same work per rank, twice the global batch (weak scaling);
* 2 ranks x ``--batch-size 8``: the same global batch of 16 split in two (strong scaling).

Under torchrun each rank takes its share of the cores (``--threads 0``: cores / ranks). Tokens per second are
the training throughput ``metrics.jsonl`` records over the second half of the steps (every rank's tokens;
evaluation and saving excluded).
Rewrites the ``ddp_scaling`` section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from results import machine_line, write_section

CHECKOUT = Path(__file__).resolve().parents[1]
RUNS = [(1, 16), (2, 16), (2, 8)]  # (ranks, --batch-size per rank)


def tokens_per_second(ranks: int, batch_size: int, steps: int, out: Path) -> float:
    """One pretraining run; the training tokens per second of its last ``metrics.jsonl`` record: the second half
    of the steps (the first half warms up; the evaluation at half-time is not counted)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(CHECKOUT), os.environ.get("PYTHONPATH", "")])}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks)]
    command = [*(launcher if ranks > 1 else [sys.executable]), "-m", "minipt", "pretrain", "--out", str(out),
               "--batch-size", str(batch_size), "--steps", str(steps), "--eval-every", str(steps // 2),
               "--warmup", str(min(50, steps // 2)), "--device", "cpu", "--quiet"]
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return records[-1]["tokens_per_second"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps per run (default: 100)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per configuration; the median is kept")
    parser.add_argument("--quiet-machine", choices=["yes", "no"], default="yes",
                        help="say in RESULTS.md whether nothing else ran (default: yes)")
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md alone")
    args = parser.parse_args()
    rows = ["| ranks | batch per rank | global batch | tokens / s (median) | against 1 process |",
            "|---:|---:|---:|---:|---:|"]
    baseline = None
    with tempfile.TemporaryDirectory() as tmp:
        for ranks, batch_size in RUNS:
            speeds = [tokens_per_second(ranks, batch_size, args.steps, Path(tmp) / f"{ranks}x{batch_size}-{repeat}")
                      for repeat in range(args.repeats)]
            median = statistics.median(speeds)
            baseline = baseline or median
            rows.append(f"| {ranks} | {batch_size} | {ranks * batch_size} | {median:,.0f} | "
                        f"{median / baseline:.2f}x |")
            print(rows[-1], flush=True)
    quiet = "nothing else ran on the machine" if args.quiet_machine == "yes" else "other jobs shared the machine"
    markdown = "\n".join([
        "## Data parallelism on the CPU: 1 and 2 ranks (benchmarks/ddp_scaling.py)",
        "",
        f"{machine_line()} Quiet: {quiet}. The default `minipt pretrain` model (block 128), {args.steps} steps per "
        f"run, median of {args.repeats} runs; `torchrun --standalone --nproc-per-node 2` with gloo, each rank on "
        f"{max(1, (os.cpu_count() or 1) // 2)} of the {os.cpu_count()} cores (1 process: all of them); tokens per "
        "second over the second half of each run. "
        "The ranks share the machine's cores, so 2 ranks cannot be twice as fast as 1 process that already uses "
        "every core: the gain, if any, comes from less idle time per thread, and the all-reduce of the gradients "
        "costs some of it.",
        "",
        *rows,
    ])
    print(markdown)
    if not args.no_write:
        write_section("ddp_scaling", markdown)


if __name__ == "__main__":
    main()
