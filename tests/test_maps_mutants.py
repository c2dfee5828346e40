"""Known answers for the shared map helpers (``inspector.detect.maps``), written for the mutants of
``bench/mutate.sh inspector/detect/maps.py`` that the method tests left alive.

Expected values are by hand or from independent code: block means and the half-pixel bilinear
loop of ``test_fade_known`` for the resizes, scipy's Gaussian filter (half-sample reflection) for
the smoothing, scipy's 8-connected labelling for the regions, and pixel lists for the polygons.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi

from inspector.detect.maps import fuse_maps, gaussian_smooth, normalise_map, polygon_mask, regions_from_map, resize_map
from tests.test_fade_known import naive_bilinear


# ------------------------------------------------------------------------------ resize_map
def test_resize_map_shrinking_both_sides_is_the_block_mean() -> None:
    m = np.arange(6 * 12, dtype=np.float64).reshape(6, 12) ** 1.5
    got = resize_map(m, (2, 3))  # 3× and 4× smaller: area averaging
    want = m.reshape(2, 3, 3, 4).mean(axis=(1, 3))
    assert got.dtype == np.float32 and got.shape == (2, 3)
    np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize("size", [(6, 4), (4, 12), (2, 12), (9, 4), (3, 24)])
def test_resize_map_otherwise_is_half_pixel_bilinear(size: tuple[int, int]) -> None:
    """Not smaller on both sides (one side kept, or grown): bilinear, not area — at a 3× shrink of
    one side bilinear samples the middle pixel while area would take the mean of three."""
    m = (np.arange(6 * 12, dtype=np.float64).reshape(6, 12) % 7) ** 2
    got = resize_map(m, size)
    assert got.shape == size and got.dtype == np.float32
    np.testing.assert_allclose(got, naive_bilinear(m, size), atol=1e-4)


def test_resize_map_same_size_is_the_map_as_float32() -> None:
    m = np.array([[0.25, 1.0 / 3.0, 2.0]], dtype=np.float64)
    got = resize_map(m, (1, 3))
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, m.astype(np.float32))


# ------------------------------------------------------------------------------ normalise_map
def test_normalise_map_by_hand() -> None:
    m = np.array([[-1.0, 2.0, 3.5], [5.0, 7.0, 9.0]])
    got = normalise_map(m, 2.0, 7.0)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, [[0.0, 0.0, 0.3], [0.6, 1.0, 1.0]], atol=1e-7)


def test_normalise_map_with_an_empty_span_is_a_step_at_low() -> None:
    """high = low: span 1e-12, so anything above low by more than that is 1, the rest 0."""
    got = normalise_map(np.array([1.0, 2.0, 2.0 + 1e-6, 2.5]), 2.0, 2.0)  # float32 keeps the 1e-6
    np.testing.assert_array_equal(got, [0.0, 0.0, 1.0, 1.0])
    assert normalise_map(np.array([3.0]), 4.0, 2.0)[0] == 0.0  # a reversed range does not divide by < 0


# ------------------------------------------------------------------------------ fuse_maps
def test_fuse_maps_weighted_and_equal_means_by_hand() -> None:
    a = np.array([[0.0, 1.0], [2.0, 4.0]])
    b = np.array([[4.0, 1.0], [0.0, 8.0]])
    got = fuse_maps([a, b], [1.0, 3.0])
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, [[3.0, 1.0], [0.5, 7.0]], atol=1e-6)
    np.testing.assert_allclose(fuse_maps([a, b]), [[2.0, 1.0], [1.0, 6.0]], atol=1e-6)
    np.testing.assert_allclose(fuse_maps([a, b, b]), [[8 / 3, 1.0], [2 / 3, 20 / 3]], atol=1e-6)
    np.testing.assert_array_equal(fuse_maps([a]), a.astype(np.float32))
    with pytest.raises(ValueError, match=r"^fuse_maps needs at least one map$"):
        fuse_maps([])


# ------------------------------------------------------------------------------ gaussian_smooth
@pytest.mark.parametrize("sigma", [0.7, 1.3, 2.0])
def test_gaussian_smooth_is_a_reflected_gaussian_of_radius_round_3_sigma(sigma: float) -> None:
    rng = np.random.default_rng(0)
    m = rng.random((23, 31))
    m[0, 0] = 5.0  # a hot corner: the border rule shows
    got = gaussian_smooth(m, sigma)
    radius = int(round(3 * sigma))
    want = ndi.gaussian_filter(m, sigma, mode="reflect", truncate=radius / sigma)  # reflect = edge pixel repeated
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_gaussian_smooth_off_for_zero_sigma() -> None:
    m = np.array([[0.0, 1.0], [3.0, 2.0]])
    for sigma in (0.0, -1.0):
        got = gaussian_smooth(m, sigma)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, m)


# ------------------------------------------------------------------------------ polygon_mask
def test_polygon_mask_by_hand() -> None:
    """Vertices rounded to pixels, edges included; size is (height, width)."""
    got = polygon_mask([(2.4, 3.6), (7.0, 4.0), (7.2, 6.0), (2.0, 5.51)], (9, 11))
    want = np.zeros((9, 11), bool)
    want[4:7, 2:8] = True
    assert got.dtype == bool
    np.testing.assert_array_equal(got, want)
    tri = polygon_mask([(0, 0), (4, 0), (0, 4)], (5, 6))
    want_tri = np.array([[x + y <= 4 for x in range(6)] for y in range(5)])
    np.testing.assert_array_equal(tri, want_tri)


# ------------------------------------------------------------------------------ regions_from_map
def _naive_regions(amap: np.ndarray, threshold: float, min_area: int) -> list[tuple]:
    labels, n = ndi.label(amap >= threshold, structure=np.ones((3, 3)))
    out = []
    for i in range(1, n + 1):
        ys, xs = np.nonzero(labels == i)
        if len(ys) >= max(min_area, 1):
            out.append((float(amap[ys, xs].max()), (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1),
                        len(ys), labels == i))
    return sorted(out, key=lambda t: -t[0])


def _map() -> np.ndarray:
    amap = np.zeros((12, 16), np.float32)
    amap[1:3, 1:4] = 0.6  # 6 px
    amap[2, 2] = 0.7
    amap[3, 4] = 0.5  # touches the first one diagonally only: the same region (8-connected)
    amap[8:11, 10:15] = 0.9  # 15 px, the best
    amap[6, 0] = 0.5  # exactly at the threshold: kept, 1 px
    amap[0, 15] = 0.49  # just under: not a region
    return amap


@pytest.mark.parametrize("min_area", [0, 1, 7, 8])
def test_regions_match_scipy_labelling(min_area: int) -> None:
    amap = _map()
    got = regions_from_map(amap, 0.5, min_area)
    want = _naive_regions(amap, 0.5, min_area)
    assert [r.score for r in got] == pytest.approx([w[0] for w in want])
    assert [r.box for r in got] == [w[1] for w in want]
    assert [r.area_px for r in got] == [w[2] for w in want]
    for r, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(r.mask, w[3])
        assert r.label == "anomaly"


def test_regions_by_hand() -> None:
    got = regions_from_map(_map(), 0.5, 7, label="stain")
    assert [(r.score, r.box, r.area_px, r.label) for r in got] == [
        (pytest.approx(0.9), (10, 8, 15, 11), 15, "stain"),
        (pytest.approx(0.7), (1, 1, 5, 4), 7, "stain"),  # the 6 px block + its diagonal neighbour
    ]
    assert regions_from_map(_map(), 0.95) == []
    assert [r.area_px for r in regions_from_map(_map(), 0.5)] == [15, 7, 1]  # min_area 0 keeps 1 px
