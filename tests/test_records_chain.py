"""Issue 16 item 3: a keyed chain anchored by signed checkpoints outside the database."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import shutil
import sqlite3
import subprocess
import sys
import types
from pathlib import Path

import pytest

from inspector.cli import main
from inspector.keys import station_key
from inspector.records import (
    GENESIS_HASH,
    SCHEMA_VERSION,
    Checkpoint,
    InspectionRecord,
    SqliteRecordStore,
    chain_hash,
    checkpoints_path,
    read_checkpoints,
    row_hash,
)
from tests.test_records import make

REPO = Path(__file__).resolve().parent.parent


def _store(path: Path, n: int, **kw) -> SqliteRecordStore:
    s = SqliteRecordStore(path, **kw)
    for i in range(n):
        s.append(make(i))
    return s


def _rewrite(db: Path, rid: int, key: bytes | None, **changes) -> None:
    """What an attacker does: drop the triggers, change a row, recompute every hash after it, fix meta."""
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    con.execute("DROP TRIGGER inspections_no_update")
    rows = [InspectionRecord.from_row(r) for r in con.execute("SELECT * FROM inspections ORDER BY id")]
    prev = GENESIS_HASH
    for rec in rows:
        if rec.id == rid:
            rec = dataclasses.replace(rec, **changes)
        rec.prev_hash = prev
        rec.row_hash = row_hash(prev, rec, key)
        sets = ", ".join(f"{k} = ?" for k in rec.to_row())
        con.execute(f"UPDATE inspections SET {sets} WHERE id = ?", (*rec.to_row().values(), rec.id))
        prev = rec.row_hash
    con.execute("UPDATE meta SET value = ? WHERE key = 'head'", (prev,))
    con.commit()
    con.close()


def test_chain_hash_is_a_keyed_pure_function() -> None:
    content = {"a": 1, "b": "x"}
    blob = GENESIS_HASH.encode() + b"\n" + b'{"a":1,"b":"x"}'
    assert chain_hash(b"k" * 32, GENESIS_HASH, content) == hmac.new(b"k" * 32, blob, hashlib.sha256).hexdigest()
    assert chain_hash(None, GENESIS_HASH, content) == hashlib.sha256(blob).hexdigest()
    assert chain_hash(b"k" * 32, GENESIS_HASH, content) != chain_hash(b"j" * 32, GENESIS_HASH, content)


def test_rows_are_keyed_with_the_station_key(tmp_path: Path) -> None:
    s = _store(tmp_path / "r.sqlite", 2)
    rows = s.query()
    s.close()
    key = station_key()
    assert rows[0].row_hash == chain_hash(key, GENESIS_HASH, rows[0].content())
    assert rows[1].prev_hash == rows[0].row_hash
    assert rows[0].row_hash != row_hash(GENESIS_HASH, rows[0], None)  # not the old unkeyed sha256


def test_rewrite_with_recomputed_unkeyed_hashes_is_detected(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite"
    _store(db, 4).close()
    _rewrite(db, 2, None, operator_verdict="PASS")  # FAIL -> PASS, the attack
    s = SqliteRecordStore(db, read_only=True)
    res = s.verify()
    s.close()
    assert not res.ok
    # every hash was recomputed without the key: none of them is the keyed one
    assert res.problems[0].startswith("rows 1..4: content does not match their hashes")


def test_rewrite_by_someone_holding_the_key_is_caught_by_checkpoints(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite"
    _store(db, 4).close()
    _rewrite(db, 3, station_key(), operator_verdict="PASS")  # a perfect chain, but not the signed one
    s = SqliteRecordStore(db, read_only=True)
    res = s.verify()
    s.close()
    assert not res.ok
    assert res.problems == [res.message]  # one line for the whole run of rewritten rows
    assert res.message.startswith("rows 3..4 differ from the signed checkpoint of ")
    assert "row 3 or one before it was rewritten" in res.message


def test_deleting_the_newest_rows_and_fixing_meta_is_detected(tmp_path: Path, capsys) -> None:
    db = tmp_path / "r.sqlite"
    s = _store(db, 5)
    head3 = s.query()[2].row_hash
    s.close()
    con = sqlite3.connect(db)
    con.execute("DROP TRIGGER inspections_no_delete")
    con.execute("DELETE FROM inspections WHERE id > 3")
    con.execute("UPDATE meta SET value = ? WHERE key = 'head'", (head3,))
    con.execute("UPDATE meta SET value = '3' WHERE key = 'count'")
    con.commit()
    con.close()
    assert main(["records", "verify", "--db", str(db)]) == 1
    err = capsys.readouterr().err
    assert "rows 4..5 missing: the signed checkpoint of" in err and "records 5 rows" in err


def test_restoring_an_older_copy_is_detected(tmp_path: Path, capsys) -> None:
    db = tmp_path / "r.sqlite"
    s = _store(db, 3)
    s.backup(tmp_path / "old.sqlite")
    s.append(make(3))
    s.append(make(4))
    s.close()
    shutil.copy(tmp_path / "old.sqlite", db)  # the older copy put back, the sidecar kept
    s = SqliteRecordStore(db, read_only=True)
    res = s.verify()
    s.close()
    assert not res.ok and "rows 4..5 missing" in res.message


def test_older_copy_with_its_older_checkpoints_is_caught_by_an_export(tmp_path: Path, capsys) -> None:
    db = tmp_path / "r.sqlite"
    s = _store(db, 3)
    s.backup(tmp_path / "old.sqlite")
    s.append(make(3))
    s.close()
    export = tmp_path / "audit.csv"
    assert main(["records", "export", "--db", str(db), "--out", str(export)]) == 0
    shutil.copy(tmp_path / "old.sqlite", db)
    shutil.copy(checkpoints_path(tmp_path / "old.sqlite"), checkpoints_path(db))
    assert main(["records", "verify", "--db", str(db)]) == 0  # consistent with its own (older) sidecar
    assert main(["records", "verify", "--db", str(db), "--checkpoints", str(export)]) == 1
    assert "rows 4..4 missing" in capsys.readouterr().err


def test_forged_checkpoint_is_reported(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite"
    s = _store(db, 2)
    s.close()
    forged = Checkpoint(2, "f" * 64, "2024-01-01T00:00:00.000000Z", "0" * 64)
    with checkpoints_path(db).open("a") as fh:
        fh.write(forged.to_json() + "\n")
    s = SqliteRecordStore(db, read_only=True)
    res = s.verify()
    s.close()
    assert not res.ok and "invalid signature (forged or edited)" in res.message


def test_checkpoint_is_written_and_fsynced_after_every_append(tmp_path: Path, monkeypatch) -> None:
    import inspector.records as records_mod

    synced: list[int] = []
    real = records_mod.os.fsync
    monkeypatch.setattr(records_mod.os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    db = tmp_path / "r.sqlite"
    s = _store(db, 3)
    s.close()
    cps, problems = read_checkpoints(checkpoints_path(db))
    assert problems == [] and [c.count for c in cps] == [1, 2, 3]
    assert all(c.valid(station_key()) for c in cps)
    assert len(synced) >= 3
    assert cps[-1].head == SqliteRecordStore(db, read_only=True).query()[-1].row_hash


def test_crash_between_commit_and_checkpoint_is_anchored_at_next_open(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite"
    s = _store(db, 3)
    s.close()
    side = checkpoints_path(db)
    lines = side.read_text().splitlines()
    side.write_text("\n".join(lines[:2]) + "\n" + lines[2][:20])  # checkpoint 3 torn by a crash
    s = SqliteRecordStore(db)  # station start
    s.close()
    r = SqliteRecordStore(db, read_only=True)
    res = r.verify()
    r.close()
    assert res.ok, res.message
    assert read_checkpoints(side)[0][-1].count == 3


def test_wrong_key_is_named(tmp_path: Path, capsys) -> None:
    db = tmp_path / "r.sqlite"
    _store(db, 1).close()
    other = tmp_path / "other.key"
    other.write_text("ab" * 32 + "\n")
    assert main(["records", "verify", "--db", str(db), "--key", str(other)]) == 1
    assert "keyed with station key" in capsys.readouterr().err


# ------------------------------------------------------------------ schema 1 → 2
def _old_records_module() -> types.ModuleType:
    """The schema-1 records module as released (from git), to write a real old database."""
    src = subprocess.run(["git", "-C", str(REPO), "show", "63dc11c:inspector/records.py"],
                         capture_output=True, text=True)
    if src.returncode != 0:
        pytest.skip("git history not available")
    mod = types.ModuleType("old_records")
    sys.modules["old_records"] = mod
    try:
        exec(compile(src.stdout, "old_records.py", "exec"), mod.__dict__)  # noqa: S102 - our own released code
    finally:
        del sys.modules["old_records"]
    return mod


def test_schema_1_database_is_read_only_verifiable_and_migrates(tmp_path: Path) -> None:
    old = _old_records_module()
    db = tmp_path / "old.sqlite"
    s = old.SqliteRecordStore(db)
    for i in range(3):
        s.append(old.InspectionRecord(**{k: v for k, v in make(i).content().items()
                                         if k in old.RECORD_FIELDS and k != "id"}))
    s.close()
    ro = SqliteRecordStore(db, read_only=True)
    res = ro.verify()
    assert res.ok and "never anchored" in res.message, res.message
    assert [r.imported for r in ro.query()] == [False] * 3
    ro.close()
    s = SqliteRecordStore(db)  # open for append: migrate
    new = s.append(make(3, role="operator"))
    s.close()
    con = sqlite3.connect(db)
    meta = dict(con.execute("SELECT key, value FROM meta"))
    con.close()
    assert meta["schema"] == str(SCHEMA_VERSION) and meta["keyed_from"] == "4"
    assert new.row_hash == chain_hash(station_key(), new.prev_hash, new.content())
    ro = SqliteRecordStore(db, read_only=True)
    res = ro.verify()
    ro.close()
    assert res.ok and "rows 1..3 use the unkeyed schema-1 chain" in res.message, res.message
    # the migration checkpoint anchors the old rows: rewriting one of them is now caught
    _rewrite_legacy(db, 2)
    ro = SqliteRecordStore(db, read_only=True)
    res = ro.verify()
    ro.close()
    assert not res.ok and any(p.startswith("row 3 differs from the signed checkpoint") for p in res.problems)
    assert "row 4: previous-hash link broken (a row before it was removed or altered)" in res.problems


def _rewrite_legacy(db: Path, rid: int) -> None:
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    con.execute("DROP TRIGGER inspections_no_update")
    rows = [InspectionRecord.from_row(r) for r in con.execute("SELECT * FROM inspections WHERE id <= 3 ORDER BY id")]
    prev = GENESIS_HASH
    for rec in rows:
        if rec.id == rid:
            rec.operator_verdict = "PASS"
        rec.prev_hash, rec.row_hash = prev, row_hash(prev, rec, None)
        con.execute("UPDATE inspections SET operator_verdict=?, prev_hash=?, row_hash=? WHERE id=?",
                    (rec.operator_verdict, rec.prev_hash, rec.row_hash, rec.id))
        prev = rec.row_hash
    con.commit()
    con.close()


def test_checkpoint_json_is_canonical() -> None:
    cp = Checkpoint.make(7, "a" * 64, b"k" * 32, time="2024-01-01T00:00:00.000000Z")
    payload = json.dumps({"count": 7, "head": "a" * 64, "time": "2024-01-01T00:00:00.000000Z"},
                         sort_keys=True, separators=(",", ":")).encode()
    assert cp.mac == hmac.new(b"k" * 32, payload, hashlib.sha256).hexdigest()
    assert Checkpoint.from_json(cp.to_json()) == cp and cp.valid(b"k" * 32) and not cp.valid(b"j" * 32)
