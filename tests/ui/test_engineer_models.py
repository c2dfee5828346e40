"""Model store view: states from the manifest, bundle import in the worker, device choice."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from inspector.models.store import ModelStore
from inspector.settings import Settings
from inspector.ui.model_store_view import ModelStoreView
from tests.ui.conftest_engineer import wait_idle

pytestmark = pytest.mark.gui

GOOD = b"tiny backbone weights\n" * 50
OTHER = b"tiny sam weights\n" * 40


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    manifest = {
        "format": 1,
        "models": {
            "tiny_backbone": {
                "kind": "backbone", "arch": "resnet18", "licence": "Apache-2.0", "size_mb": 0.001,
                "files": {"backbone.bin": {"sha256": hashlib.sha256(GOOD).hexdigest()}},
            },
            "tiny_sam": {
                "kind": "sam", "arch": "vit_b", "licence": "Apache-2.0", "size_mb": 0.001,
                "files": {"sam.bin": {"sha256": hashlib.sha256(OTHER).hexdigest()}},
            },
        },
    }
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump(manifest))
    return ModelStore(tmp_path / "store", manifest_path=path)


@pytest.fixture
def view(qtbot, station_worker, eng_settings, store) -> ModelStoreView:
    v = ModelStoreView(station_worker, eng_settings, store=store)
    qtbot.addWidget(v)
    qtbot.waitUntil(lambda: bool(v.states) and v.device_combo.count() > 1, timeout=30_000)
    wait_idle(qtbot, v.jobs)
    return v


def test_lists_states_and_imports_bundle(qtbot, view: ModelStoreView, tmp_path: Path) -> None:
    assert [view.table.item(r, 0).text() for r in range(view.table.rowCount())] == ["tiny_backbone", "tiny_sam"]
    assert view.state_of("tiny_backbone") == "missing" and view.state_of("tiny_sam") == "missing"
    assert view.table.item(0, 5).text() == "Apache-2.0"

    bundle = tmp_path / "bundle"
    (bundle / "tiny_backbone").mkdir(parents=True)
    (bundle / "tiny_backbone" / "backbone.bin").write_bytes(GOOD)
    view.import_bundle(bundle)
    qtbot.waitUntil(lambda: view.state_of("tiny_backbone") == "installed", timeout=30_000)
    wait_idle(qtbot, view.jobs)
    assert view.status.text().startswith("imported 1 model(s): tiny_backbone — 1 installed, 1 missing")
    assert view.state_of("tiny_sam") == "missing"

    # a damaged file shows as corrupt after a full verify
    (view.store.root / "tiny_backbone" / "backbone.bin").write_bytes(GOOD[:-1] + b"X")
    view.verify()
    qtbot.waitUntil(lambda: view.state_of("tiny_backbone") == "corrupt", timeout=30_000)
    wait_idle(qtbot, view.jobs)
    assert view.table.item(0, 2).toolTip()

    # a bundle whose file fails its checksum is refused with the reason
    bad = tmp_path / "bad_bundle"
    (bad / "tiny_sam").mkdir(parents=True)
    (bad / "tiny_sam" / "sam.bin").write_bytes(OTHER + b"!")
    view.import_bundle(bad)
    qtbot.waitUntil(lambda: "sam.bin" in view.status.text(), timeout=30_000)
    wait_idle(qtbot, view.jobs)
    assert view.state_of("tiny_sam") == "missing"


def test_device_choice_is_saved(qtbot, view: ModelStoreView, eng_settings: Settings, monkeypatch) -> None:
    assert view.device_combo.itemData(1) == "cpu"
    assert "CPU" in view.device_label.text()
    calls: list[str] = []
    monkeypatch.setattr(view.worker, "set_device", calls.append)
    seen: list[str] = []
    view.device_changed.connect(seen.append)
    view.apply_device("cpu")
    assert Settings.load().device == "cpu"  # written to the settings file (INSPECTOR_CONFIG)
    assert calls == ["cpu"] and seen == ["cpu"]


def test_needed_by_column(qtbot, station_worker, eng_settings, store) -> None:
    from inspector.profile import load_profile, new_profile, save_profile

    for name, pipeline in (("cap", "saa"), ("tube", "saa"), ("plain", "variation")):
        prof = load_profile(new_profile(name, name, pipeline, eng_settings.profiles_dir), check_files=False)
        prof.models.sam = "tiny_sam"
        prof.models.backbone = "tiny_backbone" if name == "cap" else "wide_resnet50_2"
        save_profile(prof)
    v = ModelStoreView(station_worker, eng_settings, store=store)
    qtbot.addWidget(v)
    qtbot.waitUntil(lambda: bool(v.needed), timeout=30_000)
    wait_idle(qtbot, v.jobs)
    assert v.needed_by("tiny_sam") == "cap, tube"  # the variation profile loads no model
    assert v.needed_by("tiny_backbone") == "cap"
    assert "cap" in v.table.item(v.row_of("tiny_sam"), 3).toolTip()


def test_download_with_progress(qtbot, view: ModelStoreView) -> None:
    from tests.support.http_files import FileServer

    assert not view.download_button.isEnabled()
    view.table.selectRow(view.row_of("tiny_sam"))
    assert not view.download_button.isEnabled()  # no URL in the manifest and no mirror
    assert "no download URL" in view.download_button.toolTip()
    progress: list[int] = []
    view.progress.valueChanged.connect(progress.append)
    with FileServer({"/tiny_sam/sam.bin": OTHER}) as server:
        view.mirror_edit.setText(server.url)
        assert view.download_button.isEnabled()
        view.download_button.click()
        qtbot.waitUntil(lambda: view.state_of("tiny_sam") == "installed", timeout=30_000)
        wait_idle(qtbot, view.jobs)
        assert [r.path for r in server.requests] == ["/tiny_sam/sam.bin"]
    assert (view.store.root / "tiny_sam" / "sam.bin").read_bytes() == OTHER
    assert view.status.text().startswith("downloaded tiny_sam")
    assert progress and max(progress) == 1000
    assert view.state_of("tiny_backbone") == "missing"

    # a server that is gone: a clear message pointing to the offline path
    view.table.selectRow(view.row_of("tiny_backbone"))
    view.mirror_edit.setText("http://127.0.0.1:9")
    view.download_button.click()
    qtbot.waitUntil(lambda: "download failed" in view.status.text(), timeout=30_000)
    wait_idle(qtbot, view.jobs)
    assert "Import bundle" in view.status.text() and view.state_of("tiny_backbone") == "missing"
