"""PPG on one image (paper sec. 3.1): one point-prompt set per extreme-region component.

The point choice itself is :mod:`inspector.detect.ppg` (pure functions); this module feeds it the
CLIP map and the SAM encoder features of one embedding.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from inspector.detect.ppg import (
    PointPrompts,
    even_sample,
    extreme_components,
    extreme_region,
    mask_box,
    negative_points,
    negative_ring,
    positive_points,
)

if TYPE_CHECKING:  # pragma: no cover
    from inspector.models.sam import SamEmbedding, SamModel
    from inspector.params.clipsam import ClipSamParams


def prompt_sets(amap: np.ndarray, sam: SamModel, emb: SamEmbedding, p: ClipSamParams) -> list[PointPrompts]:
    """PPG (eq. 1–8) for every extreme-region component of ``amap``."""
    extreme = extreme_region(amap, p.extreme_threshold)
    sets: list[PointPrompts] = []
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
        sets.append(PointPrompts(pos, neg, box, float(amap[comp].max())))
    return sets


def pad_prompts(sets: list[PointPrompts]) -> tuple[np.ndarray, np.ndarray]:
    """B×N×2 points and B×N labels, shorter sets padded with (0, 0) / label −1."""
    n = max(len(s.points) for s in sets)
    points = np.zeros((len(sets), n, 2), dtype=np.float32)
    labels = np.full((len(sets), n), -1, dtype=np.int64)
    for i, s in enumerate(sets):
        points[i, : len(s.points)] = s.points
        labels[i, : len(s.labels)] = s.labels
    return points, labels
