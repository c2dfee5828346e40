"""The live preview's table: which profile changes re-run what (pure, no Qt, no models)."""

from __future__ import annotations

import pytest

from inspector.profile import PIPELINES, ProductProfile
from inspector.ui.preview import change_effect, changed_fields, field_effect, sections_used


def _edit(profile: ProductProfile, **changes) -> ProductProfile:
    data = profile.to_yaml_dict()
    for path, value in changes.items():
        target = data
        parts = path.split("__")
        for part in parts[:-1]:
            target = target[part]
        target[parts[-1]] = value
    return ProductProfile.model_validate(data)


@pytest.mark.parametrize(
    ("pipeline", "changes", "effect"),
    [
        ("saa", {"decision__image_threshold": 0.7}, "finish"),
        ("saa", {"decision__min_defect_area_px": 30, "properties__top_k": 2}, "finish"),
        ("saa", {"properties__max_area_ratio": 0.2, "properties__min_iou_with_object": 0.1}, "finish"),
        ("fade", {"roi": [[0, 0], [10, 0], [10, 10]]}, "finish"),
        ("saa", {"properties__object_count": 3}, "prepare"),
        ("fade", {"prompts__class_specific": ["crack"]}, "prepare"),
        ("fade", {"object": "bottle cap"}, "prepare"),
        ("fade", {"image_scales": [240, 448]}, "prepare"),
        ("fade", {"reference_shots": ["references/a.png"]}, "prepare"),
        ("clipsam", {"models__sam": "sam_vit_h"}, "prepare"),
        ("fade", {"fade__temperature": 0.02}, "prepare"),
        ("clipsam", {"fade__temperature": 0.02}, "prepare"),  # CLIP->SAM takes its map from FADE
        ("fade", {"saa__box_threshold": 0.3}, "none"),  # another pipeline's section
        ("fade", {"description": "new line", "reason_codes": ["dent"]}, "none"),
        ("variation", {"prompts__class_specific": ["crack"], "properties__top_k": 1}, "none"),
        ("variation", {"variation__smoothing_sigma": 2.0}, "finish"),  # declared by the detector
        ("variation", {"variation__feature_stride": 8}, "prepare"),
        ("variation", {"decision__image_threshold": 0.2, "variation__working_size": 128}, "prepare"),
        ("variation", {"pipeline": "fade"}, "pipeline"),
        ("patchcore", {"patchcore__input_size": 384}, "prepare"),  # its own section, from the registry
        ("patchcore", {"fade__temperature": 0.02, "variation__feature_stride": 8}, "none"),
        ("clipsam", {"models__adapter": "aprilgan_visa"}, "prepare"),  # optional: the APRIL-GAN map provider
        ("saa", {"clipsam__extreme_threshold": 0.5, "fade__temperature": 0.02}, "none"),
    ],
)
def test_change_effect(pipeline: str, changes: dict, effect: str) -> None:
    base = ProductProfile(name="part", object="part", pipeline=pipeline)
    assert change_effect(base, _edit(base, **changes)) == effect


def test_no_profile_yet_builds_the_pipeline() -> None:
    assert change_effect(None, ProductProfile(name="part")) == "pipeline"


def test_changed_fields_are_dotted_paths() -> None:
    base = ProductProfile(name="part")
    new = _edit(base, decision__image_threshold=0.9, image_scales=[240])
    assert changed_fields(base, new) == ["decision.image_threshold", "image_scales"]
    assert field_effect("decision.pixel_threshold", "saa") == "finish"
    assert field_effect("something.new", "saa") == "prepare"  # unknown fields are treated safely


def test_every_pipeline_reads_its_own_section_and_declared_ones_only() -> None:
    for pipeline in PIPELINES:
        used = sections_used(pipeline)
        assert pipeline in used and used <= set(PIPELINES), (pipeline, used)
    assert sections_used("clipsam") == {"clipsam", "fade"}  # declared by ClipSamDetector
    assert sections_used("variation") == {"variation"}
