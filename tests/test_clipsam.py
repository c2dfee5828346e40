"""CLIP→SAM cascade: PPG point choice, the three-pass cascade, batching, gating, end to end.

Real tiny random-initialised open_clip and segment_anything models run every path. Where a test
needs to know SAM's answer in advance it sets the tiny decoder's last layers so that its real
forward predicts "everything" or "nothing" (:func:`constant_decoder_sam`); hand-made CLIP maps
come from :class:`HandMap`, a map provider whose map is given.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from inspector.detect.clip_maps import ClipMap
from inspector.detect.clipsam import ClipSamDetector
from inspector.detect.clipsam.fusion import merge_overlapping
from inspector.detect.clipsam.points import pad_prompts, prompt_sets
from inspector.detect.ppg import (
    cosine_to,
    extreme_components,
    extreme_region,
    mask_box,
    negative_points,
    negative_ring,
    positive_points,
    spaced_selection,
)
from inspector.models.hub import ModelHub
from inspector.models.sam import SamEmbedding, SamModel
from inspector.params.clipsam import ClipSamParams
from inspector.profile import ProductProfile
from tests.support.tiny_models import tiny_clip, tiny_sam

CPU = torch.device("cpu")


# ----------------------------------------------------------------------------- helpers
def blob_map(shape: tuple[int, int], centres: list[tuple[int, int]], radius: float, peaks: list[float] | None = None):
    """Gaussian bumps at (row, col) centres; peak values default to 1."""
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    amap = np.zeros(shape, np.float32)
    for (r, c), p in zip(centres, peaks or [1.0] * len(centres)):
        amap = np.maximum(amap, p * np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / (2 * radius**2)))
    return amap


class HandMap:
    """A map provider whose map and image score are given (tests the cascade on known maps)."""

    name = "hand"

    def __init__(self, amap: np.ndarray, score: float = 0.9) -> None:
        self.amap, self.score, self.calls = amap, score, 0

    def prepare(self, profile, hub, progress=None) -> None:
        pass

    def __call__(self, image: np.ndarray) -> ClipMap:
        self.calls += 1
        return ClipMap(self.amap.copy(), self.score)


def constant_decoder_sam(sign: float, seed: int = 0):
    """Tiny SAM whose decoder predicts all-foreground (sign > 0) or all-background (sign < 0) masks.

    The last upscaling conv outputs the constant 1 (GELU → 0.84 per channel) and every hypernetwork
    head outputs ``sign`` per channel, so mask logits = sign · 4 · 0.84 at every pixel.
    """
    sam = tiny_sam(seed)
    dec = sam.mask_decoder
    with torch.no_grad():
        last = dec.output_upscaling[3]
        last.weight.zero_()
        last.bias.fill_(1.0)
        for mlp in dec.output_hypernetworks_mlps:
            mlp.layers[-1].weight.zero_()
            mlp.layers[-1].bias.fill_(sign)
    return sam


class DecodeSpy:
    """Wraps ``SamModel.decode``: records what each call was given and what it returned."""

    def __init__(self, sam: SamModel) -> None:
        self.sam, self.original, self.calls = sam, sam.decode, []

    def __call__(self, emb, points=None, labels=None, boxes=None, mask_input=None, **kw) -> Any:
        out = self.original(emb, points, labels, boxes, mask_input, **kw)
        self.calls.append({"points": points, "labels": labels, "boxes": boxes,
                           "mask_input": None if mask_input is None else mask_input.clone(), "out": out, **kw})
        return out


def make_hub(sam_module) -> ModelHub:
    hub = ModelHub(device="cpu", precision="fp32")
    hub.provide("sam", sam_module)
    return hub


def make_profile(**clipsam: Any) -> ProductProfile:
    return ProductProfile(name="part", pipeline="clipsam", object="part",
                          decision={"image_threshold": 0.5}, clipsam=clipsam)


def prepared(amap: np.ndarray, sam_module, score: float = 0.9, **clipsam: Any):
    det = ClipSamDetector(HandMap(amap, score))
    det.prepare(make_profile(**clipsam), make_hub(sam_module))
    spy = DecodeSpy(det.sam)
    det.sam.decode = spy  # type: ignore[method-assign]
    return det, spy


def image(shape: tuple[int, int]) -> np.ndarray:
    return (np.random.default_rng(0).random((*shape, 3)) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def sam_plain():
    return tiny_sam()


@pytest.fixture(scope="module")
def sam_full():
    return constant_decoder_sam(+1.0)


@pytest.fixture(scope="module")
def sam_empty():
    return constant_decoder_sam(-1.0)


# ----------------------------------------------------------------------------- PPG, pure
def test_spaced_selection_takes_the_best_then_skips_close_ones():
    coords = np.array([[0, 0], [0, 3], [0, 10], [0, 30], [0, 31]])
    scores = np.array([1.0, 0.9, 0.8, 0.7, 0.75])
    assert spaced_selection(coords, scores, 3, 5.0).tolist() == [0, 2, 4]
    assert spaced_selection(coords, scores, 2, 5.0, lowest=True).tolist() == [3, 2]
    assert spaced_selection(coords, scores, 10, 50.0).tolist() == [0]  # runs out of candidates
    assert spaced_selection(coords, scores, 3, 0.0).tolist() == [0, 1, 2]


def test_positive_points_are_the_spaced_top_scores_inside_the_region():
    amap = blob_map((64, 96), [(20, 70)], 10.0)
    extreme = extreme_region(amap, 0.5)
    (comp,) = extreme_components(extreme, amap, 4, 16)
    pos = positive_points(comp, amap, 3, 6.0)  # (x, y)
    assert pos.shape == (3, 2)
    assert pos[0].tolist() == [70.0, 20.0]  # the peak, as (x=col, y=row)
    for x, y in pos:
        assert comp[int(y), int(x)]
    d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    assert d[np.triu_indices(3, 1)].min() >= 6.0
    # the next two are the best pixels outside a 6 px disc around the peak
    near = np.hypot(*(np.argwhere(comp) - [20, 70]).T) < 6
    assert amap[comp][~near].max() == pytest.approx(amap[int(pos[1, 1]), int(pos[1, 0])])


def test_extreme_components_rank_by_peak_and_drop_small_ones():
    amap = blob_map((64, 128), [(32, 20), (32, 100)], 5.0, peaks=[0.7, 1.0])
    amap[5, 60] = 0.95  # a single hot pixel
    comps = extreme_components(extreme_region(amap, 0.6), amap, min_px=4, max_count=16)
    assert len(comps) == 2
    assert comps[0][32, 100] and comps[1][32, 20]
    assert extreme_components(extreme_region(np.zeros((8, 8)), 0.8), np.zeros((8, 8)), 1, 4) == []


def test_negative_ring_is_the_dilation_minus_every_extreme_pixel():
    extreme = np.zeros((80, 80), bool)
    extreme[30:40, 30:40] = True
    extreme[30:40, 52:56] = True  # another defect inside the first one's dilation
    comp = np.zeros_like(extreme)
    comp[30:40, 30:40] = True
    ring = negative_ring(comp, extreme, 25)
    assert not (ring & extreme).any()
    dist = np.hypot(*(np.argwhere(ring) - np.clip(np.argwhere(ring), 30, 39)).T)
    assert 12.0 <= dist.max() <= 12.5 and dist.min() >= 1.0  # ellipse 25×25 → radius ≈ 12 (discrete)
    assert ring[35, 28] and ring[35, 51] and not ring[35, 53]


def test_negative_points_are_the_least_similar_ring_pixels():
    ring_yx = np.array([[0, 0], [0, 10], [0, 20], [0, 30], [0, 40]])
    ref = np.array([1.0, 0.0])
    feats = np.array([[1, 0], [0, 1], [1, 1], [-1, 0.1], [0.9, 0.1]], float)
    assert cosine_to(feats, ref)[3] < cosine_to(feats, ref)[1] < cosine_to(feats, ref)[2]
    neg = negative_points(ring_yx, feats, ref, 2, 5.0)
    assert neg.tolist() == [[30.0, 0.0], [10.0, 0.0]]  # (x, y) of the two lowest
    assert negative_points(ring_yx[:0], feats[:0], ref, 2, 5.0).shape == (0, 2)


def test_mask_box_is_inclusive_and_none_when_empty():
    m = np.zeros((10, 20), bool)
    assert mask_box(m) is None
    m[2:5, 7:12] = True
    assert mask_box(m) == (7, 2, 11, 4)


# ----------------------------------------------------------------------------- PPG with SAM features
def test_negatives_use_sam_features_of_the_same_embedding(sam_plain):
    """64×64 image: one SAM feature cell per pixel. The ring's left part carries features
    orthogonal to the defect's, so the negatives must land there."""
    sam = SamModel.from_module(sam_plain, CPU, torch.float32)
    feats = torch.zeros(1, 32, 64, 64)
    feats[:, 0] = 1.0  # everywhere: e0
    feats[:, 0, :, :24] = 0.0
    feats[:, 1, :, :24] = 1.0  # left of x = 24: e1
    emb = SamEmbedding(feats, (64, 64), (1024, 1024))
    amap = blob_map((64, 64), [(32, 34)], 3.0)
    p = ClipSamParams(extreme_threshold=0.5, positive_points=1, negative_points=3, min_point_distance_px=4)
    (ps,) = prompt_sets(amap, sam, emb, p)
    assert ps.positives.tolist() == [[34.0, 32.0]]
    assert len(ps.negatives) == 3
    assert (ps.negatives[:, 0] < 24).all()  # x: the dissimilar left side (columns 0..23)
    extreme = extreme_region(amap, 0.5)
    ring = negative_ring(extreme, extreme, 25)
    assert all(ring[int(y), int(x)] for x, y in ps.negatives)
    assert ps.labels.tolist() == [1, 0, 0, 0]


