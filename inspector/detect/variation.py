"""Weight-free reference pipeline ("variation"): what good looks like, learned from a few shots.

No pretrained network: a fixed multi-scale filter bank (per pyramid level: smoothed L*a*b*, signed and
absolute derivatives, |Laplacian|, chroma gradient; averaged over ``feature_stride`` cells and
concatenated with their 3×3 neighbourhood mean) turns each image into a grid of patch descriptors,
and each test patch is scored by its distance to the nearest reference patch. Two memories, chosen
per profile (``variation.memory``; ``auto`` decides from the references, see :func:`structure_share`):

* **local** (objects, assemblies) — a *variation model*: every image is registered to the first
  reference shot (rotation search with phase correlation on edge images, refined by ECC from the
  best angles); each patch is compared with the references' patches at the same place,
  ± ``search_radius`` patches, and the distance is divided by how much the references themselves
  vary at that place (``variation_model``: leave-one-out spread, smoothed). A missing or
  misplaced part is anomalous even if it looks normal elsewhere. What an aligned image does not
  show is filled in from the first reference and its seam is faded out (``border_margin``).
* **global** (textures) — a *patch memory* (PatchCore-style): every reference patch, thinned by a
  greedy coreset (``coreset_ratio``, at most ``max_memory`` patches), reduced to ``global_dims``
  principal directions; each test patch takes its nearest neighbour anywhere.

``scale_fusion``: ``joint`` (default) scores one descriptor of all pyramid levels; ``mean``/``max``
score each level on its own (own metric, memory and spread) and fuse the normalised maps.

Metric: descriptors are z-scored, then whitened by the covariance of leave-one-out
nearest-neighbour residuals (``whitening``): directions in which good parts differ among
themselves count little, directions in which they agree count much (Mahalanobis on residuals).
Brightness/contrast is matched to the references first (``photometric``).

Score scale (calibrated per profile from the references, never from a test set)
-------------------------------------------------------------------------------
``prepare`` scores every reference shot against the others (leave-one-out; nested for the
variation model) and takes the worst of these normal image scores, ``s_ref`` (the maximum of the
smoothed map). With ``T = calibration_margin × s_ref`` the map is ``raw / (2T)`` clipped to
[0, 1]: **0.5 means "``calibration_margin`` times the worst good reference"**, 0 means identical
to a reference and 1 means at least twice that. The image score is the maximum of the map, so the
profile's default ``decision.image_threshold`` of 0.5 is a sensible PASS/FAIL cut; regions are the
connected parts of the map at or above ``decision.region_threshold``.

Everything ``prepare`` computes is cached on disk (``Settings.cache_dir/variation``) keyed by the
reference images' sha256, the parameters that shape it and :data:`ALGORITHM_VERSION`;
``smoothing_sigma`` and ``calibration_margin`` only rescale and can be retuned without it.
Runs on the CPU (numpy/OpenCV); the work per 256² image is tens of milliseconds.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from inspector.cache import ArrayCache, cache_key
from inspector.detect.base import Detection, Detector, Progress, StageTimer, reference_hashes
from inspector.detect.maps import gaussian_smooth, normalise_map, regions_from_map, resize_map
from inspector.imaging import read_image

if TYPE_CHECKING:  # pragma: no cover
    from inspector.models.hub import ModelHub
    from inspector.params.variation import VariationParams
    from inspector.profile import ProductProfile

log = logging.getLogger(__name__)

ALGORITHM_VERSION = 2
CACHE_NAMESPACE = "variation"
ALIGN_SIZE = 128  # px side of the images used for registration
ROTATION_STEP_DEG = 2.0
ECC_STARTS = 3  # rigid alignment refines this many distinct angles of the search


class VariationError(ValueError):
    """The profile cannot be prepared (no or unreadable reference shots)."""


# =============================================================================== pure functions
def to_working(image: np.ndarray, size: int) -> np.ndarray:
    """RGB uint8 → float32 RGB in [0, 1] at ``size``×``size`` (area filter when shrinking)."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB image HxWx3, got shape {image.shape}")
    h, w = image.shape[:2]
    interp = cv2.INTER_AREA if h > size and w > size else cv2.INTER_LINEAR
    img = image if (h, w) == (size, size) else cv2.resize(image, (size, size), interpolation=interp)
    return img.astype(np.float32) / 255.0


def to_lab(rgb01: np.ndarray) -> np.ndarray:
    """CIE L*a*b* (L in [0, 100]) of float RGB in [0, 1]."""
    return cv2.cvtColor(np.ascontiguousarray(rgb01, dtype=np.float32), cv2.COLOR_RGB2Lab)


def match_photometry(lab: np.ndarray, ref_mean: np.ndarray, ref_std: np.ndarray) -> np.ndarray:
    """Gain/offset of L and offset of a, b so the image's statistics match the references'."""
    out = lab.copy()
    mean = lab.reshape(-1, 3).mean(0)
    std_l = float(lab[..., 0].std())
    gain = float(ref_std[0]) / max(std_l, 1e-3)
    gain = min(max(gain, 0.5), 2.0)  # a real change of contrast is an anomaly, not lighting
    out[..., 0] = (lab[..., 0] - mean[0]) * gain + ref_mean[0]
    out[..., 1:] += ref_mean[1:] - mean[1:]
    return out


