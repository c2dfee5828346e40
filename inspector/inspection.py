"""One inspection: profile + detector + decision rule. The same code runs in the CLI and the station."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from inspector.detect import Detection, Detector, Region, create_detector
from inspector.detect.base import Progress
from inspector.detect.maps import polygon_mask, regions_from_map
from inspector.models.hub import ModelHub
from inspector.profile import ProductProfile

log = logging.getLogger(__name__)

Verdict = Literal["PASS", "FAIL"]


@dataclass
class Inspection:
    """A detection plus the profile's verdict, ready to show and record."""

    detection: Detection
    verdict: Verdict
    profile_name: str
    profile_version: int
    profile_hash: str
    pipeline: str
    model_keys: list[str] = field(default_factory=list)
    image_path: str | None = None
    image_sha256: str | None = None
    seconds: float = 0.0
    detector_state_sha256: str | None = None
    """sha256 of the cached state (memory banks, text means) the detector adopted at prepare
    (:func:`inspector.cache.ledger_sha256`); ``None`` when it uses no cached state."""

    @property
    def image_score(self) -> float:
        return self.detection.image_score

    @property
    def regions(self) -> list[Region]:
        return self.detection.regions

    def to_json(self) -> dict[str, Any]:
        return {
            "image_path": self.image_path,
            "image_sha256": self.image_sha256,
            "profile": {"name": self.profile_name, "version": self.profile_version, "hash": self.profile_hash},
            "pipeline": self.pipeline,
            "models": self.model_keys,
            "image_score": self.detection.image_score,
            "verdict": self.verdict,
            "regions": [r.to_json() for r in self.detection.regions],
            "timings": {k: round(v, 6) for k, v in self.detection.timings.items()},
            "seconds": round(self.seconds, 6),
            "detector_state_sha256": self.detector_state_sha256,
        }


def apply_roi(det: Detection, profile: ProductProfile) -> Detection:
    """Zero the map outside the profile's ROI polygon and drop regions whose centre lies outside."""
    if not profile.roi:
        return det
    inside = polygon_mask(profile.roi, det.anomaly_map.shape)
    det.anomaly_map = np.where(inside, det.anomaly_map, 0.0).astype(np.float32)
    kept = []
    for r in det.regions:
        cx, cy = (r.box[0] + r.box[2]) // 2, (r.box[1] + r.box[3]) // 2
        cy = min(max(cy, 0), inside.shape[0] - 1)
        cx = min(max(cx, 0), inside.shape[1] - 1)
        if inside[cy, cx]:
            kept.append(r)
    det.regions = kept
    # a defect outside the ROI must not fail the part: cap the score by what remains inside
    det.image_score = min(det.image_score, float(det.anomaly_map.max()))
    return det


def decide(det: Detection, profile: ProductProfile) -> Verdict:
    """FAIL when the image score reaches the threshold and at least one region is large enough.

    Pipelines that report no regions (pure maps) get regions from the map at the profile's
    region threshold, so ``min_defect_area_px`` always applies.
    """
    rule = profile.decision
    if det.image_score < rule.image_threshold:
        return "PASS"
    if rule.min_defect_area_px <= 0:
        return "FAIL"
    return "FAIL" if any(r.area_px >= rule.min_defect_area_px for r in det.regions) else "PASS"


def ensure_regions(det: Detection, profile: ProductProfile) -> Detection:
    if not det.regions:
        det.regions = regions_from_map(det.anomaly_map, profile.decision.region_threshold, 1)
    return det


class Inspector:
    """Runs one profile's pipeline on images and applies its decision rule."""

    def __init__(self, profile: ProductProfile, hub: ModelHub, pipeline: str | None = None) -> None:
        self.profile = profile
        self.hub = hub
        self.pipeline = pipeline or profile.pipeline
        self.detector: Detector = create_detector(self.pipeline)
        self._prepared = False
        self.detector_state_sha256: str | None = None

    def prepare(self, progress: Progress | None = None) -> None:
        from inspector.cache import ledger_sha256, state_ledger

        t0 = time.perf_counter()
        with state_ledger() as ledger:  # every cache entry the detector adopts (issue 16 item 15)
            self.detector.prepare(self.profile, self.hub, progress)
        self.detector_state_sha256 = ledger_sha256(ledger)
        self._prepared = True
        log.info("profile %s v%d prepared for %s in %.2fs", self.profile.name, self.profile.version,
                 self.pipeline, time.perf_counter() - t0)

    def required_models(self) -> list[tuple[str, str]]:
        """(kind, store key) of every model this profile's pipeline will load.

        A ``key:file`` selector (e.g. which APRIL-GAN adapter file) is reduced to the key."""
        out = [(kind, key.split(":", 1)[0]) for kind, key in self.detector.required_models(self.profile)]
        if self.pipeline == "clipsam" and self.profile.clipsam.map_provider == "aprilgan":
            key = getattr(self.profile.models, "adapter", None)
            if key:
                out.append(("adapter", key.split(":", 1)[0]))
        return out

    def check_weights(self) -> None:
        """Fail fast, before any network is built, when a needed model is not installed.

        Raises the store's ModelMissingError / ModelCorruptError (key, path, fixing command)."""
        keys = [key for kind, key in self.required_models() if not self.hub.is_provided(kind, key)]
        if not keys:
            return
        store = self.hub.model_store()
        for key in store.with_requirements(keys):
            store.path(key)

    def model_keys(self) -> list[str]:
        return [f"{kind}:{key}" for kind, key in self.hub.loaded()]

    def finish(self, analysis: Any, image: np.ndarray, image_path: str | Path | None = None,
               image_sha256: str | None = None, t0: float | None = None,
               analyse_seconds: float | None = None) -> Inspection:
        """Cheap stage + decision (live preview calls this with a cached ``analysis``)."""
        t_fin = time.perf_counter()
        det = self.detector.timed_finish(analysis, image, analyse_seconds)
        det = ensure_regions(apply_roi(det, self.profile), self.profile)
        verdict = decide(det, self.profile)
        return Inspection(
            detection=det,
            verdict=verdict,
            profile_name=self.profile.name,
            profile_version=self.profile.version,
            profile_hash=self.profile.content_hash(),
            pipeline=self.pipeline,
            model_keys=self.model_keys(),
            image_path=str(image_path) if image_path is not None else None,
            image_sha256=image_sha256,
            seconds=time.perf_counter() - (t0 if t0 is not None else t_fin),
            detector_state_sha256=self.detector_state_sha256,
        )

    def inspect(self, image: np.ndarray, image_path: str | Path | None = None,
                image_sha256: str | None = None) -> Inspection:
        if not self._prepared:
            self.prepare()
        t0 = time.perf_counter()
        analysis, seconds = self.detector.timed_analyse(image)
        return self.finish(analysis, image, image_path, image_sha256, t0, seconds)

    def retune(self, profile: ProductProfile) -> None:
        """Swap in a profile whose changes only affect the cheap stage and the decision."""
        self.profile = profile
        self.detector.retune(profile)
