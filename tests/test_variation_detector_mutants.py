"""Known answers for variation/detector.py: prepare, the memory and calibration it builds, analyse, finish.

The detector runs at 32 px (8×8 descriptor cells) on small random shots, and everything ``prepare``
stores and ``analyse`` / ``finish`` return is compared with a re-derivation written here in float64:
loops for the nearest neighbours and their residuals, the bilinear warp into the reference frame,
cell means of the cover, the coreset's owner split, the eigen-directions of the whitened patches, the
leave-one-out maps and their weights. The re-derivation uses the package's other (separately
mutation-tested) pure functions only as building blocks: ``filter_bank``, ``greedy_coreset``,
``residual_whitener``, ``positional_scale``, ``seam_confidence``, ``gaussian_smooth``, ``resize_map``.
Registration is replaced by a recording stand-in that returns chosen poses (translations on
OpenCV's 1/32 px warp grid, so the warps are exact).
"""

from __future__ import annotations

import functools
import math
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from inspector.cache import cache_key
from inspector.detect.base import Detection
from inspector.detect.colour import structure_share, to_lab
from inspector.detect.maps import gaussian_smooth, regions_from_map, resize_map
from inspector.detect.registration import align_image
from inspector.detect.variation import detector as vd
from inspector.detect.variation.calibration import positional_scale, seam_confidence
from inspector.detect.variation.detector import VariationAnalysis, VariationDetector, VariationError, describe
from inspector.detect.variation.features import filter_bank
from inspector.detect.variation.memory import greedy_coreset, residual_whitener
from inspector.files import file_sha256
from inspector.imaging import read_image
from inspector.profile import ProductProfile
from tests.test_variation import cache_home, make_profile  # noqa: F401  (cache_home is a fixture)
from tests.test_variation_mutants import naive_linear, naive_local

SIZE = 32  # working size: 8×8 cells of 4 px, two pyramid levels (36 descriptor dimensions)
CELLS = SIZE // 4


def detector(**variation: object) -> VariationDetector:
    det = VariationDetector()
    det.profile = ProductProfile(name="t", reference_shots=[], pipeline="variation",
                                 variation={"working_size": SIZE, **variation})
    return det


def shot(seed: int, size: int = SIZE) -> np.ndarray:
    """Blotches of colour (a 6×6 layout, cubic) with pixel noise: RGB uint8."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(40, 215, (6, 6, 3)).astype(np.float32)
    img = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC) + rng.normal(0, 12, (size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- naive float64 maths
def naive_warp(img: np.ndarray, m: np.ndarray, border: str) -> np.ndarray:
    """dst(p) = src(m⁻¹ p), bilinear, by loops; past the border: the edge ("replicate") or 0 ("zero")."""
    inv = np.linalg.inv(np.vstack([m, [0.0, 0.0, 1.0]]))
    h, w = img.shape[:2]
    src = np.asarray(img, np.float64)
    out = np.zeros(src.shape)
    for y in range(h):
        for x in range(w):
            sx, sy = inv[0] @ (x, y, 1.0), inv[1] @ (x, y, 1.0)
            x0, y0 = math.floor(sx), math.floor(sy)
            fx, fy = sx - x0, sy - y0
            for yy, wy in ((y0, 1 - fy), (y0 + 1, fy)):
                for xx, wx in ((x0, 1 - fx), (x0 + 1, fx)):
                    if 0 <= yy < h and 0 <= xx < w:
                        out[y, x] += wy * wx * src[yy, xx]
                    elif border == "replicate":
                        out[y, x] += wy * wx * src[min(max(yy, 0), h - 1), min(max(xx, 0), w - 1)]
    return out


def naive_lab(rgb01: np.ndarray, ref_mean: np.ndarray | None, ref_std: np.ndarray | None) -> np.ndarray:
    """L*a*b*, then (photometric) the gain/offset of L and the offsets of a, b to the references' statistics."""
    lab = to_lab(rgb01).astype(np.float64)
    if ref_mean is None:
        return lab
    mean = lab.reshape(-1, 3).mean(0)
    gain = min(max(float(ref_std[0]) / max(float(lab[..., 0].std()), 1e-3), 0.5), 2.0)
    out = lab.copy()
    out[..., 0] = (lab[..., 0] - mean[0]) * gain + ref_mean[0]
    out[..., 1:] += np.asarray(ref_mean[1:], np.float64) - mean[1:]
    return out


def naive_jitter(rgb01: np.ndarray) -> np.ndarray:
    """Shifted by one pixel right and down (edge repeated), 4 % brighter, clipped to [0, 1]."""
    h, w = rgb01.shape[:2]
    out = np.empty_like(rgb01, dtype=np.float64)
    for y in range(h):
        for x in range(w):
            out[y, x] = rgb01[max(y - 1, 0), max(x - 1, 0)]
    return np.clip(out * 1.04, 0, 1)


def scaled(pose: np.ndarray) -> np.ndarray:
    m = np.array(pose, np.float64)
    m[:, 2] *= SIZE / 128  # registration works at 128 px
    return m


