"""Known answers for patchcore/detector.py's pure functions and scoring methods (mutation tests).

No backbone: the scoring methods (``_score_grids``, ``_stitch``, ``_zero_shot``,
``_reference_threshold``, ``finish``) are called on constructed feature grids, and every expected
value is re-derived here in float64 (nearest neighbours, eq. 7, mutual scores, raised-cosine
stitching, the saturating score) or by hand.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from inspector.detect.maps import resize_map
from inspector.detect.patchcore.detector import (
    PatchCoreAnalysis,
    PatchCoreDetector,
    augmentations,
    fit_square,
    from_frame,
    image_score,
    pose_angles,
    rotate,
    saturate,
    to_frame,
    transform,
    wants_tiles,
)
from inspector.detect.patchcore.index import build_index
from inspector.params.patchcore import PatchCoreParams
from inspector.profile import ProductProfile
from tests.support.reference import naive_stitch


def detector(**patchcore: object) -> PatchCoreDetector:
    settings = {"input_size": 64, "augment": "none", "tiling": "off", **patchcore}
    det = PatchCoreDetector()
    det.profile = ProductProfile(name="t", object="part", reference_shots=[], pipeline="patchcore",
                                 patchcore=settings)
    return det


# ----------------------------------------------------------------------------- naive float64 maths
def naive_weight(q: np.ndarray, star: int, support: np.ndarray, b: int) -> float:
    """PatchCore eq. 7: 1 − softmax(‖q − m‖ over m*'s b+1 nearest support rows, m* first)[0]."""
    if b <= 0 or support.shape[0] < 2:
        return 1.0
    around = np.sqrt(((support - support[star]) ** 2).sum(1))
    nb = np.argsort(around, kind="stable")[: b + 1]
    assert nb[0] == star
    ds = np.sqrt(((support[nb] - q) ** 2).sum(1))
    e = np.exp(ds - ds.max())
    return float(1.0 - e[0] / e.sum())


def naive_global(g: np.ndarray, bank: np.ndarray, b: int) -> tuple[np.ndarray, float, float]:
    """(h, w) nearest distances, eq. 7 factor of the top patch, and the top distance."""
    d, h, w = g.shape
    q = g.reshape(d, -1).T.astype(np.float64)
    bk = bank.astype(np.float64)
    dist = np.sqrt(((q[:, None] - bk[None]) ** 2).sum(-1))
    s = dist.min(1)
    top = int(np.argmax(s))
    return s.reshape(h, w), naive_weight(q[top], int(np.argmin(dist[top])), bk, b), float(s[top])


def naive_saturate(x: float) -> float:
    return x if x <= 0.5 else 1.0 - 0.5 * math.exp(-(x - 0.5) / 0.5)


def naive_stitch_frame(maps: list[np.ndarray], starts: list[tuple[int, int]], scale: float, fh: int,
                       fw: int) -> np.ndarray:
    """Tiles placed at their starts scaled to the frame (rounded), blended by the loop re-derivation."""
    return naive_stitch(fh, fw, [(int(round(y * scale)), int(round(x * scale)), m)
                                 for (y, x), m in zip(starts, maps, strict=True)])


def naive_gaussian(m: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian, kernel 2·round(3σ)+1, border reflected (fedcba|abcdef), float64."""
    r = int(round(3 * sigma))
    x = np.arange(-r, r + 1)
    k = np.exp(-x * x / (2 * sigma * sigma))
    k /= k.sum()
    p = np.pad(m.astype(np.float64), r, mode="symmetric")
    rows = sum(k[i] * p[i:i + m.shape[0], :] for i in range(2 * r + 1))
    return sum(k[i] * rows[:, i:i + m.shape[1]] for i in range(2 * r + 1))


# ----------------------------------------------------------------------------- pure functions
def test_augmentation_tables_in_order() -> None:
    assert augmentations("none") == [(0, False)]
    assert augmentations("flips") == [(0, False), (0, True), (2, False), (2, True)]
    assert augmentations("rot90") == [(0, False), (1, False), (2, False), (3, False)]
    assert augmentations("dihedral") == [(0, False), (1, False), (2, False), (3, False),
                                         (0, True), (1, True), (2, True), (3, True)]


def test_transform_flips_then_turns_counter_clockwise_and_is_contiguous() -> None:
    img = np.arange(6).reshape(2, 3)  # [[0 1 2], [3 4 5]]
    assert transform(img, 0, False).tolist() == [[0, 1, 2], [3, 4, 5]]
    assert transform(img, 0, True).tolist() == [[2, 1, 0], [5, 4, 3]]
    assert transform(img, 1, False).tolist() == [[2, 5], [1, 4], [0, 3]]
    assert transform(img, 1, True).tolist() == [[0, 3], [1, 4], [2, 5]]  # flip, then turn
    out = transform(img, 3, False)
    assert out.tolist() == [[3, 0], [4, 1], [5, 2]]
    assert out.flags["C_CONTIGUOUS"]


def test_pose_angles_by_hand() -> None:
    assert pose_angles(10.0, 2) == [0.0, -5.0, 5.0, -10.0, 10.0]
    assert pose_angles(6.0, 3) == [0.0, -2.0, 2.0, -4.0, 4.0, -6.0, 6.0]
    assert pose_angles(0.0, 2) == [0.0]
    assert pose_angles(-3.0, 2) == [0.0]
    assert pose_angles(10.0, 0) == [0.0]
    assert pose_angles(10.0, -1) == [0.0]


def reflect101(i: int, n: int) -> int:
    if i < 0:
        return -i
    if i >= n:
        return 2 * (n - 1) - i
    return i


def test_rotate_by_a_quarter_and_a_half_turn_about_w_over_2_h_over_2_with_reflected_borders() -> None:
    img = np.arange(16, dtype=np.float32).reshape(4, 4) * 3 + 1
    assert rotate(img, 0) is img
    # 90° about (2, 2): destination (x, y) reads source (4 − y, x)
    want = np.array([[img[x, reflect101(4 - y, 4)] for x in range(4)] for y in range(4)])
    np.testing.assert_array_equal(rotate(img, 90.0), want)
    # -90°: destination (x, y) reads source (y, 4 − x)
    want = np.array([[img[reflect101(4 - x, 4), y] for x in range(4)] for y in range(4)])
    np.testing.assert_array_equal(rotate(img, -90.0), want)
    wide = np.arange(24, dtype=np.float32).reshape(4, 6) ** 1.5
    # 180° about (3, 2): destination (x, y) reads source (6 − x, 4 − y)
    want = np.array([[wide[reflect101(4 - y, 4), reflect101(6 - x, 6)] for x in range(6)] for y in range(4)])
    np.testing.assert_allclose(rotate(wide, 180.0), want, rtol=1e-6)


def test_rotate_interpolates_bilinearly() -> None:
    yy, xx = np.mgrid[0:16, 0:16].astype(np.float32)
    ramp = 5.0 * xx + 2.0 * yy
    out = rotate(ramp, 30.0)
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    # source of destination (x, y): rotate back by 30° about (8, 8) (image y axis points down)
    sx = c * (xx - 8) - s * (yy - 8) + 8
    sy = s * (xx - 8) + c * (yy - 8) + 8
    inside = (sx >= 0) & (sx <= 15) & (sy >= 0) & (sy <= 15)
    np.testing.assert_allclose(out[inside], (5.0 * sx + 2.0 * sy)[inside], atol=7 / 32)  # 1/32 px grid


def test_fit_square_area_when_shrinking_cubic_otherwise_and_identity_at_size() -> None:
    img = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3) * 4
    assert fit_square(img, 4) is img
    small = fit_square(img, 2)
    want = img.astype(np.float64).reshape(2, 2, 2, 2, 3).mean((1, 3))
    np.testing.assert_array_equal(small, np.round(want).astype(np.uint8))
    # one side equal to the size, the other larger: still the area filter (pairs of columns averaged)
    wide = np.zeros((2, 4, 3), np.uint8)
    wide[:, :, 0] = [[0, 40, 80, 120], [200, 160, 100, 60]]
    np.testing.assert_array_equal(fit_square(wide, 2)[..., 0], [[20, 100], [180, 80]])
    # one side smaller: cubic
    tall = np.zeros((4, 2, 3), np.uint8)
    tall[:, :, 1] = [[0, 200], [50, 10], [255, 0], [30, 90]]
    got = fit_square(tall, 4)
    np.testing.assert_array_equal(got, cv2.resize(tall, (4, 4), interpolation=cv2.INTER_CUBIC))
    assert not np.array_equal(got, cv2.resize(tall, (4, 4), interpolation=cv2.INTER_AREA))
    up = np.array([[[0, 0, 0], [255, 255, 255]], [[255, 255, 255], [0, 0, 0]]], np.uint8)
    got = fit_square(up, 4)
    np.testing.assert_array_equal(got, cv2.resize(up, (4, 4), interpolation=cv2.INTER_CUBIC))
    assert not np.array_equal(got, cv2.resize(up, (4, 4), interpolation=cv2.INTER_AREA))


def test_image_score_max_and_top_mean_by_hand() -> None:
    m = np.array([[1.0, 9.0, 3.0, 4.0], [7.0, 2.0, 8.0, 0.0]], np.float32)
    assert image_score(m, "max", 0.5) == 9.0
    assert image_score(m, "top_mean", 0.5) == pytest.approx((9 + 8 + 7 + 4) / 4)
    assert image_score(m, "top_mean", 0.3) == pytest.approx((9 + 8) / 2)  # round(2.4) = 2
    assert image_score(m, "top_mean", 0.45) == pytest.approx((9 + 8 + 7 + 4) / 4)  # round(3.6) = 4
    assert image_score(m, "top_mean", 0.01) == 9.0  # at least one cell
    assert isinstance(image_score(m, "top_mean", 0.5), float)


def test_saturate_values() -> None:
    assert saturate(0.25) == 0.25
    assert saturate(0.5) == 0.5
    assert saturate(1.0) == pytest.approx(1 - 0.5 * math.exp(-1.0), rel=1e-12)
    assert saturate(2.0) == pytest.approx(1 - 0.5 * math.exp(-3.0), rel=1e-12)
    assert saturate(0.6) == pytest.approx(1 - 0.5 * math.exp(-0.2), rel=1e-12)
    assert type(saturate(0.7)) is float
    arr = saturate(np.array([0.0, 0.4, 0.5, 0.75, 3.0]))
    assert arr.dtype == np.float32
    np.testing.assert_allclose(arr, [naive_saturate(v) for v in (0.0, 0.4, 0.5, 0.75, 3.0)], rtol=1e-6)


def test_wants_tiles_boundaries() -> None:
    on = PatchCoreParams(tiling="on", tile_size=100)
    assert not wants_tiles((50, 100, 3), on)
    assert wants_tiles((50, 101, 3), on)
    assert wants_tiles((101, 50), on)
    off = PatchCoreParams(tiling="off", tile_size=64)
    assert not wants_tiles((5000, 5000, 3), off)
    auto = PatchCoreParams(tiling="auto", tile_size=100, tile_trigger=2.5)
    assert not wants_tiles((10, 250, 3), auto)
    assert wants_tiles((10, 251, 3), auto)
    assert not wants_tiles((200, 101, 3), auto)


def test_to_frame_blends_the_master_where_the_image_half_covers() -> None:
    img = (np.arange(4 * 6 * 3).reshape(4, 6, 3) * 4 % 250).astype(np.uint8)
    img -= img % 2  # even values: the half-pixel means are integers
    master = np.full((4, 6, 3), 101, np.uint8)
    master[..., 1] = 37
    pose = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.0]])  # half a pixel to the right
    got = to_frame(img, pose, master)
    f = img.astype(np.float64)
    warped = np.empty_like(f)
    warped[:, 1:] = 0.5 * f[:, :-1] + 0.5 * f[:, 1:]
    warped[:, 0] = 0.5 * f[:, 0]
    cover = np.ones((4, 6, 1))
    cover[:, 0] = 0.5
    # premultiplied: the warped image is already weighted by its bilinear cover, the master fills the rest
    want = np.floor(warped + master * (1 - cover) + 0.5)
    assert got.dtype == np.uint8 and got.shape == img.shape
    np.testing.assert_array_equal(got, want.astype(np.uint8))
    # a white part on a white reference stays white at a half-covered edge (was 192 before the fix)
    white = np.full((4, 6, 3), 255, np.uint8)
    np.testing.assert_array_equal(to_frame(white, pose, white), white)
    # fully outside: the master
    far = np.array([[1.0, 0.0, 50.0], [0.0, 1.0, 0.0]])
    np.testing.assert_array_equal(to_frame(img, far, master), master)


def test_from_frame_is_the_inverse_warp_with_zero_outside() -> None:
    amap = np.arange(4 * 6, dtype=np.float32).reshape(4, 6) + 1
    pose = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.0]])  # image x -> reference x + 0.5
    got = from_frame(amap, pose)
    want = np.empty((4, 6))
    want[:, :-1] = 0.5 * amap[:, :-1] + 0.5 * amap[:, 1:]
    want[:, -1] = 0.5 * amap[:, -1]
    assert got.shape == (4, 6)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    down = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])  # image y -> reference y + 1
    got = from_frame(amap, down)
    np.testing.assert_allclose(got[:3], amap[1:])
    np.testing.assert_array_equal(got[3], 0)


# ----------------------------------------------------------------------------- scoring methods
def rand(*shape: int, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).standard_normal(shape).astype(np.float32) * scale)


def test_score_grids_global_exact_is_nearest_distance_and_eq7_of_the_top_patch() -> None:
    det = detector(reweight_neighbours=3)
    g, bank = rand(4, 8, 8, seed=1, scale=0.1), rand(40, 4, seed=2, scale=0.1)
    raw, weight = det._score_grids([g], bank, (64, 64, 3))
    s, want_w, top = naive_global(g.numpy(), bank.numpy(), 3)
    assert top < 1.0  # the eq. 7 factor is taken even when every distance is below 1
    np.testing.assert_allclose(raw, resize_map(s.astype(np.float32), (64, 64)), rtol=1e-4, atol=1e-5)
    assert weight == pytest.approx(want_w, rel=1e-5)
    assert weight != pytest.approx(1.0)


def test_score_grids_exact_leave_one_out_searches_only_the_allowed_rows() -> None:
    det = detector(reweight_neighbours=2)
    g, bank = rand(3, 8, 8, seed=3), rand(30, 3, seed=4)
    allowed = torch.zeros(30, dtype=torch.bool)
    allowed[::3] = True
    raw, weight = det._score_grids([g], bank, (64, 64), allowed=allowed)
    s, want_w, _ = naive_global(g.numpy(), bank.numpy()[allowed.numpy()], 2)
    np.testing.assert_allclose(raw, resize_map(s.astype(np.float32), (64, 64)), rtol=1e-4, atol=1e-5)
    assert weight == pytest.approx(want_w, rel=1e-5)


@pytest.mark.parametrize("with_allowed", [False, True])
def test_score_grids_ivf_renumbers_the_winner_among_the_allowed_rows(with_allowed: bool) -> None:
    det = detector(reweight_neighbours=3, search="ivf", ivf_list_size=16, ivf_probes=8)
    g, raw_bank = rand(4, 8, 8, seed=5), rand(64, 4, seed=6)
    order, index = build_index(raw_bank, 16)
    bank = raw_bank[order]
    allowed = None
    rows = np.ones(64, bool)
    if with_allowed:
        allowed = torch.from_numpy(np.random.default_rng(7).random(64) < 0.5)
        rows = allowed.numpy()
    raw, weight = det._score_grids([g], bank, (64, 64), index=index, allowed=allowed)
    s, want_w, _ = naive_global(g.numpy(), bank.numpy()[rows], 3)  # probes >= lists: exact
    np.testing.assert_allclose(raw, resize_map(s.astype(np.float32), (64, 64)), rtol=1e-4, atol=1e-5)
    assert weight == pytest.approx(want_w, rel=1e-5)
    if with_allowed:  # the factor over the whole bank is another one
        assert want_w != pytest.approx(naive_global(g.numpy(), bank.numpy(), 3)[1], rel=1e-3)


def naive_local(g: np.ndarray, local: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
    k, d, h, w = local.shape
    dist = np.full((h, w), np.inf)
    idx = np.zeros((h, w), int)
    for i in range(h):
        for j in range(w):
            for kk in range(k):
                for a in range(max(0, i - r), min(h, i + r + 1)):
                    for b in range(max(0, j - r), min(w, j + r + 1)):
                        v = np.sqrt(((g[:, i, j] - local[kk, :, a, b]) ** 2).sum())
                        if v < dist[i, j]:
                            dist[i, j], idx[i, j] = v, kk * h * w + a * w + b
    return dist, idx


@pytest.mark.parametrize(("alignment", "radius", "masked"), [("none", 3, False), ("rigid", 1, False),
                                                              ("rigid", 1, True)])
def test_score_grids_local_memory_radius_mask_and_eq7_support(alignment: str, radius: int, masked: bool) -> None:
    det = detector(reweight_neighbours=3)
    det.alignment = alignment
    g = rand(3, 8, 8, seed=8)
    local = rand(2, 3, 8, 8, seed=9)
    cells = np.ones((8, 8), bool)
    if masked:
        cells[:, 4:] = False
        det.cells = torch.from_numpy(cells)
    raw, weight = det._score_grids([g], torch.zeros(0, 3), (64, 64), local=local)
    dist, idx = naive_local(g.numpy().astype(np.float64), local.numpy().astype(np.float64), radius)
    dist = dist * cells
    np.testing.assert_allclose(raw, resize_map(dist.astype(np.float32), (64, 64)), rtol=1e-4, atol=1e-5)
    support = local.numpy().astype(np.float64).transpose(0, 2, 3, 1).reshape(-1, 3)
    top = int(np.argmax(dist))
    q = g.numpy().astype(np.float64).reshape(3, -1).T[top]
    assert weight == pytest.approx(naive_weight(q, int(idx.ravel()[top]), support, 3), rel=1e-5)


def test_score_grids_tiled_stitches_and_takes_eq7_of_the_tile_with_the_top_patch() -> None:
    det = detector(reweight_neighbours=3, tiling="on", tile_size=128, tile_overlap=0.25)
    shape = (200, 150, 3)  # tiles at rows 0, 72 and columns 0, 22; frame 100 × 75
    bank = rand(30, 4, seed=10)
    grids = [rand(4, 8, 8, seed=11 + k) for k in range(4)]
    grids[2] = grids[2] * 3.0  # the third tile holds the most anomalous patch
    raw, weight = det._score_grids(grids, bank, shape)
    naive = [naive_global(gr.numpy(), bank.numpy(), 3) for gr in grids]
    maps = [resize_map(s.astype(np.float32), (64, 64)).astype(np.float64) for s, _, _ in naive]
    want = naive_stitch_frame(maps, [(0, 0), (0, 22), (72, 0), (72, 22)], 0.5, 100, 75)
    assert raw.shape == (100, 75)
    np.testing.assert_allclose(raw, want, rtol=1e-4, atol=1e-5)
    assert max(t for _, _, t in naive) == naive[2][2]
    assert weight == pytest.approx(naive[2][1], rel=1e-5)
    with pytest.raises(ValueError):  # a tiled shape is always stitched: one grid does not cover it
        det._score_grids(grids[:1], bank, shape)


def test_stitch_places_tiles_at_the_scaled_starts() -> None:
    det = detector(tiling="on", tile_size=96, tile_overlap=0.5)
    shape = (97, 200)  # tile 96: rows 0, 1; columns 0, 48, 96, 104; scale 2/3; frame 65 × 133
    maps = [np.full((64, 64), float(k + 1), np.float32) for k in range(8)]
    maps = [m + np.linspace(0, 1, 64, dtype=np.float32)[None] * k for k, m in enumerate(maps)]
    got = det._stitch(maps, shape)
    starts = [(y, x) for y in (0, 1) for x in (0, 48, 96, 104)]
    want = naive_stitch_frame([m.astype(np.float64) for m in maps], starts, 64 / 96, 65, 133)
    assert got.shape == (65, 133)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def naive_mutual(g: np.ndarray, c: int) -> np.ndarray:
    d, h, w = g.shape
    out = np.full((h, w), np.inf)
    for i in range(h):
        for j in range(w):
            for a in range(h):
                for b in range(w):
                    if abs(a - i) <= c and abs(b - j) <= c:
                        continue
                    out[i, j] = min(out[i, j], np.sqrt(((g[:, i, j] - g[:, a, b]) ** 2).sum()))
    return out


def test_zero_shot_mutual_scores_exclusion_ceil_and_median_scale() -> None:
    det = detector(zero_shot_exclusion_px=9, layers=[2, 3])  # stride 8: ceil(9 / 8) = 2 cells
    g = rand(3, 7, 7, seed=20)
    raw, weight, scale = det._zero_shot([g], (64, 64, 3))
    s = naive_mutual(g.numpy().astype(np.float64), 2)
    assert weight == 1.0
    np.testing.assert_allclose(raw, resize_map(s.astype(np.float32), (64, 64)), rtol=1e-4, atol=1e-5)
    assert scale == pytest.approx(float(np.median(s)), rel=1e-5)  # 49 cells: the middle one
    det16 = detector(zero_shot_exclusion_px=16, layers=[2, 3])  # exactly 2 cells
    np.testing.assert_allclose(det16._zero_shot([g], (64, 64, 3))[0], raw)
    det8 = detector(zero_shot_exclusion_px=8, layers=[2, 3])  # 1 cell
    s1 = naive_mutual(g.numpy().astype(np.float64), 1)
    np.testing.assert_allclose(det8._zero_shot([g], (64, 64, 3))[0], resize_map(s1.astype(np.float32), (64, 64)),
                               rtol=1e-4, atol=1e-5)
    flat = torch.ones(3, 7, 7)
    assert det._zero_shot([flat], (64, 64))[2] == 1e-6


def test_zero_shot_tiled_stitches_and_takes_the_median_of_the_tile_medians() -> None:
    det = detector(zero_shot_exclusion_px=4, layers=[1, 2], tiling="on", tile_size=128, tile_overlap=0.25)
    shape = (200, 150, 3)
    grids = [rand(3, 5, 5, seed=30 + k, scale=1.0 + k) for k in range(4)]
    raw, weight, scale = det._zero_shot(grids, shape)
    ss = [naive_mutual(gr.numpy().astype(np.float64), 1) for gr in grids]
    meds = sorted(float(np.median(s)) for s in ss)
    maps = [resize_map(s.astype(np.float32), (64, 64)).astype(np.float64) for s in ss]
    np.testing.assert_allclose(raw, naive_stitch_frame(maps, [(0, 0), (0, 22), (72, 0), (72, 22)], 0.5, 100, 75),
                               rtol=1e-4, atol=1e-5)
    assert weight == 1.0
    assert scale == pytest.approx((meds[1] + meds[2]) / 2, rel=1e-5)


def loo_state(maps: list[np.ndarray], weights: list[float]) -> dict[str, np.ndarray]:
    return {"loo_maps": np.stack(maps).astype(np.float32), "loo_weights": np.asarray(weights, np.float32)}


def test_reference_threshold_median_worst_margin_and_floor() -> None:
    maps = []
    for k, peak in enumerate((2.0, 6.0, 4.0)):
        m = np.zeros((8, 8), np.float32)
        m[k, 3] = peak
        m[7, k] = peak / 2
        maps.append(m)
    weights = [0.5, 0.25, 1.0]  # products 1.0, 1.5, 4.0
    det = detector(smoothing_sigma=0.0, calibration_margin=1.5)
    det.state = loo_state(maps, weights)
    assert det._reference_threshold() == pytest.approx(1.5 * 1.5)
    det = detector(smoothing_sigma=0.0, calibration_margin=2.0, calibration_statistic="worst")
    det.state = loo_state(maps, weights)
    assert det._reference_threshold() == pytest.approx(2.0 * 4.0)
    # top_mean of 2 cells of 64 (round(0.03 · 64) = 2): (peak + peak/2) / 2
    det = detector(smoothing_sigma=0.0, calibration_margin=1.0, image_score="top_mean", top_fraction=0.03)
    det.state = loo_state(maps, weights)
    assert det._reference_threshold() == pytest.approx(float(np.median([1.5 * 0.5, 4.5 * 0.25, 3.0 * 1.0])))
    # smoothing σ = 1.5: the smoothed maxima
    det = detector(smoothing_sigma=1.5, calibration_margin=1.0)
    det.state = loo_state(maps, weights)
    sm = sorted(float(naive_gaussian(m, 1.5).max()) * w for m, w in zip(maps, weights, strict=True))
    assert det._reference_threshold() == pytest.approx(sm[1], rel=1e-5)
    det = detector(smoothing_sigma=0.0)
    det.state = loo_state([np.zeros((4, 4)), np.zeros((4, 4))], [1.0, 1.0])
    assert det._reference_threshold() == 1e-6


def test_finish_scales_by_the_reference_threshold_and_saturates() -> None:
    det = detector(smoothing_sigma=0.0)
    det.profile.decision.image_threshold = 0.5
    det.threshold = 2.0
    det.texture, det.augment, det.mode, det.alignment, det.state_sha256 = True, "flips", "global", "none", "abc"
    raw = np.zeros((64, 64), np.float32)
    raw[10, 20] = 5.0  # isolated hot pixel: x = 5·0.8/4 = 1.0
    raw[40, 40:43] = 1.5  # x = 0.3, below the region cut
    raw[50, 5] = -2.0  # a negative raw value maps to 0
    a = PatchCoreAnalysis(raw_map=raw, weight=0.8, zero_shot_scale=None, timings={"features": 0.25})
    d = det.finish(a, np.zeros((64, 64, 3), np.uint8))
    want = np.zeros((64, 64))
    want[10, 20] = naive_saturate(1.0)
    want[40, 40:43] = 0.3
    np.testing.assert_allclose(d.anomaly_map, want, rtol=1e-6, atol=1e-7)
    assert d.image_score == pytest.approx(naive_saturate(1.0), rel=1e-6)
    assert len(d.regions) == 1
    assert d.regions[0].mask.sum() == 1 and d.regions[0].mask[10, 20]
    assert d.timings == {"features": 0.25}
    assert d.extras == {"raw_threshold": 2.0, "zero_shot": False, "texture": True, "augment": "flips",
                        "memory": "global", "reweight": 0.8, "alignment": "none", "background_masked": False,
                        "state_sha256": "abc"}


def test_finish_zero_shot_threshold_smoothing_top_mean_and_resize() -> None:
    det = detector(smoothing_sigma=1.0, zero_shot_ratio=3.0, image_score="top_mean", top_fraction=0.05)
    det.cells = torch.ones(2, 2, dtype=torch.bool)
    det.threshold = 99.0  # not used in 0-shot
    rng = np.random.default_rng(40)
    raw = rng.random((64, 64)).astype(np.float32) * 2
    a = PatchCoreAnalysis(raw_map=raw, weight=1.0, zero_shot_scale=0.25)
    d = det.finish(a, np.zeros((32, 48, 3), np.uint8))
    t = 3.0 * 0.25
    sm = naive_gaussian(raw, 1.0)
    flat = np.sort(sm.ravel())
    top = flat[-round(0.05 * flat.size):].mean()
    assert d.image_score == pytest.approx(naive_saturate(top / (2 * t)), rel=1e-5)
    norm = np.where(sm / (2 * t) <= 0.5, sm / (2 * t), 1 - 0.5 * np.exp(-(sm / (2 * t) - 0.5) / 0.5))
    assert d.anomaly_map.shape == (32, 48)
    np.testing.assert_allclose(d.anomaly_map, resize_map(norm.astype(np.float32), (32, 48)), rtol=1e-4, atol=1e-5)
    assert d.extras["raw_threshold"] == pytest.approx(t)
    assert d.extras["zero_shot"] is True and d.extras["background_masked"] is True
    assert d.timings == {}
    # a map that is negative everywhere scores 0
    neg = PatchCoreAnalysis(raw_map=-np.ones((64, 64), np.float32), weight=1.0, zero_shot_scale=None)
    det.threshold = 1.0
    z = det.finish(neg, np.zeros((64, 64, 3), np.uint8))
    assert z.image_score == 0.0 and not z.regions
    np.testing.assert_array_equal(z.anomaly_map, 0)


# ----------------------------------------------------------------------------- second round (survivors)
def test_pose_angles_of_one_degree_and_rotate_of_a_colour_image() -> None:
    assert pose_angles(1.0, 2) == [0.0, -0.5, 0.5, -1.0, 1.0]
    assert pose_angles(0.5, 1) == [0.0, -0.5, 0.5]
    img = np.arange(4 * 4 * 3, dtype=np.float32).reshape(4, 4, 3)
    want = np.array([[img[x, reflect101(4 - y, 4)] for x in range(4)] for y in range(4)])
    np.testing.assert_array_equal(rotate(img, 90.0), want)


def test_fit_square_of_a_tall_image_whose_width_is_the_size_is_the_area_filter() -> None:
    tall = np.zeros((4, 2, 3), np.uint8)
    tall[:, :, 2] = [[0, 10], [40, 30], [100, 200], [60, 0]]
    np.testing.assert_array_equal(fit_square(tall, 2)[..., 2], [[20, 20], [80, 100]])


def test_saturate_computes_float32_input_in_float64() -> None:
    x = np.linspace(0.5, 3, 2001).astype(np.float32)
    d = x.astype(np.float64)
    want = np.where(d <= 0.5, d, 1 - 0.5 * np.exp(-(d - 0.5) / 0.5)).astype(np.float32)
    np.testing.assert_array_equal(saturate(x), want)


def test_reference_threshold_reads_the_image_score_mode() -> None:
    m = np.zeros((16, 16), np.float32)
    m[3, 3] = 8.0
    det = detector(smoothing_sigma=0.0, calibration_margin=1.0, image_score="max", top_fraction=0.5)
    det.state = loo_state([m, m * 2, m * 3], [1.0, 1.0, 1.0])
    assert det._reference_threshold() == 16.0  # the maxima 8, 16, 24, not a top-half mean


def test_score_grids_of_a_tie_keeps_the_first_tiles_eq7_factor() -> None:
    det = detector(reweight_neighbours=1, tiling="on", tile_size=128, tile_overlap=0.25)
    bank = torch.tensor([[0.0, 0.0], [10.0, 0.0], [10.0, 1.0], [100.0, 0.0]])
    qs = [(0.0, 1.0), (0.0, 5.0), (10.0, 6.0), (10.0, 2.0)]  # distances 1, 5, 5, 1
    grids = [torch.tensor(q).reshape(2, 1, 1) for q in qs]
    _, weight = det._score_grids(grids, bank, (200, 150, 3))
    ds = np.array([5.0, math.sqrt(125.0)])  # tile 1's patch: m* = (0, 0), its neighbour (10, 0)
    assert weight == pytest.approx(1 - np.exp(ds[0]) / np.exp(ds).sum(), rel=1e-6)
    ds2 = np.array([5.0, 6.0])  # tile 2's: m* = (10, 1), its neighbour (10, 0)
    assert weight != pytest.approx(1 - np.exp(ds2[0]) / np.exp(ds2).sum(), rel=1e-3)


def test_one_untiled_grid_of_a_non_square_image_is_its_map_as_it_is() -> None:
    det = detector(reweight_neighbours=0, zero_shot_exclusion_px=8, layers=[2, 3])
    g, bank = rand(3, 6, 6, seed=50), rand(20, 3, seed=51)
    raw, weight = det._score_grids([g], bank, (48, 80, 3))
    s, _, _ = naive_global(g.numpy(), bank.numpy(), 0)
    assert raw.shape == (64, 64) and weight == 1.0
    np.testing.assert_allclose(raw, resize_map(s.astype(np.float32), (64, 64)), rtol=1e-4, atol=1e-5)
    zraw, _, _ = det._zero_shot([g], (48, 80, 3))
    assert zraw.shape == (64, 64)
    np.testing.assert_allclose(zraw, resize_map(naive_mutual(g.numpy().astype(np.float64), 1).astype(np.float32),
                                                (64, 64)), rtol=1e-4, atol=1e-5)
    tiled = detector(tiling="on", tile_size=128)
    with pytest.raises(ValueError):  # a tiled shape is always stitched: one grid does not cover it
        tiled._zero_shot([g], (200, 150, 3))
