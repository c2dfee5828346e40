"""Shared fixtures of the engineer-tool tests (``tests/ui/test_engineer_*.py``).

``tests/ui/conftest.py`` imports the fixtures from here, so every test under ``tests/ui`` can
request them; the test files import only the plain helpers (``wait_idle``, ``write_product``, ...).
The station's own fixtures live in ``tests/ui/conftest.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from inspector.imaging import write_png
from inspector.models.hub import ModelHub
from inspector.profile import ProductProfile, load_profile, new_profile, save_profile
from inspector.profile_refs import add_reference_shots
from inspector.settings import Settings

SIZE = 96  # px side of the synthetic product images
WORKING = 64  # variation working size used by the tests (small = fast)
JOB_TIMEOUT_MS = 30_000


def product_image(seed: int, defect: bool = False) -> np.ndarray:
    """A grey part (disc with a bore) on a dark background with mild noise; ``defect`` adds a dark scratch."""
    rng = np.random.default_rng(seed)
    img = np.full((SIZE, SIZE, 3), 40, np.uint8)
    cv2.circle(img, (SIZE // 2, SIZE // 2), 34, (170, 170, 165), -1)
    cv2.circle(img, (SIZE // 2, SIZE // 2), 10, (60, 60, 60), -1)
    noise = rng.normal(0, 3, img.shape)
    img = np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    if defect:
        x = int(rng.integers(30, 50))
        cv2.line(img, (x, 22), (x + 20, 44), (10, 10, 10), 4)
    return img


def write_product(path: Path, seed: int, defect: bool = False) -> Path:
    return write_png(path, product_image(seed, defect))


@pytest.fixture
def eng_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings whose every folder (profiles, cache, models, config) lies in tmp_path."""
    home = tmp_path / "home"
    for name in Settings.model_fields:
        monkeypatch.delenv(f"INSPECTOR_{name.upper()}", raising=False)
    monkeypatch.setenv("INSPECTOR_HOME", str(home))
    monkeypatch.setenv("INSPECTOR_CONFIG", str(home / "settings.yaml"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return Settings(profiles_dir=tmp_path / "profiles", device="cpu")


@pytest.fixture
def station_worker(qtbot, eng_settings: Settings) -> Iterator:
    """The station's real worker thread with a CPU hub."""
    from inspector.ui.worker import StationWorker

    worker = StationWorker(hub=ModelHub(device="cpu"), settings=eng_settings).start()
    yield worker
    worker.stop()


@pytest.fixture
def shots(tmp_path: Path) -> list[Path]:
    """Three good shots of the synthetic part, outside any profile folder."""
    return [write_product(tmp_path / "camera" / f"good_{i}.png", seed=i) for i in range(3)]


@pytest.fixture
def widget_profile(eng_settings: Settings, shots: list[Path]) -> ProductProfile:
    """A saved variation profile (v1) with two reference shots."""
    path = new_profile("widget", "widget", "variation", eng_settings.profiles_dir)
    profile = load_profile(path)
    add_reference_shots(profile, shots[:2])
    profile.variation.working_size = WORKING
    save_profile(profile)
    return load_profile(path)


@pytest.fixture
def editor(qtbot, station_worker, eng_settings: Settings, widget_profile: ProductProfile):
    """A profile editor with ``widget_profile`` loaded and its start-up jobs finished."""
    from inspector.ui.profile_editor import ProfileEditor

    ed = ProfileEditor(station_worker, eng_settings)
    qtbot.addWidget(ed)
    ed.load(widget_profile.folder)
    wait_idle(qtbot, ed.jobs)
    return ed


def wait_idle(qtbot, jobs, timeout_ms: int = JOB_TIMEOUT_MS) -> None:
    """Wait until a JobClient has no job running (all done/failed signals delivered)."""
    qtbot.waitUntil(lambda: not jobs._jobs, timeout=timeout_ms)
