"""Anomaly-map helpers shared by every method: the one resizer, normaliser, fuser and region finder."""

from __future__ import annotations

import cv2
import numpy as np

from inspector.detect.base import Region


def resize_map(amap: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float map to (H, W), pixel centres aligned (OpenCV convention)."""
    amap = np.asarray(amap, dtype=np.float32)
    h, w = size_hw
    if amap.shape == (h, w):
        return amap
    interp = cv2.INTER_AREA if amap.shape[0] > h and amap.shape[1] > w else cv2.INTER_LINEAR
    return cv2.resize(amap, (w, h), interpolation=interp)


def normalise_map(amap: np.ndarray, low: float, high: float) -> np.ndarray:
    """Affine map of [low, high] onto [0, 1], clipped. ``low``/``high`` come from calibration,
    never from the image itself (a live station scores each image on its own)."""
    span = max(float(high) - float(low), 1e-12)
    return np.clip((np.asarray(amap, dtype=np.float32) - low) / span, 0.0, 1.0)


def fuse_maps(maps: list[np.ndarray], weights: list[float] | None = None) -> np.ndarray:
    """Weighted mean of equally-shaped maps (weights default to equal)."""
    if not maps:
        raise ValueError("fuse_maps needs at least one map")
    w = np.ones(len(maps), dtype=np.float32) if weights is None else np.asarray(weights, dtype=np.float32)
    stack = np.stack([np.asarray(m, dtype=np.float32) for m in maps])
    return np.tensordot(w / w.sum(), stack, axes=1).astype(np.float32)


def gaussian_smooth(amap: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0:
        return np.asarray(amap, dtype=np.float32)
    k = int(2 * round(3 * sigma) + 1)
    return cv2.GaussianBlur(np.asarray(amap, dtype=np.float32), (k, k), sigma, borderType=cv2.BORDER_REFLECT)


def polygon_mask(polygon: list[tuple[float, float]], size_hw: tuple[int, int]) -> np.ndarray:
    """Bool mask of a polygon given in image pixels (x, y)."""
    mask = np.zeros(size_hw, dtype=np.uint8)
    pts = np.round(np.asarray(polygon, dtype=np.float64)).astype(np.int32).reshape(-1, 1, 2)
    cv2.fillPoly(mask, [pts], 1)
    return mask.astype(bool)


def regions_from_map(
    amap: np.ndarray, threshold: float, min_area_px: int = 0, label: str = "anomaly"
) -> list[Region]:
    """Connected components (8-connectivity) of ``amap >= threshold`` as regions, largest score first."""
    binary = (np.asarray(amap) >= threshold).astype(np.uint8)
    if not binary.any():
        return []
    n, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    regions: list[Region] = []
    for i in range(1, n):
        x, y, w, h, area = (int(v) for v in stats[i])
        if area < max(min_area_px, 1):
            continue
        mask = labels == i
        regions.append(
            Region(box=(x, y, x + w, y + h), score=float(amap[mask].max()), label=label, area_px=area, mask=mask)
        )
    regions.sort(key=lambda r: r.score, reverse=True)
    return regions
