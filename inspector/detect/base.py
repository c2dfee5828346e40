"""What every detection method returns, and the protocol it follows.

A detector is prepared once per profile (text embeddings, reference memory banks, calibration:
cached) and then called once per image. ``detect`` is split in two so that the engineer's live
preview can keep the expensive part:

* :meth:`Detector.analyse` — model forwards that depend on the image and on the profile's
  *prompts/references* only (embeddings, detector boxes, masks, raw maps). Cache this per image.
* :meth:`Detector.finish` — the cheap part that depends on thresholds, K, area ratios … and
  returns the :class:`Detection`. :meth:`Detector.retune` swaps in a profile whose changes are
  limited to such numbers without re-running ``prepare``.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from inspector.progress import Progress

if TYPE_CHECKING:  # pragma: no cover
    from inspector.models.hub import ModelHub
    from inspector.profile import ProductProfile

__all__ = ["Detection", "Detector", "Progress", "Region", "StageTimer"]


@dataclass
class Region:
    """One suspected defect: box (x0, y0, x1, y1) in image pixels, score, and where it came from."""

    box: tuple[int, int, int, int]
    score: float
    label: str = "anomaly"
    area_px: int = 0
    mask: np.ndarray | None = field(default=None, repr=False)  # bool HxW, image resolution

    def to_json(self) -> dict[str, Any]:
        return {
            "box": [int(v) for v in self.box],
            "score": float(self.score),
            "label": self.label,
            "area_px": int(self.area_px),
        }


@dataclass
class Detection:
    """Output of one detector on one image.

    ``anomaly_map`` is float32 HxW at the *input image* resolution; higher = more anomalous.
    Its scale is the pipeline's own (documented per method) and comparable across images of one
    profile, so a single decision threshold applies.
    """

    anomaly_map: np.ndarray
    image_score: float
    regions: list[Region] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.anomaly_map = np.asarray(self.anomaly_map, dtype=np.float32)
        if self.anomaly_map.ndim != 2:
            raise ValueError(f"anomaly_map must be 2-D, got shape {self.anomaly_map.shape}")
        self.image_score = float(self.image_score)


def reference_hashes(profile: ProductProfile, paths: list, error: type[Exception]) -> list[str]:
    """sha256 of each reference shot (the cache keys of every reference-based method).

    A file that cannot be read raises ``error`` naming the profile and the file."""
    from inspector.files import file_sha256

    hashes = []
    for path in paths:
        try:
            hashes.append(file_sha256(path))
        except OSError as exc:
            raise error(f"profile {profile.name!r}: reference shot {path}: cannot read ({exc})") from exc
    return hashes


class StageTimer:
    """Collects wall-clock seconds per named stage: ``with timer("sam"): ...``."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - t0


class Detector(ABC):
    """Base class of the detection methods. Subclasses set ``name`` and implement the three steps."""

    name: str = ""
    #: model-store kinds this detector needs (e.g. ("clip",)); used to report missing weights early
    requires: tuple[str, ...] = ()
    #: square resolution of pixel metrics in ``inspector eval`` unless ``--eval-size`` is given
    #: (each method's published protocol, ``shared/methods/evaluation.md``)
    default_eval_size: int = 256

    def __init__(self) -> None:
        self.profile: ProductProfile | None = None
        self.hub: ModelHub | None = None

    @classmethod
    def required_models(cls, profile: ProductProfile) -> list[tuple[str, str]]:
        """(kind, store key) of every model this detector loads for ``profile``.

        Default: each kind in :attr:`requires`, keyed by the profile's ``models`` section."""
        out = []
        for kind in cls.requires:
            key = getattr(profile.models, kind, None)
            if key:
                out.append((kind, str(key)))
        return out

    @abstractmethod
    def prepare(self, profile: ProductProfile, hub: ModelHub, progress: Progress | None = None) -> None:
        """Load models and compute per-profile state (cached on disk where costly)."""

    @abstractmethod
    def analyse(self, image: np.ndarray) -> Any:
        """Expensive, threshold-independent work on one RGB uint8 HxWx3 image."""

    @abstractmethod
    def finish(self, analysis: Any, image: np.ndarray) -> Detection:
        """Cheap, threshold-dependent work turning ``analysis`` into a :class:`Detection`."""

    def retune(self, profile: ProductProfile) -> None:
        """Adopt a profile whose changes affect only :meth:`finish` (thresholds, K, ratios)."""
        self.profile = profile

    # The one place the two stages are timed (``Inspector.inspect`` and the preview use these too).
    def timed_analyse(self, image: np.ndarray) -> tuple[Any, float]:
        """:meth:`analyse` and the seconds it took."""
        t0 = time.perf_counter()
        analysis = self.analyse(image)
        return analysis, time.perf_counter() - t0

    def timed_finish(self, analysis: Any, image: np.ndarray, analyse_seconds: float | None = None) -> Detection:
        """:meth:`finish` with ``timings["finish"]`` (and ``["analyse"]`` when given) filled in,
        unless the detector timed those stages itself."""
        t0 = time.perf_counter()
        det = self.finish(analysis, image)
        det.timings.setdefault("finish", time.perf_counter() - t0)
        if analyse_seconds is not None:
            det.timings.setdefault("analyse", analyse_seconds)
        return det

    def detect(self, image: np.ndarray) -> Detection:
        """Both stages on one image (what :meth:`inspector.inspection.Inspector.inspect` runs)."""
        analysis, seconds = self.timed_analyse(image)
        return self.timed_finish(analysis, image, seconds)
