"""Known answers that kill the mutants mutmut left alive in the variation pipeline's pure modules.

Expected values come from loops / numpy in float64 written here, or by hand, never from the
product function under test. The mutants they kill are listed in bench/mutation.md.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from inspector.detect.colour import structure_share, to_lab
from inspector.detect.registration import estimate_pose
from inspector.detect.variation.calibration import positional_scale, reference_threshold, seam_confidence
from inspector.detect.variation.features import filter_bank, match_photometry, scale_groups, to_working
from inspector.detect.variation.memory import (global_nn_distance, greedy_coreset, local_nn_distance, nn_residuals,
                                               residual_whitener)
from tests.support.reference import reflect_conv


# ----------------------------------------------------------------------------- memory
def naive_local(query: np.ndarray, bank: np.ndarray, r: int, valid: np.ndarray | None) -> np.ndarray:
    """min over references and offsets |d| <= r of the distance to the bank cell (clamped to the grid), by loops."""
    k, _, h, w = bank.shape
    out = np.full((h, w), np.nan)
    for i in range(h):
        for j in range(w):
            best = np.inf
            for kk in range(k):
                for di in range(-r, r + 1):
                    for dj in range(-r, r + 1):
                        ii, jj = i + di, j + dj
                        inside = 0 <= ii < h and 0 <= jj < w
                        if valid is not None and not (inside and valid[kk, ii, jj]):
                            continue  # what lies past the border, or is not shown, is no evidence
                        ii, jj = min(max(ii, 0), h - 1), min(max(jj, 0), w - 1)  # edge padding
                        best = min(best, float(np.linalg.norm(query[:, i, j] - bank[kk, :, ii, jj])))
            out[i, j] = best if np.isfinite(best) else np.nan
    return out


def test_local_nn_distance_pads_with_the_edge_and_honours_validity_within_the_radius() -> None:
    bank = np.full((2, 3, 5, 5), 5.0, np.float32)
    query = np.zeros((3, 5, 5), np.float32)
    # edge padding: past the border the bank repeats its edge (5), never zeros
    np.testing.assert_allclose(local_nn_distance(query, bank, 1), np.full((5, 5), 5 * math.sqrt(3)), rtol=1e-5)
    rng = np.random.default_rng(20)
    bank = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    query = rng.standard_normal((3, 5, 5)).astype(np.float32)
    valid = np.zeros((2, 5, 5), bool)
    valid[0, 2, 2] = valid[1, 0, 4] = True  # two shown cells; the border cells are otherwise not shown
    got = local_nn_distance(query, bank, 1, valid)
    want = naive_local(query.astype(np.float64), bank.astype(np.float64), 1, valid)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got[~np.isnan(want)], want[~np.isnan(want)], rtol=1e-4, atol=1e-4)


def test_nn_residuals_are_the_difference_to_the_nearest_reference_patch() -> None:
    rng = np.random.default_rng(27)
    d, h, w = 3, 4, 5
    query = rng.standard_normal((d, h, w)).astype(np.float32)
    rows = rng.standard_normal((7, d)).astype(np.float32)
    got = nn_residuals(query, rows, "global", 0)  # global: the nearest bank row anywhere
    q = query.reshape(d, -1).T.astype(np.float64)
    want = np.array([v - rows[np.argmin(np.linalg.norm(rows - v, axis=1))] for v in q])
    assert got.shape == (h * w, d)
    np.testing.assert_allclose(got, want, atol=1e-5)
    bank = rng.standard_normal((2, d, h, w)).astype(np.float32)
    for r in (0, 1):  # local: the nearest of the references' cells within r (edge-padded), by loops
        got = nn_residuals(query, bank, "local", r)
        want = np.zeros((h * w, d))
        for i in range(h):
            for j in range(w):
                best = np.inf
                for di in range(-r, r + 1):
                    for dj in range(-r, r + 1):
                        ii, jj = min(max(i + di, 0), h - 1), min(max(j + dj, 0), w - 1)
                        for k in range(2):
                            diff = query[:, i, j].astype(np.float64) - bank[k, :, ii, jj]
                            if float(diff @ diff) < best:
                                best, want[i * w + j] = float(diff @ diff), diff
        assert got.shape == (h * w, d)
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_global_nn_distance_over_many_chunks() -> None:
    rng = np.random.default_rng(21)
    bank = rng.standard_normal((6, 3)).astype(np.float32)
    query = rng.standard_normal((9, 3)).astype(np.float32)
    want = [min(float(np.linalg.norm(q.astype(np.float64) - b)) for b in bank) for q in query]
    np.testing.assert_allclose(global_nn_distance(query, bank, chunk=2), want, rtol=1e-4, atol=1e-4)


def test_residual_whitener_shrinkage_by_hand() -> None:
    # one residual (2, 0, 0): E[rrᵀ] = diag(4, 0, 0), tr/D = 4/3; α = 0.5: Σ = diag(2 + 2/3, 2/3, 2/3)
    w = residual_whitener(np.array([[2.0, 0.0, 0.0]]), shrinkage=0.5)
    np.testing.assert_allclose(w, np.diag([1 / math.sqrt(8 / 3), 1 / math.sqrt(2 / 3), 1 / math.sqrt(2 / 3)]),
                               rtol=1e-9)


@pytest.mark.parametrize("scale", [10.0, 0.1])
def test_residual_whitener_floors_null_directions_relative_to_the_largest(scale: float) -> None:
    # residuals ±(s, 0): Σ = diag(s², 0); the null direction's variance is floored at 1e-9·s²
    w = residual_whitener(np.array([[scale, 0.0], [-scale, 0.0]]), shrinkage=0.0)
    np.testing.assert_allclose(np.abs(w), np.diag([1 / scale, 1 / math.sqrt(1e-9 * scale ** 2)]), rtol=1e-6)


def test_residual_whitener_of_float32_residuals_works_in_float64() -> None:
    # variances 1 and 1e-8 along axes rotated by 30°: only float64 second moments resolve the small one
    c, s = math.cos(math.pi / 6), math.sin(math.pi / 6)
    axes = np.array([[c, s], [-s, c]])
    coef = np.array([[1.0, 1e-4], [1.0, -1e-4], [-1.0, 1e-4], [-1.0, -1e-4]])
    r = (coef @ axes).astype(np.float32)
    r64 = r.astype(np.float64)
    sigma = r64.T @ r64 / len(r64)  # the float64 second moment of the very float32 rows given
    w = residual_whitener(r, shrinkage=0.0)
    np.testing.assert_allclose(w @ sigma @ w.T, np.eye(2), atol=1e-3)


def naive_greedy(x: np.ndarray, n: int, seed: int, proj_dims: int) -> list[int]:
    """Greedy k-centre on the random projection the docstring names, distances in float64."""
    m = len(x)
    if n >= m:
        return list(range(m))
    rng = np.random.default_rng(seed)
    y = x.astype(np.float32).astype(np.float64)
    if x.shape[1] > proj_dims:
        proj = rng.standard_normal((x.shape[1], proj_dims)).astype(np.float32).astype(np.float64)
        y = y @ (proj / math.sqrt(proj_dims))
    chosen = [int(rng.integers(m))]
    mind = ((y - y[chosen[0]]) ** 2).sum(1)
    for _ in range(1, n):
        i = int(np.argmax(mind))
        chosen.append(i)
        mind = np.minimum(mind, ((y - y[i]) ** 2).sum(1))
    return chosen


@pytest.mark.parametrize("dims, kwargs", [(12, {}), (8, {"seed": 3}), (5, {"seed": 4, "proj_dims": 3})])
def test_greedy_coreset_is_k_centre_on_the_seeded_projection(dims: int, kwargs: dict) -> None:
    x = np.random.default_rng(22).standard_normal((60, dims))
    got = greedy_coreset(x, 7, **kwargs).tolist()
    assert got == naive_greedy(x, 7, kwargs.get("seed", 0), kwargs.get("proj_dims", 8))
    assert greedy_coreset(x, 60).tolist() == list(range(60)) and greedy_coreset(x, 61).tolist() == list(range(60))


# ----------------------------------------------------------------------------- calibration
def test_seam_confidence_threshold_and_zero_margin() -> None:
    cover = np.array([[1.0, 0.9, 0.5, 0.0], [1.0, 1.0, 0.51, 0.2]], np.float32)
    want = np.array([[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0]])  # shown: strictly above one half
    np.testing.assert_array_equal(seam_confidence(cover, 0.0), want)
    np.testing.assert_array_equal(seam_confidence(cover, -1.0), want)


def naive_positional(maps: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """sqrt(S² + f²) with σ = 0 (no smoothing): S² = Σ w m² / Σ w, f = median S where Σ w > 0.1, by loops."""
    _, h, w = maps.shape
    spread, den = np.zeros((h, w)), np.zeros((h, w))
    for i in range(h):
        for j in range(w):
            num = 0.0
            for m, wt in zip(maps[:, i, j], weights[:, i, j], strict=True):
                if np.isfinite(m):  # a NaN map cell is no evidence
                    num += wt * m * m
                    den[i, j] += wt
            spread[i, j] = math.sqrt(num / max(den[i, j], 1e-3))
    floor = float(np.median(spread[den > 0.1])) if (den > 0.1).any() else 1.0
    return np.sqrt(spread ** 2 + floor ** 2)


def test_positional_scale_by_hand_with_partial_weights_and_nan() -> None:
    rng = np.random.default_rng(23)
    maps = (0.1 + 0.3 * rng.random((2, 6, 6))).astype(np.float32)  # small: Σ w m² < 1
    maps[0, 1, 1] = np.nan
    weights = (0.2 + 0.4 * rng.random((2, 6, 6))).astype(np.float32)  # Σ w between 0.4 and 1.2
    weights[:, 4:, 4:] = 0.0  # no evidence here: left out of the median
    got = positional_scale(maps, weights, sigma=0.0)
    np.testing.assert_allclose(got, naive_positional(maps.astype(np.float64), weights.astype(np.float64)),
                               rtol=1e-5)
    big = np.full((1, 4, 4), 3.0, np.float32)  # one map of 3 with weight 1: S = f = 3
    np.testing.assert_allclose(positional_scale(big, np.ones_like(big), sigma=0.0), math.sqrt(18.0), rtol=1e-6)
    none = positional_scale(big, np.zeros_like(big), sigma=0.0)  # no evidence anywhere: S = 0, f = 1
    np.testing.assert_allclose(none, 1.0, rtol=1e-6)


def test_reference_threshold_needs_a_weight_per_map() -> None:
    maps = np.ones((3, 4, 4), np.float32)
    with pytest.raises(ValueError):
        reference_threshold(maps, np.ones((2, 4, 4), np.float32), sigma=0.0, margin=1.0)


# ----------------------------------------------------------------------------- features
def naive_linear(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """Half-pixel bilinear resize of an ``(H, W, C)`` image, by loops (float64)."""
    hi, wi = img.shape[:2]

    def taps(i: int, n_in: int, n_out: int) -> tuple[int, int, float]:
        src = max(0.0, (i + 0.5) * n_in / n_out - 0.5)
        i0 = min(int(math.floor(src)), n_in - 1)
        return i0, min(i0 + 1, n_in - 1), src - i0

    out = np.zeros((h, w, img.shape[2]))
    for i in range(h):
        y0, y1, ly = taps(i, hi, h)
        for j in range(w):
            x0, x1, lx = taps(j, wi, w)
            out[i, j] = ((1 - ly) * ((1 - lx) * img[y0, x0] + lx * img[y0, x1])
                         + ly * ((1 - lx) * img[y1, x0] + lx * img[y1, x1]))
    return out


@pytest.mark.parametrize("shape", [(12, 4), (8, 12), (12, 8), (2, 2)])
def test_to_working_resizes_bilinearly_unless_both_sides_shrink(shape: tuple[int, int]) -> None:
    img = np.random.default_rng(24).integers(0, 256, (*shape, 3)).astype(np.uint8)
    got = to_working(img, 8)
    assert got.shape == (8, 8, 3) and got.dtype == np.float32
    want = naive_linear(img.astype(np.float64), 8, 8) / 255.0
    np.testing.assert_allclose(got, want, atol=1.01 / 255)  # cv2 rounds uint8 results


def test_to_working_area_averages_when_shrinking_and_keeps_the_size() -> None:
    img = np.random.default_rng(25).integers(0, 256, (24, 24, 3)).astype(np.uint8)
    want = img.astype(np.float64).reshape(8, 3, 8, 3, 3).mean((1, 3)) / 255.0  # 3×3 block means
    np.testing.assert_allclose(to_working(img, 8), want, atol=0.51 / 255)
    white = np.full((8, 8, 3), 255, np.uint8)
    assert np.array_equal(to_working(white, 8), np.ones((8, 8, 3), np.float32))  # 255 ↦ 1 exactly, no resize


@pytest.mark.parametrize("shape", [(8, 8), (8, 8, 4)])
def test_to_working_rejects_non_rgb(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"^expected an RGB image HxWx3, got shape \(8, 8"):
        to_working(np.zeros(shape, np.uint8), 8)


def test_to_lab_of_float64_white_is_l_100() -> None:
    lab = to_lab(np.ones((2, 2, 3), np.float64))
    np.testing.assert_allclose(lab[..., 0], 100.0, atol=1e-3)
    np.testing.assert_allclose(lab[..., 1:], 0.0, atol=1e-3)


def test_match_photometry_by_hand() -> None:
    lab = np.zeros((2, 2, 3), np.float32)
    lab[..., 0] = [[10.0, 20.0], [10.0, 20.0]]  # mean 15, std 5
    lab[..., 1], lab[..., 2] = 3.0, -2.0
    out = match_photometry(lab, np.array([50.0, 1.0, 4.0]), np.array([10.0, 1.0, 1.0]))  # gain 10/5 = 2
    np.testing.assert_allclose(out[..., 0], [[40.0, 60.0], [40.0, 60.0]], rtol=1e-6)
    np.testing.assert_allclose(out[..., 1], 1.0, rtol=1e-6)  # a, b: moved to the references' means
    np.testing.assert_allclose(out[..., 2], 4.0, rtol=1e-6)
    out = match_photometry(lab, np.array([50.0, 1.0, 4.0]), np.array([50.0, 1.0, 1.0]))  # gain 10, clamped to 2
    np.testing.assert_allclose(out[..., 0], [[40.0, 60.0], [40.0, 60.0]], rtol=1e-6)
    flat = lab.copy()
    flat[..., 0] = [[15.0, 15.2], [15.0, 15.2]]  # std 0.1 < 1: the gain is 0.15 / 0.1 = 1.5
    out = match_photometry(flat, np.array([0.0, 0.0, 0.0]), np.array([0.15, 1.0, 1.0]))
    np.testing.assert_allclose(out[..., 0], [[-0.15, 0.15], [-0.15, 0.15]], rtol=1e-4)


def test_scale_groups_are_integer_indices() -> None:
    assert scale_groups(36, True).dtype == np.int64
    assert scale_groups(36, False).dtype == np.int64


def test_structure_share_by_hand() -> None:
    rng = np.random.default_rng(26)
    lab = np.zeros((64, 64, 3), np.float32)
    lab[..., 0] = 0.3 * rng.standard_normal((64, 64)) + np.repeat(np.repeat(rng.random((4, 4)), 16, 0), 16, 1)
    lum = lab[..., 0].astype(np.float64)
    coarse = lum.reshape(16, 4, 16, 4).mean((1, 3))  # 16×16 block means (the default blocks)
    assert lum.var() < 1.0
    assert structure_share(lab) == pytest.approx(coarse.var() / lum.var(), rel=1e-4)


def box3(grid: np.ndarray) -> np.ndarray:
    """Mean of each cell's 3×3 neighbourhood (interior cells only are compared)."""
    out = np.zeros_like(grid)
    for i in range(1, grid.shape[0] - 1):
        for j in range(1, grid.shape[1] - 1):
            out[i, j] = grid[i - 1:i + 2, j - 1:j + 2].mean()
    return out


