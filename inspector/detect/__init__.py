"""Detection methods. :func:`create_detector` is the one entry point (like open_clip's factory)."""

from __future__ import annotations


from inspector.detect.base import Detection, Detector, Region, StageTimer
from inspector.registry import resolve

# pipeline name -> "module:Class"; modules are imported lazily so a weight-free install never
# pays for importing the foundation-model libraries it does not use.
_REGISTRY: dict[str, str] = {
    "patchcore": "inspector.detect.patchcore:PatchCoreDetector",
    "variation": "inspector.detect.variation:VariationDetector",
    "fade": "inspector.detect.fade:FadeDetector",
    "saa": "inspector.detect.saa:SaaDetector",
    "clipsam": "inspector.detect.clipsam:ClipSamDetector",
}


def available_pipelines() -> list[str]:
    return sorted(_REGISTRY)


def detector_class(name: str) -> type[Detector]:
    return resolve(_REGISTRY, name, "pipeline")


def create_detector(name: str) -> Detector:
    """Instantiate the detector for a pipeline name (``variation``, ``fade``, ``saa``, ``clipsam``)."""
    return detector_class(name)()


__all__ = ["Detection", "Detector", "Region", "StageTimer", "available_pipelines", "create_detector", "detector_class"]
