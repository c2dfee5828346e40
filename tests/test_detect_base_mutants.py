"""Known-answer tests of :mod:`inspector.detect.base`: Region/Detection, reference hashes, the stage
timer and the Detector base class's timing and required-model helpers (clock replaced by a script)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from inspector.detect import base as base_mod
from inspector.detect.base import Detection, Detector, Region, StageTimer, reference_hashes


class _Clock:
    """``time.perf_counter`` replaced by a scripted sequence of readings."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *readings: float) -> None:
        self.readings = list(readings)
        monkeypatch.setattr(base_mod.time, "perf_counter", self)

    def __call__(self) -> float:
        return self.readings.pop(0)


class _Det(Detector):
    name = "t"
    requires = ("clip", "sam", "grounding", "backbone")

    def __init__(self, own: dict[str, float] | None = None) -> None:
        super().__init__()
        self.own = own or {}
        self.seen: list[tuple[str, Any]] = []

    def prepare(self, profile: Any, hub: Any, progress: Any = None) -> None:  # pragma: no cover - unused
        pass

    def analyse(self, image: np.ndarray) -> Any:
        self.seen.append(("analyse", image))
        return "A"

    def finish(self, analysis: Any, image: np.ndarray) -> Detection:
        self.seen.append(("finish", analysis))
        return Detection(np.zeros((2, 2)), 0.5, timings=dict(self.own))


def test_region_to_json_plain_types() -> None:
    r = Region(box=(np.int64(1), 2.0, np.int32(3), 4), score=np.float32(0.75), label="scratch",
               area_px=np.int64(9), mask=np.ones((2, 2), bool))
    out = r.to_json()
    assert out == {"box": [1, 2, 3, 4], "score": 0.75, "label": "scratch", "area_px": 9}
    assert [type(v) for v in out["box"]] == [int] * 4
    assert type(out["score"]) is float and type(out["area_px"]) is int
    d = Region(box=(0, 0, 1, 1), score=0.5)
    assert d.to_json() == {"box": [0, 0, 1, 1], "score": 0.5, "label": "anomaly", "area_px": 0}
    assert d.mask is None


def test_detection_casts_and_checks_its_map() -> None:
    det = Detection([[0.0, 1.5], [2.0, 3.0]], np.float64(0.25))
    assert det.anomaly_map.dtype == np.float32
    np.testing.assert_array_equal(det.anomaly_map, np.array([[0, 1.5], [2, 3]], np.float32))
    assert type(det.image_score) is float and det.image_score == 0.25
    assert det.regions == [] and det.timings == {} and det.extras == {}
    for shape in ((2, 2, 1), (4,), ()):
        msg = f"anomaly_map must be 2-D, got shape {shape}"
        with pytest.raises(ValueError, match=f"^{re.escape(msg)}$"):
            Detection(np.zeros(shape), 0.0)


def test_reference_hashes_are_sha256_in_order(tmp_path: Path) -> None:
    paths = []
    for i, data in enumerate([b"first", b"", b"third" * 1000]):
        p = tmp_path / f"ref{i}.png"
        p.write_bytes(data)
        paths.append(p)
    want = [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]
    assert reference_hashes(SimpleNamespace(name="p"), paths, ValueError) == want
    assert reference_hashes(SimpleNamespace(name="p"), [], ValueError) == []


def test_an_unreadable_reference_raises_the_given_error_naming_profile_and_file(tmp_path: Path) -> None:
    class Boom(Exception):
        pass

    good = tmp_path / "good.png"
    good.write_bytes(b"x")
    missing = tmp_path / "gone.png"
    with pytest.raises(Boom) as err:
        reference_hashes(SimpleNamespace(name="bottle"), [good, missing], Boom)
    cause = err.value.__cause__
    assert isinstance(cause, OSError)
    assert str(err.value) == f"profile 'bottle': reference shot {missing}: cannot read ({cause})"


def test_stage_timer_adds_up_per_stage_even_when_the_stage_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    _Clock(monkeypatch, 10.0, 10.25, 20.0, 20.5, 30.0, 31.0)
    timer = StageTimer()
    assert timer.timings == {}
    with timer("sam"):
        pass
    assert timer.timings == {"sam": 0.25}
    with timer("sam"):
        pass
    assert timer.timings == {"sam": 0.75}
    with pytest.raises(KeyError), timer("clip"):
        raise KeyError("x")
    assert timer.timings == {"sam": 0.75, "clip": 1.0}


def test_detector_starts_unprepared_and_retune_swaps_the_profile() -> None:
    d = _Det()
    assert d.profile is None and d.hub is None
    p = SimpleNamespace(name="p")
    d.retune(p)
    assert d.profile is p and d.hub is None


def test_required_models_reads_each_required_kind_from_the_profile() -> None:
    class Key:
        def __str__(self) -> str:
            return "key-from-str"

    prof = SimpleNamespace(models=SimpleNamespace(clip="vit", sam="", grounding=Key()))  # no backbone at all
    assert _Det.required_models(prof) == [("clip", "vit"), ("grounding", "key-from-str")]
    prof = SimpleNamespace(models=SimpleNamespace(backbone="r18", sam="sam_b", clip=None))
    assert _Det.required_models(prof) == [("sam", "sam_b"), ("backbone", "r18")]
    assert Detector.required_models(prof) == []


def test_timed_analyse_returns_the_analysis_and_its_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    _Clock(monkeypatch, 5.0, 7.5)
    d = _Det()
    img = np.zeros((2, 2, 3), np.uint8)
    analysis, seconds = d.timed_analyse(img)
    assert (analysis, seconds) == ("A", 2.5) and d.seen == [("analyse", img)]


def test_timed_finish_fills_in_missing_timings_only(monkeypatch: pytest.MonkeyPatch) -> None:
    img = np.zeros((2, 2, 3), np.uint8)
    _Clock(monkeypatch, 1.0, 1.125)
    det = _Det().timed_finish("X", img)
    assert det.timings == {"finish": 0.125}
    _Clock(monkeypatch, 1.0, 1.5)
    det = _Det().timed_finish("X", img, 0.0)
    assert det.timings == {"finish": 0.5, "analyse": 0.0}
    _Clock(monkeypatch, 1.0, 2.0)
    d = _Det(own={"finish": 9.0, "analyse": 8.0})
    det = d.timed_finish("X", img, 3.0)
    assert det.timings == {"finish": 9.0, "analyse": 8.0} and d.seen == [("finish", "X")]


def test_detect_runs_both_stages_and_times_them(monkeypatch: pytest.MonkeyPatch) -> None:
    _Clock(monkeypatch, 100.0, 100.75, 200.0, 200.25)
    d = _Det()
    img = np.zeros((2, 2, 3), np.uint8)
    det = d.detect(img)
    assert det.timings == {"finish": 0.25, "analyse": 0.75}
    assert d.seen == [("analyse", img), ("finish", "A")]
