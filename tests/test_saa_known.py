"""SAA / SAA+ known answers: box rules, property prompts, saliency, re-scoring and top-K fusion.

Each expected value is worked out by hand or by a naive float64 loop in the test. The finish
math of the detector runs on a constructed analysis (boxes, masks, object mask and saliency
given), so every rule is checked without any model.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from inspector.detect.saa.detector import SaaAnalysis, SaaDetector, prompt_entries
from inspector.detect.saa.boxes import BoxCandidates, cxcywh_to_xyxy, entry_scores, select_boxes
from inspector.detect.saa.regions import (
    MaskCrop,
    fuse_regions,
    inside_fraction,
    iou_with,
    location_filter,
    mean_inside,
    rescore,
    saliency_prompts,
    top_k,
    union_mask,
)
from inspector.detect.saa.saliency import instance_saliency, self_saliency
from inspector.profile import ProductProfile

HW = (20, 30)


def _crop(y0: int, x0: int, y1: int, x1: int, hw: tuple[int, int] = HW) -> MaskCrop:
    m = np.zeros(hw, bool)
    m[y0:y1, x0:x1] = True
    crop = MaskCrop.from_mask(m)
    assert crop is not None
    return crop


# ------------------------------------------------------------------------------ boxes
def test_box_conversion_and_entry_scores_by_hand():
    xyxy = cxcywh_to_xyxy(np.array([[0.5, 0.5, 0.2, 0.4], [0.95, 0.1, 0.2, 0.4]]), (100, 200))
    np.testing.assert_allclose(xyxy, [[80, 30, 120, 70], [170, 0, 200, 30]], atol=1e-4)  # 2nd clipped
    logits = np.array([[0.1, 0.7, 0.2, 0.3, 0.9], [0.0, 0.2, 0.6, 0.5, 0.1]])
    np.testing.assert_allclose(entry_scores(logits, [(1, 3), (3, 5)]), [[0.7, 0.9], [0.6, 0.5]])


def test_select_boxes_thresholds_area_entries_and_filter_words():
    tokens = ["[CLS]", "crack", ".", "metal", "nut", ".", "[SEP]"]
    spans = [(1, 3), (3, 6)]  # entry 0 "crack.", entry 1 "metal nut."
    logits = np.array([
        [0.0, 0.50, 0.0, 0.00, 0.00, 0.0, 0.0],  # entry 0, score 0.5, area 0.08 (tall box) -> kept
        [0.0, 0.10, 0.0, 0.00, 0.00, 0.0, 0.0],  # score 0.1, not > 0.1 -> dropped
        [0.0, 0.80, 0.0, 0.00, 0.00, 0.0, 0.0],  # area 0.5, not < 0.5 -> dropped
        [0.0, 0.00, 0.0, 0.40, 0.60, 0.0, 0.0],  # entry 1 "metal nut" names the object -> dropped
        [0.0, 0.30, 0.0, 0.05, 0.20, 0.0, 0.0],  # entry 0 (0.3 > 0.2), phrase "crack" -> kept
        [0.0, 0.20, 0.0, 0.10, 0.50, 0.0, 0.0],  # entry 1; "metal" at exactly 0.1 is not in the phrase
    ])
    boxes = np.array([[0.5, 0.5, 0.1, 0.8], [0.5, 0.5, 0.1, 0.1], [0.5, 0.5, 1.0, 0.5],
                      [0.3, 0.3, 0.1, 0.1], [0.2, 0.7, 0.2, 0.4], [0.6, 0.6, 0.1, 0.1]])
    got = select_boxes(logits, boxes, tokens, spans, [7, 8], (10, 20), 0.1, 0.1, 0.5, ["nut"])
    np.testing.assert_allclose(got.scores, [0.5, 0.3])
    assert got.entries.tolist() == [7, 7] and got.phrases == ["crack", "crack"]
    np.testing.assert_allclose(got.boxes, [[9, 1, 11, 9], [2, 5, 6, 9]], atol=1e-4)
    # without the filter word the object boxes are candidates of entry 8; keep_entries selects them
    obj = select_boxes(logits, boxes, tokens, spans, [7, 8], (10, 20), 0.1, 0.1, 0.5, keep_entries={8})
    assert obj.entries.tolist() == [8, 8] and obj.scores.tolist() == pytest.approx([0.6, 0.5])
    assert obj.phrases == ["metal nut", "nut"]  # only the entry's own tokens, each > text_threshold
    # a single query is a normal case, no query at all gives nothing
    one = select_boxes(logits[:1], boxes[:1], tokens, spans, [7, 8], (10, 20), 0.1, 0.1)
    assert len(one) == 1 and one.phrases == ["crack"]
    assert len(select_boxes(logits[:0], boxes[:0], tokens, spans, [7, 8], (10, 20), 0.1, 0.1)) == 0
    # the default area limit is the whole image: a box covering all of it is not a defect
    whole = np.array([[0.5, 0.5, 1.0, 1.0]], np.float32)
    assert len(select_boxes(logits[:1], whole, tokens, spans, [7, 8], (10, 20), 0.1, 0.1)) == 0


def test_box_candidates_take_top_and_concat():
    c = BoxCandidates(np.arange(12, dtype=np.float32).reshape(3, 4), np.array([0.2, 0.9, 0.5], np.float32),
                      np.array([0, 1, 2]), ["a", "b", "c"])
    t = c.take([2, 0])
    assert t.phrases == ["c", "a"] and t.entries.tolist() == [2, 0] and t.boxes[0, 0] == 8
    assert c.top(3).phrases == ["a", "b", "c"]  # nothing to drop: order kept
    assert c.top(2).phrases == ["b", "c"]
    many = BoxCandidates(np.zeros((60, 4), np.float32), np.array([0.3] * 30 + [0.4] * 30, np.float32),
                         np.arange(60), [str(i) for i in range(60)])
    assert many.top(40).entries.tolist() == list(range(30, 60)) + list(range(10))  # stable among ties
    both = BoxCandidates.concat([c, BoxCandidates(), c.take([1])])
    assert both.phrases == ["a", "b", "c", "b"] and both.entries.tolist() == [0, 1, 2, 1]
    assert both.boxes.shape == (4, 4) and both.scores.tolist() == pytest.approx([0.2, 0.9, 0.5, 0.9])
    assert len(BoxCandidates.concat([])) == 0


def test_vanilla_saa_reads_only_the_naive_prompts():
    prompts = {"class_agnostic": ["defect on {object}"], "class_specific": ["white crack", "hole"]}
    plus = ProductProfile(name="p", object="pill", prompts=prompts)
    vanilla = ProductProfile(name="p", object="pill", prompts=prompts, saa={"variant": "saa"})
    assert prompt_entries(plus) == ["defect on pill", "white crack", "hole"]
    assert prompt_entries(vanilla) == ["defect on pill"]


# ------------------------------------------------------------------------------ property prompts
def test_location_prompt_is_the_fraction_inside_the_object():
    obj = np.zeros(HW, bool)
    obj[0:20, 0:15] = True  # left half of the image
    small = _crop(5, 2, 7, 4)  # 4 px, all inside
    straddle = _crop(0, 10, 4, 20)  # 40 px, 20 inside
    outside = _crop(10, 20, 12, 30)  # 20 px, none inside
    assert [inside_fraction(c, obj) for c in (small, straddle, outside)] == [1.0, 0.5, 0.0]
    # the literal IoU of the small true defect is tiny: 4 / 300
    assert iou_with(small, obj) == pytest.approx(4 / 300)
    assert iou_with(straddle, obj) == pytest.approx(20 / (40 + 300 - 20))
    assert location_filter(np.array([1.0, 0.5, 0.0]), 0.5).tolist() == [True, True, False]


def test_region_helpers_on_overlaps_and_empty_masks():
    a, b = _crop(0, 0, 4, 4), _crop(2, 2, 6, 6)
    assert union_mask([a, b], HW).sum() == 16 + 16 - 4  # the overlap is OR-ed, not overwritten
    assert union_mask([b, a], HW).sum() == 28
    empty = MaskCrop(0, 0, np.zeros((2, 2), bool))
    assert iou_with(empty, np.zeros(HW, bool)) == 0.0  # nothing at all: no overlap
    assert inside_fraction(empty, np.ones(HW, bool)) == 0.0
    assert mean_inside(np.ones(HW, np.float32), empty) == 0.0
    assert iou_with(a, union_mask([a], HW), region_area=16) == 1.0
    one = _crop(3, 3, 4, 4)
    assert iou_with(one, one.full(HW)) == 1.0  # a union of one pixel is still a union
    assert one.full(HW).dtype == bool and one.full(HW).sum() == 1
    # L-shaped crops: a crop's False pixels must not erase what another crop set
    ell = np.zeros(HW, bool)
    ell[0:4, 0] = True
    ell[3, 0:4] = True
    l1 = MaskCrop.from_mask(ell)
    l2 = MaskCrop.from_mask(np.roll(np.roll(ell, 1, 0), 1, 1))
    assert union_mask([l1, l2], HW).sum() == (ell | np.roll(np.roll(ell, 1, 0), 1, 1)).sum()


def test_saliency_prompt_rescore_and_top_k_by_hand():
    np.testing.assert_allclose(saliency_prompts(np.array([0.5])), [math.exp(-0.5)])  # the paper's gain 1
    p = saliency_prompts(np.array([0.0, 0.5, 1.0, 1.7]), gain=3.0)
    np.testing.assert_allclose(p, [math.exp(-3), math.exp(-1.5), 1.0, 1.0])
    np.testing.assert_allclose(rescore(np.array([0.4, 0.2]), np.array([0.5, 0.25])), [0.2, 0.05], rtol=1e-6)
    assert top_k(np.array([0.1, 0.9, 0.5, 0.9]), 3).tolist() == [1, 3, 2]
    assert top_k(np.array([0.3]), 0).tolist() == []
    # ties keep the input order even where numpy's default sort is not stable (> 16 elements)
    ties = np.array([0.5] * 40 + [0.7] * 40)
    assert top_k(ties, 45).tolist() == list(range(40, 80)) + list(range(5))
    # mean saliency outside [0, 1] is clipped before the exponential
    np.testing.assert_allclose(saliency_prompts(np.array([-0.5]), gain=1.0), [math.exp(-1.0)])


def test_fuse_regions_by_hand():
    a, b = _crop(0, 0, 4, 4), _crop(2, 2, 6, 6)
    out = fuse_regions([a, b], [0.6, 0.2], HW)
    assert out[0, 0] == pytest.approx(0.6) and out[5, 5] == pytest.approx(0.2)
    assert out[3, 3] == pytest.approx(0.4) and out[10, 10] == 0.0
    ref = fuse_regions([a, b], [0.6, 0.2], HW, denominator_offset=1.0)
    assert ref[0, 0] == pytest.approx(0.3) and ref[3, 3] == pytest.approx(0.8 / 3)


# ------------------------------------------------------------------------------ saliency
def _naive_self_saliency(f: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros(len(f))
    for i in range(len(f)):
        d = sorted(1.0 - float(f[i] @ f[j]) for j in range(len(f)) if j != i)
        out[i] = np.mean(d[:n])
    return out


@pytest.mark.parametrize("n", [1, 3, 50])
def test_self_saliency_is_the_mean_distance_to_the_n_nearest(n):
    rng = np.random.default_rng(n)
    f = np.abs(rng.normal(size=(12, 5)))
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    got = self_saliency(torch.tensor(f, dtype=torch.float32), n).numpy()
    np.testing.assert_allclose(got, _naive_self_saliency(f, min(n, 11)), atol=1e-5)


def test_instance_saliency_against_a_loop():
    rng = np.random.default_rng(4)
    c, h, w = 4, 3, 5
    feats = np.abs(rng.normal(size=(c, h, w)))
    feats /= np.linalg.norm(feats, axis=0, keepdims=True)
    masks = np.zeros((3, h, w), bool)
    masks[0, :, :2] = True
    masks[1, :, 2:4] = True
    masks[2, 0, 4] = True
    got = instance_saliency(torch.tensor(feats, dtype=torch.float32), torch.tensor(masks)).numpy()
    want = np.zeros((h, w))
    for i in range(3):
        others = masks[[k for k in range(3) if k != i]].any(0) & ~masks[i]
        for y, x in zip(*np.nonzero(masks[i])):
            best = max(float(feats[:, y, x] @ feats[:, yy, xx]) for yy, xx in zip(*np.nonzero(others)))
            want[y, x] = max(want[y, x], 1.0 - best)
    np.testing.assert_allclose(got, want, atol=1e-5)


# ------------------------------------------------------------------------------ the finish math
def _detector(**props) -> SaaDetector:
    det = SaaDetector()
    det.profile = ProductProfile(name="p", object="pill", properties=props,
                                 saa={"rescore_gain": 2.0})
    det.entries = ["defect on pill"]
    return det


def _analysis() -> SaaAnalysis:
    crops = [_crop(0, 0, 2, 2), _crop(4, 4, 8, 12), _crop(10, 16, 20, 30), _crop(1, 20, 3, 22)]
    defects = BoxCandidates(np.array([c.box for c in crops], np.float32), np.array([0.5, 0.4, 0.6, 0.3], np.float32),
                            np.zeros(4, np.int64), ["a", "b", "c", "d"])
    obj_box = np.array([[0, 0, 15, 20]], np.float32)  # ObjectArea = 300 px
    objects = BoxCandidates(obj_box, np.array([0.9], np.float32), np.array([-1]), ["pill"])
    sal = np.zeros(HW, np.float32)
    sal[0:2, 0:2] = 0.2
    sal[4:8, 4:12] = 0.9
    sal[10:20, 16:30] = 0.5
    sal[1:3, 20:22] = 1.0
    a = SaaAnalysis(HW, defects, list(crops), objects, saliency=sal)
    a.object_masks = [_crop(0, 0, 20, 15)]
    return a


def _finished(det: SaaDetector, analysis: SaaAnalysis) -> tuple[np.ndarray, dict[str, float], list[str]]:
    """``finish`` on an analysis: the fused map, each reported candidate's score, the candidates in rank order."""
    found = det.finish(analysis, np.zeros((*HW, 3), np.uint8))
    candidates = found.extras["candidates"]
    return found.anomaly_map, {c["label"]: c["score"] for c in candidates}, [c["label"] for c in candidates]


