"""``python -m minipt`` and the ``minipt`` console script: :func:`minipt.cli.main`, started so that a Ctrl-C
during the first moments, while Python is still importing minipt, ends with one line and status 130 too (from
then on :func:`minipt.cli.main` catches it)."""

import sys


def main() -> int:
    try:
        from minipt.cli import main as run
    except KeyboardInterrupt:  # before minipt's own handlers are in place: nothing has started yet
        print("minipt: interrupted while starting; nothing was done", file=sys.stderr)
        return 130
    return run()


if __name__ == "__main__":
    raise SystemExit(main())
