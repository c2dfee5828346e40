"""CLIP→SAM cascade tunables (paper Tables 2–3, ``shared/methods/clipsam.md``).

Which numbers the live preview may change cheaply: everything except ``map_provider`` and
``aprilgan_image_size`` (those change the CLIP map, so the image is analysed again). The
cascade-shaping ones re-run only SAM's decoder on the cached image embedding.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from inspector.params.base import Params


class ClipSamParams(Params):
    map_provider: Literal["fade", "aprilgan"] = "fade"
    aprilgan_image_size: int = Field(518, ge=32, le=2048, description="CLIP input side of the APRIL-GAN map "
                                     "(rounded to whole patches; 518 = 37×14 for ViT-L-14-336)")
    extreme_threshold: float = Field(0.8, gt=0, le=1, description="extreme region: map >= t * max(map)")
    positive_points: int = Field(3, ge=1)
    negative_points: int = Field(3, ge=0)
    min_point_distance_px: float = Field(20.0, ge=0, description="'spaced by 400 pixels' read as squared distance")
    dilation_kernel: int = Field(25, ge=3, description="elliptical kernel of the negative ring (Table 2)")
    feature_samples: int = Field(4096, ge=16, description="max pixels whose SAM features are sampled per region "
                                 "(mean of the extreme region; ring candidates), evenly spread")
    cascade_stages: int = Field(3, ge=1, le=3, description="1 points, 2 + logits, 3 + box (Table 3)")
    multimask_output: bool = Field(False, description="3 candidate masks per stage (then mask_choice picks one)"
                                   "; one mask is SAM's advice for multi-point prompts")
    mask_choice: Literal["iou", "clip"] = Field("iou", description="candidate mask per stage: highest predicted "
                                                "IoU or highest mean CLIP score inside")
    outside_weight: float = Field(0.1, ge=0, le=1, description="epsilon for CLIP map outside SAM masks")
    gate_with_image_score: bool = Field(True, description="SAM masks count only when the CLIP image score "
                                        "reaches decision.image_threshold")
    min_region_px: int = Field(4, ge=1, description="extreme-region components smaller than this are ignored")
    max_regions: int = Field(16, ge=1)
