"""Bundle manifest: versions and sha256 of every file in an offline installer bundle.

Standard library only: it runs before anything is installed (``install.sh`` calls it with the
site's bare Python) and on the build machine (``build_bundle``, ``verify_bundle``).

``MANIFEST.json`` layout::

    {"format": 1, "inspector_version": "0.1.0", "created_utc": "...", "python": "3.11",
     "platform": "linux_x86_64", "with_weights": true,
     "files": {"wheelhouse/torch-....whl": {"sha256": "...", "size": 123}, ...}}

Every regular file below the bundle root is listed except ``MANIFEST.json`` itself; nothing is
ignored, so a file that appears after the build (a ``__pycache__`` folder, an editor backup) makes
the check fail. Neither this module nor ``verify_bundle`` writes into the bundle.

Command line (used by ``verify_bundle`` and ``install.sh``)::

    bundle_manifest.py BUNDLE [--quick]                 verify (exit 0 OK, 1 problems, 2 usage)
    bundle_manifest.py space BUNDLE PREFIX HOME [--upgrade]
                                                        enough free disk for the install? (exit 0/1)
    bundle_manifest.py glibc BUNDLE                     this machine's glibc new enough? (exit 0/1)
    bundle_manifest.py meta BUNDLE FIELD                print one manifest field (lists: one a line)
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

MANIFEST_NAME = "MANIFEST.json"
FORMAT_VERSION = 1
REQUIRED_PARTS = ("wheelhouse", "install.sh", "uninstall.sh", "bundle_manifest.py", "constraints.txt")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def iter_files(root: Path) -> list[Path]:
    out = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            if p.relative_to(root).as_posix() == MANIFEST_NAME:
                continue
            out.append(p)
    return sorted(out, key=lambda p: p.relative_to(root).as_posix())


def build_manifest(root: Path, **meta: object) -> dict:
    files = {}
    for p in iter_files(root):
        rel = p.relative_to(root).as_posix()
        files[rel] = {"sha256": sha256_file(p), "size": p.stat().st_size}
    return {"format": FORMAT_VERSION, **meta, "files": files}


def write_manifest(root: Path, **meta: object) -> Path:
    manifest = build_manifest(root, **meta)
    path = root / MANIFEST_NAME
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


@dataclass
class VerifyReport:
    root: Path
    problems: list[str] = field(default_factory=list)
    checked: int = 0
    meta: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        head = f"bundle {self.root}: {'OK' if self.ok else 'FAILED'} ({self.checked} files checked)"
        return "\n".join([head, *(f"  - {p}" for p in self.problems)])


def verify_bundle(root: Path, full: bool = True) -> VerifyReport:
    """Check a bundle against its manifest: every listed file present with the right size and
    sha256 (``full``), no unlisted files, and the required parts present."""
    root = Path(root)
    report = VerifyReport(root)
    mpath = root / MANIFEST_NAME
    if not mpath.is_file():
        report.problems.append(f"{MANIFEST_NAME} missing: this folder is not a complete bundle; rebuild it")
        return report
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
        files = manifest["files"]
    except (ValueError, KeyError, TypeError) as exc:
        report.problems.append(f"{MANIFEST_NAME} unreadable ({exc}); rebuild the bundle")
        return report
    if manifest.get("format") != FORMAT_VERSION:
        report.problems.append(f"{MANIFEST_NAME}: format {manifest.get('format')!r} not supported (expected {FORMAT_VERSION})")
    report.meta = {k: v for k, v in manifest.items() if k != "files"}
    for part in REQUIRED_PARTS:
        if not (root / part).exists():
            report.problems.append(f"required part {part!r} missing")
    listed = set(files)
    present = {p.relative_to(root).as_posix() for p in iter_files(root)}
    for rel in sorted(listed - present):
        report.problems.append(f"{rel}: listed in the manifest but missing (incomplete copy?)")
    for rel in sorted(present - listed):
        report.problems.append(f"{rel}: not listed in the manifest (added after the build?)")
    for rel in sorted(listed & present):
        info = files[rel]
        p = root / rel
        report.checked += 1
        if p.stat().st_size != info.get("size"):
            report.problems.append(f"{rel}: size {p.stat().st_size} != {info.get('size')} (truncated or altered)")
            continue
        if full and sha256_file(p) != info.get("sha256"):
            report.problems.append(f"{rel}: sha256 mismatch (file altered or corrupted)")
    if not any(rel.startswith("wheelhouse/inspector-") for rel in listed):
        report.problems.append("wheelhouse has no inspector wheel")
    return report


# ------------------------------------------------------------------ install-time checks
# An installed environment takes about 2.1x its wheels (unpacked, plus bytecode); with margin:
ENV_FACTOR = 2.3
ENV_MARGIN_BYTES = 300 * 2**20


def read_manifest(root: Path) -> dict:
    return json.loads((Path(root) / MANIFEST_NAME).read_text(encoding="utf-8"))


def _existing(path: Path) -> Path:
    p = Path(os.path.abspath(path))
    while not p.exists():
        p = p.parent
    return p


def space_needed(manifest: dict, upgrade: bool) -> tuple[int, int]:
    """(bytes for the environment, bytes for the weights) an install of this bundle needs.

    An upgrade in place replaces one package at a time, so it needs room for the largest one."""
    wheels = [int(i["size"]) for rel, i in manifest["files"].items() if rel.startswith("wheelhouse/")]
    weights = sum(int(i["size"]) for rel, i in manifest["files"].items() if rel.startswith("models/"))
    env = int((max(wheels, default=0) if upgrade else sum(wheels)) * ENV_FACTOR) + ENV_MARGIN_BYTES
    return env, weights


def check_space(root: Path, prefix: Path, home: Path, upgrade: bool = False) -> list[str]:
    """Problems (empty = enough room) for installing the environment below ``prefix`` and the
    weights into ``home``'s model store; both on one filesystem add up."""
    env, weights = space_needed(read_manifest(root), upgrade)
    need: dict[int, tuple[Path, int]] = {}
    for path, nbytes in ((prefix, env), (home, weights)):
        base = _existing(path)
        dev = os.stat(base).st_dev
        where, total = need.get(dev, (base, 0))
        need[dev] = (where, total + nbytes)
    problems = []
    for where, nbytes in need.values():
        free = shutil.disk_usage(where).free
        if free < nbytes:
            problems.append(f"{where}: {free / 2**30:.1f} GB free, the install needs about {nbytes / 2**30:.1f} GB "
                            "(environment + model weights); free space or choose another --prefix/--home")
    return problems


