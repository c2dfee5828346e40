"""Known answers for patchcore/detector.py's set-up: prepare, the bank build, caching, describe,
model identity, calibration, analyse and retune (mutation tests).

The backbone is a two-stage linear CNN with fixed weights (``PoolNet``: 4×4 and then 2×2 block
means mixed by fixed matrices), provided to the hub, so every patch feature is re-derived here in
float64 from the image's pixels; the bank (each copy's seeded random share of the pool, then the
coreset), the leave-one-out maps (naive nearest neighbours, eq. 7 by hand) and the cache key
(sha256 of the files and of the weights) are derived independently of the detector; the store's
identity of a backbone is the sha256 of the shipped EfficientNet-Lite0 file. The library modules the
detector composes (coreset, k-means lists, registration, the foreground mask, place agreement)
have their own known-answer tests; here they are called with the arguments the detector must pass.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from inspector.cache import ArrayCache, cache_key
from inspector.detect.colour import structure_share, to_lab
from inspector.detect.maps import resize_map
from inspector.detect.patchcore.detector import (
    PatchCoreDetector,
    PatchCoreError,
    _jitter,
    describe,
    image_pose,
)
from inspector.detect.patchcore.features import colour_grid
from inspector.detect.patchcore.foreground import object_mask
from inspector.detect.patchcore.index import build_index, probe_nearest
from inspector.detect.patchcore.memory import greedy_coreset, place_agreement
from inspector.detect.patchcore.tiling import tile_grid
from inspector.detect.registration import ALIGN_SIZE, align_image, estimate_pose, scale_pose
from inspector.models.hub import ModelHub
from inspector.profile import ProductProfile
from tests.test_patchcore import make_profile as patchcore_profile
from tests.test_patchcore_detector_mutants import naive_gaussian, naive_weight
from tests.test_patchcore_foreground import washer
from tests.test_patchcore_mutants import naive_bilinear

SIZE = 64
FINISH = ("smoothing_sigma", "calibration_margin", "calibration_statistic", "image_score", "top_fraction",
          "zero_shot_ratio")
# the simplest features: stage 1 only, no neighbourhood, no normalisation, no colour; exact search
PLAIN = {"input_size": SIZE, "tiling": "off", "layers": [1], "patch_neighbourhood": 1, "feature_norm": "none",
         "colour_weight": 0.0, "search": "exact", "reweight_neighbours": 0}

# ----------------------------------------------------------------------------- a backbone with known features
M1 = np.array([[1.0, 0.2, 0.0], [0.0, 1.0, -0.3], [0.1, 0.0, 0.8]])
B1 = np.array([0.1, -0.2, 0.3])
M2 = np.array([[0.5, 0.0, 0.1], [0.2, 0.9, 0.0], [0.0, -0.4, 1.0]])
B2 = np.array([0.0, 0.05, -0.1])


class _Info:
    def channels(self) -> list[int]:
        return [3, 3]

    def reduction(self) -> list[int]:
        return [4, 8]

    def module_name(self) -> list[str]:
        return ["s1", "s2"]


class PoolNet(torch.nn.Module):
    """timm-``features_only``-like: stage 1 = M1 · (4×4 block means) + B1,
    stage 2 = M2 · (2×2 means of stage 1) + B2."""

    def __init__(self) -> None:
        super().__init__()
        self.s1 = torch.nn.Conv2d(3, 3, 4, stride=4)
        self.s2 = torch.nn.Conv2d(3, 3, 2, stride=2)
        with torch.no_grad():
            self.s1.weight.copy_(torch.tensor(M1, dtype=torch.float32)[:, :, None, None].expand(3, 3, 4, 4) / 16)
            self.s1.bias.copy_(torch.tensor(B1, dtype=torch.float32))
            self.s2.weight.copy_(torch.tensor(M2, dtype=torch.float32)[:, :, None, None].expand(3, 3, 2, 2) / 4)
            self.s2.bias.copy_(torch.tensor(B2, dtype=torch.float32))
        self.register_buffer("steps", torch.tensor(1000))  # an integer buffer: not part of the weights' identity
        self.feature_info = _Info()
        self.pretrained_cfg = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        a = self.s1(x)
        return [a, self.s2(a)]


def weights_identity() -> str:
    """What the cache key names for the provided PoolNet: its class and the sum of its float weights."""
    total = float(M1.sum() + B1.sum() + M2.sum() + B2.sum())  # each conv tap sums to its matrix entry
    return f"provided:PoolNet:{total:.6e}"


def blocks(a: np.ndarray, k: int) -> np.ndarray:
    """(C, H, W) -> (C, H/k, W/k) block means."""
    c, h, w = a.shape
    return a.reshape(c, h // k, k, w // k, k).mean((2, 4))


def stages(img: np.ndarray) -> list[np.ndarray]:
    """PoolNet's two stages of an input-size uint8 image, float64 (C, h, w)."""
    x = (img.astype(np.float64) / 255.0 - 0.5) / 0.5
    f1 = np.einsum("oc,chw->ohw", M1, blocks(x.transpose(2, 0, 1), 4)) + B1[:, None, None]
    f2 = np.einsum("oc,chw->ohw", M2, blocks(f1, 2)) + B2[:, None, None]
    return [f1, f2]


def mean_window(f: np.ndarray, p: int) -> np.ndarray:
    c, h, w = f.shape
    r = p // 2
    out = np.zeros_like(f)
    for i in range(h):
        for j in range(w):
            out[:, i, j] = f[:, max(0, i - r):i + r + 1, max(0, j - r):j + r + 1].reshape(c, -1).mean(1)
    return out


def naive_grid(img: np.ndarray, layers: list[int] = (1,), p: int = 1, l2: bool = False,
               colour: float = 0.0) -> np.ndarray:
    """(D, h, w) float64: the chosen stages, p×p means, unit length per stage, bilinear to the finest, + colour."""
    feats = stages(img)
    out = []
    h, w = feats[layers[0] - 1].shape[1:]
    for li in layers:
        a = mean_window(feats[li - 1], p)
        if l2:
            a = a / np.linalg.norm(a, axis=0, keepdims=True)
        if a.shape[1:] != (h, w):
            a = naive_bilinear(a, h, w)
        out.append(a)
    if colour > 0:
        out.append(colour * colour_grid([img], (h, w), p)[0].double().numpy())
    return np.concatenate(out, 0)


def patches(g: np.ndarray) -> np.ndarray:
    """(D, h, w) -> (h·w, D), rows in (i, j) order."""
    return g.reshape(g.shape[0], -1).T


def nn_map(q: np.ndarray, bank: np.ndarray) -> np.ndarray:
    return np.sqrt(((q[:, None, :] - bank[None, :, :]) ** 2).sum(-1)).min(1)


