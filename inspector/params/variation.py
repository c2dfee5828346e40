"""Weight-free reference pipeline tunables. Owned by ``inspector/detect/variation.py``."""

from __future__ import annotations

from pydantic import Field

from inspector.params.base import Params


class VariationParams(Params):
    working_size: int = Field(256, ge=32, le=2048, description="images are resized to this square side")
    smoothing_sigma: float = Field(4.0, ge=0, description="Gaussian blur of the final map (px)")
