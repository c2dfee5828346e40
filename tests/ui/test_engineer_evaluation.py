"""Threshold tuning: confusion counts, evaluation run in the worker, the line moves the counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PySide6.QtCore import Qt

from inspector.imaging import write_png
from inspector.ui.engineer import EngineerPanel
from inspector.ui.evaluation_view import EvaluationView, confusion_at
from tests.ui.conftest_engineer import product_image, wait_idle, write_product

N_GOOD, N_BAD = 3, 3


def test_confusion_at_known_counts() -> None:
    scores = np.array([0.1, 0.4, 0.5, 0.9, 0.7])
    labels = np.array([0, 1, 0, 1, 1])
    c = confusion_at(scores, labels, 0.5)  # a score equal to the threshold FAILs (as the station decides)
    assert (c.caught, c.escapes, c.false_rejects, c.passed) == (2, 1, 1, 1)
    assert c.escape_rate == pytest.approx(1 / 3) and c.false_reject_rate == pytest.approx(0.5)
    assert confusion_at(scores, labels, 1.0) == confusion_at(scores, labels, 0.95)
    top = confusion_at(scores, labels, 1.0)
    assert (top.caught, top.escapes, top.false_rejects, top.passed) == (0, 3, 0, 2)
    bottom = confusion_at(scores, labels, 0.0)
    assert (bottom.caught, bottom.escapes, bottom.false_rejects, bottom.passed) == (3, 0, 2, 0)
    empty = confusion_at(np.zeros(0), np.zeros(0), 0.5)
    assert empty.n_good == 0 and np.isnan(empty.escape_rate)
    with pytest.raises(ValueError, match="differ in size"):
        confusion_at(scores, labels[:2], 0.5)


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """Plain-folder layout: good/, bad/scratch/ and exact masks/scratch/<stem>_mask.png."""
    root = tmp_path / "labelled"
    for i in range(N_GOOD):
        write_product(root / "good" / f"g{i}.png", seed=40 + i)
    for i in range(N_BAD):
        bad, good = product_image(50 + i, defect=True), product_image(50 + i)
        write_png(root / "bad" / "scratch" / f"b{i}.png", bad)
        mask = (np.abs(bad.astype(int) - good.astype(int)).max(axis=2) > 0).astype(np.uint8) * 255
        write_png(root / "masks" / "scratch" / f"b{i}_mask.png", mask)
    return root


@pytest.fixture
def view(qtbot, station_worker, eng_settings, widget_profile) -> EvaluationView:
    v = EvaluationView(station_worker, eng_settings)
    qtbot.addWidget(v)
    v.set_profile(widget_profile)
    return v


def _run(qtbot, view: EvaluationView, dataset: Path) -> None:
    view.dataset_edit.setText(str(dataset))
    qtbot.mouseClick(view.run_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: view.result is not None, timeout=60_000)
    wait_idle(qtbot, view.jobs)


@pytest.mark.gui
def test_threshold_line_moves_confusion_counts(qtbot, view: EvaluationView, dataset: Path, widget_profile) -> None:
    _run(qtbot, view, dataset)
    assert view.table.rowCount() == N_GOOD + N_BAD
    assert f"{N_GOOD + N_BAD} images scored ({N_BAD} defective)" in view.status.text()
    assert view.threshold() == pytest.approx(widget_profile.decision.image_threshold)
    assert view.result is not None
    scores = np.array([r.score for r in view.result.scored])  # what the table rows show
    labels = np.array([r.label for r in view.result.scored])

    view.threshold_line.setValue(float(scores.min()) - 0.01)  # everything FAILs
    c = view.confusion()
    assert (c.escapes, c.false_rejects) == (0, N_GOOD)
    assert f"escapes 0</b> (0.0%) of {N_BAD} defective" in view.confusion_label.text()
    assert f"false rejects {N_GOOD}</b>" in view.confusion_label.text()
    assert {view.table.item(r, 4).text() for r in range(view.table.rowCount())} == {"FAIL"}
    assert view.threshold_spin.value() == pytest.approx(view.threshold(), abs=1e-4)
    assert list(view.roc_point.getData()[0]) == [1.0]

    view.threshold_spin.setValue(1.0)  # the spin box drives the line too (scores top out at 1)
    c = view.confusion()
    expected = confusion_at(scores, labels, 1.0)
    assert (c.escapes, c.false_rejects) == (expected.escapes, expected.false_rejects)
    assert f"escapes {expected.escapes}</b>" in view.confusion_label.text()
    assert [view.table.item(r, 4).text() for r in range(view.table.rowCount())] == [
        "FAIL" if scores[view.table.item(r, 0).data(Qt.ItemDataRole.UserRole)] >= 1.0 else "PASS"
        for r in range(view.table.rowCount())]

    middle = float(np.sort(scores)[N_GOOD])  # the 4th lowest score: exactly three images below it
    view.threshold_line.setValue(middle)
    c = view.confusion()
    assert c.caught + c.false_rejects == N_BAD and c.escapes + c.passed == N_GOOD

    # the histograms hold every scored image
    assert view.good_hist.getData()[1].sum() == N_GOOD and view.bad_hist.getData()[1].sum() == N_BAD

    # apply: saved as a new profile version with that threshold
    assert view.apply_threshold() is not None
    data = yaml.safe_load((widget_profile.folder / "profile.yaml").read_text())
    assert data["version"] == 2 and data["decision"]["image_threshold"] == pytest.approx(middle, abs=1e-6)
    assert (widget_profile.folder / "profile.v1.yaml").is_file()

    # a row opens that image with its overlay and ground truth, inspected again in the worker
    view.open_row(N_GOOD + N_BAD - 1)
    qtbot.waitUntil(lambda: "truth" in view.detail_caption.text(), timeout=30_000)
    assert view.detail.image_item.image.shape == (96, 96, 3)
    assert view.detail.heat_item.image.shape == (96, 96)
    assert len(view.detail.gt_items) == 1  # the scratch's ground-truth contour


@pytest.mark.gui
def test_cancel_stops_the_run(qtbot, view: EvaluationView, dataset: Path) -> None:
    view.dataset_edit.setText(str(dataset))
    view.run()
    assert view.cancel_button.isEnabled()
    view.cancel()
    qtbot.waitUntil(lambda: view.status.text() == "evaluation cancelled", timeout=60_000)
    assert view.result is None and view.run_button.isEnabled()


@pytest.mark.gui
def test_panel_keeps_editor_in_step(qtbot, station_worker, eng_settings, widget_profile, dataset: Path) -> None:
    panel = EngineerPanel(station_worker, eng_settings)
    qtbot.addWidget(panel)
    panel.open_profile(widget_profile.folder)
    assert panel.evaluation.profile.name == "widget"
    _run(qtbot, panel.evaluation, dataset)
    # unsaved edit in the editor survives a threshold applied from the evaluation view
    panel.editor.fields["object"].widget.setText("washer")
    panel.evaluation.set_threshold(0.42)
    panel.evaluation.apply_threshold()
    assert panel.editor.version_label.text() == "v2"
    assert panel.editor.fields["decision.image_threshold"].get() == "0.42"
    assert panel.editor.fields["object"].get() == "washer"
    panel.editor.save()
    data = yaml.safe_load((widget_profile.folder / "profile.yaml").read_text())
    assert (data["version"], data["object"], data["decision"]["image_threshold"]) == (3, "washer", 0.42)
    for view in (panel.editor, panel.evaluation, panel.models):
        wait_idle(qtbot, view.jobs)
