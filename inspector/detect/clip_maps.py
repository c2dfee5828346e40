"""CLIP anomaly-map providers: the one interface the CLIP→SAM cascade calls.

There is exactly one implementation of each map: FADE's training-free language-guided GEM map
(:class:`inspector.detect.fade.FadeLanguageMap`) and the APRIL-GAN adapter map
(:class:`inspector.detect.aprilgan.AprilGanMap`). Profiles pick one with
``clipsam.map_provider``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

from inspector.registry import resolve

if TYPE_CHECKING:  # pragma: no cover
    from inspector.detect.base import Progress
    from inspector.models.hub import ModelHub
    from inspector.profile import ProductProfile


@dataclass
class ClipMap:
    """A CLIP anomaly map at the input image's resolution and the image-level score."""

    anomaly_map: np.ndarray  # float32 HxW in [0, 1]
    image_score: float  # in [0, 1]
    timings: dict[str, float] = field(default_factory=dict)


class ClipMapProvider(Protocol):
    name: str

    def prepare(self, profile: ProductProfile, hub: ModelHub, progress: Progress | None = None) -> None: ...

    def __call__(self, image: np.ndarray) -> ClipMap: ...


PROVIDERS: dict[str, str] = {
    "fade": "inspector.detect.fade:FadeLanguageMap",
    "aprilgan": "inspector.detect.aprilgan:AprilGanMap",
}


def create_map_provider(name: str) -> ClipMapProvider:
    return resolve(PROVIDERS, name, "CLIP map provider")()
