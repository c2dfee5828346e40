"""PatchCore-class few-shot pipeline on real ImageNet features (the day-one default).

``features`` (eq. 3 patch features), ``memory`` (coreset, kNN, reweighting), ``tiling`` (large
images) are pure functions; ``detector`` holds the :class:`PatchCoreDetector`.
"""

from inspector.detect.patchcore.detector import PatchCoreDetector, PatchCoreError

__all__ = ["PatchCoreDetector", "PatchCoreError"]
