"""Command line: ``inspector <command> ...`` (also ``python -m inspector``).

Each subcommand lives in ``inspector/commands/<name>.py`` and exposes ``register(subparsers)``,
which adds its parser and sets ``func`` to a ``run(args) -> int``. What the commands share (exit
codes, :class:`UsageError`, hub/profile helpers) is in :mod:`inspector.commands.common`.
Exit codes: 0 ok, 1 some inputs failed, 2 usage error (bad arguments, broken profile, missing
weights).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from inspector import __version__
from inspector.commands.common import EXIT_FAILED_INPUTS, EXIT_OK, EXIT_USAGE, UsageError

__all__ = ["COMMANDS", "EXIT_FAILED_INPUTS", "EXIT_OK", "EXIT_USAGE", "UsageError", "build_parser", "main"]

COMMANDS = ("gui", "demo", "inspect", "eval", "models", "profile", "records")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="inspector", description="Anomaly inspection station for factory QC.")
    parser.add_argument("--version", action="version", version=f"inspector {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"inspector.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Offline by construction: no library may reach a model hub at run time.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
