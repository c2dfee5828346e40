"""A small reference-difference detector for tests of the evaluation and CLI plumbing (H2b).

Not a model: it compares each image with the mean of the profile's reference shots, pixel by pixel
(grey level, absolute difference / 255). On the synthetic data of :mod:`tests.support.tiny_datasets`
(flat textured parts, bright or dark square defects) its answer is known: the defect pixels score
high, everything else near 0. A test registers it by asking for the ``refdiff`` fixture (pipeline
``refdiff``, for ``--pipeline``) or ``refdiff_as_variation`` (profiles naming ``variation`` get it;
a profile names only built-in pipelines); import the fixture from here.
"""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np
import pytest

from inspector.detect import Detection, Detector, registered_detector
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


@pytest.fixture
def refdiff() -> Iterator[str]:
    """Pipeline ``refdiff`` is :class:`RefDiffDetector` during the test; yields the name."""
    with registered_detector(NAME, RefDiffDetector):
        yield NAME


@pytest.fixture
def refdiff_as_variation(refdiff: str) -> Iterator[str]:
    """Also pipeline ``variation`` is :class:`RefDiffDetector` during the test; yields ``variation``."""
    with registered_detector("variation", RefDiffDetector, replace=True):
        yield "variation"
