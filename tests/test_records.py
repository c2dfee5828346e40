"""Append-only records: hash chain, tamper detection, durability, failures kept pending, CLI."""

from __future__ import annotations

import csv
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from inspector.cli import main
from inspector.records import (
    GENESIS_HASH,
    InspectionRecord,
    RecordJournal,
    RecordKeeper,
    RecordQuery,
    RecordStoreError,
    SqliteRecordStore,
    accounted,
    counts,
    effective,
    export_csv,
)
from tests.support.sqlite_connect import KeptConnection


def make(i: int = 0, **kw) -> InspectionRecord:
    base = dict(
        station_id="st1", operator_id="ann", profile_name="demo_fabric", profile_version=2,
        profile_hash="ab" * 32, pipeline="variation", auto_verdict="FAIL", operator_verdict="FAIL",
        image_score=0.5 + i / 100, image_path=f"/img/{i:03d}.png", image_sha256=f"{i:064x}",
        model_keys=["clip:x"], reason="scratch", note="", duration_s=0.1, decision_s=1.5,
        timestamp=f"2024-05-0{1 + i % 3}T10:00:{i:02d}.000000Z",
    )
    base.update(kw)
    return InspectionRecord(**base)


@pytest.fixture
def kept() -> KeptConnection:
    """The store fixture's own connection (its ``connect`` factory), for faults SQLite keeps per connection."""
    return KeptConnection()


@pytest.fixture
def store(tmp_path: Path, kept: KeptConnection):
    s = SqliteRecordStore(tmp_path / "rec" / "records.sqlite", connect=kept)
    yield s
    s.close()


def test_append_builds_a_verifiable_chain(store: SqliteRecordStore) -> None:
    stored = [store.append(make(i)) for i in range(5)]
    assert [r.id for r in stored] == [1, 2, 3, 4, 5]
    assert stored[0].prev_hash == GENESIS_HASH
    assert all(b.prev_hash == a.row_hash for a, b in zip(stored, stored[1:], strict=False))
    res = store.verify()
    assert res.ok and res.rows == 5, res.message
    again = store.query()
    assert [r.row_hash for r in again] == [r.row_hash for r in stored]
    assert again[2].model_keys == ["clip:x"] and again[2].image_score == pytest.approx(0.52)


