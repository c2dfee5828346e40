"""SAA / SAA+: the math on hand-built inputs, and the detector end-to-end with tiny real models."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from inspector.detect import create_detector
from inspector.detect.saa.detector import SaaAnalysis, SaaDetector, pack_rows, prompt_entries
from inspector.detect.saa.boxes import BoxCandidates, decode_phrase, names_any, select_boxes
from inspector.detect.saa.experts import MVTEC, VISA, expert_profile, expert_profile_data, write_profiles
from inspector.detect.saa.regions import (
    MaskCrop,
    area_filter,
    fuse_regions,
    location_filter,
    iou_with,
    mean_inside,
    rescore,
    saliency_prompts,
    top_k,
    union_mask,
)
from inspector.detect.saa.saliency import grid_positions, instance_saliency, pixel_features, self_saliency
from inspector.imaging import write_png
from inspector.inspection import Inspector
from inspector.models.hub import ModelHub
from inspector.profile import ProductProfile, load_profile, save_profile
from inspector.settings import packaged_profiles_dir
from tests.support.tiny_models import tiny_backbone, tiny_grounding, tiny_sam


# ============================================================================ region math
def _crop(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> MaskCrop:
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    c = MaskCrop.from_mask(m)
    assert c is not None
    return c


def test_mask_crop_round_trip_and_empty() -> None:
    m = np.zeros((10, 12), bool)
    m[2:5, 3:9] = True
    m[4, 10] = True
    c = MaskCrop.from_mask(m)
    assert c is not None and c.box == (3, 2, 11, 5) and c.area == 19
    assert np.array_equal(c.full((10, 12)), m)
    assert MaskCrop.from_mask(np.zeros((4, 4), bool)) is None


def test_area_and_iou_property_filters() -> None:
    # eq. 4: areas 10, 50, 90 against an object of 100 px and theta_area = 0.5
    assert area_filter(np.array([10, 50, 90]), 100.0, 0.5).tolist() == [True, True, False]
    obj = np.zeros((10, 10), bool)
    obj[0:5, 0:10] = True  # 50 px
    inside = _crop(10, 10, 0, 2, 0, 5)  # 10 px, all inside -> IoU 10/50
    half = _crop(10, 10, 4, 6, 0, 10)  # 20 px, 10 inside -> IoU 10/60
    outside = _crop(10, 10, 7, 9, 0, 3)  # disjoint -> 0
    ious = np.array([iou_with(c, obj) for c in (inside, half, outside)])
    np.testing.assert_allclose(ious, [0.2, 10 / 60, 0.0])
    assert location_filter(ious, 0.18).tolist() == [True, False, False]
    assert union_mask([inside, outside], (10, 10)).sum() == 16


def test_saliency_prompt_and_rescore() -> None:
    # eq. 6 scaled by exp(-gain): full saliency keeps the score, none divides it by e^gain
    p = saliency_prompts(np.array([1.0, 0.0, 0.5, 2.0]), gain=1.0)
    np.testing.assert_allclose(p, [1.0, math.exp(-1), math.exp(-0.5), 1.0])
    np.testing.assert_allclose(saliency_prompts(np.array([0.0]), gain=3.0), [math.exp(-3)])
    np.testing.assert_allclose(rescore(np.array([0.4, 0.4]), p[:2]), [0.4, 0.4 * math.exp(-1)], rtol=1e-6)
    sal = np.zeros((6, 6), np.float32)
    sal[:3] = 1.0
    assert mean_inside(sal, _crop(6, 6, 2, 4, 0, 6)) == pytest.approx(0.5)


def test_top_k_and_fusion() -> None:
    assert top_k(np.array([0.1, 0.5, 0.3, 0.5]), 3).tolist() == [1, 3, 2]  # ties keep input order
    assert top_k(np.array([0.2]), 5).tolist() == [0]
    a = _crop(4, 6, 0, 4, 0, 4)  # cols 0-3
    b = _crop(4, 6, 0, 4, 2, 6)  # cols 2-5
    amap = fuse_regions([a, b], [0.2, 0.6], (4, 6))  # eq. 9
    np.testing.assert_allclose(amap[0], [0.2, 0.2, 0.4, 0.4, 0.6, 0.6], rtol=1e-6)
    ref = fuse_regions([a], [0.8], (4, 6), denominator_offset=1.0)  # reference code: s / (1 + 1)
    np.testing.assert_allclose(ref[0], [0.4, 0.4, 0.4, 0.4, 0.0, 0.0], rtol=1e-6)
    assert not fuse_regions([], [], (3, 3)).any()


# ============================================================================ saliency
def test_self_saliency_marks_the_odd_position() -> None:
    # 9 identical features and one orthogonal outlier: eq. 5 gives 0 to the crowd and 1 to the outlier
    f = torch.zeros(10, 4)
    f[:9, 0] = 1.0
    f[9, 1] = 1.0
    s = self_saliency(f, n_neighbors=3)
    np.testing.assert_allclose(s.numpy(), [0] * 9 + [1], atol=1e-6)
    # N larger than the image: every other position is a neighbour (outlier 1, crowd 1/9)
    s = self_saliency(f, n_neighbors=400)
    np.testing.assert_allclose(s.numpy(), [1 / 9] * 9 + [1], atol=1e-6)


def test_pixel_features_equal_upsample_concat_normalise() -> None:
    g = torch.Generator().manual_seed(0)
    feats = [torch.rand(1, 3, 8, 10, generator=g), torch.rand(1, 5, 4, 5, generator=g), torch.rand(1, 2, 2, 3, generator=g)]
    expected = torch.cat([F.interpolate(f, size=(8, 10), mode="bilinear", align_corners=False) for f in feats], 1)
    expected = F.normalize(expected[0].reshape(10, -1).T, dim=1)
    got = pixel_features(feats)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    pos = torch.tensor([[0, 0], [7, 9], [3, 4]])
    torch.testing.assert_close(pixel_features(feats, pos), expected[pos[:, 0] * 10 + pos[:, 1]], atol=1e-5, rtol=1e-5)
    assert grid_positions(2, 3).tolist() == [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]]


def test_instance_saliency_compares_each_instance_with_the_others() -> None:
    c, h, w = 3, 4, 9
    feats = torch.zeros(c, h, w)
    feats[0] = 1.0  # every position: direction e0
    feats[:, 1, 4] = torch.tensor([0.0, 1.0, 0.0])  # one odd pixel inside instance 2 (cols 3-5)
    masks = torch.zeros(4, h, w, dtype=torch.bool)
    masks[0, :, 0:3] = True
    masks[1, :, 3:6] = True
    masks[2, :, 6:9] = True
    masks[3, :, 0:3] = True  # a duplicate of instance 0 must not hide it from itself
    s = instance_saliency(feats, masks)
    expected = torch.zeros(h, w)
    expected[1, 4] = 1.0
    torch.testing.assert_close(s, expected)
    # a lone instance has nothing to compare with
    assert not instance_saliency(feats, masks[:1]).any()


# ============================================================================ boxes
TOKENS = ["[CLS]", "defect", "on", "widget", ".", "crack", ".", "black", "hole", ".", "[SEP]"]
SPANS = [(1, 5), (5, 10)]


def _logits(rows: list[dict[int, float]]) -> np.ndarray:
    out = np.zeros((len(rows), len(TOKENS)), np.float32)
    for q, row in enumerate(rows):
        for t, v in row.items():
            out[q, t] = v
    return out


def test_select_boxes_rules() -> None:
    logits = _logits([
        {1: 0.5, 2: 0.05},  # "defect" -> entry 0, kept
        {5: 0.3, 7: 0.2, 8: 0.15},  # entry 1, phrase "crack. black hole"
        {3: 0.9, 1: 0.4},  # names the object ("widget") -> dropped
        {7: 0.08},  # below the box threshold
        {0: 0.99, 10: 0.99},  # special tokens only: no score
        {5: 0.6},  # too large a box
    ])
    boxes = np.array([[0.5, 0.5, 0.2, 0.2], [0.25, 0.25, 0.1, 0.2], [0.5, 0.5, 0.5, 0.5],
                      [0.5, 0.5, 0.1, 0.1], [0.5, 0.5, 0.1, 0.1], [0.5, 0.5, 0.9, 0.9]], np.float32)
    got = select_boxes(logits, boxes, TOKENS, SPANS, [7, 8], (100, 200), 0.1, 0.1, max_area=0.5,
                       filter_words=["widget"])
    assert got.entries.tolist() == [7, 8]
    only = select_boxes(logits, boxes, TOKENS, SPANS, [7, 8], (100, 200), 0.1, 0.1, max_area=0.5,
                        filter_words=["widget"], keep_entries={8})
    assert only.entries.tolist() == [8]  # query 0 belongs to entry 7, not re-attributed
    objects = select_boxes(logits, boxes, TOKENS, SPANS, [-1, 8], (100, 200), 0.1, 0.1, keep_entries={-1})
    assert objects.phrases == ["defect", "defect widget"]  # the object entry keeps its own boxes
    np.testing.assert_allclose(got.scores, [0.5, 0.3])
    assert got.phrases == ["defect", "crack. black hole"]
    np.testing.assert_allclose(got.boxes[0], [80, 40, 120, 60])  # (cx,cy,w,h) -> pixels
    assert len(got.top(1)) == 1 and got.top(1).scores[0] == pytest.approx(0.5)
    both = BoxCandidates.concat([got, BoxCandidates(), got.take([1])])
    assert len(both) == 3 and both.phrases[-1] == "crack. black hole"


def test_phrase_helpers() -> None:
    probs = np.zeros(len(TOKENS))
    probs[[5, 8]] = 0.5
    assert decode_phrase(TOKENS, probs, (5, 10), 0.1) == "crack. hole"
    assert names_any("defect on metal nut", ["nut"]) and names_any("defect on Metal  Nut", ["metal nut"])
    assert not names_any("walnut stain", ["nut"])
    assert pack_rows([3, 4, 5, 2], budget=8) == [[0, 1], [2, 3]]
    with pytest.raises(ValueError, match="at most 8"):
        pack_rows([9], budget=8)


def test_prompt_entries_fill_and_deduplicate() -> None:
    prof = ProductProfile(name="p", object="pcb", prompts={"class_specific": ["defect on pcb", "bent wire"]})
    assert prompt_entries(prof) == ["defect on pcb", "damage on pcb", "flaw on pcb", "bent wire"]


# ============================================================================ detector (tiny models)
@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> ModelHub:
    model, _ = tiny_grounding(tmp_path_factory.mktemp("gd"))
    h = ModelHub(device="cpu", precision="fp32")
    h.provide("grounding", model)
    h.provide("sam", tiny_sam())
    h.provide("backbone", tiny_backbone())
    return h


def _profile(**saa) -> ProductProfile:
    """A small profile for the tiny models. The random GroundingDINO finds only tiny "object" boxes,
    which would make the area rule drop every defect; by default no object box survives, so
    ObjectArea is the whole image (tests that need objects lower ``object_box_threshold``)."""
    base = dict(grounding_short_side=96, grounding_max_size=160, saliency_input_size=64,
                multi_instance_input_size=64, max_regions=12, object_box_threshold=1.0)
    base.update(saa)
    return ProductProfile(
        name="widget_saa", pipeline="saa", object="widget",
        prompts={"class_specific": ["crack. black hole", "scratch", "red stain", "bent wire"]},
        properties={"top_k": 3, "max_area_ratio": 1.0, "saliency_neighbors": 20},
        saa=base,
    )


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rng = np.random.default_rng(3)
    img = np.full((60, 80, 3), 120, np.uint8)
    img[20:40, 25:55] = (200, 60, 40)
    return np.clip(img + rng.integers(0, 30, img.shape), 0, 255).astype(np.uint8)


def _count_calls(module: torch.nn.Module) -> list[int]:
    calls: list[int] = []
    module.register_forward_hook(lambda *a: calls.append(1))
    return calls


@pytest.mark.slow
def test_detector_end_to_end_one_backbone_pass_per_image(hub: ModelHub, image: np.ndarray) -> None:
    det = create_detector("saa")
    assert isinstance(det, SaaDetector)
    prof = _profile()
    det.prepare(prof, hub)
    dino, sam = det.grounding, det.sam
    assert dino is not None and sam is not None
    text_calls = dino.text_calls
    assert len(det.entries) == 7 and det.text is not None and det.text.num_rows == 1  # one joint caption
    assert det.text.entry_ids[0] == [0, 1, 2, 3, 4, 5, 6, -1]  # the entries, then the object name
    swin_calls = _count_calls(dino.model.backbone)
    bert_calls = _count_calls(dino.model.bert)
    sam0 = sam.encoder_calls
    analysis = det.analyse(image)
    assert len(swin_calls) == 1 and not bert_calls and dino.text_calls == text_calls
    assert isinstance(analysis, SaaAnalysis) and len(analysis.defects) > 0  # random weights fire
    assert sam.encoder_calls == sam0 + 1  # one SAM embedding per image
    assert analysis.saliency is not None and analysis.saliency.shape == image.shape[:2]
    assert analysis.object_masks is None  # single object, no IoU rule: never decoded
    out = det.finish(analysis, image)
    assert out.anomaly_map.shape == image.shape[:2]
    assert 0.0 <= out.anomaly_map.min() and out.anomaly_map.max() <= 1.0
    assert out.image_score == pytest.approx(float(out.anomaly_map.max()))
    for stage in ("grounding_image", "grounding_fusion", "boxes", "sam_embed", "sam_decode", "saliency", "fusion"):
        assert stage in out.timings
    cands = out.extras["candidates"]
    assert 0 < len(cands) <= 3  # top-K
    for r in out.regions:
        assert r.label and r.mask is not None and r.mask.shape == image.shape[:2] and r.mask.sum() == r.area_px
        assert r.score >= prof.decision.region_threshold
    # the map is eq. 9 over the reported candidates: every pixel lies within their score range
    assert out.anomaly_map.max() <= max(c["score"] for c in cands) + 1e-6

    # separate captions (reference-style): one fusion row per entry, still one backbone pass
    det2 = create_detector("saa")
    det2.prepare(_profile(caption_mode="separate"), hub)
    assert det2.text is not None and det2.text.num_rows == 8
    swin_calls.clear()
    det2.analyse(image)
    assert len(swin_calls) == 1


@pytest.mark.slow
def test_finish_only_changes_reuse_the_analysis(hub: ModelHub, image: np.ndarray) -> None:
    det = create_detector("saa")
    prof = _profile()
    det.prepare(prof, hub)
    analysis = det.analyse(image)
    images_before = det.grounding.image_calls  # type: ignore[union-attr]
    first = det.finish(analysis, image)
    det.retune(prof.model_copy(update={"properties": prof.properties.model_copy(update={"top_k": 1})}))
    one = det.finish(analysis, image)
    assert len(one.extras["candidates"]) == 1
    assert one.extras["candidates"][0] == first.extras["candidates"][0]
    # theta_area so small that nothing fits: an all-zero map
    det.retune(prof.model_copy(update={"properties": prof.properties.model_copy(update={"max_area_ratio": 1e-9})}))
    none = det.finish(analysis, image)
    assert not none.anomaly_map.any() and not none.regions
    assert det.grounding.image_calls == images_before  # type: ignore[union-attr]
    # the IoU rule decodes the object masks lazily, from the kept embedding
    # (the random model's token scores saturate, so in a joint caption every query ties on the first
    # entry; the object's own caption guarantees object boxes)
    prof = _profile(object_box_threshold=0.0, caption_mode="separate")
    det.prepare(prof, hub)
    analysis = det.analyse(image)
    assert len(analysis.objects) > 0 and analysis.object_masks is None
    det.retune(prof.model_copy(update={"properties": prof.properties.model_copy(update={"min_iou_with_object": 1e-6})}))
    det.finish(analysis, image)
    assert analysis.object_masks is not None and len(analysis.object_masks) == len(analysis.objects)
    assert set(SaaDetector.finish_params) <= {f"saa.{k}" for k in type(prof.saa).model_fields}


@pytest.mark.slow
def test_no_surviving_box_gives_zero_map_and_pass(hub: ModelHub, image: np.ndarray) -> None:
    prof = _profile(box_threshold=1.0, object_box_threshold=1.0)  # scores are never > 1
    ins = Inspector(prof, hub)
    ins.prepare()
    sam0 = ins.detector.sam.encoder_calls  # type: ignore[attr-defined]
    result = ins.inspect(image)
    assert result.verdict == "PASS" and result.image_score == 0.0
    assert not result.detection.anomaly_map.any() and not result.regions
    assert ins.detector.sam.encoder_calls == sam0  # type: ignore[attr-defined]  # nothing to segment


@pytest.mark.slow
def test_vanilla_saa_and_multi_instance_saa_plus(hub: ModelHub, image: np.ndarray) -> None:
    det = create_detector("saa")
    det.prepare(_profile(variant="saa"), hub)
    assert det.text.num_rows == 1  # type: ignore[union-attr]  # no object query
    a = det.analyse(image)
    assert a.saliency is None and not len(a.objects)
    out = det.finish(a, image)
    assert len(out.extras["candidates"]) == len(a.defects)  # no top-K in vanilla SAA

    prof = _profile(object_box_threshold=0.0, caption_mode="separate")
    prof.properties.object_count = 3
    det.prepare(prof, hub)
    a = det.analyse(image)
    assert a.object_masks is not None  # instances were segmented for the saliency
    assert sum(m is not None for m in a.object_masks) >= 2  # so the multi-instance strategy ran
    assert a.saliency is not None and a.saliency.shape == image.shape[:2]
    assert det.finish(a, image).anomaly_map.shape == image.shape[:2]


@pytest.mark.slow
def test_reference_shots_calibrate_the_scale(hub: ModelHub, image: np.ndarray, tmp_path: Path) -> None:
    prof = _profile()
    folder = tmp_path / "widget_saa"
    (folder / "references").mkdir(parents=True)
    write_png(folder / "references" / "good1.png", image)
    prof.reference_shots = ["references/good1.png"]
    save_profile(prof, folder)
    prof = load_profile(folder)
    det = create_detector("saa")
    det.prepare(prof, hub)
    out = det.detect(image)  # the reference itself
    assert out.extras["calibrated"] is True
    margin = prof.saa.calibration_margin
    assert out.image_score <= 0.5 / margin + 1e-6  # the strongest good response sits at 0.5 / margin
    raw_det = create_detector("saa")
    raw_det.prepare(_profile(), hub)
    raw = raw_det.detect(image)
    level = max(raw.image_score, prof.saa.calibration_min_level)
    assert out.image_score == pytest.approx(min(raw.image_score / (2 * margin * level), 1.0), abs=1e-5)


# ============================================================================ shipped profiles
def test_shipped_profiles_are_the_expert_tables() -> None:
    root = packaged_profiles_dir()
    names = sorted(f"mvtec_{c}" for c in MVTEC) + sorted(f"visa_{c}" for c in VISA)
    assert len(names) == 27
    for name in names:
        dataset, category = name.split("_", 1)
        shipped = load_profile(root / name)
        assert shipped.model_dump() == expert_profile(dataset, category).model_dump(), name
        assert shipped.pipeline == "saa" and shipped.saa.variant == "saa+" and not shipped.reference_shots
        assert yaml.safe_load((root / name / "profile.yaml").read_text()) == expert_profile_data(dataset, category)
    bottle = load_profile(root / "mvtec_bottle")
    assert bottle.prompts.class_specific == ["broken part. contamination. white broken"]
    assert bottle.properties.max_area_ratio == 0.3 and bottle.properties.top_k == 5
    nut = load_profile(root / "mvtec_metal_nut")
    assert nut.object == "metal nut" and nut.saa.filter_word == "nut"
    caps = load_profile(root / "visa_capsules")
    assert (caps.object, caps.properties.object_count, caps.properties.top_k) == ("capsule", 20, 15)
    assert caps.prompts.class_specific == ["black melt. dark liquid", "bubble"]
    assert load_profile(root / "visa_cashew").properties.max_area_ratio == 0.05


def test_profile_generator_writes_valid_files(tmp_path: Path) -> None:
    files = write_profiles(tmp_path)
    assert len(files) == 27
    assert load_profile(tmp_path / "visa_pcb1").saa.filter_word == "pcb"


def test_cli_profile_experts_writes_every_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from inspector.cli import main
    from inspector.commands.common import EXIT_OK, EXIT_USAGE

    assert main(["profile", "experts", str(tmp_path / "p")]) == EXIT_OK
    printed = capsys.readouterr().out.split()
    expected = sorted(str(tmp_path / "p" / f"{d}_{c}" / "profile.yaml")
                      for d, table in (("mvtec", MVTEC), ("visa", VISA)) for c in table)
    assert sorted(printed) == expected
    text = (tmp_path / "p" / "visa_pcb1" / "profile.yaml").read_text(encoding="utf-8")
    assert text.startswith("# Generated by `inspector profile experts`")
    assert yaml.safe_load(text) == expert_profile_data("visa", "pcb1")
    assert not list((tmp_path / "p").rglob("*.tmp"))  # written atomically, nothing left behind
    # a file where the folder must go: a clear error naming it, exit 2
    (tmp_path / "blocked").write_text("not a folder", encoding="utf-8")
    assert main(["profile", "experts", str(tmp_path / "blocked")]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "cannot write the expert profiles" in err and "blocked" in err
