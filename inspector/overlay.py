"""Heat-map overlays: the jet colour map, the one heat-scale rule and the overlay drawing.

Every view of an inspection — the station, its archive PNG, the CLI ``*_overlay.png`` and
``*_heatmap.png``, the evaluation view, its HTML gallery and the profile-editor preview — colours
the anomaly map on the same scale, :func:`heat_vmax`, so one inspection looks the same wherever
it is shown.

This is a leaf: it knows nothing about detectors; a region is anything with ``box``, ``mask``,
``label`` and ``score`` (:class:`OverlayRegion`, which :class:`inspector.detect.base.Region`
satisfies).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import cv2
import numpy as np

DEFAULT_VMAX = 1.0
"""Top of the colour scale when there is no decision threshold to anchor it."""


class OverlayRegion(Protocol):
    """What the overlay draws of a detected region."""

    @property
    def box(self) -> tuple[int, int, int, int]: ...

    @property
    def mask(self) -> np.ndarray | None: ...

    @property
    def label(self) -> str: ...

    @property
    def score(self) -> float: ...


def heat_vmax(threshold: float | None) -> float:
    """The one heat-scale rule: the colour scale runs from 0 to twice the decision threshold.

    The threshold therefore sits mid-scale (green in jet): blue is clearly good, red clearly
    over. Without a positive threshold the scale is ``[0, 1]``.
    """
    if threshold is not None and threshold > 0:
        return 2.0 * float(threshold)
    return DEFAULT_VMAX


def colorize_map(amap: np.ndarray, vmin: float = 0.0, vmax: float = DEFAULT_VMAX) -> np.ndarray:
    """Jet colormap (anomalib's default) of a float map, RGB uint8."""
    span = max(vmax - vmin, 1e-12)
    u8 = (np.clip((amap - vmin) / span, 0, 1) * 255).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(u8, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)


def render_overlay(
    image: np.ndarray,
    amap: np.ndarray | None,
    regions: Sequence[OverlayRegion] = (),
    gt_mask: np.ndarray | None = None,
    alpha: float = 0.45,
    vmax: float = DEFAULT_VMAX,
) -> np.ndarray:
    """Heatmap blended on the image, predicted contours red with score labels, ground truth white."""
    out = image.copy()
    if amap is not None:
        heat = colorize_map(cv2.resize(amap, (image.shape[1], image.shape[0])), 0.0, vmax)
        out = cv2.addWeighted(out, 1 - alpha, heat, alpha, 0)
    thick = max(1, round(max(image.shape[:2]) / 400))
    if gt_mask is not None and gt_mask.any():
        cs, _ = cv2.findContours(gt_mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, cs, -1, (255, 255, 255), thick)
    for r in regions:
        if r.mask is not None and r.mask.any():
            cs, _ = cv2.findContours(r.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(out, cs, -1, (255, 0, 0), thick)
        x0, y0, x1, y1 = r.box
        cv2.rectangle(out, (x0, y0), (x1, y1), (255, 64, 64), thick)
        cv2.putText(
            out, f"{r.label} {r.score:.2f}", (x0, max(y0 - 4, 10)), cv2.FONT_HERSHEY_SIMPLEX,
            0.4 * thick, (255, 255, 0), thick, cv2.LINE_AA,
        )
    return out
