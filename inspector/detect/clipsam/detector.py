"""The :class:`ClipSamDetector`: analyse (CLIP map, SAM embedding, PPG + CPS) and finish (fusion)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from inspector.detect.base import Detection, Detector, Progress, Region, StageTimer
from inspector.detect.clip_maps import ClipMap, ClipMapProvider, create_map_provider
from inspector.detect.clipsam.cascade import CascadeResult, run_cascade
from inspector.detect.clipsam.fusion import fuse, merge_overlapping, sam_evidence
from inspector.detect.clipsam.points import prompt_sets
from inspector.detect.ppg import PointPrompts, mask_box

if TYPE_CHECKING:  # pragma: no cover
    from inspector.models.hub import ModelHub
    from inspector.models.sam import SamEmbedding, SamModel
    from inspector.params.clipsam import ClipSamParams
    from inspector.profile import ProductProfile

log = logging.getLogger(__name__)

#: clipsam parameters whose change re-runs PPG + CPS from the cached embedding
CASCADE_PARAMS = (
    "extreme_threshold", "positive_points", "negative_points", "min_point_distance_px", "dilation_kernel",
    "feature_samples", "cascade_stages", "multimask_output", "mask_choice", "min_region_px", "max_regions",
)


@dataclass
class ClipSamAnalysis:
    """Everything :meth:`ClipSamDetector.finish` needs; cascade parts are redone when their params change."""

    clip: ClipMap
    embedding: SamEmbedding
    cascade_key: tuple[Any, ...] = ()
    sets: list[PointPrompts] = field(default_factory=list)
    cascade: CascadeResult | None = None
    evidence: np.ndarray | None = None  # H×W, None when no prompt set
    masks: np.ndarray | None = None  # bool B×H×W final SAM masks
    confidence: np.ndarray | None = None  # c_r per set
    timings: dict[str, float] = field(default_factory=dict)


def cascade_key(p: ClipSamParams) -> tuple[Any, ...]:
    return tuple(getattr(p, name) for name in CASCADE_PARAMS)


class ClipSamDetector(Detector):
    """CLIP→SAM cascade; the method and the output formula: the package docstring (``inspector.detect.clipsam``)."""

    name = "clipsam"
    requires = ("clip", "sam")
    optional_requires = ("adapter",)  # loaded with clipsam.map_provider = "aprilgan"
    param_sections = ("clipsam", "fade")  # the FADE language map provider reads profile.fade
    default_eval_size = 518  # APRIL-GAN's protocol, which the cascade paper builds on (evaluation.md)
    finish_params = tuple(f"clipsam.{n}" for n in (*CASCADE_PARAMS, "outside_weight", "gate_with_image_score"))

    def __init__(self, provider: ClipMapProvider | None = None) -> None:
        """``provider`` overrides ``clipsam.map_provider`` (tools and tests)."""
        super().__init__()
        self._given_provider = provider
        self.provider: ClipMapProvider | None = provider
        self.sam: SamModel | None = None

    def prepare(self, profile: ProductProfile, hub: ModelHub, progress: Progress | None = None) -> None:
        report = progress or (lambda f, m: None)
        self.profile, self.hub = profile, hub
        if self._given_provider is None:
            self.provider = create_map_provider(profile.clipsam.map_provider)
        assert self.provider is not None
        self.provider.prepare(profile, hub, lambda f, m: report(0.8 * f, m))
        report(0.8, f"loading SAM {profile.models.sam}")
        self.sam = hub.get("sam", profile.models.sam)
        report(1.0, "CLIP→SAM ready")

    def retune(self, profile: ProductProfile) -> None:
        if self.profile is not None and (
            profile.clipsam.map_provider != self.profile.clipsam.map_provider
            or profile.clipsam.aprilgan_image_size != self.profile.clipsam.aprilgan_image_size
        ) and self._given_provider is None:
            raise ValueError("clipsam.map_provider / aprilgan_image_size changed: call prepare() again")
        self.profile = profile

    def _ready(self) -> tuple[ProductProfile, ClipMapProvider, SamModel]:
        if self.profile is None or self.provider is None or self.sam is None:
            raise RuntimeError("ClipSamDetector.prepare(profile, hub) must run before images are inspected")
        return self.profile, self.provider, self.sam

    def analyse(self, image: np.ndarray) -> ClipSamAnalysis:
        profile, provider, sam = self._ready()
        timer = StageTimer()
        with timer("clip_map"):
            clip = provider(image)
        if clip.anomaly_map.shape != image.shape[:2]:
            raise ValueError(f"map provider {provider.name!r} returned a {clip.anomaly_map.shape} map "
                             f"for a {image.shape[:2]} image")
        with timer("sam_embed"):
            emb = sam.embed(image)
        analysis = ClipSamAnalysis(clip=clip, embedding=emb)
        self._cascade(analysis, profile.clipsam, timer)
        analysis.timings.update({f"clip_map.{k}": v for k, v in clip.timings.items() if k != "clip_map"})
        analysis.timings.update(timer.timings)
        return analysis

    def _cascade(self, a: ClipSamAnalysis, p: ClipSamParams, timer: StageTimer) -> None:
        """PPG + CPS + SAM evidence on the cached embedding."""
        assert self.sam is not None
        amap = a.clip.anomaly_map
        with timer("ppg"):
            a.sets = prompt_sets(amap, self.sam, a.embedding, p)
        a.cascade_key = cascade_key(p)
        a.cascade = a.evidence = a.masks = a.confidence = None
        if not a.sets:
            return
        with timer("cps"):
            a.cascade = run_cascade(self.sam, a.embedding, a.sets, p, amap)
        with timer("evidence"):
            assert a.cascade.logits is not None
            a.evidence, a.masks, a.confidence = sam_evidence(amap, a.cascade.logits, a.sets)
            a.cascade.logits = None  # the evidence map is what finish needs; free B×H×W

    def finish(self, analysis: ClipSamAnalysis, image: np.ndarray) -> Detection:
        profile, _, _ = self._ready()
        p = profile.clipsam
        timer = StageTimer()
        if analysis.cascade_key != cascade_key(p):
            self._cascade(analysis, p, timer)  # a cascade-shaping number changed: decoder only
        with timer("fusion"):
            score = float(analysis.clip.image_score)
            gate = (not p.gate_with_image_score) or score >= profile.decision.image_threshold
            fused = fuse(analysis.clip.anomaly_map, analysis.evidence, gate, p.outside_weight)
            regions = []
            if gate and analysis.masks is not None:
                for m in merge_overlapping(analysis.masks):
                    x0, y0, x1, y1 = mask_box(m)  # type: ignore[misc]
                    regions.append(Region(box=(x0, y0, x1 + 1, y1 + 1), score=float(fused[m].max()),
                                          area_px=int(m.sum()), mask=m))
                regions.sort(key=lambda r: r.score, reverse=True)
        timings = {**analysis.timings, **timer.timings}  # a re-run cascade reports its new cost
        return Detection(
            anomaly_map=fused,
            image_score=score,
            regions=regions,
            timings=timings,
            extras={
                "clip_map": analysis.clip.anomaly_map,
                "gate_open": gate,
                "prompts": [
                    {"positives": s.positives.tolist(), "negatives": s.negatives.tolist(), "box": list(s.box)}
                    for s in analysis.sets
                ],
                "mask_iou": [] if analysis.cascade is None else analysis.cascade.iou.tolist(),
                "region_confidence": [] if analysis.confidence is None else analysis.confidence.tolist(),
            },
        )
