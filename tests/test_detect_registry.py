"""``inspector.detect.register_detector`` / ``registered_detector``: adding a detector without touching the registry."""

from __future__ import annotations

import pytest

from inspector.detect import (
    available_pipelines,
    create_detector,
    detector_class,
    register_detector,
    registered_detector,
)
from inspector.detect.base import Detector
from inspector.params import PIPELINE_PARAMS
from inspector.profile import PIPELINES, ProductProfile, profile_from_dict
from tests.support.diff_detector import RefDiffDetector

BUILT_IN = sorted(PIPELINE_PARAMS)


class _Other(RefDiffDetector):
    pass


def test_a_new_name_is_found_and_gone_after_the_block() -> None:
    assert available_pipelines() == BUILT_IN
    with registered_detector("refdiff-x", RefDiffDetector) as name:
        assert name == "refdiff-x"
        assert available_pipelines() == sorted([*BUILT_IN, "refdiff-x"])
        assert detector_class("refdiff-x") is RefDiffDetector
        assert type(create_detector("refdiff-x")) is RefDiffDetector
    assert available_pipelines() == BUILT_IN
    with pytest.raises(ValueError, match="unknown pipeline 'refdiff-x'; choose one of clipsam, fade, patchcore"):
        detector_class("refdiff-x")


def test_a_lazy_module_path_is_imported_at_first_use() -> None:
    with registered_detector("lazy", "tests.test_detect_registry:_Other"):
        assert detector_class("lazy") is _Other


def test_replacing_a_built_in_needs_replace_and_is_undone() -> None:
    before = detector_class("variation")
    with pytest.raises(ValueError, match=r"pipeline 'variation' is already registered "
                                         r"\(inspector.detect.variation:VariationDetector\); pass replace=True"):
        register_detector("variation", RefDiffDetector)
    assert detector_class("variation") is before  # the refusal changed nothing
    with registered_detector("variation", RefDiffDetector, replace=True):
        assert detector_class("variation") is RefDiffDetector
        # a profile naming the built-in pipeline now gets the replacement
        prof = ProductProfile(name="p", pipeline="variation")
        assert type(create_detector(prof.pipeline)) is RefDiffDetector
    assert detector_class("variation") is before
    assert before.__name__ == "VariationDetector"


def test_nested_registrations_restore_in_order() -> None:
    with registered_detector("refdiff-x", RefDiffDetector):
        with registered_detector("refdiff-x", _Other, replace=True):
            assert detector_class("refdiff-x") is _Other
        assert detector_class("refdiff-x") is RefDiffDetector
    assert "refdiff-x" not in available_pipelines()


def test_a_failed_registration_inside_the_block_leaves_nothing() -> None:
    with pytest.raises(ValueError, match="already registered"), registered_detector("fade", RefDiffDetector):
        pass  # pragma: no cover - never entered
    assert detector_class("fade").__name__ == "FadeDetector"


def test_an_exception_in_the_block_still_restores() -> None:
    with pytest.raises(RuntimeError, match="boom"), registered_detector("refdiff-x", RefDiffDetector):
        raise RuntimeError("boom")
    assert "refdiff-x" not in available_pipelines()


@pytest.mark.parametrize(("name", "cls", "error", "match"), [
    ("RefDiff", RefDiffDetector, ValueError, "pipeline name 'RefDiff': use lower-case letters"),
    ("", RefDiffDetector, ValueError, "pipeline name '': use lower-case"),
    ("ref diff", RefDiffDetector, ValueError, "pipeline name 'ref diff'"),
    ("9lives", RefDiffDetector, ValueError, "starting with a letter"),
    ("x", "tests.support.diff_detector.RefDiffDetector", ValueError, "give 'package.module:Class'"),
    ("x", ":RefDiffDetector", ValueError, "give 'package.module:Class'"),
    ("x", "a:b:c", ValueError, "give 'package.module:Class'"),
    ("x", object, TypeError, "must be a Detector subclass"),
    ("x", RefDiffDetector(), TypeError, "must be a Detector subclass"),
    ("x", Detector.__init__, TypeError, "must be a Detector subclass"),
])
def test_bad_registrations_are_refused_clearly(name, cls, error, match) -> None:
    with pytest.raises(error, match=match):
        register_detector(name, cls)
    assert available_pipelines() == BUILT_IN


def test_profiles_still_name_only_the_params_pipelines() -> None:
    """The pipeline list is PIPELINE_PARAMS: a registered detector does not widen what a profile may name."""
    with registered_detector("refdiff-x", RefDiffDetector):
        assert PIPELINES == tuple(PIPELINE_PARAMS)
        with pytest.raises(ValueError, match="pipeline: unknown pipeline 'refdiff-x'; choose one of patchcore"):
            profile_from_dict({"name": "p", "pipeline": "refdiff-x"})
        assert profile_from_dict({"name": "p", "pipeline": "fade"}).pipeline == "fade"
