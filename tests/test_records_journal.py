"""Issue 16 item 4: every decision is fsynced to a write-ahead journal before it is shown as saved."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import inspector.records as records_mod
from inspector.records import (
    RecordJournal,
    RecordKeeper,
    RecordsUnavailable,
    RecordStoreError,
    SqliteRecordStore,
    default_journal_path,
)
from inspector.settings import Settings
from tests.support.sqlite_connect import KeptConnection
from tests.test_records import make


def test_journal_is_written_and_fsynced_before_the_database(tmp_path: Path, monkeypatch) -> None:
    store = SqliteRecordStore(tmp_path / "r.sqlite")
    events: list[str] = []
    journal = RecordJournal(tmp_path / "second" / "j.journal")
    real_append, real_fsync = journal.append, os.fsync

    def store_append(rec):
        events.append("db")
        return SqliteRecordStore.append(store, rec)

    monkeypatch.setattr(store, "append", store_append)
    monkeypatch.setattr(records_mod.os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(journal, "append", lambda rec: (events.append("journal"), real_append(rec))[1])
    keeper = RecordKeeper(store, journal=journal)
    events.clear()
    stored = keeper.save(make(0))
    assert stored is not None and stored.id == 1
    assert events[:3] == ["journal", "fsync", "db"] or events.index("fsync") < events.index("db")
    assert [r.uid for r in journal.entries()[0]] == [stored.uid]
    store.close()


def test_journal_can_live_on_a_second_disk_from_the_settings(tmp_path: Path) -> None:
    second = tmp_path / "disk2" / "records.journal"
    settings = Settings(records_path=tmp_path / "disk1" / "r.sqlite", records_journal=second)
    keeper = RecordKeeper.for_settings(settings)
    keeper.save(make(0))
    assert keeper.journal is not None and keeper.journal.path == second
    assert second.is_file() and json.loads(second.read_text().splitlines()[0])["record"]["uid"]
    keeper.close()
    default = RecordKeeper.for_settings(Settings(records_path=tmp_path / "d" / "r.sqlite"))
    assert default.journal is not None and default.journal.path == default_journal_path(tmp_path / "d" / "r.sqlite")
    default.close()


def test_database_down_decisions_stay_in_the_journal_and_are_replayed_at_start(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite"
    kept = KeptConnection()
    store = SqliteRecordStore(db, connect=kept)
    keeper = RecordKeeper(store)
    keeper.save(make(0))
    kept.con.execute("PRAGMA query_only=ON")  # the database refuses writes
    pending = [make(i) for i in range(1, 4)]
    for rec in pending:
        assert keeper.save(rec) is None  # durable in the journal: shown as saved (journal only)
    assert "read-only" in (keeper.last_error or "")
    store.close()  # the station dies with three decisions not in the database
    store = SqliteRecordStore(db)
    keeper = RecordKeeper(store)  # next start: replay
    assert keeper.replayed == 3 and keeper.pending == []
    assert [r.uid for r in store.query()][1:] == [r.uid for r in pending]
    assert store.verify().ok
    assert keeper.journal is not None and keeper.journal.entries() == ([], [])  # emptied after replay
    keeper2 = RecordKeeper(store)  # replay is idempotent (dedup by uid)
    assert keeper2.replayed == 0 and store.count() == 4
    store.close()


def test_replay_dedups_by_uid_and_refuses_forged_lines(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite"
    store = SqliteRecordStore(db)
    journal = RecordJournal(default_journal_path(db))
    a, b = make(0), make(1)
    journal.append(a)
    store.append(a)  # already in the database
    journal.append(b)
    journal.append(b)  # the same decision twice
    forged = make(2).content()
    journal.close()
    with default_journal_path(db).open("a") as fh:
        fh.write(json.dumps({"record": forged, "mac": "0" * 64}) + "\n")
    keeper = RecordKeeper(store)
    assert keeper.replayed == 1
    assert [r.uid for r in store.query()] == [a.uid, b.uid]
    assert default_journal_path(db).is_file() and "mac" in default_journal_path(db).read_text()  # kept for review
    store.close()


def test_neither_location_writable_stops_accepting(tmp_path: Path) -> None:
    kept = KeptConnection()
    store = SqliteRecordStore(tmp_path / "r.sqlite", connect=kept)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    keeper = RecordKeeper(store, journal=RecordJournal(blocker / "j.journal"))  # ENOTDIR on write
    kept.con.execute("PRAGMA query_only=ON")
    rec = make(0)
    with pytest.raises(RecordsUnavailable, match="NOT saved.*journal.*database.*stops accepting"):
        keeper.save(rec)
    assert keeper.accepting is False
    assert keeper.pending == []  # nothing held only in memory
    assert keeper.probe() is False
    kept.con.execute("PRAGMA query_only=OFF")
    assert keeper.probe() is True
    assert keeper.save(make(1)) is not None  # the database alone is enough
    assert "database only" in (keeper.last_error or "")
    store.close()


def test_journal_alone_is_enough_when_the_database_cannot_open(tmp_path: Path) -> None:
    bad = tmp_path / "r.sqlite"
    bad.write_bytes(b"not sqlite at all" * 64)
    settings = Settings(records_path=bad, records_journal=tmp_path / "j.journal")
    keeper = RecordKeeper.for_settings(settings)
    assert keeper.store is None
    rec = make(0)
    assert keeper.save(rec) is None and keeper.pending == [rec]
    assert [r.uid for r in RecordJournal(tmp_path / "j.journal").entries()[0]] == [rec.uid]
    with pytest.raises(RecordStoreError):
        keeper._ensure_store()


_STATION = textwrap.dedent(
    """
    import sqlite3
    import sys
    from inspector.records import RecordKeeper, SqliteRecordStore, InspectionRecord
    opened = []
    def connect(*args, **kwargs):  # keep the store's own connection
        opened.append(sqlite3.connect(*args, **kwargs))
        return opened[-1]
    store = SqliteRecordStore(sys.argv[1], connect=connect)
    keeper = RecordKeeper(store)
    opened[0].execute("PRAGMA query_only=ON")  # database refusing writes: decisions only in the journal
    i = 0
    while True:
        rec = InspectionRecord(station_id="st", operator_id="op", profile_name="p", profile_version=1,
                               profile_hash="h", pipeline="variation", auto_verdict="PASS",
                               operator_verdict="PASS", note=str(i))
        keeper.save(rec)  # returns (None: journal only) or raises; only then is it shown as saved
        print(f"saved {rec.uid}", flush=True)
        i += 1
    """
)


def test_kill_9_with_decisions_pending_loses_none(tmp_path: Path) -> None:
    """The issue's reproduction: kill -9 with pending decisions lost all of them."""
    db = tmp_path / "records.sqlite"
    proc = subprocess.Popen([sys.executable, "-c", _STATION, str(db)], stdout=subprocess.PIPE, text=True)
    shown: list[str] = []
    try:
        while len(shown) < 5:
            line = proc.stdout.readline()
            assert line, "station exited early"
            shown.append(line.split()[1])
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    store = SqliteRecordStore(db)
    assert store.count() == 0
    keeper = RecordKeeper(store)
    stored = {r.uid for r in store.query()}
    assert set(shown) <= stored and keeper.replayed >= 5
    assert store.verify().ok
    store.close()


def test_torn_journal_lines_are_skipped_and_the_journal_still_empties(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite"
    store = SqliteRecordStore(db)
    jpath = default_journal_path(db)
    journal = RecordJournal(jpath)
    a = make(0)
    journal.append(a)
    journal.close()
    with jpath.open("ab") as fh:
        fh.write(b'{"record": {"station_id": "st1", "oper')  # a full disk stopped this line
    b = make(1)
    journal = RecordJournal(jpath)
    journal.append(b)  # starts on a new line
    journal.close()
    keeper = RecordKeeper(store)
    assert keeper.replayed == 2 and [r.uid for r in store.query()] == [a.uid, b.uid]
    assert jpath.read_bytes() == b""
    store.close()