# ----------------------------------------------------------------------------- CPS
def test_cascade_feeds_pass1_logits_to_pass2_and_pass2_box_to_pass3(sam_full):
    amap = blob_map((48, 64), [(20, 30)], 4.0)
    det, spy = prepared(amap, sam_full, extreme_threshold=0.5)
    img = image((48, 64))
    analysis = det.analyse(img)
    assert len(spy.calls) == 3
    c1, c2, c3 = spy.calls
    assert c1["mask_input"] is None and c1["boxes"] is None
    assert torch.equal(c2["mask_input"], c1["out"].low_res_logits[:, :1])
    assert c2["boxes"] is None
    assert torch.equal(c3["mask_input"], c2["out"].low_res_logits[:, :1])
    stage2_mask = c2["out"].masks[0, 0]
    assert stage2_mask.all()  # this decoder predicts everything
    assert c3["boxes"].tolist() == [[0, 0, 63, 47]] == [list(mask_box(stage2_mask))]
    for c in spy.calls:  # the same points in every pass
        assert np.array_equal(c["points"], c1["points"]) and np.array_equal(c["labels"], c1["labels"])
    assert c3["return_logits"] and not c1["return_logits"]
    # two stages (Table 3, points + logits): pass 2 is the last, no box; re-run on the cached embedding
    det.retune(make_profile(extreme_threshold=0.5, cascade_stages=2))
    det.finish(analysis, img)
    assert len(spy.calls) == 5 and spy.calls[4]["return_logits"] and spy.calls[4]["boxes"] is None
    assert torch.equal(spy.calls[4]["mask_input"], spy.calls[3]["out"].low_res_logits[:, :1])
    assert det.sam.encoder_calls == 1


