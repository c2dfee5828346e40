"""Per-pipeline tunables of a product profile (one pydantic model per method).

Each module owns the numbers one detection method exposes to profile engineers; the
defaults are the published ones. ``inspector.profile`` composes them into the profile.
"""

from inspector.params.clipsam import ClipSamParams
from inspector.params.fade import FadeParams
from inspector.params.patchcore import PatchCoreParams
from inspector.params.saa import SaaParams
from inspector.params.variation import VariationParams

PIPELINE_PARAMS: dict[str, type] = {
    "patchcore": PatchCoreParams,
    "fade": FadeParams,
    "saa": SaaParams,
    "clipsam": ClipSamParams,
    "variation": VariationParams,
}
"""Every pipeline and its parameter model, the default first. The one list of pipelines: the
profile (its ``pipeline`` choices and sections), the CLI choices and the editor derive from it;
``inspector.detect`` registers one detector per name. Adding a method means adding its detector
module (registered in :mod:`inspector.detect`), its params module (here) and its profile section."""

__all__ = ["PIPELINE_PARAMS", "ClipSamParams", "FadeParams", "PatchCoreParams", "SaaParams", "VariationParams"]
