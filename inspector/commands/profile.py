"""``inspector profile validate|new|show|experts``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from inspector.commands.common import EXIT_OK, EXIT_USAGE
from inspector.profile import PIPELINES, ProfileError, check_profile, load_profile, new_profile
from inspector.settings import Settings

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profile", help="validate, create or show product profiles")
    psub = p.add_subparsers(dest="profile_command", metavar="ACTION", required=True)

    v = psub.add_parser("validate", help="check profile files and their reference shots")
    v.add_argument("paths", nargs="+", type=Path, help="profile folders or profile.yaml files")
    v.set_defaults(func=_validate)

    n = psub.add_parser("new", help="create a profile folder with defaults")
    n.add_argument("name")
    n.add_argument("--object", required=True, help="object name used in prompts (e.g. bottle)")
    n.add_argument("--pipeline", default=PIPELINES[0], choices=PIPELINES)
    n.add_argument("--dir", type=Path, default=None, help="profiles folder (default: from settings)")
    n.set_defaults(func=_new)

    s = psub.add_parser("show", help="print a profile as validated YAML")
    s.add_argument("path", type=Path)
    s.set_defaults(func=_show)

    x = psub.add_parser("experts", help="write the SAA+ expert profiles of MVTec-AD and VisA (27 folders)")
    x.add_argument("root", nargs="?", type=Path, default=None,
                   help="profiles folder (default: the packaged product_profiles/)")
    x.set_defaults(func=_experts)


def _known_models() -> dict[str, str] | None:
    """Model-store key -> kind, from the manifest the station loads weights by."""
    from inspector.models.store import ManifestError, default_manifest_path, load_manifest

    try:
        return {key: entry.kind for key, entry in load_manifest(default_manifest_path()).items()}
    except ManifestError as exc:
        print(f"warning: model keys not checked: {exc}", file=sys.stderr)
        return None


def required_kinds(pipeline: str) -> tuple[str, ...] | None:
    """The ``models.<kind>`` fields a pipeline's detector loads (None when its module cannot be imported)."""
    from inspector.detect import detector_class
    from inspector.profile import model_fields_read

    try:
        return model_fields_read(pipeline, detector_class(pipeline).required_models)
    except (ImportError, ValueError) as exc:
        log.warning("pipeline %s: cannot tell which models it needs: %s", pipeline, exc)
        return None


def _validate(args: argparse.Namespace) -> int:
    """Schema errors, then what would stop a run: every finding as ``file: field.path: reason``."""
    failed = 0
    known = _known_models()
    for path in args.paths:
        try:
            prof = load_profile(path, check_files=False)
        except ProfileError as exc:
            failed += 1
            for line in str(exc).splitlines():
                print(f"INVALID {line}", file=sys.stderr)
            continue
        source = f"{prof.folder.name}/profile.yaml" if prof.folder else str(path)
        problems = check_profile(prof, known_models=known,
                                 required_kinds=lambda pipeline=prof.pipeline: required_kinds(pipeline))
        errors = [p for p in problems if p.severity == "error"]
        for p in errors:
            print(f"INVALID {p.format(source)}", file=sys.stderr)
        for p in problems:
            if p.severity == "warning":
                print(f"WARNING {p.format(source)}", file=sys.stderr)
        if errors:
            failed += 1
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


def _experts(args: argparse.Namespace) -> int:
    """Write ``<root>/<dataset>_<category>/profile.yaml`` from the SAA+ expert tables; one path a line."""
    from inspector.detect.saa.experts import write_profiles
    from inspector.files import describe_os_error
    from inspector.settings import packaged_profiles_dir

    root = args.root if args.root is not None else packaged_profiles_dir()
    try:
        written = write_profiles(root)
    except OSError as exc:
        where = exc.filename or root
        print(f"error: cannot write the expert profiles under {root}: {where}: {describe_os_error(exc)}",
              file=sys.stderr)
        return EXIT_USAGE
    for path in written:
        print(path)
    log.info("wrote %d expert profiles under %s", len(written), root)
    return EXIT_OK