def test_empty_pass2_mask_gives_the_component_box(sam_empty):
    amap = blob_map((48, 64), [(20, 30)], 4.0)
    det, spy = prepared(amap, sam_empty, extreme_threshold=0.5)
    det.detect(image((48, 64)))
    c2, c3 = spy.calls[1:]
    assert not c2["out"].masks.any()
    comp = extreme_region(amap, 0.5)
    assert c3["boxes"].tolist() == [list(mask_box(comp))]


def test_two_defects_are_two_cascades_in_one_batched_call_per_pass(sam_plain):
    amap = blob_map((64, 128), [(20, 24), (44, 100)], 4.0, peaks=[1.0, 0.9])
    det, spy = prepared(amap, sam_plain, extreme_threshold=0.6, positive_points=2, min_point_distance_px=3)
    det.detect(image((64, 128)))
    assert det.sam.encoder_calls == 1
    assert len(spy.calls) == 3
    for c in spy.calls:
        assert c["points"].shape[0] == 2 and c["labels"].shape[0] == 2
    pts, labels = spy.calls[0]["points"], spy.calls[0]["labels"]
    for b, (row, col) in enumerate([(20, 24), (44, 100)]):
        pos = pts[b][labels[b] == 1]
        assert len(pos) == 2
        assert (np.hypot(pos[:, 0] - col, pos[:, 1] - row) < 8).all()
    assert spy.calls[2]["boxes"].shape == (2, 4)


