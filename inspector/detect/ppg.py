"""Co-feature point prompt generation (PPG) of the CLIP→SAM cascade, paper sec. 3.1 — pure functions.

Coordinates: masks and maps are numpy (row, col) = (y, x); every *point* returned here is
**(x, y) in original-image pixels**, the frame SAM's decoder takes.

Readings of the paper made explicit:

* The extreme region S_a is ``map >= extreme_threshold · max(map)`` (the paper gives no value).
* "spaced by 400 pixels" is read as squared distance ≥ 400, i.e. a minimum Euclidean distance of
  ``min_point_distance_px`` = 20 px between chosen points of one set: a greedy choice that takes
  the best remaining pixel and removes every pixel closer than that distance.
* Several defects: every connected component of S_a gets its own prompt set. Its ring is
  dilate(component) minus *every* extreme pixel, so another defect never gives negative points.
* The negative score is the cosine similarity between the SAM encoder feature at a ring pixel and
  the mean SAM feature over the component (eq. 5–6 with F_a pooled by its mean).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class PointPrompts:
    """Point prompts for one extreme-region component (text prompts are :class:`inspector.detect.prompts.PromptSet`)."""

    positives: np.ndarray  # k×2 float32 (x, y)
    negatives: np.ndarray  # m×2 float32 (x, y), m may be 0
    box: tuple[int, int, int, int]  # component's box (x0, y0, x1, y1), inclusive max
    peak: float  # max CLIP score inside the component

    @property
    def points(self) -> np.ndarray:
        """P = concat(P_h, P_l) (eq. 8)."""
        return np.concatenate([self.positives, self.negatives]).astype(np.float32)

    @property
    def labels(self) -> np.ndarray:
        return np.concatenate([np.ones(len(self.positives)), np.zeros(len(self.negatives))]).astype(np.int64)


def extreme_region(amap: np.ndarray, rel_threshold: float) -> np.ndarray:
    """S_a: pixels at or above ``rel_threshold`` · max(map); empty when the map has no positive value."""
    amap = np.asarray(amap, dtype=np.float32)
    peak = float(amap.max()) if amap.size else 0.0
    if not np.isfinite(peak) or peak <= 0.0:
        return np.zeros(amap.shape, dtype=bool)
    return amap >= rel_threshold * peak


def extreme_components(extreme: np.ndarray, amap: np.ndarray, min_px: int, max_count: int) -> list[np.ndarray]:
    """Connected components (8-connectivity) of S_a with ≥ ``min_px`` pixels, highest peak first."""
    if not extreme.any():
        return []
    n, labels, stats, _ = cv2.connectedComponentsWithStats(extreme.astype(np.uint8), connectivity=8)
    peaks = np.full(n, -np.inf)
    np.maximum.at(peaks, labels[extreme], np.asarray(amap, dtype=np.float64)[extreme])
    areas = stats[:, cv2.CC_STAT_AREA]
    keep = [i for i in range(1, n) if areas[i] >= min_px]
    keep.sort(key=lambda i: (-peaks[i], -int(areas[i]), i))  # highest peak, then largest, then first
    return [labels == i for i in keep[:max_count]]


def spaced_selection(coords_yx: np.ndarray, scores: np.ndarray, k: int, min_dist: float,
                     lowest: bool = False) -> np.ndarray:
    """Indices of the k best (highest, or lowest) scores, each ≥ ``min_dist`` from those already chosen.

    Top_k (eq. 2) and Lowest_k (eq. 7) with the spacing rule; greedy, deterministic (ties → the
    first in raster order). Fewer than k when the candidates run out.
    """
    coords = np.asarray(coords_yx, dtype=np.float64).reshape(-1, 2)
    work = np.asarray(scores, dtype=np.float64).copy()
    if lowest:
        work = -work
    chosen: list[int] = []
    limit2 = float(min_dist) ** 2
    for _ in range(max(int(k), 0)):
        if work.size == 0:
            break
        idx = int(np.argmax(work))
        if not np.isfinite(work[idx]):
            break
        chosen.append(idx)
        d2 = ((coords - coords[idx]) ** 2).sum(axis=1)
        work[d2 < max(limit2, 1e-12)] = -np.inf
    return np.asarray(chosen, dtype=np.int64)


def positive_points(component: np.ndarray, amap: np.ndarray, k: int, min_dist: float) -> np.ndarray:
    """P_h = Top_k(R_a), R_a = S_a ⊗ Map_a restricted to one component (eq. 1–2); k×2 (x, y)."""
    coords = np.argwhere(component)
    scores = np.asarray(amap, dtype=np.float32)[component]  # same raster order as argwhere
    idx = spaced_selection(coords, scores, k, min_dist)
    return coords[idx][:, ::-1].astype(np.float32)


def negative_ring(component: np.ndarray, extreme: np.ndarray, kernel: int) -> np.ndarray:
    """N_a = dilate(S_a, ellipse kernel×kernel) − S_a for one component (eq. 3)."""
    se = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (int(kernel), int(kernel)))
    grown = cv2.dilate(component.astype(np.uint8), se).astype(bool)
    return grown & ~extreme


def even_sample(coords: np.ndarray, max_count: int) -> np.ndarray:
    """At most ``max_count`` rows spread evenly through ``coords`` (deterministic)."""
    if len(coords) <= max_count:
        return coords
    return coords[np.linspace(0, len(coords) - 1, max_count).round().astype(np.int64)]


def cosine_to(features: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Map_s: cosine similarity of each feature row to one reference vector (eq. 6)."""
    f = np.asarray(features, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64).reshape(-1)
    fn = np.linalg.norm(f, axis=1) * max(np.linalg.norm(r), 1e-12)
    return (f @ r) / np.maximum(fn, 1e-12)


def negative_points(ring_yx: np.ndarray, ring_features: np.ndarray, region_mean: np.ndarray, k: int,
                    min_dist: float) -> np.ndarray:
    """P_l = Lowest_k(Similarity(F_a, F_n)) over the ring (eq. 5–7); m×2 (x, y)."""
    if k <= 0 or len(ring_yx) == 0:
        return np.zeros((0, 2), dtype=np.float32)
    sims = cosine_to(ring_features, region_mean)
    idx = spaced_selection(ring_yx, sims, k, min_dist, lowest=True)
    return np.asarray(ring_yx)[idx][:, ::-1].astype(np.float32)


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """F_location (eq. 11): (x0, y0, x1, y1) with inclusive max, or None for an empty mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])
