"""The station's secret key: one per station, created at first use, never leaves the machine.

It keys everything whose integrity an auditor relies on: the records hash chain (HMAC), the
signed head checkpoints beside the database, and the detector caches (so that an edited
cache file is refused instead of silently changing a verdict).

Where it lives (first wins):

1. ``$INSPECTOR_KEY_FILE``;
2. ``station.key`` beside the settings file (``~/.config/inspector/station.key``).

The file holds 32 random bytes as hex, is created exclusively with mode 0600 (folder 0700)
whatever the umask, and is never rewritten once it exists.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from functools import lru_cache
from pathlib import Path

from .settings import config_path

KEY_BYTES = 32


class StationKeyError(RuntimeError):
    """The station key file exists but cannot be read or is malformed."""


def key_path() -> Path:
    env = os.environ.get("INSPECTOR_KEY_FILE")
    if env:
        return Path(env).expanduser()
    return config_path().parent / "station.key"


def _create(path: Path) -> bytes:
    missing = [p for p in (path.parent, *path.parent.parents) if not p.exists()]
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    for folder in missing:  # folders created here are 0700 whatever the umask
        try:
            os.chmod(folder, 0o700)
        except OSError:
            pass
    try:
        os.chmod(path.parent, 0o700)
    except OSError:
        pass
    key = secrets.token_bytes(KEY_BYTES)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except FileExistsError:
        return _read(path)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, key.hex().encode("ascii") + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    return key


def _read(path: Path) -> bytes:
    try:
        text = path.read_text(encoding="ascii").strip()
        key = bytes.fromhex(text)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise StationKeyError(
            f"{path}: station key unreadable or malformed ({exc}); restore it from the station's "
            "backup. Records signed with it cannot be verified without it."
        ) from exc
    if len(key) < 16:
        raise StationKeyError(f"{path}: station key too short ({len(key)} bytes); restore it from backup")
    return key


@lru_cache(maxsize=8)
def _load(path_str: str) -> bytes:
    path = Path(path_str)
    if path.exists():
        return _read(path)
    return _create(path)


def station_key(path: Path | None = None) -> bytes:
    """The station key (created on first call). Cached per path for the process."""
    return _load(str(path or key_path()))


def sign(data: bytes, key: bytes | None = None) -> str:
    """HMAC-SHA256 of ``data`` under the station key, as hex."""
    return hmac.new(key if key is not None else station_key(), data, hashlib.sha256).hexdigest()


def verify(data: bytes, mac: str, key: bytes | None = None) -> bool:
    """Constant-time check of a :func:`sign` value."""
    return hmac.compare_digest(sign(data, key), mac)


def existing_station_key(path: Path | None = None) -> bytes | None:
    """The station key if its file exists (never creates one), else ``None``.

    Read-only tools (``records verify`` on an auditor's machine) use this so that checking a
    copy never mints a new key that would make every signature look forged.
    """
    p = path or key_path()
    if not p.exists():
        return None
    return _load(str(p))


def key_id(key: bytes) -> str:
    """A short public fingerprint of a key (safe to store beside what it signs)."""
    return hmac.new(key, b"inspector-station-key-id", hashlib.sha256).hexdigest()[:16]
