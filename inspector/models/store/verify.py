"""Hashing and verify reports: digests of installed files, the keyed digest cache, the mismatch wording."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from inspector.models.store.manifest import CHUNK, ModelEntry

log = logging.getLogger("inspector.models.store")  # one logger for the whole store



Status = Literal["installed", "missing", "corrupt"]
FileState = Literal["ok", "missing", "corrupt"]


# ---------------------------------------------------------------------------------------- hashing
def git_blob_sha1_of(path: Path) -> str:
    """git's blob id of a file: sha1 over ``b"blob <size>\\0"`` + content (streamed)."""
    h = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _signature(st: os.stat_result) -> tuple[int, int, int, int]:
    """What ties a recorded digest to one file: size, mtime, inode and ctime.

    ctime cannot be set back by ``touch`` or ``os.utime``, so an edited file never matches its old
    record even when its size and mtime are restored."""
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


_RECORD_FIELDS = ("sha256", "size", "mtime_ns", "ino", "ctime_ns", "source")


def _record_mac(rel: str, rec: dict[str, Any]) -> str | None:
    """HMAC (station key) of an ``installed.json`` record, or None when the key is unavailable."""
    from inspector.keys import StationKeyError, sign

    blob = json.dumps([rel, *(rec.get(f) for f in _RECORD_FIELDS)], separators=(",", ":")).encode()
    try:
        return sign(b"inspector-installed-v2\0" + blob)
    except (StationKeyError, OSError) as exc:
        log.warning("station key unavailable (%s); weight digests are not cached", exc)
        return None


def _record_trusted(rel: str, rec: dict[str, Any] | None, sig: tuple[int, int, int, int]) -> bool:
    """A record may stand in for hashing: signed by this station and matching the file's signature."""
    import hmac

    if not isinstance(rec, dict) or not isinstance(rec.get("sha256"), str) or not isinstance(rec.get("mac"), str):
        return False
    if (rec.get("size"), rec.get("mtime_ns"), rec.get("ino"), rec.get("ctime_ns")) != sig:
        return False
    mac = _record_mac(rel, rec)
    return mac is not None and hmac.compare_digest(mac, rec["mac"])


def _short(digest: str | None) -> str:
    return (digest[:12] + "…") if digest and len(digest) > 12 else (digest or "?")


def _size_mismatch(entry: ModelEntry, file: str, size: int) -> str | None:
    """Why ``size`` is not the manifest's listed size for ``file``, or None (also None when none is listed)."""
    want = entry.file_bytes.get(file)
    if want is not None and size != want:
        return f"size {size} bytes, expected {want} (incomplete copy or download?)"
    return None


def _mismatch(
    entry: ModelEntry, file: str, size: int, sha: str | None, path: Path | None, git_sha1: str | None = None
) -> str | None:
    """Why the file does not match the manifest, or None. Hashes ``path`` for git ids if needed
    (unless ``git_sha1``, computed while streaming, is given)."""
    wrong_size = _size_mismatch(entry, file, size)
    if wrong_size is not None:
        return wrong_size
    if size == 0:
        return "empty file"
    exp = entry.sha256.get(file)
    if exp is not None and sha is not None and not sha.startswith(exp):
        kind = "sha256" if len(exp) == 64 else "sha256 prefix"
        return f"sha256 {_short(sha)} does not match the published {kind} {_short(exp)}"
    git = entry.git_blob_sha1.get(file)
    if git is not None:
        got = git_sha1 if git_sha1 is not None or path is None else git_blob_sha1_of(path)
        if got != git:
            return f"git blob id {_short(got)} does not match the published {_short(git)}"
    return None


# --------------------------------------------------------------------------------------- reports
@dataclass
class FileCheck:
    key: str
    file: str
    path: Path
    state: FileState
    detail: str = ""
    needed: bool = True
    """False for a missing alternative whose ``one_of`` group is satisfied by another file."""


@dataclass
class VerifyReport:
    """Per-file results of :meth:`ModelStore.verify` plus a status per key."""

    checks: list[FileCheck]
    statuses: dict[str, Status]

    def status(self, key: str) -> Status:
        return self.statuses[key]

    @property
    def corrupt_keys(self) -> list[str]:
        return [k for k, s in self.statuses.items() if s == "corrupt"]

    @property
    def missing_keys(self) -> list[str]:
        return [k for k, s in self.statuses.items() if s == "missing"]

    @property
    def ok(self) -> bool:
        """Every checked key installed and intact."""
        return all(s == "installed" for s in self.statuses.values())

    def problems(self, key: str | None = None) -> list[FileCheck]:
        return [c for c in self.checks if (key is None or c.key == key) and c.needed and c.state != "ok"]


def _entry_status(entry: ModelEntry, checks: dict[str, FileCheck]) -> Status:
    if any(c.state == "corrupt" for c in checks.values()):
        return "corrupt"
    ok = all(any(checks[f].state == "ok" for f in group) for group in entry.groups())
    return "installed" if ok else "missing"


def _mark_needed(entry: ModelEntry, checks: dict[str, FileCheck]) -> None:
    for group in entry.groups():
        if len(group) > 1 and any(checks[f].state == "ok" for f in group):
            for f in group:
                if checks[f].state == "missing":
                    checks[f].needed = False
