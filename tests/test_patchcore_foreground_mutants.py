"""Known answers for the part mask (``inspector.detect.patchcore.foreground``) at its boundaries.

Written for the mutants of ``bench/mutate.sh inspector/detect/patchcore/foreground.py`` that
``test_patchcore_foreground.py`` left alive. Expected values are by hand (frame pixels, Otsu on
two values, shares and touch counts built to the limit) or from independent code: scipy's
Gaussian filter + scikit-image's L*a*b* conversion for the contrast, and a brute-force Otsu over
the raw values on inputs whose values lie on the 256-level grid (so the histogram Otsu is exact).
"""

from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest
import scipy.ndimage as ndi
import skimage.color

from inspector.detect.patchcore import foreground as fg
from inspector.detect.patchcore.foreground import border_contrast, border_frame, is_whole_part, object_mask, otsu_split
from tests.test_patchcore_foreground import brute_force_otsu


# ------------------------------------------------------------------------------ border_frame
@pytest.mark.parametrize(("h", "w", "b"), [(60, 94, 2), (100, 150, 3), (10, 10, 2), (200, 170, 5)])
def test_border_frame_is_the_outer_ring_once(h: int, w: int, b: int) -> None:
    """b = max(2, round(3 % of the shorter side)); every ring pixel once, corners not twice."""
    values = np.arange(h * w).reshape(h, w)
    ring = np.zeros((h, w), bool)
    ring[:b], ring[-b:], ring[:, :b], ring[:, -b:] = True, True, True, True
    got = border_frame(values)
    assert got.size == int(ring.sum()) == 2 * b * w + 2 * b * (h - 2 * b)
    np.testing.assert_array_equal(np.sort(got), values[ring])


def test_border_frame_of_a_colour_image_holds_every_channel() -> None:
    rgb = np.arange(60 * 94 * 3).reshape(60, 94, 3)
    ring = np.zeros((60, 94), bool)
    ring[:2], ring[-2:], ring[:, :2], ring[:, -2:] = True, True, True, True
    np.testing.assert_array_equal(np.sort(border_frame(rgb)), np.sort(rgb[ring].ravel()))


# ------------------------------------------------------------------------------ otsu_split
def test_otsu_on_two_values_by_hand() -> None:
    """Two values: Otsu's level is 0 (the lower value), the threshold half a level above it, η = 1."""
    v = np.array([7.0, 2, 2, 7, 7, 2, 7, 7, 2])  # an odd count: no reshaping into two rows
    t, eta = otsu_split(v)
    assert t == pytest.approx(2 + 0.5 / 255 * 5, abs=1e-12)
    assert eta == pytest.approx(1.0, abs=1e-12)
    assert isinstance(t, float) and isinstance(eta, float)


@pytest.mark.parametrize("counts", [(5, 3, 0, 2), (1, 6, 4, 9), (10, 1, 1, 1)])
def test_otsu_on_grid_values_is_the_raw_brute_force_exactly(counts: tuple[int, ...]) -> None:
    """Values at levels 0, 51, 102, 255 of [lo, hi]: the histogram split is the raw one, η exact."""
    lo, hi = -3.0, 9.75
    levels = np.array([0, 51, 102, 255])
    v = np.repeat(lo + levels / 255.0 * (hi - lo), counts)
    np.random.default_rng(sum(counts)).shuffle(v)
    t, eta = otsu_split(v)
    lower, want_eta = brute_force_otsu(v)
    last_lower = levels[np.isclose(lo + levels / 255.0 * (hi - lo), max(lower))][0]
    assert t == pytest.approx(lo + (last_lower + 0.5) / 255.0 * (hi - lo), abs=1e-9)
    assert eta == pytest.approx(want_eta, abs=1e-9)


def test_otsu_computes_in_float64_whatever_the_input() -> None:
    """float32 input (what border_contrast returns) gives the float64 answer exactly; no warnings
    for a constant input (it returns before dividing by the zero range)."""
    v = np.random.default_rng(3).normal(10.0, 3.0, 2001).astype(np.float32)
    assert otsu_split(v) == otsu_split(v.astype(np.float64))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert otsu_split(np.full(7, 2.5, np.float32)) == (2.5, 0.0)


