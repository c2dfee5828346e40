"""Issue 16 items 3 and 5: import validates the whole file, all or nothing, and keeps the original chain."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inspector.cli import main
from inspector.records import (
    RecordImportError,
    SqliteRecordStore,
    export_jsonl,
    import_jsonl,
    row_hash,
)
from tests.test_records import make

OTHER_KEY = bytes.fromhex("11" * 32)


def _exported(tmp_path: Path, n: int = 3, key: bytes | None = OTHER_KEY) -> tuple[Path, list]:
    src = SqliteRecordStore(tmp_path / "src.sqlite", key=key)
    for i in range(n):
        src.append(make(i, station_id="st-other"))
    rows = src.query()
    src.close()
    dump = tmp_path / "dump.jsonl"
    assert export_jsonl(rows, dump) == n
    return dump, rows


def test_import_marks_rows_imported_and_keeps_their_original_chain(tmp_path: Path) -> None:
    dump, rows = _exported(tmp_path)
    dst = SqliteRecordStore(tmp_path / "dst.sqlite")
    dst.append(make(9))
    assert import_jsonl(dst, dump, key=OTHER_KEY) == 3
    got = dst.query()[1:]
    assert [r.imported for r in got] == [True] * 3
    assert [(r.orig_station_id, r.orig_id, r.orig_prev_hash, r.orig_row_hash) for r in got] == [
        ("st-other", r.id, r.prev_hash, r.row_hash) for r in rows]
    assert [r.id for r in got] == [2, 3, 4]  # re-chained locally
    assert dst.verify().ok
    assert import_jsonl(dst, dump, key=OTHER_KEY) == 0  # uids already present are skipped
    dst.close()


def test_forged_back_dated_rows_are_refused(tmp_path: Path) -> None:
    dump, _ = _exported(tmp_path)
    lines = dump.read_text().splitlines()
    forged = json.loads(lines[1])
    forged["timestamp"] = "2020-01-01T00:00:00.000000Z"  # back-dated
    lines[1] = json.dumps(forged)
    dump.write_text("\n".join(lines) + "\n")
    dst = SqliteRecordStore(tmp_path / "dst.sqlite")
    with pytest.raises(RecordImportError, match=r"line 2: row 2 does not match its keyed hash"):
        import_jsonl(dst, dump, key=OTHER_KEY)
    assert dst.count() == 0
    dst.close()


def test_forger_recomputing_the_unkeyed_hash_is_refused(tmp_path: Path) -> None:
    dump, _ = _exported(tmp_path, n=1)
    row = json.loads(dump.read_text())
    row["operator_verdict"] = "PASS"
    from inspector.records import InspectionRecord

    rec = InspectionRecord(**row)
    row["row_hash"] = row_hash(rec.prev_hash, rec, None)
    dump.write_text(json.dumps(row) + "\n")
    dst = SqliteRecordStore(tmp_path / "dst.sqlite")
    with pytest.raises(RecordImportError, match="line 1"):
        import_jsonl(dst, dump, key=OTHER_KEY)
    dst.close()


def test_rows_without_a_chain_are_refused(tmp_path: Path) -> None:
    bare = make(0).content()
    bare.pop("id")
    dump = tmp_path / "bare.jsonl"
    dump.write_text(json.dumps(bare) + "\n")
    dst = SqliteRecordStore(tmp_path / "dst.sqlite")
    with pytest.raises(RecordImportError, match="line 1: .*no original chain"):
        import_jsonl(dst, dump)
    dst.close()


def test_filtered_export_with_gaps_imports(tmp_path: Path) -> None:
    dump, _ = _exported(tmp_path, n=3)
    lines = dump.read_text().splitlines()
    dump.write_text("\n".join([lines[0], lines[2]]) + "\n")  # ids 1, 3: each row still carries its own chain
    dst = SqliteRecordStore(tmp_path / "dst.sqlite")
    assert import_jsonl(dst, dump, key=OTHER_KEY) == 2
    dst.close()


def test_broken_link_between_consecutive_rows_is_refused(tmp_path: Path) -> None:
    from inspector.records import InspectionRecord

    dump, _ = _exported(tmp_path, n=2)
    lines = dump.read_text().splitlines()
    row = json.loads(lines[1])
    row["prev_hash"] = "ab" * 32  # re-signed by a key holder, but no longer linked to row 1
    rec = InspectionRecord(**row)
    row["row_hash"] = row_hash(rec.prev_hash, rec, OTHER_KEY)
    dump.write_text(lines[0] + "\n" + json.dumps(row) + "\n")
    dst = SqliteRecordStore(tmp_path / "dst.sqlite")
    with pytest.raises(RecordImportError, match="line 2: row 2 does not link to row 1"):
        import_jsonl(dst, dump, key=OTHER_KEY)
    assert dst.count() == 0
    dst.close()


@pytest.mark.parametrize("bad, what", [("{not json", "not a valid record"),
                                       ('{"bogus": 1}', "unknown fields"),
                                       ("[1, 2]", "not a JSON object")])
def test_bad_line_imports_nothing_and_is_named(tmp_path: Path, capsys, bad: str, what: str) -> None:
    """The issue: the good lines before a bad one were appended, then 'not a records dump'."""
    dump, _ = _exported(tmp_path, n=3)
    lines = dump.read_text().splitlines()
    lines.insert(2, bad)
    dump.write_text("\n".join(lines) + "\n")
    db = tmp_path / "dst.sqlite"
    key = tmp_path / "other.key"
    key.write_text(OTHER_KEY.hex() + "\n")
    assert main(["records", "import", str(dump), "--db", str(db), "--key", str(key)]) == 2
    err = capsys.readouterr().err
    assert "line 3" in err and what in err and "nothing imported" in err
    s = SqliteRecordStore(db)
    assert s.count() == 0
    s.close()


def test_cli_round_trip_between_stations(tmp_path: Path, capsys) -> None:
    dump, _ = _exported(tmp_path, n=2)
    key = tmp_path / "other.key"
    key.write_text(OTHER_KEY.hex() + "\n")
    db = tmp_path / "dst.sqlite"
    assert main(["records", "import", str(dump), "--db", str(db)]) == 2  # own key: refused
    assert "pass --key" in capsys.readouterr().err
    assert main(["records", "import", str(dump), "--db", str(db), "--key", str(key)]) == 0
    assert "imported 2 records" in capsys.readouterr().out
    assert main(["records", "list", "--db", str(db)]) == 0
    assert capsys.readouterr().out.count("[imported]") == 2
    out = tmp_path / "again.jsonl"
    assert main(["records", "export", "--db", str(db), "--out", str(out)]) == 0
    again = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["imported"] for r in again] == [True, True] and again[0]["orig_station_id"] == "st-other"
    assert main(["records", "verify", "--db", str(db)]) == 0
