"""The ``minipt`` command line: one argparse sub-command per job, each a ``add_*_parser`` / ``run_*`` pair.

* ``minipt pretrain`` — :func:`minipt.pretrain.pretrain` (train a language model into a run folder, or train a
  pretrained one further on new text with ``--init-from RUN``);
* ``minipt generate`` — sample text from a pretraining run;
* ``minipt finetune`` — :func:`minipt.finetune.finetune` (a classifier on a pretrained run);
* ``minipt evaluate`` — score a finetuning run's best checkpoint on a split;
* ``minipt demo`` — :func:`minipt.jobs.demo.run_demo` (pretrain, finetune and compare with a from-scratch control);
* ``minipt list`` — the built-in corpora and tasks, with their sizes;
* ``minipt fill-mask`` — :func:`minipt.jobs.fill_mask.fill_mask_text` (a BERT folder's guesses for ``[MASK]``);
* ``minipt export`` — :func:`minipt.jobs.export.export_run` (a pretraining run as a Hugging Face folder).

The options of ``pretrain``, ``finetune`` and ``demo`` are generated from the fields of their config dataclasses
(:func:`add_settings`), so ``--help`` shows each setting's own help text and default.

User mistakes (a bad flag value, a missing file) end in one line on stderr and exit status 2, never a traceback
(under torchrun, rank 0 alone prints it). Ctrl-C (SIGINT) or SIGTERM ends a command with one line and status 130 or
143 (:mod:`minipt.training.interrupts`), from the first moment on; a training run stopped that way saves ``last.pt``
first, and the line says exactly what the run folder holds and how to continue it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import MISSING, fields
from pathlib import Path

from minipt import __version__
from minipt.errors import MiniptError, RankLostError, TrainingDivergedError
from minipt.jobs.job import DEMO, FINETUNE, PRETRAIN, Job
from minipt.runs.settings import DEVICES, MAX_SEED, flag, read_settings_file
from minipt.training import interrupts

EXIT_USAGE = 2  # a user mistake: bad flag, missing file, bad config
EXIT_FAILED = 1  # the job itself failed (e.g. the loss diverged)


def add_settings(parser: argparse.ArgumentParser, config_class: type) -> None:
    """One option per field of ``config_class``: its flag (and hidden older spellings), its help text and default.

    Absent options stay absent from the parsed arguments (``argparse.SUPPRESS``), so that the values of a
    ``--config`` file and the dataclass's defaults are not overridden by them.
    """
    for field in fields(config_class):
        meta = field.metadata
        shows_default = field.default not in (MISSING, "") and not isinstance(field.default, bool)
        help_text = meta["help"] + (f" (default: {field.default})" if shows_default else "")
        if meta.get("default_text") is not None:
            help_text = meta["help"] + meta["default_text"]
        options: dict = {"dest": field.name, "default": argparse.SUPPRESS}
        if isinstance(field.default, bool):  # a setting that is on by default gets a --no-... flag too
            options["action"] = argparse.BooleanOptionalAction if field.default else "store_true"
        else:
            options["type"] = str if field.default is MISSING else type(field.default)
            options["metavar"] = meta.get("metavar") or field.name.upper()
        parser.add_argument(flag(field), help=argparse.SUPPRESS if meta.get("hidden") else help_text, **options)
        for alias in meta.get("aliases", ()):
            parser.add_argument(alias, help=argparse.SUPPRESS, **options)


def given_settings(args: argparse.Namespace, config_class: type) -> dict:
    """The settings of ``config_class`` given on the command line."""
    names = {field.name for field in fields(config_class)}
    return {key: value for key, value in vars(args).items() if key in names}


def job_settings(args: argparse.Namespace, config_class: type) -> tuple[dict, str]:
    """A new run's settings — the ``--config`` file's, then the flags given (a flag beats the file) — and its
    ``--out`` folder (from the flag or the file)."""
    settings = read_settings_file(args.config, config_class, extra={"out": str}) if args.config else {}
    out = args.out or settings.get("out")
    settings.pop("out", None)
    if out is None:
        raise MiniptError("--out RUN_DIR is required (the folder the run is written into)")
    return {**settings, **given_settings(args, config_class)}, out


def resume_config(job: Job, args: argparse.Namespace, config_class: type, **placeholders: object) -> object:
    """The config of ``--resume RUN_DIR``: ``job`` says which of the flags given may be (how the run computes), and
    refuses the others, ``--out`` and ``--config`` among them, in one line."""
    run_options = [f"--{name}" for name in ("config", "out") if getattr(args, name, None)]
    return job.resume_config(config_class, given_settings(args, config_class), run_options, **placeholders)


def announce(command: str, run_dir: str) -> Callable[[], None]:
    """What a job calls once its run really starts (settings, folder and input files checked): the line naming the
    folder. A command refused before that prints only its error."""
    return lambda: print(f"minipt {command}: writing the run into {run_dir}", flush=True)


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """``--out``, ``--config`` and ``--quiet``: where a new run goes, a settings file, no progress bar."""
    parser.add_argument("--out", metavar="RUN_DIR", help="new (or empty) folder to write the run into")
    parser.add_argument(
        "--config", metavar="FILE", help="JSON or TOML file of settings, keys as the flags with underscores "
        "(and 'out'); a flag given here beats the file"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


# ----------------------------------------------------------------------------------------------------------
# minipt pretrain
# ----------------------------------------------------------------------------------------------------------


def add_pretrain_parser(subparsers: argparse._SubParsersAction) -> None:
    from minipt.jobs.pretrain import PretrainConfig

    parser = subparsers.add_parser(
        "pretrain",
        help="pretrain a language model into a run folder",
        description="Pretrain a Transformer or GRU language model, or train a pretrained one further on new text "
        "(--init-from). Settings come from the defaults, then --config FILE, then the flags given here. The run "
        "folder gets config.json, tokenizer.json, best.pt, last.pt, metrics.jsonl, loss.png and summary.json.",
    )
    add_run_options(parser)
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last.pt (with "
                        "--steps M: train until step M, e.g. further than a finished run went)")
    add_settings(parser, PretrainConfig)
    parser.set_defaults(run=run_pretrain)


def pretrain_config(args: argparse.Namespace) -> tuple[object, str]:
    """The config and run folder of ``minipt pretrain``: a resumed run takes its saved settings (only how to
    compute may change); a run from ``--init-from`` takes the architecture of that run."""
    from minipt.jobs.pretrain import PretrainConfig

    if args.resume:
        return resume_config(PRETRAIN, args, PretrainConfig), args.resume
    settings, out = job_settings(args, PretrainConfig)
    if settings.get("init_from"):
        fixed = [flag(field) for field in fields(PretrainConfig) if field.metadata["architecture"]
                 and field.name in settings]
        if fixed:
            raise MiniptError(f"--init-from takes the architecture and tokenizer from {settings['init_from']}; "
                              f"do not also pass {', '.join(fixed)}")
    return PretrainConfig(**settings), out


def run_pretrain(args: argparse.Namespace) -> int:
    from minipt.jobs.pretrain import pretrain

    config, run_dir = pretrain_config(args)
    steps = getattr(args, "steps", None) if args.resume else None  # a given --steps moves a resumed run's end
    result = pretrain(config, run_dir, resume=bool(args.resume), progress=not args.quiet, steps=steps,
                      on_start=announce("pretrain", run_dir))
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
    parser.add_argument("--from", dest="run_dir", metavar="RUN_DIR", required=True,
                        help="the pretraining run folder, or hf-gpt2:FOLDER (a Hugging Face GPT-2 folder)")
    parser.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    parser.add_argument("--tokens", type=int, default=200, help="number of tokens to generate (default: 200)")
    parser.add_argument("--temperature", type=float, default=0.8, help="sampling temperature > 0 (default: 0.8)")
    parser.add_argument(
        "--top-k", type=int, default=None, help="sample among the k most likely tokens only (default: all)"
    )
    parser.add_argument(
        "--top-p", type=float, default=None,
        help="sample among the most likely tokens that together hold probability p, 0 < p <= 1 (default: all)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed of the sampler (default: 0)")
    parser.add_argument("--device", default="cpu", choices=DEVICES, help="(default: cpu)")
    parser.set_defaults(run=run_generate)


SAMPLING_FLAGS = {"temperature": "--temperature", "top_k": "--top-k", "top_p": "--top-p", "greedy": "--top-k 1"}


def run_generate(args: argparse.Namespace) -> int:
    import torch

    from minipt.jobs.sources import load_pretrained
    from minipt.models.language_model import check_sampling_arguments
    from minipt.training.loop import resolve_device

    if args.tokens < 0:
        raise MiniptError(f"--tokens must be >= 0, got {args.tokens}")
    if not 0 <= args.seed <= MAX_SEED:
        raise MiniptError(f"--seed must be an integer from 0 to 2**63 - 1, got {args.seed}")
    device = resolve_device(args.device)
    model, tokenizer, saved = load_pretrained(args.run_dir, device)  # a run folder, or hf-gpt2:FOLDER
    check_sampling_arguments(args.temperature, args.top_k, tokenizer.vocab_size, args.top_p, names=SAMPLING_FLAGS)
    if saved["pretrain"]["objective"] != "clm":
        raise MiniptError(
            f"--from {args.run_dir}: that model was pretrained with --objective {saved['pretrain']['objective']} "
            "(a bidirectional encoder fills in masked tokens); generate needs a --objective clm run"
        )
    unknown = sorted({char for char in args.prompt if tokenizer.encode(char) == [tokenizer.unk_id]})
    if unknown:  # they would become <unk>, a token the model never read in training
        raise MiniptError(f"--prompt: {', '.join(map(repr, unknown))} not in the vocabulary of {args.run_dir} (its "
                          "corpus never had them); leave them out")
    prompt_ids = tokenizer.encode(args.prompt)
    if not prompt_ids:
        raise MiniptError("--prompt must contain at least one token")
    generator = torch.Generator(device=device).manual_seed(args.seed)
    idx = torch.tensor([prompt_ids], dtype=torch.long, device=device)  # (1, T)
    # <pad>, <unk>, <mask>, <cls> and <sep> are not text: never sampled. An end-of-text token (GPT-2's) may be:
    # it ends a document, as in the text the model was trained on (minipt's own tokenizers have none).
    end_of_text = getattr(tokenizer, "eos_id", None)
    suppress = tuple(token for token in tokenizer.special_ids if token != end_of_text)
    stream = TextStream(tokenizer)
    print(tokenizer.decode(prompt_ids), end="", flush=True)
    try:  # each token is printed as it comes; Ctrl-C keeps what was printed
        model.generate(idx, args.tokens, temperature=args.temperature, top_k=args.top_k, generator=generator,
                       suppress_tokens=suppress, top_p=args.top_p, on_token=stream.put)
    except interrupts.Interrupted as stop:
        stream.close()
        print(f"minipt generate: interrupted after {stream.tokens} of {args.tokens} tokens; the text above is what "
              "was generated", file=sys.stderr)
        return stop.exit_status
    stream.close()
    return 0


class TextStream:
    """Prints generated tokens as they come. A byte-level BPE token can hold half of a character's UTF-8 bytes;
    such a token waits (up to 4 tokens, the longest UTF-8 character) until its character is whole, so that the
    printed text is exactly ``tokenizer.decode`` of all the tokens."""

    def __init__(self, tokenizer: object) -> None:
        self.tokenizer, self.pending, self.tokens = tokenizer, [], 0

    def put(self, ids: object) -> None:
        """One step's draw ``(1, 1)``: decode what is pending and print it unless a character is cut."""
        self.tokens += 1
        self.pending.append(int(ids[0, 0]))
        text = self.tokenizer.decode(self.pending)
        if not text.endswith("\ufffd") or len(self.pending) >= 4:
            print(text, end="", flush=True)
            self.pending = []

    def close(self) -> None:
        """Print what is still pending and end the line."""
        print(self.tokenizer.decode(self.pending), flush=True)
        self.pending = []


