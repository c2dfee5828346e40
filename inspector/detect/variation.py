"""Weight-free reference pipeline ("variation"): what good looks like, learned from a few shots.

No pretrained network: a fixed multi-scale filter bank turns each image into a grid of patch
descriptors, and each test patch is scored by its distance to the nearest reference patch.
Two memories, chosen per profile (``variation.memory``; ``auto`` decides from the references):

* **local** (objects, assemblies) — a *variation model*: the test image is first registered to
  the first reference shot (rotation search + phase correlation, refined by ECC); each patch is
  then compared with the references' patches at the same place, ± ``search_radius`` patches.
  A part in the wrong place or missing is anomalous even if it looks normal elsewhere.
* **global** (textures) — a *patch memory* (PatchCore-style): every reference patch, thinned by a
  greedy coreset, and each test patch takes its nearest neighbour anywhere.

Robustness: brightness/contrast is matched to the references (``photometric``), descriptors
average responses over a 3×3 patch neighbourhood (shift tolerance), and the pyramid covers
defects from 2 px scratches to missing parts.

Score scale (calibrated per profile, never per test set)
--------------------------------------------------------
``prepare`` scores every reference shot against the others (leave-one-out) and takes the worst
of these normal image scores, ``s_ref`` (the maximum of its smoothed raw map). With
``T = calibration_margin × s_ref`` the map is ``raw / (2T)`` clipped to [0, 1]: **0.5 means
"``calibration_margin`` times the worst normal reference"**, 0 means identical to a reference and
1 means at least twice the threshold distance. The image score is the maximum of the map, so
the profile's default ``decision.image_threshold`` of 0.5 is a sensible PASS/FAIL cut.

Everything ``prepare`` computes is cached on disk (``Settings.cache_dir/variation``) keyed by the
reference images' sha256, the parameters that shape it and :data:`ALGORITHM_VERSION`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import torch

from inspector.cache import ArrayCache, cache_key
from inspector.detect.base import Detection, Detector, Progress, StageTimer
from inspector.detect.maps import gaussian_smooth, normalise_map, regions_from_map, resize_map
from inspector.imaging import file_sha256, read_image

if TYPE_CHECKING:  # pragma: no cover
    from inspector.models.hub import ModelHub
    from inspector.params.variation import VariationParams
    from inspector.profile import ProductProfile

log = logging.getLogger(__name__)

ALGORITHM_VERSION = 1
CACHE_NAMESPACE = "variation"
ALIGN_SIZE = 128  # px side of the images used for registration
ROTATION_STEP_DEG = 2.0


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


def structure_share(lab: np.ndarray, blocks: int = 8) -> float:
    """Share of the L variance explained by a coarse ``blocks``×``blocks`` layout (texture → ~0)."""
    lum = lab[..., 0]
    coarse = cv2.resize(lum, (blocks, blocks), interpolation=cv2.INTER_AREA)
    return float(coarse.var() / max(float(lum.var()), 1e-9))


def _align_image(rgb01: np.ndarray) -> np.ndarray:
    grey = cv2.cvtColor(rgb01, cv2.COLOR_RGB2GRAY)
    grey = cv2.resize(grey, (ALIGN_SIZE, ALIGN_SIZE), interpolation=cv2.INTER_AREA)
    grey = cv2.GaussianBlur(grey, (0, 0), 1.0)
    return (grey - grey.mean()) / (grey.std() + 1e-6)


def _rotation(angle_deg: float, centre: float) -> np.ndarray:
    return cv2.getRotationMatrix2D((centre, centre), angle_deg, 1.0).astype(np.float64)


def _compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """2x3 affine of ``outer ∘ inner``."""
    a = np.vstack([outer, [0, 0, 1]])
    b = np.vstack([inner, [0, 0, 1]])
    return (a @ b)[:2]


def estimate_pose(moving: np.ndarray, fixed: np.ndarray, mode: str, max_rotation_deg: float) -> np.ndarray:
    """2x3 affine taking ``moving`` pixel coordinates to ``fixed`` ones (both ALIGN_SIZE², standardised).

    translation: phase correlation. rigid: every angle in ± ``max_rotation_deg`` (2° steps) is tried
    with phase correlation, the best peak wins, and ECC (Euclidean) refines it.
    """
    if mode == "none":
        return np.array([[1.0, 0, 0], [0, 1.0, 0]])
    window = cv2.createHanningWindow(fixed.shape[::-1], cv2.CV_32F)
    centre = (fixed.shape[0] - 1) / 2.0
    angles = [0.0]
    if mode == "rigid" and max_rotation_deg > 0:
        n = int(math.floor(max_rotation_deg / ROTATION_STEP_DEG))
        angles = [k * ROTATION_STEP_DEG for k in range(-n, n + 1)]
    best: tuple[float, np.ndarray] | None = None
    for ang in angles:
        rot = _rotation(ang, centre)
        rotated = moving if ang == 0 else cv2.warpAffine(moving, rot, moving.shape[::-1], borderMode=cv2.BORDER_REFLECT)
        # phaseCorrelate returns the shift of `fixed` relative to `rotated`; OpenCV 5 applies the
        # window in place, so it gets copies
        (dx, dy), peak = cv2.phaseCorrelate(rotated.copy(), fixed.copy(), window)
        shift = np.array([[1.0, 0, dx], [0, 1.0, dy]])
        m = _compose(shift, rot)
        if best is None or peak > best[0]:
            best = (peak, m)
    assert best is not None
    m = best[1]
    if mode == "rigid":
        warp = m.astype(np.float32)
        try:
            _, warp = cv2.findTransformECC(
                fixed.astype(np.float32), moving.astype(np.float32), cv2.invertAffineTransform(warp),
                cv2.MOTION_EUCLIDEAN, (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 40, 1e-4), None, 3,
            )
            refined = cv2.invertAffineTransform(warp).astype(np.float64)
            # trust ECC only for a small correction of the search result
            if np.abs(refined[:, 2] - m[:, 2]).max() < 4 and np.abs(refined[:, :2] - m[:, :2]).max() < 0.06:
                m = refined
        except cv2.error:
            log.debug("ECC did not converge; keeping the rotation-search pose")
    return m


def scale_pose(m: np.ndarray, factor: float) -> np.ndarray:
    """The same motion expressed in pixel coordinates scaled by ``factor``."""
    out = m.copy()
    out[:, 2] *= factor
    return out


def local_nn_distance(query: torch.Tensor, bank: torch.Tensor, valid: torch.Tensor, radius: int) -> torch.Tensor:
    """min over references k and offsets |d| <= radius of ||q(p) - bank_k(p + d)||  (variation model).

    query (D, H, W); bank (K, D, H, W); valid (K, H, W) bool. Cells no reference covers get 0.
    """
    k, d, h, w = bank.shape
    big = torch.full((), float("inf"), dtype=query.dtype, device=query.device)
    pb = torch.nn.functional.pad(bank, (radius, radius, radius, radius), mode="replicate")
    pv = torch.nn.functional.pad(valid.float(), (radius, radius, radius, radius), value=0.0) > 0.5
    best = torch.full((h, w), float("inf"), dtype=query.dtype, device=query.device)
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            cand = pb[:, :, dy:dy + h, dx:dx + w]
            dist = ((cand - query.unsqueeze(0)) ** 2).sum(1)
            dist = torch.where(pv[:, dy:dy + h, dx:dx + w], dist, big)
            best = torch.minimum(best, dist.min(0).values)
    best = torch.where(torch.isfinite(best), best, torch.zeros_like(best))
    return best.clamp_min(0).sqrt()


def global_nn_distance(query: torch.Tensor, bank: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    """Nearest-neighbour distance of each row of ``query`` (N, D) to ``bank`` (M, D) (PatchCore eq. 6)."""
    bank_sq = (bank * bank).sum(1)
    out = []
    for start in range(0, query.shape[0], chunk):
        q = query[start:start + chunk]
        d2 = (q * q).sum(1, keepdim=True) + bank_sq.unsqueeze(0) - 2.0 * q @ bank.T
        out.append(d2.min(1).values)
    return torch.cat(out).clamp_min(0).sqrt()


def greedy_coreset(x: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Indices of ``n`` rows of ``x`` chosen by greedy k-centre (PatchCore eq. 4, minimax facility location)."""
    m = x.shape[0]
    if n >= m:
        return np.arange(m)
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    rng = np.random.default_rng(seed)
    chosen = [int(rng.integers(m))]
    mind = ((t - t[chosen[0]]) ** 2).sum(1)
    for _ in range(n - 1):
        i = int(torch.argmax(mind))
        chosen.append(i)
        mind = torch.minimum(mind, ((t - t[i]) ** 2).sum(1))
    return np.asarray(chosen, dtype=np.int64)


