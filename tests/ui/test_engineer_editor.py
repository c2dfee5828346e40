"""Profile editor: edit through the widgets, validation as typed, save with version bump, live preview."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QGroupBox

from inspector.detect.variation import VariationDetector
from inspector.profile import ProfileError, load_profile
from inspector.ui.profile_editor import ProfileEditor
from tests.ui.conftest_engineer import wait_idle, write_product

pytestmark = pytest.mark.gui


def _type(qtbot, editor: ProfileEditor, path: str, text: str) -> None:
    widget = editor.fields[path].widget
    widget.clear()
    qtbot.keyClicks(widget, text)


def test_edit_through_widgets_and_save(qtbot, editor: ProfileEditor, widget_profile) -> None:
    folder = widget_profile.folder
    assert editor.fields["name"].widget.isReadOnly()
    _type(qtbot, editor, "object", "washer")
    editor.fields["prompts.class_specific"].widget.setPlainText("scratch on {object}\n\ncrack\n")
    anomalous = editor.fields["prompts.anomalous_states"].widget
    anomalous.override.setChecked(True)
    anomalous.text.setPlainText("broken\nchipped")
    _type(qtbot, editor, "properties.max_area_ratio", "0.3")
    _type(qtbot, editor, "properties.top_k", "3")
    _type(qtbot, editor, "image_scales", "240, 448")
    _type(qtbot, editor, "decision.image_threshold", "0.62")
    _type(qtbot, editor, "decision.min_defect_area_px", "12")
    editor.fields["reason_codes"].widget.setPlainText("scratch\ndent")
    _type(qtbot, editor, "variation.smoothing_sigma", "2.5")
    editor.preview.set_roi([(5, 5), (90, 5), (90, 90), (5, 90)], emit=True)
    assert editor.is_dirty()
    assert editor.save_button.isEnabled()

    prompts: list[str] = []
    editor.note_prompt = lambda _parent, title: prompts.append(title) or "washers now; tighter area"
    qtbot.mouseClick(editor.save_button, Qt.MouseButton.LeftButton)

    assert prompts == ["widget: v1 → v2"]  # Save asks for the change note
    data = yaml.safe_load((folder / "profile.yaml").read_text())
    assert data["version"] == 2
    assert data["change_note"] == "washers now; tighter area" and data["saved_at"]
    assert data["object"] == "washer"
    assert data["prompts"]["class_specific"] == ["scratch on {object}", "crack"]
    assert data["prompts"]["anomalous_states"] == ["broken", "chipped"]
    assert data["prompts"]["normal_states"] is None
    assert data["properties"]["max_area_ratio"] == 0.3
    assert data["properties"]["top_k"] == 3
    assert data["image_scales"] == [240, 448]
    assert data["decision"] == {"image_threshold": 0.62, "pixel_threshold": None, "min_defect_area_px": 12}
    assert data["reason_codes"] == ["scratch", "dent"]
    assert data["variation"]["smoothing_sigma"] == 2.5
    assert data["roi"] == [[5.0, 5.0], [90.0, 5.0], [90.0, 90.0], [5.0, 90.0]]
    assert data["reference_shots"] == widget_profile.reference_shots
    old = yaml.safe_load((folder / "profile.v1.yaml").read_text())
    assert old["version"] == 1 and old["object"] == "widget"
    load_profile(folder)  # what was saved passes `inspector profile validate`
    assert not editor.is_dirty()
    assert editor.version_label.text() == "v2"


def test_invalid_input_shows_field_error_and_does_not_save(qtbot, editor: ProfileEditor, widget_profile,
                                                           tmp_path: Path) -> None:
    folder = widget_profile.folder
    before = (folder / "profile.yaml").read_text()
    _type(qtbot, editor, "properties.max_area_ratio", "3")
    # the same message `inspector profile validate` gives for that value in a YAML file
    bad = yaml.safe_load(before)
    bad["properties"]["max_area_ratio"] = 3
    probe = tmp_path / "probe" / "widget"
    probe.mkdir(parents=True)
    (probe / "profile.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(ProfileError) as exc:
        load_profile(probe, check_files=False)
    assert str(exc.value) == "widget/profile.yaml: properties.max_area_ratio: must be in (0, 1], got 3"
    assert editor.field_error("properties.max_area_ratio") == "must be in (0, 1], got 3"
    assert not editor.save_button.isEnabled()
    assert editor.save() is None
    assert (folder / "profile.yaml").read_text() == before
    assert not (folder / "profile.v1.yaml").exists()

    _type(qtbot, editor, "image_scales", "240, abc")
    assert "image_scales.1" not in editor.field_error("image_scales")  # shown under its own field
    assert editor.field_error("image_scales") == "entry 2: must be a whole number, got 'abc'"
    _type(qtbot, editor, "properties.max_area_ratio", "0.5")
    assert editor.field_error("properties.max_area_ratio") == ""
    _type(qtbot, editor, "image_scales", "16")
    assert editor.field_error("image_scales") == "scales must be in [32, 2048] px, got [16]"
    editor.fields["reason_codes"].widget.setPlainText("scratch\nscratch")
    assert editor.field_error("reason_codes") == "reason codes must be unique"
    assert editor.save() is None
    assert (folder / "profile.yaml").read_text() == before


def test_fade_896_on_cpu_warns(qtbot, editor: ProfileEditor) -> None:
    qtbot.waitUntil(lambda: editor.device_type == "cpu", timeout=5000)
    assert editor.cpu_warning.isHidden()  # variation does not use the scales
    editor.fields["pipeline"].widget.setCurrentIndex(editor.fields["pipeline"].widget.findData("fade"))
    assert not editor.cpu_warning.isHidden()
    shown = {b.title(): not b.isHidden() for b in editor.findChildren(QGroupBox)}  # what the engineer sees
    assert shown["fade parameters"] and not shown["variation parameters"]
    _type(qtbot, editor, "image_scales", "240, 448")
    assert editor.cpu_warning.isHidden()


def test_new_and_duplicate(qtbot, editor: ProfileEditor, eng_settings) -> None:
    _type(qtbot, editor, "decision.image_threshold", "0.7")
    dup = editor.duplicate("widget_b")
    assert dup is not None and dup.version == 1 and dup.decision.image_threshold == 0.7
    target = eng_settings.profiles_dir / "widget_b"
    assert sorted(p.name for p in (target / "references").iterdir()) == sorted(
        Path(r).name for r in dup.reference_shots)
    load_profile(target)  # self-contained: every reference shot is inside the new folder
    assert editor.profile.name == "widget_b"
    assert editor.duplicate("widget_b") is None
    assert "already exists" in editor.general_error.text()

    fresh = editor.new_profile("gear", "gear", "saa")
    assert fresh is not None and fresh.pipeline == "saa"
    assert [editor.profile_combo.itemText(i) for i in range(editor.profile_combo.count())] == [
        "gear", "widget", "widget_b"]
    assert editor.new_profile("bad name!", "x") is None
    assert "name" in editor.general_error.text()


def test_preview_reruns_only_cheap_stage_on_threshold_change(qtbot, editor: ProfileEditor, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real_analyse = VariationDetector.analyse

    def counting(self, image):
        calls.append(1)
        return real_analyse(self, image)

    monkeypatch.setattr(VariationDetector, "analyse", counting)
    sample = write_product(tmp_path / "sample.png", seed=11, defect=True)
    editor.preview.add_sample(sample)
    qtbot.waitUntil(lambda: "score" in editor.preview.verdict_label.text(), timeout=30_000)
    wait_idle(qtbot, editor.jobs)
    assert len(calls) == 1
    prepares = editor.engine.prepare_count

    # threshold changes: finish only, the cached analysis is reused, the verdict follows
    _type(qtbot, editor, "decision.image_threshold", "0.01")
    qtbot.waitUntil(lambda: "threshold 0.01" in editor.preview.verdict_label.text(), timeout=30_000)
    wait_idle(qtbot, editor.jobs)
    assert "FAIL" in editor.preview.verdict_label.text()
    _type(qtbot, editor, "decision.min_defect_area_px", "100000")  # larger than the image: nothing can FAIL
    qtbot.waitUntil(lambda: "PASS" in editor.preview.verdict_label.text(), timeout=30_000)
    wait_idle(qtbot, editor.jobs)
    assert "cheap stage only" in editor.preview.effect_label.text()
    assert len(calls) == 1 and editor.engine.prepare_count == prepares

    # a finish-only pipeline parameter (declared by the detector) and the ROI: still no analyse
    _type(qtbot, editor, "variation.smoothing_sigma", "1.5")
    editor.preview.set_roi([(0, 0), (95, 0), (95, 95), (0, 95)], emit=True)
    qtbot.wait(400)
    wait_idle(qtbot, editor.jobs)
    assert len(calls) == 1 and editor.engine.prepare_count == prepares

    # prompts are not read by the weight-free pipeline: nothing to recompute
    editor.fields["prompts.class_specific"].widget.setPlainText("scratch")
    qtbot.wait(400)
    wait_idle(qtbot, editor.jobs)
    assert len(calls) == 1 and editor.engine.prepare_count == prepares

    # a parameter that shapes the reference bank: prepare and analyse again
    _type(qtbot, editor, "variation.feature_stride", "8")
    qtbot.waitUntil(lambda: "re-prepared" in editor.preview.effect_label.text(), timeout=30_000)
    wait_idle(qtbot, editor.jobs)
    assert len(calls) == 2 and editor.engine.prepare_count == prepares + 1


def test_panel_follows_station_profile_and_reloads_it_on_save(qtbot, station_worker, eng_settings,
                                                              widget_profile) -> None:
    from inspector.ui.engineer import EngineerPanel

    with qtbot.waitSignal(station_worker.profile_ready, timeout=30_000):
        station_worker.load_profile(widget_profile.folder)
    panel = EngineerPanel(station_worker, eng_settings)
    qtbot.addWidget(panel)
    assert panel.editor.profile is not None and panel.editor.profile.name == "widget"
    panel.editor.fields["decision.image_threshold"].widget.setText("0.66")
    with qtbot.waitSignal(station_worker.profile_ready, timeout=30_000) as ready:
        panel.editor.save()
    assert ready.args[0].profile.version == 2
    assert station_worker.current_profile().decision.image_threshold == 0.66
    for view in (panel.editor, panel.evaluation, panel.models):
        wait_idle(qtbot, view.jobs)


def test_broken_profile_file_is_reported_and_revert_restores(qtbot, editor: ProfileEditor, eng_settings) -> None:
    broken = eng_settings.profiles_dir / "broken"
    broken.mkdir()
    (broken / "profile.yaml").write_text("name: broken\nproperties: {max_area_ratio: 3}\n")
    assert editor.load(broken) is None
    assert editor.general_error.text() == "broken/profile.yaml: properties.max_area_ratio: must be in (0, 1], got 3"
    assert editor.profile.name == "widget"  # the open profile stays

    _type(qtbot, editor, "object", "changed")
    assert editor.is_dirty() and editor.revert_button.isEnabled()
    qtbot.mouseClick(editor.revert_button, Qt.MouseButton.LeftButton)
    assert editor.fields["object"].get() == "widget" and not editor.is_dirty()