def test_otsu_between_class_variance_by_hand() -> None:
    """[0, 0, 0, 1, 4]: split {0, 0, 0, 1} | {4}: σ²_B = 0.2·0.8·(4 − 0.25)², σ²_T = np.var."""
    v = np.array([0.0, 4.0, 0.0, 1.0, 0.0])
    t, eta = otsu_split(v)
    assert 1.0 < t < 4.0
    assert eta == pytest.approx(0.2 * 0.8 * 3.75**2 / np.var(v), abs=1e-12)


# ------------------------------------------------------------------------------ border_contrast
@pytest.mark.parametrize("transpose", [False, True])
def test_border_contrast_across_a_blurred_edge_and_a_mixed_border(transpose: bool) -> None:
    """σ = 2 Gaussian (OpenCV's 13-tap kernel for 8-bit: scipy, truncate 3, mirror borders, rounded),
    L*a*b* by scikit-image, ΔE to the per-channel median of the 2-px frame (mostly colour a)."""
    a, b = (40, 60, 90), (200, 180, 60)
    img = np.full((48, 64, 3), a, np.uint8)
    img[:, 36:] = b  # a vertical edge; the right frame strip is b, the rest of the frame a
    if transpose:  # the same across a horizontal edge: the blur runs along both axes
        got = border_contrast(np.ascontiguousarray(img.transpose(1, 0, 2))).T
    else:
        got = border_contrast(img)
    assert got.dtype == np.float32 and got.shape == (48, 64)
    blurred = np.stack([ndi.gaussian_filter(img[..., c].astype(np.float64), 2.0, mode="mirror", truncate=3.0)
                        for c in range(3)], axis=-1)
    lab = skimage.color.rgb2lab(np.round(blurred).astype(np.uint8))
    ring = np.zeros((48, 64), bool)
    ring[:2], ring[-2:], ring[:, :2], ring[:, -2:] = True, True, True, True  # b = max(2, round(1.44))
    ref = np.median(lab[ring], axis=0)
    want = np.linalg.norm(lab - ref, axis=2)
    np.testing.assert_allclose(got[24], want[24], atol=0.6)  # the row across the edge, ramp included
    assert 10 < got[24, 34] < got[24, 36] < got[24, 38] < got[24, 44] - 2  # a blurred ramp, not a step


def test_border_contrast_of_white_on_black_is_100() -> None:
    """CIE: L* of black is 0 and of white 100, a* = b* = 0 for both (RGB scaled by 1/255)."""
    img = np.zeros((40, 40, 3), np.uint8)
    img[10:30, 10:30] = 255
    got = border_contrast(img)
    assert got[20, 20] == pytest.approx(100.0, abs=0.01) and got[2, 2] == pytest.approx(0.0, abs=0.01)


def test_border_contrast_reads_the_frame_median_per_channel() -> None:
    """A frame that is 3/4 colour a and 1/4 colour b: the reference colour is a, not their mean."""
    a, b = (90, 90, 90), (90, 200, 90)
    img = np.full((40, 40, 3), a, np.uint8)
    img[:, :6, 1] = 200  # the left frame strip (and a little more) is b
    got = border_contrast(img)
    assert got[20, 30] == pytest.approx(0.0, abs=0.05)
    lab = skimage.color.rgb2lab(np.array([[a, b]], np.uint8))[0]
    assert got[20, 1] == pytest.approx(float(np.linalg.norm(lab[1] - lab[0])), rel=0.01)


# ------------------------------------------------------------------------------ is_whole_part
def test_object_share_limits_are_inclusive() -> None:
    obj = np.zeros((100, 100), bool)
    obj[40:50, 40:60] = True  # 200 px = MIN_OBJECT_SHARE exactly
    assert obj.mean() == fg.MIN_OBJECT_SHARE and is_whole_part(obj)
    obj[40, 40] = False
    assert not is_whole_part(obj)
    big = np.zeros((100, 1000), bool)  # long frame: the inside (94 × 994) holds more than 90 %
    big[3:97, 3:960] = True  # 94 · 957 = 89 958 px
    big[3:45, 960] = True  # + 42 = 90 000 px = MAX_OBJECT_SHARE exactly, one piece, off the frame
    assert big.mean() == fg.MAX_OBJECT_SHARE and not border_frame(big).any()
    assert is_whole_part(big)
    big[45, 960] = True
    assert not is_whole_part(big)