# ----------------------------------------------------------------------------------------------------------
# minipt finetune
# ----------------------------------------------------------------------------------------------------------


def add_finetune_parser(subparsers: argparse._SubParsersAction) -> None:
    from minipt.jobs.finetune import FinetuneConfig

    parser = subparsers.add_parser(
        "finetune",
        help="finetune a pretrained run on a classification task",
        description="Put a classification head on a pretrained language model and train it on a labelled task, "
        "with a freezing strategy. Settings come from the defaults, then --config FILE, then the flags given here. "
        "The run folder gets config.json, tokenizer.json, best.pt (the best validation --select metric), last.pt, "
        "metrics.jsonl, loss.png, confusion.png, classification_report.txt and summary.json (test split scored "
        "with best.pt). More next-token training on new text is `minipt pretrain --init-from RUN_DIR`.",
    )
    add_run_options(parser)
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue the interrupted run in RUN_DIR from its "
                        "last.pt")
    add_settings(parser, FinetuneConfig)
    parser.set_defaults(run=run_finetune)


def run_finetune(args: argparse.Namespace) -> int:
    from minipt.jobs.finetune import FinetuneConfig, finetune

    if args.resume:  # --from comes from the run's config.json
        config, out = resume_config(FINETUNE, args, FinetuneConfig, from_run=""), args.resume
    else:
        settings, out = job_settings(args, FinetuneConfig)
        if "from_run" not in settings:
            raise MiniptError("--from RUN_DIR is required (the pretraining run to finetune)")
        config = FinetuneConfig(**settings)
    summary = finetune(config, out, progress=not args.quiet, resume=bool(args.resume),
                       on_start=announce("finetune", out))
    select = config.select
    print(
        f"minipt finetune: best val {select} {summary[f'best_val_{select}']:.4f} (step {summary['best_step']}); "
        f"test accuracy {summary['test_accuracy']:.4f}, macro-F1 {summary['test_macro_f1']:.4f} "
        f"(majority class {summary['majority_baseline']['accuracy']:.4f}); run folder {out}"
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
    parser.add_argument("--device", default="cpu", choices=DEVICES, help="(default: cpu)")
    parser.set_defaults(run=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    from minipt.jobs.finetune import evaluate_run

    result = evaluate_run(args.run_dir, task=args.task, split=args.split, device=args.device)
    print(f"{args.run_dir}: {args.split} split, {result['examples']} examples: accuracy {result['accuracy']:.4f}, "
          f"macro-F1 {result['macro_f1']:.4f}")
    print(result["report"])
    return 0


# ----------------------------------------------------------------------------------------------------------
# minipt demo
# ----------------------------------------------------------------------------------------------------------


def add_demo_parser(subparsers: argparse._SubParsersAction) -> None:
    from minipt.jobs.demo import DemoConfig

    parser = subparsers.add_parser(
        "demo",
        help="pretrain, finetune with frozen layers and compare with the controls, on the built-in task or yours",
        description="Pretrain a small Transformer and a GRU language model (on Shakespeare's plays for the built-in "
        "task; on --corpus, or the texts of the labelled file's train and validation splits, for --task FILE), "
        "finetune each with --labels labels and its embedding and lower layer frozen, train the same Transformer "
        "from scratch and a TF-IDF logistic regression on the same labels, every setting chosen on validation, and "
        "compare them (and the majority class) in OUT/report.md and OUT/report.png; --seeds N adds mean ± std and "
        "paired t-intervals.",
    )
    add_settings(parser, DemoConfig)
    parser.add_argument("--resume", metavar="DIR", help="continue the interrupted demo in DIR: its finished runs are "
                        "kept, the interrupted one continues from its last.pt, and the report is the same")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(run=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from minipt.jobs.demo import DemoConfig
    from minipt.jobs.demo import run_demo as demo

    if args.resume:
        config = resume_config(DEMO, args, DemoConfig, out=args.resume)
    else:
        config = DemoConfig(**given_settings(args, DemoConfig))
    demo(config, progress=not args.quiet, resume=bool(args.resume))
    return 0


# ----------------------------------------------------------------------------------------------------------
# minipt list
# ----------------------------------------------------------------------------------------------------------


def add_list_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "list",
        help="the built-in corpora (--corpus) and tasks (--task), with their sizes",
        description="List the built-in corpora that pretrain --corpus takes and the built-in tasks that finetune "
        "--task takes, with their sizes. A file of your own works in their place (see --help of each command).",
    )
    parser.set_defaults(run=run_list)


def run_list(args: argparse.Namespace) -> int:
    from minipt.data import CORPORA, TASKS, load_corpus, load_task

    print("corpora (minipt pretrain --corpus NAME; the test plays of the tasks held out):")
    for name in CORPORA:
        text = load_corpus(name)
        print(f"  {name:<20} {len(text):>10,} characters, {len(text.split()):>9,} words")
    print("tasks (minipt finetune --task NAME; split by play):")
    for name in TASKS:
        task = load_task(name)
        sizes = ", ".join(f"{split} {len(task.split(split)):,}" for split in ("train", "validation", "test"))
        print(f"  {name:<20} {len(task.labels)} labels ({', '.join(task.labels)}); {sizes} examples")
    return 0


# ----------------------------------------------------------------------------------------------------------
# minipt fill-mask
# ----------------------------------------------------------------------------------------------------------


def add_fill_mask_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "fill-mask",
        help="a BERT folder's most likely tokens for each [MASK] of a text",
        description="Encode a text as BERT reads it ([CLS] text [SEP]) and print, for each [MASK] in it, the most "
        "likely tokens of the folder's masked-LM head (cls.predictions), with their probabilities.",
    )
    parser.add_argument("--from", dest="source", metavar="hf-bert:FOLDER", required=True,
                        help="a BERT folder: config.json, model.safetensors or pytorch_model.bin, vocab.txt")
    parser.add_argument("--text", required=True, help='the text, with [MASK] where a token is missing')
    parser.add_argument("--top-k", type=int, default=5, help="tokens shown per mask (default: 5)")
    parser.set_defaults(run=run_fill_mask)


def run_fill_mask(args: argparse.Namespace) -> int:
    from minipt.jobs.fill_mask import fill_mask_text

    for number, guesses in enumerate(fill_mask_text(args.source, args.text, args.top_k), start=1):
        print(f"[MASK] {number}:")
        for token, index, probability in guesses:
            print(f"  {probability:.4f}  {token}  (id {index})")
    return 0


# ----------------------------------------------------------------------------------------------------------
# minipt export
# ----------------------------------------------------------------------------------------------------------


def add_export_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="write a pretraining run as a Hugging Face folder",
        description="Write a pretraining run's model and tokenizer as a folder that transformers' Auto classes "
        "and the tokenizers library load: a causal Transformer as GPT-2 (config.json, model.safetensors, "
        "tokenizer.json); a BERT folder read into minipt (hf-bert:FOLDER) as BERT again. A model with no Hugging "
        "Face equivalent is refused in one line.",
    )
    parser.add_argument("run_dir", metavar="RUN", help="the pretraining run folder, or hf-bert:FOLDER")
    parser.add_argument("--to", choices=["hf"], required=True, help="the format (hf: a Hugging Face folder)")
    parser.add_argument("folder", metavar="DIR", help="the new (or empty) folder to write")
    parser.set_defaults(run=run_export)


