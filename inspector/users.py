"""Local station accounts: operator, engineer, admin; secrets stored with scrypt (Qt-free).

The accounts live in one JSON file (default ``<inspector home>/users.json``, written
atomically, mode 0600). A secret (password or numeric PIN) is stored as
``scrypt$<n>$<r>$<p>$<salt hex>$<key hex>`` and checked in constant time. Only an admin
creates, changes or disables accounts; the very first account of a station is created
without one and is always an admin. Every failed login is logged (``inspector.users``
logger, WARNING) and appended to ``logins.log`` beside the accounts file.

Rights per role (what the station's views ask with :meth:`User.can`):

=========== ========================================================
operator    decide parts, correct own shift's decisions
engineer    + Engineer tab, reference shots from the operator screen
admin       + manage accounts
=========== ========================================================
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from inspector.files import atomic_write

log = logging.getLogger(__name__)

ROLES = ("operator", "engineer", "admin")
RIGHTS: dict[str, frozenset[str]] = {
    "operator": frozenset({"decide"}),
    "engineer": frozenset({"decide", "engineer", "reference_shots"}),
    "admin": frozenset({"decide", "engineer", "reference_shots", "manage_users"}),
}
# scrypt cost: n=2**14, r=8, p=1 (16 MiB, ~50 ms): the interactive-login parameters of RFC 7914 §2
SCRYPT_N = 1 << 14
SCRYPT_R = 8
SCRYPT_P = 1
KEY_BYTES = 32
MIN_SECRET = 4  # a 4-digit PIN is the shortest secret accepted
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")


class UserError(ValueError):
    """An account cannot be created/changed: the message says which field and what to do."""


class LoginError(Exception):
    """Wrong name or secret (deliberately not saying which), or a disabled account."""


@dataclass(frozen=True)
class User:
    """Who is logged in at the station."""

    name: str
    role: str

    def can(self, right: str) -> bool:
        return right in RIGHTS.get(self.role, frozenset())


def hash_secret(secret: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    salt = secrets.token_bytes(16)
    key = hashlib.scrypt(secret.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=KEY_BYTES)
    return f"scrypt${n}${r}${p}${salt.hex()}${key.hex()}"


def check_secret(secret: str, stored: str) -> bool:
    try:
        algo, n, r, p, salt, key = stored.split("$")
        if algo != "scrypt":
            return False
        want = bytes.fromhex(key)
        got = hashlib.scrypt(secret.encode("utf-8"), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(want))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


def validate_name(name: str) -> str:
    n = name.strip()
    if not _NAME.match(n):
        raise UserError(f"user name {name!r}: use 1-64 letters, digits, '.', '_', '-' or '@' "
                        "(starting with a letter or digit)")
    return n


def validate_secret(secret: str) -> str:
    if len(secret) < MIN_SECRET:
        raise UserError(f"password / PIN: at least {MIN_SECRET} characters (a 4-digit PIN is fine)")
    if secret != secret.strip():
        raise UserError("password / PIN: no leading or trailing spaces")
    return secret


def default_users_path() -> Path:
    from inspector.settings import inspector_home

    return inspector_home() / "users.json"


class UserStore:
    """The station's accounts file (see the module docstring)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_users_path()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ file
    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise UserError(f"{self.path}: cannot read the accounts file ({exc})") from exc
        try:
            data = json.loads(raw)
            users = data["users"]
            if not isinstance(users, dict):
                raise TypeError("users is not an object")
        except (ValueError, KeyError, TypeError) as exc:
            raise UserError(f"{self.path}: the accounts file is damaged ({exc}); restore it from a backup "
                            "or move it away to create a new admin account") from exc
        return users

    def _write(self, users: dict[str, dict[str, Any]]) -> None:
        atomic_write(self.path, json.dumps({"version": 1, "users": users}, indent=2, sort_keys=True), mode=0o600)

    # ------------------------------------------------------------------ queries
    def names(self) -> list[str]:
        return sorted(self._read())

    def users(self) -> list[User]:
        return [User(n, u["role"]) for n, u in sorted(self._read().items())]

    def disabled_names(self) -> set[str]:
        return {n for n, u in self._read().items() if u.get("disabled")}

    def is_empty(self) -> bool:
        return not self._read()

    # ------------------------------------------------------------------ changes
    def create_first_admin(self, name: str, secret: str) -> User:
        """The station's first account (an admin); refused once any account exists."""
        with self._lock:
            users = self._read()
            if users:
                raise UserError("accounts exist already: an admin creates new ones")
            user = User(validate_name(name), "admin")
            users[user.name] = self._entry(user.role, validate_secret(secret), None)
            self._write(users)
        log.info("first admin account %s created", user.name)
        return user

    def create(self, by: User, name: str, role: str, secret: str) -> User:
        """An admin creates an account."""
        self._require_admin(by)
        if role not in ROLES:
            raise UserError(f"role {role!r}: choose one of {', '.join(ROLES)}")
        with self._lock:
            users = self._read()
            n = validate_name(name)
            if n in users:
                raise UserError(f"user {n} exists already; pick another name or change their secret")
            users[n] = self._entry(role, validate_secret(secret), by.name)
            self._write(users)
        log.info("user %s (%s) created by %s", n, role, by.name)
        return User(n, role)

    def set_secret(self, by: User, name: str, secret: str) -> None:
        if by.name != name:
            self._require_admin(by)
        with self._lock:
            users = self._read()
            if name not in users:
                raise UserError(f"no user {name!r}")
            users[name]["secret"] = hash_secret(validate_secret(secret))
            self._write(users)

    def set_disabled(self, by: User, name: str, disabled: bool) -> None:
        self._require_admin(by)
        if name == by.name and disabled:
            raise UserError("an admin cannot disable their own account")
        with self._lock:
            users = self._read()
            if name not in users:
                raise UserError(f"no user {name!r}")
            users[name]["disabled"] = bool(disabled)
            self._write(users)

    def authenticate(self, name: str, secret: str, station_id: str = "") -> User:
        """The user, or :class:`LoginError`; a failure is logged with the name tried."""
        entry = self._read().get(name.strip())
        ok = entry is not None and check_secret(secret, entry["secret"])
        if entry is None:
            check_secret(secret, _DUMMY)  # same time whether or not the name exists
        if not ok or entry is None or entry.get("disabled"):
            why = "disabled account" if ok else "wrong name or password/PIN"
            self._log_failure(name, why, station_id)
            raise LoginError("Disabled account: ask an admin." if ok else "Wrong name or password/PIN.")
        return User(name.strip(), entry["role"])

    # ------------------------------------------------------------------ internals
    @staticmethod
    def _entry(role: str, secret: str, by: str | None) -> dict[str, Any]:
        return {"role": role, "secret": hash_secret(secret), "created": datetime.now(UTC).isoformat(),
                "created_by": by, "disabled": False}

    @staticmethod
    def _require_admin(by: User) -> None:
        if not by.can("manage_users"):
            raise UserError(f"{by.name} ({by.role}) may not manage accounts: log in as an admin")

    def _log_failure(self, name: str, why: str, station_id: str) -> None:
        stamp = datetime.now(UTC).isoformat()
        log.warning("failed login at station %s for %r: %s", station_id or "?", name, why)
        line = json.dumps({"time": stamp, "station": station_id, "name": name, "result": why}) + "\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path.with_name("logins.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as fh:
                fh.write(line)
        except OSError as exc:
            log.error("failed login could not be written to %s: %s", self.path.with_name("logins.log"), exc)


_DUMMY = hash_secret("timing-equaliser")

__all__ = ["ROLES", "RIGHTS", "LoginError", "User", "UserError", "UserStore", "check_secret", "hash_secret"]
