"""CLIP→SAM cascade (pipeline ``clipsam``): co-feature point prompts (PPG) + cascaded prompts (CPS).

Paper: "CLIP-SAM cascaded prompts" (``shared/papers/clip-sam_cascaded-prompts.txt``, sec. 3.1–3.2).

analyse (expensive, per image)
    1. CLIP anomaly map A (H×W, [0, 1]) and image score s from the profile's map provider
       (``clipsam.map_provider``: FADE language map or APRIL-GAN adapters).
    2. One SAM image embedding.
    3. PPG (:mod:`inspector.detect.ppg`): extreme region S_a = A ≥ t·max A; one prompt set per
       connected component: top-k spaced positives, k lowest-similarity spaced negatives in its
       ring (SAM encoder features of the same embedding).
    4. CPS: three decoder passes, every component batched into one decode call per pass
       (point sets padded with label −1): points (eq. 9) → points + best pass-1 low-res logits
       (eq. 10) → points + box of the best pass-2 mask + its logits (eq. 11–12). An empty pass-2
       mask has no box: that set gets its extreme-region component's box instead.
    5. SAM evidence map E(x) = max_r σ(ℓ_r(x)) · c_r, where ℓ_r are the final full-resolution mask
       logits of set r and c_r = mean of A inside its final mask (its component when the mask is
       empty): a SAM mask spilling over normal surface earns a low c_r.

finish (cheap, thresholds only)
    gate g = 1 when s ≥ ``decision.image_threshold`` (or ``clipsam.gate_with_image_score`` is
    off), else 0 — the extreme-region rule always finds *something*, even on a good part;
    F(x) = ε · A(x) + (1 − ε) · g · E(x), ε = ``clipsam.outside_weight``.
    Outside every mask F ≈ ε·A, so normal pixels keep the CLIP ranking (AUROC / AP need a
    continuous map); inside a mask F approaches c_r. F is in [0, 1]. Regions (when g = 1): one
    per prompt set's final mask, sets whose masks overlap merged into one, scored by max F (at
    most ``max_regions``, whatever SAM's masks look like). Image score = s.

Changing a cascade-shaping number (threshold, point counts, kernel, stages …) in :meth:`finish`
re-runs PPG + CPS on the cached embedding (decoder only), so the live preview stays fast.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from inspector.detect.base import Detection, Detector, Progress, Region, StageTimer
from inspector.detect.clip_maps import ClipMap, ClipMapProvider, create_map_provider
from inspector.detect.ppg import (
    PromptSet,
    even_sample,
    extreme_components,
    extreme_region,
    mask_box,
    negative_points,
    negative_ring,
    positive_points,
)

if TYPE_CHECKING:  # pragma: no cover
    from inspector.models.hub import ModelHub
    from inspector.models.sam import SamDecode, SamEmbedding, SamModel
    from inspector.params.clipsam import ClipSamParams
    from inspector.profile import ProductProfile

log = logging.getLogger(__name__)

#: clipsam parameters whose change re-runs PPG + CPS from the cached embedding
CASCADE_PARAMS = (
    "extreme_threshold", "positive_points", "negative_points", "min_point_distance_px", "dilation_kernel",
    "feature_samples", "cascade_stages", "multimask_output", "mask_choice", "min_region_px", "max_regions",
)


# ----------------------------------------------------------------------------- PPG on one image
def prompt_sets(amap: np.ndarray, sam: SamModel, emb: SamEmbedding, p: ClipSamParams) -> list[PromptSet]:
    """PPG (eq. 1–8) for every extreme-region component of ``amap``."""
    extreme = extreme_region(amap, p.extreme_threshold)
    sets: list[PromptSet] = []
    for comp in extreme_components(extreme, amap, p.min_region_px, p.max_regions):
        pos = positive_points(comp, amap, p.positive_points, p.min_point_distance_px)
        neg = np.zeros((0, 2), dtype=np.float32)
        if p.negative_points > 0:
            ring_yx = even_sample(np.argwhere(negative_ring(comp, extreme, p.dilation_kernel)), p.feature_samples)
            if len(ring_yx):
                inner_yx = even_sample(np.argwhere(comp), p.feature_samples)
                feats = sam.features_at(emb, np.concatenate([inner_yx, ring_yx])[:, ::-1].astype(np.float32))
                feats = feats.float().cpu().numpy()
                mean = feats[: len(inner_yx)].mean(axis=0)  # F_a pooled (eq. 5)
                neg = negative_points(ring_yx, feats[len(inner_yx):], mean, p.negative_points,
                                      p.min_point_distance_px)
        box = mask_box(comp)
        assert box is not None  # a component is never empty
        sets.append(PromptSet(pos, neg, box, float(amap[comp].max())))
    return sets


def pad_prompts(sets: list[PromptSet]) -> tuple[np.ndarray, np.ndarray]:
    """B×N×2 points and B×N labels, shorter sets padded with (0, 0) / label −1."""
    n = max(len(s.points) for s in sets)
    points = np.zeros((len(sets), n, 2), dtype=np.float32)
    labels = np.full((len(sets), n), -1, dtype=np.int64)
    for i, s in enumerate(sets):
        points[i, : len(s.points)] = s.points
        labels[i, : len(s.labels)] = s.labels
    return points, labels


# ----------------------------------------------------------------------------- CPS
@dataclass
class CascadeResult:
    """Final masks of every prompt set and what each stage was given."""

    logits: torch.Tensor | None  # B×H×W final full-resolution mask logits (dropped once fused)
    iou: np.ndarray  # B predicted IoU of the final mask
    boxes: np.ndarray | None  # B×4 boxes given to pass 3 (None when it did not run)
    box_from_mask: np.ndarray | None  # B bool: box came from the pass-2 mask (else component box)
    stages: int


def choose_masks(dec: SamDecode, mode: str, amap: np.ndarray) -> np.ndarray:
    """Index of the chosen candidate per prompt set: highest predicted IoU or mean CLIP score inside."""
    if dec.masks.shape[1] == 1:
        return np.zeros(dec.masks.shape[0], dtype=np.int64)
    if mode == "clip":
        area = dec.masks.sum(axis=(2, 3))
        inside = (dec.masks * amap[None, None]).sum(axis=(2, 3))
        score = np.where(area > 0, inside / np.maximum(area, 1), -np.inf)
        return score.argmax(axis=1)
    return dec.scores.argmax(axis=1)


def run_cascade(sam: SamModel, emb: SamEmbedding, sets: list[PromptSet], p: ClipSamParams,
                amap: np.ndarray) -> CascadeResult:
    """CPS (eq. 9–12): up to three decoder passes, all prompt sets batched in each."""
    points, labels = pad_prompts(sets)
    rows = np.arange(len(sets))
    stages = p.cascade_stages
    boxes = box_from_mask = None

    # pass 1: points (eq. 9)
    dec = sam.decode(emb, points, labels, multimask=p.multimask_output, return_logits=stages == 1)
    pick = choose_masks(dec, p.mask_choice, amap)
    if stages >= 2:  # pass 2: points + logits of the best pass-1 mask (eq. 10)
        logits_in = dec.low_res_logits[rows, pick][:, None]
        dec = sam.decode(emb, points, labels, mask_input=logits_in, multimask=p.multimask_output,
                         return_logits=stages == 2)
        pick = choose_masks(dec, p.mask_choice, amap)
    if stages >= 3:  # pass 3: points + box of the best pass-2 mask + its logits (eq. 11–12)
        boxes = np.zeros((len(sets), 4), dtype=np.float32)
        box_from_mask = np.zeros(len(sets), dtype=bool)
        for i, s in enumerate(sets):
            box = mask_box(dec.masks[i, pick[i]])
            box_from_mask[i] = box is not None
            boxes[i] = box if box is not None else s.box  # guard: an empty mask has no box
        logits_in = dec.low_res_logits[rows, pick][:, None]
        dec = sam.decode(emb, points, labels, boxes=boxes, mask_input=logits_in, multimask=p.multimask_output,
                         return_logits=True)
        pick = choose_masks(dec, p.mask_choice, amap)
    assert dec.mask_logits is not None
    return CascadeResult(
        logits=dec.mask_logits[rows, pick].float(),
        iou=dec.scores[rows, pick].astype(np.float32),
        boxes=boxes,
        box_from_mask=box_from_mask,
        stages=stages,
    )


# ----------------------------------------------------------------------------- fusion
def sam_evidence(amap: np.ndarray, logits: torch.Tensor, sets: list[PromptSet]) -> tuple[np.ndarray, np.ndarray,
                                                                                        np.ndarray]:
    """E = max_r σ(ℓ_r) · c_r with c_r = mean A inside mask r (module docstring); also the final
    masks (B×H×W bool) and the c_r."""
    prob = torch.sigmoid(logits).cpu().numpy().astype(np.float32)  # B×H×W
    masks = prob > 0.5  # SAM's mask_threshold 0 on the logits
    conf = np.zeros(len(sets), dtype=np.float32)
    for i, s in enumerate(sets):
        inside = amap[masks[i]]
        if inside.size == 0:
            x0, y0, x1, y1 = s.box
            inside = amap[y0 : y1 + 1, x0 : x1 + 1]
        conf[i] = float(inside.mean())
    evidence = (prob * conf[:, None, None]).max(axis=0)
    return evidence.astype(np.float32), masks, conf


def merge_overlapping(masks: np.ndarray) -> list[np.ndarray]:
    """Non-empty masks, those that share a pixel (transitively) OR-ed together; input order kept."""
    items = [m for m in masks if m.any()]
    boxes = [mask_box(m) for m in items]
    parent = list(range(len(items)))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for i in range(len(items)):
        for j in range(i + 1, len(items)):
            (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = boxes[i], boxes[j]  # type: ignore[misc]
            x0, y0, x1, y1 = max(ax0, bx0), max(ay0, by0), min(ax1, bx1), min(ay1, by1)
            if x0 > x1 or y0 > y1:
                continue
            if (items[i][y0 : y1 + 1, x0 : x1 + 1] & items[j][y0 : y1 + 1, x0 : x1 + 1]).any():
                parent[root(j)] = root(i)
    groups: dict[int, np.ndarray] = {}
    for i, m in enumerate(items):
        r = root(i)
        groups[r] = m.copy() if r not in groups else groups[r] | m
    return list(groups.values())


def fuse(amap: np.ndarray, evidence: np.ndarray | None, gate: bool, outside_weight: float) -> np.ndarray:
    """F = ε·A + (1 − ε)·g·E (module docstring)."""
    eps = float(outside_weight)
    fused = eps * np.asarray(amap, dtype=np.float32)
    if gate and evidence is not None:
        fused = fused + (1.0 - eps) * evidence
    return np.clip(fused, 0.0, 1.0).astype(np.float32)


# ----------------------------------------------------------------------------- the detector
@dataclass
class ClipSamAnalysis:
    """Everything :meth:`ClipSamDetector.finish` needs; cascade parts are redone when their params change."""

    clip: ClipMap
    embedding: SamEmbedding
    cascade_key: tuple[Any, ...] = ()
    sets: list[PromptSet] = field(default_factory=list)
    cascade: CascadeResult | None = None
    evidence: np.ndarray | None = None  # H×W, None when no prompt set
    masks: np.ndarray | None = None  # bool B×H×W final SAM masks
    confidence: np.ndarray | None = None  # c_r per set
    timings: dict[str, float] = field(default_factory=dict)


def cascade_key(p: ClipSamParams) -> tuple[Any, ...]:
    return tuple(getattr(p, name) for name in CASCADE_PARAMS)


class ClipSamDetector(Detector):
    """CLIP→SAM cascade; see the module docstring for the method and the output formula."""

    name = "clipsam"
    requires = ("clip", "sam")
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
