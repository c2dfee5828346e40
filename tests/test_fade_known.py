"""FADE known answers: every stage against a naive float64 re-derivation that shares no code with it.

The reference here preprocesses with PIL + the OpenAI mean/std written out, encodes the prompts
with the raw open_clip text tower and the template written out, and does the softmax, the
neighbour search, the bilinear resizes and the fusion table with explicit numpy loops. GEM
itself is checked against its own naive reference in ``test_gem.py``; here the GEM encoder only
supplies the token sets, and the test says which set feeds which map.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

import inspector.commands.eval as eval_cmd
from inspector.cli import main
from inspector.detect.fade import FadeDetector, fuse_guidance, fuse_scales, knn_distance, text_anomaly_probability
from inspector.detect.prompts import classification_prompts, segmentation_prompts
from inspector.imaging import read_image, write_png
from inspector.models.hub import ModelHub
from inspector.params.fade import FadeParams
from inspector.profile import ProductProfile, load_profile, save_profile
from tests.support.cli_env import cli_settings_env  # noqa: F401 - autouse fixture
from tests.support.tiny_datasets import make_mvtec
from tests.support.tiny_models import tiny_clip

MEAN = np.array([0.48145466, 0.4578275, 0.40821073])
STD = np.array([0.26862954, 0.26130258, 0.27577711])
SMALL_PROMPTS = {"normal_states": ["flawless {c}", "perfect {c}"], "anomalous_states": ["damaged {c}"]}


# ------------------------------------------------------------------------------ naive reference
def naive_softmax_anomalous(f: np.ndarray, normal: np.ndarray, anomalous: np.ndarray, temperature: float) -> np.ndarray:
    a = f @ anomalous / temperature
    n = f @ normal / temperature
    return 1.0 / (1.0 + np.exp(n - a))  # exp(a) / (exp(n) + exp(a))


def naive_knn(queries: np.ndarray, bank: np.ndarray, rank: int) -> np.ndarray:
    out = np.zeros(len(queries))
    for i, q in enumerate(queries):
        sims = sorted((float(q @ b) for b in bank), reverse=True)
        out[i] = 0.5 * (1.0 - sims[rank - 1])
    return np.clip(out, 0.0, 1.0)


def naive_bilinear(m: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Half-pixel-centred bilinear resize (the OpenCV convention), written out."""
    h, w = m.shape
    oh, ow = out_hw
    out = np.zeros(out_hw)
    for i in range(oh):
        sy = min(max((i + 0.5) * h / oh - 0.5, 0.0), h - 1)
        y0 = int(np.floor(sy))
        y1, fy = min(y0 + 1, h - 1), sy - y0
        for j in range(ow):
            sx = min(max((j + 0.5) * w / ow - 0.5, 0.0), w - 1)
            x0 = int(np.floor(sx))
            x1, fx = min(x0 + 1, w - 1), sx - x0
            out[i, j] = ((1 - fy) * ((1 - fx) * m[y0, x0] + fx * m[y0, x1])
                         + fy * ((1 - fx) * m[y1, x0] + fx * m[y1, x1]))
    return out


def naive_pixels(image: np.ndarray, size: int) -> torch.Tensor:
    """The reference transform: PIL bicubic squash to size², /255, OpenAI mean/std, RGB order."""
    resized = np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BICUBIC), dtype=np.float64)
    x = (resized / 255.0 - MEAN) / STD
    return torch.as_tensor(x.transpose(2, 0, 1)[None], dtype=torch.float32)


def naive_text_mean(model: torch.nn.Module, prompts: tuple[str, ...]) -> np.ndarray:
    import open_clip

    tok = open_clip.tokenizer.SimpleTokenizer(context_length=77)
    texts = [f"a photo of a {p.strip().rstrip('.').strip()}." for p in prompts]
    with torch.no_grad():
        e = model.encode_text(tok(texts)).double().numpy()
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    return e.mean(axis=0)  # not re-normalised