def window_nearest(g: np.ndarray, local: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
    """Each cell's distance to the nearest cell within r cells of the same place in any of the K
    grids, and its row in the (K·h·w) support; ties to the first (grid, row, column), float64."""
    k, d, h, w = local.shape
    dist = np.full((h, w), np.inf)
    idx = np.zeros((h, w), int)
    ii, jj = np.mgrid[:h, :w]
    for kk in range(k):
        for a in range(-r, r + 1):
            for b in range(-r, r + 1):
                ai, bj = ii + a, jj + b
                ok = (ai >= 0) & (ai < h) & (bj >= 0) & (bj < w)
                v = np.sqrt(((g - local[kk][:, np.clip(ai, 0, h - 1), np.clip(bj, 0, w - 1)]) ** 2).sum(0))
                v = np.where(ok, v, np.inf)
                cell = kk * h * w + np.clip(ai, 0, h - 1) * w + np.clip(bj, 0, w - 1)
                better = v < dist
                dist, idx = np.where(better, v, dist), np.where(better, cell, idx)
    return dist, idx


def turned(im: np.ndarray, turns: int, flip: bool) -> np.ndarray:
    return np.ascontiguousarray(np.rot90(np.fliplr(im) if flip else im, turns))


DIHEDRAL = [(r, f) for f in (False, True) for r in range(4)]


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def hub() -> ModelHub:
    h = ModelHub(device="cpu", precision="fp32")
    h.provide("backbone", PoolNet())
    return h


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private cache per test (the session's INSPECTOR_HOME would let one test's bank serve another)."""
    home = tmp_path / "home"
    monkeypatch.setenv("INSPECTOR_HOME", str(home))
    return home


def make_profile(tmp: Path, refs: list[np.ndarray], **patchcore: object) -> ProductProfile:
    return patchcore_profile(tmp, refs, defaults=PLAIN, obj="part", **patchcore)


def noise(seed: int, h: int = SIZE, w: int = SIZE) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def blob(seed: int, dy: int = 0, dx: int = 0) -> np.ndarray:
    """A smooth object (bright disc and a dark bar on a gradient) with a little sensor noise: not a texture."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    img = np.zeros((SIZE, SIZE, 3))
    img[..., 0] = 40 + 2 * xx
    img[..., 1] = 60 + yy
    img[..., 2] = 90.0
    img[(xx - 24 - dx) ** 2 + (yy - 28 - dy) ** 2 <= 144] = (220, 200, 90)
    img[40 + dy:48 + dy, 30 + dx:58 + dx] = (20, 30, 160)
    img += np.random.default_rng(seed).normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[float, str]] = []

    def __call__(self, fraction: float, message: str) -> None:
        self.calls.append((fraction, message))

    def check(self, want: list[tuple[float, str]]) -> None:
        assert [m for _, m in self.calls] == [m for _, m in want]
        assert [f for f, _ in self.calls] == pytest.approx([f for f, _ in want], abs=1e-12)


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "inspector.detect.patchcore.detector"]


# ----------------------------------------------------------------------------- state, declarations, describe
def test_a_fresh_detector_and_its_description() -> None:
    det = PatchCoreDetector()
    assert det.backbone is None and det.bank is None and det.grids is None and det.cells is None
    assert det.index is None and det.state_sha256 is None
    assert det.threshold == 1.0 and type(det.threshold) is float
    assert det.texture is False and det.cache_hit is False
    assert (det.augment, det.mode, det.alignment) == ("none", "global", "none")
    assert det.state == {} and type(det.state) is dict
    assert det.zero_shot is True
    assert describe(det) == {"zero_shot": True, "texture": False, "augment": "none", "memory": "global",
                             "place_agreement": None, "alignment": "none", "background_masked": False,
                             "bank_patches": 0, "bank_mb": 0.0, "raw_threshold": 1.0, "cache_hit": False}
    from typing import get_args

    from inspector.params.patchcore import PatchCoreParams

    allowed = get_args(PatchCoreParams.model_fields["backbone"].annotation)
    name = allowed[-1]  # the profile's backbone, whichever the field allows
    profile = ProductProfile(name="t", object="part", reference_shots=[], pipeline="patchcore",
                             patchcore={"backbone": name})
    assert PatchCoreDetector.required_models(profile) == [("backbone", name)]
    with pytest.raises(AssertionError):
        det.params  # noqa: B018  (no profile yet)
    det.profile = profile
    assert det.params is profile.patchcore


def test_describe_reads_every_field() -> None:
    det = PatchCoreDetector()
    det.bank = torch.zeros(5, 7)
    det.texture, det.augment, det.mode, det.alignment = True, "flips", "local", "rigid"
    det.cells = torch.ones(2, 2, dtype=torch.bool)
    det.threshold, det.cache_hit = 0.25, True
    det.state = {"place_agreement": np.array(1.5, np.float32)}
    got = describe(det)
    assert got == {"zero_shot": False, "texture": True, "augment": "flips", "memory": "local",
                   "place_agreement": 1.5, "alignment": "rigid", "background_masked": True,
                   "bank_patches": 5, "bank_mb": 35 * 4 / 1e6, "raw_threshold": 0.25, "cache_hit": True}
    assert type(got["place_agreement"]) is float and type(got["bank_patches"]) is int


# ----------------------------------------------------------------------------- features
@pytest.mark.parametrize(("layers", "p", "norm", "colour"), [([1, 2], 3, "layer_l2", 2.0), ([2], 1, "none", 0.5),
                                                             ([1], 1, "none", 0.0)])
def test_grid_is_the_chosen_stages_aggregated_normalised_upsampled_with_colour(
        hub: ModelHub, layers: list[int], p: int, norm: str, colour: float) -> None:
    det = PatchCoreDetector()
    det.profile = make_profile(Path("."), [], layers=layers, patch_neighbourhood=p, feature_norm=norm,
                               colour_weight=colour).model_copy()
    det.backbone = hub.get("backbone", "efficientnet_lite0")
    imgs = [noise(1), noise(2)]
    got = det._grid(imgs)
    assert got.dtype == torch.float32 and got.device.type == "cpu"
    want = np.stack([naive_grid(im, layers, p, norm == "layer_l2", colour) for im in imgs])
    assert got.shape == want.shape
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-5)


def test_grid_runs_in_fp32_on_a_cpu_whatever_the_hubs_precision() -> None:
    bf16 = ModelHub(device="cpu", precision="bf16")
    bf16.provide("backbone", PoolNet())
    det = PatchCoreDetector()
    det.profile = ProductProfile(name="t", object="part", reference_shots=[], pipeline="patchcore",
                                 patchcore={**PLAIN, "layers": [1, 2], "feature_norm": "none"})
    det.backbone = bf16.get("backbone", "efficientnet_lite0")
    assert det.backbone.dtype == torch.bfloat16
    im = noise(3)
    np.testing.assert_allclose(det._grid([im])[0].numpy(), naive_grid(im, [1, 2]), rtol=1e-5, atol=1e-5)


