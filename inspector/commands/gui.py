"""``inspector gui``: open the operator station (Qt is imported only when the window opens)."""

from __future__ import annotations

import argparse
import importlib
import sys

from inspector.commands.common import EXIT_USAGE, has_display

# the same as inspector.sources.SOURCE_KINDS (tests/test_pipelines.py), not imported: cv2 at start-up
SOURCE_KINDS = ("folder", "hot", "camera", "video", "genicam")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gui", help="open the operator station")
    p.add_argument("--profile", help="profile folder, its profile.yaml, or a profile name")
    p.add_argument("--source", help="image folder, video file, camera index or stream URL")
    p.add_argument("--source-kind", choices=SOURCE_KINDS, help="how to read --source (default: guessed)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not has_display():
        print("inspector gui: no display found (DISPLAY / WAYLAND_DISPLAY unset); "
              "run it on the station's desktop or set QT_QPA_PLATFORM", file=sys.stderr)
        return EXIT_USAGE
    app = importlib.import_module("inspector.ui.app")
    return int(app.run_station(profile=args.profile, source=args.source, source_kind=args.source_kind))
