"""FADE tunables (defaults from ``shared/methods/fade.md``, fusion table)."""

from __future__ import annotations

from pydantic import Field, field_validator

from inspector.params.base import Params


class FadeParams(Params):
    """Language/vision guidance weights and multipliers. Map and score are clipped to [0, 1] after fusion.

    ======  =================================  ==============================================
    shots   image score                        pixel map
    ======  =================================  ==============================================
    0       p_AC                               w0·L_AS + (1 − w0)·(g0·V)   (w0 = 0.5, g0 = 80)
    k ≥ 1   (p_AC + max(gk·V)) / 2             wk·L_AS + (1 − wk)·(gk·V)   (wk = 0.15, gk = 3.5)
    ======  =================================  ==============================================
    """

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
    text_template: str = Field(
        "a photo of a {}.",
        description="every prompt is encoded as this template around it (the published numbers depend on it)",
    )
    industrial_prompts: bool = Field(
        True, description="add the built-in object-agnostic industrial descriptions to the segmentation ensemble"
    )

    @field_validator("text_template")
    @classmethod
    def _template(cls, v: str) -> str:
        if v.count("{}") != 1:
            raise ValueError(f"must contain exactly one '{{}}' where the prompt goes, got {v!r}")
        return v

    @field_validator("classification_scale")
    @classmethod
    def _cls_scale(cls, v: int) -> int:
        if not 32 <= v <= 2048:
            raise ValueError(f"must be in [32, 2048] px, got {v}")
        return v