def test_filter_bank_responses_of_polynomial_images_by_hand() -> None:
    # L = 20 + x/2 + c·y², a = 10 + y/4 + x/16, b = x/8 + e·x² − y/16 − 5 on 64 px, 8-px cells, two
    # levels. On a polynomial of degree ≤ 2 the responses are exact away from the border: the blur
    # keeps a ramp and adds c·s² to c·y² (s² the kernel's variance), Sobel/8 is the slope,
    # |Laplacian|/4 is |2c|, the chroma gradient is |∇(a, b)|. One pyramid level down a pixel spans
    # k = 2 px, so slopes are ×k and quadratic terms ×k², and pyrDown's 5-tap kernel adds its
    # variance (1 px²) first.
    c, e = -0.01, 0.002
    yy, xx = np.mgrid[0:64, 0:64].astype(np.float64)
    lab = np.stack([20 + 0.5 * xx + c * yy ** 2, 10 + 0.25 * yy + 0.0625 * xx,
                    -5 + 0.125 * xx + e * xx ** 2 - 0.0625 * yy], -1)
    got = filter_bank(lab.astype(np.float32), 2, 8)
    assert got.shape == (36, 8, 8)  # [9 responses × 2 levels] cells, then the same as 3×3 context
    kern = cv2.getGaussianKernel(9, 1.0).ravel()  # σ = 1 in float32: 9 taps
    s2 = float((kern * (np.arange(9) - 4.0) ** 2).sum())
    ones = np.ones((8, 8))
    for level, (px, inner) in enumerate([(8, slice(1, 7)), (4, slice(2, 6))]):
        pix = px * np.arange(8)[:, None] + np.arange(px)[None, :]  # the level's pixels of each cell
        mean, mean_sq = pix.mean(1), (pix ** 2).mean(1)
        k = 2.0 ** level
        var = k * k * s2 + (1.0 if level else 0.0)  # blur (and pyramid) variance in level-0 px²
        lum = (20 + 0.5 * k * mean[None, :] + c * (k * k * mean_sq[:, None] + var)) * ones
        a = 10 + 0.25 * k * mean[:, None] + 0.0625 * k * mean[None, :]
        b = -5 + 0.125 * k * mean[None, :] + e * (k * k * mean_sq[None, :] + var) - 0.0625 * k * mean[:, None]
        gy = 2 * c * k * k * mean[:, None] * ones
        bx = 0.125 * k + 2 * e * k * k * pix  # ∂b/∂x at each pixel; the other three slopes are constant
        chroma = np.sqrt((0.25 * k) ** 2 + (0.0625 * k) ** 2 + (0.0625 * k) ** 2 + bx ** 2).mean(1)[None, :] * ones
        want = [lum, a, b, 0.5 * k * ones, gy, 0.5 * k * ones, np.abs(gy),
                abs(2 * c) * k * k * ones, chroma]
        for ch, w in enumerate(want):
            np.testing.assert_allclose(got[9 * level + ch][inner, inner], w[inner, inner], atol=2e-5,
                                       err_msg=f"level {level} response {ch}")
            core = slice(inner.start + 1, inner.stop - 1)
            np.testing.assert_allclose(got[18 + 9 * level + ch][core, core], box3(w)[core, core], atol=2e-5,
                                       err_msg=f"level {level} context {ch}")


