"""The :class:`VariationDetector`: prepare (references, memory, calibration; cached), analyse, finish."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from inspector.cache import ArrayCache, cache_key
from inspector.detect.base import Detection, Detector, Progress, StageTimer, reference_hashes
from inspector.detect.colour import structure_share, to_lab
from inspector.detect.maps import gaussian_smooth, normalise_map, regions_from_map, resize_map
from inspector.detect.registration import ALIGN_SIZE, align_image, estimate_pose, scale_pose
from inspector.detect.variation.calibration import positional_scale, reference_threshold, seam_confidence
from inspector.detect.variation.features import (
    filter_bank,
    match_photometry,
    scale_groups,
    to_working,
)
from inspector.detect.variation.memory import (
    global_nn_distance,
    greedy_coreset,
    local_nn_distance,
    nn_residuals,
    residual_whitener,
)
from inspector.imaging import read_image

if TYPE_CHECKING:  # pragma: no cover
    from inspector.models.hub import ModelHub
    from inspector.params.variation import VariationParams
    from inspector.profile import ProductProfile

log = logging.getLogger(__name__)

ALGORITHM_VERSION = 3

CACHE_NAMESPACE = "variation"


class VariationError(ValueError):
    """The profile cannot be prepared (no or unreadable reference shots)."""


@dataclass
class VariationAnalysis:
    """Threshold-independent result of :meth:`VariationDetector.analyse`."""

    raw_map: np.ndarray  # float32 (working, working), image frame, raw distance units
    pose: np.ndarray  # 2x3, image working px -> reference frame
    timings: dict[str, float] = field(default_factory=dict)


class VariationDetector(Detector):
    """Reference-based, weight-free detector.

    The method and the score scale are in the package docstring (:mod:`inspector.detect.variation`).
    """

    name = "variation"
    requires = ()
    finish_params = ("variation.smoothing_sigma", "variation.calibration_margin")

    #: the ArrayCache namespace of what ``prepare`` computes (a variant with other descriptors needs its own)
    cache_namespace = CACHE_NAMESPACE

    def __init__(self) -> None:
        super().__init__()
        self.state: dict[str, np.ndarray] = {}
        self.mode = "global"
        self.alignment = "none"
        self.cache_hit = False
        self.threshold = 1.0
        self._groups = 0
        self._banks: list[np.ndarray] = []

    # ----------------------------------------------------------------- helpers
    @property
    def scales(self) -> int:
        """How many scales are scored apart and fused (1 with ``scale_fusion = "joint"``); 0 before ``prepare``."""
        return self._groups

    @property
    def params(self) -> VariationParams:
        assert self.profile is not None, "prepare() first"
        return self.profile.variation

    def _lab(self, rgb01: np.ndarray) -> np.ndarray:
        lab = to_lab(rgb01)
        if self.params.photometric and "lab_mean" in self.state:
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

    def patch_descriptors(self, lab: np.ndarray) -> np.ndarray:
        """(D, h, w) descriptors of a working-size L*a*b* image: the filter bank (:func:`filter_bank`)."""
        p = self.params
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
        """Describe the reference shots, pick the memory, calibrate; cached on disk (see the package docstring)."""
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
        key = cache_key(ALGORITHM_VERSION, hashes, shaping)
        cache = ArrayCache()
        found = cache.load(self.cache_namespace, key)
        self.cache_hit = found is not None
        if found is None:
            found = self._build(paths, report)
            cache.save(self.cache_namespace, key, found)
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
        master = align_image(imgs[0])
        self.state.update(master=master, master_lab=labs[0])
        report(0.25, "aligning references")
        framed, covers = [], []
        for im, lab in zip(imgs, labs, strict=True):
            pose = estimate_pose(align_image(im), master, self.alignment, p.max_rotation_deg)
            f, c = self._to_reference_frame(lab, pose)
            framed.append(f)
            covers.append(c)
        report(0.35, "describing references")
        feats = np.stack([self.patch_descriptors(f) for f in framed])  # K, D, h, w
        gh, gw = feats.shape[2:]
        # a reference patch is trusted where its shot is fully shown (confidence 1, away from its seam)
        cells_valid = np.stack([cv2.resize(c, (gw, gh), interpolation=cv2.INTER_AREA) > 0.99 for c in covers])
        flat = feats.transpose(0, 2, 3, 1).reshape(-1, feats.shape[1])
        feat_std = flat.std(0)
        self.state.update(feat_mean=flat.mean(0).astype(np.float32),
                          feat_std=(feat_std + 1e-3 * (feat_std.mean() + 1e-6)).astype(np.float32),
                          group=scale_groups(feats.shape[1], separate=p.scale_fusion != "joint"))
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
        if p.whitening > 0 and k > 1:
            res = []
            for i in range(k):  # a random subsample stands in for the coreset (same residuals, cheaper)
                bank_i = self._make_bank(zg[[j for j in range(k) if j != i]], self.mode, p.coreset_ratio, greedy=False)
                res.append(nn_residuals(zg[i], bank_i, self.mode, p.search_radius))
            self.state[f"whitener_{g}"] = residual_whitener(np.concatenate(res), 1.0 - p.whitening).astype(np.float32)
        n_groups = int(self.state["group"].max()) + 1
        dims = max(1, p.global_dims // n_groups) if p.global_dims else 0
        if self.mode == "global" and 0 < dims < zg.shape[1]:
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
                query = self._project(self._zscore(self.patch_descriptors(self._lab(_jitter(first)))), g)
            amap = self._raw_map(query, bank_i, size, valid_i if self.mode == "local" else None)
            # evidence only where shot i is trusted and another shot is trusted nearby
            reach = cv2.dilate(valid_i.any(0).astype(np.uint8), np.ones((3, 3), np.uint8))
            reach = cv2.resize(reach.astype(np.float32), (size, size), interpolation=cv2.INTER_NEAREST)
            weights.append(covers[i] * reach * np.isfinite(amap))
            maps.append(np.nan_to_num(amap).astype(np.float32))
        raw, w = np.stack(maps), np.stack(weights)
        self.state[f"bank_{g}"] = self._make_bank(fg, self.mode, p.coreset_ratio, keep=keep, owners=list(range(k)))
        # the scale is measured in units of its own normal spread (before any fusion)
        if self.mode == "local" and p.variation_model:
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
            pose = (estimate_pose(align_image(rgb), self.state["master"], self.alignment, p.max_rotation_deg)
                    if self.alignment != "none" else np.array([[1.0, 0, 0], [0, 1.0, 0]]))
            framed, confidence = self._to_reference_frame(self._lab(rgb), pose)
        with timer("features"):
            z = self._zscore(self.patch_descriptors(framed))
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


def describe(det: VariationDetector) -> dict[str, Any]:
    """What ``prepare`` decided (for logs and the bench)."""
    return {
        "mode": det.mode,
        "alignment": det.alignment,
        "structure_share": float(det.state.get("structure_share", np.nan)),
        "raw_threshold": det.threshold,
        "scales": det.scales,
        "cache_hit": det.cache_hit,
    }
