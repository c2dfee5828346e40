"""Naive float64 re-derivations that several known-answer tests compare library code with."""

from __future__ import annotations

import numpy as np


def reflect_conv(img: np.ndarray, ky: np.ndarray, kx: np.ndarray) -> np.ndarray:
    """Separable correlation with a mirrored border (OpenCV's default, numpy's 'reflect'), float64 loops over taps."""
    ry, rx = len(ky) // 2, len(kx) // 2
    pad = np.pad(img, ((ry, ry), (rx, rx)), mode="reflect")
    h, w = img.shape
    rows = sum(kx[t] * pad[:, t:t + w] for t in range(len(kx)))
    return sum(ky[t] * rows[t:t + h, :] for t in range(len(ky)))
