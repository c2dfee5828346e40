"""CLIP→SAM cascade (points / cascade / fusion): known answers for what mutmut found untested.

The cascade runs a real tiny random-initialised SAM (tests/support/tiny_models.py). Its expected
answer is eq. 9–12 written out here on the same model's decoder: three plain ``decode`` calls,
the prompt sets padded by hand, the candidate chosen by a float64 loop (predicted IoU or mean CLIP
score inside), the pass-3 box read from the pass-2 mask by ``np.nonzero``. The fusion helpers are
checked on small arrays whose answers are worked out by hand.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from inspector.detect.clipsam.cascade import choose_masks, run_cascade
from inspector.detect.clipsam.fusion import fuse, merge_overlapping, sam_evidence
from inspector.detect.clipsam.points import pad_prompts, prompt_sets
from inspector.detect.ppg import PointPrompts
from inspector.models.sam import SamDecode, SamEmbedding, SamModel
from inspector.params.clipsam import ClipSamParams
from tests.support.tiny_models import tiny_sam

CPU = torch.device("cpu")
HW = (48, 64)


@pytest.fixture(scope="module")
def sam_and_embedding():
    sam = SamModel.from_module(tiny_sam(3), CPU, torch.float32)
    img = (np.random.default_rng(5).random((*HW, 3)) * 255).astype(np.uint8)
    emb = sam.embed(img)
    # CLIP map: high on the lowest-IoU pass-1 candidate of set 1, so choosing by CLIP score differs
    # from choosing by predicted IoU on this model (asserted in the test)
    pts = np.array([[[20.0, 14.0], [26.0, 18.0], [5.0, 40.0]], [[50.0, 30.0], [0.0, 0.0], [0.0, 0.0]]], np.float32)
    d = sam.decode(emb, pts, np.array([[1, 1, 0], [1, -1, -1]]), multimask=True)
    amap = (0.05 + 0.9 * d.masks[1, int(np.argmin(d.scores[1]))]).astype(np.float32)
    return sam, emb, amap


def _sets() -> list[PointPrompts]:
    a = PointPrompts(np.array([[20.0, 14.0], [26.0, 18.0]], np.float32), np.array([[5.0, 40.0]], np.float32),
                     (18, 12, 28, 20), 0.9)
    b = PointPrompts(np.array([[50.0, 30.0]], np.float32), np.zeros((0, 2), np.float32), (46, 26, 54, 34), 0.7)
    return [a, b]


def _naive_cascade(sam: SamModel, emb: SamEmbedding, sets: list[PointPrompts], stages: int, multimask: bool,
                   choice: str, amap: np.ndarray):
    n = max(len(s.positives) + len(s.negatives) for s in sets)
    pts = np.zeros((len(sets), n, 2), np.float32)
    lab = -np.ones((len(sets), n), np.int64)
    for b, s in enumerate(sets):
        for j, xy in enumerate(list(s.positives) + list(s.negatives)):
            pts[b, j] = xy
            lab[b, j] = 1 if j < len(s.positives) else 0

    def pick(d) -> list[int]:
        out = []
        for b in range(d.masks.shape[0]):
            if choice == "iou":
                out.append(int(np.argmax(d.scores[b])))
                continue
            means = [float(amap.astype(np.float64)[m].mean()) if m.any() else -math.inf for m in d.masks[b]]
            out.append(int(np.argmax(means)))
        return out

    d = sam.decode(emb, pts, lab, multimask=multimask, return_logits=True)
    picks = [pick(d)]
    boxes = from_mask = None
    for stage in range(2, stages + 1):
        k = picks[-1]
        logits_in = torch.stack([d.low_res_logits[b, k[b]] for b in range(len(sets))])[:, None]
        if stage == 3:
            boxes = np.zeros((len(sets), 4), np.float32)
            from_mask = []
            for b, s in enumerate(sets):
                ys, xs = np.nonzero(d.masks[b, k[b]])
                from_mask.append(bool(len(xs)))
                boxes[b] = (xs.min(), ys.min(), xs.max(), ys.max()) if len(xs) else s.box
        d = sam.decode(emb, pts, lab, boxes=boxes, mask_input=logits_in, multimask=multimask, return_logits=True)
        picks.append(pick(d))
    k = picks[-1]
    logits = torch.stack([d.mask_logits[b, k[b]] for b in range(len(sets))])
    return logits, np.array([d.scores[b, k[b]] for b in range(len(sets))]), boxes, picks, from_mask


@pytest.mark.parametrize("stages", [1, 2, 3])
@pytest.mark.parametrize("multimask, choice", [(False, "iou"), (True, "iou"), (True, "clip")])
def test_cascade_is_eq_9_to_12_written_out(sam_and_embedding, stages, multimask, choice):
    sam, emb, amap = sam_and_embedding
    sets = _sets()
    p = ClipSamParams(cascade_stages=stages, multimask_output=multimask, mask_choice=choice)
    got = run_cascade(sam, emb, sets, p, amap)
    logits, iou, boxes, picks, from_mask = _naive_cascade(sam, emb, sets, stages, multimask, choice, amap)
    assert got.stages == stages
    torch.testing.assert_close(got.logits, logits.float(), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(got.iou, iou, atol=1e-6)
    assert got.iou.dtype == np.float32
    if stages < 3:
        assert got.boxes is None and got.box_from_mask is None
    else:
        np.testing.assert_array_equal(got.boxes, boxes)
        assert got.boxes.dtype == np.float32 and got.box_from_mask.dtype == bool
        assert got.box_from_mask.tolist() == from_mask
    if multimask:  # the choice must matter on this model and map, or the test would not see it
        other = _naive_cascade(sam, emb, sets, stages, multimask, "clip" if choice == "iou" else "iou", amap)
        assert other[3] != picks


# ------------------------------------------------------------------------------ PPG on one image
def _naive_prompt_sets(amap, sam, emb, p):
    from inspector.detect.ppg import (
        even_sample,
        extreme_components,
        extreme_region,
        mask_box,
        negative_points,
        negative_ring,
        positive_points,
    )

    extreme = extreme_region(amap, p.extreme_threshold)
    out = []
    for comp in extreme_components(extreme, amap, p.min_region_px, p.max_regions):
        pos = positive_points(comp, amap, p.positive_points, p.min_point_distance_px)
        neg = np.zeros((0, 2), np.float32)
        ring_yx = even_sample(np.argwhere(negative_ring(comp, extreme, p.dilation_kernel)), p.feature_samples)
        if p.negative_points > 0 and len(ring_yx):
            inner_yx = even_sample(np.argwhere(comp), p.feature_samples)
            # separate calls, x = column and y = row; the region mean F_a in float64
            f_in = sam.features_at(emb, np.stack([inner_yx[:, 1], inner_yx[:, 0]], 1).astype(np.float32))
            f_ring = sam.features_at(emb, np.stack([ring_yx[:, 1], ring_yx[:, 0]], 1).astype(np.float32))
            mean = f_in.double().numpy().mean(axis=0)
            neg = negative_points(ring_yx, f_ring.double().numpy(), mean, p.negative_points, p.min_point_distance_px)
        out.append((pos, neg, mask_box(comp), float(amap[comp].max())))
    return out


@pytest.mark.parametrize("negatives, regions", [(0, 16), (1, 16), (3, 16), (3, 1)])
def test_prompt_sets_are_ppg_on_the_embeddings_features(sam_and_embedding, negatives, regions):
    """Two blobs on a 48×64 map (one under the image's top edge, so its ring is cut); 16 feature samples."""
    sam, emb, _ = sam_and_embedding
    yy, xx = np.mgrid[: HW[0], : HW[1]]
    amap = np.maximum(np.exp(-((yy - 14) ** 2 + (xx - 18) ** 2) / 30.0),
                      0.8 * np.exp(-((yy - 1) ** 2 + (xx - 50) ** 2) / 20.0)).astype(np.float32)
    p = ClipSamParams(extreme_threshold=0.4, positive_points=2, negative_points=negatives, min_point_distance_px=2,
                      dilation_kernel=9, feature_samples=16, min_region_px=4, max_regions=regions)
    got = prompt_sets(amap, sam, emb, p)
    want = _naive_prompt_sets(amap, sam, emb, p)
    assert len(got) == len(want) == min(regions, 2)
    for g, (pos, neg, box, peak) in zip(got, want):
        np.testing.assert_array_equal(g.positives, pos)
        assert g.negatives.shape == (min(negatives, len(neg)) if negatives else 0, 2) == neg.shape
        np.testing.assert_array_equal(g.negatives, neg)
        assert g.negatives.dtype == np.float32 and g.points.shape == (len(pos) + len(neg), 2)
        assert g.box == box and g.peak == pytest.approx(peak)
    assert got[0].peak == pytest.approx(1.0) and got[-1].peak == pytest.approx(1.0 if regions == 1 else 0.8, abs=1e-3)


def test_prompt_sets_without_a_ring_have_no_negatives(sam_and_embedding):
    sam, emb, _ = sam_and_embedding
    amap = np.ones(HW, np.float32)  # the extreme region is the whole image: no ring to sample
    (ps,) = prompt_sets(amap, sam, emb, ClipSamParams(positive_points=1, negative_points=3))
    assert ps.negatives.shape == (0, 2) and ps.box == (0, 0, HW[1] - 1, HW[0] - 1)


# ------------------------------------------------------------------------------ SAM evidence, merging, fusion
def test_sam_evidence_reads_the_component_box_inclusively_and_returns_float32():
    amap = np.arange(24, dtype=np.float32).reshape(4, 6) / 24.0  # every pixel its own value
    logits = torch.full((2, 4, 6), -30.0)
    logits[0, 3, 5] = 1.0  # mask 0: the single bottom-right pixel, c = 23/24
    sets = [PointPrompts(np.zeros((1, 2)), np.zeros((0, 2)), (5, 3, 5, 3), 1.0),
            PointPrompts(np.zeros((1, 2)), np.zeros((0, 2)), (1, 1, 3, 2), 1.0)]  # empty mask: cols 1..3, rows 1..2
    ev, masks, conf = sam_evidence(amap, logits, sets)
    box_mean = np.mean([r * 6 + c for r in (1, 2) for c in (1, 2, 3)]) / 24.0  # = 10/24
    np.testing.assert_allclose(conf, [23 / 24, box_mean], rtol=1e-6)
    assert conf.dtype == np.float32 and ev.dtype == np.float32 and masks.dtype == bool
    s1, s30 = 1 / (1 + math.exp(-1.0)), 1 / (1 + math.exp(30.0))
    want = np.full((4, 6), max(s30 * 23 / 24, s30 * box_mean))
    want[3, 5] = s1 * 23 / 24
    np.testing.assert_allclose(ev, want, rtol=1e-5)


def test_merge_overlapping_on_touching_boxes_chains_and_corners():
    m = np.zeros((6, 4, 8), bool)
    m[0, 0, 0:3] = True  # row 0, cols 0..2
    m[1, 0:3, 6] = True  # col 6: box overlaps nothing before mask 4
    m[2, 0:2, 2] = True  # shares only (0, 2) with mask 0: the boxes touch in one column
    m[3] = False  # empty: dropped
    m[4, 2, 5:8] = True  # crosses mask 1 at (2, 6), the last row of mask 1's box
    m[5, 3, 0] = True  # alone; its box touches mask 0's box in no row
    merged = merge_overlapping(m)
    assert len(merged) == 3
    np.testing.assert_array_equal(merged[0], m[0] | m[2])
    np.testing.assert_array_equal(merged[1], m[1] | m[4])
    np.testing.assert_array_equal(merged[2], m[5])
    # a chain a–b–c where a and c do not touch, given in the order a, c, b
    c = np.zeros((3, 3, 9), bool)
    c[0, 1, 0:3] = True
    c[1, 1, 6:9] = True
    c[2, 1, 2:7] = True
    (one,) = merge_overlapping(c)
    np.testing.assert_array_equal(one, c.any(0))
    # boxes that overlap while the pixels do not: two separate regions
    d = np.zeros((2, 3, 3), bool)
    d[0, 0, 0] = d[0, 2, 2] = True
    d[1, 0, 2] = d[1, 2, 0] = True
    assert len(merge_overlapping(d)) == 2

    # the boxes meet in one pixel that only one mask covers; next to it each mask has a pixel the
    # other's box holds: still two regions, in either order and transposed
    a = np.zeros((5, 6), bool)
    a[0, 0] = a[1, 1] = True  # box rows 0..1, cols 0..1
    b = np.zeros((5, 6), bool)
    b[0, 1] = b[0, 3] = True  # box row 0, cols 1..3: the boxes meet at (0, 1), which only b covers
    for x, y in [(a, b), (b, a), (a.T, b.T), (b.T, a.T)]:
        assert len(merge_overlapping(np.stack([x, y]))) == 2


def test_fuse_without_evidence_and_at_the_top_of_the_range():
    amap = np.array([[0.0, 0.5, 1.0]], np.float32)
    np.testing.assert_allclose(fuse(amap, None, True, 0.3), 0.3 * amap, rtol=1e-6)
    out = fuse(amap.astype(np.float64), np.array([[1.0, 0.5, 1.0]], np.float32), True, 0.3)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.7, 0.5, 1.0]], rtol=1e-6)
    np.testing.assert_array_equal(fuse(amap, np.ones_like(amap), False, 1.0), amap)  # eps = 1: the CLIP map


