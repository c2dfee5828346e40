"""Regression tests of the engineer-tool bugs of issue 15 (each failed before its fix)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PySide6.QtCore import QPoint, Qt
from PySide6.QtWidgets import QMessageBox

from inspector.imaging import write_png
from inspector.profile import load_profile, new_profile
from inspector.ui.engineer import EngineerPanel
from inspector.ui.evaluation_view import EvaluationView, confusion_at
from inspector.ui.profile_editor import ProfileEditor
from tests.ui.conftest_engineer import product_image, wait_idle, write_product

pytestmark = pytest.mark.gui

N_GOOD, N_BAD = 3, 3


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    root = tmp_path / "labelled"
    for i in range(N_GOOD):
        write_product(root / "good" / f"g{i}.png", seed=40 + i)
    for i in range(N_BAD):
        write_png(root / "bad" / "scratch" / f"b{i}.png", product_image(50 + i, defect=True))
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


# ------------------------------------------------------------------ bug 1: the threshold spin box
@pytest.mark.parametrize("typed, expected", [("0.8", 0.8), ("0.75", 0.75), ("0.0625", 0.0625)])
def test_typing_a_threshold_keeps_every_keystroke(qtbot, view: EvaluationView, typed: str, expected: float) -> None:
    view.show()
    qtbot.waitExposed(view)
    edit = view.threshold_spin.lineEdit()
    view.threshold_spin.setFocus()
    edit.selectAll()
    qtbot.keyClicks(edit, typed)
    qtbot.keyClick(edit, Qt.Key.Key_Return)
    assert view.threshold_spin.value() == pytest.approx(expected)
    assert view.threshold() == pytest.approx(expected)  # and the line followed
    view.threshold_spin.stepUp()  # the arrows still act at once
    assert view.threshold() == pytest.approx(expected + 0.01)


# ------------------------------------------------------------------ bug 2: the evaluation view
def test_counts_are_right_straight_after_a_run(qtbot, view: EvaluationView, dataset: Path, widget_profile) -> None:
    _run(qtbot, view, dataset)
    t = widget_profile.decision.image_threshold
    assert view.threshold() == pytest.approx(t)  # the line did not move: the counts must be right anyway
    assert view.result is not None
    scored = view.result.scored
    c = confusion_at(np.array([r.score for r in scored]), np.array([r.label for r in scored]), t)
    label = view.confusion_label.text()
    assert f"escapes {c.escapes}</b>" in label and f"of {N_BAD} defective" in label
    assert f"false rejects {c.false_rejects}</b>" in label and f"of {N_GOOD} good" in label
    verdicts = [view.table.item(r, 4).text() for r in range(view.table.rowCount())]
    assert verdicts.count("FAIL") == c.caught + c.false_rejects
    assert "widget v1" in view.profile_label.text() and "variation" in view.profile_label.text()

    metrics = view.status.text()
    assert "images scored" in metrics
    assert view.apply_threshold() is not None
    assert view.status.text() == metrics  # the metrics line stays
    assert "saved as widget v2" in view.message.text()
    assert "widget v2" in view.profile_label.text()  # it says which version it evaluates now


def test_disabled_run_button_says_why(qtbot, station_worker, eng_settings) -> None:
    v = EvaluationView(station_worker, eng_settings)
    qtbot.addWidget(v)
    assert not v.run_button.isEnabled()
    assert "Open a profile" in v.run_hint.text() and "Open a profile" in v.run_button.toolTip()
    assert v.profile_label.text() == "no profile open"


# ------------------------------------------------------------------ bug 3: closing with unsaved edits
def _open_copy(window, station_env, tmp_path: Path) -> Path:
    folder = tmp_path / "plate_copy"
    shutil.copytree(station_env["profile"], folder)
    window.engineer.open_profile(folder)
    window.engineer.editor.fields["object"].widget.setText("edited plate")
    assert window.engineer.has_unsaved_changes
    return folder


@pytest.mark.parametrize("answer", ["cancel", "save", "discard"])
def test_closing_with_unsaved_edits_asks(qtbot, window, station_env, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch, answer: str) -> None:
    folder = _open_copy(window, station_env, tmp_path)
    asked: list[str] = []
    button = {"cancel": QMessageBox.StandardButton.Cancel, "save": QMessageBox.StandardButton.Save,
              "discard": QMessageBox.StandardButton.Discard}[answer]
    monkeypatch.setattr(EngineerPanel, "ask_unsaved", staticmethod(lambda _p, name: asked.append(name) or button))
    window.engineer.editor.note_prompt = lambda _p, _t: "closing shift"
    before = (folder / "profile.yaml").read_text()

    closed = window.close()

    assert asked == ["plate"]
    if answer == "cancel":
        assert not closed and window.isVisible() and window.worker.is_running()
        assert window.engineer.has_unsaved_changes  # nothing lost
        window.engineer.editor.revert()  # let the fixture close the window
    elif answer == "save":
        assert closed
        saved = yaml.safe_load((folder / "profile.yaml").read_text())
        assert saved["object"] == "edited plate" and saved["version"] == 2 and saved["change_note"] == "closing shift"
    else:
        assert closed and (folder / "profile.yaml").read_text() == before


def test_closing_without_edits_does_not_ask(qtbot, window, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(EngineerPanel, "ask_unsaved", staticmethod(lambda *_a: pytest.fail("asked")))
    assert not window.engineer.has_unsaved_changes
    assert window.close()


# ------------------------------------------------------------------ bug 4: the editor layout
def _pos(editor: ProfileEditor, path: str) -> QPoint:
    return editor.fields[path].widget.mapTo(editor, QPoint(0, 0))


def test_inline_error_does_not_move_the_form(qtbot, editor: ProfileEditor) -> None:
    editor.fields["pipeline"].set("saa")  # shows the property prompts
    editor._revalidate()
    editor.resize(1200, 900)
    editor.show()
    qtbot.waitExposed(editor)
    below = _pos(editor, "properties.top_k")
    editor.fields["properties.max_area_ratio"].widget.setText("3")
    qtbot.wait(50)
    assert editor.field_error("properties.max_area_ratio") == "must be in (0, 1], got 3"
    assert _pos(editor, "properties.top_k") == below
    long = "x" * 400  # a long message is cut at the edge (whole in the tooltip), not wrapped
    editor.fields["properties.object_count"].widget.setText(long)
    qtbot.wait(50)
    assert _pos(editor, "properties.top_k") == below
    assert long in editor.fields["properties.object_count"].error.toolTip()


@pytest.mark.parametrize("path, typed, message", [
    ("properties.top_k", "abc", "must be a whole number, got 'abc'"),
    ("image_scales", "240, 44x", "entry 2: must be a whole number, got '44x'"),
    ("decision.image_threshold", "high", "must be a number, got 'high'"),
    ("decision.image_threshold", "1.5", "must be a number in [0, 1] (scores are 0..1), got 1.5"),
    ("variation.working_size", "8", "must be at least 32, got '8'"),
    ("variation.coreset_ratio", "0", "must be greater than 0.0, got '0'"),
])
def test_errors_are_plain_sentences(qtbot, editor: ProfileEditor, path: str, typed: str, message: str) -> None:
    editor.fields[path].widget.setText(typed)
    assert editor.field_error(path) == message


def test_fields_follow_what_the_pipeline_reads(qtbot, editor: ProfileEditor) -> None:
    combo = editor.fields["pipeline"].widget

    def pick(name: str) -> None:
        combo.setCurrentIndex(combo.findData(name))

    pick("variation")  # weight-free: no prompts, no models, no scales
    for path in ("prompts.class_agnostic", "properties.top_k", "image_scales", "models.clip", "models.sam"):
        assert not editor.field_shown(path), path
    for path in ("object", "decision.image_threshold", "variation.working_size"):
        assert editor.field_shown(path), path
    pick("saa")  # GroundingDINO + SAM + backbone: prompts and property prompts, not CLIP or the scales
    assert editor.field_shown("prompts.class_specific") and editor.field_shown("properties.top_k")
    assert editor.field_shown("models.grounding") and editor.field_shown("models.sam")
    assert not editor.field_shown("models.clip") and not editor.field_shown("image_scales")
    pick("fade")  # CLIP: prompts and scales, no property prompts
    assert editor.field_shown("prompts.class_agnostic") and editor.field_shown("image_scales")
    assert editor.field_shown("models.clip") and not editor.field_shown("models.sam")
    assert not editor.field_shown("properties.top_k")


def test_switching_profile_forgets_the_previous_product(qtbot, editor: ProfileEditor, eng_settings,
                                                       tmp_path: Path) -> None:
    sample = write_product(tmp_path / "sample.png", seed=5)
    editor.preview.add_sample(sample)
    editor.references.status.setText("reference bank ready (2 shots)")
    other = new_profile("gear", "gear", "fade", eng_settings.profiles_dir)
    editor.load(other.parent)
    assert editor.preview.sample_combo.count() == 0 and editor.preview.sample_path() is None
    assert editor.references.status.text() == ""
    assert editor.preview.start_dir == str(load_profile(other.parent, check_files=False).folder)


def test_file_dialogs_open_near_the_profile(qtbot, editor: ProfileEditor, view: EvaluationView,
                                            monkeypatch: pytest.MonkeyPatch, widget_profile) -> None:
    from inspector.ui import evaluation_view, preview_panel, reference_shots

    seen: list[str] = []
    monkeypatch.setattr(preview_panel.QFileDialog, "getOpenFileName",
                        staticmethod(lambda _p, _t, d="", _f="": seen.append(d) or ("", "")))
    monkeypatch.setattr(reference_shots.QFileDialog, "getOpenFileNames",
                        staticmethod(lambda _p, _t, d="", _f="": seen.append(d) or ([], "")))
    monkeypatch.setattr(evaluation_view.QFileDialog, "getExistingDirectory",
                        staticmethod(lambda _p, _t, d="": seen.append(d) or ""))
    editor.preview.open_button.click()
    editor.references.add_files_button.click()
    view.browse_button.click()
    assert seen == [str(widget_profile.folder)] * 3


# ------------------------------------------------------------------ bug 5: validation in the editor
def test_editor_reports_what_validate_reports(qtbot, editor: ProfileEditor, eng_settings) -> None:
    dup = eng_settings.profiles_dir / "dup"
    dup.mkdir()
    (dup / "profile.yaml").write_text("name: dup\ndecision:\n  image_threshold: 0.5\n  image_threshold: 2\n")
    assert editor.load(dup) is None
    assert editor.general_error.text() == ("dup/profile.yaml: decision.image_threshold: duplicate key "
                                           "'image_threshold' (line 4; first given on line 3); keep one of them")
    editor.fields["decision.image_threshold"].widget.setText("inf")
    assert editor.field_error("decision.image_threshold").startswith("must be a number in [0, 1]")
    assert not editor.save_button.isEnabled()
    editor.fields["decision.min_defect_area_px"].widget.setText("100000000000000000000000000000")
    assert editor.field_error("decision.min_defect_area_px").startswith("must be at most 16777216 px")
    assert np.isfinite(editor.profile.decision.image_threshold)
