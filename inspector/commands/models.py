"""``inspector models list|verify|import|download``: the weight store from the command line.

Exit codes: 0 everything asked for is installed and intact; 1 something is missing, corrupt or
failed to transfer; 2 usage error (unknown key, bad path, broken settings or manifest).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from inspector.commands.common import EXIT_FAILED_INPUTS, EXIT_OK, UsageError
from inspector.models.store import (
    ManifestError,
    ModelStore,
    ModelStoreError,
    Progress,
    UnknownModelError,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list, verify, import or download model weights")
    p.add_argument("--model-dir", type=Path, default=None, help="store folder (default: settings model_dir)")
    p.add_argument("--manifest", type=Path, default=None,
                   help="a different models.yaml (e.g. a plant's own list; default: the packaged one)")
    msub = p.add_subparsers(dest="models_command", metavar="ACTION", required=True)

    ls = msub.add_parser("list", help="every known model with its status, size and licence")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(func=_list)

    v = msub.add_parser("verify", help="re-hash installed files; exit 1 if a required model is missing or corrupt")
    v.add_argument("keys", nargs="*", metavar="KEY", help="models that must be installed (default: check all)")
    v.add_argument("--profile", action="append", type=Path, default=[],
                   help="also require the models this profile's pipeline needs (repeatable)")
    v.add_argument("--quick", action="store_true", help="trust recorded digests of unchanged files")
    v.set_defaults(func=_verify)

    i = msub.add_parser("import", help="install weights from a bundle folder or .zip/.tar[.gz] (offline)")
    i.add_argument("path", type=Path, help="folder laid out as <key>/<file>, or flat files, or an archive")
    i.set_defaults(func=_import)

    d = msub.add_parser("download", help="download weights (resumes interrupted downloads)")
    d.add_argument("key", nargs="?", default=None, help="one model (and what it requires); default: all missing")
    d.add_argument("--base-url", default=None, help="mirror serving <base-url>/<key>/<file> instead of the sources")
    d.add_argument("--timeout", type=float, default=60.0, help="seconds without data before giving up")
    d.set_defaults(func=_download)


# ------------------------------------------------------------------------------------ helpers
def _store(args: argparse.Namespace) -> ModelStore:
    from inspector.settings import Settings, SettingsError

    try:
        root = args.model_dir if args.model_dir is not None else Settings.load().model_dir
        return ModelStore(root, manifest_path=args.manifest)
    except (SettingsError, ManifestError) as exc:
        raise UsageError(str(exc)) from exc


@contextmanager
def _bar(label: str) -> Iterator[Progress]:
    """A tqdm bar on stderr driven by the store's ``progress(fraction, message)`` callbacks."""
    from tqdm import tqdm

    steps = 1000
    bar = tqdm(total=steps, desc=label, file=sys.stderr, leave=False, dynamic_ncols=True,
               bar_format="{desc} {percentage:3.0f}%|{bar}| {elapsed}<{remaining}", mininterval=0.3,
               disable=None)  # None: no bar when stderr is not a terminal

    shown = {"message": label}

    def update(fraction: float, message: str) -> None:
        if bar.disable:
            return
        target = int(max(0.0, min(fraction, 1.0)) * steps)
        if message and message != shown["message"]:
            shown["message"] = message
            bar.set_description_str(message, refresh=False)
        if target > bar.n:
            bar.update(target - bar.n)

    try:
        yield update
    finally:
        bar.close()


def _fmt_mb(mb: float) -> str:
    return f"{mb / 1000:.1f} GB" if mb >= 1000 else f"{mb:.0f} MB"


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


