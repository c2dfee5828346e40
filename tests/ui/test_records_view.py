"""Records view: filters, counts, corrections shown, CSV export, chain check."""

from __future__ import annotations

import csv
import sqlite3
from datetime import UTC, datetime, timedelta

import numpy as np
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


def test_double_click_opens_the_archived_image_with_its_overlay(qtbot, tmp_path) -> None:
    """Item 14: a row opens its archived overlay; O shows the archived image itself."""
    from inspector.imaging import write_png
    from inspector.ui.records_view import ArchivedImageDialog

    overlay = np.zeros((30, 40, 3), np.uint8)
    overlay[:, :, 0] = 255
    image = np.full((30, 40, 3), 90, np.uint8)
    write_png(tmp_path / "a_overlay.png", overlay)
    write_png(tmp_path / "a_image.png", image)
    s = SqliteRecordStore(tmp_path / "r.sqlite")
    s.append(rec(0, "ann", "washer", "FAIL", reason="scratch", overlay_path=str(tmp_path / "a_overlay.png"),
                 archive_path=str(tmp_path / "a_image.png"), role="operator"))
    s.append(rec(0, "bob", "washer", "PASS", auto="PASS"))  # no archive
    view = RecordsView(lambda: s)
    qtbot.addWidget(view)
    view.show()
    qtbot.waitExposed(view)
    view.period.setCurrentText("All")
    view.refresh()
    row = next(i for i, r in enumerate(view.rows()) if r.operator_id == "ann")
    assert view.model.data(view.model.index(row, 3)) == "ann (operator)"  # the user and the role
    index = view.model.index(row, 0)
    rect = view.table.visualRect(index)
    qtbot.mouseClick(view.table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    qtbot.mouseDClick(view.table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    qtbot.waitUntil(lambda: getattr(view, "_dialog", None) is not None, timeout=3000)
    dialog = view._dialog
    assert isinstance(dialog, ArchivedImageDialog) and dialog.record.operator_id == "ann"
    assert dialog.shown_path() == tmp_path / "a_overlay.png"
    red = dialog.image.pixmap().toImage().pixelColor(5, 5)
    assert (red.red(), red.green(), red.blue()) == (255, 0, 0)
    qtbot.keyClick(dialog, Qt.Key.Key_O)
    assert dialog.shown_path() == tmp_path / "a_image.png"
    grey = dialog.image.pixmap().toImage().pixelColor(5, 5)
    assert (grey.red(), grey.green(), grey.blue()) == (90, 90, 90)
    dialog.close()
    other = view.open_record(1 - row)
    assert "No overlay" in other.image.text()
    other.close()
    s.close()


def test_result_filter_includes_part_outcomes(qtbot, tmp_path) -> None:
    s = SqliteRecordStore(tmp_path / "r.sqlite")
    s.append(rec(0, "ann", "washer", "PASS", auto="PASS"))
    s.append(InspectionRecord(station_id="st", operator_id="ann", role="operator", profile_name="washer",
                              profile_version=1, profile_hash="h", pipeline="variation", auto_verdict=None,
                              operator_verdict=None, kind="no_read", reason="cannot decode",
                              image_path="/line/x.png"))
    view = RecordsView(lambda: s)
    qtbot.addWidget(view)
    view.period.setCurrentText("All")
    view.verdict.setCurrentIndex(view.verdict.findData("no_read"))
    assert [r.kind for r in view.rows()] == ["no_read"]
    assert view.model.data(view.model.index(0, 8)) == "NO-READ"
    s.close()
