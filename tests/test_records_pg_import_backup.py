"""`records import` and `records backup` against a postgresql:// records location (real initdb server)."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.servers import Postgres, pg_bindir, require

pytestmark = require(pg_bindir() is not None, "PostgreSQL server (package 'postgresql')")
psycopg = pytest.importorskip("psycopg", reason="psycopg missing: install the 'plant' extra")

from inspector.cli import main  # noqa: E402
from inspector.keys import key_id, station_key  # noqa: E402
from inspector.records import InspectionRecord, SqliteRecordStore  # noqa: E402
from inspector.records_pg import PostgresRecordStore, init_schema  # noqa: E402

KEY_B = bytes(range(1, 33))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    pg = Postgres(tmp_path_factory.mktemp("pg")).init().start()
    yield pg
    pg.remove()


@pytest.fixture
def plant(server: Postgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A station home (settings, key) and a fresh records database: admin, station and QA URLs."""
    monkeypatch.setenv("INSPECTOR_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("INSPECTOR_CONFIG", str(tmp_path / "home" / "settings.yaml"))
    monkeypatch.setenv("INSPECTOR_KEY_FILE", str(tmp_path / "home" / "station.key"))
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "settings.yaml").write_text("station_id: st-old\n", encoding="utf-8")
    name = "t_" + uuid.uuid4().hex[:10]
    with psycopg.connect(server.url(), autocommit=True) as con:
        con.execute(f"CREATE DATABASE {name}")
    admin = server.url(dbname=name)
    res = init_schema(admin, station_password="st-pw", reader_password="qa-pw")
    return {"admin": admin, "station": str(res.station_url), "reader": str(res.reader_url), "name": name}


def _rec(station: str, i: int, verdict: str = "PASS") -> InspectionRecord:
    return InspectionRecord(station_id=station, operator_id="op", profile_name="demo_pcb", profile_version=1,
                            profile_hash="ph", pipeline="variation", auto_verdict="PASS", operator_verdict=verdict,
                            image_score=i / 7, uid=f"{station}-{i:04d}", timestamp=f"2026-03-02T0{i}:00:00.000000Z")


def _sqlite_export(tmp_path: Path, name: str, rows: list[InspectionRecord], key: bytes) -> Path:
    """A station that ran on its SQLite file: its rows exported with `records export --format jsonl`."""
    db = tmp_path / f"{name}.sqlite"
    store = SqliteRecordStore(db, key=key)
    for r in rows:
        store.append(r)
    store.close()
    out = tmp_path / f"{name}.jsonl"
    assert main(["records", "export", "--db", str(db), "--out", str(out), "--format", "jsonl"]) == 0
    return out


