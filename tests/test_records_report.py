"""Plant report (yield, FAIL rate, overrides, NO-READ per line/profile/shift): known answers."""

from __future__ import annotations

import io
from datetime import UTC, time

import pytest

from inspector.records import InspectionRecord
from inspector.records_report import parse_shifts, report, shift_of, write_table


def _r(station: str, profile: str, ts: str, kind: str = "decision", auto: str | None = "PASS",
       oper: str | None = "PASS", uid: str | None = None, **kw: object) -> InspectionRecord:
    return InspectionRecord(station_id=station, operator_id="op", profile_name=profile, profile_version=1,
                            profile_hash="h", pipeline="variation", auto_verdict=auto, operator_verdict=oper,
                            kind=kind, timestamp=ts, **({"uid": uid} if uid else {}), **kw)  # type: ignore[arg-type]


def test_shift_of_wraps_the_night_shift_to_the_day_it_started() -> None:
    starts = parse_shifts("06:00,14:00,22:00")
    assert shift_of("2026-03-03T01:30:00.000000Z", starts, UTC) == "2026-03-02 S3"
    assert shift_of("2026-03-03T06:00:00.000000Z", starts, UTC) == "2026-03-03 S1"
    assert shift_of("2026-03-03T13:59:59.999999Z", starts, UTC) == "2026-03-03 S1"
    assert shift_of("2026-03-03T22:10:00.000000Z", starts, UTC) == "2026-03-03 S3"
    assert parse_shifts("22:00, 06:00") == (time(6), time(22))
    with pytest.raises(ValueError, match="'6am' is not HH:MM"):
        parse_shifts("6am")


def test_report_by_line_profile_shift_known_answers() -> None:
    d1 = "2026-03-02T07:00:00.000000Z"  # S1
    d2 = "2026-03-02T15:00:00.000000Z"  # S2
    rows = [
        _r("st1", "pcb", d1), _r("st1", "pcb", d1, oper="FAIL"),  # an override (auto PASS -> FAIL)
        _r("st2", "pcb", d1, auto="FAIL", oper="FAIL"), _r("st2", "pcb", d1, uid="voided"),
        _r("st2", "pcb", d1, kind="correction", auto=None, oper=None, corrects_uid="voided"),
        _r("st2", "pcb", d1, kind="no_read", auto=None, oper=None, reason="camera timeout"),
        _r("st3", "pcb", d2), _r("st3", "washer", d2, kind="skipped", auto=None, oper=None, reason="jam"),
    ]
    lines = {"st1": "L1", "st2": "L1", "st3": "L2"}
    out = report(rows, ["line", "profile", "shift"], lines, tz=UTC)
    assert [r.group for r in out] == [("L1", "pcb", "2026-03-02 S1"), ("L2", "pcb", "2026-03-02 S2"),
                                      ("L2", "washer", "2026-03-02 S2")]
    l1 = out[0]
    # parts: st1 x2, st2 FAIL, st2 NO-READ (the voided one does not count) = 4
    assert (l1.parts, l1.decisions, l1.passed, l1.failed, l1.no_read, l1.corrections) == (4, 3, 1, 2, 1, 1)
    assert l1.overrides == 1 and l1.with_auto == 3
    assert l1.yield_rate == pytest.approx(1 / 4) and l1.fail_rate == pytest.approx(2 / 3)
    assert l1.override_rate == pytest.approx(1 / 3) and l1.no_read_rate == pytest.approx(1 / 4)
    washer = out[2]
    assert (washer.parts, washer.skipped, washer.decisions, washer.yield_rate, washer.fail_rate) == (1, 1, 0, 0.0, None)
    by_station = report(rows, ["station"], tz=UTC)  # no mapping: each station is its own line
    assert [r.group for r in report(rows, ["line"], tz=UTC)] == [r.group for r in by_station] == [("st1",), ("st2",), ("st3",)]
    buf = io.StringIO()
    write_table(out, ["line", "profile", "shift"], buf)
    first, second = buf.getvalue().splitlines()[:2]
    assert first.split()[:5] == ["line", "profile", "shift", "parts", "yield"]
    assert second.split() == ["L1", "pcb", "2026-03-02", "S1", "4", "25.0%", "1", "2", "66.7%", "1", "33.3%", "1",
                              "25.0%", "0", "0", "1"]
    with pytest.raises(ValueError, match="--by takes"):
        report(rows, ["colour"])


def test_report_cli_on_the_sqlite_store(tmp_path, monkeypatch, capsys) -> None:  # noqa: ANN001
    from inspector.cli import main
    from inspector.records import SqliteRecordStore

    monkeypatch.setenv("INSPECTOR_KEY_FILE", str(tmp_path / "station.key"))
    db = tmp_path / "records.sqlite"
    store = SqliteRecordStore(db)
    store.append(_r("st1", "pcb", "2026-03-02T07:00:00.000000Z"))
    store.append(_r("st1", "pcb", "2026-03-02T07:05:00.000000Z", auto="FAIL", oper="FAIL"))
    store.append(_r("st2", "pcb", "2026-03-02T23:00:00.000000Z", kind="no_read", auto=None, oper=None, reason="x"))
    store.close()
    lines = tmp_path / "lines.yaml"
    lines.write_text("L1: [st1, st2]\n", encoding="utf-8")
    assert main(["records", "report", "--db", str(db), "--lines", str(lines), "--format", "csv"]) == 0
    out = capsys.readouterr().out.splitlines()
    day, night = shift_of("2026-03-02T07:00:00.000000Z"), shift_of("2026-03-02T23:00:00.000000Z")  # local time
    if day == shift_of("2026-03-02T07:05:00.000000Z") and day != night:
        assert out == ["line,profile,shift,parts,yield,PASS,FAIL,fail_rate,overrides,override_rate,NO-READ,"
                       "no_read_rate,skipped,not_decided,corrections",
                       f"L1,pcb,{day},2,50.0%,1,1,50.0%,0,0.0%,0,0.0%,0,0,0",
                       f"L1,pcb,{night},1,0.0%,0,0,-,0,-,1,100.0%,0,0,0"]
    assert len(out) >= 2 and out[0].startswith("line,profile,shift,parts")
    lines.write_text("L1: [st1]\nL2: [st1]\n", encoding="utf-8")
    assert main(["records", "report", "--db", str(db), "--lines", str(lines)]) == 2
    assert "station st1 is on two lines (L1 and L2)" in capsys.readouterr().err
    assert main(["records", "report", "--db", str(db), "--by", "line,colour"]) == 2
    assert "--by takes a comma list" in capsys.readouterr().err