def naive_frame(lab: np.ndarray, pose: np.ndarray | None, master_lab: np.ndarray, margin: float
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image in the reference frame, filled from the master; cover; seam confidence)."""
    if pose is None:
        ones = np.ones(lab.shape[:2])
        return lab, ones, ones
    m = scaled(pose)
    warped = naive_warp(lab, m, "replicate")
    cover = naive_warp(np.ones(lab.shape[:2]), m, "zero")
    filled = warped * cover[..., None] + master_lab * (1 - cover[..., None])
    return filled, cover, seam_confidence(cover.astype(np.float32), margin)


def cell_means(a: np.ndarray, cell: int = 4) -> np.ndarray:
    h, w = a.shape
    return a.reshape(h // cell, cell, w // cell, cell).mean((1, 3))


def dilate3(b: np.ndarray) -> np.ndarray:
    h, w = b.shape
    return np.array([[b[max(i - 1, 0):i + 2, max(j - 1, 0):j + 2].any() for j in range(w)] for i in range(h)])


def naive_global(query: np.ndarray, bank: np.ndarray) -> np.ndarray:
    """(h, w) distance of each query cell (d, h, w) to its nearest bank row (M, d)."""
    d, h, w = query.shape
    q = query.reshape(d, -1).T
    return np.sqrt(((q[:, None, :] - bank[None]) ** 2).sum(-1)).min(1).reshape(h, w)


def naive_residuals_local(query: np.ndarray, bank: np.ndarray, r: int) -> np.ndarray:
    """(h·w, d): query cell minus the nearest bank cell within ± r (edge-clamped), by loops."""
    k, d, h, w = bank.shape
    out = np.zeros((h * w, d))
    for i in range(h):
        for j in range(w):
            cands = [bank[kk, :, min(max(i + di, 0), h - 1), min(max(j + dj, 0), w - 1)]
                     for kk in range(k) for di in range(-r, r + 1) for dj in range(-r, r + 1)]
            best = min(cands, key=lambda c: float(((query[:, i, j] - c) ** 2).sum()))
            out[i * w + j] = query[:, i, j] - best
    return out


def flat(a: np.ndarray) -> np.ndarray:
    """(K, d, h, w) -> (K·h·w, d): reference-major, then row-major cells."""
    return a.transpose(0, 2, 3, 1).reshape(-1, a.shape[1])


def owned(keep: np.ndarray, owners: list[int], per: int) -> np.ndarray:
    """Rows of ``keep`` (indices over all references) that belong to ``owners``, grouped by owner."""
    return np.array([int(x) for ref in owners for x in keep if ref * per <= x < (ref + 1) * per], np.int64)


def naive_prepare(shots: list[np.ndarray], p: dict, poses: list[np.ndarray | None]) -> dict:
    """What prepare stores, re-derived (float64); ``p``: every parameter that matters, ``poses``: the shots'."""
    k = len(shots)
    imgs = [s.astype(np.float64) / 255.0 for s in shots]
    raw_labs = [to_lab(im.astype(np.float32)).astype(np.float64) for im in imgs]
    lab_mean = np.array([np.mean([lab[..., c] for lab in raw_labs]) for c in range(3)])
    lab_std = np.array([np.std([lab[..., c] for lab in raw_labs]) for c in range(3)])
    ref = (lab_mean, lab_std) if p["photometric"] else (None, None)
    labs = [naive_lab(im.astype(np.float32), *ref) for im in imgs]
    framed, covers = [], []
    for lab, pose in zip(labs, poses, strict=True):
        f, _, conf = naive_frame(lab, pose, labs[0], p["border_margin"])
        framed.append(f)
        covers.append(conf)  # a shot's evidence: its seam confidence
    feats = np.stack([filter_bank(f, 2, 4).astype(np.float64) for f in framed])  # K, 36, 8, 8
    valid = np.stack([cell_means(c) > 0.99 for c in covers])
    rows = flat(feats)
    std = rows.std(0)
    feat_mean, feat_std = rows.mean(0), std + 1e-3 * (std.mean() + 1e-6)
    group = np.tile(np.repeat([0, 1], 9), 2) if p["scale_fusion"] != "joint" else np.zeros(36, np.int64)
    n_groups = int(group.max()) + 1
    z = (feats - feat_mean[None, :, None, None]) / feat_std[None, :, None, None]
    per = CELLS * CELLS
    keep = None
    if p["memory"] == "global":
        n = max(1, min(int(round(p["coreset_ratio"] * k * per)), p["max_memory"]))
        keep = greedy_coreset(flat(z).astype(np.float32), n)
    out: dict = {"lab_mean": lab_mean, "lab_std": lab_std, "master_lab": labs[0], "feat_mean": feat_mean,
                 "feat_std": feat_std, "group": group, "keep": keep, "covers": covers, "valid": valid}
    per_scale, weights0 = [], None
    for g in range(n_groups):
        zg = z[:, group == g]
        d = zg.shape[1]
        metric = None
        if p["whitening"] > 0 and k > 1:
            res = []
            for i in range(k):
                others = [j for j in range(k) if j != i]
                if p["memory"] == "global":
                    pool = flat(zg[others])
                    n = max(1, int(round(p["coreset_ratio"] * len(pool))))
                    pick = np.random.default_rng(0).choice(len(pool), size=n, replace=False)
                    bank = pool[pick]
                    q = zg[i].reshape(d, -1).T
                    near = np.argmin(((q[:, None] - bank[None]) ** 2).sum(-1), 1)
                    res.append(q - bank[near])
                else:
                    res.append(naive_residuals_local(zg[i], zg[others], p["search_radius"]))
            metric = residual_whitener(np.concatenate(res), 1.0 - p["whitening"])
        dims = max(1, p["global_dims"] // n_groups) if p["global_dims"] else 0
        if p["memory"] == "global" and 0 < dims < d:
            base = metric if metric is not None else np.eye(d)
            wz = np.stack([(base @ zz.reshape(d, -1)) for zz in zg])  # K, d, h·w
            _, vecs = np.linalg.eigh(np.cov(wz.transpose(0, 2, 1).reshape(-1, d), rowvar=False))
            metric = vecs[:, ::-1][:, :dims].T @ base

        def project(zz: np.ndarray, metric: np.ndarray | None = metric) -> np.ndarray:
            return zz if metric is None else (metric @ zz.reshape(zz.shape[0], -1)).reshape(-1, CELLS, CELLS)

        fg = np.stack([project(zz) for zz in zg])
        maps, weights = [], []
        for i in range(k):
            others = [j for j in range(k) if j != i] if k > 1 else [0]
            if k > 1:
                query = fg[i]
            else:
                jl = naive_lab(naive_jitter(imgs[0]).astype(np.float32), *ref)
                jz = (filter_bank(jl, 2, 4) - feat_mean[:, None, None]) / feat_std[:, None, None]
                query = project(jz[group == g])
            valid_i = valid[others]
            if p["memory"] == "local":
                dist = naive_local(query, fg[others], p["search_radius"], valid_i)
            else:
                dist = naive_global(query, flat(fg)[owned(keep, others, per)])
            amap = resize_map(dist, (SIZE, SIZE)).astype(np.float64)
            reach = np.repeat(np.repeat(dilate3(valid_i.any(0)), 4, 0), 4, 1)
            weights.append(covers[i] * reach * np.isfinite(amap))
            maps.append(np.nan_to_num(amap))
        raw, w = np.stack(maps), np.stack(weights)
        if p["memory"] == "local":
            bank_g = fg
        else:
            bank_g = flat(fg)[owned(keep, list(range(k)), per)]
        if p["memory"] == "local" and p["variation_model"]:
            scale = positional_scale(raw, w, p["variation_sigma"]).astype(np.float64)
            normalised = [raw[i] / positional_scale(raw[[j for j in range(k) if j != i] if k > 1 else [i]],
                                                    w[[j for j in range(k) if j != i] if k > 1 else [i]],
                                                    p["variation_sigma"]) for i in range(k)]
        else:
            scale = max(float(np.median(raw[w > 0.5])) if (w > 0.5).any() else 1.0, 1e-6)
            normalised = [m / scale for m in raw]
        out[f"metric_{g}"], out[f"bank_{g}"], out[f"scale_{g}"], out[f"raw_{g}"] = metric, bank_g, scale, raw
        out[f"project_{g}"] = project
        per_scale.append(normalised)
        weights0 = w if weights0 is None else weights0
    out["n_groups"] = n_groups
    out["loo_maps"] = np.stack([naive_fuse([m[i] for m in per_scale], p["scale_fusion"]) for i in range(k)])
    out["loo_weight"] = weights0
    out["threshold"] = naive_threshold(out["loo_maps"], weights0, p["smoothing_sigma"], p["calibration_margin"])
    return out


def naive_fuse(maps: list[np.ndarray], fusion: str) -> np.ndarray:
    return np.max(maps, 0) if fusion == "max" else np.mean(maps, 0)


def naive_threshold(loo_maps: np.ndarray, weights: np.ndarray, sigma: float, margin: float) -> float:
    worst = max(float(gaussian_smooth((m * w).astype(np.float32), sigma).max()) for m, w in zip(loo_maps, weights))
    return margin * max(worst, 1e-6)


def naive_analyse(st: dict, image: np.ndarray, p: dict, pose: np.ndarray | None) -> np.ndarray:
    """The raw map of ``analyse`` from the re-derived state (image already at the working size)."""
    rgb = image.astype(np.float64) / 255.0
    ref = (st["lab_mean"], st["lab_std"]) if p["photometric"] else (None, None)
    framed, _, conf = naive_frame(naive_lab(rgb.astype(np.float32), *ref), pose, st["master_lab"], p["border_margin"])
    z = (filter_bank(framed, 2, 4) - st["feat_mean"][:, None, None]) / st["feat_std"][:, None, None]
    maps = []
    for g in range(st["n_groups"]):
        q = st[f"project_{g}"](z[st["group"] == g])
        if p["memory"] == "local":
            dist = naive_local(q, st[f"bank_{g}"], p["search_radius"], None)
        else:
            dist = naive_global(q, st[f"bank_{g}"])
        maps.append(resize_map(dist, (SIZE, SIZE)) / st[f"scale_{g}"])
    fused = naive_fuse(maps, p["scale_fusion"]) * conf
    if pose is None:
        return fused
    return naive_warp(fused, np.linalg.inv(np.vstack([scaled(pose), [0, 0, 1]]))[:2], "replicate")


DEFAULTS = {"photometric": True, "border_margin": 8.0, "scale_fusion": "joint", "coreset_ratio": 0.1,
            "max_memory": 2048, "whitening": 0.9, "global_dims": 32, "search_radius": 1, "variation_model": True,
            "variation_sigma": 8.0, "smoothing_sigma": 4.0, "calibration_margin": 1.3}


class FakePose:
    """Stands in for estimate_pose: returns the queued poses in call order and records its arguments."""

    def __init__(self, poses: list[np.ndarray]) -> None:
        self.poses = [np.array(p, np.float64) for p in poses]
        self.calls: list[tuple[np.ndarray, np.ndarray, str, float]] = []

    def __call__(self, moving: np.ndarray, fixed: np.ndarray, mode: str, max_rotation_deg: float) -> np.ndarray:
        self.calls.append((moving, fixed, mode, max_rotation_deg))
        if mode == "none":  # what estimate_pose itself returns then
            return np.array([[1.0, 0, 0], [0, 1.0, 0]])
        return self.poses.pop(0).copy()


def shift(dx: float, dy: float) -> np.ndarray:
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]])


