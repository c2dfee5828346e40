"""``inspector inspect``: filled in by its issue (see README)."""

from __future__ import annotations

import argparse
import sys

from inspector.cli import EXIT_USAGE


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="(not available yet)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print("inspector inspect: not available in this build", file=sys.stderr)
    return EXIT_USAGE