@pytest.mark.parametrize(("width", "column"), [(64, 5), (16, 3)])
def test_filter_bank_upsamples_a_coarse_level_bilinearly(width: int, column: int) -> None:
    # a = 10 + y/4 on 64 rows, 2-px cells (32 rows): level 2 has 16 rows (a = 10 + Y), fewer than the
    # grid's, so it is enlarged bilinearly: cell j reads level-2 position j/2 − 1/4. The 16-px-wide
    # image is the tall case (a 32×8 grid; level 2 is 16×4 px)
    yy = np.mgrid[0:64, 0:width][0].astype(np.float64)
    lab = np.stack([np.full_like(yy, 20.0), 10 + 0.25 * yy, np.full_like(yy, -5.0)], -1).astype(np.float32)
    got = filter_bank(lab, 3, 2)
    assert got.shape == (54, 32, width // 2)
    j = np.arange(12, 21)
    np.testing.assert_allclose(got[18 + 1][12:21, column], 10 + j / 2 - 0.25, atol=1e-3)
    np.testing.assert_allclose(got[0], 20.0, atol=1e-4)  # a constant channel stays constant everywhere
    np.testing.assert_allclose(got[3:8], 0.0, atol=1e-4)  # no luminance gradient anywhere


def test_filter_bank_stops_the_pyramid_below_8_px() -> None:
    # 12 px: level 0 (12 px), level 1 (6 px, under 8: the last); 4-px cells: 3×3
    flat = np.zeros((12, 12, 3), np.float32)
    flat[..., 0], flat[..., 1], flat[..., 2] = 50.0, 3.0, -4.0
    got = filter_bank(flat, 4, 4)
    assert got.shape == (36, 3, 3) and got.dtype == np.float32 and got.flags["C_CONTIGUOUS"]
    want = np.tile(np.array([50.0, 3.0, -4.0, 0, 0, 0, 0, 0, 0]), 4)
    np.testing.assert_allclose(got, np.broadcast_to(want[:, None, None], got.shape), atol=1e-4)
    assert filter_bank(np.zeros((2, 2, 3), np.float32), 1, 8).shape == (18, 1, 1)  # at least one cell
    # 16 px: levels of 16, 8 and 4 px (8 is not below 8, so one more level follows it)
    assert filter_bank(np.zeros((16, 16, 3), np.float32), 5, 4).shape == (54, 4, 4)


# ----------------------------------------------------------------------------- alignment
def test_align_image_is_standardised_sobel_magnitude_of_the_blurred_grey() -> None:
    from inspector.detect.registration import ALIGN_SIZE, align_image

    rng = np.random.default_rng(30)
    rgb = cv2.GaussianBlur(rng.random((3 * ALIGN_SIZE, 3 * ALIGN_SIZE, 3)).astype(np.float32), (0, 0), 4.0)
    got = align_image(rgb)
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    grey = (0.299 * r + 0.587 * g + 0.114 * b).reshape(ALIGN_SIZE, 3, ALIGN_SIZE, 3).mean((1, 3))  # area ÷3
    t = np.arange(9) - 4.0
    gauss = np.exp(-t * t / 2.0)
    grey = reflect_conv(grey, gauss / gauss.sum(), gauss / gauss.sum())  # σ = 1: 9 taps in float32
    gx = reflect_conv(grey, np.array([1.0, 2.0, 1.0]), np.array([-1.0, 0.0, 1.0]))
    gy = reflect_conv(grey, np.array([-1.0, 0.0, 1.0]), np.array([1.0, 2.0, 1.0]))
    edges = np.hypot(gx, gy)
    want = (edges - edges.mean()) / edges.std()
    assert got.shape == (ALIGN_SIZE, ALIGN_SIZE) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=2e-3)