def naive_fade(model: torch.nn.Module, profile: ProductProfile, image: np.ndarray,
               references: list[np.ndarray]) -> dict:
    """Every FADE quantity for one image, re-derived."""
    from inspector.models.gem import GemEncoder

    p = profile.fade
    seg, cls = segmentation_prompts(profile), classification_prompts(profile)
    seg_n, seg_a = naive_text_mean(model, seg.normal), naive_text_mean(model, seg.anomalous)
    cls_n, cls_a = naive_text_mean(model, cls.normal), naive_text_mean(model, cls.anomalous)
    enc = GemEncoder(model.visual)
    out: dict = {"language": {}, "vision": {}}
    with torch.no_grad():
        for s in profile.image_scales:
            tok = enc(naive_pixels(image, s))
            g = s // 16
            gem = tok.gem[0, 1:].double().numpy()
            clip = tok.clip[0, 1:].double().numpy()
            out["language"][s] = naive_softmax_anomalous(gem, seg_n, seg_a, p.temperature).reshape(g, g)
            if references:
                bank = np.concatenate([enc(naive_pixels(r, s)).clip[0, 1:].double().numpy() for r in references])
                out["vision"][s] = naive_knn(clip, bank, 1).reshape(g, g)
            else:
                out["vision"][s] = naive_knn(gem, gem, 2).reshape(g, g)
            if s == p.classification_scale:
                cls_token = tok.clip[0, 0].double().numpy()
    out["p_ac"] = float(naive_softmax_anomalous(cls_token, cls_n, cls_a, p.temperature))
    big = max(profile.image_scales) // 16
    lang = np.mean([naive_bilinear(m, (big, big)) for m in out["language"].values()], axis=0)
    vis = np.mean([naive_bilinear(m, (big, big)) for m in out["vision"].values()], axis=0)
    if references:
        w, gain = p.few_shot_language_weight, p.few_shot_vision_gain
        score = (out["p_ac"] + np.max(gain * vis)) / 2
    else:
        w, gain = p.zero_shot_language_weight, p.zero_shot_vision_gain
        score = out["p_ac"]
    out["grid_map"] = np.clip(w * lang + (1 - w) * gain * vis, 0, 1)
    out["map"] = np.clip(naive_bilinear(out["grid_map"], image.shape[:2]), 0, 1)
    out["score"] = float(np.clip(score, 0, 1))
    return out


# ------------------------------------------------------------------------------ pure math
def test_text_probability_is_the_two_way_softmax():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(7, 5))
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    n, a = rng.normal(size=5) * 0.1, rng.normal(size=5) * 0.1
    got = text_anomaly_probability(torch.tensor(f), torch.tensor(n), torch.tensor(a), 0.05).numpy()
    np.testing.assert_allclose(got, naive_softmax_anomalous(f, n, a, 0.05), atol=1e-6)
    # by hand: <f,n> = 0.2, <f,a> = 0.3, T = 0.1 -> 1 / (1 + e^-1)
    one = text_anomaly_probability(torch.tensor([1.0, 0.0]), torch.tensor([0.2, 0.0]), torch.tensor([0.3, 0.0]), 0.1)
    assert float(one) == pytest.approx(1 / (1 + np.exp(-1.0)), abs=1e-6)


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_knn_distance_rank(rank):
    rng = np.random.default_rng(rank)
    q = rng.normal(size=(9, 6))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    bank = np.concatenate([q[:4], rng.normal(size=(5, 6))])
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    got = knn_distance(torch.tensor(q), torch.tensor(bank), rank=rank, chunk=4).numpy()
    np.testing.assert_allclose(got, naive_knn(q, bank, rank), atol=1e-6)
    with pytest.raises(ValueError, match="at least"):
        knn_distance(torch.tensor(q), torch.tensor(bank[:1]), rank=2)


def test_fuse_scales_is_the_mean_of_bilinear_upsampled_maps():
    a = np.array([[0.0, 1.0], [2.0, 3.0]], np.float32)
    b = np.arange(16, dtype=np.float32).reshape(4, 4) / 10
    np.testing.assert_allclose(fuse_scales([a, b]), (naive_bilinear(a, (4, 4)) + b) / 2, atol=1e-5)


