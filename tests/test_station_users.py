"""Local accounts: scrypt-hashed secrets, admin-only account management, failed logins logged."""

from __future__ import annotations

import hashlib
import json
import logging
import stat
from pathlib import Path

import pytest

from inspector.users import LoginError, User, UserError, UserStore, check_secret, hash_secret


def test_secret_is_stored_as_scrypt_and_checked(tmp_path: Path) -> None:
    stored = hash_secret("1234", n=1 << 10, r=8, p=1)
    algo, n, r, p, salt, key = stored.split("$")
    assert algo == "scrypt" and (n, r, p) == ("1024", "8", "1")
    # the key is exactly hashlib.scrypt of the secret with the stored salt (an independent recomputation)
    assert key == hashlib.scrypt(b"1234", salt=bytes.fromhex(salt), n=1024, r=8, p=1, dklen=32).hex()
    assert check_secret("1234", stored) and not check_secret("1235", stored) and not check_secret("1234", "x$y")


def test_first_admin_then_only_admins_create_accounts(tmp_path: Path) -> None:
    store = UserStore(tmp_path / "users.json")
    assert store.is_empty()
    root = store.create_first_admin("root", "9999")
    assert root == User("root", "admin") and root.can("manage_users")
    with pytest.raises(UserError, match="admin creates"):
        store.create_first_admin("mallory", "0000")
    ann = store.create(root, "ann", "operator", "1111")
    with pytest.raises(UserError, match="may not manage accounts"):
        store.create(ann, "bob", "operator", "2222")
    with pytest.raises(UserError, match="at least 4"):
        store.create(root, "bob", "operator", "12")
    with pytest.raises(UserError, match="role"):
        store.create(root, "bob", "boss", "2222")
    with pytest.raises(UserError, match="exists already"):
        store.create(root, "ann", "engineer", "2222")
    eve = store.create(root, "eve", "engineer", "5555")
    assert eve.can("engineer") and eve.can("reference_shots") and not eve.can("manage_users")
    assert not ann.can("engineer") and not ann.can("reference_shots") and ann.can("decide")
    # only the scrypt keys are stored: no other field, and each secret is scrypt$N$r$p$salt$key in hex (a
    # plain search for "1111" in the file is flaky: 64 random hex digits contain it about once in 1000 files)
    users = json.loads((tmp_path / "users.json").read_text())["users"]
    for name, entry in users.items():
        assert set(entry) == {"created", "created_by", "disabled", "role", "secret"}, name
        kind, n, r, p, salt, key = entry["secret"].split("$")
        assert (kind, n, r, p) == ("scrypt", "16384", "8", "1") and len(salt) == 32 and len(key) == 64
        int(salt, 16), int(key, 16)
    assert len({u["secret"] for u in users.values()}) == 3
    assert stat.S_IMODE((tmp_path / "users.json").stat().st_mode) == 0o600
    assert {u.name: u.role for u in store.users()} == {"ann": "operator", "eve": "engineer", "root": "admin"}


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_failed_logins_are_logged_and_disabled_accounts_refused(tmp_path: Path) -> None:
    store = UserStore(tmp_path / "users.json")
    root = store.create_first_admin("root", "9999")
    store.create(root, "ann", "operator", "1111")
    assert store.authenticate("ann", "1111") == User("ann", "operator")
    seen = _Records()  # a handler on the module's logger: independent of other tests' logging setup
    logger = logging.getLogger("inspector.users")
    logger.addHandler(seen)
    level, disabled = logger.level, logger.disabled
    logger.setLevel(logging.WARNING)
    logger.disabled = False
    try:
        with pytest.raises(LoginError, match="Wrong name or password"):
            store.authenticate("ann", "1112", station_id="st-9")
        with pytest.raises(LoginError, match="Wrong name or password"):
            store.authenticate("nobody", "1111", station_id="st-9")
    finally:
        logger.removeHandler(seen)
        logger.setLevel(level)
        logger.disabled = disabled
    assert sum("failed login" in m for m in seen.messages) == 2
    lines = [json.loads(x) for x in (tmp_path / "logins.log").read_text().splitlines()]
    assert [(x["name"], x["station"]) for x in lines] == [("ann", "st-9"), ("nobody", "st-9")]
    store.set_disabled(root, "ann", True)
    with pytest.raises(LoginError, match="Disabled"):
        store.authenticate("ann", "1111")
    with pytest.raises(UserError, match="own account"):
        store.set_disabled(root, "root", True)


def test_damaged_accounts_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "users.json"
    path.write_text("{not json")
    with pytest.raises(UserError, match="users.json: the accounts file is damaged"):
        UserStore(path).authenticate("ann", "1111")
