"""``python -m minipt`` is the same program as the ``minipt`` console script."""

from minipt.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