def reference_threshold(loo_maps: np.ndarray, loo_valid: np.ndarray, sigma: float, margin: float) -> float:
    """T = margin × max_i max smooth(loo_map_i) over valid pixels: the raw level the map calls 0.5."""
    worst = 0.0
    for amap, valid in zip(loo_maps, loo_valid, strict=True):
        sm = gaussian_smooth(amap, sigma)
        if valid.any():
            worst = max(worst, float(sm[valid].max()))
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
        self.device = torch.device("cpu")

    # ----------------------------------------------------------------- helpers
    @property
    def params(self) -> VariationParams:
        assert self.profile is not None, "prepare() first"
        return self.profile.variation

    def _features(self, rgb01: np.ndarray) -> np.ndarray:
        p = self.params
        lab = to_lab(rgb01)
        if self._baseline:
            return _baseline_features(lab, p.pyramid_levels, p.feature_stride)
        if p.photometric and "lab_mean" in self.state:
            lab = match_photometry(lab, self.state["lab_mean"], self.state["lab_std"])
        return filter_bank(lab, p.pyramid_levels, p.feature_stride)

    def _standardise(self, feats: np.ndarray) -> np.ndarray:
        return (feats - self.state["feat_mean"][:, None, None]) / self.state["feat_std"][:, None, None]

    def _warp(self, img: np.ndarray, pose_small: np.ndarray, size: int, border: int = cv2.BORDER_REPLICATE,
              inverse: bool = False) -> np.ndarray:
        m = scale_pose(pose_small, size / ALIGN_SIZE)
        if inverse:
            m = cv2.invertAffineTransform(m)
        return cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=border)

    def _raw_map(self, query: np.ndarray, bank: torch.Tensor, valid: torch.Tensor | None, size: int) -> np.ndarray:
        """Distance map on the feature grid, upsampled to the working size (reference frame)."""
        q = torch.from_numpy(np.ascontiguousarray(query)).to(self.device)
        with torch.inference_mode():
            if self.mode == "local":
                assert valid is not None
                dist = local_nn_distance(q, bank, valid, self.params.search_radius)
            else:
                d, h, w = q.shape
                dist = global_nn_distance(q.reshape(d, -1).T, bank).reshape(h, w)
        return resize_map(dist.float().cpu().numpy(), (size, size))

    # ----------------------------------------------------------------- prepare
    def prepare(self, profile: ProductProfile, hub: ModelHub | None = None, progress: Progress | None = None) -> None:
        self.profile, self.hub = profile, hub
        self.device = hub.device if hub is not None else torch.device("cpu")
        paths = profile.reference_paths()
        if not paths:
            raise VariationError(
                f"profile {profile.name!r}: the variation pipeline needs at least one reference shot; "
                "add good images to reference_shots (1-16, 4 recommended)"
            )
        report = progress or (lambda f, m: None)
        report(0.0, "hashing reference shots")
        hashes = [file_sha256(p) for p in paths]
        shaping = profile.variation.model_dump(exclude={"smoothing_sigma", "calibration_margin"})
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
        self._bank = torch.from_numpy(np.ascontiguousarray(arrays["bank"])).to(self.device)
        self._valid = torch.from_numpy(arrays["valid"]).to(self.device) if self.mode == "local" else None
        self.threshold = reference_threshold(arrays["loo_maps"], arrays["loo_valid"],
                                             self.params.smoothing_sigma, self.params.calibration_margin)

    def _build(self, paths: list, report: Progress) -> dict[str, np.ndarray]:
        p = self.params
        size = p.working_size
        imgs = []
        for i, path in enumerate(paths):
            try:
                imgs.append(to_working(read_image(path), size))
            except (OSError, ValueError) as exc:
                raise VariationError(f"reference shot {path}: {exc}") from exc
            report(0.05 + 0.15 * (i + 1) / len(paths), f"reading reference {i + 1}/{len(paths)}")
        labs = [to_lab(im) for im in imgs]
        stack = np.stack(labs)
        lab_mean = stack.reshape(-1, 3).mean(0).astype(np.float32)
        lab_std = np.array([stack[..., c].std() for c in range(3)], np.float32)
        share = float(np.median([structure_share(lab) for lab in labs]))
        is_texture = share < p.texture_threshold
        alignment = p.alignment if p.alignment != "auto" else ("none" if is_texture else "rigid")
        mode = p.memory if p.memory != "auto" else ("global" if alignment == "none" else "local")
        if self._baseline:
            alignment, mode = "none", "global"
        self.state = {"lab_mean": lab_mean, "lab_std": lab_std}
        log.info("variation: %d references, structure share %.2f -> alignment %s, memory %s",
                 len(imgs), share, alignment, mode)
        master = _align_image(imgs[0])
        poses, warped, valid_px = [], [], []
        ones = np.ones((size, size), np.float32)
        for im in imgs:
            pose = estimate_pose(_align_image(im), master, alignment, p.max_rotation_deg)
            poses.append(pose)
            warped.append(self._warp(im, pose, size))
            valid_px.append(self._warp(ones, pose, size, border=cv2.BORDER_CONSTANT) > 0.99)
        report(0.35, "describing references")
        feats = np.stack([self._features(w) for w in warped])  # K, D, h, w
        k, d, h, w = feats.shape
        valid = np.stack([cv2.resize(v.astype(np.uint8), (w, h), interpolation=cv2.INTER_AREA) > 0 for v in valid_px])
        flat = feats.transpose(0, 2, 3, 1)[valid]
        feat_mean = flat.mean(0).astype(np.float32)
        feat_std = (flat.std(0) + 1e-3 * (flat.std(0).mean() + 1e-6)).astype(np.float32)
        self.state.update(feat_mean=feat_mean, feat_std=feat_std)
        feats = np.stack([self._standardise(f) for f in feats]).astype(np.float32)
        self.mode = mode
        # leave-one-out scores give the normal range of this profile
        loo_maps, loo_valid = [], []
        for i in range(k):
            others = [j for j in range(k) if j != i]
            if not others:  # a single reference: compare it with a slightly shifted, relit copy of itself
                others = [i]
            bank_i, valid_i = self._make_bank(feats[others], valid[others], mode, p.coreset_ratio)
            query = feats[i] if others != [i] else self._standardise(self._features(_jitter(warped[i])))
            amap = self._raw_map(query, bank_i, valid_i, size)
            loo_maps.append(amap.astype(np.float32))
            loo_valid.append(valid_px[i])
            report(0.4 + 0.5 * (i + 1) / k, f"calibrating on reference {i + 1}/{k}")
        bank, _ = self._make_bank(feats, valid, mode, p.coreset_ratio)
        return {
            "mode": np.array(mode),
            "alignment": np.array(alignment),
            "structure_share": np.array(share, np.float32),
            "master": master.astype(np.float32),
            "lab_mean": lab_mean,
            "lab_std": lab_std,
            "feat_mean": feat_mean,
            "feat_std": feat_std,
            "bank": bank.cpu().numpy(),
            "valid": valid,
            "loo_maps": np.stack(loo_maps),
            "loo_valid": np.stack(loo_valid),
        }

    def _make_bank(self, feats: np.ndarray, valid: np.ndarray, mode: str, ratio: float
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if mode == "local":
            return (torch.from_numpy(np.ascontiguousarray(feats)).to(self.device),
                    torch.from_numpy(valid).to(self.device))
        flat = feats.transpose(0, 2, 3, 1)[valid]
        keep = greedy_coreset(flat, max(1, int(round(ratio * flat.shape[0]))))
        return torch.from_numpy(np.ascontiguousarray(flat[keep])).to(self.device), None

    # ----------------------------------------------------------------- per image
    def analyse(self, image: np.ndarray) -> VariationAnalysis:
        if not self.state:
            raise RuntimeError("VariationDetector.analyse called before prepare()")
        timer = StageTimer()
        size = self.params.working_size
        with timer("align"):
            rgb = to_working(image, size)
            pose = estimate_pose(_align_image(rgb), self.state["master"], self.alignment, self.params.max_rotation_deg)
            aligned = rgb if self.alignment == "none" else self._warp(rgb, pose, size)
        with timer("features"):
            query = self._standardise(self._features(aligned)).astype(np.float32)
        with timer("search"):
            raw = self._raw_map(query, self._bank, self._valid, size)
            if self.alignment != "none":
                raw = self._warp(raw, pose, size, inverse=True)
        return VariationAnalysis(raw_map=raw.astype(np.float32), pose=pose, timings=timer.timings)

    def finish(self, analysis: VariationAnalysis, image: np.ndarray) -> Detection:
        p = self.params
        smooth = gaussian_smooth(analysis.raw_map, p.smoothing_sigma)
        norm = normalise_map(smooth, 0.0, 2.0 * self.threshold)
        amap = resize_map(norm, image.shape[:2])
        score = float(norm.max())
        assert self.profile is not None
        regions = regions_from_map(amap, self.profile.decision.region_threshold, 1)
        return Detection(
            anomaly_map=amap,
            image_score=score,
            regions=regions,
            timings=dict(analysis.timings),
            extras={"raw_threshold": self.threshold, "mode": self.mode, "alignment": self.alignment,
                    "pose": analysis.pose.tolist()},
        )

    def retune(self, profile: ProductProfile) -> None:
        """Adopt decision thresholds, ``smoothing_sigma`` and ``calibration_margin`` without re-preparing."""
        old = self.profile
        self.profile = profile
        if old is not None and self.state:
            shaping = {"smoothing_sigma", "calibration_margin"}
            if profile.variation.model_dump(exclude=shaping) != old.variation.model_dump(exclude=shaping):
                raise ValueError("variation parameters other than smoothing_sigma/calibration_margin changed; "
                                 "call prepare() again")
            self.threshold = reference_threshold(self.state["loo_maps"], self.state["loo_valid"],
                                                 profile.variation.smoothing_sigma,
                                                 profile.variation.calibration_margin)


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