def filter_bank(lab: np.ndarray, levels: int, stride: int) -> np.ndarray:
    """Multi-scale colour/gradient responses averaged over ``stride``-px cells: (D, H/stride, W/stride).

    Per pyramid level: smoothed L, a, b; signed and absolute first derivatives of L; the absolute
    Laplacian of L (blobs, thin lines); the chroma gradient magnitude (colour edges).
    """
    h, w = lab.shape[:2]
    out_hw = (max(1, h // stride), max(1, w // stride))
    feats: list[np.ndarray] = []
    cur = np.ascontiguousarray(lab, dtype=np.float32)
    for _ in range(levels):
        sm = cv2.GaussianBlur(cur, (0, 0), 1.0)
        lum = sm[..., 0]
        gx = cv2.Sobel(lum, cv2.CV_32F, 1, 0, ksize=3) * 0.125
        gy = cv2.Sobel(lum, cv2.CV_32F, 0, 1, ksize=3) * 0.125
        lap = cv2.Laplacian(lum, cv2.CV_32F, ksize=3) * 0.25
        ca = cv2.Sobel(sm[..., 1], cv2.CV_32F, 1, 0, ksize=3) ** 2 + cv2.Sobel(sm[..., 1], cv2.CV_32F, 0, 1, ksize=3) ** 2
        cb = cv2.Sobel(sm[..., 2], cv2.CV_32F, 1, 0, ksize=3) ** 2 + cv2.Sobel(sm[..., 2], cv2.CV_32F, 0, 1, ksize=3) ** 2
        chroma = np.sqrt(ca + cb) * 0.125
        maps = [sm[..., 0], sm[..., 1], sm[..., 2], gx, gy, np.abs(gx), np.abs(gy), np.abs(lap), chroma]
        lh, lw = cur.shape[:2]
        interp = cv2.INTER_AREA if lh >= out_hw[0] else cv2.INTER_LINEAR
        stack = np.stack(maps, axis=-1)
        feats.append(cv2.resize(stack, (out_hw[1], out_hw[0]), interpolation=interp).reshape(out_hw[0], out_hw[1], -1))
        if min(lh, lw) < 8:
            break
        cur = cv2.pyrDown(cur)
    grid = np.concatenate(feats, axis=-1)
    # local neighbourhood aggregation (PatchCore eq. 2 with a 3x3 box): shift-tolerant context
    context = cv2.blur(grid, (3, 3), borderType=cv2.BORDER_REFLECT)
    return np.ascontiguousarray(np.concatenate([grid, context], axis=-1).transpose(2, 0, 1))


def scale_groups(dims: int, separate: bool, per_level: int = 9) -> np.ndarray:
    """Scale index of each descriptor dimension in :func:`filter_bank`'s layout ([grid L0..Ln, context L0..Ln]).

    With ``separate`` each pyramid level (its cell and context responses) is scored on its own and
    the per-scale maps are fused; otherwise all dimensions form one descriptor.
    """
    if not separate or dims % (2 * per_level):
        return np.zeros(dims, np.int64)
    levels = dims // (2 * per_level)
    per = np.repeat(np.arange(levels), per_level)
    return np.concatenate([per, per]).astype(np.int64)


def structure_share(lab: np.ndarray, blocks: int = 16) -> float:
    """Share of the L variance explained by a coarse ``blocks``×``blocks`` layout (texture → ~0)."""
    lum = lab[..., 0]
    coarse = cv2.resize(lum, (blocks, blocks), interpolation=cv2.INTER_AREA)
    return float(coarse.var() / max(float(lum.var()), 1e-9))


def _align_image(rgb01: np.ndarray) -> np.ndarray:
    """Standardised edge strength at ALIGN_SIZE²: what registration matches (robust to lighting)."""
    grey = cv2.cvtColor(rgb01, cv2.COLOR_RGB2GRAY)
    grey = cv2.resize(grey, (ALIGN_SIZE, ALIGN_SIZE), interpolation=cv2.INTER_AREA)
    grey = cv2.GaussianBlur(grey, (0, 0), 1.0)
    edges = cv2.magnitude(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1))
    return ((edges - edges.mean()) / (edges.std() + 1e-6)).astype(np.float32)


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    return float((a * b).sum() / (np.sqrt((a * a).sum() * (b * b).sum()) + 1e-12))


def _rotation(angle_deg: float, centre: float) -> np.ndarray:
    return cv2.getRotationMatrix2D((centre, centre), angle_deg, 1.0).astype(np.float64)


def _compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """2x3 affine of ``outer ∘ inner``."""
    a = np.vstack([outer, [0, 0, 1]])
    b = np.vstack([inner, [0, 0, 1]])
    return (a @ b)[:2]


def _ecc(fixed: np.ndarray, moving: np.ndarray, init: np.ndarray, iterations: int) -> tuple[float, np.ndarray] | None:
    """ECC (Euclidean) refinement of ``init`` (moving -> fixed); None when it does not converge."""
    try:
        cc, warp = cv2.findTransformECC(
            fixed, moving, cv2.invertAffineTransform(init).astype(np.float32), cv2.MOTION_EUCLIDEAN,
            (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, iterations, 1e-4), None, 1,
        )
    except cv2.error:
        return None
    refined = cv2.invertAffineTransform(warp).astype(np.float64)
    if np.abs(refined[:, 2] - init[:, 2]).max() > fixed.shape[0] / 8:  # ran away
        return None
    return float(cc), refined


def estimate_pose(moving: np.ndarray, fixed: np.ndarray, mode: str, max_rotation_deg: float) -> np.ndarray:
    """2x3 affine taking ``moving`` pixel coordinates to ``fixed`` ones (both ALIGN_SIZE² edge images).

    translation: phase correlation. rigid: at half resolution every angle in ± ``max_rotation_deg``
    (2° steps) is tried with phase correlation, ECC (Euclidean) refines the best few distinct angles,
    the best match is refined once more at full resolution.
    """
    if mode == "none":
        return np.array([[1.0, 0, 0], [0, 1.0, 0]])
    if mode != "rigid" or max_rotation_deg <= 0:
        window = cv2.createHanningWindow(fixed.shape[::-1], cv2.CV_32F)
        # phaseCorrelate gives the shift of `fixed` relative to `moving`; OpenCV 5 applies the window in place
        (dx, dy), _ = cv2.phaseCorrelate(moving.copy(), fixed.copy(), window)
        m = np.array([[1.0, 0, dx], [0, 1.0, dy]])
        if mode == "rigid":
            found = _ecc(fixed, moving, m, 30)
            m = found[1] if found is not None else m
        return m
    small_f, small_m = cv2.pyrDown(fixed), cv2.pyrDown(moving)
    size = small_f.shape[::-1]
    window = cv2.createHanningWindow(size, cv2.CV_32F)
    centre = (small_f.shape[0] - 1) / 2.0
    n = int(math.floor(max_rotation_deg / ROTATION_STEP_DEG))
    candidates: list[tuple[float, float, np.ndarray]] = []
    for ang in (k * ROTATION_STEP_DEG for k in range(-n, n + 1)):
        rot = _rotation(ang, centre)
        rotated = small_m if ang == 0 else cv2.warpAffine(small_m, rot, size, borderMode=cv2.BORDER_REFLECT)
        (dx, dy), peak = cv2.phaseCorrelate(rotated.copy(), small_f.copy(), window)
        candidates.append((peak, ang, _compose(np.array([[1.0, 0, dx], [0, 1.0, dy]]), rot)))
    candidates.sort(key=lambda c: -c[0])
    starts: list[tuple[float, float, np.ndarray]] = []
    for cand in candidates:
        if all(abs(cand[1] - st[1]) >= 2 * ROTATION_STEP_DEG for st in starts):
            starts.append(cand)
        if len(starts) == ECC_STARTS:
            break
    best_cc, m = -2.0, candidates[0][2]
    for _, _, init in starts:
        start_cc = _ncc(cv2.warpAffine(small_m, init, size, borderMode=cv2.BORDER_REFLECT), small_f)
        if start_cc > best_cc:
            best_cc, m = start_cc, init
        found = _ecc(small_f, small_m, init, 30)
        if found is not None and found[0] > best_cc:
            best_cc, m = found
    m = scale_pose(m, 2.0)
    found = _ecc(fixed, moving, m, 20)
    return found[1] if found is not None else m


def scale_pose(m: np.ndarray, factor: float) -> np.ndarray:
    """The same motion expressed in pixel coordinates scaled by ``factor``."""
    out = m.copy()
    out[:, 2] *= factor
    return out


def local_nn_distance(query: np.ndarray, bank: np.ndarray, radius: int,
                      valid: np.ndarray | None = None) -> np.ndarray:
    """min over references k and offsets |d| <= radius of ||q(p) - bank_k(p + d)||  (variation model).

    query (D, H, W); bank (K, D, H, W), both in the reference frame; ``valid`` (K, H, W) bool marks the
    bank cells a reference really shows. A cell no valid reference cell reaches is NaN.
    Computed as ||q||² + ||b||² - 2 q·b per offset (one pass over the bank, no difference arrays).
    """
    k, d, h, w = bank.shape
    r = radius
    pb = np.pad(bank, ((0, 0), (0, 0), (r, r), (r, r)), mode="edge") if r else bank
    pv = None if valid is None else np.pad(valid, ((0, 0), (r, r), (r, r)), constant_values=False)
    b_sq = np.einsum("kdhw,kdhw->khw", pb, pb)
    best = np.full((h, w), np.inf, np.float32)
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            cross = np.einsum("kdhw,dhw->khw", pb[:, :, dy:dy + h, dx:dx + w], query)
            d2 = b_sq[:, dy:dy + h, dx:dx + w] - 2.0 * cross
            if pv is not None:
                d2[~pv[:, dy:dy + h, dx:dx + w]] = np.inf
            np.minimum(best, d2.min(0), out=best)
    best += np.einsum("dhw,dhw->hw", query, query)
    best[~np.isfinite(best)] = np.nan
    return np.sqrt(np.maximum(best, 0.0))


def global_nn_distance(query: np.ndarray, bank: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """Nearest-neighbour distance of each row of ``query`` (N, D) to ``bank`` (M, D) (PatchCore eq. 6)."""
    bank_sq = np.einsum("md,md->m", bank, bank)
    out = np.empty(query.shape[0], np.float32)
    for start in range(0, query.shape[0], chunk):
        q = query[start:start + chunk]
        d2 = bank_sq[None, :] - 2.0 * (q @ bank.T)
        out[start:start + chunk] = d2.min(1) + np.einsum("nd,nd->n", q, q)
    return np.sqrt(np.maximum(out, 0.0))


def nn_residuals(query: np.ndarray, bank: np.ndarray, mode: str, radius: int) -> np.ndarray:
    """Difference vectors (N, D) between each query patch and its nearest reference patch."""
    if mode == "global":
        d, h, w = query.shape
        q = np.ascontiguousarray(query.reshape(d, -1).T)
        d2 = np.einsum("md,md->m", bank, bank)[None, :] - 2.0 * (q @ bank.T)
        return q - bank[d2.argmin(1)]
    k, d, h, w = bank.shape
    r = radius
    pb = np.pad(bank, ((0, 0), (0, 0), (r, r), (r, r)), mode="edge") if r else bank
    best = np.full((h, w), np.inf, np.float32)
    res = np.zeros((d, h, w), np.float32)
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            diff = query[None] - pb[:, :, dy:dy + h, dx:dx + w]
            d2 = np.einsum("kdhw,kdhw->khw", diff, diff)
            kb = d2.argmin(0)
            m = np.take_along_axis(d2, kb[None], 0)[0]
            better = m < best
            best[better] = m[better]
            sel = np.take_along_axis(diff, kb[None, None].repeat(d, 1), 0)[0]
            res[:, better] = sel[:, better]
    return res.reshape(d, -1).T


def residual_whitener(residuals: np.ndarray, shrinkage: float) -> np.ndarray:
    """W with W Σ W^T = I for the shrunk second moment Σ of normal residuals (Mahalanobis metric).

    Directions in which good parts differ from each other count little, directions in which they
    agree count much: Σ_s = (1 - α) E[r r^T] + α tr(E[r r^T]) / D · I.
    """
    r = np.asarray(residuals, np.float64)
    cov = r.T @ r / max(len(r), 1)
    d = cov.shape[0]
    cov = (1 - shrinkage) * cov + shrinkage * np.trace(cov) / d * np.eye(d)
    vals, vecs = np.linalg.eigh(cov)
    vals = np.maximum(vals, 1e-9 * max(vals.max(), 1e-12))
    return (vecs / np.sqrt(vals)) @ vecs.T


def greedy_coreset(x: np.ndarray, n: int, seed: int = 0, proj_dims: int = 8) -> np.ndarray:
    """Indices of ``n`` rows of ``x`` chosen by greedy k-centre (PatchCore eq. 4, minimax facility location).

    As in PatchCore, the selection runs on a random projection (``proj_dims``) of the rows.
    """
    m = x.shape[0]
    if n >= m:
        return np.arange(m)
    rng = np.random.default_rng(seed)
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.shape[1] > proj_dims:
        x = x @ (rng.standard_normal((x.shape[1], proj_dims)).astype(np.float32) / np.sqrt(proj_dims))
    chosen = np.empty(n, np.int64)
    chosen[0] = int(rng.integers(m))
    mind = np.einsum("md,md->m", x - x[chosen[0]], x - x[chosen[0]])
    for t in range(1, n):
        i = int(np.argmax(mind))
        chosen[t] = i
        diff = x - x[i]
        np.minimum(mind, np.einsum("md,md->m", diff, diff), out=mind)
    return chosen


def seam_confidence(cover: np.ndarray, margin: float) -> np.ndarray:
    """1 inside what an image shows, ramping to 0 over ``margin`` px towards what it does not show.

    Near that seam the filter bank sees part of the filled-in reference: its scores are not evidence.
    """
    inside = (cover > 0.5).astype(np.uint8)
    if inside.all() or margin <= 0:
        return inside.astype(np.float32)
    dist = cv2.distanceTransform(inside, cv2.DIST_L2, 3)
    return np.clip(dist / margin, 0.0, 1.0).astype(np.float32)


def positional_scale(loo_maps: np.ndarray, weights: np.ndarray, sigma: float, floor_quantile: float = 0.5
                     ) -> np.ndarray:
    """Per-place normal deviation s'(x) = sqrt(S(x)² + f²), S² = G_σ*(Σ w_i m_i²) / G_σ*(Σ w_i), f = median S.

    The variation model's σ(x): places where good parts differ among themselves (embossed marks under
    changing light, part edges) are scored relative to their own spread, plain places relative to
    the image-wide typical level f. ``weights`` say where each leave-one-out map m_i is evidence.
    """
    m = np.nan_to_num(np.asarray(loo_maps, np.float32))
    w = np.asarray(weights, np.float32) * np.isfinite(np.asarray(loo_maps, np.float32))
    num = gaussian_smooth((w * m * m).sum(0), sigma)
    den = gaussian_smooth(w.sum(0), sigma)
    spread = np.sqrt(np.maximum(num, 0.0) / np.maximum(den, 1e-3))
    floor = float(np.quantile(spread[den > 0.1], floor_quantile)) if (den > 0.1).any() else 1.0
    return np.sqrt(spread ** 2 + floor ** 2).astype(np.float32)


def reference_threshold(loo_maps: np.ndarray, loo_weight: np.ndarray, sigma: float, margin: float) -> float:
    """T = margin × max_i max smooth(w_i · loo_map_i): the raw level the map calls 0.5."""
    worst = 0.0
    for amap, weight in zip(loo_maps, loo_weight, strict=True):
        sm = gaussian_smooth(np.nan_to_num(amap) * weight, sigma)
        worst = max(worst, float(sm.max()))
    return margin * max(worst, 1e-6)


# =============================================================================== detector
@dataclass
class VariationAnalysis:
    """Threshold-independent result of :meth:`VariationDetector.analyse`."""

    raw_map: np.ndarray  # float32 (working, working), image frame, raw distance units
    pose: np.ndarray  # 2x3, image working px -> reference frame
    timings: dict[str, float] = field(default_factory=dict)


class VariationDetector(Detector):
    """Reference-based, weight-free detector (see module docstring for the method and the score scale)."""

    name = "variation"
    requires = ()
    finish_params = ("variation.smoothing_sigma", "variation.calibration_margin")

    def __init__(self, baseline: bool = False) -> None:
        super().__init__()
        self._baseline = baseline  # naive comparison method used by bench/variation.py
        self.state: dict[str, np.ndarray] = {}
        self.mode = "global"
        self.alignment = "none"
        self.cache_hit = False
        self.threshold = 1.0
        self._groups = 0
        self._banks: list[np.ndarray] = []

    # ----------------------------------------------------------------- helpers
    @property
    def params(self) -> VariationParams:
        assert self.profile is not None, "prepare() first"
        return self.profile.variation

    def _lab(self, rgb01: np.ndarray) -> np.ndarray:
        lab = to_lab(rgb01)
        if self.params.photometric and not self._baseline and "lab_mean" in self.state:
            lab = match_photometry(lab, self.state["lab_mean"], self.state["lab_std"])
        return lab

    def _to_reference_frame(self, lab: np.ndarray, pose: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Warp into the first reference's frame; what the image does not show is filled from that reference.

        Returns the warped image and the confidence of each pixel (:func:`seam_confidence`).
        """
        if self.alignment == "none":
            return lab, np.ones(lab.shape[:2], np.float32)
        size = lab.shape[0]
        m = scale_pose(pose, size / ALIGN_SIZE)
        warped = cv2.warpAffine(lab, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        cover = cv2.warpAffine(np.ones((size, size), np.float32), m, (size, size), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        master = self.state["master_lab"]
        filled = warped * cover[..., None] + master * (1 - cover[..., None])
        return filled.astype(np.float32), seam_confidence(cover, self.params.border_margin)

    def _from_reference_frame(self, amap: np.ndarray, pose: np.ndarray) -> np.ndarray:
        if self.alignment == "none":
            return amap
        size = amap.shape[0]
        m = cv2.invertAffineTransform(scale_pose(pose, size / ALIGN_SIZE))
        return cv2.warpAffine(amap, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    def _features(self, lab: np.ndarray) -> np.ndarray:
        p = self.params
        if self._baseline:
            return _baseline_features(lab, p.pyramid_levels, p.feature_stride)
        return filter_bank(lab, p.pyramid_levels, p.feature_stride)

    def _zscore(self, feats: np.ndarray) -> np.ndarray:
        d, h, w = feats.shape
        out = (feats.reshape(d, -1) - self.state["feat_mean"][:, None]) / self.state["feat_std"][:, None]
        return out.reshape(d, h, w).astype(np.float32)

    def _project(self, z: np.ndarray, g: int) -> np.ndarray:
        """Scale ``g``'s dimensions of z-scored features, whitened (if learned): (d_g, h, w)."""
        zg = z[self.state["group"] == g]
        key = f"whitener_{g}"
        if key not in self.state:
            return np.ascontiguousarray(zg)
        d, h, w = zg.shape
        # einsum, not BLAS: these small products are faster without a thread hand-off
        out = np.einsum("ed,dn->en", self.state[key], zg.reshape(d, -1))
        return np.ascontiguousarray(out.reshape(-1, h, w), dtype=np.float32)

    def _raw_map(self, query: np.ndarray, bank: np.ndarray, size: int, valid: np.ndarray | None = None
                 ) -> np.ndarray:
        """Distance map on the feature grid, upsampled to the working size (reference frame)."""
        if self.mode == "local":
            dist = local_nn_distance(query, bank, self.params.search_radius, valid)
        else:
            d, h, w = query.shape
            dist = global_nn_distance(np.ascontiguousarray(query.reshape(d, -1).T), bank).reshape(h, w)
        return resize_map(dist, (size, size))

    def _fuse(self, maps: list[np.ndarray]) -> np.ndarray:
        """Per-scale normalised maps -> one map (eq.: mean or max over scales, ``scale_fusion``)."""
        stack = np.stack(maps)
        return (stack.max(0) if self.params.scale_fusion == "max" else stack.mean(0)).astype(np.float32)

    # ----------------------------------------------------------------- prepare
    def prepare(self, profile: ProductProfile, hub: ModelHub | None = None, progress: Progress | None = None) -> None:
        """Describe the reference shots, pick the memory, calibrate; cached on disk (see module docstring)."""
        self.profile, self.hub = profile, hub
        paths = profile.reference_paths()
        if not paths:
            raise VariationError(
                f"profile {profile.name!r}: the variation pipeline needs at least one reference shot; "
                "add good images to reference_shots (1-16, 4 recommended)"
            )
        report = progress or (lambda f, m: None)
        report(0.0, "hashing reference shots")
        hashes = reference_hashes(profile, paths, VariationError)
        shaping = profile.variation.model_dump(exclude=set(_FINISH_FIELDS))
        key = cache_key(ALGORITHM_VERSION, self._baseline, hashes, shaping)
        cache = ArrayCache()
        found = cache.load(CACHE_NAMESPACE, key)
        self.cache_hit = found is not None
        if found is None:
            found = self._build(paths, report)
            cache.save(CACHE_NAMESPACE, key, found)
        self._adopt(found)
        report(1.0, "references ready" + (" (cached)" if self.cache_hit else ""))

    def _adopt(self, arrays: dict[str, np.ndarray]) -> None:
        self.state = dict(arrays)
        self.mode = str(arrays["mode"])
        self.alignment = str(arrays["alignment"])
        self._groups = int(arrays["group"].max()) + 1
        self._banks = [np.ascontiguousarray(arrays[f"bank_{g}"], dtype=np.float32) for g in range(self._groups)]
        self.threshold = reference_threshold(arrays["loo_maps"], arrays["loo_weight"],
                                             self.params.smoothing_sigma, self.params.calibration_margin)

    def _build(self, paths: list, report: Progress) -> dict[str, np.ndarray]:
        """Everything ``prepare`` caches: photometry, pose reference, metric, memories, calibration."""
        p = self.params
        imgs = self._read_references(paths, report)
        self._choose_memory(imgs)
        labs = [self._lab(im) for im in imgs]
        master = _align_image(imgs[0])
        self.state.update(master=master, master_lab=labs[0])
        report(0.25, "aligning references")
        framed, covers = [], []
        for im, lab in zip(imgs, labs, strict=True):
            pose = estimate_pose(_align_image(im), master, self.alignment, p.max_rotation_deg)
            f, c = self._to_reference_frame(lab, pose)
            framed.append(f)
            covers.append(c)
        report(0.35, "describing references")
        feats = np.stack([self._features(f) for f in framed])  # K, D, h, w
        gh, gw = feats.shape[2:]
        # a reference patch is trusted where its shot is fully shown (confidence 1, away from its seam)
        cells_valid = np.stack([cv2.resize(c, (gw, gh), interpolation=cv2.INTER_AREA) > 0.99 for c in covers])
        flat = feats.transpose(0, 2, 3, 1).reshape(-1, feats.shape[1])
        feat_std = flat.std(0)
        self.state.update(feat_mean=flat.mean(0).astype(np.float32),
                          feat_std=(feat_std + 1e-3 * (feat_std.mean() + 1e-6)).astype(np.float32),
                          group=scale_groups(feats.shape[1], separate=p.scale_fusion != "joint" and not self._baseline))
        z = np.stack([self._zscore(f) for f in feats])
        keep = None  # one coreset selection (on all scales) serves every scale's global memory
        if self.mode == "global":
            report(0.38, "selecting the patch memory")
            flat = z.transpose(0, 2, 3, 1).reshape(-1, z.shape[1])
            keep = greedy_coreset(flat, max(1, min(int(round(p.coreset_ratio * flat.shape[0])), p.max_memory)))
        n_groups = int(self.state["group"].max()) + 1
        per_scale, loo_weight = [], None
        for g in range(n_groups):
            normalised, weights = self._learn_scale(g, z, cells_valid, covers, keep, imgs[0])
            per_scale.append(normalised)
            loo_weight = weights if loo_weight is None else loo_weight
            report(0.4 + 0.55 * (g + 1) / n_groups, f"calibrating scale {g + 1}/{n_groups}")
        keys = ("mode", "alignment", "structure_share", "master", "master_lab", "lab_mean", "lab_std",
                "feat_mean", "feat_std", "group")
        learned = {k: v for k, v in self.state.items() if k.startswith(("whitener_", "scale_", "bank_"))}
        return {
            **{k: np.asarray(self.state[k]) for k in keys},
            **learned,
            "loo_maps": np.stack([self._fuse([m[i] for m in per_scale]) for i in range(len(imgs))]),
            "loo_weight": np.asarray(loo_weight, np.float32),
        }

    def _read_references(self, paths: list, report: Progress) -> list[np.ndarray]:
        size = self.params.working_size
        imgs = []
        for i, path in enumerate(paths):
            try:
                imgs.append(to_working(read_image(path), size))
            except (OSError, ValueError) as exc:
                raise VariationError(f"reference shot {path}: {exc}") from exc
            report(0.05 + 0.15 * (i + 1) / len(paths), f"reading reference {i + 1}/{len(paths)}")
        stack = np.stack([to_lab(im) for im in imgs])
        self.state = {
            "lab_mean": stack.reshape(-1, 3).mean(0).astype(np.float32),
            "lab_std": np.array([stack[..., c].std() for c in range(3)], np.float32),
        }
        return imgs

    def _choose_memory(self, imgs: list[np.ndarray]) -> None:
        """Resolve ``auto``: textures (little coarse layout) get no alignment and a global memory."""
        p = self.params
        share = float(np.median([structure_share(to_lab(im)) for im in imgs]))
        alignment = p.alignment if p.alignment != "auto" else ("none" if share < p.texture_threshold else "rigid")
        mode = p.memory if p.memory != "auto" else ("global" if alignment == "none" else "local")
        if self._baseline:
            alignment, mode = "none", "global"
        self.mode, self.alignment = mode, alignment
        self.state.update(mode=np.array(mode), alignment=np.array(alignment),
                          structure_share=np.array(share, np.float32))
        log.info("variation: %d references, structure share %.2f -> alignment %s, memory %s",
                 len(imgs), share, alignment, mode)

    def _learn_scale(self, g: int, z: np.ndarray, cells_valid: np.ndarray, covers: list[np.ndarray],
                     keep: np.ndarray | None, first: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        """Metric, memory and normal spread of scale ``g``; its leave-one-out maps in spread units."""
        p, k, size = self.params, z.shape[0], self.params.working_size
        zg = z[:, self.state["group"] == g]
        if p.whitening > 0 and k > 1 and not self._baseline:
            res = []
            for i in range(k):  # a random subsample stands in for the coreset (same residuals, cheaper)
                bank_i = self._make_bank(zg[[j for j in range(k) if j != i]], self.mode, p.coreset_ratio, greedy=False)
                res.append(nn_residuals(zg[i], bank_i, self.mode, p.search_radius))
            self.state[f"whitener_{g}"] = residual_whitener(np.concatenate(res), 1.0 - p.whitening).astype(np.float32)
        n_groups = int(self.state["group"].max()) + 1
        dims = max(1, p.global_dims // n_groups) if p.global_dims else 0
        if self.mode == "global" and 0 < dims < zg.shape[1] and not self._baseline:
            # keep the directions in which the (whitened) reference patches vary most: faster search
            wz = np.stack([self._project(zz, g) for zz in z])
            flat = wz.transpose(0, 2, 3, 1).reshape(-1, wz.shape[1]).astype(np.float64)
            _, vecs = np.linalg.eigh(np.cov(flat, rowvar=False))
            base = self.state.get(f"whitener_{g}", np.eye(zg.shape[1], dtype=np.float32))
            self.state[f"whitener_{g}"] = (vecs[:, ::-1][:, :dims].T @ base).astype(np.float32)
        fg = np.stack([self._project(zz, g) for zz in z])
        maps, weights = [], []
        for i in range(k):  # leave-one-out scores give the normal range of this profile
            if k > 1:
                others = [j for j in range(k) if j != i]
                bank_i = self._make_bank(fg[others], self.mode, p.coreset_ratio, keep=keep, owners=others)
                valid_i, query = cells_valid[others], fg[i]
            else:  # a single reference: compare it with a slightly shifted, relit copy of itself
                bank_i = self._make_bank(fg, self.mode, p.coreset_ratio, keep=keep, owners=[0])
                valid_i = cells_valid
                query = self._project(self._zscore(self._features(self._lab(_jitter(first)))), g)
            amap = self._raw_map(query, bank_i, size, valid_i if self.mode == "local" else None)
            # evidence only where shot i is trusted and another shot is trusted nearby
            reach = cv2.dilate(valid_i.any(0).astype(np.uint8), np.ones((3, 3), np.uint8))
            reach = cv2.resize(reach.astype(np.float32), (size, size), interpolation=cv2.INTER_NEAREST)
            weights.append(covers[i] * reach * np.isfinite(amap))
            maps.append(np.nan_to_num(amap).astype(np.float32))
        raw, w = np.stack(maps), np.stack(weights)
        self.state[f"bank_{g}"] = self._make_bank(fg, self.mode, p.coreset_ratio, keep=keep, owners=list(range(k)))
        # the scale is measured in units of its own normal spread (before any fusion)
        if self.mode == "local" and p.variation_model and not self._baseline:
            self.state[f"scale_{g}"] = positional_scale(raw, w, p.variation_sigma)
            normalised = []
            for i in range(k):  # nested leave-one-out: shot i is judged by the spread of the others
                others = [j for j in range(k) if j != i] if k > 1 else [i]
                normalised.append(raw[i] / positional_scale(raw[others], w[others], p.variation_sigma))
            return normalised, w
        level = float(np.median(raw[w > 0.5])) if (w > 0.5).any() else 1.0
        self.state[f"scale_{g}"] = np.array(max(level, 1e-6), np.float32)
        return [m / self.state[f"scale_{g}"] for m in raw], w

    @staticmethod
    def _make_bank(feats: np.ndarray, mode: str, ratio: float, greedy: bool = True,
                   keep: np.ndarray | None = None, owners: list[int] | None = None) -> np.ndarray:
        """The memory of ``feats`` (K', d, h, w): as is (local) or a patch subset (global).

        ``keep`` indexes patches of *all* references (K·h·w, a coreset chosen once); ``owners`` says
        which references ``feats`` holds, so a leave-one-out memory keeps only their patches.
        """
        if mode == "local":
            return np.ascontiguousarray(feats, dtype=np.float32)
        _, d, h, w = feats.shape
        flat = feats.transpose(0, 2, 3, 1).reshape(-1, d)
        if keep is not None and owners is not None:
            per = h * w
            rows = []
            for slot, ref in enumerate(owners):
                mine = keep[(keep >= ref * per) & (keep < (ref + 1) * per)] - ref * per
                rows.append(mine + slot * per)
            return np.ascontiguousarray(flat[np.concatenate(rows)], dtype=np.float32)
        n = max(1, int(round(ratio * flat.shape[0])))
        if greedy:
            idx = greedy_coreset(flat, n)
        else:
            idx = np.random.default_rng(0).choice(flat.shape[0], size=min(n, flat.shape[0]), replace=False)
        return np.ascontiguousarray(flat[idx], dtype=np.float32)

    # ----------------------------------------------------------------- per image
    def analyse(self, image: np.ndarray) -> VariationAnalysis:
        if not self.state:
            raise RuntimeError("VariationDetector.analyse called before prepare()")
        timer = StageTimer()
        p = self.params
        with timer("align"):
            rgb = to_working(image, p.working_size)
            pose = (estimate_pose(_align_image(rgb), self.state["master"], self.alignment, p.max_rotation_deg)
                    if self.alignment != "none" else np.array([[1.0, 0, 0], [0, 1.0, 0]]))
            framed, confidence = self._to_reference_frame(self._lab(rgb), pose)
        with timer("features"):
            z = self._zscore(self._features(framed))
        with timer("search"):
            maps = []
            for g in range(self._groups):
                # every reference cell is a candidate here (filled-in cells are copies of good content)
                m = np.nan_to_num(self._raw_map(self._project(z, g), self._banks[g], p.working_size))
                maps.append(m / self.state[f"scale_{g}"])
            raw = self._from_reference_frame(self._fuse(maps) * confidence, pose)
        return VariationAnalysis(raw_map=raw.astype(np.float32), pose=pose, timings=timer.timings)

    def finish(self, analysis: VariationAnalysis, image: np.ndarray) -> Detection:
        p = self.params
        smooth = gaussian_smooth(analysis.raw_map, p.smoothing_sigma)
        norm = normalise_map(smooth, 0.0, 2.0 * self.threshold)
        amap = resize_map(norm, image.shape[:2])
        assert self.profile is not None
        regions = regions_from_map(amap, self.profile.decision.region_threshold, 1)
        return Detection(
            anomaly_map=amap,
            image_score=float(norm.max()),
            regions=regions,
            timings=dict(analysis.timings),
            extras={"raw_threshold": self.threshold, "mode": self.mode, "alignment": self.alignment,
                    "pose": analysis.pose.tolist()},
        )

    def retune(self, profile: ProductProfile) -> None:
        """Adopt decision thresholds, ``smoothing_sigma`` and ``calibration_margin`` without re-preparing."""
        old = self.profile
        if old is not None and self.state:
            shaping = set(_FINISH_FIELDS)
            if profile.variation.model_dump(exclude=shaping) != old.variation.model_dump(exclude=shaping):
                raise ValueError("variation parameters other than smoothing_sigma/calibration_margin changed; "
                                 "call prepare() again")
            if profile.reference_shots != old.reference_shots:
                raise ValueError("reference shots changed; call prepare() again")
        self.profile = profile
        if self.state:
            self.threshold = reference_threshold(self.state["loo_maps"], self.state["loo_weight"],
                                                 profile.variation.smoothing_sigma,
                                                 profile.variation.calibration_margin)


_FINISH_FIELDS = ("smoothing_sigma", "calibration_margin")


def _jitter(rgb01: np.ndarray) -> np.ndarray:
    """A slightly shifted (1 px) and relit (+4 %) copy: the single-reference stand-in for a second shot."""
    m = np.array([[1.0, 0, 1.0], [0, 1.0, 1.0]], np.float32)
    out = cv2.warpAffine(rgb01, m, rgb01.shape[1::-1], borderMode=cv2.BORDER_REPLICATE)
    return np.clip(out * 1.04, 0, 1)


def _baseline_features(lab: np.ndarray, levels: int, stride: int) -> np.ndarray:
    """Naive descriptor for comparison: mean L, a, b and gradient magnitude per cell at each scale."""
    h, w = lab.shape[:2]
    out_hw = (max(1, h // stride), max(1, w // stride))
    feats = []
    cur = lab
    for _ in range(levels):
        lum = cur[..., 0]
        mag = np.sqrt(cv2.Sobel(lum, cv2.CV_32F, 1, 0) ** 2 + cv2.Sobel(lum, cv2.CV_32F, 0, 1) ** 2) * 0.125
        stack = np.concatenate([cur, mag[..., None]], axis=-1)
        interp = cv2.INTER_AREA if cur.shape[0] >= out_hw[0] else cv2.INTER_LINEAR
        feats.append(cv2.resize(stack, (out_hw[1], out_hw[0]), interpolation=interp))
        cur = cv2.pyrDown(cur)
    return np.ascontiguousarray(np.concatenate(feats, axis=-1).transpose(2, 0, 1))


def describe(det: VariationDetector) -> dict[str, Any]:
    """What ``prepare`` decided (for logs and the bench)."""
    return {
        "mode": det.mode,
        "alignment": det.alignment,
        "structure_share": float(det.state.get("structure_share", np.nan)),
        "raw_threshold": det.threshold,
        "cache_hit": det.cache_hit,
    }
