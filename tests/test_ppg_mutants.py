"""PPG (inspector/detect/ppg.py) known answers that pin the dtypes, boundaries and orderings.

Each test names the mutmut survivors it kills (bench/mutation.md, "PPG"). Expected values are worked
out by hand on tiny arrays or re-derived in plain float64 here.
"""

from __future__ import annotations

import math

import numpy as np

from inspector.detect.ppg import (
    cosine_to,
    even_sample,
    extreme_components,
    extreme_region,
    negative_points,
    positive_points,
    spaced_selection,
)


# ------------------------------------------------------------------------------ extreme_region
def test_extreme_region_threshold_is_inclusive_and_relative_to_the_peak():
    # peak 2.0, rel 0.5 → threshold 1.0 (not 0.5 / 2.0 = 0.25); the pixel exactly at 1.0 is in
    amap = np.array([[2.0, 1.0, 0.5, 0.3]], np.float32)
    got = extreme_region(amap, 0.5)
    assert got.dtype == np.bool_
    assert got.tolist() == [[True, True, False, False]]
    # rel 1.0 keeps exactly the peak pixel(s)
    assert extreme_region(np.array([[0.5, 0.5, 0.25]], np.float32), 1.0).tolist() == [[True, True, False]]  # ER 20, 21


def test_extreme_region_compares_in_float32():
    # 0.8 - 1e-12 is below 0.8 in float64 but rounds to float32(0.8): the map is read as float32
    amap = np.array([[1.0, 0.8 - 1e-12, 0.79]], np.float64)
    assert extreme_region(amap, 0.8).tolist() == [[True, True, False]]  # ER 3, 5


def test_extreme_region_of_empty_flat_and_non_finite_maps_is_a_boolean_zero_mask():
    empty = extreme_region(np.zeros((0, 3), np.float32), 0.5)  # no max() on an empty map
    assert empty.shape == (0, 3) and empty.dtype == np.bool_  # ER 8
    for amap in (np.zeros((2, 3), np.float32), -np.ones((2, 3), np.float32),
                 np.array([[np.inf, 1.0, 0.0]], np.float32), np.array([[np.nan, 1.0, 0.0]], np.float32)):
        got = extreme_region(amap, 0.5)
        assert got.dtype == np.bool_ and got.shape == amap.shape and not got.any()  # ER 17, 19


# ------------------------------------------------------------------------------ extreme_components
def test_extreme_components_order_by_peak_then_larger_area_not_by_label():
    amap = np.zeros((5, 12), np.float32)
    amap[0, 0] = 0.9  # label 1: 1 px, peak 0.9
    amap[2, 3:5] = 1.0  # label 2: 2 px, peak 1.0
    amap[4, 8:11] = 1.0  # label 3: 3 px, peak 1.0 (tie on peak: larger first)
    ext = amap > 0.5
    comps = extreme_components(ext, amap, 1, 10)
    firsts = [tuple(int(v) for v in np.argwhere(c)[0]) for c in comps]
    assert firsts == [(4, 8), (2, 3), (0, 0)]  # EC 33, 36
    assert [int(c.sum()) for c in comps] == [3, 2, 1]
    # equal peak and equal area: the first in raster order
    amap2 = np.zeros((3, 7), np.float32)
    amap2[0, 4:6] = 1.0
    amap2[2, 0:2] = 1.0
    comps2 = extreme_components(amap2 > 0.5, amap2, 1, 10)
    assert [tuple(int(v) for v in np.argwhere(c)[0]) for c in comps2] == [(0, 4), (2, 0)]


def test_extreme_components_are_8_connected():
    amap = np.zeros((4, 4), np.float32)
    amap[0, 0], amap[1, 1], amap[2, 2] = 1.0, 0.9, 0.8  # a diagonal: one 8-connected component
    comps = extreme_components(amap > 0.5, amap, 1, 10)
    assert len(comps) == 1 and int(comps[0].sum()) == 3  # EC 3 (crashes)


