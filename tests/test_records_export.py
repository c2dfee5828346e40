"""Issue 16 items 6 and 7 and the backup: CSV formulas neutralised, private files, consistent copies."""

from __future__ import annotations

import csv
import io
import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from inspector.cli import main
from inspector.keys import station_key
from inspector.records import (
    Checkpoint,
    SqliteRecordStore,
    checkpoints_path,
    neutralise_cell,
    read_checkpoints,
    write_csv,
)
from tests.test_records import make


@pytest.mark.parametrize("raw", ['=HYPERLINK("http://x","y")', "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)",
                                 "\tx", "\rx"])
def test_formula_cells_are_neutralised(raw: str) -> None:
    assert neutralise_cell(raw) == "'" + raw


def test_plain_cells_are_unchanged() -> None:
    assert neutralise_cell("scratch, 2 mm") == "scratch, 2 mm" and neutralise_cell("") == ""


def test_csv_export_neutralises_note_reason_and_paths(tmp_path: Path) -> None:
    rec = make(0, note='=HYPERLINK("http://evil","click")', reason="+cmd", image_path="@img.png",
               source_id="-1", image_score=-0.25)
    rec.id = 1
    buf = io.StringIO()
    write_csv([rec], buf)
    row = next(csv.DictReader(io.StringIO(buf.getvalue())))
    assert row["note"] == "'=HYPERLINK(\"http://evil\",\"click\")"
    assert row["reason"] == "'+cmd" and row["image_path"] == "'@img.png" and row["source_id"] == "'-1"
    assert row["image_score"] == "-0.25"  # numbers are not text: left as they are


def test_csv_export_carries_a_signed_checkpoint(tmp_path: Path, capsys) -> None:
    db = tmp_path / "r.sqlite"
    s = SqliteRecordStore(db)
    for i in range(3):
        s.append(make(i))
    head = s.query()[-1].row_hash
    s.close()
    out = tmp_path / "e.csv"
    assert main(["records", "export", "--db", str(db), "--out", str(out), "--since", "2024-05-02"]) == 0
    cps, problems = read_checkpoints(out)
    assert problems == [] and len(cps) == 1
    assert cps[0].count == 3 and cps[0].head == head and cps[0].valid(station_key())
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


_UMASK0 = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    os.umask(0)
    from inspector.records import SqliteRecordStore, RecordKeeper, InspectionRecord
    from inspector.settings import Settings
    from inspector.keys import station_key
    base = Path(sys.argv[1])
    station_key()
    Settings(records_path=base / "data" / "rec" / "r.sqlite").save()
    s = SqliteRecordStore(base / "data" / "rec" / "r.sqlite")
    k = RecordKeeper(s)
    k.save(InspectionRecord(station_id="s", operator_id="o", profile_name="p", profile_version=1,
                            profile_hash="h", pipeline="v", auto_verdict="PASS", operator_verdict="PASS"))
    s.backup(base / "bk" / "copy.sqlite")
    k.close()
    """
)


def test_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    env = dict(os.environ, INSPECTOR_CONFIG=str(tmp_path / "cfg" / "inspector" / "settings.yaml"),
               INSPECTOR_HOME=str(tmp_path / "home"), PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    env.pop("INSPECTOR_KEY_FILE", None)
    proc = subprocess.run([sys.executable, "-c", _UMASK0, str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr

    def mode(p: Path) -> int:
        return stat.S_IMODE(p.stat().st_mode)

    rec = tmp_path / "data" / "rec"
    files = [rec / "r.sqlite", rec / "r.sqlite.checkpoints", rec / "r.sqlite.journal",
             tmp_path / "cfg" / "inspector" / "settings.yaml", tmp_path / "cfg" / "inspector" / "station.key",
             tmp_path / "bk" / "copy.sqlite", tmp_path / "bk" / "copy.sqlite.checkpoints"]
    assert {str(p.relative_to(tmp_path)): oct(mode(p)) for p in files} == {
        str(p.relative_to(tmp_path)): "0o600" for p in files}
    folders = [tmp_path / "data", rec, tmp_path / "cfg", tmp_path / "cfg" / "inspector", tmp_path / "bk"]
    assert {str(p.relative_to(tmp_path)): oct(mode(p)) for p in folders} == {
        str(p.relative_to(tmp_path)): "0o700" for p in folders}
    for side in rec.glob("r.sqlite-*"):  # -wal/-shm while open follow the database's mode
        assert mode(side) & 0o077 == 0


def test_backup_is_consistent_and_verifiable(tmp_path: Path, capsys) -> None:
    db = tmp_path / "r.sqlite"
    s = SqliteRecordStore(db)
    for i in range(4):
        s.append(make(i))
    # the station keeps the database open (WAL not checkpointed): a file copy could miss rows
    dest = tmp_path / "backup" / "r-copy.sqlite"
    assert main(["records", "backup", str(dest), "--db", str(db)]) == 0
    s.close()
    assert "backed up" in capsys.readouterr().out
    con = sqlite3.connect(f"file:{dest}?mode=ro", uri=True)
    assert con.execute("SELECT COUNT(*) FROM inspections").fetchone()[0] == 4
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # a single self-contained file
    con.close()
    assert checkpoints_path(dest).is_file()
    assert main(["records", "verify", "--db", str(dest)]) == 0
    assert "4 rows, hash chain intact" in capsys.readouterr().out
    assert main(["records", "backup", str(dest), "--db", str(db)]) == 2  # never overwrites
    assert "already exists" in capsys.readouterr().err


def test_checkpoint_csv_cells_round_trip() -> None:
    cp = Checkpoint.make(3, "c" * 64, b"k" * 32)
    assert Checkpoint.from_csv_cells(cp.csv_cells()) == cp
