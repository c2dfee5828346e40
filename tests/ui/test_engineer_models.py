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
    assert view.table.item(0, 4).text() == "Apache-2.0"

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
