"""Live preview for the profile editor: re-run only what a profile change affects.

The table :data:`CHANGE_EFFECTS` says, for each profile field, what a change costs:

==========  ===================================================================================
effect      what the preview does
==========  ===================================================================================
none        nothing to recompute (labels, reason codes); the profile object is swapped in
finish      ``Inspector.retune`` + ``Inspector.finish`` on the cached ``analyse`` result
prepare     ``prepare`` again (prompts, references, scales, models; detectors cache their own
            text/reference work) and ``analyse`` again
pipeline    a new detector (pipeline choice)
==========  ===================================================================================

A field not in the table counts as ``prepare`` (safe: at worst the preview does more work than
needed). A parameter section of a pipeline that is not in use changes nothing, nor do the fields
a pipeline never reads (:func:`unused_fields`: the weight-free pipeline has no prompts). A detector class
may declare more finish-only parameters with a class attribute ``finish_params`` (dotted paths,
e.g. ``("variation.smoothing_sigma",)``).

:class:`PreviewEngine` is Qt-free; the editor calls it only inside worker jobs (it runs models).
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from inspector.detect import detector_class
from inspector.detect.base import Progress
from inspector.imaging import read_image
from inspector.inspection import Inspection, Inspector
from inspector.models.hub import ModelHub
from inspector.profile import PIPELINES, ProductProfile, flatten, model_fields_read

log = logging.getLogger(__name__)

Effect = Literal["none", "finish", "prepare", "pipeline"]
_RANK: dict[str, int] = {"none": 0, "finish": 1, "prepare": 2, "pipeline": 3}

# dotted field path (or a prefix of it) -> what a change costs; the longest matching prefix wins
CHANGE_EFFECTS: dict[str, Effect] = {
    "name": "none",
    "version": "none",
    "description": "none",
    "author": "none",
    "change_note": "none",
    "saved_at": "none",
    "reason_codes": "none",
    "decision": "finish",
    "roi": "finish",
    "properties.top_k": "finish",
    "properties.max_area_ratio": "finish",
    "properties.min_iou_with_object": "finish",
    "properties": "prepare",  # object_count, saliency_neighbors shape the analysis
    "object": "prepare",
    "prompts": "prepare",
    "image_scales": "prepare",
    "reference_shots": "prepare",
    "models": "prepare",
    "pipeline": "pipeline",
}

# profile fields a pipeline never reads: changing them changes nothing in its preview. A detector
# class may declare them itself (``unused_fields``, dotted paths); otherwise they follow from the
# model kinds it loads (``requires``): prompts are read by text encoders (CLIP, GroundingDINO), the
# SAA property prompts by the grounding pipeline, the image scales by CLIP maps, ``models.<kind>``
# only where that kind is loaded.
TEXT_ENCODERS = ("clip", "grounding")
MODEL_KINDS = ("clip", "sam", "grounding", "backbone", "adapter")


def _detector_attr(pipeline: str, name: str, default: Any) -> Any:
    try:
        return getattr(detector_class(pipeline), name, default)
    except (ImportError, ValueError):  # detector module not installed / unknown pipeline
        return default


@functools.lru_cache(maxsize=32)
def unused_fields(pipeline: str) -> tuple[str, ...]:
    """Dotted profile fields (or sections) the pipeline never reads (asks the detector class)."""
    declared = _detector_attr(pipeline, "unused_fields", None)
    if declared is not None:
        return tuple(declared)
    requires = set(_detector_attr(pipeline, "requires", ()))
    optional = set(_detector_attr(pipeline, "optional_requires", ()))  # kinds loaded only for some settings
    out: list[str] = []
    if not requires & set(TEXT_ENCODERS):
        out += ["object", "prompts"]
    if "grounding" not in requires:
        out.append("properties")
    if "clip" not in requires:
        out.append("image_scales")
    try:  # which models.<kind> keys the detector actually reads (not e.g. a backbone from its own params)
        read = set(model_fields_read(pipeline, detector_class(pipeline).required_models)) | optional
    except (ImportError, ValueError, AttributeError):
        read = requires | optional
    out += [f"models.{kind}" for kind in MODEL_KINDS if kind not in read]
    return tuple(out)


def reads_field(pipeline: str, path: str) -> bool:
    """False when ``pipeline`` never reads the dotted field ``path`` (nor anything under it)."""
    return not any(path == u or path.startswith(u + ".") for u in unused_fields(pipeline))


def sections_used(pipeline: str) -> frozenset[str]:
    """Parameter sections the pipeline reads: the detector class's ``param_sections`` (CLIP→SAM also
    reads ``fade``, its map provider's), else its own section (the pipeline's name)."""
    return frozenset(_detector_attr(pipeline, "param_sections", None) or (pipeline,))




def changed_fields(old: ProductProfile, new: ProductProfile) -> list[str]:
    a, b = flatten(old.to_yaml_dict()), flatten(new.to_yaml_dict())
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def _finish_params(pipeline: str) -> tuple[str, ...]:
    try:
        return tuple(getattr(detector_class(pipeline), "finish_params", ()))
    except (ImportError, AttributeError, ValueError):  # detector module not installed / not written
        return ()


def field_effect(path: str, pipeline: str, extra_finish: Iterable[str] = ()) -> Effect:
    """What a change of one dotted field costs under ``pipeline`` (see the module table)."""
    if any(path == p or path.startswith(p + ".") for p in extra_finish):
        return "finish"
    head = path.split(".", 1)[0]
    if not reads_field(pipeline, path):
        return "none"
    if head in PIPELINES:
        return "prepare" if head in sections_used(pipeline) else "none"
    best, best_len = "prepare", -1
    for prefix, effect in CHANGE_EFFECTS.items():
        if (path == prefix or path.startswith(prefix + ".")) and len(prefix) > best_len:
            best, best_len = effect, len(prefix)
    return best  # type: ignore[return-value]


def change_effect(old: ProductProfile | None, new: ProductProfile) -> Effect:
    """The costliest effect among the fields that differ between two profiles."""
    if old is None or old.pipeline != new.pipeline:
        return "pipeline"
    extra = _finish_params(new.pipeline)
    worst: Effect = "none"
    for path in changed_fields(old, new):
        eff = field_effect(path, new.pipeline, extra)
        if _RANK[eff] > _RANK[worst]:
            worst = eff
    return worst


@dataclass
class PreviewResult:
    """What the editor shows: the image, its inspection, and what was recomputed to get it."""

    image: np.ndarray
    inspection: Inspection
    effect: Effect
    analysed: bool
    threshold: float


class PreviewEngine:
    """Holds one :class:`Inspector` and the ``analyse`` results of recently previewed images.

    Call its methods only from the worker thread (they run models).
    """

    def __init__(self, cache_images: int = 4) -> None:
        self.inspector: Inspector | None = None
        self._analyses: OrderedDict[str, Any] = OrderedDict()
        self._images: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_images = cache_images
        self.prepare_count = 0
        self.analyse_count = 0
        self._lock = threading.RLock()  # jobs may come from more than one worker thread

    @property
    def profile(self) -> ProductProfile | None:
        return self.inspector.profile if self.inspector is not None else None

    def update(self, profile: ProductProfile, hub: ModelHub, progress: Progress | None = None) -> Effect:
        """Adopt ``profile``, redoing only what its changes require; returns the effect applied."""
        with self._lock:
            return self._update(profile, hub, progress)

    def _update(self, profile: ProductProfile, hub: ModelHub, progress: Progress | None) -> Effect:
        effect = change_effect(self.profile, profile)
        if effect == "pipeline" or self.inspector is None or self.inspector.hub is not hub:
            effect = "pipeline"
            self.inspector = Inspector(profile, hub)
        if effect in ("pipeline", "prepare"):
            self._analyses.clear()
            self.inspector.profile = profile
            self.inspector.prepare(progress)
            self.prepare_count += 1
        else:
            self.inspector.retune(profile)
        log.debug("preview: profile %s -> %s", profile.name, effect)
        return effect

    @staticmethod
    def _key(path: str) -> str:
        """Cache key of an image file: a file rewritten in place is analysed again."""
        try:
            st = os.stat(path)
        except OSError:
            return path
        return f"{path}|{st.st_mtime_ns}|{st.st_size}"

    def image(self, path: str) -> np.ndarray:
        key = self._key(path)
        img = self._images.get(key)
        if img is None:
            img = read_image(path)
            self._images[key] = img
            while len(self._images) > self._cache_images:
                self._images.popitem(last=False)
        return img

    def run(self, path: str, effect: Effect = "none") -> PreviewResult:
        """Inspect the image at ``path`` with the current profile, reusing its cached analysis."""
        with self._lock:
            return self._run(path, effect)

    def _run(self, path: str, effect: Effect) -> PreviewResult:
        if self.inspector is None:
            raise RuntimeError("preview has no profile yet; call update() first")
        image = self.image(path)
        key = self._key(path)
        analysis = self._analyses.get(key)
        analysed = analysis is None
        if analysed:
            analysis = self.inspector.detector.analyse(image)
            self.analyse_count += 1
            self._analyses[key] = analysis
            while len(self._analyses) > self._cache_images:
                self._analyses.popitem(last=False)
        inspection = self.inspector.finish(analysis, image, image_path=path)
        return PreviewResult(image=image, inspection=inspection, effect=effect, analysed=analysed,
                             threshold=self.inspector.profile.decision.image_threshold)