def test_finish_applies_area_location_saliency_top_k_and_fusion():
    """Region c (140 px) is over 0.3 x 300; region d lies off the object; K = 2 of a and b."""
    det = _detector(max_area_ratio=0.3, min_iou_with_object=0.5, top_k=2)
    amap, scores, order = _finished(det, _analysis())
    want = {name: s * math.exp(2.0 * (m - 1.0)) for name, (s, m) in zip("abcd", [(0.5, 0.2), (0.4, 0.9), (0.6, 0.5),
                                                                                (0.3, 1.0)], strict=True)}
    assert order == ["b", "a"]  # b (0.4 e^-0.2 = 0.33) beats a (0.5 e^-1.6 = 0.10)
    assert scores == pytest.approx({"a": want["a"], "b": want["b"]}, rel=1e-5)
    assert amap[5, 5] == pytest.approx(want["b"], rel=1e-5) and amap[0, 0] == pytest.approx(want["a"], rel=1e-5)
    assert amap[15, 20] == 0.0 and amap[2, 21] == 0.0
    det_k1 = _detector(max_area_ratio=0.3, min_iou_with_object=0.5, top_k=1)
    assert _finished(det_k1, _analysis())[2] == ["b"]
    # without the location rule d (re-scored 0.3) is kept and outranks a (0.10)
    det_off = _detector(max_area_ratio=0.3, top_k=2)
    _, scores, order = _finished(det_off, _analysis())
    assert order == ["b", "d"] and scores["d"] == pytest.approx(want["d"], rel=1e-5)
    # the literal IoU reading drops even a and b (IoU 4/300, 32/300)
    det_iou = _detector(max_area_ratio=0.3, min_iou_with_object=0.5, top_k=2)
    det_iou.profile.saa.location_rule = "iou"
    amap, _, order = _finished(det_iou, _analysis())
    assert order == [] and not amap.any()
    # a larger area ratio admits c (140 <= 150 px), re-scored 0.6 e^-1 = 0.22
    det_big = _detector(max_area_ratio=0.5, min_iou_with_object=0.0, top_k=4)
    _, scores, order = _finished(det_big, _analysis())
    assert order == ["b", "d", "c", "a"] and scores == pytest.approx(want, rel=1e-5)