def test_border_touch_limit_is_inclusive() -> None:
    """60 × 94: the frame (b = 2) has 600 px; MAX_BORDER_TOUCH allows 3 of them."""
    obj = np.zeros((60, 94), bool)
    obj[10:30, 10:40] = True
    obj[0:10, 20] = True  # a stalk to the top edge: rows 0 and 1 are frame, 2 px
    obj[1, 21] = True  # the third frame pixel
    assert border_frame(obj).size == 600 and int(border_frame(obj).sum()) == 3
    assert is_whole_part(obj)
    obj[1, 22] = True
    assert not is_whole_part(obj)


def test_one_piece_rule_and_connectivity() -> None:
    obj = np.zeros((100, 100), bool)
    obj[10:40, 10:40] = True  # 900 px
    obj[60:70, 60:70] = True  # 100 px apart: the largest piece holds exactly ONE_PIECE
    assert is_whole_part(obj)
    obj[60, 70] = True  # one more pixel in the small piece: 900 < 0.9 · 1001
    assert not is_whole_part(obj)
    corner = np.zeros((100, 100), bool)
    corner[20:40, 20:40] = True
    corner[40:60, 40:60] = True  # touching at a corner only: one piece with 8-connectivity
    assert is_whole_part(corner)


# ------------------------------------------------------------------------------ object_mask
def _part(shape: tuple[int, int], top: int, left: int, hh: int = 30, ww: int = 50) -> np.ndarray:
    img = np.full((*shape, 3), (40, 60, 90), np.uint8)
    img[top : top + hh, left : left + ww] = (200, 180, 60)
    return img


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(ys.min()), int(ys.max()), int(xs.min()), int(xs.max())


@pytest.mark.parametrize("margin", [1, 3])
def test_margin_grows_the_part_by_exactly_margin_px(margin: int) -> None:
    img = _part((80, 120), 20, 30)
    raw = object_mask([img], 0.5, 0)
    assert raw is not None and raw.dtype == bool
    assert _bbox(raw) == (20, 49, 30, 79)  # the flat rectangle, its corners rounded by the blur
    grown = object_mask([img], 0.5, margin)
    assert grown is not None and grown.dtype == bool
    assert _bbox(grown) == (20 - margin, 49 + margin, 30 - margin, 79 + margin)
    assert (grown >= raw).all()
    # along the middle row and column the growth is exactly margin px on each side
    assert int(grown[35].sum()) == 50 + 2 * margin and int(grown[:, 55].sum()) == 30 + 2 * margin
    # an elliptic element: the grown corner is cut, not square
    assert not grown[20 - margin, 30 - margin]


def test_mask_is_the_union_over_the_references() -> None:
    first, second = _part((80, 120), 20, 30), _part((80, 120), 26, 40)
    union = object_mask([first, second], 0.5, 0)
    each = [object_mask([im], 0.5, 0) for im in (first, second)]
    assert union is not None and all(m is not None for m in each)
    np.testing.assert_array_equal(union, each[0] | each[1])
    assert _bbox(union) == (20, 55, 30, 89)


def test_any_failing_reference_means_no_mask() -> None:
    part = _part((80, 120), 20, 30)
    off_frame = _part((80, 120), 20, 80, ww=40)  # runs off the right edge
    assert object_mask([part, off_frame], 0.5, 2) is None
    assert object_mask([off_frame, part], 0.5, 2) is None
    assert object_mask([], 0.5, 2) is None


def test_separability_limit_is_inclusive() -> None:
    img = _part((80, 120), 20, 30)
    _, eta = otsu_split(border_contrast(img))
    assert 0.5 < eta < 1.0
    assert object_mask([img], eta, 0) is not None
    assert object_mask([img], float(np.nextafter(eta, 2.0)), 0) is None


def test_mask_threshold_is_otsus_on_the_contrast() -> None:
    """The mask is exactly the contrast above Otsu's threshold (no margin)."""
    img = _part((80, 120), 20, 30)
    img = cv2.GaussianBlur(img, (0, 0), 3.0)  # a softer edge: many contrast values near the threshold
    contrast = border_contrast(img)
    t, _ = otsu_split(contrast)
    mask = object_mask([img], 0.5, 0)
    assert mask is not None
    np.testing.assert_array_equal(mask, contrast > t)
