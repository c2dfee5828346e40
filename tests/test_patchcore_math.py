"""PatchCore's pure functions against naive float64 re-derivations written here, not in the product."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from inspector.detect.patchcore.detector import augmentations, image_score, saturate, transform, wants_tiles
from inspector.detect.patchcore.features import aggregate, embed, to_patches
from inspector.detect.patchcore.memory import (
    greedy_coreset,
    local_nearest,
    mutual_scores,
    nearest,
    place_agreement,
    proportional_shares,
    reweight,
)
from inspector.detect.patchcore.tiling import Stitcher, blend_window, tile_grid, tile_starts
from inspector.params.patchcore import PatchCoreParams


def naive_aggregate(f: np.ndarray, p: int) -> np.ndarray:
    """Mean over the p×p neighbourhood cells that exist (eq. 3), by loops."""
    _, c, h, w = f.shape
    out = np.zeros_like(f, dtype=np.float64)
    r = p // 2
    for i in range(h):
        for j in range(w):
            win = f[0, :, max(0, i - r):i + r + 1, max(0, j - r):j + r + 1]
            out[0, :, i, j] = win.reshape(c, -1).mean(1)
    return out


def test_aggregate_is_the_mean_over_existing_neighbours() -> None:
    rng = np.random.default_rng(0)
    f = rng.standard_normal((1, 5, 7, 6)).astype(np.float32)
    for p in (1, 3, 5):
        got = aggregate(torch.from_numpy(f), p).numpy()
        np.testing.assert_allclose(got, naive_aggregate(f, p), atol=1e-5)


def test_embed_upsamples_coarse_layers_to_the_fine_grid_and_concatenates_in_order() -> None:
    fine = torch.arange(2 * 8 * 8, dtype=torch.float32).reshape(1, 2, 8, 8)
    coarse = torch.full((1, 3, 4, 4), 7.0)
    out = embed([fine, coarse], p=1)
    assert out.shape == (1, 5, 8, 8)
    torch.testing.assert_close(out[:, :2], fine)  # first layer untouched, first
    torch.testing.assert_close(out[:, 2:], torch.full((1, 3, 8, 8), 7.0))  # a constant stays constant
    rows = to_patches(out)
    assert rows.shape == (64, 5)
    # row (i, j) holds cell (i, j): row 8*2+3 is cell (2, 3)
    torch.testing.assert_close(rows[8 * 2 + 3, :2], fine[0, :, 2, 3])


def test_nearest_matches_brute_force() -> None:
    rng = np.random.default_rng(1)
    q = rng.standard_normal((300, 16))
    b = rng.standard_normal((500, 16))
    d, i = nearest(torch.from_numpy(q).float(), torch.from_numpy(b).float(), k=3)
    full = np.sqrt(((q[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    want_i = np.argsort(full, axis=1)[:, :3]
    np.testing.assert_array_equal(i.numpy(), want_i)
    np.testing.assert_allclose(d.numpy(), np.take_along_axis(full, want_i, 1), rtol=1e-4, atol=1e-4)


def test_reweight_is_eq7() -> None:
    rng = np.random.default_rng(2)
    bank = rng.standard_normal((40, 4))
    test = rng.standard_normal(4) * 3
    star = int(np.argmin(np.linalg.norm(bank - test, axis=1)))
    b = 3
    # N_b(m*): the b+1 nearest bank rows of m* (m* itself first, at distance 0)
    support = np.argsort(np.linalg.norm(bank - bank[star], axis=1))[: b + 1]
    assert support[0] == star
    dist = np.linalg.norm(bank[support] - test, axis=1)
    want = 1.0 - math.exp(dist[0]) / np.exp(dist).sum()
    got = reweight(torch.from_numpy(test).float(), star, torch.from_numpy(bank).float(), b)
    assert got == pytest.approx(want, rel=1e-5)
    assert reweight(torch.from_numpy(test).float(), star, torch.from_numpy(bank).float(), 0) == 1.0


def naive_greedy(x: np.ndarray, n: int, first: int) -> list[int]:
    chosen = [first]
    mind = ((x - x[first]) ** 2).sum(1)
    for _ in range(n - 1):
        i = int(np.argmax(mind))
        chosen.append(i)
        mind = np.minimum(mind, ((x - x[i]) ** 2).sum(1))
    return chosen


def test_greedy_coreset_is_exact_k_centre_when_rounds_allow() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((400, 6))
    n = 25
    got = greedy_coreset(torch.from_numpy(x).float(), n, proj_dims=64, max_rounds=1024, seed=5).tolist()
    first = int(torch.randint(400, (1,), generator=torch.Generator().manual_seed(5)))
    assert got == naive_greedy(x, n, first)


def test_partitioned_coreset_is_greedy_within_each_random_part() -> None:
    rng = np.random.default_rng(6)
    x = rng.standard_normal((250, 5))
    n, part, seed = 30, 100, 2
    got = greedy_coreset(torch.from_numpy(x).float(), n, proj_dims=64, max_rounds=1024, seed=seed,
                         part_size=part).tolist()
    # the same random split (3 parts of 84, 83, 83 rows), shares 10/10/10 of 30, greedy in each part
    perm = torch.randperm(250, generator=torch.Generator().manual_seed(seed)).numpy()
    parts = [perm[:84], perm[84:167], perm[167:]]
    want: list[int] = []
    for i, rows in enumerate(parts):
        first = int(torch.randint(len(rows), (1,), generator=torch.Generator().manual_seed(seed + 1 + i)))
        want += [int(rows[j]) for j in naive_greedy(x[rows], 10, first)]
    assert got == want
    assert len(set(got)) == n


def test_proportional_shares_sum_to_n_by_largest_remainder() -> None:
    assert proportional_shares(30, [84, 83, 83]) == [10, 10, 10]
    assert proportional_shares(10, [5, 3, 2]) == [5, 3, 2]
    assert proportional_shares(7, [1, 1, 1]) == [3, 2, 2]  # 7/3 each: the one remainder goes to the first
    assert proportional_shares(5, [10, 30]) == [1, 4]  # exact 1.25 / 3.75: the larger remainder (0.75) wins
    assert proportional_shares(0, [4, 4]) == [0, 0]


def test_greedy_coreset_covers_every_cluster() -> None:
    rng = np.random.default_rng(4)
    centres = np.array([[0, 0], [50, 0], [0, 50], [50, 50]], float)
    x = np.concatenate([c + rng.standard_normal((100, 2)) for c in centres])
    for rounds in (1024, 2):  # exact and batched
        idx = greedy_coreset(torch.from_numpy(x).float(), 4, proj_dims=64, max_rounds=rounds).numpy()
        if rounds == 1024:
            assert sorted(set(idx // 100)) == [0, 1, 2, 3]
        assert len(set(idx.tolist())) == 4


def test_mutual_scores_match_brute_force_with_exclusion() -> None:
    rng = np.random.default_rng(5)
    h, w, d = 5, 6, 3
    p = rng.standard_normal((h * w, d))
    for excl in (0, 1, 2):
        got = mutual_scores(torch.from_numpy(p).float(), h, w, excl).numpy()
        want = np.empty(h * w)
        for a in range(h * w):
            best = np.inf
            for b in range(h * w):
                if abs(a // w - b // w) <= excl and abs(a % w - b % w) <= excl:
                    continue
                best = min(best, np.linalg.norm(p[a] - p[b]))
            want[a] = best
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_tile_starts_cover_with_overlap() -> None:
    assert tile_starts(100, 200, 0.25) == [0]
    assert tile_starts(1000, 400, 0.25) == [0, 300, 600]
    assert tile_starts(1000, 400, 0.5) == [0, 200, 400, 600]
    for length, tile, ov in ((2592, 512, 0.25), (4000, 640, 0.1), (513, 512, 0.3)):
        s = tile_starts(length, tile, ov)
        assert s[0] == 0 and s[-1] == length - tile
        assert all(b - a <= tile * (1 - ov) + 1 for a, b in zip(s, s[1:]))
    assert tile_grid(300, 500, 200, 0.0) == [(0, 0), (0, 200), (0, 300), (100, 0), (100, 200), (100, 300)]


def test_stitching_is_seamless_for_a_map_the_tiles_agree_on() -> None:
    h, w, tile = 700, 900, 256
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = 0.01 * xx + 0.02 * yy  # what every tile sees, consistently
    st = Stitcher(h, w)
    for y, x in tile_grid(h, w, tile, 0.25):
        st.add(y, x, ramp[y:y + tile, x:x + tile])
    np.testing.assert_allclose(st.result(), ramp, rtol=1e-5, atol=1e-4)
    win = blend_window(8)
    assert win.argmax() in (27, 28, 35, 36)  # centre cells highest
    assert win.min() > 0


def test_image_score_modes() -> None:
    m = np.zeros((10, 10), np.float32)
    m[0, :5] = [5, 4, 3, 2, 1]
    assert image_score(m, "max", 0.01) == 5.0
    assert image_score(m, "top_mean", 0.03) == pytest.approx(4.0)  # mean of 3 highest cells


def test_augmentations_are_distinct_dihedral_copies() -> None:
    img = np.arange(2 * 3 * 3).reshape(2, 3, 3).astype(np.uint8)
    img = np.pad(img, ((0, 1), (0, 0), (0, 0)))  # 3x3, not symmetric
    copies = [transform(img, t, f).tobytes() for t, f in augmentations("dihedral")]
    assert len(set(copies)) == 8
    assert augmentations("none") == [(0, False)]
    assert transform(img, 1, False)[0, 0].tolist() == img[0, -1].tolist()  # np.rot90: counter-clockwise


def test_tiling_decision() -> None:
    p = PatchCoreParams(tile_size=512, tile_trigger=3.0)
    assert not wants_tiles((1024, 1024, 3), p)
    assert wants_tiles((2048, 1600, 3), p)
    assert not wants_tiles((4000, 4000, 3), PatchCoreParams(tiling="off"))
    assert wants_tiles((600, 600, 3), PatchCoreParams(tiling="on", tile_size=512))


def test_params_are_validated() -> None:
    with pytest.raises(ValueError, match="odd"):
        PatchCoreParams(patch_neighbourhood=4)
    with pytest.raises(ValueError, match="layers"):
        PatchCoreParams(layers=[3, 2])
    assert PatchCoreParams().feature_stride == 4
    assert PatchCoreParams(layers=[2, 3]).feature_stride == 8


def test_local_nearest_searches_only_the_window_around_the_same_place() -> None:
    rng = np.random.default_rng(6)
    k, d, h, w = 3, 4, 6, 7
    bank = rng.standard_normal((k, d, h, w))
    query = rng.standard_normal((d, h, w))
    for r in (0, 1, 2):
        dist, idx = local_nearest(torch.from_numpy(query).float(), torch.from_numpy(bank).float(), r)
        for i in range(h):
            for j in range(w):
                best, arg = np.inf, None
                for kk in range(k):
                    for ii in range(max(0, i - r), min(h, i + r + 1)):
                        for jj in range(max(0, j - r), min(w, j + r + 1)):
                            dd = np.linalg.norm(query[:, i, j] - bank[kk, :, ii, jj])
                            if dd < best:
                                best, arg = dd, kk * h * w + ii * w + jj
                assert dist[i, j].item() == pytest.approx(best, rel=1e-4, abs=1e-4)
                assert idx[i, j].item() == arg


def test_local_memory_finds_a_missing_part_that_global_memory_accepts() -> None:
    # every reference has a distinctive patch at (2, 2); the test shows background there
    d, h, w = 2, 5, 5
    ref = np.zeros((d, h, w))
    ref[:, 2, 2] = [5.0, 5.0]
    bank = torch.from_numpy(np.stack([ref, ref])).float()
    query = torch.zeros(d, h, w)
    local, _ = local_nearest(query, bank, 1)
    glob, _ = nearest(query.reshape(d, -1).T, bank.permute(0, 2, 3, 1).reshape(-1, d), 1)
    assert local[2, 2].item() == pytest.approx(0.0)  # background exists in the window around (2, 2)
    assert glob.max().item() == 0.0
    local0, _ = local_nearest(query, bank, 0)
    assert local0[2, 2].item() == pytest.approx(np.sqrt(50.0))  # same place only: the part is missing
    assert local0.sum().item() == pytest.approx(np.sqrt(50.0))


def test_pose_angles_are_symmetric_steps_after_the_identity() -> None:
    from inspector.detect.patchcore.detector import pose_angles

    assert pose_angles(20.0, 2) == [0.0, -10.0, 10.0, -20.0, 20.0]
    assert pose_angles(0.0, 3) == [0.0] and pose_angles(15.0, 1) == [0.0, -15.0, 15.0]


def test_colour_grid_of_a_flat_colour_is_its_scaled_lab() -> None:
    import skimage.color

    from inspector.detect.patchcore.features import colour_grid

    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[:, :16] = (200, 40, 40)  # left half red, right half grey
    rgb[:, 16:] = (128, 128, 128)
    got = colour_grid([rgb], (4, 4), 1)[0].numpy()
    scale = np.array([100.0, 128.0, 128.0])
    red = skimage.color.rgb2lab(np.array([[[200, 40, 40]]], np.float64) / 255.0)[0, 0] / scale
    grey = skimage.color.rgb2lab(np.array([[[128, 128, 128]]], np.float64) / 255.0)[0, 0] / scale
    np.testing.assert_allclose(got[:, :, :2].reshape(3, -1).T, np.tile(red, (8, 1)), atol=3e-3)
    np.testing.assert_allclose(got[:, :, 2:].reshape(3, -1).T, np.tile(grey, (8, 1)), atol=3e-3)
    # p = 3: a cell next to the edge averages its existing neighbours (eq. 3's aggregation)
    agg = colour_grid([rgb], (4, 4), 3)[0].numpy()
    np.testing.assert_allclose(agg[:, 0, 1], (2 * red + grey) / 3 * 1.0, atol=3e-3)


def test_saturate_is_linear_to_the_cut_then_keeps_order_below_one() -> None:
    assert saturate(0.0) == 0.0 and saturate(0.25) == 0.25 and saturate(0.5) == 0.5
    assert saturate(1.0) == pytest.approx(1 - 0.5 * math.exp(-1))  # 0.8161
    assert saturate(3.0) == pytest.approx(1 - 0.5 * math.exp(-5))
    xs = [0.5, 0.5001, 0.7, 1.0, 2.0, 10.0]
    ys = [saturate(x) for x in xs]
    assert all(a < b for a, b in zip(ys, ys[1:], strict=False)) and ys[-1] < 1.0
    assert (saturate(0.5 + 1e-6) - 0.5) / 1e-6 == pytest.approx(1.0, rel=1e-3)  # slope 1 at the cut
    grid = saturate(np.array([[0.1, 0.5], [1.0, 3.0]]))  # maps: the same function, cell by cell
    np.testing.assert_allclose(grid, [[0.1, 0.5], [1 - 0.5 * math.exp(-1), 1 - 0.5 * math.exp(-5)]], rtol=1e-6)


def _naive_agreement(g: np.ndarray, radius: int, q: float, stride: int) -> float:
    """place_agreement re-derived in float64 with loops (no subsampling of the other shots)."""
    k, _, h, w = g.shape
    loc, anyw = [], []
    for i in range(k):
        ld, gd = [], []
        for y in range(0, h, stride):
            for x in range(0, w, stride):
                v = g[i, :, y, x]
                near = [np.linalg.norm(v - g[j, :, yy, xx]) for j in range(k) if j != i
                        for yy in range(max(0, y - radius), min(h, y + radius + 1))
                        for xx in range(max(0, x - radius), min(w, x + radius + 1))]
                far = [np.linalg.norm(v - g[j, :, yy, xx]) for j in range(k) if j != i
                       for yy in range(h) for xx in range(w)]
                ld.append(min(near))
                gd.append(min(far))
        loc.append(np.quantile(ld, q))
        anyw.append(np.quantile(gd, q))
    return float(np.median(loc) / np.median(anyw))


def test_place_agreement_matches_a_naive_leave_one_out_rederivation() -> None:
    rng = np.random.default_rng(3)
    g = rng.normal(size=(3, 4, 7, 6))
    got = place_agreement(torch.tensor(g, dtype=torch.float32), radius=1, quantile=0.75, stride=2)
    assert got == pytest.approx(_naive_agreement(g, 1, 0.75, 2), rel=1e-5)
    # an odd number of shots: the median is the middle shot's, not a mean of two
    g5 = rng.normal(size=(5, 3, 5, 5))
    got5 = place_agreement(torch.tensor(g5, dtype=torch.float32), radius=2, quantile=0.9, stride=1)
    assert got5 == pytest.approx(_naive_agreement(g5, 2, 0.9, 1), rel=1e-5)
    with pytest.raises(ValueError, match="at least 2"):
        place_agreement(torch.zeros(1, 2, 3, 3), radius=1)


def test_place_agreement_is_one_for_shots_that_agree_in_place_and_large_for_shifted_ones() -> None:
    rng = np.random.default_rng(4)
    base = rng.normal(size=(6, 16, 16))
    same = np.stack([base + 0.01 * rng.normal(size=base.shape) for _ in range(4)])
    # the same pattern, rolled by 5 cells: every patch exists in the others, but far from its place
    moved = np.stack([np.roll(base, 5 * i, axis=2) + 0.01 * rng.normal(size=base.shape) for i in range(4)])
    a_same = place_agreement(torch.tensor(same, dtype=torch.float32), radius=1)
    a_moved = place_agreement(torch.tensor(moved, dtype=torch.float32), radius=1)
    assert a_same == pytest.approx(1.0, abs=0.02)
    assert a_moved > 20  # the nearest cell within 1 is a random patch; anywhere it is the same one


def test_place_agreement_bounds_the_rows_it_searches() -> None:
    rng = np.random.default_rng(5)
    g = torch.tensor(rng.normal(size=(3, 4, 8, 8)), dtype=torch.float32)
    full = place_agreement(g, radius=1, stride=2, max_rows=10_000)
    assert full == pytest.approx(_naive_agreement(g.double().numpy(), 1, 0.99, 2), rel=1e-5)
    # fewer rows anywhere can only lengthen the distances anywhere: the ratio falls
    assert place_agreement(g, radius=1, stride=2, max_rows=16) < full
    # only the first max_shots shots are compared
    more = torch.cat([g, torch.tensor(rng.normal(size=(2, 4, 8, 8)), dtype=torch.float32)])
    assert place_agreement(more, radius=1, stride=2, max_shots=3) == pytest.approx(full, rel=1e-6)
