"""One timing path: ``Detector.timed_analyse`` / ``timed_finish``, used by ``detect`` and by the Inspector."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from inspector.detect.base import Detection, Detector


class _Sleepy(Detector):
    name = "sleepy"

    def __init__(self, own_finish: float | None = None) -> None:
        super().__init__()
        self.own_finish = own_finish

    def prepare(self, profile: Any, hub: Any, progress: Any = None) -> None:  # pragma: no cover - unused
        self.profile = profile

    def analyse(self, image: np.ndarray) -> Any:
        time.sleep(0.05)
        return float(image.mean())

    def finish(self, analysis: Any, image: np.ndarray) -> Detection:
        time.sleep(0.02)
        det = Detection(anomaly_map=np.zeros(image.shape[:2], np.float32), image_score=analysis)
        if self.own_finish is not None:
            det.timings["finish"] = self.own_finish  # a detector that times its stages itself wins
        return det


def test_detect_times_both_stages_once() -> None:
    det = _Sleepy().detect(np.full((4, 4, 3), 3, np.uint8))
    assert det.image_score == 3.0
    assert 0.05 <= det.timings["analyse"] < 1.0 and 0.02 <= det.timings["finish"] < det.timings["analyse"]


def test_timed_finish_keeps_the_detectors_own_timing() -> None:
    d = _Sleepy(own_finish=123.0)
    analysis, seconds = d.timed_analyse(np.zeros((2, 2, 3), np.uint8))
    assert seconds >= 0.05
    det = d.timed_finish(analysis, np.zeros((2, 2, 3), np.uint8))  # e.g. a preview with a cached analysis
    assert det.timings == {"finish": 123.0}
