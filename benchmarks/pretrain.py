"""Pretraining quality bar: writes the ``pretrain`` section of benchmarks/RESULTS.md.

Three measurements, each run through the real ``minipt`` command line (the commands are printed in the report):

* ``default`` — ``minipt pretrain`` with its default settings (a 2-layer Transformer on a 2000-token BPE
  vocabulary of the built-in Shakespeare corpus, about 4 minutes on a 2-core CPU): validation loss and a sample;
* ``nanogpt`` — nanoGPT's documented CPU configuration for character-level tiny Shakespeare (4 layers, 4 heads,
  128 dims, block 64, batch 12, lr 1e-3, 2000 steps, warmup 100, dropout 0; nanoGPT reports val loss ~1.88) on
  the file given by ``--tinyshakespeare PATH``, first 90% train, last 10% validation; the validation loss is
  over the whole validation split;
* ``gru`` — the GRU language model with the same data, steps, batch and block size, for comparison.

Usage::

    python benchmarks/pretrain.py --tinyshakespeare ../shared/data/tinyshakespeare.txt            # all three
    python benchmarks/pretrain.py --only nanogpt --tinyshakespeare ../shared/data/tinyshakespeare.txt
    python benchmarks/pretrain.py --smoke      # tiny settings, a few seconds: checks the script, writes nothing

Each piece rewrites only its own lines of the section, so the pieces can be run at different times.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from results import RESULTS, machine_line, write_section  # noqa: E402

from minipt.cli import main  # noqa: E402

NANOGPT = ["--block-size", "64", "--batch-size", "12", "--lr", "1e-3", "--steps", "2000", "--warmup", "100",
           "--dropout", "0", "--eval-every", "250", "--eval-batches", "0", "--val-fraction", "0.1",
           "--tokenizer", "char"]
NANOGPT_TRANSFORMER = ["--model", "transformer", "--d-model", "128", "--n-layers", "4", "--n-heads", "4",
                       "--d-ff", "512"]
GRU = ["--model", "gru", "--d-model", "128", "--hidden-size", "256", "--n-layers", "2"]
SMOKE = ["--steps", "20", "--warmup", "5", "--eval-every", "10", "--eval-batches", "2", "--batch-size", "4",
         "--block-size", "32", "--d-model", "32", "--n-layers", "1", "--n-heads", "2", "--d-ff", "64",
         "--hidden-size", "32"]
PROMPT = "ROMEO:"


def run_cli(argv: list[str]) -> str:
    """Run ``minipt ARGV`` in this process; return its standard output (a failure stops the script)."""
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        status = main(argv)
    if status != 0:
        sys.exit(f"benchmarks/pretrain.py: `minipt {shlex.join(argv)}` failed with status {status}")
    return output.getvalue()


def pretrain_and_sample(name: str, argv: list[str], runs: Path) -> dict:
    """Pretrain into ``runs/name``, then sample 300 characters; return what the report needs."""
    run_dir = runs / name
    pretrain_argv = ["pretrain", *argv, "--out", str(run_dir), "--quiet"]
    start = time.perf_counter()
    run_cli(pretrain_argv)
    wall_seconds = time.perf_counter() - start
    generate_argv = ["generate", "--from", str(run_dir), "--prompt", PROMPT, "--tokens", "300", "--seed", "0"]
    sample = run_cli(generate_argv)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    config = json.loads((run_dir / "config.json").read_text())
    return {
        "commands": [f"minipt {shlex.join(pretrain_argv)}", f"minipt {shlex.join(generate_argv)}"],
        "final": records[-1],
        "best_val_loss": min(record["val_loss"] for record in records),
        "wall_seconds": wall_seconds,
        "parameters": parameter_count(run_dir),
        "val_tokens": config["data"]["val_tokens"],
        "eval_batches": config["pretrain"]["eval_batches"],
        "batch_tokens": config["pretrain"]["batch_size"] * config["pretrain"]["block_size"],
        "sample": sample,
    }


def parameter_count(run_dir: Path) -> int:
    from minipt.jobs.pretrain import load_run

    model, _, _ = load_run(run_dir)
    return model.num_parameters()


def report(title: str, result: dict, note: str) -> str:
    final = result["final"]
    commands = "\n".join(result["commands"])
    sample = result["sample"].strip()
    return (
        f"### {title}\n\n{note} {machine_line()}\n\n```\n{commands}\n```\n\n"
        f"| parameters | steps | tokens seen | final val loss | best val loss | val perplexity | wall time |\n"
        f"|---|---|---|---|---|---|---|\n"
        f"| {result['parameters']:,} | {final['step']} | {final['tokens']:,} | {final['val_loss']:.4f} | "
        f"{result['best_val_loss']:.4f} | {final['perplexity']:.2f} | {result['wall_seconds']:.0f} s |\n\n"
        f"Validation: {scope(result)}. Sample (`--prompt {PROMPT!r}`, temperature 0.8):\n\n"
        f"```text\n{sample}\n```\n"
    )


def scope(result: dict) -> str:
    """Which validation tokens the loss covers."""
    if result["eval_batches"] == 0:
        return f"the whole validation split, {result['val_tokens']:,} tokens, each predicted once"
    covered = min(result["val_tokens"], result["eval_batches"] * result["batch_tokens"])
    return f"the first {covered:,} of the validation split's {result['val_tokens']:,} tokens (`--eval-batches`)"


def existing_pieces() -> dict[str, str]:
    """The pieces already in the section (``<!-- piece NAME -->`` ... ), so one piece can be re-run alone."""
    if not RESULTS.exists():
        return {}
    text = RESULTS.read_text(encoding="utf-8")
    if "<!-- BEGIN pretrain -->" not in text:
        return {}
    section = text.split("<!-- BEGIN pretrain -->", 1)[1].split("<!-- END pretrain -->", 1)[0]
    pieces = {}
    for chunk in section.split("<!-- piece ")[1:]:
        name, body = chunk.split(" -->", 1)
        pieces[name] = body.strip()
    return pieces


def main_benchmark() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["default", "nanogpt", "gru"], action="append",
                        help="run only this piece (repeatable); default: all three")
    parser.add_argument("--tinyshakespeare", metavar="PATH", help="the tiny Shakespeare text file (nanogpt, gru)")
    parser.add_argument("--runs", metavar="DIR", help="folder for the run folders (default: a new temporary one)")
    parser.add_argument("--smoke", action="store_true", help="tiny settings to check the script; writes nothing")
    args = parser.parse_args()
    pieces_to_run = args.only or ["default", "nanogpt", "gru"]
    runs = Path(args.runs or tempfile.mkdtemp(prefix="minipt-bench-"))
    print(f"run folders in {runs}", file=sys.stderr)
    smoke = SMOKE if args.smoke else []
    if args.tinyshakespeare is None and {"nanogpt", "gru"} & set(pieces_to_run):
        if not args.smoke:
            sys.exit("benchmarks/pretrain.py: --tinyshakespeare PATH is needed for the nanogpt and gru pieces")
        from minipt.data import load_corpus

        args.tinyshakespeare = str(runs / "smoke.txt")  # a stand-in for the smoke test only
        Path(args.tinyshakespeare).write_text(load_corpus("shakespeare")[:20000], encoding="utf-8")

    pieces = existing_pieces()
    if "default" in pieces_to_run:
        result = pretrain_and_sample("default", ["--corpus", "shakespeare", *smoke], runs)
        pieces["default"] = report(
            "Default settings: 2-layer Transformer, BPE 2000, on the built-in Shakespeare corpus (about 4 minutes)",
            result, "`minipt pretrain` with no settings beyond the corpus (every other value is a default).",
        )
    if "nanogpt" in pieces_to_run:
        argv = ["--corpus", args.tinyshakespeare, *NANOGPT, *NANOGPT_TRANSFORMER, *smoke]
        result = pretrain_and_sample("nanogpt", argv, runs)
        verdict = "meets" if result["final"]["val_loss"] <= 1.88 else "misses"
        pieces["nanogpt"] = report(
            "nanoGPT's CPU configuration on tiny Shakespeare (target: val loss <= 1.88)", result,
            f"nanoGPT reports val loss ~1.88 for this configuration; minipt {verdict} the target "
            f"({result['final']['val_loss']:.4f}).",
        )
    if "gru" in pieces_to_run:
        argv = ["--corpus", args.tinyshakespeare, *NANOGPT, *GRU, *smoke]
        result = pretrain_and_sample("gru", argv, runs)
        pieces["gru"] = report(
            "GRU language model, same data, steps, batch and block as the nanoGPT configuration", result,
            "Two GRU layers (embedding 128, hidden 256), for comparison with the Transformer above.",
        )

    order = [name for name in ("default", "nanogpt", "gru") if name in pieces]
    body = "\n\n".join(f"<!-- piece {name} -->\n{pieces[name]}" for name in order)
    markdown = f"## Pretraining (benchmarks/pretrain.py)\n\n{body}"
    if args.smoke:
        print(markdown)
    else:
        write_section("pretrain", markdown)
        print(markdown)


if __name__ == "__main__":
    main_benchmark()
