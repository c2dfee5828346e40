"""SAA / SAA+ tunables (defaults from ``shared/methods/saa.md``; owned by ``inspector/detect/saa/``).

Which numbers only the cheap ``finish`` step reads is declared by the detector
(``SaaDetector.finish_params``); the rest shape the expensive ``analyse`` step.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from inspector.params.base import Params


class SaaParams(Params):
    variant: Literal["saa", "saa+"] = Field(
        "saa+", description="saa: the naive class-agnostic prompts only -> boxes -> SAM masks (the paper's "
                            "baseline); saa+: plus the class-specific prompts, property, saliency, top-K")
    location_rule: Literal["inside", "iou"] = Field(
        "inside",
        description="location property prompt with theta = properties.min_iou_with_object (0 = off): "
                    "inside: the fraction of a region's mask that lies on the object mask must be >= theta "
                    "(the paper's intent, 'anomalies lie within the inspected object'); iou: the region's IoU "
                    "with the object must be >= theta (the literal reading; drops small true defects)")
    caption_mode: Literal["joint", "separate"] = Field(
        "joint",
        description="joint: all prompt entries in one GroundingDINO caption (one fusion pass); "
                    "separate: one caption per entry, as the reference code (one fusion pass each)")
    box_threshold: float = Field(0.1, ge=0, le=1, description="GroundingDINO max token score to keep a box")
    text_threshold: float = Field(0.1, ge=0, le=1, description="token score for decoding a box's phrase")
    object_box_threshold: float = Field(0.1, ge=0, le=1)
    filter_word: str | None = Field(None, description="phrase word that marks a box as the object itself")
    grounding_short_side: int = Field(800, ge=64, le=2048, description="GroundingDINO input: shorter side (px)")
    grounding_max_size: int = Field(1333, ge=64, le=4096, description="GroundingDINO input: longest side cap (px)")
    caption_batch: int = Field(
        0, ge=0, le=64,
        description="caption rows per GroundingDINO fusion pass; 0: auto (1 on CPU, where batching only adds "
                    "page faults, 8 on CUDA)")
    saliency_input_size: int = Field(256, ge=32, le=2048, description="square input of the saliency CNN (single object)")
    multi_instance_input_size: int = Field(1024, ge=32, le=2048)
    rescore_gain: float = Field(1.0, gt=0, description="s * exp(gain * mean saliency) (eq. 6-7; reference code 3)")
    fusion_denominator_offset: float = Field(0.0, ge=0, description="A = sum s r / (offset + sum r) (eq. 8-9)")
    max_regions: int = Field(100, gt=0, description="cap on SAM box prompts per image (highest scores kept)")
    calibration_margin: float = Field(
        1.2, gt=0, description="with reference shots: map 0.5 = margin x highest reference response")
    calibration_min_level: float = Field(
        0.05, gt=0, le=1, description="floor of the reference response used for calibration")
