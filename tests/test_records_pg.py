"""PostgreSQL record store against a real PostgreSQL server on 127.0.0.1 (started here from the
Debian package's binaries; skipped only when they are not installed)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.servers import Postgres, pg_bindir, require

pytestmark = require(pg_bindir() is not None, "PostgreSQL server (package 'postgresql')")
psycopg = pytest.importorskip("psycopg", reason="psycopg missing: install the 'plant' extra")

from inspector.records import InspectionRecord, RecordJournal, RecordKeeper, RecordStoreError, open_store  # noqa: E402
from inspector.records_pg import PostgresRecordStore, init_schema  # noqa: E402

KEY_A = bytes(range(32))
KEY_B = bytes(range(1, 33))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    pg = Postgres(tmp_path_factory.mktemp("pg")).init().start()
    yield pg
    pg.remove()


@pytest.fixture
def db(server: Postgres) -> dict[str, str]:
    """A fresh database with the schema and roles: admin, station and QA URLs."""
    name = "t_" + uuid.uuid4().hex[:10]
    with psycopg.connect(server.url(), autocommit=True) as con:
        con.execute(f"CREATE DATABASE {name}")
    admin = server.url(dbname=name)
    res = init_schema(admin, station_password="st-pw", reader_password="qa-pw")
    assert res.station_url == server.url("inspector_station", "st-pw", name)
    return {"admin": admin, "station": res.station_url, "reader": res.reader_url}


def _rec(station: str, i: int, verdict: str = "PASS", **kw: object) -> InspectionRecord:
    base = dict(station_id=station, operator_id="op", profile_name="demo_pcb", profile_version=2, profile_hash="ph",
                pipeline="variation", auto_verdict="PASS", operator_verdict=verdict, image_score=i / 7,
                uid=f"{station}-{i:04d}", timestamp=f"2026-03-02T0{i % 10}:00:00.000000Z")
    base.update(kw)
    return InspectionRecord(**base)  # type: ignore[arg-type]


def _independent_chain(key: bytes, rows: list[InspectionRecord]) -> list[str]:
    """HMAC-SHA256(key, prev + '\\n' + canonical JSON of every field but prev/row hash), computed here."""
    prev, out = "0" * 64, []
    for r in rows:
        content = {k: v for k, v in r.to_json().items() if k not in ("prev_hash", "row_hash")}
        blob = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
        prev = hmac.new(key, prev.encode() + b"\n" + blob, hashlib.sha256).hexdigest()
        out.append(prev)
    return out


def test_one_keyed_chain_per_station_and_dedup_by_uid(db: dict[str, str]) -> None:
    a = PostgresRecordStore(db["station"], key=KEY_A, station_id="A")
    b = PostgresRecordStore(db["station"], key=KEY_B, station_id="B")
    for i in range(4):
        a.append(_rec("A", i, "FAIL" if i == 2 else "PASS"))
        b.append(_rec("B", i))
    again = a.append(_rec("A", 1))  # a replayed journal entry: same uid
    assert again.id == 2 and a.count() == 8 and a.count("A") == 4
    rows_a = a.query()
    assert [r.station_id for r in rows_a] == ["A", "B"] * 4  # arrival order across stations
    chain_a = [r for r in rows_a if r.station_id == "A"]
    chain_b = [r for r in rows_a if r.station_id == "B"]
    assert [r.id for r in chain_a] == [1, 2, 3, 4] and [r.id for r in chain_b] == [1, 2, 3, 4]
    assert [r.row_hash for r in chain_a] == _independent_chain(KEY_A, chain_a)
    assert [r.row_hash for r in chain_b] == _independent_chain(KEY_B, chain_b)
    assert chain_a[2].operator_verdict == "FAIL" and chain_a[2].image_score == pytest.approx(2 / 7)
    audit = PostgresRecordStore(db["reader"], keys={"A": KEY_A, "B": KEY_B}, read_only=True)
    res = audit.verify()
    assert res.ok, res.problems
    assert "8 rows from 2 station(s)" in res.message and "not checked" not in res.message
    assert audit.distinct("station_id") == ["A", "B"]
    own = PostgresRecordStore(db["reader"], key=KEY_A, station_id="A", read_only=True).verify()
    assert own.ok and "keyed hashes not checked for B" in own.message
    wrong = PostgresRecordStore(db["reader"], keys={"A": KEY_B}, read_only=True).verify()
    assert not wrong.ok and "keyed with station key" in wrong.problems[0]
    with pytest.raises(RecordStoreError, match="read-only"):
        audit.append(_rec("C", 0))
    for s in (a, b, audit):
        s.close()


def test_append_only_enforced_by_roles_and_triggers(db: dict[str, str]) -> None:
    store = PostgresRecordStore(db["station"], key=KEY_A, station_id="A")
    store.append(_rec("A", 0))
    store.close()
    with psycopg.connect(db["station"], autocommit=True) as con:
        for sql in ("UPDATE inspector.inspections SET operator_verdict = 'FAIL'", "DELETE FROM inspector.inspections",
                    "TRUNCATE inspector.inspections", "UPDATE inspector.chain_heads SET count = 0"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                con.execute(sql)
        # a row that does not continue the chain is refused by the trigger, even for the writer role
        with pytest.raises(psycopg.errors.RaiseException, match="does not continue the chain"):
            con.execute("INSERT INTO inspector.inspections (station_id, id, uid, prev_hash, row_hash, operator_id, "
                        "profile_name, profile_version, profile_hash, pipeline, kind, timestamp) VALUES "
                        "('A', 2, 'x', 'bad', 'bad', 'op', 'p', 1, 'h', 'variation', 'decision', 't')")
    with psycopg.connect(db["reader"], autocommit=True) as con:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            con.execute("INSERT INTO inspector.stations(station_id, key_id) VALUES ('Z', 'k')")
    with psycopg.connect(db["admin"], autocommit=True) as con:  # the owner too
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            con.execute("UPDATE inspector.inspections SET note = 'x'")
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            con.execute("DELETE FROM inspector.inspections")
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            con.execute("TRUNCATE inspector.inspections")


def test_verify_finds_rows_changed_or_removed_around_the_triggers(db: dict[str, str], tmp_path: Path) -> None:
    store = PostgresRecordStore(db["station"], key=KEY_A, station_id="A", checkpoints=tmp_path / "pg.checkpoints")
    for i in range(5):
        store.append(_rec("A", i))
    assert store.verify().ok and store.verify().checkpoints == 5
    with psycopg.connect(db["admin"], autocommit=True) as con:  # a superuser going around the triggers
        con.execute("ALTER TABLE inspector.inspections DISABLE TRIGGER USER")
        con.execute("UPDATE inspector.inspections SET operator_verdict = 'FAIL' WHERE id = 2")
    res = store.verify()
    assert not res.ok and res.problems == ["station A: row 2: content does not match its keyed hash (altered)"]
    assert res.bad_id == 2
    with psycopg.connect(db["admin"], autocommit=True) as con:
        con.execute("UPDATE inspector.inspections SET operator_verdict = 'PASS' WHERE id = 2")
        con.execute("DELETE FROM inspector.inspections WHERE id = 5")
    res = store.verify()
    assert not res.ok
    assert any("recorded chain head is row 5, the table ends at row 4" in p for p in res.problems)
    assert any("rows 5..5 missing: the signed checkpoint" in p for p in res.problems)
    store.close()


def test_store_and_forward_while_the_server_is_down(db: dict[str, str], server: Postgres, tmp_path: Path) -> None:
    store = PostgresRecordStore(db["station"], key=KEY_A, station_id="A", connect_timeout_s=1, retry_connect_s=1.0)
    keeper = RecordKeeper(store, journal=RecordJournal(tmp_path / "pg.journal", key=KEY_A))
    assert keeper.save(_rec("A", 0)) is not None
    server.stop()
    try:
        t0 = time.perf_counter()
        for i in range(1, 6):
            assert keeper.save(_rec("A", i)) is None  # journaled (durable), not yet on the server
        assert time.perf_counter() - t0 < 10
        assert keeper.backlog == 5 and keeper.accepting
        assert "server is unreachable" in (keeper.last_error or "")
        assert "next attempt in" in (keeper.last_error or "")  # no reconnect storm: one try per retry_connect_s
    finally:
        server.start()
    time.sleep(1.05)  # past the 1 s connect back-off
    assert keeper.retry() == 5 and keeper.backlog == 0
    assert [r.uid for r in store.query()] == [f"A-{i:04d}" for i in range(6)]  # in order
    keeper.close()
    # a restart replays the whole journal: every uid is there already, nothing is duplicated
    store2 = PostgresRecordStore(db["station"], key=KEY_A, station_id="A")
    again = RecordKeeper(store2, journal=RecordJournal(tmp_path / "pg.journal", key=KEY_A))
    assert again.backlog == 0 and store2.count() == 6
    assert store2.verify().ok
    again.close()


def test_open_store_routes_urls_and_explains_failures(db: dict[str, str], server: Postgres) -> None:
    store = open_store(db["reader"], read_only=True)
    assert isinstance(store, PostgresRecordStore) and "qa-pw" not in store.location
    assert store.query() == []
    store.close()
    bad = PostgresRecordStore(f"postgresql://inspector_station:st-pw@127.0.0.1:{server.port}/nosuchdb", key=KEY_A)
    with pytest.raises(RecordStoreError, match="cannot connect") as exc:
        bad.append(_rec("A", 0))
    assert "st-pw" not in str(exc.value)
    with psycopg.connect(server.url(), autocommit=True) as con:
        con.execute("CREATE DATABASE empty_for_schema_test") if not con.execute(
            "SELECT 1 FROM pg_database WHERE datname = 'empty_for_schema_test'").fetchone() else None
    empty = PostgresRecordStore(server.url(dbname="empty_for_schema_test"), key=KEY_A)
    with pytest.raises(RecordStoreError, match="init-postgres"):
        empty.query()


def test_cli_init_list_verify_export_report(server: Postgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from inspector.cli import main
    from inspector.keys import station_key
    from inspector.settings import Settings

    monkeypatch.setenv("INSPECTOR_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("INSPECTOR_CONFIG", str(tmp_path / "home" / "settings.yaml"))
    monkeypatch.setenv("INSPECTOR_KEY_FILE", str(tmp_path / "home" / "station.key"))
    name = "cli_" + uuid.uuid4().hex[:8]
    with psycopg.connect(server.url(), autocommit=True) as con:
        con.execute(f"CREATE DATABASE {name}")
    admin = server.url(dbname=name)
    assert main(["records", "init-postgres", admin, "--station-user", "st_cli", "--station-password", "pw1",
                 "--reader-user", "qa_cli", "--reader-password", "pw2"]) == 0
    out = capsys.readouterr().out
    station_url, reader_url = server.url("st_cli", "pw1", name), server.url("qa_cli", "pw2", name)
    assert f"stations (records_url): {station_url}" in out and f"QA reports: {reader_url}" in out
    assert main(["records", "init-postgres", admin, "--station-user", "st_cli", "--reader-user", ""]) == 0  # idempotent
    assert "role st_cli exists; its password is unchanged" in capsys.readouterr().out
    me = Settings.load().station_id
    store = PostgresRecordStore(station_url, key=station_key(), station_id=me)
    store.append(_rec(me, 1, timestamp="2026-03-02T07:00:00.000000Z"))
    store.append(_rec(me, 2, "FAIL", timestamp="2026-03-02T07:30:00.000000Z"))
    store.append(_rec(me, 3, kind="no_read", operator_verdict=None, reason="no part", timestamp="2026-03-02T08:00:00.000000Z"))
    PostgresRecordStore(station_url, key=KEY_B).append(_rec("other", 1, timestamp="2026-03-02T07:10:00.000000Z"))
    store.close()
    assert main(["records", "list", "--db", reader_url, "--station", me]) == 0
    listed = capsys.readouterr().out
    assert "3 rows: 2 standing decisions (1 PASS, 1 FAIL" in listed and "1 no-read" in listed
    assert main(["records", "verify", "--db", reader_url]) == 0
    verified = capsys.readouterr().out
    assert "4 rows from 2 station(s)" in verified and "keyed hashes not checked for other" in verified
    assert main(["records", "export", "--db", reader_url, "--out", str(tmp_path / "all.csv")]) == 0
    assert (tmp_path / "all.csv").read_text().count("\n") == 5  # header + 4 rows (no single chain head to sign)
    assert main(["records", "report", "--db", reader_url, "--by", "station,shift", "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("station,shift,parts,yield,PASS,FAIL")
    assert len(lines) == 3 and any(line.startswith(f"{me},") and ",3,33.3%,1,1,50.0%," in line for line in lines)
    with psycopg.connect(admin, autocommit=True) as con:  # tamper around the triggers: verify must fail
        con.execute("ALTER TABLE inspector.inspections DISABLE TRIGGER USER")
        con.execute("UPDATE inspector.inspections SET operator_verdict = 'PASS' WHERE station_id = %s AND id = 2", (me,))
    assert main(["records", "verify", "--db", reader_url]) == 1
    assert f"station {me}: row 2: content does not match" in capsys.readouterr().err


def test_keeper_for_settings_journals_beside_the_records(db: dict[str, str], tmp_path: Path) -> None:
    from inspector.records_pg import keeper_for_settings
    from inspector.settings import Settings

    s = Settings(records_path=tmp_path / "rec" / "records.sqlite", records_url=db["station"], station_id="S9")
    keeper = keeper_for_settings(s)
    try:
        assert isinstance(keeper.store, PostgresRecordStore) and keeper.store.station_id == "S9"
        assert keeper.journal is not None and keeper.journal.path == tmp_path / "rec" / "postgres.journal"
        stored = keeper.save(_rec("S9", 1))
        assert stored is not None and stored.id == 1 and keeper.backlog == 0
        assert keeper.store.verify().checkpoints == 1  # postgres.checkpoints beside the journal, signed
    finally:
        keeper.close()
    with pytest.raises(RecordStoreError, match="not a postgresql:// URL"):
        keeper_for_settings(Settings(records_url=None))
