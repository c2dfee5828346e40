"""SaaDetector (prepare / analyse / finish and their helpers): known answers for what mutmut found untested.

The box, region and saliency math has its own known-answer tests (test_saa_known.py,
test_saa_saliency_mutants.py); these tests pin the detector around it. Its pure helpers are checked
on inputs worked out by hand: the caption packing, the object area, the routing of GroundingDINO
queries to defect and object candidates (token scores and boxes planted on a hand-tokenised
caption), the calibration (fused maps of planted reference analyses), the labels and thresholds of
``finish``. The model-facing steps run real tiny random-initialised GroundingDINO, SAM and timm
models (tests/support/tiny_models.py) on a 40×56 image, with expected answers from separate calls
of the same models (a box decoded on its own, the saliency written out as a float64 loop).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inspector.detect.maps import resize_map
from inspector.detect.saa.boxes import BoxCandidates
from inspector.detect.saa.detector import OBJECT_ENTRY, SaaAnalysis, SaaDetector, _to_grid, pack_rows, prompt_entries
from inspector.detect.saa.regions import MaskCrop
from inspector.detect.saa.saliency import pixel_features
from inspector.imaging import write_png
from inspector.models.grounding import GroundingText
from inspector.models.hub import ModelHub
from inspector.profile import ProductProfile
from tests.support.tiny_models import tiny_backbone, tiny_grounding, tiny_sam

HW = (40, 56)
KEYS = {"grounding": "gd_under_test", "sam": "sam_under_test", "backbone": "bb_under_test"}


# ------------------------------------------------------------------------------ pure helpers
def test_pack_rows_greedily_in_order_by_hand():
    assert pack_rows([3, 4, 2, 5, 7], 7) == [[0, 1], [2, 3], [4]]  # 3+4 = 7 fits; 7+2 does not
    assert pack_rows([1, 1, 1], 1) == [[0], [1], [2]]
    assert pack_rows([2, 2, 2], 6) == [[0, 1, 2]]
    assert pack_rows([6, 1], 6) == [[0], [1]]
    assert pack_rows([], 5) == []
    with pytest.raises(ValueError, match="prompt entry 1 has 8 tokens; GroundingDINO reads at most 7 per caption"):
        pack_rows([2, 8], 7)


def test_prompt_entries_strip_skip_empty_and_repeats_by_caption():
    prof = ProductProfile(name="p", object="Nut", prompts={
        "class_agnostic": ["  defect on {object} ", "DEFECT on {object}.", "damage"],
        "class_specific": ["crack.", "damage", "Crack", "bent thread"]})
    # "DEFECT on Nut." normalises to the first entry's caption; "Crack" to "crack."
    assert prompt_entries(prof) == ["defect on Nut", "damage", "crack.", "bent thread"]
    prof.saa.variant = "saa"
    assert prompt_entries(prof) == ["defect on Nut", "damage"]


def test_object_area_is_the_largest_object_box_or_the_image():
    empty = SaaAnalysis((30, 50), BoxCandidates(), [], BoxCandidates())
    assert empty.object_area == 1500.0 and isinstance(empty.object_area, float)
    objects = BoxCandidates(np.array([[0, 0, 10, 5], [2, 2, 6, 14], [1, 3, 4, 4]], np.float32),
                            np.array([0.5, 0.6, 0.7], np.float32), np.full(3, OBJECT_ENTRY), ["a", "b", "c"])
    assert SaaAnalysis((30, 50), BoxCandidates(), [], objects).object_area == 50.0  # 10·5 > 4·12 > 3·1


def test_to_grid_is_a_nearest_neighbour_resize():
    mask = np.zeros((8, 12), bool)
    mask[0:4, 3:9] = True
    got = _to_grid(mask, (4, 6))
    want = np.zeros((4, 6), bool)
    want[0:2, 2:5] = True  # OpenCV's nearest: grid cell i reads source 2i (rows 0, 2 of 0-3; cols 4, 6, 8 of 3-8)
    assert got.dtype == bool and got.shape == (4, 6)
    np.testing.assert_array_equal(got, want)


# ------------------------------------------------------------------------------ query routing (_boxes)
# joint caption "crack. scratch on widget. dent on board. widget." as BERT word pieces
TOKENS = ["[CLS]", "crack", ".", "scratch", "on", "widget", ".", "dent", "on", "board", ".", "widget", ".", "[SEP]"]
SPANS = [(1, 3), (3, 7), (7, 11), (11, 13)]


def _routing_detector(**saa: Any) -> SaaDetector:
    det = SaaDetector()
    det.profile = ProductProfile(name="p", object="widget", properties={"object_count": 2}, saa={
        "box_threshold": 0.3, "text_threshold": 0.25, "object_box_threshold": 0.5, "max_regions": 2,
        "filter_word": "board", **saa})
    det.entries = ["crack", "scratch on widget", "dent on board"]
    return det


def _planted(rows: list[tuple[list[int], list[tuple[int, float]]]], t: int) -> np.ndarray:
    """Q×T token probabilities: 0.05 everywhere, then (token, p) per query."""
    out = np.full((len(rows), t + 2), 0.05, np.float32)  # two padded columns, read by no entry
    out[:, t:] = 0.99
    for q, (_, hits) in enumerate(rows):
        for tok, p in hits:
            out[q, tok] = p
    return out


def test_boxes_route_each_query_to_its_best_entry_and_apply_every_rule():
    det = _routing_detector()
    det.text = GroundingText(rows=["crack. scratch on widget. dent on board. widget."], tokens=[TOKENS],
                             entry_spans=[SPANS], entry_ids=[[0, 1, 2, OBJECT_ENTRY]], text_dict={})
    queries = [  # (box cx, cy, w, h as ints /100), token hits
        ([50, 50, 20, 25], [(1, 0.9)]),  # 0: crack 0.9 → defect
        ([30, 30, 10, 10], [(3, 0.8), (4, 0.8), (5, 0.8)]),  # 1: phrase "scratch on widget" names the object
        ([25, 25, 10, 10], [(3, 0.7)]),  # 2: "scratch" 0.7 → defect
        ([80, 80, 20, 20], [(7, 0.6)]),  # 3: "dent" 0.6 → defect, but only the best 2 defects are kept
        ([60, 40, 10, 10], [(7, 0.95), (8, 0.95), (9, 0.95)]),  # 4: "dent on board" names saa.filter_word
        ([50, 50, 60, 60], [(11, 0.95)]),  # 5: object, area 0.36 < 1/2
        ([50, 50, 80, 80], [(11, 0.97)]),  # 6: object, area 0.64 ≥ 1/object_count
        ([40, 60, 20, 40], [(11, 0.45)]),  # 7: object below object_box_threshold 0.5
        ([20, 20, 10, 30], [(11, 0.9)]),  # 8: object → the two best objects are 5 and 8
        ([70, 70, 10, 10], [(11, 0.6)]),  # 9: object, third best: cut by max_regions
        ([10, 10, 10, 10], [(1, 0.2)]),  # 10: below box_threshold
        ([90, 20, 20, 20], [(1, 0.35), (11, 0.3)]),  # 11: best entry crack 0.35 → defect, third best
        ([50, 50, 100, 100], [(1, 0.5)]),  # 12: crack, but the box is the whole image (area 1 is not < 1)
    ]
    logits = _planted(queries, len(TOKENS))[None]
    boxes = (np.array([q[0] for q in queries], np.float32) / 100.0)[None]
    defects, objects = det._boxes(logits, boxes, HW)
    # pixels: x = (cx ∓ w/2)·56, y = (cy ∓ h/2)·40
    np.testing.assert_allclose(defects.boxes, [[22.4, 15.0, 33.6, 25.0], [11.2, 8.0, 16.8, 12.0]], atol=1e-4)
    np.testing.assert_allclose(defects.scores, [0.9, 0.7], atol=1e-6)
    assert defects.entries.tolist() == [0, 1] and defects.phrases == ["crack", "scratch"]
    np.testing.assert_allclose(objects.boxes, [[11.2, 8.0, 44.8, 32.0], [8.4, 2.0, 14.0, 14.0]], atol=1e-4)
    np.testing.assert_allclose(objects.scores, [0.95, 0.9], atol=1e-6)
    assert objects.entries.tolist() == [OBJECT_ENTRY, OBJECT_ENTRY]
    # more room: the third defect and the third object come back, in score order
    det = _routing_detector(max_regions=5)
    det.text = GroundingText(rows=["x"], tokens=[TOKENS], entry_spans=[SPANS], entry_ids=[[0, 1, 2, OBJECT_ENTRY]],
                             text_dict={})
    defects, objects = det._boxes(logits, boxes, HW)
    assert defects.phrases == ["crack", "scratch", "dent", "crack"]
    np.testing.assert_allclose(defects.scores, [0.9, 0.7, 0.6, 0.35], atol=1e-6)
    np.testing.assert_allclose(objects.scores, [0.95, 0.9, 0.6], atol=1e-6)
    # without saa.filter_word the board phrase is a defect (five fit: kept in query order)
    det = _routing_detector(max_regions=5, filter_word=None)
    det.text = GroundingText(rows=["x"], tokens=[TOKENS], entry_spans=[SPANS], entry_ids=[[0, 1, 2, OBJECT_ENTRY]],
                             text_dict={})
    defects, _ = det._boxes(logits, boxes, HW)
    assert defects.phrases == ["crack", "scratch", "dent", "dent on board", "crack"]
    np.testing.assert_allclose(defects.scores, [0.9, 0.7, 0.6, 0.95, 0.35], atol=1e-6)
    # a text threshold above the box threshold: query 11's phrase is empty, and query 7 (the object
    # name at 0.45, below object_box_threshold) is still no defect although its phrase is empty too
    det = _routing_detector(max_regions=10, filter_word=None, text_threshold=0.5)
    det.text = GroundingText(rows=["x"], tokens=[TOKENS], entry_spans=[SPANS], entry_ids=[[0, 1, 2, OBJECT_ENTRY]],
                             text_dict={})
    defects, objects = det._boxes(logits, boxes, HW)
    assert defects.phrases == ["crack", "scratch", "dent", "dent on board", ""]
    assert defects.entries.tolist() == [0, 1, 2, 2, 0]
    np.testing.assert_allclose(objects.scores, [0.95, 0.9, 0.6], atol=1e-6)


def test_boxes_of_separate_rows_object_count_one():
    """Row 0 holds entry 0, row 1 the object name (the separate caption mode); object_count 1: area < 1."""
    det = _routing_detector(max_regions=5)
    det.profile.properties.object_count = 1
    tok0, tok1 = ["[CLS]", "crack", ".", "[SEP]"], ["[CLS]", "widget", ".", "[SEP]"]
    det.text = GroundingText(rows=["crack.", "widget."], tokens=[tok0, tok1], entry_spans=[[(1, 3)], [(1, 3)]],
                             entry_ids=[[0], [OBJECT_ENTRY]], text_dict={})
    logits = np.full((2, 3, 6), 0.05, np.float32)
    logits[0, 0, 1] = 0.8  # a crack in row 0
    logits[0, 1, 1] = 0.4
    logits[1, 0, 1] = 0.7  # the object in row 1, area 0.64 < 1
    logits[1, 2, 1] = 0.9  # area 1: not below 1
    boxes = np.tile(np.array([[0.5, 0.5, 0.8, 0.8], [0.5, 0.5, 0.2, 0.2], [0.5, 0.5, 1.0, 1.0]], np.float32), (2, 1, 1))
    defects, objects = det._boxes(logits, boxes, HW)
    np.testing.assert_allclose(defects.scores, [0.8, 0.4], atol=1e-6)
    assert defects.entries.tolist() == [0, 0]
    np.testing.assert_allclose(objects.scores, [0.7], atol=1e-6)
    np.testing.assert_allclose(objects.boxes, [[5.6, 4.0, 50.4, 36.0]], atol=1e-4)
    assert objects.phrases == ["widget"]  # object boxes are not filtered by the object's name


# ------------------------------------------------------------------------------ finish on planted analyses
def _crop(y0: int, x0: int, y1: int, x1: int) -> MaskCrop:
    m = np.zeros(HW, bool)
    m[y0:y1, x0:x1] = True
    crop = MaskCrop.from_mask(m)
    assert crop is not None
    return crop


def _finish_detector(**saa: Any) -> SaaDetector:
    det = SaaDetector()
    det.profile = ProductProfile(name="p", object="pill", decision={"image_threshold": 0.25},
                                 properties={"top_k": 3, "max_area_ratio": 1.0},
                                 saa={"variant": "saa", **saa})
    det.entries = ["defect on pill", "crack"]
    return det


def _vanilla_analysis(scores: list[float]) -> SaaAnalysis:
    crops = [_crop(0, 0, 4, 4), _crop(10, 10, 20, 30), _crop(30, 40, 36, 50)]
    defects = BoxCandidates(np.array([c.box for c in crops], np.float32), np.array(scores, np.float32),
                            np.array([1, 0, 1]), ["crack", "", ""])
    return SaaAnalysis(HW, defects, list(crops), BoxCandidates(), timings={"boxes": 1.5})


def test_finish_labels_thresholds_and_reports_every_candidate():
    det = _finish_detector()
    analysis = _vanilla_analysis([0.6, 0.25, 0.1])
    out = det.finish(analysis, np.zeros((*HW, 3), np.uint8))
    # vanilla SAA: every region, best first; the empty phrase falls back to the entry text
    assert [c["label"] for c in out.extras["candidates"]] == ["crack", "defect on pill", "crack"]
    assert [c["score"] for c in out.extras["candidates"]] == pytest.approx([0.6, 0.25, 0.1])
    assert [c["box"] for c in out.extras["candidates"]] == [[0, 0, 4, 4], [10, 10, 30, 20], [40, 30, 50, 36]]
    assert [c["area_px"] for c in out.extras["candidates"]] == [16, 200, 60]
    # the region threshold 0.25 is reached by 0.6 and by exactly 0.25 (both exact in float32)
    assert [r.label for r in out.regions] == ["crack", "defect on pill"]
    assert [r.box for r in out.regions] == [(0, 0, 4, 4), (10, 10, 30, 20)]
    for r, crop in zip(out.regions, analysis.masks):
        np.testing.assert_array_equal(r.mask, crop.full(HW))
    assert out.image_score == pytest.approx(0.6) and isinstance(out.image_score, float)
    assert out.extras["calibrated"] is False and "saliency" not in out.extras
    assert out.timings["boxes"] == 1.5 and {"fusion", "calibration"} <= set(out.timings)
    assert det._entry_text(OBJECT_ENTRY) == "pill" and det._entry_text(1) == "crack"
    np.testing.assert_allclose(out.anomaly_map[1, 1], 0.6, atol=1e-7)
    # the reference code's denominator 1 + sum r: a lone region gets s / 2
    det.profile.saa.fusion_denominator_offset = 1.0
    halved = det.finish(analysis, np.zeros((*HW, 3), np.uint8))
    np.testing.assert_allclose([halved.anomaly_map[1, 1], halved.anomaly_map[15, 20]], [0.3, 0.125], atol=1e-7)
    det.profile.saa.fusion_denominator_offset = 0.0
    # with a saliency map it is returned with the detection
    analysis.saliency = np.full(HW, 0.25, np.float32)
    det.profile.saa.variant = "saa+"
    out = det.finish(analysis, np.zeros((*HW, 3), np.uint8))
    assert out.extras["saliency"] is analysis.saliency


def test_finish_before_prepare_and_with_no_region_left():
    with pytest.raises(RuntimeError, match=r"^SaaDetector\.finish called before prepare\(\)$"):
        SaaDetector().finish(_vanilla_analysis([0.5, 0.5, 0.5]), np.zeros((*HW, 3), np.uint8))
    det = _finish_detector()
    analysis = _vanilla_analysis([0.5, 0.4, 0.3])
    analysis.masks = [None, None, None]  # SAM returned empty masks
    out = det.finish(analysis, np.zeros((*HW, 3), np.uint8))
    assert out.anomaly_map.shape == HW and out.anomaly_map.dtype == np.float32 and not out.anomaly_map.any()
    assert out.image_score == 0.0 and out.regions == [] and out.extras["candidates"] == []
    none = SaaAnalysis(HW, BoxCandidates(), [], BoxCandidates())
    amap, scores, order = det._fused(none)
    assert amap.shape == HW and not amap.any() and scores.shape == (0,) and order.dtype == np.int64


def test_vanilla_order_keeps_equal_scores_in_box_order():
    """21 regions in three score levels: best first, ties in the order GroundingDINO's boxes came."""
    crops = [_crop(2 * (i // 7) * 3, 2 * (i % 7) * 3, 2 * (i // 7) * 3 + 2, 2 * (i % 7) * 3 + 2) for i in range(21)]
    levels = [0.5, 0.25, 0.125]
    scores = np.array([levels[(i * 5) % 3] for i in range(21)], np.float32)
    defects = BoxCandidates(np.array([c.box for c in crops], np.float32), scores, np.zeros(21, np.int64),
                            [f"r{i}" for i in range(21)])
    det = _finish_detector()
    _, _, order = det._fused(SaaAnalysis(HW, defects, list(crops), BoxCandidates()))
    want = [i for level in levels for i in range(21) if scores[i] == level]
    assert order.tolist() == want


def test_saa_plus_skips_the_location_rule_without_object_masks():
    """theta > 0 but SAM gave the object box an empty mask: no object region, so nothing is dropped."""
    det = _finish_detector(variant="saa+")
    det.profile.properties.min_iou_with_object = 0.9
    analysis = _vanilla_analysis([0.6, 0.3, 0.1])
    analysis.objects = BoxCandidates(np.array([[0, 0, 56, 40]], np.float32), np.array([0.9], np.float32),
                                     np.array([OBJECT_ENTRY]), ["pill"])
    analysis.object_masks = [None]
    _, _, order = det._fused(analysis)
    assert order.tolist() == [0, 1, 2]
    analysis.object_masks = [_crop(0, 0, 40, 56)]  # the whole image is the object: every region lies on it
    assert det._fused(analysis)[2].tolist() == [0, 1, 2]
    analysis.object_masks = [_crop(0, 0, 20, 56)]  # the top half: region 2 (rows 30-35) lies off it
    assert det._fused(analysis)[2].tolist() == [0, 1]
    # both rules hold at once: region 1 (200 px) lies on the object but exceeds 0.05 × 2240 = 112 px
    analysis.object_masks = [_crop(0, 0, 40, 56)]
    det.profile.properties.max_area_ratio = 0.05
    assert det._fused(analysis)[2].tolist() == [0, 2]
    # theta 0: the location rule is off, so the object masks are neither needed nor decoded
    det.profile.properties.min_iou_with_object = 0.0
    analysis.object_masks, analysis.embedding = None, None
    assert det._fused(analysis)[2].tolist() == [0, 2] and analysis.object_masks is None
    # the literal IoU reading: the object is exactly region 0 (IoU 1); region 2 does not overlap it (IoU 0)
    det.profile.properties.min_iou_with_object = 0.5
    det.profile.properties.max_area_ratio = 1.0
    det.profile.saa.location_rule = "iou"
    analysis.object_masks = [_crop(0, 0, 4, 4)]
    assert det._fused(analysis)[2].tolist() == [0]


def test_calibration_scales_by_twice_the_margin_times_the_reference_level():
    det = _finish_detector(calibration_margin=1.25, calibration_min_level=0.05)
    refs = [_vanilla_analysis([0.2, 0.1, 0.05]), _vanilla_analysis([0.1, 0.32, 0.1])]
    det._references = refs
    high = det._calibration_high()
    assert high == pytest.approx(2 * 1.25 * 0.32)  # the highest raw reference response is 0.32
    analysis = _vanilla_analysis([0.6, 0.3, 0.1])
    out = det.finish(analysis, np.zeros((*HW, 3), np.uint8))
    assert out.extras["calibrated"] is True
    assert out.anomaly_map[1, 1] == pytest.approx(0.6 / 0.8)
    assert [c["score"] for c in out.extras["candidates"]] == pytest.approx([0.6 / 0.8, 0.3 / 0.8, 0.1 / 0.8])
    np.testing.assert_allclose(out.anomaly_map[15, 20], 0.3 / 0.8, atol=1e-6)
    np.testing.assert_allclose(out.anomaly_map[32, 45], 0.1 / 0.8, atol=1e-6)
    assert out.image_score == pytest.approx(0.75)
    assert [r.label for r in out.regions] == ["crack", "defect on pill"]  # 0.75 and 0.375 ≥ 0.25
    # cached while nothing changes: a changed reference is not re-read ...
    refs[1].defects.scores[1] = 0.01
    assert det._calibration_high() == pytest.approx(0.8)
    # ... but a changed calibration number re-derives it
    det.retune(det.profile.model_copy(update={"saa": det.profile.saa.model_copy(update={"calibration_margin": 2.0})}))
    assert det._calibration_high() == pytest.approx(2 * 2.0 * 0.2)
    # a weak reference set is floored at calibration_min_level
    floored = det.profile.saa.model_copy(update={"calibration_min_level": 0.5})
    det.retune(det.profile.model_copy(update={"saa": floored}))
    assert det._calibration_high() == pytest.approx(2 * 2.0 * 0.5)
    det._references = []
    assert det._calibration_high() is None
    # the level is the fused map's maximum, not the best box score (box 1's mask came back empty)
    det = _finish_detector(calibration_margin=1.0, calibration_min_level=0.05)
    ref = _vanilla_analysis([0.1, 0.9, 0.2])
    ref.masks[1] = None
    det._references = [ref]
    assert det._calibration_high() == pytest.approx(2 * 0.2)


def test_a_calibrated_map_clips_at_one():
    det = _finish_detector(calibration_margin=0.5, calibration_min_level=0.05)
    det._references = [_vanilla_analysis([0.2, 0.1, 0.05])]  # high = 2 · 0.5 · 0.2 = 0.2
    out = det.finish(_vanilla_analysis([0.6, 0.1, 0.05]), np.zeros((*HW, 3), np.uint8))
    assert out.anomaly_map.max() == 1.0 and out.anomaly_map[15, 20] == pytest.approx(0.5)
    assert [c["score"] for c in out.extras["candidates"]] == pytest.approx([1.0, 0.5, 0.25])


# ------------------------------------------------------------------------------ with the tiny models
@pytest.fixture(scope="module")
def modules(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    gd, _ = tiny_grounding(tmp_path_factory.mktemp("gd"))
    return {"grounding": gd, "sam": tiny_sam(4), "backbone": tiny_backbone()}


@pytest.fixture(scope="module")
def embedding(modules: dict[str, Any]):
    """One SAM embedding of the test image, shared by the decode tests."""
    return _hub(modules).get("sam", KEYS["sam"]).embed(_image())


def _hub(modules: dict[str, Any]) -> ModelHub:
    hub = ModelHub(device="cpu", precision="fp32")
    for kind, module in modules.items():
        hub.provide(kind, module, key=KEYS[kind])  # only under the profile's keys
    return hub


def _profile(**saa: Any) -> ProductProfile:
    base = dict(grounding_short_side=64, grounding_max_size=96, saliency_input_size=32, multi_instance_input_size=32,
                max_regions=6, object_box_threshold=1.0)
    base.update(saa)
    return ProductProfile(name="widget_saa", pipeline="saa", object="widget", models=KEYS,
                          prompts={"class_agnostic": ["defect"], "class_specific": ["crack. black hole", "scratch"]},
                          properties={"top_k": 3, "max_area_ratio": 1.0, "saliency_neighbors": 5}, saa=base)


def _image() -> np.ndarray:
    rng = np.random.default_rng(3)
    img = np.full((*HW, 3), 120, np.uint8)
    img[12:28, 16:40] = (200, 60, 40)
    return np.clip(img + rng.integers(0, 30, img.shape), 0, 255).astype(np.uint8)


class Spy:
    """Wraps a bound method: records each call's arguments and passes the real result through."""

    def __init__(self, owner: Any, name: str) -> None:
        self.original, self.calls = getattr(owner, name), []
        setattr(owner, name, self)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        out = self.original(*args, **kwargs)
        self.calls.append((args, kwargs, out))
        return out


def test_prepare_loads_each_model_under_its_key_and_encodes_the_text_once(modules):
    det = SaaDetector()
    seen: list[tuple[float, str]] = []
    hub = _hub(modules)
    prof = _profile(caption_batch=2)
    det.prepare(prof, hub, lambda f, m: seen.append((f, m)))
    assert seen == [(0.0, "loading GroundingDINO"), (0.2, "loading SAM"), (0.3, "loading saliency backbone"),
                    (0.4, "encoding prompts"), (1.0, "ready")]
    assert (det.grounding.key, det.sam.key, det.backbone.key) == (KEYS["grounding"], KEYS["sam"], KEYS["backbone"])
    assert det.profile is prof and det.hub is hub
    assert det.entries == ["defect", "crack. black hole", "scratch"]
    text = det.text
    assert text is not None and text.num_rows == 1 and text.entry_ids == [[0, 1, 2, OBJECT_ENTRY]]
    assert text.rows == ["defect. crack. black hole. scratch. widget."]
    calls = det.grounding.text_calls
    det.prepare(prof, hub)  # same rows: the encoded text is kept
    assert det.text is text and det.grounding.text_calls == calls
    # separate captions: one row per entry, the object last
    det.prepare(_profile(caption_mode="separate"), hub)
    assert det.text.num_rows == 4 and det.text.entry_ids == [[0], [1], [2], [OBJECT_ENTRY]]
    assert det.grounding.text_calls == calls + 1
    # another GroundingDINO wrapper (even of the same key) encodes the same rows again
    text, other = det.text, _hub(modules)
    det.prepare(_profile(caption_mode="separate"), other)
    assert det.grounding is other.get("grounding", KEYS["grounding"]) and det.text is not text
    assert det.grounding.text_calls == 1 and det.text.rows == text.rows
    # vanilla SAA: no backbone, no object query
    van = SaaDetector()
    van.prepare(_profile(variant="saa"), hub)
    assert van.backbone is None and van.entries == ["defect"] and van.text.entry_ids == [[0]]


def test_joint_captions_are_packed_into_rows_of_the_token_budget(modules):
    det = SaaDetector()
    det.prepare(_profile(), _hub(modules))
    det.grounding.max_text_len = 2 + 6  # six word pieces per caption ([CLS] and [SEP] do not count)
    # "defect." 2, "crack. black hole." 5, "scratch." 2, "widget." 2 → [2], [5], [2, 2]
    det._prepare_text(det.profile)
    assert det.text.rows == ["defect.", "crack. black hole.", "scratch. widget."]
    assert det.text.entry_ids == [[0], [1], [2, OBJECT_ENTRY]]
    det.grounding.max_text_len = 2 + 7  # 2 + 5 fit in one row now
    det._prepare_text(det.profile)
    assert det.text.rows == ["defect. crack. black hole.", "scratch. widget."]
    assert det.text.entry_ids == [[0, 1], [2, OBJECT_ENTRY]]
    empty = (r"^profile 'p': the SAA pipeline needs at least one language prompt "
             r"\(prompts\.class_agnostic or prompts\.class_specific\)$")
    with pytest.raises(ValueError, match=empty):
        det.prepare(ProductProfile(name="p", object="widget", models=KEYS,
                                   prompts={"class_agnostic": [], "class_specific": []}), _hub(modules))


def test_analyse_before_prepare_is_refused():
    det = SaaDetector()
    with pytest.raises(RuntimeError, match=r"^SaaDetector\.analyse called before prepare\(\)$"):
        det.analyse(_image())


@pytest.mark.parametrize("missing", ["profile", "grounding", "sam", "text"])
def test_analyse_needs_every_prepared_part(modules, missing):
    det = SaaDetector()
    det.prepare(_profile(), _hub(modules))
    setattr(det, missing, None)
    with pytest.raises(RuntimeError, match="analyse called before prepare"):
        det.analyse(_image())


def test_analyse_grounds_once_and_decodes_each_box_on_the_one_embedding(modules):
    det = SaaDetector()
    det.prepare(_profile(box_threshold=0.0, caption_batch=3), _hub(modules))
    enc, pred = Spy(det.grounding, "encode_image"), Spy(det.grounding, "predict")
    embeds = det.sam.encoder_calls
    img = _image()
    analysis = det.analyse(img)
    assert analysis.image_hw == HW
    (args, kwargs, _), = enc.calls
    assert args[0] is img and args[1:] == (64, 96)
    (args, kwargs, got), = pred.calls
    assert args[1] is det.text and kwargs == {"batch": 3}
    want_defects, want_objects = det._boxes(got.logits, got.boxes, HW)
    assert len(analysis.defects) == 6  # box_threshold 0: every query passes, max_regions 6 are kept
    np.testing.assert_array_equal(analysis.defects.boxes, want_defects.boxes)
    assert analysis.defects.phrases == want_defects.phrases and not len(analysis.objects)
    assert det.sam.encoder_calls == embeds + 1 and analysis.embedding is not None
    # each box decoded on its own (single-mask output) gives the same mask
    for box, crop in zip(analysis.defects.boxes, analysis.masks):
        alone = det.sam.decode(analysis.embedding, boxes=box[None], multimask=False).masks[0, 0]
        if crop is None:
            assert not alone.any()
        else:
            np.testing.assert_array_equal(crop.full(HW), alone)
    assert sum(c is not None for c in analysis.masks) >= 1
    # saliency: eq. 5 written out on the backbone's features (float64 loop), at image resolution
    feats = det.backbone.features(img, 32)
    gh, gw = int(feats[0].shape[2]), int(feats[0].shape[3])
    f = pixel_features(feats).double().numpy()
    sims = f @ f.T
    want = np.array([1.0 - np.sort(row)[::-1][1:6].mean() for row in sims]).reshape(gh, gw)
    np.testing.assert_allclose(analysis.saliency, resize_map(want.astype(np.float32), HW), atol=1e-5)
    assert analysis.object_masks is None  # one object, no location rule: never decoded
    for stage in ("grounding_image", "grounding_fusion", "boxes", "sam_embed", "sam_decode", "saliency"):
        assert analysis.timings[stage] > 0


def test_decode_in_chunks_equals_one_batch(modules, embedding):
    det = SaaDetector()
    det.prepare(_profile(variant="saa"), _hub(modules))
    emb = embedding
    boxes = np.array([[2, 2, 20, 18], [10, 5, 50, 35], [30, 20, 40, 30], [0, 0, 56, 40], [5, 25, 25, 39]], np.float32)
    spy = Spy(det.sam, "decode")
    crops = det._decode(emb, boxes, chunk=2)
    assert [len(c[1]["boxes"]) for c in spy.calls] == [2, 2, 1]
    assert all(c[1]["multimask"] is False for c in spy.calls)
    whole = spy.original(emb, boxes=boxes, multimask=False).masks[:, 0]
    assert len(crops) == 5
    for crop, mask in zip(crops, whole):
        np.testing.assert_array_equal(np.zeros(HW, bool) if crop is None else crop.full(HW), mask)
    assert det._decode(emb, boxes[:0]) == []


def test_object_masks_are_decoded_once_and_need_the_embedding(modules, embedding):
    det = SaaDetector()
    det.prepare(_profile(), _hub(modules))
    objects = BoxCandidates(np.array([[4, 4, 30, 30], [20, 10, 50, 38]], np.float32), np.array([0.9, 0.8], np.float32),
                            np.full(2, OBJECT_ENTRY), ["", ""])
    a = SaaAnalysis(HW, BoxCandidates(), [], objects)
    with pytest.raises(RuntimeError, match=r"^object masks needed but the image's SAM embedding was not kept$"):
        det._object_masks(a)
    a.embedding = embedding
    spy = Spy(det.sam, "decode")
    first = det._object_masks(a)
    assert len(first) == 2 and len(spy.calls) == 1 and a.object_masks is first
    assert det._object_masks(a) is first and len(spy.calls) == 1
    want = spy.original(a.embedding, boxes=objects.boxes, multimask=False).masks[:, 0]
    for crop, mask in zip(first, want):
        np.testing.assert_array_equal(np.zeros(HW, bool) if crop is None else crop.full(HW), mask)
    none = SaaAnalysis(HW, BoxCandidates(), [], BoxCandidates())
    assert det._object_masks(none) == [] and len(spy.calls) == 1


def _naive_instance_saliency(f: np.ndarray, masks: np.ndarray) -> np.ndarray:
    want = np.zeros(f.shape[1:])
    for i in range(len(masks)):
        others = masks[[k for k in range(len(masks)) if k != i]].any(0) & ~masks[i]
        for y, x in zip(*np.nonzero(masks[i])):
            best = max(float(f[:, y, x] @ f[:, yy, xx]) for yy, xx in zip(*np.nonzero(others)))
            want[y, x] = max(want[y, x], 1.0 - best)
    return want


def test_multi_instance_saliency_compares_the_object_instances(modules):
    det = SaaDetector()
    prof = _profile(multi_instance_input_size=32, saliency_input_size=64)
    prof.properties.object_count = 2
    det.prepare(prof, _hub(modules))
    img = _image()
    a = SaaAnalysis(HW, BoxCandidates(), [], BoxCandidates())
    a.object_masks = [_crop(0, 0, 20, 28), None, _crop(20, 28, 40, 56)]
    got = det._saliency(img, a)
    feats = det.backbone.features(img, 32)  # the multi-instance input size, not the single-object one
    gh, gw = int(feats[0].shape[2]), int(feats[0].shape[3])
    f = pixel_features(feats).double().numpy().T.reshape(-1, gh, gw)
    masks = np.stack([_to_grid(m.full(HW), (gh, gw)) for m in (a.object_masks[0], a.object_masks[2])])
    want = resize_map(_naive_instance_saliency(f, masks).astype(np.float32), HW)
    assert got.shape == HW and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-5)
    # one instance only, or several of a single object: the single-object saliency at saliency_input_size
    a.object_masks = [_crop(0, 0, 20, 28), None]
    one = det._saliency(img, a)
    det.profile.properties.object_count = 1
    a.object_masks = [_crop(0, 0, 20, 28), _crop(20, 28, 40, 56)]
    np.testing.assert_array_equal(det._saliency(img, a), one)
    feats = det.backbone.features(img, 64)
    gh, gw = int(feats[0].shape[2]), int(feats[0].shape[3])
    f = pixel_features(feats).double().numpy()
    sims = f @ f.T
    want = np.array([1.0 - np.sort(row)[::-1][1:6].mean() for row in sims]).reshape(gh, gw)
    np.testing.assert_allclose(one, resize_map(want.astype(np.float32), HW), atol=1e-5)


def test_analyse_segments_the_instances_when_there_are_several(modules):
    det = SaaDetector()
    prof = _profile(box_threshold=0.0, object_box_threshold=0.0, caption_mode="separate", max_regions=3)
    prof.properties.object_count = 2
    det.prepare(prof, _hub(modules))
    a = det.analyse(_image())
    assert len(a.defects) == 3 and len(a.objects) == 3
    assert a.object_masks is not None and len(a.object_masks) == 3  # decoded for the saliency
    # the object masks' decode counts as SAM decoding, nothing else
    assert set(a.timings) == {"grounding_image", "grounding_fusion", "boxes", "sam_embed", "sam_decode", "saliency"}
    # vanilla SAA neither segments objects nor computes saliency
    van = SaaDetector()
    van.prepare(_profile(variant="saa", box_threshold=0.0), _hub(modules))
    v = van.analyse(_image())
    assert v.saliency is None and v.object_masks is None and len(v.defects) > 0
    # no box: nothing embedded
    none = SaaDetector()
    none.prepare(_profile(box_threshold=1.0), _hub(modules))
    calls = none.sam.encoder_calls
    n = none.analyse(_image())
    assert not len(n.defects) and n.embedding is None and n.saliency is None and n.masks == []
    assert none.sam.encoder_calls == calls


def test_reference_shots_are_analysed_once_per_setting_and_keep_no_embedding(modules, tmp_path: Path):
    folder = tmp_path / "widget_saa"
    (folder / "refs").mkdir(parents=True)
    write_png(folder / "refs" / "a.png", _image())
    prof = _profile(box_threshold=0.0)
    prof.reference_shots = ["refs/a.png", "refs/a.png"]  # the same image twice: analysed once
    prof.with_folder(folder)
    det = SaaDetector()
    seen: list[tuple[float, str]] = []
    det.prepare(prof, _hub(modules), lambda f, m: seen.append((f, m)))
    assert (0.5, "analysing reference 1/2") in seen and (0.75, "analysing reference 2/2") in seen
    assert seen[-1] == (1.0, "ready")
    assert len(det._references) == 2 and len(det._ref_cache) == 1 and det._references[1] is det._references[0]
    for ref in det._references:
        assert ref.embedding is None and ref.object_masks == [] and len(ref.defects) > 0
    images = det.grounding.image_calls
    first = det._references[0]
    det.prepare(prof, det.hub)  # same settings, same images: nothing analysed again
    assert det.grounding.image_calls == images and det._references[0] is first
    tuned = prof.model_copy(update={"saa": prof.saa.model_copy(update={"rescore_gain": 3.0})})
    tuned.with_folder(folder)
    det.prepare(tuned, det.hub)  # a finish number: still cached
    assert det.grounding.image_calls == images
    other = prof.model_copy(update={"saa": prof.saa.model_copy(update={"box_threshold": 0.5})})
    other.with_folder(folder)
    det.prepare(other, det.hub)  # an analysis number: analysed again, the stale entries dropped
    assert det.grounding.image_calls == images + 1 and len(det._ref_cache) == 1
    assert det._calibration is None
    out = det.finish(det._references[0], _image())
    assert out.extras["calibrated"] is True


def test_reference_shots_of_a_profile_without_a_folder_are_not_read(modules):
    prof = _profile()
    prof.reference_shots = ["refs/missing.png"]
    det = SaaDetector()
    det.prepare(prof, _hub(modules))  # an unsaved profile: nothing to resolve the paths against
    assert det._references == [] and det._ref_cache == {}
    assert det.finish(SaaAnalysis(HW, BoxCandidates(), [], BoxCandidates()), _image()).extras["calibrated"] is False


def test_analysis_key_ignores_finish_numbers_only(modules):
    det = SaaDetector()
    prof = _profile()
    det.prepare(prof, _hub(modules))
    key = det._analysis_key()
    assert key[:5] == (KEYS["grounding"], KEYS["sam"], KEYS["backbone"], ("defect", "crack. black hole", "scratch"),
                       "widget")
    assert key[5:7] == (1, 5)  # object_count, saliency_neighbors
    for name, value in [("rescore_gain", 2.0), ("fusion_denominator_offset", 1.0), ("calibration_margin", 2.0),
                        ("calibration_min_level", 0.2), ("location_rule", "iou")]:
        det.profile = prof.model_copy(update={"saa": prof.saa.model_copy(update={name: value})})
        assert det._analysis_key() == key, name
    for name, value in [("box_threshold", 0.5), ("grounding_short_side", 80), ("variant", "saa")]:
        det.profile = prof.model_copy(update={"saa": prof.saa.model_copy(update={name: value})})
        assert det._analysis_key() != key, name
    det.profile = prof.model_copy(update={"properties": prof.properties.model_copy(update={"object_count": 2})})
    assert det._analysis_key() != key
    det.profile = prof.model_copy(update={"properties": prof.properties.model_copy(update={"saliency_neighbors": 9})})
    assert det._analysis_key() != key