def test_point_sets_of_different_length_are_padded_with_label_minus_one():
    from inspector.detect.ppg import PointPrompts

    a = PointPrompts(np.array([[1, 2], [3, 4]], np.float32), np.array([[5, 6]], np.float32), (0, 0, 1, 1), 1.0)
    b = PointPrompts(np.array([[7, 8]], np.float32), np.zeros((0, 2), np.float32), (0, 0, 1, 1), 1.0)
    points, labels = pad_prompts([a, b])
    assert points.shape == (2, 3, 2)
    assert labels.tolist() == [[1, 1, 0], [1, -1, -1]]
    assert points[1, 0].tolist() == [7, 8]


def test_mask_choice_by_predicted_iou_or_by_clip_score_inside():
    from inspector.detect.clipsam.cascade import choose_masks
    from inspector.models.sam import SamDecode

    amap = np.zeros((10, 10), np.float32)
    amap[:5] = 1.0  # the top half is anomalous
    masks = np.zeros((1, 3, 10, 10), bool)
    masks[0, 0, :5] = True  # mean CLIP score 1
    masks[0, 1] = True  # the whole image: 0.5
    dec = SamDecode(masks=masks, scores=np.array([[0.2, 0.9, 0.5]]), low_res_logits=torch.zeros(1, 3, 4, 4))
    assert choose_masks(dec, "iou", amap).tolist() == [1]
    assert choose_masks(dec, "clip", amap).tolist() == [0]  # the empty third mask never wins


def test_overlapping_final_masks_are_one_region():
    masks = np.zeros((4, 20, 30), bool)
    masks[0, 2:6, 2:6] = True
    masks[1, 5:9, 5:12] = True  # touches mask 0 at (5, 5)
    masks[3, 12:18, 20:28] = True  # mask 2 is empty
    groups = merge_overlapping(masks)
    assert len(groups) == 2
    assert np.array_equal(groups[0], masks[0] | masks[1]) and np.array_equal(groups[1], masks[3])


def test_empty_extreme_region_makes_no_decoder_call(sam_plain):
    det, spy = prepared(np.zeros((40, 40), np.float32), sam_plain)
    out = det.detect(image((40, 40)))
    assert spy.calls == []
    assert out.regions == [] and float(out.anomaly_map.max()) == 0.0
    assert det.sam.encoder_calls == 1


def test_sam_points_are_x_y_in_original_pixels_on_an_asymmetric_image(sam_plain):
    """A defect at row 10, col 60 of a 48×80 image: SAM must be prompted at x=60, y=10, i.e.
    (768, 127.92) in its 1024 frame (80 → 1024 wide, 48 → 614 high: SAM's own rounding)."""
    amap = blob_map((48, 80), [(10, 60)], 3.0)
    det, spy = prepared(amap, sam_plain, extreme_threshold=0.7, positive_points=1, negative_points=0)
    seen: list[torch.Tensor] = []
    hook = det.sam.model.prompt_encoder.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append(kwargs["points"][0].clone()), with_kwargs=True
    )
    try:
        det.detect(image((48, 80)))
    finally:
        hook.remove()
    assert spy.calls[0]["points"][0].tolist() == [[60.0, 10.0]]
    assert torch.allclose(seen[0][0, 0], torch.tensor([60 * 1024 / 80, 10 * 614 / 48]))


# ----------------------------------------------------------------------------- output, gating, retune
def test_fused_map_formula_and_gate(sam_full):
    amap = blob_map((48, 64), [(20, 30)], 4.0)
    det, _ = prepared(amap, sam_full, extreme_threshold=0.5, outside_weight=0.1)
    img = image((48, 64))
    analysis = det.analyse(img)
    out = det.finish(analysis, img)
    assert out.extras["gate_open"] and out.image_score == pytest.approx(0.9)
    # the all-foreground decoder: E = σ(ℓ)·c with ℓ > 0 constant and c = mean CLIP map over the whole image
    assert analysis.confidence.tolist() == pytest.approx([float(amap.mean())])
    sig = analysis.evidence / float(amap.mean())
    assert np.allclose(sig, sig.flat[0]) and 0.5 < sig.flat[0] < 1.0
    assert np.allclose(out.anomaly_map, 0.1 * amap + 0.9 * analysis.evidence, atol=1e-6)
    assert len(out.regions) == 1 and out.regions[0].area_px == 48 * 64
    assert out.regions[0].score == pytest.approx(float(out.anomaly_map.max()))
    # a good part: the CLIP image score (0.9) stays below the threshold → no SAM masks count
    strict = make_profile(extreme_threshold=0.5, outside_weight=0.1)
    strict.decision.image_threshold = 0.95
    det.retune(strict)
    good = det.finish(analysis, img)
    assert not good.extras["gate_open"] and good.regions == []
    assert np.allclose(good.anomaly_map, 0.1 * amap)
    assert good.anomaly_map.max() <= 0.1