def test_import_appends_one_stations_export_to_its_chain(plant: dict[str, str], tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    rows = [_rec("st-old", i, "FAIL" if i == 2 else "PASS") for i in (1, 2, 3)]
    export = _sqlite_export(tmp_path, "old", rows, station_key())
    assert main(["records", "import", str(export), "--db", plant["station"]]) == 0
    assert "imported 3 records into postgresql://inspector_station@127.0.0.1:" in capsys.readouterr().out
    qa = PostgresRecordStore(plant["reader"], read_only=True, keys={"st-old": station_key()})
    try:
        got = qa.query()
        assert [r.uid for r in got] == [r.uid for r in rows] and all(r.imported for r in got)
        assert [(r.orig_station_id, r.orig_id) for r in got] == [("st-old", 1), ("st-old", 2), ("st-old", 3)]
        assert [r.id for r in got] == [1, 2, 3] and [r.operator_verdict for r in got] == ["PASS", "FAIL", "PASS"]
        assert qa.verify().ok and qa.station_key_id("st-old") == key_id(station_key())
    finally:
        qa.close()
    assert main(["records", "verify", "--db", plant["reader"]]) == 0  # the station's own key checks the chain
    capsys.readouterr()
    assert main(["records", "import", str(export), "--db", plant["station"]]) == 0  # again: nothing doubled
    assert "imported 0 records" in (out := capsys.readouterr().out) and "3 already there, skipped" in out
    # the station's live rows continue the same chain after the imported ones
    live = PostgresRecordStore(plant["station"], key=station_key(), station_id="st-old")
    assert live.append(_rec("st-old", 4)).id == 4
    live.close()


def test_import_refuses_files_that_cannot_continue_a_chain(plant: dict[str, str], tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    other = PostgresRecordStore(plant["station"], key=KEY_B, station_id="st-b")  # st-b writes to the server
    other.append(_rec("st-b", 1))
    other.close()
    wrong_key = _sqlite_export(tmp_path, "b", [_rec("st-b", 5)], station_key())  # same station, another key
    assert main(["records", "import", str(wrong_key), "--db", plant["station"]]) == 2
    err = capsys.readouterr().err
    assert "the chain of station st-b on postgresql://inspector_station@127.0.0.1:" in err
    assert f"keyed with key {key_id(KEY_B)}, the file with key {key_id(station_key())}" in err
    assert "pass --key with station st-b's key file; nothing imported" in err
    mixed = _sqlite_export(tmp_path, "mixed", [_rec("st-x", 1), _rec("st-y", 2)], station_key())
    assert main(["records", "import", str(mixed), "--db", plant["station"]]) == 2
    err = capsys.readouterr().err
    assert "rows of 2 stations (st-x, st-y)" in err and "records export --station ID" in err
    qa = PostgresRecordStore(plant["reader"], read_only=True)
    try:
        assert [r.uid for r in qa.query()] == ["st-b-0001"]  # nothing else reached the server
    finally:
        qa.close()


def test_backup_is_a_pg_dump_that_restores_and_verifies(server: Postgres, plant: dict[str, str], tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    a = PostgresRecordStore(plant["station"], key=station_key(), station_id="st-old")
    b = PostgresRecordStore(plant["station"], key=KEY_B, station_id="st-b")
    for i in (1, 2):
        a.append(_rec("st-old", i))
        b.append(_rec("st-b", i, "FAIL"))
    a.close()
    b.close()
    dump = tmp_path / "plant.dump"
    assert main(["records", "backup", str(dump), "--db", plant["station"]]) == 2  # INSERT-only role: refused
    err = capsys.readouterr().err
    assert "pg_dump failed (" in err and "permission denied" in err and "use the QA (read-only) URL" in err
    assert not dump.exists() and not list(tmp_path.glob(".plant.dump*"))
    assert main(["records", "backup", str(dump), "--db", plant["reader"]]) == 0
    assert "pg_restore --dbname=URL" in capsys.readouterr().out and dump.stat().st_size > 0
    assert main(["records", "backup", str(dump), "--db", plant["reader"]]) == 2
    assert "already exists; give a new file name" in capsys.readouterr().err
    # restore into a new database: the same rows, chains and append-only triggers
    restored = "r_" + uuid.uuid4().hex[:10]
    with psycopg.connect(server.url(), autocommit=True) as con:
        con.execute(f"CREATE DATABASE {restored}")
    proc = subprocess.run([shutil.which("pg_restore") or "pg_restore", f"--dbname={server.url(dbname=restored)}",
                           str(dump)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    copy = PostgresRecordStore(server.url(dbname=restored), read_only=True,
                               keys={"st-old": station_key(), "st-b": KEY_B})
    try:
        assert [r.uid for r in copy.query()] == ["st-old-0001", "st-b-0001", "st-old-0002", "st-b-0002"]
        result = copy.verify()
        assert result.ok and "4 rows from 2 station(s)" in result.message
    finally:
        copy.close()
    with psycopg.connect(server.url(dbname=restored), autocommit=True) as con, \
            pytest.raises(psycopg.errors.RaiseException, match="append-only"):
        con.execute("DELETE FROM inspector.inspections")
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))  # a machine without the PostgreSQL client tools
    assert main(["records", "backup", str(tmp_path / "again.dump"), "--db", plant["reader"]]) == 2
    assert "pg_dump not found: install the PostgreSQL client tools" in capsys.readouterr().err
