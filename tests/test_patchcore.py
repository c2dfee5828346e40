"""The patchcore pipeline end to end, on the real shipped ImageNet weights and real texture photos.

The raw map and the calibration are re-derived here independently (float64 numpy loops over the
backbone's feature maps); planted defects in real textures (scikit-image's brick / gravel photos)
must light up where they were planted.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.color
import torch
import torch.nn.functional as F

from inspector.detect.maps import gaussian_smooth, resize_map
from inspector.detect.patchcore import PatchCoreDetector
from inspector.imaging import write_png
from inspector.models.hub import ModelHub
from inspector.profile import ProductProfile

skimage_data = pytest.importorskip("skimage.data")

SIZE = 128


def texture(name: str, y: int, x: int, size: int = SIZE) -> np.ndarray:
    grey = getattr(skimage_data, name)()
    crop = grey[y:y + size, x:x + size]
    return np.ascontiguousarray(np.repeat(crop[..., None], 3, axis=2))


def plant(img: np.ndarray, cx: int, cy: int, r: int = 7) -> tuple[np.ndarray, np.ndarray]:
    out = img.copy()
    mask = np.zeros(img.shape[:2], np.uint8)
    cv2.circle(mask, (cx, cy), r, 1, -1)
    out[mask > 0] = (230, 40, 40)  # a red stain on a grey texture
    return out, mask.astype(bool)


@pytest.fixture(scope="module")
def hub() -> ModelHub:
    return ModelHub(device="cpu", precision="fp32")


def make_profile(tmp: Path, refs: list[np.ndarray], defaults: dict[str, object] | None = None,
                 obj: str = "brick wall", **patchcore: object) -> ProductProfile:
    """A patchcore profile in ``tmp`` with ``refs`` written as its reference shots; ``defaults``
    (here: SIZE px, no augmentation, no tiling) under the given ``patchcore`` settings."""
    (tmp / "references").mkdir(parents=True, exist_ok=True)
    names = []
    for i, im in enumerate(refs):
        write_png(tmp / "references" / f"{i:03d}.png", im)
        names.append(f"references/{i:03d}.png")
    base = {"input_size": SIZE, "augment": "none", "tiling": "off"} if defaults is None else defaults
    return ProductProfile(name="t", object=obj, reference_shots=names, pipeline="patchcore",
                          patchcore={**base, **patchcore}).with_folder(tmp)


# ----------------------------------------------------------------------------- independent maths
def naive_colour(x: np.ndarray, h: int, w: int, p: int) -> np.ndarray:
    """(3, h, w) float64: scikit-image's L*a*b* of the input-size image, block means onto the grid,
    the p×p mean over existing cells, each channel divided by its range (100, 128, 128)."""
    lab = skimage.color.rgb2lab(x.astype(np.float64))
    by, bx = lab.shape[0] // h, lab.shape[1] // w
    cells = lab.reshape(h, by, w, bx, 3).mean((1, 3)).transpose(2, 0, 1) / np.array([100.0, 128.0, 128.0])[:, None, None]
    out = np.zeros_like(cells)
    r = p // 2
    for i in range(h):
        for j in range(w):
            out[:, i, j] = cells[:, max(0, i - r):i + r + 1, max(0, j - r):j + r + 1].reshape(3, -1).mean(1)
    return out


def naive_grid(backbone: torch.nn.Module, rgb: np.ndarray, layers: list[int], p: int, l2: bool,
               colour: float = 0.0, mean: tuple[float, ...] = (0.5,) * 3,
               std: tuple[float, ...] = (0.5,) * 3) -> np.ndarray:
    """(h, w, D) float64 patch features: backbone stages, p×p mean over existing cells, unit length per
    stage (``l2``), bilinear to the first stage's grid, then ``colour`` × the cells' L*a*b* colour.
    ``mean``/``std``: the network's input normalisation (EfficientNet-Lite: 0.5 / 0.5)."""
    x = cv2.resize(rgb, (SIZE, SIZE), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    t = (torch.from_numpy(x).permute(2, 0, 1)[None] - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        feats = backbone(t)
    out = []
    size = feats[layers[0] - 1].shape[-2:]
    for li in layers:
        f = feats[li - 1][0].double().numpy()
        c, h, w = f.shape
        agg = np.zeros_like(f)
        r = p // 2
        for i in range(h):
            for j in range(w):
                agg[:, i, j] = f[:, max(0, i - r):i + r + 1, max(0, j - r):j + r + 1].reshape(c, -1).mean(1)
                if l2:
                    agg[:, i, j] /= np.linalg.norm(agg[:, i, j])
        a = torch.from_numpy(agg)[None]
        if a.shape[-2:] != size:
            a = F.interpolate(a, size=tuple(size), mode="bilinear", align_corners=False)
        out.append(a[0].numpy())
    if colour > 0:
        out.append(colour * naive_colour(x, int(size[0]), int(size[1]), p))
    return np.concatenate(out, 0).transpose(1, 2, 0)


def naive_nn(query: np.ndarray, bank: np.ndarray) -> np.ndarray:
    return np.sqrt(((query[:, None, :] - bank[None, :, :]) ** 2).sum(-1)).min(1)


@pytest.mark.parametrize(("feature_norm", "colour"), [("layer_l2", 2.0), ("none", 0.0)])
def test_raw_map_and_calibration_match_an_independent_derivation(tmp_path: Path, hub: ModelHub,
                                                                 feature_norm: str, colour: float) -> None:
    refs = [texture("brick", 0, 0), texture("brick", 200, 180)]
    query = texture("brick", 300, 40)
    prof = make_profile(tmp_path, refs, feature_norm=feature_norm, memory="global", search="exact",
                        colour_weight=colour)
    det = PatchCoreDetector()
    det.prepare(prof, hub)
    net = det.backbone.model
    p = prof.patchcore
    l2 = p.feature_norm == "layer_l2"
    grids = [naive_grid(net, im, p.layers, p.patch_neighbourhood, l2, colour) for im in refs]
    h, w, d = grids[0].shape
    bank = np.concatenate([g.reshape(-1, d) for g in grids])
    assert det.bank.shape == bank.shape  # no coreset at this size
    # OpenCV's float L*a*b* and scikit-image's differ by up to ~0.2 L* units (0.002 after scaling)
    tol = 4e-3 if colour else 1e-4
    np.testing.assert_allclose(np.sort(det.bank.numpy(), 0), np.sort(bank, 0), rtol=tol, atol=tol)

    want = naive_nn(naive_grid(net, query, p.layers, p.patch_neighbourhood, l2, colour).reshape(-1, d),
                    bank).reshape(h, w)
    got = det.analyse(query).raw_map
    np.testing.assert_allclose(got, resize_map(want.astype(np.float32), (SIZE, SIZE)), rtol=max(tol, 1e-3), atol=max(tol, 1e-3))

    # leave-one-out: each shot against the other's patches; eq. 7 on its most anomalous patch
    loo = []
    for i in range(2):
        other = grids[1 - i].reshape(-1, d)
        q = grids[i].reshape(-1, d)
        dist = np.sqrt(((q[:, None] - other[None]) ** 2).sum(-1))
        s = dist.min(1)
        top = int(np.argmax(s))
        star = int(np.argmin(dist[top]))
        support = np.argsort(np.sqrt(((other - other[star]) ** 2).sum(-1)))[: p.reweight_neighbours + 1]
        ds = np.sqrt(((other[support] - q[top]) ** 2).sum(-1))
        weight = 1 - math.exp(ds[0] - ds.max()) / np.exp(ds - ds.max()).sum()
        smooth = gaussian_smooth(resize_map(s.reshape(h, w).astype(np.float32), (SIZE, SIZE)), p.smoothing_sigma)
        loo.append(float(smooth.max()) * weight)
    assert p.calibration_statistic == "median"  # the default: of two shots, their mean
    assert det.threshold == pytest.approx(p.calibration_margin * (loo[0] + loo[1]) / 2, rel=5e-3)
    worst = prof.model_copy(deep=True)
    worst.patchcore.calibration_statistic = "worst"
    det.retune(worst)
    assert det.threshold == pytest.approx(p.calibration_margin * max(loo), rel=5e-3)


def test_wide_resnet50_backbone_follows_patchcores_reference_layers(tmp_path: Path) -> None:
    """PatchCore's own backbone, WideResNet50-2 (a site installs its weights into the model store), at the
    paper's stages 2+3 (strides 8 and 16) with raw features: the bank and the map equal the independent
    derivation on a tiny random-initialised instance of the architecture (one bottleneck per stage),
    fed with ImageNet's mean and std."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    net = timm.create_model("wide_resnet50_2", pretrained=False, features_only=True, out_indices=(1, 2, 3),
                            layers=[1, 1, 1, 1]).eval()
    hub = ModelHub(device="cpu", precision="fp32")
    hub.provide("backbone", net, "wide_resnet50_2")
    refs = [texture("brick", 0, 0), texture("brick", 200, 180)]
    query = texture("brick", 300, 40)
    prof = make_profile(tmp_path, refs, backbone="wide_resnet50_2", layers=[2, 3], feature_norm="none",
                        colour_weight=0.0, memory="global", search="exact")
    assert PatchCoreDetector.required_models(prof) == [("backbone", "wide_resnet50_2")]
    det = PatchCoreDetector()
    det.prepare(prof, hub)
    imagenet = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
    grids = [naive_grid(net, im, [2, 3], 3, False, **imagenet) for im in refs]
    h, w, d = grids[0].shape
    assert (h, w, d) == (SIZE // 8, SIZE // 8, 512 + 1024)
    bank = np.concatenate([g.reshape(-1, d) for g in grids])
    np.testing.assert_allclose(np.sort(det.bank.numpy(), 0), np.sort(bank, 0), rtol=1e-4, atol=1e-4)
    want = naive_nn(naive_grid(net, query, [2, 3], 3, False, **imagenet).reshape(-1, d), bank).reshape(h, w)
    np.testing.assert_allclose(det.analyse(query).raw_map, resize_map(want.astype(np.float32), (SIZE, SIZE)),
                               rtol=1e-3, atol=1e-3)


def test_planted_stain_lights_up_and_fails_while_good_texture_passes(tmp_path: Path, hub: ModelHub) -> None:
    refs = [texture("gravel", 0, 0), texture("gravel", 0, 250), texture("gravel", 250, 0)]
    prof = make_profile(tmp_path, refs)
    det = PatchCoreDetector()
    det.prepare(prof, hub)
    good = texture("gravel", 300, 300)
    bad, mask = plant(texture("gravel", 330, 200), 80, 40)
    d_good, d_bad = det.detect(good), det.detect(bad)
    assert d_good.image_score < 0.5 < d_bad.image_score
    peak = np.unravel_index(np.argmax(d_bad.anomaly_map), mask.shape)
    assert mask[peak], f"map peak {peak} outside the planted stain"
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(mask.ravel(), d_bad.anomaly_map.ravel()) > 0.95  # the map separates the stain
    assert d_bad.regions and d_bad.regions[0].mask[peak]
    # the map is on the verdict's scale: its maximum is the image score (eq. 7 factor included), so a
    # PASSing part shows no region at the PASS/FAIL cut
    a = det.analyse(good)
    smooth = gaussian_smooth(a.raw_map, prof.patchcore.smoothing_sigma)
    assert a.weight < 1.0
    assert d_good.image_score == pytest.approx(float(smooth.max()) * a.weight / (2 * det.threshold), rel=1e-5)
    assert float(d_good.anomaly_map.max()) == pytest.approx(d_good.image_score, rel=2e-2)
    assert not [r for r in d_good.regions if r.score >= 0.5]


def test_zero_shot_mode_finds_the_odd_patch_without_references(tmp_path: Path, hub: ModelHub) -> None:
    prof = make_profile(tmp_path, [])
    det = PatchCoreDetector()
    det.prepare(prof, hub)
    assert det.zero_shot
    bad, mask = plant(texture("gravel", 100, 100), 40, 90)
    d = det.detect(bad)
    peak = np.unravel_index(np.argmax(d.anomaly_map), mask.shape)
    assert mask[peak]
    good = det.detect(texture("gravel", 100, 100))
    assert d.image_score > good.image_score
    assert d.extras["zero_shot"] is True


def test_large_image_is_tiled_at_native_resolution(tmp_path: Path, hub: ModelHub) -> None:
    wall = np.repeat(skimage_data.brick()[..., None], 3, axis=2)
    big = np.ascontiguousarray(np.concatenate([np.concatenate([wall, wall], 1)] * 2, 0))  # 1024²
    refs = [big[:600, :700].copy(), big[300:, 200:].copy()]
    prof = make_profile(tmp_path, refs, tiling="on", tile_size=256, tile_overlap=0.25, input_size=128, tile_batch=3)
    det = PatchCoreDetector()
    det.prepare(prof, hub)
    test, mask = plant(big, 700, 400, r=10)  # 20 px stain: ~2 % of a tile side at native scale, lost at 128² whole
    d = det.detect(test)
    assert d.anomaly_map.shape == test.shape[:2]
    peak = np.unravel_index(np.argmax(d.anomaly_map), mask.shape)
    assert np.hypot(peak[0] - 400, peak[1] - 700) < 20
    assert d.image_score > det.detect(big).image_score


def test_cache_and_retune(tmp_path: Path, hub: ModelHub) -> None:
    refs = [texture("brick", 0, 0), texture("brick", 200, 180)]
    prof = make_profile(tmp_path, refs)
    a = PatchCoreDetector()
    a.prepare(prof, hub)
    b = PatchCoreDetector()
    b.prepare(prof, hub)
    assert not a.cache_hit and b.cache_hit
    assert b.threshold == pytest.approx(a.threshold) and b.state_sha256 == a.state_sha256
    looser = prof.model_copy(deep=True)
    looser.patchcore.calibration_margin = prof.patchcore.calibration_margin * 2
    b.retune(looser)
    assert b.threshold == pytest.approx(2 * a.threshold)
    other = prof.model_copy(deep=True)
    other.patchcore.input_size = 160
    with pytest.raises(ValueError, match="prepare"):
        b.retune(other)


def test_inspector_eval_with_patchcore_reports_metrics_of_its_own_scores(tmp_path: Path) -> None:
    from sklearn.metrics import roc_auc_score

    from inspector.cli import main

    root = tmp_path / "ds" / "gravel"
    for i, (y, x) in enumerate([(0, 0), (0, 250), (250, 0), (0, 380)]):
        write_png(root / "train" / "good" / f"{i:03d}.png", texture("gravel", y, x))
    for i, (y, x) in enumerate([(300, 300), (380, 120)]):
        write_png(root / "test" / "good" / f"{i:03d}.png", texture("gravel", y, x))
    for i, (y, x) in enumerate([(330, 200), (200, 380)]):
        img, mask = plant(texture("gravel", y, x), 40 + 30 * i, 60)
        write_png(root / "test" / "stain" / f"{i:03d}.png", img)
        write_png(root / "ground_truth" / "stain" / f"{i:03d}_mask.png", mask.astype(np.uint8) * 255)
    out = tmp_path / "out"
    rc = main(["eval", "--dataset", str(root), "--pipeline", "patchcore", "--shots", "3", "--out", str(out),
               "--device", "cpu"])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    rows = list(csv.DictReader((out / "scores.csv").open()))
    labels = [0 if r["defect"] == "good" else 1 for r in rows]
    scores = [float(r["score"]) for r in rows]
    assert metrics["image_auroc"] == pytest.approx(roc_auc_score(labels, scores))
    assert metrics["image_auroc"] == 1.0  # a red stain on grey gravel is not subtle


def test_inspector_eval_shots_0_runs_the_zero_shot_mode(tmp_path: Path) -> None:
    from inspector.cli import main

    root = tmp_path / "ds" / "brick"
    write_png(root / "train" / "good" / "000.png", texture("brick", 0, 0))
    write_png(root / "test" / "good" / "000.png", texture("brick", 200, 200))
    img, mask = plant(texture("brick", 250, 100), 60, 60)
    write_png(root / "test" / "stain" / "000.png", img)
    write_png(root / "ground_truth" / "stain" / "000_mask.png", mask.astype(np.uint8) * 255)
    out = tmp_path / "out"
    assert main(["eval", "--dataset", str(root), "--pipeline", "patchcore", "--shots", "0", "--out", str(out),
                 "--device", "cpu"]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["shots"] == []
    rows = {r["defect"]: float(r["score"]) for r in csv.DictReader((out / "scores.csv").open())}
    assert len(rows) == 2 and rows["stain"] > rows["good"]  # every test image scored, against itself only


def test_memory_auto_is_positional_only_where_the_shots_agree_in_place(tmp_path: Path, hub: ModelHub) -> None:
    """An object photographed at the same place (with sensor noise) keeps the positional memory; the
    same object shifted from shot to shot gets PatchCore's memory anywhere (``local_agreement``)."""
    from inspector.detect.patchcore.detector import describe
    from inspector.detect.patchcore.memory import place_agreement

    camera = skimage_data.camera()
    rng = np.random.default_rng(0)

    def shot(y: int, x: int) -> np.ndarray:
        crop = camera[y:y + SIZE, x:x + SIZE].astype(np.float32) + rng.normal(0, 2, (SIZE, SIZE))
        return np.repeat(np.clip(crop, 0, 255).astype(np.uint8)[..., None], 3, axis=2)

    runs = {"fixed": [shot(60, 200) for _ in range(3)], "moving": [shot(60, 200), shot(100, 240), shot(30, 160)]}
    found = {}
    for name, refs in runs.items():
        det = PatchCoreDetector()
        det.prepare(make_profile(tmp_path / name, refs, augment="auto", memory="auto"), hub)
        info = describe(det)
        assert not info["texture"], f"{name}: the camera photo must count as an object"
        # the recorded agreement is place_agreement of the references' own grids
        grids = torch.stack([det._grid([r])[0] for r in refs])
        expected = place_agreement(grids, det.params.radius(False))
        assert info["place_agreement"] == pytest.approx(expected, rel=1e-4)
        found[name] = (info["memory"], info["place_agreement"])
    limit = det.params.local_agreement
    assert found["fixed"][0] == "local" and found["fixed"][1] <= limit, found
    assert found["moving"][0] == "global" and found["moving"][1] > limit, found
    # a single shot cannot show that it agrees with another: PatchCore's memory
    det = PatchCoreDetector()
    det.prepare(make_profile(tmp_path / "single", runs["fixed"][:1], memory="auto"), hub)
    assert describe(det)["memory"] == "global" and math.isnan(describe(det)["place_agreement"])
    # an explicit choice is never overridden
    det = PatchCoreDetector()
    det.prepare(make_profile(tmp_path / "forced", runs["moving"], memory="local"), hub)
    assert describe(det)["memory"] == "local" and math.isnan(describe(det)["place_agreement"])
