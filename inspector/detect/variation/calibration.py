"""Seam confidence, the positional spread of good parts and the per-profile score scale."""

from __future__ import annotations

import cv2
import numpy as np

from inspector.detect.maps import gaussian_smooth


def seam_confidence(cover: np.ndarray, margin: float) -> np.ndarray:
    """1 inside what an image shows, ramping to 0 over ``margin`` px towards what it does not show.

    Near that seam the filter bank sees part of the filled-in reference: its scores are not evidence.
    """
    inside = (cover > 0.5).astype(np.uint8)
    if inside.all() or margin <= 0:
        return inside.astype(np.float32)
    dist = cv2.distanceTransform(inside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return np.clip(dist / margin, 0.0, 1.0).astype(np.float32)


def positional_scale(loo_maps: np.ndarray, weights: np.ndarray, sigma: float, floor_quantile: float = 0.5
                     ) -> np.ndarray:
    """Per-place normal deviation s'(x) = sqrt(S(x)² + f²), S² = G_σ*(Σ w_i m_i²) / G_σ*(Σ w_i), f = median S.

    The variation model's σ(x): places where good parts differ among themselves (embossed marks under
    changing light, part edges) are scored relative to their own spread, plain places relative to
    the image-wide typical level f. ``weights`` say where each leave-one-out map m_i is evidence.
    """
    m = np.nan_to_num(np.asarray(loo_maps, np.float32))
    w = np.asarray(weights, np.float32) * np.isfinite(np.asarray(loo_maps, np.float32))
    num = gaussian_smooth((w * m * m).sum(0), sigma)
    den = gaussian_smooth(w.sum(0), sigma)
    spread = np.sqrt(np.maximum(num, 0.0) / np.maximum(den, 1e-3))
    floor = float(np.quantile(spread[den > 0.1], floor_quantile)) if (den > 0.1).any() else 1.0
    return np.sqrt(spread ** 2 + floor ** 2).astype(np.float32)


def reference_threshold(loo_maps: np.ndarray, loo_weight: np.ndarray, sigma: float, margin: float) -> float:
    """T = margin × max_i max smooth(w_i · loo_map_i): the raw level the map calls 0.5."""
    worst = 0.0
    for amap, weight in zip(loo_maps, loo_weight, strict=True):
        sm = gaussian_smooth(np.nan_to_num(amap) * weight, sigma)
        worst = max(worst, float(sm.max()))
    return margin * max(worst, 1e-6)
