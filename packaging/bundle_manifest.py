"""Bundle manifest: versions and sha256 of every file in an offline installer bundle.

Standard library only: it runs before anything is installed (``install.sh`` calls it with the
site's bare Python) and on the build machine (``build_bundle``, ``verify_bundle``).

``MANIFEST.json`` layout::

    {"format": 1, "inspector_version": "0.1.0", "created_utc": "...", "python": "3.11",
     "platform": "linux_x86_64", "with_weights": true,
     "files": {"wheelhouse/torch-....whl": {"sha256": "...", "size": 123}, ...}}

Every regular file below the bundle root is listed except ``MANIFEST.json`` itself.
"""

from __future__ import annotations

import hashlib
import json
import os
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


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: bundle_manifest.py BUNDLE_DIR [--quick]", file=sys.stderr)
        return 2
    report = verify_bundle(Path(args[0]), full="--quick" not in args)
    print(report.summary())
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
