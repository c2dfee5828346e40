"""Rejected and accepted parts become labelled data: brush, SAM click, export, evaluation on the set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QPoint, Qt

from inspector.evaluate.labelled_set import parts_from_records
from inspector.imaging import read_image, write_png
from inspector.models.hub import ModelHub
from inspector.records import InspectionRecord
from inspector.settings import Settings
from inspector.ui.evaluation_view import EvaluationView
from inspector.ui.labelling import LabellingDialog, paint_disc, sam_loader
from tests.ui.conftest_engineer import product_image, wait_idle

pytestmark = pytest.mark.gui


def test_paint_disc_known_pixels() -> None:
    m = np.zeros((10, 10), bool)
    paint_disc(m, 5.0, 5.0, 1.0)  # pixel centres within 1 px of (5, 5): (4.5|5.5, 4.5|5.5)
    assert sorted(zip(*np.nonzero(m))) == [(4, 4), (4, 5), (5, 4), (5, 5)]
    paint_disc(m, 5.0, 5.0, 1.0, value=False)
    assert not m.any()
    paint_disc(m, -3.0, -3.0, 2.0)  # outside: nothing, no error
    assert not m.any()


def _records(tmp_path: Path, n_good: int = 3, n_bad: int = 3) -> list[InspectionRecord]:
    arch = tmp_path / "archive" / "2026-12-01"
    out = []
    for i in range(n_good + n_bad):
        bad = i >= n_good
        img = write_png(arch / f"u{i}_part.png", product_image(60 + i, defect=bad))
        out.append(InspectionRecord(
            station_id="st", operator_id="op", profile_name="widget", profile_version=1, profile_hash="0" * 64,
            pipeline="variation", auto_verdict="FAIL" if bad else "PASS", operator_verdict="FAIL" if bad else "PASS",
            reason="scratch" if bad else None, archive_path=str(img), uid=f"u{i}",
            timestamp=f"2026-12-01T08:00:0{i}.000000Z"))
    return out


def _click(qtbot, dialog: LabellingDialog, x: float, y: float, button=Qt.MouseButton.LeftButton) -> None:
    p = dialog.canvas.to_widget(x, y)
    qtbot.mouseClick(dialog.canvas, button, pos=QPoint(round(p.x()), round(p.y())))


def test_brush_export_and_evaluate_the_set(qtbot, tmp_path: Path, station_worker, eng_settings: Settings,
                                          widget_profile) -> None:
    parts, skipped = parts_from_records(_records(tmp_path))
    assert not skipped
    settings = eng_settings.model_copy(update={"archive_dir": tmp_path / "archive"})
    dialog = LabellingDialog(parts, settings, sam=None, sam_reason="SAM click needs the sam_vit_b weights (missing)")
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitExposed(dialog)
    assert not dialog.sam_radio.isEnabled() and "weights" in dialog.sam_radio.toolTip()  # brush alone

    dialog.list.setCurrentRow(0)  # an accepted part: nothing to paint
    assert dialog.canvas.mode == "none" and "nothing to paint" in dialog.caption.text()
    dialog.list.setCurrentRow(3)  # the first reject
    assert dialog.canvas.mode == "brush"
    dialog.brush_size.setValue(3)
    _click(qtbot, dialog, 40, 30)
    mask = dialog.masks["u3"]
    assert mask.shape == (96, 96) and mask[30, 40] and not mask[30, 50]
    painted = int(mask.sum())
    assert 20 <= painted <= 40  # a disc of radius 3 px (about 28 pixels)
    _click(qtbot, dialog, 40, 30, Qt.MouseButton.RightButton)  # the right button erases
    assert not dialog.masks["u3"].any()
    _click(qtbot, dialog, 40, 30)
    assert "mask" in dialog.caption.text() and "px" in dialog.caption.text()

    dialog.folder_edit.setText(str(tmp_path / "sets"))
    dialog.category_edit.setText("widget_line")
    result = dialog.export()
    assert result is not None and (result.n_good, result.n_defective, result.n_masks) == (3, 3, 1)
    gt = read_image(result.root / "ground_truth" / "scratch" / "u3_mask.png", max_side=None).max(axis=2) > 0
    assert np.array_equal(gt, dialog.masks["u3"])
    seen: list[str] = []
    dialog.evaluate_requested.connect(seen.append)
    dialog.evaluate_button.click()
    assert seen == [str(result.root)]

    # the evaluation view runs on that set: the line's own benchmark
    view = EvaluationView(station_worker, eng_settings)
    qtbot.addWidget(view)
    view.set_profile(widget_profile)
    view.dataset_edit.setText(seen[0])
    view.run()
    qtbot.waitUntil(lambda: view.result is not None, timeout=60_000)
    wait_idle(qtbot, view.jobs)
    assert view.table.rowCount() == 6 and int(view._labels.sum()) == 3
    assert sorted({view.table.item(r, 1).text() for r in range(6)}) == ["good", "scratch"]
    report = tmp_path / "report.html"
    view.export_report(report)
    qtbot.waitUntil(lambda: "report written" in view.message.text(), timeout=60_000)
    wait_idle(qtbot, view.jobs)
    assert "widget_line" in report.read_text() and "Evaluation of widget v1" in report.read_text()


def test_sam_click_adds_the_best_candidate_mask(qtbot, tmp_path: Path, eng_settings: Settings) -> None:
    from tests.support.tiny_models import tiny_sam

    hub = ModelHub(device="cpu", precision="fp32")
    hub.provide("sam", tiny_sam(seed=3))
    loader, reason = sam_loader(eng_settings, hub)
    assert loader is not None and reason == ""
    parts, _ = parts_from_records(_records(tmp_path, n_good=0, n_bad=1))
    dialog = LabellingDialog(parts, eng_settings, sam=loader)
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitExposed(dialog)
    dialog.sam_radio.setChecked(True)
    assert dialog.canvas.mode == "sam"
    qtbot.waitUntil(dialog.sam_ready, timeout=120_000)
    with qtbot.waitSignal(dialog.canvas.clicked) as click:
        _click(qtbot, dialog, 40, 33)
    x, y = click.args  # image px of the click (the widget's pixel grid rounds a little)
    assert abs(x - 40) < 1.5 and abs(y - 33) < 1.5

    # the same prompt through the wrapper, independently: the best-IoU candidate of three
    image = read_image(parts[0].image)
    sam = hub.get("sam", "sam_vit_b")
    out = sam.decode(sam.embed(image), points=np.array([[[x, y]]], np.float32), labels=np.array([[1]]),
                     multimask=True)
    expected = out.masks[0, int(np.argmax(out.scores[0]))]
    assert out.masks.shape == (1, 3, 96, 96)
    np.testing.assert_array_equal(dialog.masks["u0"], expected)
    assert "SAM:" in dialog.sam_status.text()


def test_without_sam_weights_the_brush_alone(eng_settings: Settings) -> None:
    loader, reason = sam_loader(eng_settings, ModelHub(device="cpu"))
    assert loader is None and "sam_vit_b" in reason and "brush" in reason


def test_from_the_records_tab(qtbot, window, tmp_path: Path) -> None:
    for rec in _records(tmp_path, n_good=1, n_bad=2):
        window.store.append(rec)
    window.records_view.refresh()
    window.tabs.setCurrentWidget(window.records_view)
    window.records_view.label_button.click()
    dialog = window.records_view.findChild(LabellingDialog)
    assert dialog is not None and dialog.isVisible()
    assert [(p.uid, p.label, p.defect) for p in dialog.parts] == [("u0", 0, "good"), ("u1", 1, "scratch"),
                                                                   ("u2", 1, "scratch")]
    dialog.close()
