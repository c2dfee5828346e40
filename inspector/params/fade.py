"""FADE tunables (defaults from ``shared/methods/fade.md``, fusion table)."""

from __future__ import annotations

from pydantic import Field

from inspector.params.base import Params


class FadeParams(Params):
    """Language/vision guidance weights and multipliers. Clip to [0, 1] after fusion."""

    classification_scale: int = Field(240, gt=0, description="input size of the CLIP CLS pass (language AC)")
    use_language: bool = True
    use_vision: bool = True
    # 0-shot: map = w_lang0 * L_AS + (1 - w_lang0) * (vision_gain_0shot * V)
    zero_shot_language_weight: float = Field(0.5, ge=0, le=1)
    zero_shot_vision_gain: float = Field(80.0, gt=0)
    # k-shot: map = w_langk * L_AS + (1 - w_langk) * (vision_gain_kshot * V);
    # score = (p_AC + max(vision_gain_kshot * V)) / 2
    few_shot_language_weight: float = Field(0.15, ge=0, le=1)
    few_shot_vision_gain: float = Field(3.5, gt=0)
    temperature: float = Field(0.01, gt=0, description="softmax temperature of text similarity (eq. 1)")
    knn_chunk: int = Field(1024, gt=0, description="query patches per kNN chunk (bounds memory at 896)")