def test_vanilla_finish_fuses_every_region_unfiltered():
    det = _detector(max_area_ratio=0.1, min_iou_with_object=0.9, top_k=1)
    det.profile.saa.variant = "saa"
    a = _analysis()
    a.saliency = None
    amap, scores, order = _finished(det, a)
    assert order == ["c", "a", "b", "d"]  # all four, best first, raw scores
    assert scores == pytest.approx({"a": 0.5, "b": 0.4, "c": 0.6, "d": 0.3})
    assert amap[15, 20] == pytest.approx(0.6) and amap[2, 21] == pytest.approx(0.3)


# ------------------------------------------------------------------------------ through `inspector eval`
def _naive_vanilla_saa(grounding, sam_module, profile: ProductProfile, image: np.ndarray) -> np.ndarray:
    """Vanilla SAA re-derived on the libraries' own paths: GroundingDINO's unsplit forward per
    caption, the box rule written out, segment_anything's SamPredictor, eq. 9 as a loop."""
    from segment_anything import SamPredictor

    p = profile.saa
    h, w = image.shape[:2]
    found: list[tuple[float, np.ndarray]] = []
    for entry in profile.prompts.class_agnostic:
        caption = entry.lower().strip() + "."
        pred = grounding.forward_full(image, caption, p.grounding_short_side, p.grounding_max_size)
        n_tok = len(grounding.tokenizer.tokenize(caption))
        for q in range(pred.logits.shape[1]):
            score = float(pred.logits[0, q, 1:1 + n_tok].max())  # the entry's tokens, not [CLS]/[SEP]
            cx, cy, bw, bh = (float(v) for v in pred.boxes[0, q])
            if score > p.box_threshold and bw * bh < 1.0:
                box = np.clip([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h],
                              0, [w, h, w, h])
                found.append((score, box))
    found.sort(key=lambda t: -t[0])
    found = found[: p.max_regions]
    num = np.zeros((h, w))
    den = np.zeros((h, w))
    if found:
        predictor = SamPredictor(sam_module)
        predictor.set_image(image)
        boxes = torch.tensor(np.array([b for _, b in found]), dtype=torch.float32)
        with torch.no_grad():
            masks, _, _ = predictor.predict_torch(None, None, predictor.transform.apply_boxes_torch(boxes, (h, w)),
                                                  multimask_output=False)
        for (s, _), m in zip(found, masks[:, 0].numpy()):
            num += s * m
            den += m
    return np.where(den > 0, num / np.maximum(den, 1e-12), 0.0)


