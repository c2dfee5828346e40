"""The reference shot shown beside a part: the one nearest to it on small grey thumbnails."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from inspector.imaging import ImageReadError, read_image
from inspector.profile import ProductProfile

log = logging.getLogger(__name__)

THUMB = 32  # side of the grey thumbnails compared
MAX_SIDE = 1024  # reference shots are kept at most this large in memory


def thumb(img: np.ndarray) -> np.ndarray:
    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, (THUMB, THUMB), interpolation=cv2.INTER_AREA).astype(np.float32)


@dataclass
class ReferenceMatcher:
    """The profile's reference shots, and which one is nearest to an image (mean absolute difference)."""

    shots: list[tuple[Path, np.ndarray, np.ndarray]] = field(default_factory=list)  # path, thumbnail, image

    @classmethod
    def from_profile(cls, profile: ProductProfile) -> ReferenceMatcher:
        shots = []
        if profile.folder is not None:
            for path in profile.reference_paths():
                try:
                    img = read_image(path, max_side=MAX_SIDE)
                except ImageReadError as exc:
                    log.warning("reference shot skipped: %s", exc)
                    continue
                shots.append((path, thumb(img), img))
        return cls(shots)

    @property
    def paths(self) -> list[Path]:
        return [p for p, _, _ in self.shots]

    def nearest(self, image: np.ndarray) -> tuple[Path | None, np.ndarray | None]:
        """The nearest shot's path and its pixels resized to ``image`` (None, None without shots)."""
        if not self.shots:
            return None, None
        t = thumb(image)
        dists = [float(np.abs(t - s).mean()) for _, s, _ in self.shots]
        path, _, img = self.shots[int(np.argmin(dists))]
        h, w = image.shape[:2]
        if img.shape[:2] != (h, w):
            img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
        return path, img
