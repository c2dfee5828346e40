"""Fixtures for the station's GUI tests: a small product line, a variation profile, a window.

The line is generated once per session: 72×72 "brushed plate" images (good ones differ by
noise and a small shift; bad ones carry a dark spot), a corrupt file, and a profile using the
real weight-free ``variation`` pipeline at a small working size so that each inspection takes
tens of milliseconds on 2 shared cores.
"""

from __future__ import annotations

import gc

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import QSettings  # noqa: E402

from inspector.imaging import write_png  # noqa: E402
from inspector.profile import ProductProfile, save_profile  # noqa: E402
from inspector.settings import Settings  # noqa: E402
from tests.ui.conftest_engineer import (  # noqa: E402,F401 - the engineer-tool fixtures
    editor,
    eng_settings,
    shots,
    station_worker,
    widget_profile,
)

SIZE = 72
REASONS = ["spot", "scratch", "other"]


def plate(seed: int, defect: bool = False) -> np.ndarray:
    """A brushed plate; ``defect`` adds a dark spot centred at (x=48, y=22)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    shift = rng.integers(-1, 2)
    base = 140 + 12 * np.sin((xx + shift) / 2.5) + rng.normal(0, 3, (SIZE, SIZE))
    img = np.stack([base, base * 0.95, base * 0.85], axis=-1)
    if defect:
        cv2.circle(img, (48, 22), 6, (25, 25, 25), -1)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_profile(folder: Path, name: str = "plate", pipeline: str = "variation") -> Path:
    refs = folder / "references"
    refs.mkdir(parents=True, exist_ok=True)
    shots = []
    for i in range(4):
        write_png(refs / f"ref_{i}.png", plate(1000 + i))
        shots.append(f"references/ref_{i}.png")
    p = ProductProfile(name=name, pipeline=pipeline, object="plate", reference_shots=shots, reason_codes=REASONS)
    p.variation.working_size = SIZE
    p.variation.alignment = "none"
    p.variation.memory = "global"
    p.variation.pyramid_levels = 2
    p.variation.photometric = False
    p.variation.smoothing_sigma = 2.0
    save_profile(p, folder)
    return folder


@pytest.fixture(autouse=True)
def collect_garbage_in_gui_thread() -> Iterator[None]:
    """Collect each test's Qt garbage here, in the GUI thread (see inspector/ui/gc_guard.py)."""
    yield
    gc.collect()


@pytest.fixture(scope="session")
def station_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    root = tmp_path_factory.mktemp("station")
    mp = pytest.MonkeyPatch()
    mp.setenv("INSPECTOR_HOME", str(root / "home"))
    mp.setenv("INSPECTOR_CONFIG", str(root / "settings.yaml"))
    mp.setenv("HF_HUB_OFFLINE", "1")
    profiles = root / "profiles"
    make_profile(profiles / "plate")
    broken = profiles / "needs_weights"
    make_profile(broken, name="needs_weights", pipeline="fade")
    line = root / "line"
    write_png(line / "000_good.png", plate(1))
    write_png(line / "001_bad.png", plate(2, defect=True))
    write_png(line / "002_good.png", plate(3))
    (line / "003_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    write_png(line / "004_bad.png", plate(4, defect=True))
    yield {"root": root, "profiles": profiles, "profile": profiles / "plate", "weights": broken, "line": line}
    mp.undo()


@pytest.fixture
def station_settings(station_env: dict[str, Path], tmp_path: Path) -> Settings:
    return Settings(
        model_dir=station_env["root"] / "models",
        cache_dir=station_env["root"] / "home" / "cache",
        records_path=tmp_path / "records" / "records.sqlite",
        archive_dir=tmp_path / "records" / "archive",
        archive_images=True,
        profiles_dir=station_env["profiles"],
        station_id="st-test",
        device="cpu",
        precision="fp32",
    )


@pytest.fixture
def qsettings(tmp_path: Path) -> QSettings:
    return QSettings(str(tmp_path / "station.ini"), QSettings.Format.IniFormat)


@pytest.fixture
def window(qtbot, station_settings: Settings, qsettings: QSettings):
    from inspector.ui.main_window import MainWindow

    win = MainWindow(settings=station_settings, qsettings=qsettings)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    win.activateWindow()
    yield win
    win.close()
    assert not win.worker.is_running(), "closing the window must stop the worker thread"