def test_ncc_compose_and_rotation_by_hand() -> None:
    from inspector.detect.registration import _compose, _ncc, _rotation, scale_pose

    rng = np.random.default_rng(31)
    a, b = 3.0 + rng.random((4, 4)), 1.0 - 2 * rng.random((4, 4))  # non-zero means
    assert _ncc(a, b) == pytest.approx(np.corrcoef(a.ravel(), b.ravel())[0, 1], rel=1e-9)
    assert _ncc(1e-4 * a, 1e-4 * b) == pytest.approx(np.corrcoef(a.ravel(), b.ravel())[0, 1], rel=1e-3)
    outer = np.array([[0.0, -1.0, 5.0], [1.0, 0.0, 2.0]])  # rotate 90°, then shift (5, 2)
    inner = np.array([[2.0, 0.0, 1.0], [0.0, 3.0, -1.0]])  # scale (2, 3), then shift (1, −1)
    np.testing.assert_allclose(_compose(outer, inner), [[0.0, -3.0, 6.0], [2.0, 0.0, 3.0]])  # outer(inner(p))
    # OpenCV's matrix: α = cos, β = sin; [[α, β, (1−α)c − βc], [−β, α, βc + (1−α)c]]
    rot = _rotation(90.0, 10.0)
    np.testing.assert_allclose(rot, [[0.0, 1.0, 0.0], [-1.0, 0.0, 20.0]], atol=1e-9)
    np.testing.assert_allclose(scale_pose(np.array([[1.0, 0.0, 3.0], [0.0, 1.0, -2.0]]), 2.0),
                               [[1.0, 0.0, 6.0], [0.0, 1.0, -4.0]])