# (name, variation parameters, shot seeds, poses at 128 px (None: no alignment), test image seed, its pose)
CASES = {
    "global_texture": ({"alignment": "none", "memory": "global", "coreset_ratio": 0.25, "max_memory": 16,
                        "global_dims": 12, "whitening": 0.9}, [1, 2, 3], None, 9, None),
    "global_single": ({"alignment": "none", "memory": "global", "coreset_ratio": 0.5, "max_memory": 16,
                       "global_dims": 4, "photometric": False, "smoothing_sigma": 2.0}, [4], None, 10, None),
    "global_one_patch": ({"alignment": "none", "memory": "global", "coreset_ratio": 0.01, "global_dims": 0,
                          "whitening": 0.0}, [21], None, 22, None),
    "global_mean_fusion": ({"alignment": "none", "memory": "global", "coreset_ratio": 0.3, "global_dims": 1,
                            "whitening": 0.0, "scale_fusion": "mean", "calibration_margin": 1.7},
                           [5, 6], None, 11, None),
    "local_translation": ({"alignment": "translation", "memory": "local", "whitening": 0.5, "scale_fusion": "mean",
                           "border_margin": 2.0, "variation_sigma": 3.0, "max_rotation_deg": 7.0},
                          [7, 8, 9], [shift(0, 0), shift(2, -4), shift(-6, 2)], 12, shift(4, 2)),
    "local_rigid_nan": ({"alignment": "rigid", "memory": "local", "search_radius": 0, "variation_model": False,
                         "scale_fusion": "max", "border_margin": 2.0, "max_rotation_deg": 5.0},
                        [13, 14], [shift(0, 0), shift(-6, 0)], 15, shift(-2, 6)),
    "local_far_shift": ({"alignment": "translation", "memory": "local", "search_radius": 2, "border_margin": 2.0,
                         "whitening": 0.3, "variation_sigma": 2.5},
                        [18, 19], [shift(0, 0), shift(-28, -28)], 20, shift(0, 0)),
    # one cell of the shifted shot has a mean confidence of exactly 0.99 (not trusted: > 0.99 is)
    "local_seam_boundary": ({"alignment": "translation", "memory": "local", "search_radius": 0, "border_margin": 25.0,
                             "variation_model": False}, [23, 24], [shift(0, 0), shift(2, 0)], 25, shift(2, 2)),
    # the second shot is almost entirely out of view: no weight above 0.5, the spread defaults to 1
    "local_hopeless": ({"alignment": "translation", "memory": "local", "border_margin": 4.0, "variation_model": False},
                       [26, 27], [shift(0, 0), shift(-120, 0)], 28, shift(-2, 0)),
    "local_single": ({"alignment": "none", "memory": "local", "variation_sigma": 2.0}, [16], None, 17, None),
}


