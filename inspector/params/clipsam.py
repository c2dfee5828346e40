"""CLIP→SAM cascade tunables (paper Tables 2–3, ``shared/methods/clipsam.md``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from inspector.params.base import Params


class ClipSamParams(Params):
    map_provider: Literal["fade", "aprilgan"] = "fade"
    extreme_threshold: float = Field(0.8, gt=0, le=1, description="extreme region: map >= t * max(map)")
    positive_points: int = Field(3, ge=1)
    negative_points: int = Field(3, ge=0)
    min_point_distance_px: float = Field(20.0, ge=0, description="'spaced by 400 pixels' read as squared distance")
    dilation_kernel: int = Field(25, ge=3, description="elliptical kernel of the negative ring (Table 2)")
    cascade_stages: int = Field(3, ge=1, le=3, description="1 points, 2 + logits, 3 + box (Table 3)")
    mask_choice: Literal["iou", "clip"] = "iou"
    outside_weight: float = Field(0.1, ge=0, le=1, description="epsilon for CLIP map outside SAM masks")
    min_region_px: int = Field(4, ge=1, description="extreme-region components smaller than this are ignored")
    max_regions: int = Field(16, ge=1)
