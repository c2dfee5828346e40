"""Reference shots in the editor: import copies files under hash names and rebuilds the bank."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from PySide6.QtCore import Qt

from inspector.cache import ArrayCache
from inspector.detect.variation import VariationDetector
from inspector.ui.engineer import EngineerPanel
from inspector.ui.profile_editor import ProfileEditor
from tests.ui.conftest_engineer import product_image, wait_idle, write_product

pytestmark = pytest.mark.gui


def test_import_copies_files_and_rebuilds_bank(qtbot, editor: ProfileEditor, widget_profile, shots,
                                               tmp_path: Path) -> None:
    banks = ArrayCache().root / VariationDetector.cache_namespace  # one prepared bank per reference set
    before = set(banks.glob("*.npz"))
    refs = editor.references
    assert refs.list.count() == 2
    broken = tmp_path / "camera" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    progress: list[float] = []
    refs.progress.valueChanged.connect(lambda v: progress.append(v))

    refs.add_files([shots[2], broken, shots[0]])  # shots[0] is already a reference
    qtbot.waitUntil(lambda: "reference bank ready" in refs.status.text(), timeout=30_000)
    wait_idle(qtbot, editor.jobs)
    assert "broken.png: " in refs.refused.text()

    digest = hashlib.sha256(shots[2].read_bytes()).hexdigest()[:16]
    new_rel = f"references/{shots[2].stem}_{digest}.png"  # its name and its hash
    folder = widget_profile.folder
    assert (folder / new_rel).read_bytes() == shots[2].read_bytes()
    assert refs.shots() == [*widget_profile.reference_shots, new_rel]
    assert refs.list.count() == 3
    assert progress and max(progress) == 1000
    detector = editor.engine.inspector.detector
    assert not detector.cache_hit and len(set(banks.glob("*.npz")) - before) == 1  # rebuilt once, not cached
    assert detector.state["loo_maps"].shape[0] == 3  # leave-one-out calibration over the three references
    assert editor.is_dirty()  # the list changed; the file copy alone changed nothing on disk
    assert yaml.safe_load((folder / "profile.yaml").read_text())["reference_shots"] == widget_profile.reference_shots

    editor.save()
    assert yaml.safe_load((folder / "profile.yaml").read_text())["reference_shots"] == refs.shots()

    # the broken file was refused and named, the good ones kept
    refs.add_files([broken])
    qtbot.waitUntil(lambda: "refused" in refs.refused.text(), timeout=30_000)
    assert "broken.png: " in refs.refused.text() and not refs.refused.isHidden()
    assert refs.status.text() == "0 reference shot(s) added"
    assert refs.shots() == yaml.safe_load((folder / "profile.yaml").read_text())["reference_shots"]


def test_add_folder_and_remove(qtbot, editor: ProfileEditor, widget_profile, tmp_path: Path) -> None:
    refs = editor.references
    src = tmp_path / "more_good"
    for i in range(2):
        write_product(src / f"extra_{i}.png", seed=20 + i)
    refs.add_folder(src)
    qtbot.waitUntil(lambda: len(refs.shots()) == 4, timeout=30_000)
    wait_idle(qtbot, editor.jobs)
    qtbot.waitUntil(lambda: all(not refs.list.item(i).icon().isNull() for i in range(refs.list.count())),
                    timeout=10_000)

    removed = refs.list.item(0).data(Qt.ItemDataRole.UserRole)
    refs.list.item(0).setSelected(True)
    refs.remove_selected()
    assert removed not in refs.shots() and len(refs.shots()) == 3
    assert (widget_profile.folder / removed).is_file()  # files stay for older versions
    wait_idle(qtbot, editor.jobs)
    editor.save()
    saved = yaml.safe_load((widget_profile.folder / "profile.yaml").read_text())
    assert saved["reference_shots"] == refs.shots() and saved["version"] == 2


def test_panel_adds_station_frame(qtbot, station_worker, eng_settings, widget_profile) -> None:
    panel = EngineerPanel(station_worker, eng_settings)
    qtbot.addWidget(panel)
    panel.open_profile(widget_profile.folder)
    frame = product_image(99)
    rel = panel.add_current_image(frame)
    assert rel is not None and rel in panel.editor.references.shots()
    from inspector.imaging import read_image

    np.testing.assert_array_equal(read_image(widget_profile.folder / rel), frame)
    qtbot.waitUntil(lambda: "reference bank" in panel.editor.references.status.text(), timeout=30_000)
    for view in (panel.editor, panel.evaluation, panel.models):
        wait_idle(qtbot, view.jobs)
