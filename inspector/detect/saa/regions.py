"""SAA+ region math: masks as tight crops, property filters, saliency re-scoring, top-K fusion.

Pure numpy functions, one per equation of the SAA+ paper (Cao et al., 2023). A region mask is
kept as a :class:`MaskCrop` (its tight bounding box and the bool mask inside it), so a hundred
candidate masks on a large image cost little memory and every per-region sum is a slice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class MaskCrop:
    """A bool mask stored as its tight bounding box: rows y0:y0+h, cols x0:x0+w of the image."""

    y0: int
    x0: int
    mask: np.ndarray  # bool h×w

    @property
    def area(self) -> int:
        return int(self.mask.sum())

    @property
    def slices(self) -> tuple[slice, slice]:
        h, w = self.mask.shape
        return slice(self.y0, self.y0 + h), slice(self.x0, self.x0 + w)

    @property
    def box(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1), exclusive end."""
        h, w = self.mask.shape
        return (self.x0, self.y0, self.x0 + w, self.y0 + h)

    def full(self, image_hw: tuple[int, int]) -> np.ndarray:
        out = np.zeros(image_hw, dtype=bool)
        out[self.slices] = self.mask
        return out

    @staticmethod
    def from_mask(mask: np.ndarray) -> MaskCrop | None:
        """Tight crop of a full-size bool mask; None when the mask is empty."""
        rows = np.flatnonzero(mask.any(axis=1))
        if rows.size == 0:
            return None
        cols = np.flatnonzero(mask.any(axis=0))
        y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        return MaskCrop(y0, x0, np.ascontiguousarray(mask[y0:y1, x0:x1]))


def union_mask(crops: Sequence[MaskCrop], image_hw: tuple[int, int]) -> np.ndarray:
    out = np.zeros(image_hw, dtype=bool)
    for c in crops:
        out[c.slices] |= c.mask
    return out


def iou_with(crop: MaskCrop, region: np.ndarray, region_area: int | None = None) -> float:
    """Intersection over union of a region mask and a full-size bool mask."""
    inter = int(np.count_nonzero(region[crop.slices] & crop.mask))
    area_r = int(region.sum()) if region_area is None else region_area
    union = crop.area + area_r - inter
    return inter / union if union > 0 else 0.0


def inside_fraction(crop: MaskCrop, region: np.ndarray) -> float:
    """Fraction of a region mask's pixels that lie inside a full-size bool mask (0 for an empty region)."""
    area = crop.area
    if area == 0:
        return 0.0
    return int(np.count_nonzero(region[crop.slices] & crop.mask)) / area


def area_filter(areas: np.ndarray, object_area: float, max_area_ratio: float) -> np.ndarray:
    """Eq. 4, area property: keep regions whose area is at most theta_area x ObjectArea."""
    return np.asarray(areas, dtype=np.float64) <= max_area_ratio * float(object_area)


def location_filter(values: np.ndarray, threshold: float) -> np.ndarray:
    """Eq. 4, location property: keep regions whose location value (the fraction inside the
    object, or the IoU with it) is at least theta."""
    return np.asarray(values, dtype=np.float64) >= threshold


def mean_inside(values: np.ndarray, crop: MaskCrop) -> float:
    """Mean of a full-size map inside a region mask (eq. 6's sum r s / sum r)."""
    inside = values[crop.slices][crop.mask]
    return float(inside.mean()) if inside.size else 0.0


def saliency_prompts(mean_saliency: np.ndarray, gain: float = 1.0) -> np.ndarray:
    """Eq. 6, scaled by the constant exp(-gain): p = exp(gain * (mean saliency - 1)).

    The paper's p = exp(mean s) lies in [1, e] for s in [0, 1]; dividing every prompt by the same
    constant keeps the re-scored confidences (and so the fused map) in [0, 1] without changing
    their order, the top-K choice, or the map's shape. ``gain`` is 1 in the paper, 3 in the
    reference code. Mean saliency is clipped to [0, 1] (it is in [0, 1] for ReLU features).
    """
    m = np.clip(np.asarray(mean_saliency, dtype=np.float64), 0.0, 1.0)
    return np.exp(gain * (m - 1.0))


def rescore(scores: np.ndarray, prompts: np.ndarray) -> np.ndarray:
    """Eq. 7: S^S = p * s."""
    return (np.asarray(scores, dtype=np.float64) * np.asarray(prompts, dtype=np.float64)).astype(np.float32)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Eq. 8: indices of the K highest scores, best first (ties keep input order)."""
    scores = np.asarray(scores)
    return np.argsort(-scores, kind="stable")[: max(0, int(k))]


def fuse_regions(crops: Sequence[MaskCrop], scores: Sequence[float], image_hw: tuple[int, int],
                 denominator_offset: float = 0.0) -> np.ndarray:
    """Eq. 9: A_ij = sum_r r_ij s_r / (offset + sum_r r_ij); 0 where no region covers the pixel.

    ``offset`` = 0 is the paper; the reference code uses 1 (a lone region then gets s/2).
    """
    num = np.zeros(image_hw, dtype=np.float64)
    den = np.zeros(image_hw, dtype=np.float64)
    for crop, s in zip(crops, scores):
        sl = crop.slices
        num[sl] += crop.mask * float(s)
        den[sl] += crop.mask
    den += denominator_offset
    out = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    return out.astype(np.float32)
