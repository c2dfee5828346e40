"""The demo product line: layout, determinism, exact masks, packaged profiles, ``inspector demo``."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pytest

from inspector import demo
from inspector.cli import main
from inspector.imaging import read_image
from inspector.profile import load_profile
from inspector.settings import packaged_profiles_dir

SMALL = {"n_train": 2, "n_test_good": 1, "n_per_defect": 1}


@pytest.fixture(scope="module")
def small_line(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return demo.generate_demo_line(tmp_path_factory.mktemp("demo") / "line", seed=0, **SMALL)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_is_mvtec(small_line: Path) -> None:
    for cat, spec in demo.CATEGORIES.items():
        base = small_line / cat
        assert sorted(p.name for p in (base / "train" / "good").iterdir()) == ["000.png", "001.png"]
        assert sorted(p.name for p in (base / "test").iterdir()) == sorted(["good", *spec.defects])
        assert len(spec.defects) >= 3
        for d in spec.defects:
            assert [p.name for p in (base / "test" / d).iterdir()] == ["000.png"]
            mask = read_image(base / "ground_truth" / d / "000_mask.png")
            img = read_image(base / "test" / d / "000.png")
            assert img.shape == (256, 256, 3) and mask.shape == (256, 256, 3)
            assert set(np.unique(mask)) <= {0, 255}
            assert 0 < (mask[..., 0] > 0).mean() < 0.1, f"{cat}/{d}: mask should mark a small defect"
        assert not (base / "ground_truth" / "good").exists()
    marker = json.loads((small_line / demo.MARKER_FILE).read_text())
    assert marker["generator_version"] == demo.GENERATOR_VERSION and marker["seed"] == 0
    assert demo.is_current(small_line, 0, **SMALL)
    assert not demo.is_current(small_line, 0)  # other counts
    assert not demo.is_current(small_line, 1, **SMALL)  # other seed


def test_generation_is_deterministic(small_line: Path, tmp_path: Path) -> None:
    again = demo.generate_demo_line(tmp_path / "again", seed=0, categories=["washer"], **SMALL)
    original = {k: v for k, v in _files(small_line).items() if k.startswith("washer/")}
    assert {k: v for k, v in _files(again).items() if k.startswith("washer/")} == original
    other = demo.generate_demo_line(tmp_path / "other", seed=1, categories=["washer"], **SMALL)
    assert (other / "washer/train/good/000.png").read_bytes() != original["washer/train/good/000.png"]


@pytest.mark.parametrize("category", list(demo.CATEGORIES))
def test_masks_are_exact(category: str) -> None:
    """Outside its mask (with a 3 px anti-aliasing band) a defect changes nothing; inside it changes the image."""
    for i, kind in enumerate(demo.CATEGORIES[category].defects):
        img, mask, clean = demo.render_pair(category, kind, demo._rng(7, category, kind, i))
        assert mask is not None and mask.any()
        diff = np.abs(img.astype(int) - clean.astype(int)).max(axis=2)
        band = cv2.dilate(mask.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
        assert diff[~band].max() == 0, f"{category}/{kind}: pixels changed outside the mask"
        assert (diff[mask] > 4).mean() > 0.6, f"{category}/{kind}: the mask covers unchanged pixels"
    good, none, clean = demo.render_pair(category, None, demo._rng(7, category, "train", 0))
    assert none is None and np.array_equal(good, clean)


def test_single_image_matches_the_line(small_line: Path) -> None:
    img, mask = demo.render_sample("pcb", "bridge", demo._rng(0, "pcb", "bridge", 0))
    assert np.array_equal(img, read_image(small_line / "pcb/test/bridge/000.png"))
    assert np.array_equal(mask, read_image(small_line / "pcb/ground_truth/bridge/000_mask.png")[..., 0] > 0)


def test_demo_line_dir_generates_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []
    real = demo.generate_demo_line

    def counting(root: Path, seed: int = 0, **kw: object) -> Path:  # a cheap stand-in with the real marker
        calls.append(Path(root))
        real(root, seed, categories=list(demo.CATEGORIES), **SMALL)
        marker = json.loads((Path(root) / demo.MARKER_FILE).read_text())
        marker["counts"] = dict(demo.DEFAULT_COUNTS)
        (Path(root) / demo.MARKER_FILE).write_text(json.dumps(marker))
        return Path(root)

    monkeypatch.setattr(demo, "generate_demo_line", counting)
    root = tmp_path / "line"
    assert demo.demo_line_dir(root) == root and len(calls) == 1
    demo.demo_line_dir(root)
    assert len(calls) == 1  # current: not regenerated
    marker = json.loads((root / demo.MARKER_FILE).read_text())
    marker["generator_version"] = demo.GENERATOR_VERSION - 1
    (root / demo.MARKER_FILE).write_text(json.dumps(marker))
    demo.demo_line_dir(root)
    assert len(calls) == 2  # written by another generator version: regenerated
    monkeypatch.setenv("INSPECTOR_HOME", str(tmp_path / "home"))
    assert demo.default_demo_root() == tmp_path / "home" / "demo_line"


def test_profiles_are_written_and_packaged_ones_are_current(tmp_path: Path) -> None:
    line = demo.generate_demo_line(tmp_path / "line", seed=0, n_train=demo.REFERENCE_SHOTS, n_test_good=0,
                                   n_per_defect=0)
    written = demo.write_demo_profiles(tmp_path / "profiles")  # rendered directly
    copied = demo.write_demo_profiles(tmp_path / "copied", line)  # copied from a line
    assert len(written) == len(demo.CATEGORIES)
    for cat, spec in demo.CATEGORIES.items():
        prof = load_profile(tmp_path / "profiles" / f"demo_{cat}")
        assert prof.pipeline == "patchcore" and len(prof.reference_shots) == demo.REFERENCE_SHOTS
        assert prof.patchcore.model_dump(include=set(spec.patchcore)) == spec.patchcore
        assert prof.reason_codes[:-1] == list(spec.reasons[:-1]) and prof.decision.image_threshold == 0.5
        for rel in prof.reference_shots:
            shot = (tmp_path / "profiles" / f"demo_{cat}" / rel).read_bytes()
            assert shot == (line / cat / "train" / "good" / Path(rel).name).read_bytes()
            assert shot == (tmp_path / "copied" / f"demo_{cat}" / rel).read_bytes()
        packaged = packaged_profiles_dir() / f"demo_{cat}"
        shipped = load_profile(packaged)
        stale = "product_profiles/demo_* are stale: run `inspector demo --write-profiles`"
        for key in ("pipeline", "object", "reference_shots", "reason_codes", "decision", "patchcore", "variation",
                    "prompts"):
            assert getattr(shipped, key) == getattr(prof, key), f"{stale} ({key})"
        assert _files(packaged / "references") == _files(tmp_path / "profiles" / f"demo_{cat}" / "references"), stale


def test_cli_write_profiles(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--write-profiles", str(tmp_path / "p")]) == 0
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == sorted(f"demo_{c}" for c in demo.CATEGORIES)
    assert "demo_pcb" in capsys.readouterr().out


@pytest.mark.slow
def test_cli_headless_prints_the_confusion_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["demo", "--headless", "--small", "--root", str(tmp_path / "line"), "--categories", "pcb"])
    out = capsys.readouterr().out
    assert code == 0
    rows = {tuple(line.split()[:2]): line.split()[2:4] for line in out.splitlines() if line.startswith("pcb")}
    good_pass, good_fail = map(int, rows[("pcb", "good")])
    bad_pass, bad_fail = map(int, rows[("pcb", "defect")])
    assert good_pass + good_fail == SMALL["n_test_good"] + 1  # --small: 2 good images
    assert bad_pass + bad_fail == len(demo.CATEGORIES["pcb"].defects)
    assert bad_fail >= 3  # the demo pipeline finds most of them


@pytest.mark.slow
def test_cli_headless_all_categories(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--headless", "--small", "--root", str(tmp_path / "line")]) == 0
    out = capsys.readouterr().out
    for cat in demo.CATEGORIES:
        assert f"{cat} " in out


def test_cli_without_display_falls_back_to_headless(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from inspector.commands import demo as demo_command

    for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    ran: list[tuple[Path, Path, list[str]]] = []
    monkeypatch.setattr(demo_command, "run_headless", lambda *a: ran.append(a) or 0)  # the real one: tests above
    line = tmp_path / "line"
    code = main(["demo", "--small", "--root", str(line), "--categories", "pcb"])
    assert code == 0 and "no display" in capsys.readouterr().err
    assert ran == [(line, packaged_profiles_dir(), ["pcb"])]


def test_cli_opens_the_station_on_the_demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, object] = {}
    fake = types.ModuleType("inspector.ui.app")

    def run_station(profile: Path, source: Path) -> int:
        seen.update(profile=Path(profile), source=Path(source))
        return 0

    fake.run_station = run_station  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "inspector.ui.app", fake)
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    line = tmp_path / "line"
    assert main(["demo", "--small", "--root", str(line), "--category", "washer"]) == 0
    assert seen["profile"] == packaged_profiles_dir() / "demo_washer"
    assert seen["source"] == line / "washer" / "test"


def test_cli_rejects_an_unknown_category(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--headless", "--root", str(tmp_path), "--categories", "bottle"]) == 2
    assert "bottle" in capsys.readouterr().err
