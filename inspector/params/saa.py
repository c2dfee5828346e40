"""SAA / SAA+ tunables (defaults from ``shared/methods/saa.md``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from inspector.params.base import Params


class SaaParams(Params):
    variant: Literal["saa", "saa+"] = "saa+"
    box_threshold: float = Field(0.1, ge=0, le=1, description="GroundingDINO max token score to keep a box")
    text_threshold: float = Field(0.1, ge=0, le=1, description="token score for decoding a box's phrase")
    object_box_threshold: float = Field(0.1, ge=0, le=1)
    filter_word: str | None = Field(None, description="phrase word that marks a box as the object itself")
    saliency_input_size: int = Field(256, gt=0, description="square input of the saliency CNN (single object)")
    multi_instance_input_size: int = Field(1024, gt=0)
    rescore_gain: float = Field(1.0, gt=0, description="s * exp(gain * mean saliency) (eq. 6-7; reference code 3)")
    fusion_denominator_offset: float = Field(0.0, ge=0, description="A = sum s r / (offset + sum r) (eq. 8-9)")
    max_regions: int = Field(100, gt=0, description="cap on SAM box prompts per image (batch chunking)")
