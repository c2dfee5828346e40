"""The decision rule, the ROI and the weight pre-flight of :class:`inspector.inspection.Inspector`."""

from __future__ import annotations

import numpy as np
import pytest

from inspector.detect.base import Detection, Region
from inspector.inspection import Inspector, apply_roi, decide, ensure_regions
from inspector.models.hub import ModelHub
from inspector.models.store import ModelMissingError
from inspector.profile import ProductProfile


def detection(score: float, regions: list[Region] | None = None, size: int = 32) -> Detection:
    amap = np.zeros((size, size), np.float32)
    for r in regions or []:
        x0, y0, x1, y1 = r.box
        amap[y0:y1, x0:x1] = r.score
    return Detection(anomaly_map=amap, image_score=score, regions=list(regions or []))


def test_decide_needs_score_and_large_enough_region() -> None:
    prof = ProductProfile(name="p")
    prof.decision.image_threshold = 0.5
    small = Region(box=(0, 0, 2, 2), score=0.9, area_px=4)
    big = Region(box=(0, 0, 10, 10), score=0.9, area_px=100)
    assert decide(detection(0.4, [big]), prof) == "PASS"  # below the image threshold
    assert decide(detection(0.5, [small]), prof) == "FAIL"  # no minimum area
    prof.decision.min_defect_area_px = 50
    assert decide(detection(0.9, [small]), prof) == "PASS"
    assert decide(detection(0.9, [small, big]), prof) == "FAIL"


def test_map_only_pipelines_get_regions_at_the_region_threshold() -> None:
    prof = ProductProfile(name="p")
    prof.decision.pixel_threshold = 0.3
    det = detection(0.9)
    det.anomaly_map[5:9, 20:30] = 0.4  # 4 rows x 10 cols
    det = ensure_regions(det, prof)
    assert [(r.box, r.area_px) for r in det.regions] == [((20, 5, 30, 9), 40)]


def test_roi_removes_defects_outside_and_caps_the_score() -> None:
    prof = ProductProfile(name="p", roi=[(0, 0), (16, 0), (16, 32), (0, 32)])  # left half (x < 16)
    inside = Region(box=(2, 2, 6, 6), score=0.3, area_px=16)
    outside = Region(box=(20, 20, 28, 28), score=0.95, area_px=64)
    det = apply_roi(detection(0.95, [inside, outside]), prof)
    assert det.regions == [inside]
    assert det.anomaly_map[20:28, 20:28].max() == 0.0
    assert det.image_score == pytest.approx(0.3)


def test_required_models_reduce_file_selectors_and_add_the_adapter() -> None:
    prof = ProductProfile(name="p", pipeline="clipsam")
    prof.clipsam.map_provider = "aprilgan"
    prof.models.adapter = "aprilgan_vitl14_336:mvtec_pretrained.pth"
    ins = Inspector(prof, ModelHub(device="cpu", precision="fp32"))
    assert ins.required_models() == [("clip", prof.models.clip), ("sam", prof.models.sam),
                                     ("adapter", "aprilgan_vitl14_336")]
    assert Inspector(ProductProfile(name="v", pipeline="variation"), ins.hub).required_models() == []
    # the default pipeline (patchcore) names its backbone from its own section, not models.backbone
    assert Inspector(ProductProfile(name="d"), ins.hub).required_models() == [("backbone", "efficientnet_lite0")]


def test_check_weights_names_the_missing_model_before_building_anything(tmp_settings) -> None:
    prof = ProductProfile(name="p", pipeline="fade")
    hub = ModelHub(device="cpu", precision="fp32")
    ins = Inspector(prof, hub)
    with pytest.raises(ModelMissingError) as err:
        ins.check_weights()
    assert err.value.key == prof.models.clip
    assert "inspector models" in str(err.value)
    assert hub.loaded() == []
