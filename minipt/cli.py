"""The ``minipt`` command line: one argparse sub-command per job.

User mistakes (a bad flag value, a missing file) end in one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys

from minipt import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="minipt",
        description="Language-model pretraining and finetuning, written out by hand for learning.",
    )
    parser.add_argument("--version", action="version", version=f"minipt {__version__}")
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