def test_wal_and_full_sync(tmp_path: Path) -> None:
    kept = KeptConnection(setup=["PRAGMA synchronous=OFF"])  # not SQLite's default FULL: the store must set it
    store = SqliteRecordStore(tmp_path / "r.sqlite", connect=kept)
    con = sqlite3.connect(store.path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()
    assert kept.con.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL, on the store's own connection
    store.close()


def test_connect_factory_opens_the_store_connection(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite"
    kept = KeptConnection()
    store = SqliteRecordStore(db, connect=kept)
    assert kept.database == db
    assert kept.kwargs == {"timeout": 10.0, "isolation_level": None, "check_same_thread": False}
    stored = store.append(make(0))
    assert [tuple(r) for r in kept.con.execute("SELECT uid FROM inspections")] == [(stored.uid,)]  # written through it
    store.close()
    ro = KeptConnection()
    reader = SqliteRecordStore(db, timeout_s=2.5, read_only=True, connect=ro)
    assert str(ro.database).startswith("file:") and "mode=ro" in str(ro.database)
    assert ro.kwargs == {"uri": True, "timeout": 2.5, "isolation_level": None, "check_same_thread": False}
    assert ro.con.execute("PRAGMA query_only").fetchone()[0] == 1
    assert [r.uid for r in reader.query()] == [stored.uid]
    reader.close()


def test_update_and_delete_are_refused(store: SqliteRecordStore) -> None:
    store.append(make(0))
    con = sqlite3.connect(store.path)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        con.execute("UPDATE inspections SET operator_verdict='PASS'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        con.execute("DELETE FROM inspections")
    con.close()


def _tamper(path: Path, sql: str) -> None:
    con = sqlite3.connect(path)
    con.execute("DROP TRIGGER inspections_no_update")
    con.execute("DROP TRIGGER inspections_no_delete")
    con.execute(sql)
    con.commit()
    con.close()


@pytest.mark.parametrize(
    "sql, bad",
    [
        ("UPDATE inspections SET operator_verdict='PASS' WHERE id=3", "row 3: content"),
        ("DELETE FROM inspections WHERE id=2", "row id 2 is missing"),
        ("DELETE FROM inspections WHERE id=4", "newest rows were removed"),
    ],
)
def test_verify_detects_tampering(tmp_path: Path, sql: str, bad: str) -> None:
    path = tmp_path / "r.sqlite"
    s = SqliteRecordStore(path)
    for i in range(4):
        s.append(make(i))
    s.close()
    _tamper(path, sql)
    s = SqliteRecordStore(path)
    res = s.verify()
    s.close()
    assert not res.ok
    assert bad in res.message


def test_query_filters(store: SqliteRecordStore) -> None:
    store.append(make(0, operator_id="ann", operator_verdict="PASS", auto_verdict="PASS", reason=None))
    store.append(make(1, operator_id="bob", profile_name="demo_washer"))
    store.append(make(2, operator_id="bob"))
    assert [r.id for r in store.query(RecordQuery(operator="bob"))] == [2, 3]
    assert [r.id for r in store.query(RecordQuery(profile="demo_washer"))] == [2]
    assert [r.id for r in store.query(RecordQuery(verdict="PASS"))] == [1]
    # timestamps are 05-01, 05-02, 05-03
    assert [r.id for r in store.query(RecordQuery(since="2024-05-02", until="2024-05-03"))] == [2]
    assert [r.id for r in store.query(RecordQuery(limit=2, newest_first=True))] == [3, 2]
    assert store.distinct("operator_id") == ["ann", "bob"]


def test_corrections_void_decisions_without_deleting(store: SqliteRecordStore) -> None:
    a = store.append(make(0))
    store.append(make(1, operator_verdict="PASS"))
    store.append(InspectionRecord(
        station_id="st1", operator_id="ann", profile_name="demo_fabric", profile_version=2, profile_hash="x",
        pipeline="variation", auto_verdict="FAIL", operator_verdict=None, kind="correction",
        corrects_uid=a.uid, reason="undo",
    ))
    rows = store.query()
    assert len(rows) == 3
    assert [r.id for r in effective(rows)] == [2]
    c = counts(rows)
    assert (c.decisions, c.passed, c.failed, c.overrides, c.corrections) == (1, 1, 0, 1, 1)
    assert store.verify().ok


def test_invalid_records_are_rejected() -> None:
    with pytest.raises(ValueError, match="operator_verdict"):
        make(0, operator_verdict="MAYBE")
    with pytest.raises(ValueError, match="corrects_uid"):
        make(0, kind="correction", operator_verdict=None)


def test_csv_export(store: SqliteRecordStore, tmp_path: Path) -> None:
    for i in range(3):
        store.append(make(i, note="has, comma"))
    out = tmp_path / "out" / "r.csv"
    assert export_csv(store.query(), out) == 3
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert [r["id"] for r in rows] == ["1", "2", "3"]
    assert rows[0]["note"] == "has, comma" and rows[0]["model_keys"] == "clip:x"
    assert rows[2]["row_hash"] == store.query()[2].row_hash


def test_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "records.sqlite"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(RecordStoreError, match="not a valid records database"):
        SqliteRecordStore(bad)


def test_read_only_database_keeps_decisions_pending_and_retries(store: SqliteRecordStore,
                                                               kept: KeptConnection) -> None:
    keeper = RecordKeeper(store)
    assert keeper.save(make(0)) is not None
    kept.con.execute("PRAGMA query_only=ON")  # the database refuses writes, as a read-only file does
    r1, r2 = make(1), make(2)
    assert keeper.save(r1) is None and keeper.save(r2) is None
    assert keeper.pending == [r1, r2]
    assert "read-only" in keeper.last_error
    kept.con.execute("PRAGMA query_only=OFF")
    assert keeper.retry() == 2
    assert keeper.pending == [] and keeper.last_error is None
    rows = store.query()
    assert [r.uid for r in rows] == [rows[0].uid, r1.uid, r2.uid]  # decision order kept
    assert store.verify().ok


def test_disk_full_keeps_decision_in_the_journal(store: SqliteRecordStore, kept: KeptConnection,
                                                 tmp_path: Path) -> None:
    store.append(make(0))
    pages = kept.con.execute("PRAGMA page_count").fetchone()[0]
    kept.con.execute(f"PRAGMA max_page_count={pages}")  # no room to grow: 'database or disk is full'
    keeper = RecordKeeper(store)
    big = make(1, note="x" * 20000)
    assert keeper.save(big) is None  # durable in the journal, not yet in the database
    assert "disk is full" in keeper.last_error
    assert [r.uid for r in keeper.journal.entries()[0]] == [big.uid]
    dump = keeper.dump_pending(tmp_path / "aside" / "pending.jsonl")
    assert [r.note for r in RecordJournal(dump).entries()[0]] == [big.note]
    kept.con.execute("PRAGMA max_page_count=1073741823")
    assert keeper.retry() == 1
    assert store.count() == 2
    assert store.verify().ok


def test_new_kinds_and_fields_round_trip(store: SqliteRecordStore) -> None:
    d = store.append(make(0, role="engineer", detector_state_sha256="cd" * 32))
    store.append(make(1, kind="no_read", operator_verdict=None, auto_verdict=None, reason="image unreadable"))
    store.append(make(2, kind="skipped", operator_verdict=None, reason="operator skipped"))
    nd = store.append(make(3, kind="not_decided", operator_verdict=None, reason="shift ended"))
    store.append(make(4, kind="correction", operator_verdict=None, corrects_uid=nd.uid, reason="undo"))
    rows = store.query()
    assert rows[0].role == "engineer" and rows[0].detector_state_sha256 == "cd" * 32
    assert rows[0].imported is False and rows[1].kind == "no_read" and rows[1].reason == "image unreadable"
    assert [r.uid for r in effective(rows)] == [d.uid]  # only decisions stand as decisions
    assert [r.kind for r in accounted(rows)] == ["decision", "no_read", "skipped"]  # not_decided voided
    c = counts(rows)
    assert (c.decisions, c.no_read, c.skipped, c.not_decided, c.corrections) == (1, 1, 1, 0, 1)
    assert store.verify().ok


@pytest.mark.parametrize("kw, msg", [
    (dict(kind="no_read", operator_verdict=None, reason=""), "needs a reason"),
    (dict(kind="skipped", operator_verdict="PASS", reason="x"), "no operator_verdict"),
    (dict(role="boss"), "role must be"),
    (dict(imported=True), "original chain"),
    (dict(kind="bogus"), "kind must be"),
])
def test_new_fields_are_validated(kw: dict, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        make(0, **kw)


_WRITER = textwrap.dedent(
    """
    import sys, time
    from inspector.records import SqliteRecordStore, InspectionRecord
    store = SqliteRecordStore(sys.argv[1])
    i = 0
    while True:
        rec = store.append(InspectionRecord(
            station_id="st", operator_id="op", profile_name="p", profile_version=1, profile_hash="h",
            pipeline="variation", auto_verdict="PASS", operator_verdict="PASS", note=str(i)))
        print(f"saved {rec.uid}", flush=True)  # what the station shows only after append returns
        i += 1
        if i >= 5:
            time.sleep(0.05)
    """
)


def test_sigkill_after_saved_loses_nothing(tmp_path: Path) -> None:
    db = tmp_path / "records.sqlite"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(db)], stdout=subprocess.PIPE, text=True)
    shown = []
    try:
        while len(shown) < 8:
            line = proc.stdout.readline()
            assert line, "writer exited early"
            shown.append(line.split()[1])
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    store = SqliteRecordStore(db)
    stored = {r.uid for r in store.query()}
    res = store.verify()
    store.close()
    assert set(shown) <= stored
    assert res.ok, res.message


def test_cli_list_export_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "r.sqlite"
    s = SqliteRecordStore(db)
    for i in range(3):
        s.append(make(i))
    s.close()
    assert main(["records", "verify", "--db", str(db)]) == 0
    assert "3 rows, hash chain intact" in capsys.readouterr().out
    assert main(["records", "list", "--db", str(db), "--verdict", "FAIL"]) == 0
    out = capsys.readouterr().out
    assert "3 standing decisions" in out and "000.png" in out
    csv_path = tmp_path / "x.csv"
    assert main(["records", "export", "--db", str(db), "--since", "2024-05-02T00:00Z", "--out", str(csv_path)]) == 0
    rows = list(csv.DictReader(csv_path.open()))
    assert [r["id"] for r in rows] == ["2", "3", "#checkpoint"]  # the signed head is the last row
    assert main(["records", "list", "--db", str(db), "--since", "not a date"]) == 2
    assert "cannot read the date" in capsys.readouterr().err
    _tamper(db, "UPDATE inspections SET image_score=0 WHERE id=1")
    assert main(["records", "verify", "--db", str(db)]) == 1
    assert "row 1" in capsys.readouterr().err
    assert main(["records", "list", "--db", str(tmp_path / "missing.sqlite")]) == 2


def test_local_time_is_the_one_record_time_formatter(monkeypatch: pytest.MonkeyPatch) -> None:
    import time as _time

    from inspector.records import local_time

    monkeypatch.setenv("TZ", "Asia/Kolkata")  # UTC+05:30, no daylight saving
    _time.tzset()
    try:
        assert local_time("2026-01-02T03:04:05.123456Z") == "2026-01-02 08:34:05"
        assert local_time("not a timestamp") == "not a timestamp"
    finally:
        monkeypatch.undo()
        _time.tzset()
