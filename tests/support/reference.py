"""Naive float64 re-derivations that several known-answer tests compare library code with."""

from __future__ import annotations

import math

import numpy as np


def reflect_conv(img: np.ndarray, ky: np.ndarray, kx: np.ndarray) -> np.ndarray:
    """Separable correlation with a mirrored border (OpenCV's default, numpy's 'reflect'), float64 loops over taps."""
    ry, rx = len(ky) // 2, len(kx) // 2
    pad = np.pad(img, ((ry, ry), (rx, rx)), mode="reflect")
    h, w = img.shape
    rows = sum(kx[t] * pad[:, t:t + w] for t in range(len(kx)))
    return sum(ky[t] * rows[t:t + h, :] for t in range(len(ky)))


def ramp(n: int) -> np.ndarray:
    """The raised cosine of one side, by hand: sin(π(k + ½)/n), at least 1e-3."""
    return np.array([max(math.sin(math.pi * (k + 0.5) / n), 1e-3) for k in range(n)])


def naive_stitch(height: int, width: int, tiles: list[tuple[int, int, np.ndarray]]) -> np.ndarray:
    """Σ wᵢ·mᵢ / Σ wᵢ with wᵢ = ramp(h) ⊗ ramp(w), by loops; what lies past the border is dropped."""
    acc = np.zeros((height, width))
    wsum = np.zeros((height, width))
    for y0, x0, m in tiles:
        ry, rx = ramp(m.shape[0]), ramp(m.shape[1])
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                if y0 + i < height and x0 + j < width:
                    acc[y0 + i, x0 + j] += ry[i] * rx[j] * m[i, j]
                    wsum[y0 + i, x0 + j] += ry[i] * rx[j]
    return np.where(wsum > 0, acc / np.where(wsum > 0, wsum, 1.0), 0.0)