def test_tiles_are_at_most_the_image_and_embed_image_batches_them(hub: ModelHub) -> None:
    det = PatchCoreDetector()
    det.profile = ProductProfile(name="t", object="part", reference_shots=[], pipeline="patchcore",
                                 patchcore={**PLAIN, "tiling": "on", "tile_size": 80, "tile_overlap": 0.25,
                                            "tile_batch": 2})
    assert det._tiles((100, 150, 3)) == (tile_grid(100, 150, 80, 0.25), 80)
    assert det._tiles((100, 150, 3))[0] == [(0, 0), (0, 60), (0, 70), (20, 0), (20, 60), (20, 70)]
    assert det._tiles((50, 150)) == (tile_grid(50, 150, 50, 0.25), 50)
    assert det._tiles((150, 60)) == (tile_grid(150, 60, 60, 0.25), 60)
    det.backbone = hub.get("backbone", "efficientnet_lite0")
    img = noise(4, 100, 150)
    starts = [(0, 0), (0, 60), (0, 70), (20, 0), (20, 60), (20, 70)]
    before = det.backbone.calls
    grids = det._embed_image(img)
    assert det.backbone.calls - before == 3  # six tiles, two per backbone call
    assert len(grids) == 6
    for g, (y, x) in zip(grids, starts, strict=True):
        crop = cv2.resize(img[y:y + 80, x:x + 80], (SIZE, SIZE), interpolation=cv2.INTER_AREA)
        np.testing.assert_allclose(g.numpy(), naive_grid(crop), rtol=1e-5, atol=1e-5)
    det.profile.patchcore.tile_batch = 4
    assert len(det._embed_image(img)) == 6 and det.backbone.calls - before == 5  # 4 + 2
    # untiled: one grid of the image squashed to the input size
    det.profile.patchcore.tiling = "off"
    (one,) = det._embed_image(img)
    want = naive_grid(cv2.resize(img, (SIZE, SIZE), interpolation=cv2.INTER_AREA))
    np.testing.assert_allclose(one.numpy(), want, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- prepare: textures, global memory
def expected_global_bank(refs: list[np.ndarray], copies: list[tuple[int, bool]], pool: int, grid=naive_grid
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Every copy's patches, each grid keeping ceil(pool / (refs·copies·grids)) rows drawn by one
    generator seeded 0 (in reference, copy order); and the owner of each row."""
    gen = torch.Generator().manual_seed(0)
    rows, owners = [], []
    quota = -(-pool // (len(refs) * len(copies)))
    for i, im in enumerate(refs):
        for turns, flip in copies:
            r = patches(grid(turned(im, turns, flip)))
            if r.shape[0] > quota:
                r = r[torch.randperm(r.shape[0], generator=gen)[:quota].numpy()]
            rows.append(r)
            owners += [i] * r.shape[0]
    return np.concatenate(rows), np.array(owners)


def test_prepare_a_texture_dihedral_pool_coreset_and_leave_one_out(tmp_path: Path, hub: ModelHub,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    refs = [noise(10), noise(11), noise(12)]
    # 9-D patches (two stages and the colour): the coreset projects them to coreset_dims 8
    prof = make_profile(tmp_path, refs, max_bank=256, coreset_candidates=2, coreset_dims=8, coreset_rounds=4,
                        coreset_part_size=256, reweight_neighbours=3, calibration_margin=1.5, layers=[1, 2],
                        colour_weight=1.0)

    def grid(im: np.ndarray) -> np.ndarray:
        return naive_grid(im, [1, 2], 1, False, 1.0)

    det = PatchCoreDetector()
    progress = Recorder()
    with caplog.at_level(logging.INFO, logger="inspector.detect.patchcore.detector"):
        det.prepare(prof, hub, progress)
    p = prof.patchcore
    shares = [structure_share(to_lab(cv2.resize(im, (128, 128), interpolation=cv2.INTER_CUBIC).astype(np.float32)
                                     / 255.0)) for im in refs]
    share = float(np.median(shares))
    assert share < p.texture_threshold  # noise is a texture: global memory, all eight copies
    # 3 refs x 8 copies x 256 patches; each copy keeps ceil(512 / 24) = 22 at random: 528 > 256, thinned
    # among 2 · 256 candidates
    allp, owners = expected_global_bank(refs, DIHEDRAL, 512, grid)
    assert allp.shape[0] == 528
    keep = greedy_coreset(torch.from_numpy(allp.astype(np.float32)), 256, 8, max_rounds=4, candidates=512,
                          part_size=256).numpy()
    bank, owners = allp[keep], owners[keep]
    s = det.state
    assert sorted(s) == sorted(["mode", "grids", "bank", "ivf_centroids", "ivf_offsets", "loo_maps", "loo_weights",
                                "texture", "augment", "alignment", "master", "master_edges", "cells",
                                "structure_share", "place_agreement"])
    np.testing.assert_allclose(s["bank"], bank, rtol=1e-5, atol=1e-6)
    assert s["bank"].dtype == np.float32 and det.bank.dtype == torch.float32
    np.testing.assert_allclose(det.bank.numpy(), bank, rtol=1e-5, atol=1e-6)
    # leave-one-out: each shot against the kept rows of the others; eq. 7 on its top patch
    weights = []
    for i, im in enumerate(refs):
        q = patches(grid(im))
        others = bank[owners != i]
        dist = nn_map(q, others)
        np.testing.assert_allclose(s["loo_maps"][i], resize_map(dist.reshape(16, 16).astype(np.float32), (SIZE, SIZE)),
                                   rtol=1e-4, atol=1e-5)
        top = int(np.argmax(dist))
        star = int(np.argmin(np.sqrt(((others - q[top]) ** 2).sum(1))))
        weights.append(naive_weight(q[top], star, others, 3))
    assert s["loo_maps"].shape == (3, SIZE, SIZE) and s["loo_maps"].dtype == np.float32
    np.testing.assert_allclose(s["loo_weights"], weights, rtol=1e-5)
    assert s["loo_weights"].dtype == np.float32
    assert s["structure_share"] == pytest.approx(share, rel=1e-6) and s["structure_share"].dtype == np.float32
    assert math.isnan(float(s["place_agreement"])) and s["place_agreement"].dtype == np.float32
    assert (str(s["mode"]), bool(s["texture"]), str(s["augment"]), str(s["alignment"])) == (
        "global", True, "dihedral", "none")
    assert s["texture"].dtype == bool
    for name, dtype in [("grids", np.float32), ("ivf_centroids", np.float32), ("ivf_offsets", np.int64),
                        ("master", np.float32), ("master_edges", np.float32), ("cells", bool)]:
        assert s[name].shape == (0,) and s[name].dtype == dtype, name
    assert det.index is None and det.grids is None and det.cells is None
    assert det.threshold == pytest.approx(1.5 * float(np.median([
        float(naive_gaussian(m, 4.0).max()) * w for m, w in zip(s["loo_maps"], weights, strict=True)])),
        rel=1e-3)
    progress.check([
        (0.0, "loading backbone efficientnet_lite0"),
        (0.05 + 0.1 / 3, "reading reference 1/3"), (0.05 + 0.2 / 3, "reading reference 2/3"),
        (0.15, "reading reference 3/3"),
        (0.15 + 0.45 / 3, "describing reference 1/3"), (0.15 + 0.9 / 3, "describing reference 2/3"),
        (0.6, "describing reference 3/3"),
        (0.62, "memory bank: 528 patches"), (0.75, "coreset: kept 256 patches"),
        (0.75 + 0.25 / 3, "calibrating 1/3"), (0.75 + 0.5 / 3, "calibrating 2/3"), (1.0, "calibrating 3/3"),
        (1.0, "references ready")])
    assert messages(caplog) == [
        f"patchcore: 3 references, structure share {share:.2f} -> texture, place agreement nan, global memory, "
        "augment dihedral"]
    assert describe(det) == {"zero_shot": False, "texture": True, "augment": "dihedral", "memory": "global",
                             "place_agreement": pytest.approx(float("nan"), nan_ok=True), "alignment": "none",
                             "background_masked": False, "bank_patches": 256, "bank_mb": 256 * 9 * 4 / 1e6,
                             "raw_threshold": det.threshold, "cache_hit": False}


def test_prepare_ivf_bank_grouped_by_list_leave_one_out_and_the_cache(tmp_path: Path, hub: ModelHub) -> None:
    from inspector.detect.patchcore.detector import ALGORITHM_VERSION

    refs = [noise(20), noise(21)]
    prof = make_profile(tmp_path, refs, augment="flips", search="ivf", ivf_list_size=16, ivf_probes=2,
                        max_bank=4096)
    det = PatchCoreDetector()
    progress = Recorder()
    det.prepare(prof, hub, progress)
    flips = [(0, False), (0, True), (2, False), (2, True)]
    allp, owners = expected_global_bank(refs, flips, 4 * 4096)  # no copy above its quota: every patch
    assert allp.shape[0] == 2048
    order, index = build_index(torch.from_numpy(allp.astype(np.float32)), 16)
    bank, owners = allp[order.numpy()], owners[order.numpy()]
    s = det.state
    np.testing.assert_allclose(s["bank"], bank, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s["ivf_centroids"], index.centroids.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(s["ivf_offsets"], index.offsets.numpy())
    assert s["ivf_offsets"].dtype == np.int64 and s["ivf_centroids"].dtype == np.float32
    assert det.index is not None and torch.equal(det.index.offsets, index.offsets)
    np.testing.assert_allclose(det.index.centroids.numpy(), index.centroids.numpy(), rtol=1e-5, atol=1e-6)
    grouped = torch.from_numpy(bank.astype(np.float32))
    for i, im in enumerate(refs):
        q = torch.from_numpy(patches(naive_grid(im)).astype(np.float32))
        dist, _ = probe_nearest(q, grouped, index, 2, torch.from_numpy(owners != i))
        np.testing.assert_allclose(s["loo_maps"][i], resize_map(dist.reshape(16, 16).numpy(), (SIZE, SIZE)),
                                   rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(s["loo_weights"], [1.0, 1.0])  # reweight_neighbours 0
    assert str(s["augment"]) == "flips"
    # analyse searches the probed lists of the whole bank
    query = noise(22)
    a = det.analyse(query)
    q = torch.from_numpy(patches(naive_grid(query)).astype(np.float32))
    dist, _ = probe_nearest(q, grouped, index, 2)
    exact = nn_map(q.numpy().astype(np.float64), bank)
    assert float(np.abs(dist.numpy() - exact).max()) > 1e-3  # the lists miss some nearest rows
    np.testing.assert_allclose(a.raw_map, resize_map(dist.reshape(16, 16).numpy(), (SIZE, SIZE)), rtol=1e-4, atol=1e-5)
    assert a.raw_map.dtype == np.float32 and a.weight == 1.0 and a.zero_shot_scale is None
    assert sorted(a.timings) == ["features", "search"] and all(v >= 0 for v in a.timings.values())
    progress.check([(0.0, "loading backbone efficientnet_lite0"), (0.1, "reading reference 1/2"),
                    (0.15, "reading reference 2/2"), (0.375, "describing reference 1/2"),
                    (0.6, "describing reference 2/2"), (0.62, "memory bank: 2048 patches"),
                    (0.875, "calibrating 1/2"), (1.0, "calibrating 2/2"), (1.0, "references ready")])

    # the cache: keyed by the algorithm version, the files' sha256, the shaping fields and the weights
    p = prof.patchcore
    shaping = {k: v for k, v in p.model_dump().items() if k not in FINISH}
    files = [hashlib.sha256(path.read_bytes()).hexdigest() for path in prof.reference_paths()]
    key = cache_key(ALGORITHM_VERSION, files, shaping, weights_identity())
    assert det.state_sha256 == key and not det.cache_hit
    entry = ArrayCache().load("patchcore", key)
    assert entry is not None and sorted(entry) == sorted(s)
    again = PatchCoreDetector()
    progress = Recorder()
    again.prepare(prof, hub, progress)
    assert again.cache_hit and again.state_sha256 == key
    progress.check([(0.0, "loading backbone efficientnet_lite0"), (1.0, "references ready (cached)")])
    for name in s:
        np.testing.assert_array_equal(again.state[name], s[name])
    assert again.threshold == det.threshold and describe(again)["cache_hit"] is True
    # the finish fields only rescale: the same entry; a shaping field is another entry
    retuned = prof.model_copy(deep=True)
    for name, value in [("smoothing_sigma", 2.0), ("calibration_margin", 2.0), ("calibration_statistic", "worst"),
                        ("image_score", "top_mean"), ("top_fraction", 0.2), ("zero_shot_ratio", 3.0)]:
        setattr(retuned.patchcore, name, value)
    third = PatchCoreDetector()
    third.prepare(retuned, hub)
    assert third.cache_hit and third.state_sha256 == key
    shaped = prof.model_copy(deep=True)
    shaped.patchcore.ivf_probes = 3
    fourth = PatchCoreDetector()
    fourth.prepare(shaped, hub)
    assert not fourth.cache_hit and fourth.state_sha256 != key


# ----------------------------------------------------------------------------- prepare: objects, positional memory
MOVING = [(0, 0, 0), (1, 6, 5), (2, -5, 8)]  # (noise seed, dy, dx) of each shot of the object


def test_prepare_an_object_whose_shots_agree_in_place_positional_memory_with_turned_copies(
        tmp_path: Path, hub: ModelHub, caplog: pytest.LogCaptureFixture) -> None:
    from inspector.detect.patchcore.detector import rotate

    refs = [blob(*m) for m in MOVING]
    probe = PatchCoreDetector()
    probe.profile = make_profile(tmp_path / "probe", [])
    probe.backbone = hub.get("backbone", "efficientnet_lite0")
    agreement = place_agreement(torch.stack([probe._grid([im])[0] for im in refs]), 3)
    assert 1.0 < agreement < 10.0
    # the limit exactly at the measured agreement: still "agrees" (<=); augment flips is dropped for local
    # (search ivf: a positional memory has no k-means lists, whatever its size)
    prof = make_profile(tmp_path, refs, memory="auto", alignment="auto", background="auto", augment="flips",
                        local_agreement=agreement, pose_jitter_deg=10.0, pose_jitter_steps=1, max_bank=256,
                        coreset_candidates=1, reweight_neighbours=3, search="ivf", ivf_list_size=16, ivf_probes=1)
    det = PatchCoreDetector()
    progress = Recorder()
    before = probe.backbone.calls
    with caplog.at_level(logging.INFO, logger="inspector.detect.patchcore.detector"):
        det.prepare(prof, hub, progress)
    assert det.backbone.calls - before == 3 + 6  # the three shots once each, then their six turned copies
    s = det.state
    assert s["ivf_centroids"].shape == (0,) and det.index is None
    share = float(np.median([structure_share(to_lab(cv2.resize(im, (128, 128), interpolation=cv2.INTER_CUBIC)
                                                    .astype(np.float32) / 255.0)) for im in refs]))
    assert share >= prof.patchcore.texture_threshold
    assert (det.mode, det.augment, det.alignment, det.texture) == ("local", "none", "none", False)
    assert float(s["place_agreement"]) == pytest.approx(agreement, rel=1e-6)
    grids = np.stack([naive_grid(im if a == 0 else rotate(im, a)) for im in refs for a in (0.0, -10.0, 10.0)])
    np.testing.assert_allclose(s["grids"], grids, rtol=1e-5, atol=1e-5)
    assert s["grids"].dtype == np.float32
    np.testing.assert_allclose(det.grids.numpy(), grids, rtol=1e-5, atol=1e-5)
    # every patch of every shot (no random share, no coreset in a positional memory)
    np.testing.assert_allclose(s["bank"], np.concatenate([patches(g) for g in grids[::3]]), rtol=1e-5, atol=1e-5)
    owner = np.repeat([0, 1, 2], 3)
    weights = []
    for i in range(3):
        local = grids[owner != i]
        dist, idx = window_nearest(grids[3 * i], local, 3)
        np.testing.assert_allclose(s["loo_maps"][i], resize_map(dist.astype(np.float32), (SIZE, SIZE)),
                                   rtol=1e-4, atol=2e-4)  # float32 |q|² + |m|² − 2q·m near 0
        top = int(np.argmax(dist))
        support = local.transpose(0, 2, 3, 1).reshape(-1, 3)
        weights.append(naive_weight(patches(grids[3 * i])[top], int(idx.ravel()[top]), support, 3))
    np.testing.assert_allclose(s["loo_weights"], weights, rtol=1e-5)
    assert messages(caplog) == [
        f"patchcore: 3 references, structure share {share:.2f} -> object, place agreement {agreement:.3f}, "
        "local memory, augment none"]
    progress.check([(0.0, "loading backbone efficientnet_lite0"), (0.05 + 0.1 / 3, "reading reference 1/3"),
                    (0.05 + 0.2 / 3, "reading reference 2/3"), (0.15, "reading reference 3/3"),
                    (0.3, "describing reference 1/3"), (0.45, "describing reference 2/3"),
                    (0.6, "describing reference 3/3"), (0.62, "memory bank: 768 patches"),
                    (0.75 + 0.25 / 3, "calibrating 1/3"), (0.75 + 0.5 / 3, "calibrating 2/3"),
                    (1.0, "calibrating 3/3"), (1.0, "references ready")])
    assert describe(det)["place_agreement"] == pytest.approx(agreement, rel=1e-6)
    query = blob(5, 2, -3)
    a = det.analyse(query)
    dist, idx = window_nearest(naive_grid(query), grids, 3)
    np.testing.assert_allclose(a.raw_map, resize_map(dist.astype(np.float32), (SIZE, SIZE)), rtol=1e-4, atol=2e-4)
    top = int(np.argmax(dist))
    support = grids.transpose(0, 2, 3, 1).reshape(-1, 3)
    assert a.weight == pytest.approx(naive_weight(patches(naive_grid(query))[top], int(idx.ravel()[top]), support, 3),
                                     rel=1e-5)
    assert a.zero_shot_scale is None and sorted(a.timings) == ["features", "search"]

    # a limit just below it: the shots do not agree, PatchCore's memory anywhere (flips kept)
    below = make_profile(tmp_path / "below", refs, memory="auto", augment="flips", local_agreement=1.0,
                         max_bank=4096)
    det = PatchCoreDetector()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="inspector.detect.patchcore.detector"):
        det.prepare(below, hub)
    assert (det.mode, det.augment, det.grids) == ("global", "flips", None)
    assert det.state["grids"].shape == (0,)
    assert float(det.state["place_agreement"]) == pytest.approx(agreement, rel=1e-6)
    assert messages(caplog) == [
        f"patchcore: 3 references, structure share {share:.2f} -> object, place agreement {agreement:.3f}, "
        "global memory, augment flips"]
    allp, _ = expected_global_bank(refs, [(0, False), (0, True), (2, False), (2, True)], 4 * 4096)
    np.testing.assert_allclose(det.state["bank"], allp, rtol=1e-5, atol=1e-5)


WASHERS = [(80, 80, 0, 10), (84, 77, 8, 11), (77, 83, -10, 12)]  # (cx, cy, turn, seed) at 160 px


def test_prepare_whole_parts_are_registered_to_the_first_and_their_background_masked(
        tmp_path: Path, hub: ModelHub, caplog: pytest.LogCaptureFixture) -> None:
    from inspector.detect.patchcore.detector import to_frame

    refs = [washer(160, cx, cy, a, seed) for cx, cy, a, seed in WASHERS]
    prof = make_profile(tmp_path, refs, memory="local", alignment="auto", background="auto", max_rotation_deg=15.0,
                        background_margin_px=4, reweight_neighbours=2)
    det = PatchCoreDetector()
    with caplog.at_level(logging.INFO, logger="inspector.detect.patchcore.detector"):
        det.prepare(prof, hub)
    base = [cv2.resize(im, (SIZE, SIZE), interpolation=cv2.INTER_AREA) for im in refs]
    assert object_mask(base, 0.8, 0) is not None  # one whole part on a clean background in every shot
    master = base[0]
    edges = align_image(master.astype(np.float32) / 255.0)
    aligned = [master] + [to_frame(im, scale_pose(estimate_pose(align_image(im.astype(np.float32) / 255.0), edges,
                                                                "rigid", 15.0), SIZE / ALIGN_SIZE), master)
                          for im in base[1:]]
    mask = object_mask(aligned, 0.8, 4)
    cells = cv2.resize(mask.astype(np.float32), (16, 16), interpolation=cv2.INTER_AREA) > 0
    assert 0 < cells.sum() < 256
    s = det.state
    assert (det.mode, det.alignment, det.augment) == ("local", "rigid", "none")
    np.testing.assert_array_equal(s["master"], master)
    np.testing.assert_allclose(s["master_edges"], edges, rtol=1e-6, atol=1e-6)
    assert s["master_edges"].dtype == np.float32
    np.testing.assert_array_equal(s["cells"], cells)
    assert det.cells is not None and det.cells.dtype == torch.bool
    np.testing.assert_array_equal(det.cells.numpy(), cells)
    # OpenCV's registration differs from run to run in the last float32 bit (its thread pool), which can
    # move a warped pixel by one grey level: 1/255/16 in a cell's block mean
    grids = np.stack([naive_grid(im) for im in aligned])
    np.testing.assert_allclose(s["grids"], grids, rtol=0, atol=2e-3)
    for i in range(3):
        local = grids[np.arange(3) != i]
        dist, idx = window_nearest(grids[i], local, 1)  # aligned: radius 1
        dist = dist * cells
        np.testing.assert_allclose(s["loo_maps"][i], resize_map(dist.astype(np.float32), (SIZE, SIZE)),
                                   rtol=0, atol=2e-3)
        top = int(np.argmax(dist))
        support = local.transpose(0, 2, 3, 1).reshape(-1, 3)
        want = naive_weight(patches(grids[i])[top], int(idx.ravel()[top]), support, 2)
        assert float(s["loo_weights"][i]) == pytest.approx(want, rel=1e-3)
    assert describe(det)["alignment"] == "rigid" and describe(det)["background_masked"] is True
    # analyse: the image squashed to the input size, registered, scored on the part, drawn back
    from inspector.detect.patchcore.detector import from_frame

    test = washer(160, 79, 82, -6, 50, chip=True)
    small = cv2.resize(test, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    pose = scale_pose(estimate_pose(align_image(small.astype(np.float32) / 255.0), edges, "rigid", 15.0),
                      SIZE / ALIGN_SIZE)
    framed = to_frame(small, pose, master)
    dist, _ = window_nearest(naive_grid(framed), grids, 1)
    want = from_frame(resize_map((dist * cells).astype(np.float32), (SIZE, SIZE)), pose)
    a = det.analyse(test)
    np.testing.assert_allclose(a.raw_map, want, rtol=0, atol=2e-3)
    assert sorted(a.timings) == ["align", "features", "search"] and a.zero_shot_scale is None
    assert math.isnan(float(s["place_agreement"]))  # aligned: no agreement test
    # an explicit alignment is taken as it is (here none: the shots are used as they lie, still masked)
    det = PatchCoreDetector()
    det.prepare(make_profile(tmp_path / "none", refs, memory="local", alignment="none", background="auto",
                             background_margin_px=4), hub)
    assert det.alignment == "none" and det.state["master"].shape == (0,)
    want = cv2.resize(object_mask(base, 0.8, 4).astype(np.float32), (16, 16), interpolation=cv2.INTER_AREA) > 0
    np.testing.assert_array_equal(det.cells.numpy(), want)
    # background mask on parts that separate: masked, no warning
    det = PatchCoreDetector()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="inspector.detect.patchcore.detector"):
        det.prepare(make_profile(tmp_path / "mask", refs, memory="local", background="mask", max_rotation_deg=15.0,
                                 background_margin_px=4), hub)
    np.testing.assert_array_equal(det.cells.numpy(), cells)
    assert [r.levelname for r in caplog.records if r.name.endswith("detector")] == ["INFO"]
    # background keep: nothing masked
    det = PatchCoreDetector()
    det.prepare(make_profile(tmp_path / "keep", refs, memory="local", background="keep"), hub)
    assert det.alignment == "rigid" and det.cells is None and det.state["cells"].shape == (0,)


def test_background_mask_without_a_separable_part_warns_and_masks_nothing(
        tmp_path: Path, hub: ModelHub, caplog: pytest.LogCaptureFixture) -> None:
    refs = [noise(30), noise(31)]
    det = PatchCoreDetector()
    with caplog.at_level(logging.INFO, logger="inspector.detect.patchcore.detector"):
        det.prepare(make_profile(tmp_path, refs, memory="local", background="mask", augment="auto"), hub)
    assert (det.mode, det.alignment, det.cells, det.augment) == ("local", "none", None, "none")
    got = messages(caplog)
    assert got[1:] == ["patchcore: background 'mask', but the references show no part that separates cleanly from "
                       "its background; nothing is masked"]
    assert [r.levelname for r in caplog.records if r.name.endswith("detector")] == ["INFO", "WARNING"]
    assert re.fullmatch(r"patchcore: 2 references, structure share 0\.\d\d -> texture, place agreement nan, "
                        r"local memory, augment none", got[0])


# ----------------------------------------------------------------------------- prepare: one shot, tiles, 0-shot
def naive_jitter(im: np.ndarray) -> np.ndarray:
    """Shifted by 4 px right and down (the first rows and columns repeated), times 1.04 in float32
    (225 · 1.04 is 233.99998), truncated to uint8."""
    h, w = im.shape[:2]
    yy, xx = np.mgrid[:h, :w]
    shifted = im[np.maximum(yy - 4, 0), np.maximum(xx - 4, 0)].astype(np.float32)
    return np.clip(np.floor(shifted * np.float32(1.04)), 0, 255).astype(np.uint8)


def test_jitter_by_hand() -> None:
    im = noise(40, 12, 9)
    im[0, 0] = (250, 10, 100)
    im[5, 3] = (0, 1, 2)
    got = _jitter(im)
    assert got.dtype == np.uint8 and got.shape == im.shape
    np.testing.assert_array_equal(got, naive_jitter(im))
    assert tuple(got[4, 4]) == (255, 10, 104)  # 250·1.04 clipped, 10.4 and 104 truncated
    assert tuple(got[9, 7]) == (0, 1, 2)


def test_one_shot_is_calibrated_against_its_shifted_relit_copy(tmp_path: Path, hub: ModelHub) -> None:
    im = noise(41)
    det = PatchCoreDetector()
    progress = Recorder()
    # pool 256 = the grid's 256 patches: all kept in order, and a bank of exactly max_bank is not thinned
    det.prepare(make_profile(tmp_path, [im], memory="global", augment="none", max_bank=256, coreset_candidates=1),
                hub, progress)
    bank = patches(naive_grid(im))
    np.testing.assert_allclose(det.state["bank"], bank, rtol=1e-5, atol=1e-5)
    progress.check([(0.0, "loading backbone efficientnet_lite0"), (0.15, "reading reference 1/1"),
                    (0.6, "describing reference 1/1"), (0.62, "memory bank: 256 patches"),
                    (1.0, "calibrating 1/1"), (1.0, "references ready")])
    dist = nn_map(patches(naive_grid(naive_jitter(im))), bank)
    np.testing.assert_allclose(det.state["loo_maps"][0], resize_map(dist.reshape(16, 16).astype(np.float32),
                                                                    (SIZE, SIZE)), rtol=1e-4, atol=1e-4)
    # positional memory of one shot: its copy is searched against the shot's own grid
    det = PatchCoreDetector()
    det.prepare(make_profile(tmp_path / "local", [blob(0)], memory="local", local_radius=2), hub)
    assert det.mode == "local" and det.state["grids"].shape == (1, 3, 16, 16)
    g = naive_grid(blob(0))
    dist, _ = window_nearest(naive_grid(naive_jitter(blob(0))), g[None], 2)
    np.testing.assert_allclose(det.state["loo_maps"][0], resize_map(dist.astype(np.float32), (SIZE, SIZE)),
                               rtol=1e-4, atol=2e-4)


def test_tiled_references_take_global_memory_and_their_maps_are_brought_to_the_first_frame(
        tmp_path: Path, hub: ModelHub, caplog: pytest.LogCaptureFixture) -> None:
    from tests.support.reference import naive_stitch

    refs = [noise(50, 64, 96), noise(51, 96, 64)]
    prof = make_profile(tmp_path, refs, tiling="on", tile_size=64, tile_overlap=0.25, memory="local",
                        augment="auto", max_bank=4096)
    det = PatchCoreDetector()
    progress = Recorder()
    with caplog.at_level(logging.INFO, logger="inspector.detect.patchcore.detector"):
        det.prepare(prof, hub, progress)
    assert (det.mode, det.augment, det.alignment) == ("global", "none", "none")
    got = messages(caplog)
    assert got[0] == "patchcore: local memory needs untiled references; tiled images use global memory"
    assert len(got) == 2 and got[1].endswith(", global memory, augment none")
    starts = [[(0, 0), (0, 32)], [(0, 0), (32, 0)]]
    tiles = [[naive_grid(im[y:y + 64, x:x + 64]) for y, x in st] for im, st in zip(refs, starts, strict=True)]
    rows = [np.concatenate([patches(g) for g in t]) for t in tiles]
    np.testing.assert_allclose(det.state["bank"], np.concatenate(rows), rtol=1e-5, atol=1e-5)
    frames = [(64, 96), (96, 64)]
    maps = []
    for i in range(2):
        pieces = [resize_map(nn_map(patches(g), rows[1 - i]).reshape(16, 16).astype(np.float32), (SIZE, SIZE))
                  for g in tiles[i]]
        maps.append(naive_stitch(*frames[i], [(y, x, m) for (y, x), m in zip(starts[i], pieces, strict=True)]))
    assert det.state["loo_maps"].shape == (2, 64, 96)
    np.testing.assert_allclose(det.state["loo_maps"][0], maps[0], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(det.state["loo_maps"][1], resize_map(maps[1].astype(np.float32), (64, 96)),
                               rtol=1e-4, atol=1e-4)
    assert progress.calls[5] == (0.62, "memory bank: 1024 patches")


def test_tiled_copies_share_the_pool_per_tile(tmp_path: Path, hub: ModelHub) -> None:
    """pool = candidates · max_bank rows, each grid's share ceil(pool / (refs · copies · tiles))."""
    refs = [noise(52, 64, 96), noise(53, 64, 96)]
    prof = make_profile(tmp_path, refs, tiling="on", tile_size=64, tile_overlap=0.25, augment="flips",
                        memory="global", max_bank=256, coreset_candidates=2, coreset_rounds=8, coreset_dims=8)
    det = PatchCoreDetector()
    progress = Recorder()
    det.prepare(prof, hub, progress)
    gen = torch.Generator().manual_seed(0)
    quota = -(-512 // (2 * 4 * 2))  # 32
    rows = []
    for im in refs:
        for turns, flip in [(0, False), (0, True), (2, False), (2, True)]:
            t = turned(im, turns, flip)
            for y, x in [(0, 0), (0, 32)]:
                r = patches(naive_grid(t[y:y + 64, x:x + 64]))
                rows.append(r[torch.randperm(256, generator=gen)[:quota].numpy()])
    allp = np.concatenate(rows)
    assert progress.calls[5] == (0.62, "memory bank: 512 patches")
    keep = greedy_coreset(torch.from_numpy(allp.astype(np.float32)), 256, 8, max_rounds=8, candidates=512,
                          part_size=prof.patchcore.coreset_part_size).numpy()
    np.testing.assert_allclose(det.state["bank"], allp[keep], rtol=1e-5, atol=1e-5)


def test_prepare_without_references_is_zero_shot_and_forgets_the_previous_bank(
        tmp_path: Path, hub: ModelHub, caplog: pytest.LogCaptureFixture) -> None:
    det = PatchCoreDetector()
    det.prepare(make_profile(tmp_path / "refs", [noise(60), noise(61)]), hub)
    assert det.bank is not None and det.state and det.state_sha256
    progress = Recorder()
    empty = ProductProfile(name="bare", object="part", reference_shots=[], pipeline="patchcore",
                           patchcore=PLAIN).with_folder(tmp_path)
    with caplog.at_level(logging.INFO, logger="inspector.detect.patchcore.detector"):
        det.prepare(empty, hub, progress)
    assert det.bank is None and det.state == {} and det.state_sha256 is None and det.zero_shot
    assert det.profile is empty and det.hub is hub and det.backbone is hub.get("backbone", "efficientnet_lite0")
    progress.check([(0.0, "loading backbone efficientnet_lite0"), (1.0, "no reference shots: 0-shot mode")])
    assert messages(caplog) == ["patchcore: profile 'bare' has no reference shots: 0-shot mutual scoring"]
    det.prepare(empty, hub)  # no progress callback: reports go nowhere
    assert det.bank is None


def test_an_unreadable_reference_names_the_file(tmp_path: Path, hub: ModelHub) -> None:
    prof = make_profile(tmp_path, [noise(62), noise(63)])
    path = prof.reference_paths()[1]
    path.write_bytes(b"")
    det = PatchCoreDetector()
    progress = Recorder()
    msg = f"reference shot {path}: {path}: empty file (0 bytes); the copy may still be in progress"
    with pytest.raises(PatchCoreError, match="^" + re.escape(msg) + "$"):
        det.prepare(prof, hub, progress)
    progress.check([(0.0, "loading backbone efficientnet_lite0"), (0.1, "reading reference 1/2")])
    imgs = det._read(prof.reference_paths()[:1], progress)
    np.testing.assert_array_equal(imgs[0], noise(62))
    assert len(imgs) == 1


# ----------------------------------------------------------------------------- analyse, adopt, index, retune
def test_analyse_before_prepare_and_in_zero_shot_mode(tmp_path: Path, hub: ModelHub) -> None:
    det = PatchCoreDetector()
    with pytest.raises(RuntimeError, match=r"^PatchCoreDetector\.analyse called before prepare\(\)$"):
        det.analyse(noise(70))
    det.prepare(ProductProfile(name="z", object="part", reference_shots=[], pipeline="patchcore",
                               patchcore={**PLAIN, "zero_shot_exclusion_px": 8}).with_folder(tmp_path), hub)
    det.alignment = "rigid"  # no bank: never registered
    im = noise(71)
    a = det.analyse(im)
    g = patches(naive_grid(im))
    dist = np.sqrt(((g[:, None] - g[None]) ** 2).sum(-1))
    ii, jj = np.divmod(np.arange(256), 16)
    near = (np.abs(ii[:, None] - ii[None]) <= 2) & (np.abs(jj[:, None] - jj[None]) <= 2)  # ceil(8 / 4) cells
    s = np.where(near, np.inf, dist).min(1)
    np.testing.assert_allclose(a.raw_map, resize_map(s.reshape(16, 16).astype(np.float32), (SIZE, SIZE)),
                               rtol=1e-4, atol=1e-5)
    assert a.weight == 1.0
    assert a.zero_shot_scale == pytest.approx(float(np.sort(s)[127]), rel=1e-5)  # torch's median: the lower one
    assert sorted(a.timings) == ["features", "search"]


def test_adopt_converts_the_cached_arrays(tmp_path: Path) -> None:
    det = PatchCoreDetector()
    det.profile = make_profile(tmp_path, [], calibration_margin=2.0, smoothing_sigma=1.0)
    rng = np.random.default_rng(80)
    maps = rng.random((3, 8, 8))
    arrays = {"bank": np.asfortranarray(rng.random((5, 3))), "texture": np.array(True), "mode": np.array("local"),
              "grids": rng.random((3, 4, 4, 2)).transpose(0, 3, 1, 2), "augment": np.array("flips"),
              "alignment": np.array("rigid"), "cells": np.array([[1, 0], [0, 2]], np.uint8),
              "ivf_centroids": np.asfortranarray(rng.random((2, 3))), "ivf_offsets": np.array([0, 2, 5], np.int32),
              "loo_maps": maps, "loo_weights": np.array([1.0, 0.5, 0.25])}
    det._adopt(arrays)
    assert det.state == arrays and det.state is not arrays
    assert det.bank.dtype == torch.float32 and det.bank.is_contiguous()
    np.testing.assert_allclose(det.bank.numpy(), arrays["bank"], rtol=1e-6)
    assert det.texture is True and det.mode == "local" and type(det.mode) is str
    assert det.augment == "flips" and type(det.augment) is str
    assert det.alignment == "rigid" and type(det.alignment) is str
    assert det.grids is not None and det.grids.is_contiguous() and det.grids.dtype == torch.float64
    np.testing.assert_array_equal(det.grids.numpy(), arrays["grids"])
    assert det.cells.dtype == torch.bool and det.cells.tolist() == [[True, False], [False, True]]
    assert det.index.centroids.dtype == torch.float32 and det.index.centroids.is_contiguous()
    np.testing.assert_allclose(det.index.centroids.numpy(), arrays["ivf_centroids"], rtol=1e-6)
    assert det.index.offsets.dtype == torch.int64 and det.index.offsets.tolist() == [0, 2, 5]
    scores = [float(naive_gaussian(m, 1.0).max()) * w for m, w in zip(maps, [1.0, 0.5, 0.25], strict=True)]
    assert det.threshold == pytest.approx(2.0 * float(np.median(scores)), rel=1e-5)
    # global memory keeps no grids; empty cells and centroids: no mask, no lists
    det._adopt({**arrays, "mode": np.array("global"), "texture": np.array(False), "cells": np.zeros((0,), bool),
                "ivf_centroids": np.zeros((0,), np.float32), "ivf_offsets": np.zeros((0,), np.int64)})
    assert det.mode == "global" and det.grids is None and det.cells is None and det.index is None
    assert det.texture is False


def test_index_for_only_ivf_banks_larger_than_the_probed_lists() -> None:
    det = PatchCoreDetector()
    det.profile = ProductProfile(name="t", object="part", reference_shots=[], pipeline="patchcore",
                                 patchcore={**PLAIN, "search": "ivf", "ivf_list_size": 16, "ivf_probes": 3})
    bank = torch.from_numpy(np.random.default_rng(81).random((48, 4)).astype(np.float32))
    assert det._index_for(bank) is None  # 48 rows = 16 · 3
    bigger = torch.cat([bank, bank[:1] + 0.5])
    order, index = det._index_for(bigger)
    want_order, want = build_index(bigger, 16)
    assert torch.equal(order, want_order) and torch.equal(index.offsets, want.offsets)
    assert index.offsets.numel() == 5  # ceil(49 / 16) lists
    assert torch.equal(index.centroids, want.centroids)
    det.profile.patchcore.search = "exact"
    assert det._index_for(bigger) is None
    wide = torch.zeros(40, 60)  # 40 rows of 60 dims: rows, not dims, count
    det.profile.patchcore.search = "ivf"
    assert det._index_for(wide) is None


def test_retune_rescales_only_and_refuses_other_changes(tmp_path: Path, hub: ModelHub) -> None:
    prof = make_profile(tmp_path, [noise(90), noise(91)], reweight_neighbours=3)
    det = PatchCoreDetector()
    det.prepare(prof, hub)
    base = det.threshold
    looser = prof.model_copy(deep=True)
    for name, value in [("smoothing_sigma", 4.0), ("calibration_margin", 2.5), ("image_score", "max"),
                        ("top_fraction", 0.3), ("zero_shot_ratio", 4.0)]:
        setattr(looser.patchcore, name, value)
    det.retune(looser)
    assert det.profile is looser and det.threshold == pytest.approx(2 * base, rel=1e-9)
    other = prof.model_copy(deep=True)
    other.patchcore.input_size = 80
    msg = ("patchcore parameters other than smoothing_sigma, calibration_margin, calibration_statistic, image_score, "
           "top_fraction, zero_shot_ratio changed; call prepare() again")
    with pytest.raises(ValueError, match="^" + re.escape(msg) + "$"):
        det.retune(other)
    shots = prof.model_copy(deep=True)
    shots.reference_shots = shots.reference_shots[:1]
    with pytest.raises(ValueError, match=r"^reference shots changed; call prepare\(\) again$"):
        det.retune(shots)
    assert det.profile is looser
    # before prepare (no backbone, or no profile) anything may be set; without state the threshold stays
    fresh = PatchCoreDetector()
    fresh.profile = prof
    fresh.retune(other)
    assert fresh.profile is other and fresh.threshold == 1.0
    unset = PatchCoreDetector()
    unset.backbone = det.backbone
    unset.retune(other)
    assert unset.profile is other and unset.threshold == 1.0


def test_image_pose_registers_at_align_size_and_scales_to_the_image() -> None:
    a = washer(160, 80, 80, 0, 10)
    b = washer(160, 86, 76, 9, 11)
    edges = align_image(a.astype(np.float32) / 255.0)
    pose = image_pose(b, edges, "rigid", 15.0)
    want = estimate_pose(align_image(b.astype(np.float32) / 255.0), edges, "rigid", 15.0)
    np.testing.assert_allclose(pose[:, :2], want[:, :2], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(pose[:, 2], want[:, 2] * 160 / ALIGN_SIZE, rtol=1e-6, atol=1e-6)
    tall = np.ascontiguousarray(np.concatenate([b, b[:40]], 0))  # 200 × 160: scaled by the height
    np.testing.assert_allclose(image_pose(tall, edges, "translation", 15.0)[:, 2],
                               estimate_pose(align_image(tall.astype(np.float32) / 255.0), edges, "translation",
                                             15.0)[:, 2] * 200 / ALIGN_SIZE, rtol=1e-6, atol=1e-6)


def test_backbone_identity_is_the_weights_digest_or_the_provided_modules_sum(tmp_path: Path) -> None:
    det = PatchCoreDetector()
    det.profile = make_profile(tmp_path, [])
    store_hub = ModelHub(device="cpu", precision="fp32")
    store = store_hub.model_store()
    entry = store.entry("efficientnet_lite0")
    shipped = store.file_path("efficientnet_lite0", entry.files[0])
    assert det._backbone_identity(store_hub) == hashlib.sha256(shipped.read_bytes()).hexdigest()
    # a module provided for exactly this key (not for every key): its class and weight sum name it
    keyed = ModelHub(device="cpu", precision="fp32")
    keyed.provide("backbone", PoolNet(), key="efficientnet_lite0")
    det.backbone = keyed.get("backbone", "efficientnet_lite0")
    assert det._backbone_identity(keyed) == weights_identity()
    other = ModelHub(device="cpu", precision="fp32")
    other.provide("backbone", PoolNet(), key="efficientnet_lite1")  # another key's module does not count
    assert det._backbone_identity(other) == hashlib.sha256(shipped.read_bytes()).hexdigest()


def test_auto_memory_of_two_object_shots_and_of_one(tmp_path: Path, hub: ModelHub) -> None:
    refs = [blob(*m) for m in MOVING[:2]]
    det = PatchCoreDetector()
    before = hub.get("backbone", "efficientnet_lite0").calls
    det.prepare(make_profile(tmp_path / "two", refs, memory="auto", local_agreement=10.0), hub)
    assert det.backbone.calls - before == 2  # each shot embedded once: the agreement's grids are the bank's
    grids = torch.from_numpy(np.stack([naive_grid(im) for im in refs]).astype(np.float32))
    assert det.mode == "local"
    assert float(det.state["place_agreement"]) == pytest.approx(place_agreement(grids, 3), rel=1e-4)
    np.testing.assert_allclose(det.state["grids"], grids.numpy(), rtol=1e-5, atol=1e-5)
    dist, _ = window_nearest(grids[0].double().numpy(), grids[1:].double().numpy(), 3)
    np.testing.assert_allclose(det.state["loo_maps"][0], resize_map(dist.astype(np.float32), (SIZE, SIZE)),
                               rtol=1e-4, atol=2e-4)
    det = PatchCoreDetector()
    det.prepare(make_profile(tmp_path / "one", refs[:1], memory="auto", local_agreement=10.0), hub)
    assert det.mode == "global" and math.isnan(float(det.state["place_agreement"]))


def test_texture_is_a_structure_share_strictly_below_the_threshold(tmp_path: Path, hub: ModelHub) -> None:
    refs = [noise(92), noise(93), noise(94)]
    share = float(np.median([structure_share(to_lab(cv2.resize(im, (128, 128), interpolation=cv2.INTER_CUBIC)
                                                    .astype(np.float32) / 255.0)) for im in refs]))
    det = PatchCoreDetector()
    det.prepare(make_profile(tmp_path, refs, texture_threshold=share, memory="global", augment="auto"), hub)
    assert det.texture is False and det.augment == "none"


def test_global_memory_is_never_registered(tmp_path: Path, hub: ModelHub) -> None:
    det = PatchCoreDetector()
    det.prepare(make_profile(tmp_path, [noise(95), noise(96)], memory="global", alignment="translation",
                             background="mask"), hub)
    assert (det.mode, det.alignment, det.cells) == ("global", "none", None)
    assert det.state["master"].shape == (0,) and str(det.state["alignment"]) == "none"


def test_one_whole_part_is_masked_on_its_own_grid(tmp_path: Path, hub: ModelHub) -> None:
    ref = washer(160, 80, 80, 0, 10)
    det = PatchCoreDetector()
    det.prepare(make_profile(tmp_path, [ref], memory="local", background_margin_px=4), hub)
    base = cv2.resize(ref, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    want = cv2.resize(object_mask([base], 0.8, 4).astype(np.float32), (16, 16), interpolation=cv2.INTER_AREA) > 0
    assert det.alignment == "rigid"
    np.testing.assert_array_equal(det.cells.numpy(), want)


def test_a_missing_reference_names_the_profile_and_the_file(tmp_path: Path, hub: ModelHub) -> None:
    prof = make_profile(tmp_path, [noise(64), noise(65)])
    path = prof.reference_paths()[0]
    path.unlink()
    det = PatchCoreDetector()
    with pytest.raises(PatchCoreError, match="^" + re.escape(f"profile 't': reference shot {path}: cannot read (")
                       + r".*No such file or directory.*\)$"):
        det.prepare(prof, hub)
