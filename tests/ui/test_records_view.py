"""Records view: filters, counts, corrections shown, CSV export, chain check."""

from __future__ import annotations

import csv
import sqlite3
from datetime import UTC, datetime, timedelta

import pytest
from PySide6.QtCore import Qt

from inspector.records import InspectionRecord, SqliteRecordStore, to_utc_iso
from inspector.ui.records_view import RecordsView


def rec(days_ago: float, operator: str, profile: str, verdict: str, auto: str = "FAIL", **kw) -> InspectionRecord:
    ts = to_utc_iso(datetime.now(UTC) - timedelta(days=days_ago))
    return InspectionRecord(
        station_id="st", operator_id=operator, profile_name=profile, profile_version=1, profile_hash="h",
        pipeline="variation", auto_verdict=auto, operator_verdict=verdict, image_score=0.7,
        image_path=f"/line/{operator}_{days_ago}.png", timestamp=ts, **kw,
    )


@pytest.fixture
def store(tmp_path):
    s = SqliteRecordStore(tmp_path / "r.sqlite")
    s.append(rec(0, "ann", "washer", "FAIL", reason="scratch"))
    s.append(rec(0, "bob", "washer", "PASS", auto="PASS"))
    bad = s.append(rec(0, "bob", "fabric", "PASS"))  # overrides the station
    s.append(InspectionRecord(
        station_id="st", operator_id="bob", profile_name="fabric", profile_version=1, profile_hash="h",
        pipeline="variation", auto_verdict="FAIL", operator_verdict=None, kind="correction", corrects_uid=bad.uid,
    ))
    s.append(rec(3, "ann", "fabric", "FAIL"))
    s.append(rec(20, "ann", "washer", "PASS", auto="PASS"))
    yield s
    s.close()


def test_filters_counts_and_export(qtbot, store, tmp_path) -> None:
    view = RecordsView(lambda: store)
    qtbot.addWidget(view)
    view.refresh()
    assert view.model.rowCount() == 5  # last 7 days by default
    assert "<b>3</b> decisions" in view.counts_label.text()  # one voided by its correction
    view.period.setCurrentText("All")
    assert view.model.rowCount() == 6
    view.period.setCurrentText("Today")
    assert view.model.rowCount() == 4
    view.period.setCurrentText("All")
    view.operator.setCurrentIndex(view.operator.findData("ann"))
    assert {r.operator_id for r in view.rows()} == {"ann"} and len(view.rows()) == 3
    view.profile.setCurrentIndex(view.profile.findData("washer"))
    assert len(view.rows()) == 2
    view.verdict.setCurrentText("FAIL")
    assert [r.reason for r in view.rows()] == ["scratch"]
    out = tmp_path / "sel.csv"
    assert view.export_to(out) == 1
    assert next(csv.DictReader(out.open()))["reason"] == "scratch"
    # newest first in the table; voided decision struck out
    view.operator.setCurrentIndex(0)
    view.profile.setCurrentIndex(0)
    view.verdict.setCurrentIndex(0)
    ids = [r.id for r in view.rows()]
    assert ids == sorted(ids, reverse=True)
    voided_row = next(i for i, r in enumerate(view.rows()) if r.id == 3)
    font = view.model.data(view.model.index(voided_row, 0), role=Qt.ItemDataRole.FontRole)
    assert font is not None and font.strikeOut()
    dates_row = view.period.findText("Dates…")
    view.period.setCurrentIndex(dates_row)
    assert view.date_from.isEnabled()
    assert view.verify()


def test_verify_reports_tampering(qtbot, store) -> None:
    con = sqlite3.connect(store.path)
    con.execute("DROP TRIGGER inspections_no_update")
    con.execute("UPDATE inspections SET operator_verdict='PASS' WHERE id=1")
    con.commit()
    con.close()
    view = RecordsView(lambda: store)
    qtbot.addWidget(view)
    assert not view.verify()
    assert "CHAIN BROKEN" in view.status.text() and "row 1" in view.status.text()


def test_no_store_is_explained(qtbot) -> None:
    view = RecordsView(lambda: None)
    qtbot.addWidget(view)
    view.refresh()
    assert "not available" in view.status.text()
    assert not view.verify()