@pytest.mark.slow
def test_vanilla_saa_through_inspector_eval_matches_the_library_paths(tmp_path, monkeypatch):
    import csv
    import json
    from pathlib import Path

    from sklearn.metrics import roc_auc_score

    import inspector.commands.eval as eval_cmd
    from inspector.cli import main
    from inspector.imaging import read_image
    from inspector.models.hub import ModelHub
    from inspector.profile import save_profile
    from tests.support.tiny_datasets import make_mvtec
    from tests.support.tiny_models import tiny_backbone, tiny_grounding, tiny_sam

    monkeypatch.setenv("INSPECTOR_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("INSPECTOR_CONFIG", str(tmp_path / "home" / "settings.yaml"))
    grounding_module, _ = tiny_grounding(tmp_path / "gd")
    sam_module = tiny_sam(seed=4)  # this seed's decoder gives box-dependent, partial masks
    hub = ModelHub(device="cpu", precision="fp32")
    hub.provide("grounding", grounding_module)
    hub.provide("sam", sam_module)
    hub.provide("backbone", tiny_backbone())
    monkeypatch.setattr(eval_cmd, "make_hub", lambda args: hub)
    cat = make_mvtec(tmp_path / "data", n_train=1, n_good=2, n_defect=1, defects=("bright", "dark"))
    prof = ProductProfile(name="widget", pipeline="saa", object="widget",
                          prompts={"class_agnostic": ["defect", "damage"], "class_specific": ["crack"]},
                          saa={"variant": "saa", "caption_mode": "separate", "grounding_short_side": 96,
                               "grounding_max_size": 160, "max_regions": 8})
    save_profile(prof, tmp_path / "widget")
    out = tmp_path / "run"
    rc = main(["eval", "--dataset", str(cat), "--profile", str(tmp_path / "widget"), "--eval-size", "64",
               "--save-maps", "--out", str(out)])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    rows = {Path(r["path"]).parent.name + "/" + Path(r["path"]).name: r
            for r in csv.DictReader((out / "scores.csv").open())}
    grounding = hub.get("grounding", prof.models.grounding)
    labels, scores, pix_true, pix_score = [], [], [], []
    for path in sorted((cat / "test").rglob("*.png")):
        image = read_image(path)
        want = _naive_vanilla_saa(grounding, sam_module, prof, image)
        saved = np.load(out / "maps" / path.parent.name / f"{path.stem}.npy")
        np.testing.assert_allclose(saved, want, atol=1e-4)
        assert float(rows[f"{path.parent.name}/{path.name}"]["score"]) == pytest.approx(float(want.max()), abs=1e-4)
        mask = np.zeros((64, 64), bool)
        if path.parent.name != "good":
            mask = read_image(cat / "ground_truth" / path.parent.name / f"{path.stem}_mask.png")[..., 0] > 127
        labels.append(path.parent.name != "good")
        scores.append(float(want.max()))
        pix_true.append(mask.ravel())
        pix_score.append(saved.ravel())  # = the naive map (above); ties within 1e-4 would move the AUROC
    assert max(scores) > 0  # boxes were found: the comparison is not between two empty maps
    assert metrics["image_auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-6)
    assert metrics["pixel_auroc"] == pytest.approx(
        roc_auc_score(np.concatenate(pix_true), np.concatenate(pix_score)), abs=1e-6)