# ------------------------------------------------------------------------------ spaced_selection
def test_spaced_selection_reads_integer_scores_and_narrow_coordinates_as_float64():
    # uint8 coordinates: (0 - 20)² must be 400, not (236² mod 256) = 144 < 13² = 169
    coords = np.array([[0, 0], [0, 20], [0, 3]], np.uint8)
    scores = np.array([3, 2, 1])  # integer scores: -inf is written into the work copy
    got = spaced_selection(coords, scores, 3, 13.0)
    assert got.dtype == np.int64 and got.tolist() == [0, 1]  # (0, 3) is 3 px from (0, 0); SS 8, 10, 16, 18
    low = spaced_selection(coords, scores, 3, 13.0, lowest=True)
    assert low.tolist() == [2, 1]  # (0, 3) first, removing (0, 0); (0, 20) is 17 px away


def test_spaced_selection_empty_choice_is_int64():
    got = spaced_selection(np.array([[0, 0], [0, 1]]), np.array([1.0, 0.5]), 0, 2.0)
    assert got.dtype == np.int64 and got.tolist() == []  # SS 58, 60
    got = spaced_selection(np.zeros((0, 2)), np.zeros(0), 3, 2.0)
    assert got.dtype == np.int64 and got.tolist() == []


# ------------------------------------------------------------------------------ positive_points
def test_positive_points_read_the_map_as_float32_and_return_float32():
    amap = np.zeros((3, 4), np.float64)
    amap[1, 1], amap[1, 3] = 1.0, 1.0 + 1e-12  # equal in float32: the first in raster order wins
    comp = amap > 0.5
    pts = positive_points(comp, amap, 1, 1.0)
    assert pts.dtype == np.float32 and pts.tolist() == [[1.0, 1.0]]  # PP 5, 7, 17
    none = positive_points(comp, amap, 0, 1.0)  # k = 0: an empty (0, 2) float32 set
    assert none.shape == (0, 2) and none.dtype == np.float32


# ------------------------------------------------------------------------------ cosine_to
def _naive_cosine(f, r) -> list[float]:
    r = [float(v) for v in np.ravel(r)]
    nr = math.sqrt(sum(v * v for v in r))
    out = []
    for row in f:
        row = [float(v) for v in row]
        dot = sum(a * b for a, b in zip(row, r))
        out.append(dot / max(math.sqrt(sum(a * a for a in row)) * max(nr, 1e-12), 1e-12))
    return out


def test_cosine_to_computes_in_float64_whatever_the_input_dtype():
    f32 = np.array([[1.0, 1.0], [1.0, 2.0], [0.1, 0.7]], np.float32)
    r32 = np.array([1.0, 3.0], np.float32)
    want = _naive_cosine(f32.astype(np.float64), r32.astype(np.float64))
    for f, r in ((f32, r32.astype(np.float64)), (f32.astype(np.float64), r32), (f32, r32)):
        got = cosine_to(f, r)
        assert got.dtype == np.float64
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=0)  # CT 3, 5, 9, 11


def test_cosine_to_flattens_a_row_reference():
    f = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]])
    got = cosine_to(f, np.array([[3.0, 4.0]]))  # a (1, D) mean, e.g. mean(axis=0, keepdims=True)
    assert got.shape == (3,)  # CT 7
    np.testing.assert_allclose(got, [0.6, 0.8, 1.0], rtol=1e-15)


# ------------------------------------------------------------------------------ negative_points
def test_negative_points_are_float32_even_when_empty():
    ring = np.array([[2, 3], [3, 2], [4, 3]])
    feats = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    neg = negative_points(ring, feats, np.array([1.0, 0.0]), 1, 0.0)
    assert neg.dtype == np.float32 and neg.tolist() == [[2.0, 3.0]]  # NP 29
    for empty in (negative_points(ring, feats, np.array([1.0, 0.0]), 0, 0.0),
                  negative_points(ring[:0], feats[:0], np.array([1.0, 0.0]), 2, 0.0)):
        assert empty.shape == (0, 2) and empty.dtype == np.float32  # NP 7, 9


def test_negative_points_of_an_empty_list_ring():
    neg = negative_points([], [], np.array([1.0, 0.0]), 2, 5.0)  # len() == 0: no cosine, no indexing
    assert neg.shape == (0, 2) and neg.dtype == np.float32  # NP 1


def test_even_sample_rounds_the_evenly_spaced_positions():
    rows = np.arange(10)[:, None]
    assert even_sample(rows, 7)[:, 0].tolist() == [0, 2, 3, 4, 6, 8, 9]  # 0, 1.5, 3, 4.5, 6, 7.5, 9 half-even
    assert even_sample(rows, 10)[:, 0].tolist() == list(range(10))