def run_export(args: argparse.Namespace) -> int:
    from minipt.jobs.export import export_run

    model_type = export_run(args.run_dir, args.folder)
    print(f"minipt export: {args.run_dir} written to {args.folder} as a Hugging Face {model_type} folder")
    return 0


# ----------------------------------------------------------------------------------------------------------
# The program
# ----------------------------------------------------------------------------------------------------------

SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    add_pretrain_parser, add_generate_parser, add_finetune_parser, add_evaluate_parser, add_demo_parser,
    add_list_parser, add_fill_mask_parser, add_export_parser,
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


def interrupted_message(stop: interrupts.Interrupted) -> str:
    """What an interrupted command tells: exactly what its run folder holds now, and how to continue."""
    run = stop.run_dir
    if run is None:
        return f"interrupted ({stop.name}); nothing was saved"
    if not (run / "last.pt").exists():
        kept = f"{run} was left empty" if run.exists() else "no run folder was kept"
        return f"interrupted ({stop.name}) before the first checkpoint; nothing to continue, so {kept}"
    resume = f"minipt {stop.job} --resume {run}"
    if stop.after_training and stop.job == "finetune":
        return (f"interrupted ({stop.name}) after the last training step, before the test split was scored; best.pt "
                f"and last.pt are saved; score it (report, summary.json) with: {resume}")
    if stop.after_training:
        return f"interrupted ({stop.name}) after the last step; the run is complete"
    if stop.saved:
        return f"interrupted at step {stop.step}; last.pt saved; continue with: {resume}"
    from minipt.training.checkpoint import load_checkpoint

    step = load_checkpoint(run / "last.pt", mmap=True)["loop"]["step"]
    return (f"interrupted ({stop.name}) a third time, so it stopped at once; last.pt holds step {step}; continue "
            f"with: {resume}")