def glibc_version() -> tuple[int, ...] | None:
    lib, ver = platform.libc_ver()
    if lib != "glibc" or not ver:
        return None
    return tuple(int(x) for x in ver.split(".")[:2])


def check_glibc(manifest: dict) -> list[str]:
    want = manifest.get("glibc_min")
    if not want:
        return []
    need = tuple(int(x) for x in str(want).split("."))
    have = glibc_version()
    wheels = ", ".join(manifest.get("glibc_min_wheels", [])[:3]) or "some wheels"
    if have is None:
        return [f"this system's C library is not glibc; the bundle's wheels ({wheels}) need glibc >= {want}"]
    if have < need:
        return [f"this system has glibc {'.'.join(map(str, have))}, but the bundle's wheels need glibc >= {want} "
                f"({wheels}); use a newer OS release (e.g. Debian 12, Ubuntu 22.04) or a bundle built for this one"]
    return []


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    usage = ("usage: bundle_manifest.py BUNDLE_DIR [--quick] | space BUNDLE PREFIX HOME [--upgrade] "
             "| glibc BUNDLE | meta BUNDLE FIELD")
    if not args:
        print(usage, file=sys.stderr)
        return 2
    cmd = args[0]
    try:
        if cmd == "space" and len(args) in (4, 5):
            problems = check_space(Path(args[1]), Path(args[2]), Path(args[3]), upgrade="--upgrade" in args[4:])
        elif cmd == "glibc" and len(args) == 2:
            problems = check_glibc(read_manifest(Path(args[1])))
        elif cmd == "meta" and len(args) == 3:
            value = read_manifest(Path(args[1])).get(args[2])
            if isinstance(value, list):
                if value:  # an empty list prints nothing (not one empty line)
                    print("\n".join(map(str, value)))
            elif value is not None:
                print(value)
            return 0
        elif cmd in ("space", "glibc", "meta"):
            print(usage, file=sys.stderr)
            return 2
        else:
            report = verify_bundle(Path(cmd), full="--quick" not in args)
            print(report.summary())
            return 0 if report.ok else 1
    except (OSError, ValueError, KeyError) as exc:
        print(f"{MANIFEST_NAME} unreadable ({exc}); copy the bundle again", file=sys.stderr)
        return 1
    for p in problems:
        print(p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