def test_fusion_table_with_unequal_weights():
    """Weights that are not 0.5 tell language from vision; gains that are not 1 tell V from gV."""
    params = FadeParams(zero_shot_language_weight=0.3, zero_shot_vision_gain=2.0,
                        few_shot_language_weight=0.2, few_shot_vision_gain=3.0)
    L = np.array([[0.1, 0.4], [0.2, 0.3]], np.float32)
    V = np.array([[0.05, 0.0], [0.1, 0.2]], np.float32)
    m, s = fuse_guidance(L, V, 0.6, few_shot=False, params=params)
    np.testing.assert_allclose(m, 0.3 * L + 0.7 * 2.0 * V, atol=1e-6)
    assert s == pytest.approx(0.6)
    m, s = fuse_guidance(L, V, 0.6, few_shot=True, params=params)
    np.testing.assert_allclose(m, 0.2 * L + 0.8 * 3.0 * V, atol=1e-6)
    assert s == pytest.approx((0.6 + 3.0 * 0.2) / 2)
    m, s = fuse_guidance(None, V, None, few_shot=True, params=params)
    np.testing.assert_allclose(m, np.clip(3.0 * V, 0, 1), atol=1e-6)
    assert s == pytest.approx(0.6)
    m, s = fuse_guidance(np.full((2, 2), 3.4, np.float32), V, 1.3, few_shot=False, params=params)
    assert (m == 1.0).all() and s == 1.0  # clipped above
    m, s = fuse_guidance(np.full((2, 2), -2.0, np.float32), V, -0.5, few_shot=False, params=params)
    assert (m == 0.0).all() and s == 0.0  # and below
    with pytest.raises(ValueError, match="FADE needs language or vision guidance; both are off"):
        fuse_guidance(None, None, 0.5, few_shot=False, params=params)


