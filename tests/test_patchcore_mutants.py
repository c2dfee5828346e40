"""Known answers that kill the mutants mutmut left alive in PatchCore's features, index and tiling.

Each expected value is re-derived here in float64 (loops or numpy), never by calling the product
function being tested. The mutants they kill are listed in bench/mutation.md.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import skimage.color
import torch

from inspector.detect.patchcore.features import colour_grid, embed
from inspector.detect.patchcore.index import SEED_POOL, ListIndex, build_index, kmeans, probe_nearest
from inspector.detect.patchcore.tiling import Stitcher, blend_window, tile_grid, tile_starts
from tests.support.reference import naive_stitch

LAB_RANGE = np.array([100.0, 128.0, 128.0])


# ----------------------------------------------------------------------------- features
def naive_bilinear(a: np.ndarray, h: int, w: int) -> np.ndarray:
    """Half-pixel bilinear resize of ``(C, hi, wi)`` to ``(C, h, w)`` (align_corners=False), by loops."""
    c, hi, wi = a.shape
    out = np.zeros((c, h, w))

    def taps(i: int, n_in: int, n_out: int) -> tuple[int, int, float]:
        src = max(0.0, (i + 0.5) * n_in / n_out - 0.5)
        i0 = min(int(math.floor(src)), n_in - 1)
        return i0, min(i0 + 1, n_in - 1), src - i0

    for i in range(h):
        y0, y1, ly = taps(i, hi, h)
        for j in range(w):
            x0, x1, lx = taps(j, wi, w)
            out[:, i, j] = ((1 - ly) * ((1 - lx) * a[:, y0, x0] + lx * a[:, y0, x1])
                            + ly * ((1 - lx) * a[:, y1, x0] + lx * a[:, y1, x1]))
    return out


def test_embed_layer_l2_divides_each_layers_cell_vector_by_its_norm_before_upsampling() -> None:
    rng = np.random.default_rng(10)
    fine = 0.05 * rng.standard_normal((2, 3, 4, 4))  # norms well below 1: a clamp at 1 would show
    coarse = 0.05 * rng.standard_normal((2, 2, 2, 2))
    fine[1, :, 0, 0] = 0.0  # a zero cell stays zero (no NaN)
    got = embed([torch.from_numpy(fine).float(), torch.from_numpy(coarse).float()], p=1, layer_l2=True).numpy()
    assert got.shape == (2, 5, 4, 4)
    for b in range(2):
        want_fine = np.zeros((3, 4, 4))
        for i in range(4):
            for j in range(4):
                n = math.sqrt(float((fine[b, :, i, j] ** 2).sum()))
                want_fine[:, i, j] = fine[b, :, i, j] / n if n > 0 else 0.0
        unit = np.zeros((2, 2, 2))
        for i in range(2):
            for j in range(2):
                unit[:, i, j] = coarse[b, :, i, j] / math.sqrt(float((coarse[b, :, i, j] ** 2).sum()))
        np.testing.assert_allclose(got[b, :3], want_fine, atol=1e-5)
        np.testing.assert_allclose(got[b, 3:], naive_bilinear(unit, 4, 4), atol=1e-5)
    assert np.isfinite(got).all() and np.all(got[1, :3, 0, 0] == 0.0)


def test_embed_upsamples_a_coarse_ramp_with_half_pixel_bilinear() -> None:
    fine = torch.zeros(1, 1, 6, 9)
    coarse = np.arange(2 * 3, dtype=np.float64).reshape(1, 1, 2, 3) ** 2  # not constant, not linear
    got = embed([fine, torch.from_numpy(coarse).float()], p=1)[0, 1:].numpy()
    np.testing.assert_allclose(got, naive_bilinear(coarse[0], 6, 9), atol=1e-5)


def test_embed_without_features_names_the_problem() -> None:
    with pytest.raises(ValueError, match="^embed needs at least one feature map$"):
        embed([], 3)


def test_colour_grid_of_white_is_l_100_exactly() -> None:
    white = np.full((16, 16, 3), 255, np.uint8)
    got = colour_grid([white], (2, 2), 1)[0].numpy()
    np.testing.assert_allclose(got[0], 1.0, atol=1e-4)  # L* = 100, scaled by its range 100
    np.testing.assert_allclose(got[1:], 0.0, atol=1e-4)


def test_colour_grid_area_averages_each_cell() -> None:
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[:] = (30, 160, 90)
    rgb[6:8] = (220, 200, 20)  # the last two rows of each 8-px cell: not seen by a centre sample
    rgb[14:16] = (220, 200, 20)
    got = colour_grid([rgb], (2, 2), 1)[0].numpy()
    lab = skimage.color.rgb2lab(rgb.astype(np.float64) / 255.0) / LAB_RANGE
    want = lab.reshape(2, 8, 2, 8, 3).mean((1, 3)).transpose(2, 0, 1)  # cell means of L*a*b*
    np.testing.assert_allclose(got, want, atol=2e-3)


# ----------------------------------------------------------------------------- index: k-means
def naive_kmeans(x: np.ndarray, n: int, iters: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """k-means++ seeding on a random pool of SEED_POOL·n rows, then Lloyd in float64, by loops.

    The random draws are the documented sequence on one ``torch.Generator(seed)``: the pool
    (``randperm``), the first seed (``randint``), each next seed (``multinomial`` of d²/Σd²; ``randint``
    when every pool row is already a seed's duplicate). Ties go to the lowest centroid index."""
    x64 = x.astype(np.float64)
    m = len(x64)
    gen = torch.Generator().manual_seed(seed)
    pool_rows = torch.randperm(m, generator=gen)[:SEED_POOL * n].numpy() if m > SEED_POOL * n else np.arange(m)
    pool = x64[pool_rows]
    seeds = [int(torch.randint(len(pool), (1,), generator=gen))]
    d2 = ((pool - pool[seeds[0]]) ** 2).sum(1)
    for _ in range(1, n):
        total = float(d2.sum())
        if total > 0:
            nxt = int(torch.multinomial(torch.from_numpy((d2 / total).astype(np.float32)), 1, generator=gen))
        else:
            nxt = int(torch.randint(len(pool), (1,), generator=gen))
        seeds.append(nxt)
        d2 = np.minimum(d2, ((pool - pool[nxt]) ** 2).sum(1))
    cents = pool[seeds].copy()

    def assign() -> np.ndarray:
        return np.array([int(np.argmin(((cents - row) ** 2).sum(1))) for row in x64])

    for _ in range(max(1, iters)):
        a = assign()
        for k in range(n):
            if (a == k).any():  # an emptied cluster keeps its centroid
                cents[k] = x64[a == k].mean(0)
    return cents, assign()


KMEANS_CASES = [  # rows, clusters, dims, scale, iters, seed (None: the defaults 8 and 0)
    (200, 4, 3, 0.02, 3, 2),  # a subsampled pool; every d² < 1 and Σd² < 1
    (48, 3, 2, 1.0, 2, 5),  # exactly SEED_POOL·n rows: the whole bank is the pool
    (20, 2, 2, 1.0, 2, 7),  # fewer rows than SEED_POOL·n
    (300, 6, 2, 1.0, None, None),  # not converged after 8 iterations: the default count shows
    (120, 5, 3, 1.0, 1, 3),  # a single Lloyd iteration
]


@pytest.mark.parametrize("m, n, d, scale, iters, seed", KMEANS_CASES)
def test_kmeans_is_seeded_kmeans_plus_plus_then_lloyd(m: int, n: int, d: int, scale: float,
                                                      iters: int | None, seed: int | None) -> None:
    x = (scale * np.random.default_rng(m + n).standard_normal((m, d))).astype(np.float32)
    kwargs = {} if iters is None else {"iters": iters, "seed": seed}
    cents, assign = kmeans(torch.from_numpy(x), n, **kwargs)
    want_c, want_a = naive_kmeans(x, n, 8 if iters is None else iters, 0 if seed is None else seed)
    np.testing.assert_allclose(cents.numpy(), want_c, atol=1e-6 * max(1.0, scale))
    np.testing.assert_array_equal(assign.numpy(), want_a)


def test_kmeans_with_fewer_distinct_rows_than_clusters() -> None:
    x = np.repeat(np.array([[1.0, 2.0], [4.0, -1.0]], np.float32), [9, 7], axis=0)
    cents, assign = kmeans(torch.from_numpy(x), 6, iters=2, seed=4)
    want_c, want_a = naive_kmeans(x, 6, 2, 4)  # seeds 3.. come from randint: Σd² is 0
    np.testing.assert_allclose(cents.numpy(), want_c, atol=1e-6)
    np.testing.assert_array_equal(assign.numpy(), want_a)
    assert np.isfinite(cents.numpy()).all()  # the empty clusters keep their seeds, no 0/0


def test_kmeans_moves_a_singleton_cluster_onto_its_row() -> None:
    # data and seed picked (by searching with naive_kmeans) so that after an iteration one cluster
    # holds a single row far from its previous centroid: its new centroid must be that row
    x = np.random.default_rng(33).standard_normal((8, 2)).astype(np.float32)
    cents, assign = kmeans(torch.from_numpy(x), 3, iters=3, seed=0)
    want_c, want_a = naive_kmeans(x, 3, 3, 0)
    np.testing.assert_allclose(cents.numpy(), want_c, atol=1e-6)
    np.testing.assert_array_equal(assign.numpy(), want_a)


def test_kmeans_cluster_count_limits() -> None:
    rng = np.random.default_rng(12)
    x = rng.standard_normal((5, 3)).astype(np.float32)
    cents, assign = kmeans(torch.from_numpy(x), 1)
    np.testing.assert_allclose(cents.numpy()[0], x.astype(np.float64).mean(0), atol=1e-6)
    assert assign.tolist() == [0] * 5
    cents, assign = kmeans(torch.from_numpy(x), 5)  # one cluster per row: each row is its own centroid
    np.testing.assert_allclose(cents.numpy()[assign.numpy()], x, atol=1e-6)
    assert sorted(assign.tolist()) == [0, 1, 2, 3, 4]
    for bad in (0, 6):
        with pytest.raises(ValueError, match=f"^kmeans: cannot make {bad} clusters of 5 rows$"):
            kmeans(torch.from_numpy(x), bad)


# ----------------------------------------------------------------------------- index: build_index
@pytest.mark.parametrize("seed", [None, 3])
def test_build_index_is_kmeans_of_ceil_m_over_list_size_grouped_stably(seed: int | None) -> None:
    x = np.random.default_rng(13).standard_normal((300, 2)).astype(np.float32)
    order, index = build_index(torch.from_numpy(x), 50, **({} if seed is None else {"seed": seed}))
    want_c, want_a = naive_kmeans(x, 6, 8, 0 if seed is None else seed)  # ceil(300 / 50) = 6 lists
    np.testing.assert_allclose(index.centroids.numpy(), want_c, atol=1e-6)
    assert order.tolist() == np.argsort(want_a, kind="stable").tolist()  # by list, rows in bank order
    assert index.offsets.tolist() == [0, *np.cumsum(np.bincount(want_a, minlength=6)).tolist()]


def test_build_index_list_counts_at_the_extremes() -> None:
    x = torch.from_numpy(np.random.default_rng(14).standard_normal((6, 2)).astype(np.float32))
    order, index = build_index(x, 6)
    assert index.lists == 1 and index.offsets.tolist() == [0, 6] and order.tolist() == list(range(6))
    for size in (1, 0):  # a row per list (0 is read as 1)
        order, index = build_index(x, size)
        assert index.lists == 6 and index.offsets.tolist() == list(range(7))
        np.testing.assert_allclose(index.centroids.numpy(), x.numpy()[order.numpy()], atol=1e-6)
    two = np.repeat(np.array([[1.0, 2.0], [4.0, -1.0]], np.float32), [9, 7], axis=0)
    order, index = build_index(torch.from_numpy(two), 3)  # 6 lists, only two of them filled
    _, want_a = naive_kmeans(two, 6, 8, 0)
    assert index.offsets.tolist() == [0, *np.cumsum(np.bincount(want_a, minlength=6)).tolist()]
    assert order.tolist() == np.argsort(want_a, kind="stable").tolist()
    same = torch.ones(6, 2)  # identical rows: every row in list 0, the other lists empty
    order, index = build_index(same, 2)
    assert index.lists == 3 and index.offsets.tolist() == [0, 6, 6, 6] and order.tolist() == list(range(6))


# ----------------------------------------------------------------------------- index: probe_nearest
def hand_index() -> tuple[torch.Tensor, ListIndex]:
    """Rows 0, 11 | 20, 30 | (empty) | 40 on a line; centroids 0 | 20 | 50 | 40 (not the means)."""
    grouped = torch.tensor([[0.0, 0.0], [11.0, 0.0], [20.0, 0.0], [30.0, 0.0], [40.0, 0.0]])
    cents = torch.tensor([[0.0, 0.0], [20.0, 0.0], [50.0, 0.0], [40.0, 0.0]])
    return grouped, ListIndex(centroids=cents, offsets=torch.tensor([0, 2, 4, 4, 5]))


def test_probe_nearest_by_hand_searches_only_the_probed_lists() -> None:
    grouped, index = hand_index()
    query = torch.tensor([[12.0, 0.0], [48.0, 0.0]])
    # 12 is nearest to centroid 20: one probe finds 20 (8 away), not 11 (1 away) in list 0.
    # 48 is nearest to centroid 50, whose list is empty: the exact search finds 40.
    d, r = probe_nearest(query, grouped, index, 1)
    assert r.tolist() == [2, 4] and d.tolist() == pytest.approx([8.0, 8.0], abs=1e-5)
    d, r = probe_nearest(query, grouped, index, 2)  # lists {1, 0} and {2, 3}
    assert r.tolist() == [1, 4] and d.tolist() == pytest.approx([1.0, 8.0], abs=1e-5)
    d, r = probe_nearest(query, grouped, index, 0)  # read as one probe
    assert r.tolist() == [2, 4]


def test_probe_nearest_exact_fallback_breaks_ties_to_the_lowest_row() -> None:
    # the query's only list is empty; every row is 5 from the origin: the lowest allowed row wins,
    # as in the probed lists (min) and the reference search (argmin)
    grouped = torch.tensor([[0.0, 5.0], [3.0, 4.0], [4.0, 3.0], [5.0, 0.0], [0.0, -5.0]])
    index = ListIndex(centroids=torch.tensor([[1.0, 1.0], [9.0, 9.0]]), offsets=torch.tensor([0, 0, 5]))
    allowed = torch.tensor([False, True, True, True, True])
    d, r = probe_nearest(torch.zeros(2, 2), grouped, index, 1, allowed)
    assert r.tolist() == [1, 1] and d.tolist() == pytest.approx([5.0, 5.0], abs=1e-6)


def test_probe_nearest_single_row_and_empty_banks() -> None:
    one = ListIndex(centroids=torch.tensor([[3.0, 4.0]]), offsets=torch.tensor([0, 1]))
    d, r = probe_nearest(torch.zeros(1, 2), torch.tensor([[3.0, 4.0]]), one, 1)
    assert r.tolist() == [0] and d.tolist() == pytest.approx([5.0], abs=1e-6)
    empty = ListIndex(centroids=torch.zeros(1, 2), offsets=torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="^the memory bank is empty$"):
        probe_nearest(torch.zeros(0, 2), torch.zeros(0, 2), empty, 1)  # even with no query rows
    with pytest.raises(ValueError, match="^the memory bank is empty$"):
        probe_nearest(torch.zeros(0, 2), torch.tensor([[3.0, 4.0]]), one, 1, torch.zeros(1, dtype=torch.bool))


# ----------------------------------------------------------------------------- tiling
def test_blend_window_values_by_hand() -> None:
    s, c = math.sin(math.pi / 8), math.sin(3 * math.pi / 8)  # t = 1/8, 3/8, 5/8, 7/8
    want = np.outer([s, c, c, s], [s, c, c, s])
    np.testing.assert_allclose(blend_window(4), want, rtol=1e-6)
    np.testing.assert_allclose(blend_window(3, floor=0.9)[0], [0.9 * 0.9, 0.9, 0.9 * 0.9], rtol=1e-6)  # sin(π/6) < 0.9


def test_stitcher_blends_tiles_of_different_shapes_and_drops_what_overhangs() -> None:
    rng = np.random.default_rng(15)
    height, width = 7, 11  # not square: rows and columns are clipped against their own side
    tiles = [(0, 0, rng.random((5, 5))), (2, 3, rng.random((5, 7))), (4, 8, rng.random((3, 5))),
             (1, 6, rng.random((7, 3))), (3, 0, rng.random((4, 4)))]  # non-square sides odd, see bench/mutation.md
    st = Stitcher(height, width)
    for y0, x0, m in tiles:
        st.add(y0, x0, m.astype(np.float32))
    got = st.result()
    assert got.shape == (height, width) and got.dtype == np.float32  # two float32 maps, a float32 result
    np.testing.assert_allclose(got, naive_stitch(height, width, tiles), rtol=1e-5, atol=1e-6)


def test_tile_starts_small_steps_and_exact_fit() -> None:
    assert tile_starts(10, 4, 0.9) == [0, 1, 2, 3, 4, 5, 6]  # 4·0.1 px rounds down to 0: a step of 1 px
    assert tile_starts(7, 1, 0.0) == [0, 1, 2, 3, 4, 5, 6]
    assert tile_starts(512, 512, 0.25) == [0]  # a tile the size of the image
    assert tile_grid(4, 4, 4, 0.5) == [(0, 0)]


# ----------------------------------------------------------------------------- memory (nearest, reweight, coreset, ...)
def test_nearest_defaults_to_one_neighbour_over_several_query_chunks() -> None:
    from inspector.detect.patchcore.memory import QUERY_CHUNK, nearest

    rng = np.random.default_rng(40)
    q = rng.standard_normal((QUERY_CHUNK + 76, 3))  # more rows than one chunk, fewer dims than rows
    b = rng.standard_normal((7, 3))
    d, i = nearest(torch.from_numpy(q).float(), torch.from_numpy(b).float())
    full = np.sqrt(((q[:, None, :] - b[None]) ** 2).sum(-1))
    assert d.shape == (len(q), 1) and i.shape == (len(q), 1)
    np.testing.assert_array_equal(i[:, 0].numpy(), full.argmin(1))
    np.testing.assert_allclose(d[:, 0].numpy(), full.min(1), atol=1e-4)
    d, i = nearest(torch.zeros(1, 2), torch.tensor([[3.0, 4.0]]), 3)  # one bank row: k shrinks to 1
    assert i.tolist() == [[0]] and float(d[0, 0]) == pytest.approx(5.0, abs=1e-6)
    with pytest.raises(ValueError, match="^the memory bank is empty$"):
        nearest(torch.zeros(1, 2), torch.zeros(0, 2))


def naive_reweight(test: np.ndarray, star: int, bank: np.ndarray, b: int) -> float:
    """Eq. 7's factor: 1 − e^{d₀} / Σ e^{dⱼ} over m* and its b nearest bank rows (m* first), float64."""
    support = np.argsort(np.linalg.norm(bank - bank[star], axis=1), kind="stable")[: b + 1]
    dist = np.linalg.norm(bank[support] - test, axis=1)
    return 1.0 - math.exp(dist[0]) / float(np.exp(dist).sum())


@pytest.mark.parametrize("rows, dims, b, star", [(12, 4, 1, 5), (2, 3, 3, 1), (9, 1, 2, 4), (10, 2, 3, 7)])
def test_reweight_small_banks_and_neighbourhoods(rows: int, dims: int, b: int, star: int) -> None:
    from inspector.detect.patchcore.memory import reweight

    rng = np.random.default_rng(41 + rows)
    bank = rng.standard_normal((rows, dims))
    test = rng.standard_normal(dims)
    got = reweight(torch.from_numpy(test).float(), star, torch.from_numpy(bank).float(), b)
    assert got == pytest.approx(naive_reweight(test, star, bank, b), rel=1e-5)


def naive_torch_greedy(x: np.ndarray, n: int, proj_dims: int, max_rounds: int, seed: int) -> list[int]:
    """Batched greedy k-centre in float64 on the documented random draws (torch.Generator(seed)):
    the projection (``randn(D, proj_dims) / √proj_dims``, only when D > proj_dims), the first row
    (``randint``); then each round adds the ⌈n / max_rounds⌉ rows farthest from all chosen so far."""
    m, dims = x.shape
    if n >= m:
        return list(range(m))
    gen = torch.Generator().manual_seed(seed)
    z = x.astype(np.float32).astype(np.float64)
    if dims > proj_dims:
        z = z @ (torch.randn(dims, proj_dims, generator=gen).double().numpy() / math.sqrt(proj_dims))
    per_round = max(1, math.ceil(n / max_rounds))
    chosen = [int(torch.randint(m, (1,), generator=gen))]
    mind = ((z - z[chosen[0]]) ** 2).sum(1)
    mind[chosen] = -np.inf
    while len(chosen) < n:
        take = min(per_round, n - len(chosen))
        new = np.argsort(-mind, kind="stable")[:take].tolist()  # farthest first
        chosen += new
        for i in new:
            mind = np.minimum(mind, ((z - z[i]) ** 2).sum(1))
        mind[chosen] = -np.inf
    return chosen


def naive_shares(n: int, sizes: list[int]) -> list[int]:
    """Largest remainder: ⌊n·s/Σs⌋ each, the rest one by one to the largest fractions (ties to the first)."""
    exact = [n * s / sum(sizes) for s in sizes]
    shares = [math.floor(e) for e in exact]
    for i in sorted(range(len(sizes)), key=lambda i: -(exact[i] - shares[i]))[: n - sum(shares)]:
        shares[i] += 1
    return shares


def naive_parts_greedy(x: np.ndarray, n: int, part_size: int, proj_dims: int, max_rounds: int, seed: int) -> list[int]:
    """The composable coreset: a random split (``randperm`` of Generator(seed)) into ⌈m / part_size⌉
    parts, each giving its largest-remainder share by greedy k-centre (seed + 1 + i, rounds / parts)."""
    m = len(x)
    parts = torch.randperm(m, generator=torch.Generator().manual_seed(seed)).tensor_split(-(-m // part_size))
    shares = naive_shares(n, [len(p) for p in parts])
    rounds = max(1, max_rounds // len(parts))
    out: list[int] = []
    for i, (p, k) in enumerate(zip(parts, shares, strict=True)):
        if k:
            rows = p.numpy()
            out += rows[naive_torch_greedy(x[rows], k, proj_dims, rounds, seed + 1 + i)].tolist()
    return out


def test_greedy_coreset_projects_with_the_seeded_generator_by_default() -> None:
    from inspector.detect.patchcore.memory import greedy_coreset

    x = np.random.default_rng(42).standard_normal((120, 70))  # 70 dims > 64: projected
    assert greedy_coreset(torch.from_numpy(x).float(), 9).tolist() == naive_torch_greedy(x, 9, 64, 1024, 0)
    y = np.random.default_rng(43).standard_normal((50, 6))  # as many dims as proj_dims: not projected
    assert greedy_coreset(torch.from_numpy(y).float(), 6, proj_dims=6, seed=2).tolist() == \
        naive_torch_greedy(y, 6, 6, 1024, 2)
    assert greedy_coreset(torch.from_numpy(y).float(), 50).tolist() == list(range(50))


def test_greedy_coreset_never_picks_a_row_twice_on_a_tight_set() -> None:
    from inspector.detect.patchcore.memory import greedy_coreset

    x = 0.01 * np.random.default_rng(45).standard_normal((40, 3))  # every squared distance ≪ 1
    got = greedy_coreset(torch.from_numpy(x).float(), 30, proj_dims=64, max_rounds=10).tolist()
    assert got == naive_torch_greedy(x, 30, 64, 10, 0) and len(set(got)) == 30


@pytest.mark.parametrize("candidates", [20, 9, 60])
def test_greedy_coreset_among_random_candidates(candidates: int) -> None:
    from inspector.detect.patchcore.memory import greedy_coreset

    x = np.random.default_rng(46).standard_normal((60, 5))
    got = greedy_coreset(torch.from_numpy(x).float(), 9, proj_dims=3, max_rounds=4, seed=4,
                         candidates=candidates).tolist()
    if 9 < candidates < 60:  # a random pool of that many rows (Generator(seed)), then greedy in it
        pool = torch.randperm(60, generator=torch.Generator().manual_seed(4))[:candidates].numpy()
        want = pool[naive_torch_greedy(x[pool], 9, 3, 4, 4)].tolist()
    else:  # the pool would hold every row, or no more than n: the plain selection
        want = naive_torch_greedy(x, 9, 3, 4, 4)
    assert got == want


def test_greedy_coreset_candidates_then_parts() -> None:
    from inspector.detect.patchcore.memory import greedy_coreset

    x = np.random.default_rng(49).standard_normal((60, 5))
    got = greedy_coreset(torch.from_numpy(x).float(), 9, proj_dims=3, max_rounds=8, seed=4, candidates=30,
                         part_size=12).tolist()
    pool = torch.randperm(60, generator=torch.Generator().manual_seed(4))[:30].numpy()
    assert got == pool[naive_parts_greedy(x[pool], 9, 12, 3, 8, 4)].tolist()  # the pool is split in parts


@pytest.mark.parametrize("m, n, part_size, max_rounds", [(40, 2, 10, 1024), (37, 30, 12, 10), (30, 5, 30, 1024),
                                                         (24, 12, 8, 1)])
def test_greedy_coreset_in_parts(m: int, n: int, part_size: int, max_rounds: int) -> None:
    from inspector.detect.patchcore.memory import greedy_coreset

    x = np.random.default_rng(47 + m).standard_normal((m, 4))
    got = greedy_coreset(torch.from_numpy(x).float(), n, proj_dims=64, max_rounds=max_rounds, seed=5,
                         part_size=part_size).tolist()
    if m > part_size:
        want = naive_parts_greedy(x, n, part_size, 64, max_rounds, 5)
    else:  # one part: the plain selection
        want = naive_torch_greedy(x, n, 64, max_rounds, 5)
    assert got == want and len(set(got)) == n


def test_mutual_scores_over_several_chunks_and_its_error() -> None:
    from inspector.detect.patchcore.memory import mutual_scores

    h = w = 48  # 2304 patches: more than two query chunks
    p = np.random.default_rng(48).standard_normal((h * w, 2))
    got = mutual_scores(torch.from_numpy(p).float(), h, w, 1).numpy()
    ii, jj = np.divmod(np.arange(h * w), w)
    for a in range(0, h * w, 97):  # a sample of rows, by brute force
        far = (np.abs(ii - ii[a]) > 1) | (np.abs(jj - jj[a]) > 1)
        assert got[a] == pytest.approx(np.linalg.norm(p[far] - p[a], axis=1).min(), abs=1e-4)
    tail = np.arange(h * w - 5, h * w)  # the last rows (the last chunk) too
    for a in tail:
        far = (np.abs(ii - ii[a]) > 1) | (np.abs(jj - jj[a]) > 1)
        assert got[a] == pytest.approx(np.linalg.norm(p[far] - p[a], axis=1).min(), abs=1e-4)
    with pytest.raises(ValueError, match="^30 patches do not form a 4x6 grid$"):
        mutual_scores(torch.zeros(30, 2), 4, 6, 1)


def test_local_nearest_breaks_ties_to_the_first_cell_and_returns_integer_indices() -> None:
    from inspector.detect.patchcore.memory import local_nearest

    h, w, r = 4, 5, 1
    bank = torch.ones(1, 2, h, w)  # every cell alike: each window's first cell (top-left) wins
    dist, idx = local_nearest(torch.ones(2, h, w), bank, r)
    assert idx.dtype == torch.long
    want = [[max(0, i - r) * w + max(0, j - r) for j in range(w)] for i in range(h)]
    assert idx.tolist() == want and float(dist.max()) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match=r"^query \(3, 4, 5\) does not match the bank's grid \(2, 4, 5\)$"):
        local_nearest(torch.ones(3, h, w), bank, r)
