"""The ``minipt`` command line: one argparse sub-command per job, each a ``add_*_parser`` / ``run_*`` pair.

* ``minipt pretrain`` — :func:`minipt.pretrain.pretrain` (train a language model into a run folder);
* ``minipt generate`` — sample text from a pretraining run;
* ``minipt finetune`` — :func:`minipt.classify.finetune` (a classifier on a pretrained run, or more next-token
  training on new text with ``--task lm:FILE``);
* ``minipt evaluate`` — score a finetuning run's best checkpoint on a split;
* ``minipt demo`` — :func:`minipt.demo.run_demo` (pretrain, finetune and compare with a from-scratch control).

User mistakes (a bad flag value, a missing file) end in one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

from minipt import __version__

EXIT_USAGE = 2  # a user mistake: bad flag, missing file, bad config
EXIT_FAILED = 1  # the job itself failed (e.g. the loss diverged)


class CommandLineError(ValueError):
    """A mistake on the command line or in a ``--config`` file; the message names the flag, key or file."""


# ----------------------------------------------------------------------------------------------------------
# minipt pretrain
# ----------------------------------------------------------------------------------------------------------

PRETRAIN_HELP = {
    "model": "architecture: transformer or gru",
    "objective": "clm (next token), mlm (masked tokens, Transformer only) or mlm+nsp (MLM + next-sentence head)",
    "corpus": "'shakespeare' (built in, as printed), 'shakespeare-flat' (built in, each speech lower-cased on one "
    "line, as the classifiers read it) or the path of a UTF-8 text file",
    "tokenizer": "char or bpe",
    "bpe_vocab_size": "vocabulary size of the BPE tokenizer",
    "val_fraction": "the last fraction of the corpus's tokens held out for validation",
    "d_model": "Transformer width (and the GRU's embedding size)",
    "n_layers": "number of Transformer or GRU layers",
    "n_heads": "attention heads per Transformer layer",
    "d_ff": "hidden size of the Transformer's feed-forward block",
    "hidden_size": "GRU hidden state size",
    "dropout": "dropout probability",
    "steps": "optimizer steps",
    "batch_size": "sequences per batch",
    "block_size": "tokens per sequence (the context length)",
    "lr": "peak learning rate of AdamW",
    "warmup": "linear warmup steps before the cosine decay",
    "weight_decay": "AdamW weight decay (weight matrices only)",
    "grad_clip": "clip the global gradient norm to this value",
    "grad_accum": "micro-batches whose gradients are averaged per step",
    "eval_every": "evaluate (and save last.pt) every this many steps",
    "eval_batches": "cap on validation batches per evaluation (0: the whole validation split)",
    "seed": "random seed (same seed and settings give the same run)",
    "device": "auto (CUDA when present), cpu or cuda",
}


def add_pretrain_parser(subparsers: argparse._SubParsersAction) -> None:
    from minipt.pretrain import PretrainConfig

    parser = subparsers.add_parser(
        "pretrain",
        help="pretrain a language model into a run folder",
        description="Pretrain a Transformer or GRU language model. Settings come from the defaults, then "
        "--config FILE, then the flags given here. The run folder gets config.json, tokenizer.json, best.pt, "
        "last.pt, metrics.jsonl, loss.png and summary.json.",
    )
    parser.add_argument("--out", metavar="RUN_DIR", help="new (or empty) folder to write the run into")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last.pt")
    parser.add_argument(
        "--config", metavar="FILE", help="JSON or TOML file of settings, keys as the flags with underscores"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    defaults = PretrainConfig()
    for field in fields(PretrainConfig):
        default = getattr(defaults, field.name)
        parser.add_argument(
            "--" + field.name.replace("_", "-"),
            type=type(default),
            default=argparse.SUPPRESS,  # absent flags stay absent, so --config values are not overridden
            help=f"{PRETRAIN_HELP[field.name]} (default: {default})",
        )
    parser.set_defaults(run=run_pretrain)


def read_config_file(path: str) -> dict:
    """The settings of a JSON or TOML ``--config`` file; unknown keys are an error naming the key and file."""
    from minipt.pretrain import PretrainConfig

    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
        settings = tomllib.loads(text) if file.suffix == ".toml" else json.loads(text)
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise CommandLineError(f"--config {path}: cannot read it ({error})") from None
    if not isinstance(settings, dict):
        raise CommandLineError(f"--config {path}: expected a table of settings, got {type(settings).__name__}")
    allowed = PretrainConfig.setting_names() + ["out"]
    for key in settings:
        if key not in allowed:
            raise CommandLineError(f"--config {path}: unknown key {key!r} (known keys: {', '.join(allowed)})")
    defaults = PretrainConfig()
    for key, value in settings.items():
        expected = str if key == "out" else type(getattr(defaults, key))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            settings[key] = float(value)
        elif not isinstance(value, expected) or isinstance(value, bool):
            raise CommandLineError(f"--config {path}: key {key!r} must be a {expected.__name__}, got {value!r}")
    return settings


def run_pretrain(args: argparse.Namespace) -> int:
    from minipt.pretrain import PretrainConfig, flag, pretrain

    given = {key: value for key, value in vars(args).items() if key in PretrainConfig.setting_names()}
    if args.resume:
        extra = [flag(name) for name in sorted(set(given) - {"device"})]
        extra += [name for name, value in (("--config", args.config), ("--out", args.out)) if value]
        if extra:
            names = ", ".join(extra)
            raise CommandLineError(f"--resume continues a run with its saved config.json; do not also pass {names}")
        config = PretrainConfig(**given)
        run_dir = args.resume
    else:
        settings = read_config_file(args.config) if args.config else {}
        out = args.out or settings.pop("out", None)
        settings.pop("out", None)
        if out is None:
            raise CommandLineError("--out RUN_DIR is required (the folder the run is written into)")
        config = PretrainConfig(**{**settings, **given})
        run_dir = out
    print(f"minipt pretrain: writing the run into {run_dir}", flush=True)
    result = pretrain(config, run_dir, resume=bool(args.resume), progress=not args.quiet)
    print(
        f"minipt pretrain: done at step {result.step}; best val_loss {result.best_metric:.4f} "
        f"(step {result.best_step}); run folder {run_dir}"
    )
    return 0


# ----------------------------------------------------------------------------------------------------------
# minipt generate
# ----------------------------------------------------------------------------------------------------------


def add_generate_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="sample text from a pretrained run",
        description="Continue a prompt with a causal language model from a pretraining run (best.pt, or "
        "last.pt when there is no best).",
    )
    parser.add_argument("--from", dest="run_dir", metavar="RUN_DIR", required=True, help="the pretraining run folder")
    parser.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    parser.add_argument("--tokens", type=int, default=200, help="number of tokens to generate (default: 200)")
    parser.add_argument("--temperature", type=float, default=0.8, help="sampling temperature > 0 (default: 0.8)")
    parser.add_argument(
        "--top-k", type=int, default=None, help="sample among the k most likely tokens only (default: all)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed of the sampler (default: 0)")
    parser.add_argument("--device", default="cpu", help="auto, cpu or cuda (default: cpu)")
    parser.set_defaults(run=run_generate)


def run_generate(args: argparse.Namespace) -> int:
    import torch

    from minipt.pretrain import PretrainConfigError, load_run
    from minipt.train import resolve_device

    if args.tokens < 0:
        raise CommandLineError(f"--tokens must be >= 0, got {args.tokens}")
    device = resolve_device(args.device)
    model, tokenizer, saved = load_run(args.run_dir, device)
    if saved["pretrain"]["objective"] != "clm":
        raise PretrainConfigError(
            f"--from {args.run_dir}: that model was pretrained with --objective {saved['pretrain']['objective']} "
            "(a bidirectional encoder fills in masked tokens); generate needs a --objective clm run"
        )
    prompt_ids = tokenizer.encode(args.prompt)
    if not prompt_ids:
        raise CommandLineError("--prompt must contain at least one token")
    generator = torch.Generator(device=device).manual_seed(args.seed)
    idx = torch.tensor([prompt_ids], dtype=torch.long, device=device)  # (1, T)
    output = model.generate(idx, args.tokens, temperature=args.temperature, top_k=args.top_k, generator=generator)
    print(tokenizer.decode(output[0].tolist()))
    return 0


# ----------------------------------------------------------------------------------------------------------
# minipt finetune
# ----------------------------------------------------------------------------------------------------------

FINETUNE_HELP = {
    "task": "shakespeare-verse, shakespeare-genre, a labelled CSV/TSV/JSONL file, or lm:TEXT_FILE (more "
    "next-token training on new text)",
    "freeze": "embedding + this many lowest layers frozen: an integer, 'all' (a linear probe) or 'none'",
    "strategy": "plain, gradual (ULMFiT: unfreeze one more layer from the top in equal stages) or "
    "discriminative (each layer down learns at --lr-decay times the rate of the one above)",
    "epochs": "passes over the labelled training examples",
    "lr": "peak learning rate of AdamW",
    "batch_size": "examples per batch",
    "max_len": "tokens kept per example (0: the pretrained model's context length)",
    "pooling": "how the per-token vectors become one: mean, first or last",
    "dropout": "dropout before the classification head",
    "weight_decay": "AdamW weight decay (weight matrices only)",
    "lr_decay": "per-layer learning-rate factor of --strategy discriminative",
    "l2sp": "strength of the L2-SP penalty pulling pretrained weights toward their start (0: off)",
    "reinit_top": "re-initialise this many top layers before finetuning",
    "early_stopping": "stop after this many epochs without a better validation accuracy (0: never)",
    "train_examples": "use only this many labelled training examples, a stratified seeded sample (0: all)",
    "val_examples": "score only this many validation examples after each epoch, a stratified sample (0: all)",
    "seed": "random seed (same seed and settings give the same run)",
    "device": "auto (CUDA when present), cpu or cuda",
    "from_scratch": "random initialisation of the same architecture (the control; --from still names the run "
    "whose architecture and tokenizer are copied)",
    "balanced": "class-balanced batches: every class drawn equally often on average (against collapsing to the "
    "majority class when labels are few)",
    "select": "validation metric that picks best.pt: accuracy or macro_f1 (better on imbalanced tasks)",
}


def add_finetune_parser(subparsers: argparse._SubParsersAction) -> None:
    from minipt.classify import FinetuneConfig

    parser = subparsers.add_parser(
        "finetune",
        help="finetune a pretrained run on a classification task",
        description="Put a classification head on a pretrained language model and train it on a labelled task, "
        "with a freezing strategy. The run folder gets config.json, tokenizer.json, best.pt (best validation "
        "accuracy), last.pt, metrics.jsonl, loss.png, confusion.png, classification_report.txt and summary.json "
        "(test split scored with best.pt).",
    )
    parser.add_argument("--from", dest="from_run", metavar="RUN_DIR", required=True, help="the pretraining run folder")
    parser.add_argument("--out", metavar="RUN_DIR", required=True, help="new (or empty) folder to write the run into")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    defaults = FinetuneConfig(from_run="")
    for field in fields(FinetuneConfig):
        if field.name == "from_run":
            continue
        default = getattr(defaults, field.name)
        name = "--" + field.name.replace("_", "-")
        if isinstance(default, bool):
            parser.add_argument(name, action="store_true", help=FINETUNE_HELP[field.name])
        else:
            parser.add_argument(name, type=type(default), default=default,
                                help=f"{FINETUNE_HELP[field.name]} (default: {default})")
    parser.set_defaults(run=run_finetune)


def run_finetune(args: argparse.Namespace) -> int:
    from minipt.classify import FinetuneConfig, config_keys, finetune

    config = FinetuneConfig(**{key: getattr(args, key) for key in config_keys()})
    print(f"minipt finetune: writing the run into {args.out}", flush=True)
    summary = finetune(config, args.out, progress=not args.quiet)
    if "test_accuracy" in summary:
        print(
            f"minipt finetune: best val accuracy {summary['best_val_accuracy']:.4f} (step {summary['best_step']}); "
            f"test accuracy {summary['test_accuracy']:.4f}, macro-F1 {summary['test_macro_f1']:.4f} "
            f"(majority class {summary['majority_baseline']['accuracy']:.4f}); run folder {args.out}"
        )
    else:
        print(
            f"minipt finetune: validation loss {summary['val_loss_before']:.4f} -> {summary['best_val_loss']:.4f} "
            f"(perplexity {summary['perplexity_before']:.2f} -> {summary['perplexity_after']:.2f}); "
            f"run folder {args.out}"
        )
    return 0


# ----------------------------------------------------------------------------------------------------------
# minipt evaluate
# ----------------------------------------------------------------------------------------------------------


def add_evaluate_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score a finetuned run on a split",
        description="Score a finetuning run's best.pt on a split of its task (or of another task with the same "
        "labels) and print accuracy, macro-F1 and the per-class table.",
    )
    parser.add_argument("--from", dest="run_dir", metavar="RUN_DIR", required=True, help="the finetuning run folder")
    parser.add_argument("--task", default=None, help="task to score on (default: the one the run was trained on)")
    parser.add_argument("--split", choices=["train", "validation", "test"], default="test", help="(default: test)")
    parser.add_argument("--device", default="cpu", help="auto, cpu or cuda (default: cpu)")
    parser.set_defaults(run=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    from minipt.classify import evaluate_run

    result = evaluate_run(args.run_dir, task=args.task, split=args.split, device=args.device)
    print(f"{args.run_dir}: {args.split} split, {result['examples']} examples: accuracy {result['accuracy']:.4f}, "
          f"macro-F1 {result['macro_f1']:.4f}")
    print(result["report"])
    return 0


# ----------------------------------------------------------------------------------------------------------
# minipt demo
# ----------------------------------------------------------------------------------------------------------


def add_demo_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="pretrain, finetune and compare with a from-scratch model in about 5 minutes",
        description="Pretrain a small Transformer on Shakespeare (test plays held out), finetune it on "
        "shakespeare-verse with 200 labels and frozen lower layers, train the same architecture from scratch on "
        "the same labels, and compare them (and the majority class) in OUT/report.md.",
    )
    parser.add_argument("--out", default="demo", help="new (or empty) folder for the three runs and the report "
                        "(default: demo)")
    parser.add_argument("--minutes", type=float, default=5.0, help="rough time budget on a 2-core CPU (default: 5)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # seconds-long run for the tests
    parser.set_defaults(run=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from minipt.demo import run_demo as demo

    demo(args.out, minutes=args.minutes, tiny=args.tiny, device=args.device, progress=not args.quiet)
    return 0


# ----------------------------------------------------------------------------------------------------------
# The program
# ----------------------------------------------------------------------------------------------------------

SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    add_pretrain_parser, add_generate_parser, add_finetune_parser, add_evaluate_parser, add_demo_parser
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="minipt",
        description="Language-model pretraining and finetuning, written out by hand for learning.",
    )
    parser.add_argument("--version", action="version", version=f"minipt {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add_parser in SUBCOMMANDS:
        add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``minipt ARGS``; returns the exit status (0 ok, 1 the job failed, 2 a user mistake)."""
    from minipt.train import TrainingDivergedError

    parser = build_parser()
    args = parser.parse_args(argv)  # argparse itself exits with status 2 on an unknown flag or a bad type
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.run(args)
    except TrainingDivergedError as error:
        print(f"minipt {args.command}: error: {error}", file=sys.stderr)
        return EXIT_FAILED
    except ValueError as error:  # every minipt input error is a ValueError subclass with a one-line message
        print(f"minipt {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