def demo_interrupted_message(stop: interrupts.Interrupted, out: str) -> str:
    """What an interrupted demo tells: whether it kept anything, and how to continue it (not its runs one by one)."""
    if not any(Path(out).rglob("last.pt")):
        kept = f"{out} was left empty" if Path(out).exists() else "no demo folder was kept"
        return f"interrupted ({stop.name}) before the first checkpoint; nothing to continue, so {kept}"
    return (f"interrupted ({stop.name}); the finished runs and the last checkpoint are kept in {out}; continue the "
            f"demo with: minipt demo --resume {out}")


def report(line: str) -> None:
    """Print ``line`` on stderr; under torchrun only rank 0 does (every rank meets the same mistake, or the same
    Ctrl-C)."""
    if int(os.environ.get("WORLD_SIZE", "1")) == 1 or os.environ.get("RANK", "0") == "0":
        print(line, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run ``minipt ARGS``; returns the exit status (0 ok, 1 the job failed, 2 a user mistake, 130 or 143 Ctrl-C or
    SIGTERM)."""
    command = "minipt"
    try:
        with interrupts.signals_raise():  # first: Ctrl-C while torch is imported is one line too
            parser = build_parser()
            args = parser.parse_args(argv)  # argparse itself exits with status 2 on an unknown flag or a bad type
            if args.command is None:
                parser.print_help()
                return 0
            command = f"minipt {args.command}"
            from minipt.training import distributed

            with distributed.launched(args.command):  # one rank of a torchrun job (or nothing)
                return args.run(args)
    except interrupts.Interrupted as stop:  # Ctrl-C or SIGTERM: one line, no traceback, status 130 or 143
        if command == "minipt demo":
            from minipt.jobs.demo import DemoConfig  # imported already: the demo ran

            message = demo_interrupted_message(stop, args.resume or getattr(args, "out", None) or DemoConfig.out)
        else:
            message = interrupted_message(stop)
        report(f"{command}: {message}")
        return stop.exit_status
    except (TrainingDivergedError, RankLostError) as error:  # first: MiniptErrors too, but the job failed
        print(f"{command}: error: {error}", file=sys.stderr)  # every rank: each tells what it met
        return EXIT_FAILED
    except ValueError as error:  # every minipt input error is a MiniptError (a ValueError), one line long
        report(f"{command}: error: {error}")
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
