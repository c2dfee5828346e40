"""A small reference-difference detector for tests of the evaluation and CLI plumbing (H2b).

Not a model: it compares each image with the mean of the profile's reference shots, pixel by pixel
(grey level, absolute difference / 255). On the synthetic data of :mod:`tests.support.tiny_datasets`
(flat textured parts, bright or dark square defects) its answer is known: the defect pixels score
high, everything else near 0. Register it with ``register_diff_detector(monkeypatch)``.
"""

from __future__ import annotations

import cv2
import numpy as np

from inspector.detect import Detection, Detector
from inspector.imaging import read_image

NAME = "refdiff"
WORK = 64


class RefDiffDetector(Detector):
    name = NAME

    def prepare(self, profile, hub, progress=None) -> None:  # noqa: ANN001
        self.profile, self.hub = profile, hub
        refs = profile.reference_paths()
        if not refs:
            raise ValueError(f"{NAME} needs at least one reference shot in profile {profile.name!r}")
        grey = [cv2.resize(read_image(p), (WORK, WORK), interpolation=cv2.INTER_AREA).mean(axis=2) for p in refs]
        self.mean = np.mean(grey, axis=0).astype(np.float32)
        if progress:
            progress(1.0, "references ready")

    def analyse(self, image: np.ndarray) -> np.ndarray:
        small = cv2.resize(image, (WORK, WORK), interpolation=cv2.INTER_AREA).mean(axis=2)
        return np.abs(small.astype(np.float32) - self.mean) / 255.0

    def finish(self, analysis: np.ndarray, image: np.ndarray) -> Detection:
        amap = cv2.resize(analysis, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
        return Detection(anomaly_map=amap, image_score=float(amap.max()))


def register_diff_detector(monkeypatch) -> str:  # noqa: ANN001
    import inspector.detect as detect

    monkeypatch.setitem(detect._REGISTRY, NAME, f"{__name__}:RefDiffDetector")
    return NAME
