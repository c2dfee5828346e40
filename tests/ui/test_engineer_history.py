"""Profile lifecycle in the editor: Save asks for a note, History lists and diffs versions, rollback."""

from __future__ import annotations

import pytest
import yaml
from PySide6.QtCore import Qt

from inspector.profile import load_profile
from inspector.ui.profile_editor import ProfileEditor
from inspector.ui.profile_history import ProfileHistoryView

pytestmark = pytest.mark.gui


def _save(qtbot, editor: ProfileEditor, note: str | None) -> None:
    editor.note_prompt = lambda _p, _t: note
    qtbot.mouseClick(editor.save_button, Qt.MouseButton.LeftButton)


def test_save_history_diff_and_rollback(qtbot, editor: ProfileEditor, widget_profile) -> None:
    folder = widget_profile.folder
    editor.fields["author"].widget.setText("dana")
    editor.fields["decision.image_threshold"].widget.setText("0.7")
    _save(qtbot, editor, None)  # cancelled at the note: nothing saved, edits kept
    assert load_profile(folder).version == 1 and editor.is_dirty()
    _save(qtbot, editor, "stricter after audit")
    editor.fields["object"].widget.setText("washer")
    editor.fields["decision.min_defect_area_px"].widget.setText("12")
    _save(qtbot, editor, "washers from line 2")
    assert editor.version_label.text() == "v3"

    view = ProfileHistoryView(folder, author="eve")
    qtbot.addWidget(view)
    rows = [[view.table.item(r, c).text() for c in (0, 2, 3)] for r in range(view.table.rowCount())]
    assert rows == [["v3 (current)", "dana", "washers from line 2"], ["v2", "dana", "stricter after audit"],
                    ["v1", "—", "—"]]
    assert view.table.item(0, 1).text()[:2] == "20"  # the date
    # opens on the last change: v2 -> v3
    assert view.diff_rows() == [("object", "widget", "washer"), ("decision.min_defect_area_px", "0", "12")]
    view.compare(1, 3)  # any two
    assert view.diff_rows() == [("author", "", "dana"), ("object", "widget", "washer"),
                                ("decision.image_threshold", "0.5", "0.7"),
                                ("decision.min_defect_area_px", "0", "12")]
    assert view.diff.horizontalHeaderItem(1).text() == "v1" and view.diff_summary.text() == "4 field(s) differ"

    assert not view.rollback_button.isEnabled()  # nothing selected
    view.select_version(1)
    assert view.rollback_button.isEnabled()
    rolled: list[str] = []
    view.rolled_back.connect(rolled.append)
    view.note_prompt = lambda _p, v: f"back to v{v}"
    qtbot.mouseClick(view.rollback_button, Qt.MouseButton.LeftButton)
    assert rolled == [str(folder)]
    data = yaml.safe_load((folder / "profile.yaml").read_text())
    assert (data["version"], data["object"], data["decision"]["image_threshold"]) == (4, "widget", 0.5)
    assert data["change_note"] == "rollback to v1: back to v1" and data["author"] == "eve"
    assert view.table.item(0, 0).text() == "v4 (current)" and "v1 restored as v4" in view.status.text()


def test_editor_follows_a_rollback(qtbot, editor: ProfileEditor, widget_profile) -> None:
    from inspector.profile import rollback_profile

    editor.fields["object"].widget.setText("washer")
    editor.save("washer")
    assert editor.version_label.text() == "v2"
    rollback_profile(widget_profile.folder, 1)
    editor._on_rolled_back(str(widget_profile.folder))
    assert editor.version_label.text() == "v3" and editor.fields["object"].get() == "widget"
    assert not editor.is_dirty()