def test_preprocess_is_the_reference_transform():
    """ClipModel.preprocess = torchvision's Resize((s, s), BICUBIC) on a PIL image + OpenAI norm.

    Measured on a fine texture, OpenCV's INTER_CUBIC (the old resize) was up to 138 grey levels
    off at 240 px; the antialiased resize is identical. RGB order is checked by a pure-red image.
    """
    import torchvision.transforms as T

    from inspector.models.clip import ClipModel

    clip = ClipModel(tiny_clip(seed=0), torch.device("cpu"), torch.float32, "tiny")
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:300, 0:410]
    img = ((((xx // 3 + yy // 3) % 2) * 200)[..., None] + rng.integers(0, 55, (300, 410, 3))).astype(np.uint8)
    ref = T.Compose([T.Resize((240, 240), interpolation=T.InterpolationMode.BICUBIC), T.ToTensor(),
                     T.Normalize(MEAN.tolist(), STD.tolist())])(Image.fromarray(img))
    torch.testing.assert_close(clip.preprocess(img, 240)[0], ref, atol=1e-5, rtol=0)
    red = np.zeros((32, 32, 3), np.uint8)
    red[..., 0] = 255
    x = clip.preprocess(red, 32)[0]
    np.testing.assert_allclose(x[:, 0, 0].numpy(), (np.array([1.0, 0, 0]) - MEAN) / STD, atol=1e-5)


# ------------------------------------------------------------------------------ the engine
@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return tiny_clip(seed=0)


def _image(seed: int, defect: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:80, 0:112]
    img = np.repeat((120 + 40 * np.sin(xx / 5.0) + rng.normal(0, 6, (80, 112)))[..., None], 3, axis=2)
    if defect:
        img[24:48, 56:80] = [230, 40, 30]
    return np.clip(img, 0, 255).astype(np.uint8)


def _profile(folder: Path, refs: list[np.ndarray]) -> ProductProfile:
    shots = []
    for i, r in enumerate(refs):
        write_png(folder / "references" / f"r{i}.png", r)
        shots.append(f"references/r{i}.png")
    prof = ProductProfile(name="widget", pipeline="fade", object="widget", image_scales=[240, 272],
                          prompts=SMALL_PROMPTS, fade={"industrial_prompts": False, "temperature": 0.02},
                          reference_shots=shots)
    save_profile(prof, folder)
    return load_profile(folder)


@pytest.mark.parametrize("shots", [0, 2])
def test_every_stage_matches_the_naive_rederivation(tmp_path, model, shots):
    refs = [_image(10 + i) for i in range(shots)]
    profile = _profile(tmp_path / "widget", refs)
    hub = ModelHub(device="cpu", precision="fp32")
    hub.provide("clip", model)
    det = FadeDetector()
    det.prepare(profile, hub)
    image = _image(3, defect=True)
    analysis = det.analyse(image)
    want = naive_fade(model, profile, image, [read_image(p) for p in profile.reference_paths()])
    assert analysis.few_shot is bool(shots)
    for s in profile.image_scales:
        np.testing.assert_allclose(analysis.language[s], want["language"][s], atol=2e-5)
        np.testing.assert_allclose(analysis.vision[s], want["vision"][s], atol=2e-5)
    assert analysis.p_ac == pytest.approx(want["p_ac"], abs=2e-5)
    det_out = det.finish(analysis, image)
    np.testing.assert_allclose(det_out.extras["grid_map"], want["grid_map"], atol=5e-5)
    np.testing.assert_allclose(det_out.anomaly_map, want["map"], atol=5e-5)
    assert det_out.image_score == pytest.approx(want["score"], abs=5e-5)


# ------------------------------------------------------------------------------ through `inspector eval`
@pytest.mark.slow
def test_fade_through_inspector_eval_matches_the_naive_maps(tmp_path, model, monkeypatch):
    """`inspector eval --profile P --shots 2` on a tiny MVTec set: the saved maps are the naive FADE
    maps, and the pixel / image AUROC in metrics.json are sklearn's on the naive maps and scores."""
    cat = make_mvtec(tmp_path / "data", n_train=2, n_good=2, n_defect=1, defects=("bright",))
    prof = ProductProfile(name="widget", pipeline="fade", object="widget", image_scales=[240],
                          prompts=SMALL_PROMPTS, fade={"industrial_prompts": False})
    save_profile(prof, tmp_path / "widget")
    hub = ModelHub(device="cpu", precision="fp32")
    hub.provide("clip", model)
    monkeypatch.setattr(eval_cmd, "make_hub", lambda args: hub)
    out = tmp_path / "run"
    # eval size 64 = the images' size: maps and masks are compared without any resize
    rc = main(["eval", "--dataset", str(cat), "--profile", str(tmp_path / "widget"), "--shots", "2",
               "--eval-size", "64", "--save-maps", "--out", str(out)])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    refs = [read_image(p) for p in json.loads((out / "run.json").read_text())["shots"]]
    rows = {Path(r["path"]).parent.name + "/" + Path(r["path"]).name: r
            for r in csv.DictReader((out / "scores.csv").open())}
    labels, scores, pix_true, pix_score = [], [], [], []
    for path in sorted((cat / "test").rglob("*.png")):
        image = read_image(path)
        want = naive_fade(model, prof, image, refs)
        saved = np.load(out / "maps" / path.parent.name / f"{path.stem}.npy")
        np.testing.assert_allclose(saved, want["map"], atol=1e-4)
        defect = path.parent.name != "good"
        mask = np.zeros((64, 64), bool)
        if defect:
            mask = read_image(cat / "ground_truth" / path.parent.name / f"{path.stem}_mask.png")[..., 0] > 127
        row = rows[f"{path.parent.name}/{path.name}"]
        assert float(row["score"]) == pytest.approx(want["score"], abs=1e-4)
        labels.append(defect)
        scores.append(want["score"])
        pix_true.append(mask.ravel())
        pix_score.append(want["map"].ravel())
    assert metrics["image_auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-6)
    assert metrics["pixel_auroc"] == pytest.approx(
        roc_auc_score(np.concatenate(pix_true), np.concatenate(pix_score)), abs=1e-4)
    # the planted bright square is found: k-shot vision lights it up against the good shots
    assert metrics["pixel_auroc"] > 0.9
