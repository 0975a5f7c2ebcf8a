"""Peak resident memory of the default ``minipt pretrain`` and ``minipt demo``, and peak CUDA memory on a GPU.

Run ``python benchmarks/memory.py`` on a quiet machine: each command runs as a child process with its default
settings (``--device cpu``), and the peak resident set size of that child (``ru_maxrss`` of ``os.wait4``: the
most physical memory it held at any moment, its own children included) is reported against the target of
1.5 GB. ``--short`` runs shortened versions instead (``pretrain --steps 100``, ``demo --minutes 1``): the
peak is reached in the first steps and evaluations, so it changes little, but the table says which was run.
Where a GPU is present, the default pretraining also runs on it in this process, and
``torch.cuda.max_memory_allocated`` is reported. Rewrites the ``memory`` section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from results import machine_line, write_section

CHECKOUT = Path(__file__).resolve().parents[1]
TARGET_MB = 1536  # 1.5 GB


def peak_rss_of(argv: list[str]) -> tuple[float, float]:
    """Run ``python -m minipt ARGV`` as a child; its peak resident memory in MB and its wall time in seconds."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(CHECKOUT), os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "minipt", *argv], env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)  # the rusage of this child alone (ru_maxrss in KB on Linux)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"minipt {' '.join(argv)} failed with status {child.returncode}")
    return usage.ru_maxrss / 1024, time.perf_counter() - start


def cuda_peak_mb(folder: Path, steps: int | None) -> float:
    """Peak CUDA memory allocated by the default pretraining (``steps`` shortened if given) on the GPU."""
    from minipt.jobs.pretrain import PretrainConfig, pretrain

    torch.cuda.reset_peak_memory_stats()
    config = PretrainConfig(device="cuda", **({"steps": steps, "eval_every": steps} if steps else {}))
    pretrain(config, folder / "cuda", progress=False)
    return torch.cuda.max_memory_allocated() / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--short", action="store_true", help="pretrain --steps 100, demo --minutes 1")
    parser.add_argument("--quiet-machine", choices=["yes", "no"], default="yes",
                        help="say in RESULTS.md whether nothing else ran (default: yes)")
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md alone")
    args = parser.parse_args()
    steps = 100 if args.short else None
    rows = ["| command | peak resident memory (MB) | wall time (s) | target |", "|---|---:|---:|---:|"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        pretrain_argv = ["pretrain", "--out", str(folder / "pretrain"), "--device", "cpu", "--quiet"]
        if steps:
            pretrain_argv += ["--steps", str(steps), "--eval-every", str(steps)]
        demo_argv = ["demo", "--out", str(folder / "demo"), "--device", "cpu", "--quiet"]
        if args.short:
            demo_argv += ["--minutes", "1"]
        for argv in (pretrain_argv, demo_argv):
            megabytes, seconds = peak_rss_of(argv)
            shown = " ".join(a for a in argv if not a.startswith(tmp))
            met = "met" if megabytes < TARGET_MB else "MISSED"
            rows.append(f"| `minipt {shown}` | {megabytes:,.0f} | {seconds:,.0f} | < {TARGET_MB:,} ({met}) |")
            print(rows[-1], flush=True)
        cuda = ""
        if torch.cuda.is_available():
            cuda = (f"\n\nPeak CUDA memory of the default pretraining on {torch.cuda.get_device_name()}: "
                    f"{cuda_peak_mb(folder, steps):,.0f} MB (`torch.cuda.max_memory_allocated`).")
    quiet = "nothing else ran on the machine" if args.quiet_machine == "yes" else "other jobs shared the machine"
    markdown = "\n".join([
        "## Peak memory (benchmarks/memory.py)",
        "",
        f"{machine_line()} Quiet: {quiet}. {'Shortened runs (--short).' if args.short else 'Default settings.'}",
        "",
        "Each command ran as a child process on the CPU; the peak resident set size is that child's `ru_maxrss` "
        "(`os.wait4`), the most physical memory it held at once.",
        "",
        *rows,
    ]) + cuda
    print(markdown)
    if not args.no_write:
        write_section("memory", markdown)


if __name__ == "__main__":
    main()
