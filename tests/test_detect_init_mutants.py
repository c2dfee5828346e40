"""Known-answer tests of the pipeline registry in :mod:`inspector.detect` (exact messages, what a
registration replaces and restores)."""

from __future__ import annotations


import pytest

from inspector import detect as detect_mod
from inspector.detect import (
    available_pipelines,
    create_detector,
    detector_class,
    register_detector,
    registered_detector,
)
from inspector.detect.base import Detector
from tests.support.checks import exact
from tests.support.diff_detector import RefDiffDetector

BUILT_IN = ["clipsam", "fade", "patchcore", "saa", "variation"]


class _Other(RefDiffDetector):
    pass


def test_built_in_pipelines_and_their_classes() -> None:
    assert available_pipelines() == BUILT_IN
    want = {"clipsam": "ClipSamDetector", "fade": "FadeDetector", "patchcore": "PatchCoreDetector",
            "saa": "SaaDetector", "variation": "VariationDetector"}
    for name, cls_name in want.items():
        cls = detector_class(name)
        assert isinstance(cls, type) and issubclass(cls, Detector) and cls.__name__ == cls_name
    d = create_detector("variation")
    assert type(d) is detector_class("variation") and d is not create_detector("variation")


@pytest.mark.parametrize("name", ["nope", "", "Fade"])
def test_unknown_pipeline_message(name: str) -> None:
    msg = f"unknown pipeline {name!r}; choose one of clipsam, fade, patchcore, saa, variation"
    with pytest.raises(ValueError, match=exact(msg)):
        detector_class(name)
    with pytest.raises(ValueError, match=exact(msg)):
        create_detector(name)


def test_class_and_lazy_registrations() -> None:
    with registered_detector("a-b_9", RefDiffDetector) as name:
        assert name == "a-b_9" and detector_class("a-b_9") is RefDiffDetector
        assert detect_mod._REGISTRY["a-b_9"] is RefDiffDetector
        assert available_pipelines() == sorted([*BUILT_IN, "a-b_9"])
    with registered_detector("lazy", "tests.test_detect_init_mutants:_Other") as name:
        assert name == "lazy" and detect_mod._REGISTRY["lazy"] == "tests.test_detect_init_mutants:_Other"
        assert detector_class("lazy") is _Other and type(create_detector("lazy")) is _Other
    assert available_pipelines() == BUILT_IN
    register_detector("x1", _Other)
    try:
        assert detector_class("x1") is _Other
    finally:
        del detect_mod._REGISTRY["x1"]


@pytest.mark.parametrize("name", ["RefDiff", "", "ref diff", "9lives", "_x", "-x", "a.b", "ab!", "é", 5, None])
def test_bad_names(name) -> None:
    msg = f"pipeline name {name!r}: use lower-case letters, digits, '_' or '-', starting with a letter"
    with pytest.raises(ValueError, match=exact(msg)):
        register_detector(name, RefDiffDetector)
    assert available_pipelines() == BUILT_IN


@pytest.mark.parametrize("target", ["tests.support.diff_detector.RefDiffDetector", ":RefDiffDetector",
                                    "tests.support:", "a:b:c", ":", ""])
def test_bad_module_paths(target: str) -> None:
    msg = f"detector {target!r} for pipeline 'x': give 'package.module:Class'"
    with pytest.raises(ValueError, match=exact(msg)):
        register_detector("x", target)
    assert available_pipelines() == BUILT_IN


@pytest.mark.parametrize("target", [object, RefDiffDetector(), 3, None, Detector.__init__])
def test_not_a_detector(target) -> None:
    msg = f"detector for pipeline 'x' must be a Detector subclass or 'package.module:Class', not {target!r}"
    with pytest.raises(TypeError, match=exact(msg)):
        register_detector("x", target)
    assert available_pipelines() == BUILT_IN


def test_already_registered_names_the_current_target() -> None:
    msg = ("pipeline 'fade' is already registered (inspector.detect.fade:FadeDetector); "
           "pass replace=True to replace it")
    with pytest.raises(ValueError, match=exact(msg)):
        register_detector("fade", RefDiffDetector)
    with pytest.raises(ValueError, match=exact(msg)):
        register_detector("fade", RefDiffDetector, replace=False)

    class Local(RefDiffDetector):
        pass

    with registered_detector("loc", Local):
        msg = (f"pipeline 'loc' is already registered ({__name__}:"
               "test_already_registered_names_the_current_target.<locals>.Local); pass replace=True to replace it")
        with pytest.raises(ValueError, match=exact(msg)):
            register_detector("loc", RefDiffDetector)
    assert available_pipelines() == BUILT_IN


def test_replace_and_restore() -> None:
    before = detect_mod._REGISTRY["fade"]
    with registered_detector("fade", _Other, replace=True) as name:
        assert name == "fade" and detector_class("fade") is _Other
        with registered_detector("fade", "tests.test_detect_init_mutants:RefDiffDetector", replace=True):
            assert detector_class("fade") is RefDiffDetector
        assert detect_mod._REGISTRY["fade"] is _Other
    assert detect_mod._REGISTRY["fade"] == before == "inspector.detect.fade:FadeDetector"
    register_detector("fade", _Other, replace=True)
    try:
        assert detector_class("fade") is _Other
    finally:
        detect_mod._REGISTRY["fade"] = before
    with pytest.raises(RuntimeError, match="^boom$"), registered_detector("new", _Other):
        raise RuntimeError("boom")
    assert "new" not in detect_mod._REGISTRY