def test_choose_masks_per_set_by_hand():
    """Two prompt sets × 3 candidates on a 3×4 map; answers worked out by hand."""
    amap = np.zeros((3, 4), np.float32)
    amap[0, 0] = 0.8
    amap[1, :] = 0.5
    masks = np.zeros((2, 3, 3, 4), bool)
    masks[0, 0, 0, 0] = True  # set 0: one pixel, mean 0.8
    masks[0, 1, 1, :] = True  # mean 0.5
    masks[0, 2, 2, :] = True  # mean 0
    # set 1: an empty first candidate and two candidates where A = 0: the empty one must never win
    masks[1, 1, 2, :2] = True
    masks[1, 2, 2, 2:] = True
    scores = np.array([[0.1, 0.3, 0.9], [0.2, 0.1, 0.7]])
    dec = SamDecode(masks, scores, torch.zeros(2, 3, 256, 256))
    assert choose_masks(dec, "clip", amap).tolist() == [0, 1]
    assert choose_masks(dec, "iou", amap).tolist() == [2, 2]
    one = SamDecode(masks[:, :1], scores[:, :1], torch.zeros(2, 1, 256, 256))
    got = choose_masks(one, "clip", amap)
    assert got.tolist() == [0, 0] and got.dtype == np.int64
    two = SamDecode(masks[:, 1:], scores[:, 1:], torch.zeros(2, 2, 256, 256))  # two candidates: still a choice
    assert choose_masks(two, "clip", amap).tolist() == [0, 0] and choose_masks(two, "iou", amap).tolist() == [1, 1]
    small = np.zeros((1, 2, 3, 4), bool)
    small[0, 0, 2, :2] = True  # 2 px, mean 0
    small[0, 1, 1, :] = True  # 4 px, mean 0.5: the mean, not the sum or the size, decides
    assert choose_masks(SamDecode(small, scores[:1, :2], torch.zeros(1, 2, 256, 256)), "clip", amap).tolist() == [1]
    row = SamDecode(masks[:, :, 1:2], scores, torch.zeros(2, 3, 256, 256))  # a 1-pixel-high image
    assert choose_masks(row, "iou", amap[1:2]).tolist() == [2, 2]


def test_pad_prompts_keeps_float32_points():
    sets = _sets()
    points, labels = pad_prompts(sets)
    assert points.dtype == np.float32 and labels.dtype == np.int64
    np.testing.assert_array_equal(points, [[[20, 14], [26, 18], [5, 40]], [[50, 30], [0, 0], [0, 0]]])
    assert labels.tolist() == [[1, 1, 0], [1, -1, -1]]
