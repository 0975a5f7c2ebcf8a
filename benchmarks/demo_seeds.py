"""``minipt demo`` over seeds on one task, a seed at a time: a thin caller of :mod:`minipt.jobs.demo`.

    python benchmarks/demo_seeds.py                                       # the built-in task, seeds 0, 1, 2
    python benchmarks/demo_seeds.py --task ../shared/data/outside/tweets.tsv --name tweets

Each seed is one ``minipt demo --seed S`` (its own pretraining, labels and finetuning), saved to
``benchmarks/demo_seeds_<name>.json`` as soon as it finishes, so an interrupted series keeps its finished seeds and
``--render`` rebuilds the report from them. The report over the seeds (mean ± std per row, paired differences with
95% t-intervals) is :func:`minipt.jobs.demo.format_seeds_report`'s, the same as ``minipt demo --seeds N`` prints;
it goes to the ``demo_seeds_<name>`` section of ``benchmarks/RESULTS.md`` and ``benchmarks/demo_seeds_<name>.png``.
Test accuracies are deterministic per seed on the CPU; wall times are only as good as the machine was quiet.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import torch
from results import machine_line, write_section

from minipt.jobs.demo import TASK, DemoConfig, demo_plan, format_seeds_report, run_demo
from minipt.plots import plot_demo_report

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default=TASK)
    parser.add_argument("--name", default="", help="names the outputs (default: the task's file stem)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--labels", type=int, default=DemoConfig.labels)
    parser.add_argument("--minutes", type=float, default=DemoConfig.minutes)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--quiet-machine", choices=["yes", "no"], default="yes")
    parser.add_argument("--keep", default=None, help="folder to keep the demo runs in (default: a temporary one)")
    parser.add_argument("--tiny", action="store_true", help="tiny models, to check this script (writes nothing)")
    parser.add_argument("--render", action="store_true", help="only rewrite the report from the saved seeds")
    args = parser.parse_args()
    name = args.name or Path(args.task).stem
    results_file = HERE / f"demo_seeds_{name}.json"
    saved = json.loads(results_file.read_text()) if results_file.exists() and not args.tiny else {}
    settings = {"task": args.task, "labels": args.labels, "minutes": args.minutes}
    runs = {seed: run for seed, run in saved.get("runs", {}).items() if saved.get("settings") == settings}
    with tempfile.TemporaryDirectory() as temporary:
        work = Path(args.keep or temporary)
        for seed in [] if args.render else args.seeds.split(","):
            config = DemoConfig(out=str(work / f"{name}-seed{seed}"), task=args.task, labels=args.labels,
                                minutes=args.minutes, seed=int(seed), threads=args.threads, device="cpu",
                                tiny=args.tiny)
            result = run_demo(config, progress=False)
            runs[seed] = {**result["seeds"][0], "context": result["context"]}
            if not args.tiny:
                results_file.write_text(json.dumps({"settings": settings, "runs": runs}, indent=1) + "\n",
                                        encoding="utf-8")
    if args.render and args.threads:
        torch.set_num_threads(args.threads)  # the machine line names the threads the seeds ran with
    results = [runs[seed] for seed in sorted(runs, key=int)]
    config = DemoConfig(task=args.task, labels=args.labels, minutes=args.minutes, tiny=args.tiny)
    plan = demo_plan(config, results[0]["seed"], "")
    total = sum(sum(result["phases"].values()) for result in results)
    report, summary = format_seeds_report(results, plan, results[0]["context"], total)
    quiet = "yes" if args.quiet_machine == "yes" else "NO, other jobs ran: the wall times are not a quiet machine's"
    shown = f"../shared/data/outside/{Path(args.task).name}" if "shared/data/outside" in args.task else args.task
    text = (f"## The demo over seeds on `{name}` (benchmarks/demo_seeds.py)\n\n"
            f"`minipt demo --task {shown} --labels {args.labels} --minutes {args.minutes:g} --threads {args.threads} "
            f"--seed S`. {machine_line()} Quiet: {quiet}.\n\n"
            + report.split("\n", 2)[2].replace(os.path.abspath(args.task), shown).replace(args.task, shown))
    print(text)
    if not args.tiny:
        plot_demo_report(summary, results[0]["curves"], HERE / f"demo_seeds_{name}.png")
        write_section(f"demo_seeds_{name}", text)


if __name__ == "__main__":
    main()
