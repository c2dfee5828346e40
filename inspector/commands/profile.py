"""``inspector profile validate|new|show``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from inspector.cli import EXIT_OK, EXIT_USAGE
from inspector.profile import PIPELINES, ProfileError, load_profile, new_profile
from inspector.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profile", help="validate, create or show product profiles")
    psub = p.add_subparsers(dest="profile_command", metavar="ACTION", required=True)

    v = psub.add_parser("validate", help="check profile files and their reference shots")
    v.add_argument("paths", nargs="+", type=Path, help="profile folders or profile.yaml files")
    v.set_defaults(func=_validate)

    n = psub.add_parser("new", help="create a profile folder with defaults")
    n.add_argument("name")
    n.add_argument("--object", required=True, help="object name used in prompts (e.g. bottle)")
    n.add_argument("--pipeline", default="variation", choices=PIPELINES)
    n.add_argument("--dir", type=Path, default=None, help="profiles folder (default: from settings)")
    n.set_defaults(func=_new)

    s = psub.add_parser("show", help="print a profile as validated YAML")
    s.add_argument("path", type=Path)
    s.set_defaults(func=_show)


def _validate(args: argparse.Namespace) -> int:
    failed = 0
    for path in args.paths:
        try:
            prof = load_profile(path)
        except ProfileError as exc:
            failed += 1
            print(f"INVALID {exc}", file=sys.stderr)
        else:
            print(f"OK      {prof.name} v{prof.version} ({prof.pipeline}, {len(prof.reference_shots)} reference shots)")
    return EXIT_USAGE if failed else EXIT_OK


def _new(args: argparse.Namespace) -> int:
    folder = args.dir or Settings.load().default_profiles_dir()
    try:
        path = new_profile(args.name, args.object, args.pipeline, folder)
    except ProfileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"created {path}")
    return EXIT_OK


def _show(args: argparse.Namespace) -> int:
    import yaml

    try:
        prof = load_profile(args.path, check_files=False)
    except ProfileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    sys.stdout.write(yaml.safe_dump(prof.to_yaml_dict(), sort_keys=False))
    return EXIT_OK
