"""Detection methods. :func:`create_detector` is the one entry point (like open_clip's factory)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

from inspector.detect.base import Detection, Detector, Region, StageTimer
from inspector.registry import resolve

# pipeline name -> "module:Class" (or a class given to register_detector); modules are imported
# lazily so a weight-free install never pays for importing the foundation-model libraries it does not use.
_REGISTRY: dict[str, str | type[Detector]] = {
    "patchcore": "inspector.detect.patchcore:PatchCoreDetector",
    "variation": "inspector.detect.variation:VariationDetector",
    "fade": "inspector.detect.fade:FadeDetector",
    "saa": "inspector.detect.saa:SaaDetector",
    "clipsam": "inspector.detect.clipsam:ClipSamDetector",
}


def available_pipelines() -> list[str]:
    return sorted(_REGISTRY)


def detector_class(name: str) -> type[Detector]:
    """The detector class of pipeline ``name`` (imported now); an unknown name is a ``ValueError``."""
    target = _REGISTRY.get(name)
    if isinstance(target, type):
        return target
    if target is None:
        raise ValueError(f"unknown pipeline {name!r}; choose one of {', '.join(available_pipelines())}")
    return resolve({name: target}, name, "pipeline")


_NAME = re.compile(r"[a-z][a-z0-9_-]*")


def register_detector(name: str, cls: type[Detector] | str, *, replace: bool = False) -> None:
    """Make ``cls`` the detector of pipeline ``name`` in this process.

    ``cls`` is a :class:`Detector` subclass, or ``"package.module:Class"``, imported at its first use
    as the built-in pipelines are. ``name`` is lower case: letters, digits, ``_`` and ``-``. A name
    that is already registered is refused unless ``replace=True``.

    After this, :func:`create_detector`, :func:`detector_class` and ``inspector eval --pipeline NAME``
    find it. A profile can only name a pipeline of :data:`inspector.params.PIPELINE_PARAMS`, because
    its parameter section lives there: a new name serves code and the evaluation CLI, while
    ``replace=True`` on a built-in name sends the profiles of that pipeline to ``cls``.
    :func:`registered_detector` undoes the registration when its block ends.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"pipeline name {name!r}: use lower-case letters, digits, '_' or '-', starting with a letter")
    if isinstance(cls, str):
        module, sep, attr = cls.partition(":")
        if not (module and sep and attr) or ":" in attr:
            raise ValueError(f"detector {cls!r} for pipeline {name!r}: give 'package.module:Class'")
    elif not (isinstance(cls, type) and issubclass(cls, Detector)):
        raise TypeError(f"detector for pipeline {name!r} must be a Detector subclass or 'package.module:Class', "
                        f"not {cls!r}")
    if name in _REGISTRY and not replace:
        raise ValueError(f"pipeline {name!r} is already registered ({_describe(_REGISTRY[name])}); "
                         "pass replace=True to replace it")
    _REGISTRY[name] = cls


@contextlib.contextmanager
def registered_detector(name: str, cls: type[Detector] | str, *, replace: bool = False) -> Iterator[str]:
    """:func:`register_detector` for the ``with`` block, which yields ``name``; on leaving it the
    previous detector of ``name`` is back (or the name is gone, if it was new)."""
    previous = _REGISTRY.get(name)
    register_detector(name, cls, replace=replace)
    try:
        yield name
    finally:
        if previous is None:
            _REGISTRY.pop(name, None)
        else:
            _REGISTRY[name] = previous


def _describe(target: str | type[Detector]) -> str:
    return target if isinstance(target, str) else f"{target.__module__}:{target.__qualname__}"


def create_detector(name: str) -> Detector:
    """Instantiate the detector for a pipeline name (``variation``, ``fade``, ``saa``, ``clipsam``)."""
    return detector_class(name)()


__all__ = ["Detection", "Detector", "Region", "StageTimer", "available_pipelines", "create_detector", "detector_class",
           "register_detector", "registered_detector"]
