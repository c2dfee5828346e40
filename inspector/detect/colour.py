"""Colour and layout measures every method shares (pure functions on float RGB / L*a*b* arrays)."""

from __future__ import annotations

import cv2
import numpy as np


def to_lab(rgb01: np.ndarray) -> np.ndarray:
    """CIE L*a*b* (L in [0, 100]) of float RGB in [0, 1]."""
    return cv2.cvtColor(np.ascontiguousarray(rgb01, dtype=np.float32), cv2.COLOR_RGB2Lab)


def structure_share(lab: np.ndarray, blocks: int = 16) -> float:
    """Share of the L variance explained by a coarse ``blocks``×``blocks`` layout (texture → ~0)."""
    lum = lab[..., 0]
    coarse = cv2.resize(lum, (blocks, blocks), interpolation=cv2.INTER_AREA)
    return float(coarse.var() / max(float(lum.var()), 1e-9))
