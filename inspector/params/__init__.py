"""Per-pipeline tunables of a product profile (one pydantic model per method).

Each module owns the numbers one detection method exposes to profile engineers; the
defaults are the published ones. ``inspector.profile`` composes them into the profile.
"""

from inspector.params.clipsam import ClipSamParams
from inspector.params.fade import FadeParams
from inspector.params.patchcore import PatchCoreParams
from inspector.params.saa import SaaParams
from inspector.params.variation import VariationParams

__all__ = ["ClipSamParams", "FadeParams", "PatchCoreParams", "SaaParams", "VariationParams"]