def smooth_field(seed: int, sigma: float = 3.0, size: int = 128) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal((size, size)).astype(np.float32)
    field = cv2.GaussianBlur(noise, (0, 0), sigma)
    return (field - field.mean()) / field.std()


def test_estimate_pose_identity_and_a_known_circular_shift() -> None:
    fixed = smooth_field(32, sigma=0.7)  # a sharp correlation peak: its centroid is unbiased
    moving = np.roll(fixed, (-3, 5), axis=(0, 1))  # moving(x, y) = fixed(x − 5, y + 3)
    np.testing.assert_array_equal(estimate_pose(moving, fixed, "none", 10.0), [[1.0, 0, 0], [0, 1.0, 0]])
    m = estimate_pose(moving, fixed, "translation", 10.0)
    np.testing.assert_allclose(m, [[1.0, 0.0, -5.0], [0.0, 1.0, 3.0]], atol=0.05)  # moving → fixed


@pytest.mark.parametrize("angle, shift", [(8.5, (3.0, -2.0)), (-8.5, (-3.0, 2.0))])
def test_estimate_pose_finds_a_large_rotation_in_the_search(angle: float, shift: tuple[float, float]) -> None:
    # motions from which ECC started at the identity does not converge (checked: correlation ≈ 0.1):
    # the ±10° phase-correlation search must find the basin
    fixed = smooth_field(35, sigma=1.0)
    fwd = cv2.getRotationMatrix2D((63.5, 63.5), angle, 1.0)
    fwd[:, 2] += shift
    moving = cv2.warpAffine(fixed, fwd, (128, 128), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    m = estimate_pose(moving, fixed, "rigid", 10.0)
    want = cv2.invertAffineTransform(fwd)
    np.testing.assert_allclose(m @ np.array([63.5, 63.5, 1.0]), want @ np.array([63.5, 63.5, 1.0]), atol=0.05)
    np.testing.assert_allclose(m[:, :2], want[:, :2], atol=2e-3)


@pytest.mark.parametrize("mode, rotation", [("rigid", 0.0), ("rigid", 6.0)])
def test_estimate_pose_refines_a_subpixel_motion(mode: str, rotation: float) -> None:
    fixed = smooth_field(33)
    angle, dx, dy = (0.0, 2.3, -1.6) if rotation == 0 else (4.0, 2.3, -1.6)
    fwd = cv2.getRotationMatrix2D((63.5, 63.5), angle, 1.0)
    fwd[:, 2] += (dx, dy)  # fixed → moving
    moving = cv2.warpAffine(fixed, fwd, (128, 128), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    m = estimate_pose(moving, fixed, mode, rotation)
    want = cv2.invertAffineTransform(fwd)  # moving → fixed
    centre = np.array([63.5, 63.5, 1.0])
    np.testing.assert_allclose(m @ centre, want @ centre, atol=0.05)
    np.testing.assert_allclose(m[:, :2], want[:, :2], atol=2e-3)


def test_filter_bank_context_is_the_3x3_mean_with_mirrored_borders() -> None:
    rng = np.random.default_rng(34)
    lab = cv2.GaussianBlur(rng.random((40, 24, 3)).astype(np.float32) * 50, (0, 0), 2.0)
    got = filter_bank(lab, 2, 4)
    cells, ctx = got[:18].astype(np.float64), got[18:]
    pad = np.pad(cells, ((0, 0), (1, 1), (1, 1)), mode="symmetric")  # the edge cell is repeated
    want = sum(pad[:, 1 + di:1 + di + cells.shape[1], 1 + dj:1 + dj + cells.shape[2]]
               for di in (-1, 0, 1) for dj in (-1, 0, 1)) / 9.0
    np.testing.assert_allclose(ctx, want, rtol=1e-5, atol=1e-4)


def test_seam_confidence_ramps_over_exactly_margin_pixels() -> None:
    # by hand: the seam is the 4-px uncovered strip; pixel x = 4 + k is k + 1 px inside (Euclidean)
    cover = np.ones((8, 16), np.float32)
    cover[:, :4] = 0
    np.testing.assert_allclose(seam_confidence(cover, 4.0)[3, 4:9], [0.25, 0.5, 0.75, 1.0, 1.0], atol=1e-6)