# ------------------------------------------------------------------------------------ actions
def _list(args: argparse.Namespace) -> int:
    store = _store(args)
    rows, data = [], []
    for e in store.entries():
        status = store.status(e.key)
        size = store.installed_size_mb(e.key) if status != "missing" else e.size_mb
        shipped = store.is_packaged(e.key)
        rows.append([e.key, e.kind, e.arch, status, _fmt_mb(size), e.licence,
                     "shipped with the package" if shipped else ""])
        data.append({
            "key": e.key, "kind": e.kind, "arch": e.arch, "status": status, "size_mb": round(size, 1),
            "licence": e.licence, "files": e.files, "url": e.url, "shipped_with_package": shipped,
            "path": str(store.path(e.key) if shipped else store.root / e.key),
        })
    if getattr(args, "json", False):
        json.dump({"model_dir": str(store.root), "models": data}, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return EXIT_OK
    print(f"model store: {store.root}")
    print(_table(rows, ["KEY", "KIND", "ARCH", "STATUS", "SIZE", "LICENCE", "SOURCE"]))
    missing = [r[0] for r in rows if r[3] != "installed"]
    if missing:
        print(f"\n{len(missing)} not installed or corrupt; fix with `inspector models download KEY` "
              "or `inspector models import <bundle>`")
    return EXIT_OK


def _required_by_profile(store: ModelStore, path: Path) -> list[str]:
    from inspector.detect import detector_class
    from inspector.profile import ProfileError, load_profile

    try:
        profile = load_profile(path, check_files=False)
    except ProfileError as exc:
        raise UsageError(str(exc)) from exc
    try:
        kinds = detector_class(profile.pipeline).requires
    except (ImportError, ValueError) as exc:
        raise UsageError(f"{path}: pipeline {profile.pipeline!r} is not available in this build ({exc})") from exc
    keys = [getattr(profile.models, kind) for kind in kinds if getattr(profile.models, kind, None)]
    return keys


def _verify(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        required = list(args.keys)
        for prof in args.profile:
            required += _required_by_profile(store, prof)
        required = store.with_requirements(required)
    except UnknownModelError as exc:
        raise UsageError(str(exc)) from exc
    keys = required or [e.key for e in store.entries()]
    failed = False
    reports = []
    with _bar("verifying") as progress:
        for i, k in enumerate(keys):
            part = lambda f, m, i=i: progress((i + f) / len(keys), m)  # noqa: E731
            reports.append(store.verify(k, full=not args.quick, progress=part))
    for rep in reports:
        for key, status in rep.statuses.items():
            needed = key in required
            if status == "corrupt" or (needed and status == "missing"):
                failed = True
            mark = {"installed": "OK     ", "missing": "MISSING", "corrupt": "CORRUPT"}[status]
            print(f"{mark} {key}")
            if status != "missing" or needed:
                for c in rep.problems(key):
                    print(f"          {c.file}: {c.detail} ({c.path})")
    if failed:
        print("\nfix with `inspector models download KEY`, or `inspector models import <bundle>` offline",
              file=sys.stderr)
    return EXIT_FAILED_INPUTS if failed else EXIT_OK


def _import(args: argparse.Namespace) -> int:
    store = _store(args)
    if not args.path.exists():
        raise UsageError(f"{args.path}: no such folder or archive")
    try:
        with _bar("importing") as progress:
            keys = store.import_from(args.path, progress=progress)
    except (ModelStoreError, OSError) as exc:  # rejected files, unreadable archive, nothing recognised, disk full
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED_INPUTS
    for key in keys:
        print(f"{store.status(key):9} {key}")
    return EXIT_OK


def _download(args: argparse.Namespace) -> int:
    store = _store(args)
    if args.key is not None:
        try:
            store.entry(args.key)
        except UnknownModelError as exc:
            raise UsageError(str(exc)) from exc
    try:
        with _bar("downloading") as progress:
            keys = store.download(args.key, base_url=args.base_url, progress=progress, timeout=args.timeout)
    except (ModelStoreError, OSError) as exc:  # unreachable, interrupted (part kept), checksum, disk full
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED_INPUTS
    if not keys:
        print("nothing to download: every requested model is installed")
    for key in keys:
        print(f"{store.status(key):9} {key}")
    return EXIT_OK
