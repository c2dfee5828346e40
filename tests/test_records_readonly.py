"""Issue 16 items 1–2: read-only commands never create or alter anything; read-only copies audit."""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from inspector.cli import main
from inspector.records import NotARecordsDatabase, SqliteRecordStore
from tests.support.sqlite_connect import KeptConnection
from tests.test_records import make


def _snapshot(folder: Path) -> dict[str, tuple[str, float]]:
    return {p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime)
            for p in sorted(folder.iterdir()) if p.is_file()}


def _db(folder: Path, n: int = 3) -> Path:
    db = folder / "r.sqlite"
    s = SqliteRecordStore(db)
    for i in range(n):
        s.append(make(i))
    s.close()
    return db


def test_wiped_tables_are_not_a_records_database_and_stay_wiped(tmp_path: Path, capsys) -> None:
    db = _db(tmp_path)
    con = sqlite3.connect(db)
    con.executescript("DROP TABLE inspections; DROP TABLE meta;")
    con.close()
    before = _snapshot(tmp_path)
    assert main(["records", "verify", "--db", str(db)]) == 2
    assert "not an Inspector records database" in capsys.readouterr().err
    assert _snapshot(tmp_path) == before  # nothing recreated
    con = sqlite3.connect(db)
    assert con.execute("SELECT name FROM sqlite_master").fetchall() == []
    con.close()


@pytest.mark.parametrize("action", [["verify"], ["list"], ["export", "--out", "OUT"], ["backup", "OUT"]])
def test_empty_file_is_refused_and_not_grown(tmp_path: Path, capsys, action: list[str]) -> None:
    z = tmp_path / "z.sqlite"
    z.write_bytes(b"")
    args = [a.replace("OUT", str(tmp_path / "out.x")) for a in action]
    assert main(["records", *args, "--db", str(z)]) == 2
    assert "not an Inspector records database" in capsys.readouterr().err
    assert z.stat().st_size == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["z.sqlite"]


def test_station_refuses_to_reuse_a_wiped_database(tmp_path: Path) -> None:
    """An emptied file beside checkpoints is a wiped database, not a fresh one."""
    db = _db(tmp_path)
    db.write_bytes(b"")
    for side in ("-wal", "-shm"):
        Path(str(db) + side).unlink(missing_ok=True)
    with pytest.raises(Exception, match="wiped or replaced"):
        SqliteRecordStore(db)


def test_read_only_open_never_writes(tmp_path: Path, capsys) -> None:
    db = _db(tmp_path)
    before = _snapshot(tmp_path)
    assert main(["records", "verify", "--db", str(db)]) == 0
    assert main(["records", "list", "--db", str(db)]) == 0
    assert main(["records", "export", "--db", str(db), "--out", "-"]) == 0
    capsys.readouterr()
    assert _snapshot(tmp_path) == before  # no -wal, no -shm, no schema write


def test_read_only_store_refuses_writes(tmp_path: Path) -> None:
    db = _db(tmp_path)
    kept = KeptConnection()
    s = SqliteRecordStore(db, read_only=True, connect=kept)
    with pytest.raises(Exception, match="read-only"):
        s.append(make(9))
    with pytest.raises(sqlite3.OperationalError):  # the store's own connection refuses writes too
        kept.con.execute("INSERT INTO meta(key, value) VALUES ('x', 'y')")
    s.close()
    with pytest.raises(NotARecordsDatabase):
        (tmp_path / "e.sqlite").write_bytes(b"")
        SqliteRecordStore(tmp_path / "e.sqlite", read_only=True)


_AUDIT = """
import sys
from inspector.cli import main
db, out = sys.argv[1], sys.argv[2]
codes = [main(["records", "verify", "--db", db]), main(["records", "list", "--db", db]),
         main(["records", "export", "--db", db, "--out", out])]
print("CODES", codes)
"""


def test_chmod_444_copy_can_be_audited_without_root(tmp_path: Path) -> None:
    """verify/list/export on a 0444 file in a 0555 folder, without the root override."""
    db = _db(tmp_path / "station")
    work, copy = tmp_path / "work", tmp_path / "copy"
    work.mkdir()
    copy.mkdir()
    shutil.copy(db, copy / "r.sqlite")
    shutil.copy(str(db) + ".checkpoints", copy / "r.sqlite.checkpoints")
    key = Path(os.environ["INSPECTOR_CONFIG"]).parent / "station.key"
    shutil.copy(key, work / "station.key")
    for p in (copy / "r.sqlite", copy / "r.sqlite.checkpoints", work / "station.key"):
        os.chmod(p, 0o444)
    os.chmod(copy, 0o555)
    env = dict(os.environ, INSPECTOR_KEY_FILE=str(work / "station.key"),
               INSPECTOR_CONFIG=str(work / "settings.yaml"), INSPECTOR_HOME=str(work),
               PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    cmd = [sys.executable, "-c", _AUDIT, str(copy / "r.sqlite"), str(work / "out.csv")]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: cannot drop the permission override")
        cmd = [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-all", "--", *cmd]
        probe = subprocess.run([*cmd[:4], sys.executable, "-c",
                                f"open({str(copy / 'r.sqlite')!r}, 'ab')"], capture_output=True, env=env)
        assert probe.returncode != 0, "the override is still active; the test would prove nothing"
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert "CODES [0, 0, 0]" in proc.stdout, proc.stderr
        assert "readonly" not in proc.stderr
        rows = list(csv.reader((work / "out.csv").open()))
        assert len(rows) == 1 + 3 + 1 and rows[-1][0] == "#checkpoint"
        assert sorted(p.name for p in copy.iterdir()) == ["r.sqlite", "r.sqlite.checkpoints"]
    finally:
        os.chmod(copy, 0o755)