@functools.cache
def expected(name: str) -> tuple[dict, np.ndarray]:
    """The re-derived state and test-image raw map of a case (computed once per process)."""
    settings, seeds, poses, test_seed, test_pose = CASES[name]
    p = {**DEFAULTS, **settings}
    want = naive_prepare([shot(s) for s in seeds], p, poses or [None] * len(seeds))
    return want, naive_analyse(want, shot(test_seed), p, test_pose)


def run_case(name: str, folder: Path, monkeypatch: pytest.MonkeyPatch):
    settings, seeds, poses, test_seed, test_pose = CASES[name]
    p = {**DEFAULTS, **settings}
    shots = [shot(s) for s in seeds]
    fake = FakePose([*(poses or []), *([test_pose] if test_pose is not None else [])])
    monkeypatch.setattr(vd, "estimate_pose", fake)
    profile = make_profile(folder, shots, working_size=SIZE, **settings)
    det = VariationDetector()
    reports: list[tuple[float, str]] = []
    det.prepare(profile, None, lambda f, m: reports.append((f, m)))
    return det, expected(name)[0], p, shots, fake, reports, test_seed, test_pose


TOL = 1e-4  # float32 product vs float64 re-derivation: the differences seen are ~3e-6 of the largest value


def close(got: np.ndarray | float, want: np.ndarray | float, tol: float = TOL) -> None:
    want = np.asarray(want, np.float64)
    atol = tol * max(float(np.abs(want).max()), 1e-12)
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=tol, atol=atol)


def assert_metric(got: np.ndarray, want: np.ndarray) -> None:
    """Whiteners agree up to the sign of each (principal) row: compare WᵀW."""
    close(got.astype(np.float64).T @ got, want.T @ want)


def assert_bank(got: np.ndarray, want: np.ndarray, rotated: bool) -> None:
    if rotated:  # principal coordinates known up to sign: the rows' inner products
        close(got.astype(np.float64) @ got.T, want @ want.T)
    else:
        close(got, want)