def test_threshold_change_reruns_only_the_decoder(sam_full):
    amap = blob_map((64, 128), [(20, 24), (44, 100)], 4.0, peaks=[1.0, 0.7])
    det, spy = prepared(amap, sam_full, extreme_threshold=0.9)
    img = image((64, 128))
    analysis = det.analyse(img)
    assert len(analysis.sets) == 1 and len(spy.calls) == 3
    det.finish(analysis, img)
    assert len(spy.calls) == 3  # same numbers: nothing re-decoded
    det.retune(make_profile(extreme_threshold=0.6))
    out = det.finish(analysis, img)
    assert len(analysis.sets) == 2 and len(spy.calls) == 6 and spy.calls[-1]["points"].shape[0] == 2
    assert det.sam.encoder_calls == 1 and det.provider.calls == 1  # type: ignore[union-attr]
    assert len(out.extras["prompts"]) == 2
    assert "clipsam.extreme_threshold" in ClipSamDetector.finish_params


def test_provider_map_of_the_wrong_size_is_refused(sam_plain):
    det, _ = prepared(np.zeros((10, 10), np.float32), sam_plain)
    with pytest.raises(ValueError, match="returned a"):
        det.analyse(image((20, 30)))


# ----------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_end_to_end_with_the_aprilgan_map(tmp_path, monkeypatch, sam_plain):
    from inspector.inspection import Inspector
    from tests.test_adapters import tiny_adapter_state

    monkeypatch.setenv("INSPECTOR_HOME", str(tmp_path))
    clip = tiny_clip()
    hub = make_hub(sam_plain)
    hub.provide("clip", clip)
    hub.provide("adapter", {"trainable_linearlayer": tiny_adapter_state(clip)})
    profile = make_profile(map_provider="aprilgan", aprilgan_image_size=256, max_regions=2)
    profile.decision.image_threshold = 0.0
    inspector = Inspector(profile, hub)
    img = image((72, 100))
    result = inspector.inspect(img)
    det = result.detection
    assert det.anomaly_map.shape == (72, 100) and det.anomaly_map.dtype == np.float32
    assert 0.0 <= det.anomaly_map.min() and det.anomaly_map.max() <= 1.0
    assert 0.0 <= det.image_score <= 1.0
    clip_map = det.extras["clip_map"]
    assert clip_map.shape == (72, 100) and clip_map.max() > 0
    assert 1 <= len(det.extras["prompts"]) <= 2
    for key in ("clip_map", "sam_embed", "ppg", "cps"):
        assert det.timings[key] > 0
    assert result.verdict in ("PASS", "FAIL")
    # outside the masks the map is ε·CLIP map: the CLIP ranking survives
    union = np.zeros((72, 100), bool)
    for r in det.regions:
        union |= r.mask
    outside = ~union
    if outside.any():
        assert np.all(det.anomaly_map[outside] >= 0.1 * clip_map[outside] - 1e-6)
    # a second profile preparation reads the text vectors from the disk cache
    calls = inspector.detector.provider.clip.text_calls  # type: ignore[union-attr]
    Inspector(profile, hub).prepare()
    assert inspector.detector.provider.clip.text_calls == calls  # type: ignore[union-attr]


@pytest.mark.slow
def test_end_to_end_with_the_fade_map(tmp_path, monkeypatch, sam_plain):
    pytest.importorskip("inspector.detect.fade")
    from inspector.inspection import Inspector

    monkeypatch.setenv("INSPECTOR_HOME", str(tmp_path))
    hub = make_hub(sam_plain)
    hub.provide("clip", tiny_clip())
    profile = make_profile(map_provider="fade", max_regions=2)
    profile.image_scales = [240]
    profile.decision.image_threshold = 0.0
    result = Inspector(profile, hub).inspect(image((64, 80)))
    det = result.detection
    assert det.anomaly_map.shape == (64, 80)
    assert 0.0 <= det.anomaly_map.min() and det.anomaly_map.max() <= 1.0
    assert det.extras["clip_map"].shape == (64, 80)
    assert det.timings["sam_embed"] > 0 and "ppg" in det.timings