# ----------------------------------------------------------------------------- prepare, analyse, finish end to end
@pytest.mark.parametrize("name", list(CASES))
def test_prepare_analyse_finish_match_the_rederivation(name: str, tmp_path: Path, cache_home: Path,  # noqa: F811
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    det, want, p, shots, fake, reports, test_seed, test_pose = run_case(name, tmp_path / name, monkeypatch)
    settings = CASES[name][0]
    k, n_groups = len(shots), want["n_groups"]
    mode, alignment = settings["memory"], settings["alignment"]
    rotated = mode == "global" and 0 < (max(1, p["global_dims"] // n_groups) if p["global_dims"] else 0)
    # what is cached: exactly these arrays
    learned = {f"{kind}_{g}" for g in range(n_groups) for kind in ("bank", "scale")}
    learned |= {f"whitener_{g}" for g in range(n_groups) if want[f"metric_{g}"] is not None}
    assert set(det.state) == {"mode", "alignment", "structure_share", "master", "master_lab", "lab_mean", "lab_std",
                              "feat_mean", "feat_std", "group", "loo_maps", "loo_weight"} | learned
    assert (det.mode, det.alignment, det.scales) == (mode, alignment, n_groups)
    assert (str(det.state["mode"]), str(det.state["alignment"])) == (mode, alignment)
    share = float(np.median([structure_share(to_lab(s.astype(np.float32) / 255)) for s in shots]))
    assert det.state["structure_share"].dtype == np.float32
    assert float(det.state["structure_share"]) == pytest.approx(share, rel=1e-5)
    close(det.state["master"], align_image(shots[0].astype(np.float32) / 255), 1e-5)
    close(det.state["lab_mean"], want["lab_mean"], 1e-5)
    close(det.state["lab_std"], want["lab_std"], 1e-5)
    assert det.state["lab_mean"].dtype == det.state["lab_std"].dtype == np.float32
    close(det.state["master_lab"], want["master_lab"], 1e-5)
    close(det.state["feat_mean"], want["feat_mean"], 1e-5)
    np.testing.assert_allclose(det.state["feat_std"], want["feat_std"], rtol=1e-5)
    assert det.state["feat_mean"].dtype == det.state["feat_std"].dtype == np.float32
    assert det.state["group"].tolist() == want["group"].tolist()
    for g in range(n_groups):
        if want[f"metric_{g}"] is not None:
            assert det.state[f"whitener_{g}"].dtype == np.float32
            assert det.state[f"whitener_{g}"].shape == want[f"metric_{g}"].shape
            assert_metric(det.state[f"whitener_{g}"], want[f"metric_{g}"])
        bank = det.state[f"bank_{g}"]
        assert bank.dtype == np.float32 and bank.shape == want[f"bank_{g}"].shape
        assert_bank(bank, want[f"bank_{g}"], rotated)
        assert det._banks[g].dtype == np.float32 and np.array_equal(det._banks[g], bank)
        scale = det.state[f"scale_{g}"]
        assert scale.dtype == np.float32
        close(scale, want[f"scale_{g}"])
    assert len(det._banks) == n_groups
    assert det.state["loo_weight"].dtype == np.float32
    np.testing.assert_allclose(det.state["loo_weight"], want["loo_weight"], atol=1e-6)
    if name == "local_hopeless":  # shot 1 is mostly the first shot's fill: float32 ‖q‖² + ‖b‖² − 2q·b of ~equal patches
        np.testing.assert_allclose(det.state["loo_maps"], want["loo_maps"], rtol=TOL, atol=0.02)
    else:
        close(det.state["loo_maps"], want["loo_maps"])
    assert det.threshold == pytest.approx(want["threshold"], rel=TOL)
    # the progress reports, in order
    steps = [(0.0, "hashing reference shots")]
    steps += [(0.05 + 0.15 * (i + 1) / k, f"reading reference {i + 1}/{k}") for i in range(k)]
    steps += [(0.25, "aligning references"), (0.35, "describing references")]
    steps += [(0.38, "selecting the patch memory")] if mode == "global" else []
    steps += [(0.4 + 0.55 * (g + 1) / n_groups, f"calibrating scale {g + 1}/{n_groups}") for g in range(n_groups)]
    steps += [(1.0, "references ready")]
    assert [m for _, m in reports] == [m for _, m in steps]
    np.testing.assert_allclose([f for f, _ in reports], [f for f, _ in steps], rtol=1e-12)
    # registration: every shot, then the test image, against the first shot's edge image
    rotation = settings.get("max_rotation_deg", 20.0)
    assert len(fake.calls) == k
    for (moving, fixed, m, rot), s in zip(fake.calls, shots, strict=True):
        np.testing.assert_allclose(moving, align_image(s.astype(np.float32) / 255), rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(fixed, det.state["master"])
        assert (m, rot) == (alignment, rotation)
    # analyse
    image = shot(test_seed)
    analysis = det.analyse(image)
    want_raw = expected(name)[1]
    assert analysis.raw_map.dtype == np.float32 and analysis.raw_map.shape == (SIZE, SIZE)
    close(analysis.raw_map, want_raw)
    if test_pose is None:
        assert analysis.pose.tolist() == [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
        assert len(fake.calls) == k  # no registration when there is no alignment
    else:
        assert analysis.pose.tolist() == test_pose.tolist()
        moving, fixed, m, rot = fake.calls[k]
        np.testing.assert_allclose(moving, align_image(image.astype(np.float32) / 255), rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(fixed, det.state["master"])
        assert (m, rot) == (alignment, rotation)
    assert set(analysis.timings) == {"align", "features", "search"}
    # finish at another image size
    big = cv2.resize(image, (48, 40), interpolation=cv2.INTER_LINEAR)
    out = det.finish(VariationAnalysis(raw_map=analysis.raw_map, pose=analysis.pose, timings=analysis.timings), big)
    smooth = gaussian_smooth(analysis.raw_map, p["smoothing_sigma"]).astype(np.float64)
    norm = np.clip(smooth / (2 * det.threshold), 0, 1)
    assert out.image_score == pytest.approx(float(norm.max()), rel=1e-5)
    amap = naive_linear(norm[..., None], 40, 48)[..., 0]
    np.testing.assert_allclose(out.anomaly_map, amap, atol=1e-4)
    assert out.extras == {"raw_threshold": det.threshold, "mode": mode, "alignment": alignment,
                          "pose": analysis.pose.tolist()}


def test_a_single_reference_is_judged_against_its_jittered_copy(tmp_path: Path, cache_home: Path,  # noqa: F811
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The k = 1 stand-in query: 1 px right and down, 4 % brighter (checked apart from the rest)."""
    rgb = shot(3).astype(np.float32) / 255
    got = vd._jitter(rgb)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, naive_jitter(rgb.astype(np.float64)), atol=1e-6)
    top = np.ones((4, 4, 3), np.float32) * 0.99  # clipped at 1
    assert np.array_equal(vd._jitter(top), np.ones((4, 4, 3)))


# ----------------------------------------------------------------------------- prepare: cache, progress, errors, log
def test_prepare_caches_under_the_documented_key_and_reports_a_hit(tmp_path: Path, cache_home: Path,  # noqa: F811
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    shots = [shot(21), shot(22)]
    profile = make_profile(tmp_path / "c", shots, working_size=SIZE, alignment="none", memory="global",
                           smoothing_sigma=1.5, calibration_margin=2.0)
    with caplog.at_level("INFO", logger="inspector.detect.variation.detector"):
        first = VariationDetector()
        first.prepare(profile, None)  # no progress callback
    share = float(np.median([structure_share(to_lab(s.astype(np.float32) / 255)) for s in shots]))
    assert [r.getMessage() for r in caplog.records if r.name == "inspector.detect.variation.detector"] == [
        f"variation: 2 references, structure share {share:.2f} -> alignment none, memory global"]
    assert first.cache_hit is False
    shaping = profile.variation.model_dump()
    del shaping["smoothing_sigma"], shaping["calibration_margin"]
    key = cache_key(3, [file_sha256(p) for p in profile.reference_paths()], shaping)
    assert sorted(p.name for p in (cache_home / "cache" / "variation").iterdir()) == [f"{key}.npz"]
    reports: list[tuple[float, str]] = []
    second = VariationDetector()
    second.prepare(profile, None, lambda f, m: reports.append((f, m)))
    assert second.cache_hit is True
    assert reports == [(0.0, "hashing reference shots"), (1.0, "references ready (cached)")]
    assert set(second.state) == set(first.state)
    for name, value in first.state.items():
        np.testing.assert_array_equal(second.state[name], value)
    assert second.threshold == first.threshold and (second.mode, second.alignment) == ("global", "none")
    assert describe(second) == {"mode": "global", "alignment": "none",
                                "structure_share": pytest.approx(share, rel=1e-6),
                                "raw_threshold": second.threshold, "scales": 1, "cache_hit": True}


def test_prepare_errors_name_the_profile_and_the_shot(tmp_path: Path, cache_home: Path) -> None:  # noqa: F811
    empty = make_profile(tmp_path / "e", [], working_size=SIZE)
    msg = ("profile 't': the variation pipeline needs at least one reference shot; "
           "add good images to reference_shots (1-16, 4 recommended)")
    with pytest.raises(VariationError, match=f"^{re.escape(msg)}$"):
        VariationDetector().prepare(empty, None)
    broken = make_profile(tmp_path / "b", [shot(1), shot(2)], working_size=SIZE)
    bad = broken.reference_paths()[1]
    bad.write_bytes(b"not an image")
    with pytest.raises(Exception) as read:
        read_image(bad)
    with pytest.raises(VariationError, match=f"^{re.escape(f'reference shot {bad}: {read.value}')}$") as err:
        VariationDetector().prepare(broken, None)
    assert type(err.value.__cause__) is type(read.value)
    gone = make_profile(tmp_path / "g", [shot(1)], working_size=SIZE)
    missing = gone.reference_paths()[0]
    missing.unlink()
    unread = f"profile 't': reference shot {missing}: cannot read ("
    with pytest.raises(VariationError, match=f"^{re.escape(unread)}"):
        VariationDetector().prepare(gone, None)
    with pytest.raises(RuntimeError, match=r"^VariationDetector\.analyse called before prepare\(\)$"):
        VariationDetector().analyse(shot(1))
    with pytest.raises(AssertionError, match=r"^prepare\(\) first$"):
        VariationDetector().params  # noqa: B018


def test_a_new_detector_describes_its_defaults() -> None:
    det = VariationDetector()
    got = describe(det)
    assert math.isnan(got.pop("structure_share"))
    assert got == {"mode": "global", "alignment": "none", "raw_threshold": 1.0, "scales": 0, "cache_hit": False}
    assert det.state == {} and det.scales == 0


def test_reading_the_references_gives_the_working_images_and_their_lab_statistics(tmp_path: Path) -> None:
    big = [shot(23, 64), shot(24, 64)]
    profile = make_profile(tmp_path / "r", big, working_size=SIZE)
    det = VariationDetector()
    det.profile = profile
    reports: list[tuple[float, str]] = []
    imgs = det._read_references(profile.reference_paths(), lambda f, m: reports.append((f, m)))
    want = [s.astype(np.float64).reshape(SIZE, 2, SIZE, 2, 3).mean((1, 3)) / 255 for s in big]  # 2×2 area means
    assert len(imgs) == 2
    for got, w in zip(imgs, want, strict=True):
        assert got.shape == (SIZE, SIZE, 3)
        close(got, w, 1 / 255)
    labs = [to_lab(im).astype(np.float64) for im in imgs]
    assert set(det.state) == {"lab_mean", "lab_std"}
    close(det.state["lab_mean"], [np.mean([lab[..., c] for lab in labs]) for c in range(3)], 1e-5)
    close(det.state["lab_std"], [np.std([lab[..., c] for lab in labs]) for c in range(3)], 1e-5)
    assert det.state["lab_mean"].dtype == det.state["lab_std"].dtype == np.float32
    assert reports == [(pytest.approx(0.125), "reading reference 1/2"), (pytest.approx(0.2), "reading reference 2/2")]


# ----------------------------------------------------------------------------- the auto choices
def test_auto_alignment_and_memory_follow_the_median_structure_share() -> None:
    imgs = [shot(s).astype(np.float32) / 255 for s in (25, 26, 27)]
    shares = sorted(structure_share(to_lab(im)) for im in imgs)
    median = float(np.median(shares))
    assert shares[0] < median < shares[2]

    def choose(**v: object) -> tuple[str, str, float]:
        det = detector(**v)
        det._choose_memory(imgs)
        assert (str(det.state["mode"]), str(det.state["alignment"])) == (det.mode, det.alignment)
        assert det.state["structure_share"].dtype == np.float32
        return det.mode, det.alignment, float(det.state["structure_share"])

    # a texture is share < threshold: at equality, an object
    assert choose(texture_threshold=median) == ("local", "rigid", pytest.approx(median, rel=1e-6))
    assert choose(texture_threshold=median + 1e-6)[:2] == ("global", "none")
    mean = float(np.mean(shares))
    between = (min(mean, median) + max(mean, median)) / 2  # the median decides, not the mean
    assert choose(texture_threshold=between)[:2] == (("local", "rigid") if median > mean else ("global", "none"))
    assert choose(alignment="translation")[:2] == ("local", "translation")
    assert choose(alignment="none")[:2] == ("global", "none")
    assert choose(alignment="none", memory="local")[:2] == ("local", "none")
    assert choose(alignment="rigid", memory="global")[:2] == ("global", "rigid")
    assert choose(memory="global", texture_threshold=1.0)[:2] == ("global", "none")
    assert choose(memory="local", texture_threshold=0.0)[:2] == ("local", "rigid")


# ----------------------------------------------------------------------------- memories by hand
def test_make_bank_local_is_the_grid_as_float32() -> None:
    feats = np.arange(2 * 3 * 2 * 2, dtype=np.float64).reshape(2, 3, 2, 2)
    got = VariationDetector._make_bank(feats[:, :, ::-1], "local", 0.5)
    assert got.dtype == np.float32 and got.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(got, feats[:, :, ::-1])


def test_make_bank_keeps_the_owners_coreset_rows_in_slot_order() -> None:
    # two references' grids (2×2 cells, d = 2) standing for references 0 and 2 of three;
    # value = 100·slot + 10·cell + dim
    feats = np.zeros((2, 2, 2, 2))
    for slot in range(2):
        for cell in range(4):
            for dim in range(2):
                feats[slot, dim, cell // 2, cell % 2] = 100 * slot + 10 * cell + dim
    keep = np.array([5, 0, 8, 3, 4, 11, 7, 2, 9])  # per = 4: reference 0 owns 0..3, 1 owns 4..7, 2 owns 8..11
    got = VariationDetector._make_bank(feats, "global", 0.5, keep=keep, owners=[0, 2])
    assert got.dtype == np.float32 and got.flags["C_CONTIGUOUS"]
    # reference 0 (slot 0): cells 0, 3, 2; reference 2 (slot 1): cells 0, 3, 1
    want = [[100 * s + 10 * c, 100 * s + 10 * c + 1] for s, c in [(0, 0), (0, 3), (0, 2), (1, 0), (1, 3), (1, 1)]]
    assert got.tolist() == want
    one = VariationDetector._make_bank(feats[1:], "global", 0.5, keep=keep, owners=[1])
    assert one.tolist() == [[100 + 10 * c, 100 + 10 * c + 1] for c in (1, 0, 3)]  # 5, 4, 7 of reference 1


def test_make_bank_global_without_a_shared_coreset() -> None:
    rng = np.random.default_rng(28)
    feats = rng.standard_normal((3, 5, 2, 2))  # 12 patches of d = 5
    rows = feats.transpose(0, 2, 3, 1).reshape(12, 5)
    got = VariationDetector._make_bank(feats, "global", 0.3)  # round(3.6) = 4 patches, greedy
    assert got.dtype == np.float32 and got.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(got, rows[greedy_coreset(rows, 4)].astype(np.float32))
    np.testing.assert_array_equal(VariationDetector._make_bank(feats, "global", 0.01),  # at least one patch
                                  rows[greedy_coreset(rows, 1)].astype(np.float32))
    pick = np.random.default_rng(0).choice(12, size=4, replace=False)
    np.testing.assert_array_equal(VariationDetector._make_bank(feats, "global", 0.3, greedy=False),
                                  rows[pick].astype(np.float32))
    np.testing.assert_array_equal(VariationDetector._make_bank(feats, "global", 1.0, greedy=False),
                                  rows[np.random.default_rng(0).choice(12, size=12, replace=False)].astype(np.float32))
    # owners without a coreset (or a coreset without owners): the bank's own selection
    np.testing.assert_array_equal(VariationDetector._make_bank(feats, "global", 0.3, owners=[0, 1, 2]),
                                  rows[greedy_coreset(rows, 4)].astype(np.float32))
    np.testing.assert_array_equal(VariationDetector._make_bank(feats, "global", 0.3, keep=np.arange(12)),
                                  rows[greedy_coreset(rows, 4)].astype(np.float32))


# ----------------------------------------------------------------------------- the helpers on a constructed state
def test_lab_matches_photometry_only_when_asked_and_learned() -> None:
    rgb = shot(29).astype(np.float32) / 255
    mean, std = np.array([40.0, 5.0, -3.0], np.float32), np.array([9.0, 2.0, 2.0], np.float32)
    det = detector(photometric=True)
    close(det._lab(rgb), naive_lab(rgb, None, None), 1e-6)  # nothing learned yet
    det.state = {"lab_mean": mean, "lab_std": std}
    close(det._lab(rgb), naive_lab(rgb, mean, std), 1e-5)
    off = detector(photometric=False)
    off.state = {"lab_mean": mean, "lab_std": std}
    close(off._lab(rgb), naive_lab(rgb, None, None), 1e-6)


def test_reference_frame_warps_fill_and_back() -> None:
    rng = np.random.default_rng(30)
    lab = rng.uniform(0, 50, (SIZE, SIZE, 3)).astype(np.float32)
    master = rng.uniform(50, 100, (SIZE, SIZE, 3)).astype(np.float32)
    det = detector(border_margin=3.0)
    det.state = {"master_lab": master}
    same, conf = det._to_reference_frame(lab, shift(6, -2))  # alignment "none": as is
    assert same is lab and conf.dtype == np.float32 and conf.shape == (SIZE, SIZE) and (conf == 1).all()
    amap = rng.uniform(0, 1, (SIZE, SIZE)).astype(np.float32)
    assert det._from_reference_frame(amap, shift(6, -2)) is amap
    det.alignment = "translation"
    pose = shift(6, -2)  # 1.5 px right, 0.5 px up at 32 px
    framed, conf = det._to_reference_frame(lab, pose)
    want, cover, want_conf = naive_frame(lab, pose, master, 3.0)
    assert framed.dtype == np.float32 and conf.dtype == np.float32
    assert cover.min() == 0.0 and 0 < cover[5, 1] < 1  # the left columns are (partly) not shown
    close(framed, want, 1e-6)
    np.testing.assert_array_equal(conf, want_conf)
    back = det._from_reference_frame(amap, pose)
    close(back, naive_warp(amap, np.linalg.inv(np.vstack([scaled(pose), [0, 0, 1]]))[:2], "replicate"), 1e-6)


def test_zscore_project_raw_map_and_fuse_by_hand() -> None:
    rng = np.random.default_rng(31)
    feats = rng.normal(3, 2, (4, 3, 3)).astype(np.float32)
    det = detector(search_radius=1, scale_fusion="max")
    mean, std = np.array([1.0, -2.0, 0.5, 3.0], np.float32), np.array([2.0, 0.5, 1.0, 4.0], np.float32)
    whitener = rng.standard_normal((3, 2)).astype(np.float32)
    det.state = {"feat_mean": mean, "feat_std": std, "group": np.array([1, 0, 1, 0]), "whitener_1": whitener}
    z = det._zscore(feats)
    assert z.dtype == np.float32
    close(z, (feats.astype(np.float64) - mean[:, None, None]) / std[:, None, None], 1e-6)
    plain = det._project(z, 0)  # no whitener learned for scale 0: its dimensions 1 and 3 as they are
    assert plain.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(plain, z[[1, 3]])
    white = det._project(z, 1)
    assert white.dtype == np.float32 and white.shape == (3, 3, 3) and white.flags["C_CONTIGUOUS"]
    close(white, np.einsum("ed,dhw->ehw", whitener.astype(np.float64), z[[0, 2]].astype(np.float64)), 1e-6)
    # distance maps at the working size, local (± radius, every cell valid unless told) and global
    query = rng.standard_normal((2, 4, 4)).astype(np.float32)
    bank = rng.standard_normal((2, 2, 4, 4)).astype(np.float32)
    det.mode = "local"
    valid = np.ones((2, 4, 4), bool)
    valid[:, :, :2] = False
    q64, b64 = query.astype(np.float64), bank.astype(np.float64)
    close(det._raw_map(query, bank, 8), resize_map(naive_local(q64, b64, 1, None), (8, 8)), 1e-5)
    got = det._raw_map(query, bank, 8, valid)
    want = resize_map(naive_local(q64, b64, 1, valid), (8, 8))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert np.isnan(want).any()
    close(got[~np.isnan(want)], want[~np.isnan(want)], 1e-5)
    det.mode = "global"
    rows = rng.standard_normal((5, 2)).astype(np.float32)
    close(det._raw_map(query, rows, 8, valid), resize_map(naive_global(q64, rows.astype(np.float64)), (8, 8)), 1e-5)
    maps = [rng.uniform(0, 1, (3, 3)) for _ in range(3)]
    fused = det._fuse(maps)
    assert fused.dtype == np.float32
    close(fused, np.max(maps, 0), 1e-6)
    close(detector(scale_fusion="mean")._fuse(maps), np.mean(maps, 0), 1e-6)
    close(detector(scale_fusion="joint")._fuse(maps[:1]), maps[0], 1e-6)


def test_adopt_reads_mode_memories_and_threshold() -> None:
    rng = np.random.default_rng(32)
    loo = rng.uniform(0, 1, (2, 8, 8))
    weight = np.ones((2, 8, 8))
    weight[1, :, :3] = 0
    arrays = {"mode": np.array("local"), "alignment": np.array("rigid"), "group": np.array([0, 1, 0, 1]),
              "bank_0": rng.standard_normal((2, 2, 8, 8))[:, :, ::2], "bank_1": rng.standard_normal((2, 2, 4, 8)),
              "loo_maps": loo, "loo_weight": weight}
    det = detector(smoothing_sigma=1.0, calibration_margin=1.5)
    det._adopt(arrays)
    assert det.state == arrays and det.state is not arrays
    assert (det.mode, det.alignment, det.scales) == ("local", "rigid", 2)
    assert len(det._banks) == 2
    for g in range(2):
        assert det._banks[g].dtype == np.float32 and det._banks[g].flags["C_CONTIGUOUS"]
        close(det._banks[g], arrays[f"bank_{g}"], 1e-6)
    worst = max(float(gaussian_smooth((m * w).astype(np.float32), 1.0).max()) for m, w in zip(loo, weight))
    assert det.threshold == pytest.approx(1.5 * worst, rel=1e-6)


# ----------------------------------------------------------------------------- finish and retune
def test_finish_by_hand_single_pixel_region_and_copied_timings() -> None:
    det = detector(smoothing_sigma=0.0)
    det.profile.decision.pixel_threshold = 0.3
    det.threshold = 2.5
    det.mode, det.alignment = "local", "rigid"
    raw = np.zeros((8, 8), np.float32)
    raw[2, 5] = 2.0  # 2 / (2·2.5) = 0.4 ≥ 0.3: a region of one pixel
    raw[6, 1] = 1.0  # 0.2 < 0.3
    raw[6, 6] = 9.0  # clipped to 1
    raw[7, 6] = 1.75  # 0.35: joins (6, 6)
    timings = {"align": 0.5, "search": 0.25}
    pose = shift(1.0, -2.0)
    analysis = VariationAnalysis(raw_map=raw, pose=pose, timings=timings)
    out = det.finish(analysis, np.zeros((8, 8, 3), np.uint8))
    assert isinstance(out, Detection)
    want = np.clip(raw.astype(np.float64) / 5.0, 0, 1)
    close(out.anomaly_map, want, 1e-6)
    assert out.image_score == 1.0
    assert [(r.box, r.area_px, r.score) for r in out.regions] == [((6, 6, 7, 8), 2, 1.0),
                                                                  ((5, 2, 6, 3), 1, pytest.approx(0.4))]
    assert out.timings == timings and out.timings is not timings
    assert out.extras == {"raw_threshold": 2.5, "mode": "local", "alignment": "rigid",
                          "pose": [[1.0, 0.0, 1.0], [0.0, 1.0, -2.0]]}
    # the image score is the working map's maximum, before the resize to a smaller image averages it
    small = det.finish(analysis, np.zeros((4, 4, 3), np.uint8))
    assert small.image_score == 1.0 and small.anomaly_map.shape == (4, 4)
    close(small.anomaly_map, want.reshape(4, 2, 4, 2).mean((1, 3)), 1e-6)
    assert small.anomaly_map.max() < 1.0
    # smoothing with the profile's sigma, scaled by 2T
    det2 = detector(smoothing_sigma=1.0)
    det2.threshold = 0.5
    sm = det2.finish(analysis, np.zeros((8, 8, 3), np.uint8))
    close(sm.anomaly_map, np.clip(gaussian_smooth(raw, 1.0).astype(np.float64) / 1.0, 0, 1), 1e-6)
    assert [r.area_px for r in sm.regions] == [r.area_px for r in regions_from_map(sm.anomaly_map, 0.5)]


def test_retune_rescales_and_refuses_what_needs_a_prepare() -> None:
    rng = np.random.default_rng(33)
    loo = rng.uniform(0, 2, (3, 8, 8)).astype(np.float32)
    weight = rng.uniform(0, 1, (3, 8, 8)).astype(np.float32)
    det = detector(smoothing_sigma=1.0, calibration_margin=1.3)
    det.profile.reference_shots = ["references/000.png"]
    det.state = {"loo_maps": loo, "loo_weight": weight}

    def threshold(sigma: float, margin: float) -> float:
        return margin * max(float(gaussian_smooth(m * w, sigma).max()) for m, w in zip(loo, weight))

    new = det.profile.model_copy(deep=True)
    new.variation.smoothing_sigma, new.variation.calibration_margin = 2.0, 1.7
    new.decision.image_threshold = 0.7
    det.retune(new)
    assert det.profile is new
    assert det.threshold == pytest.approx(threshold(2.0, 1.7), rel=1e-6)
    changed = new.model_copy(deep=True)
    changed.variation.search_radius = 3
    msg = "variation parameters other than smoothing_sigma/calibration_margin changed; call prepare() again"
    with pytest.raises(ValueError, match=f"^{re.escape(msg)}$"):
        det.retune(changed)
    moved = new.model_copy(deep=True)
    moved.reference_shots = ["references/001.png"]
    with pytest.raises(ValueError, match=r"^reference shots changed; call prepare\(\) again$"):
        det.retune(moved)
    assert det.profile is new
    # an unprepared detector takes any profile and keeps its threshold
    fresh = detector()
    fresh.retune(changed)
    assert fresh.profile is changed and fresh.threshold == 1.0
    # a state without a profile (adopted directly): nothing to compare with
    bare = VariationDetector()
    bare.state = {"loo_maps": loo, "loo_weight": weight}
    bare.retune(moved)
    assert bare.profile is moved and bare.threshold == pytest.approx(threshold(2.0, 1.7), rel=1e-6)
