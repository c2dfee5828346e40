"""CLIP→SAM cascade known answers: PPG, CPS helpers, SAM evidence and fusion, APRIL-GAN map.

Expected values are worked out by hand on small arrays or by naive float64 loops here; the
APRIL-GAN map is re-derived from open_clip's own forward (hooks on the blocks), the adapter
weights applied by hand, an align_corners=True bilinear written out and an explicit softmax.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from inspector.detect.aprilgan import (
    ANOMALOUS_STATES,
    NORMAL_STATES,
    TEMPLATES,
    AprilGanMap,
    ensemble_text,
    layer_anomaly_maps,
)
from inspector.detect.clipsam.cascade import choose_masks
from inspector.detect.clipsam.fusion import fuse, merge_overlapping, sam_evidence
from inspector.detect.clipsam.points import pad_prompts
from inspector.detect.ppg import (
    PointPrompts,
    cosine_to,
    even_sample,
    extreme_components,
    extreme_region,
    mask_box,
    negative_points,
    negative_ring,
    positive_points,
    spaced_selection,
)
from inspector.models.hub import ModelHub
from inspector.models.sam import SamDecode
from inspector.profile import ProductProfile
from tests.support.tiny_models import tiny_clip

MEAN = np.array([0.48145466, 0.4578275, 0.40821073])
STD = np.array([0.26862954, 0.26130258, 0.27577711])


# ------------------------------------------------------------------------------ PPG
def test_extreme_region_and_components_by_hand():
    amap = np.zeros((6, 8), np.float32)
    amap[1, 1], amap[1, 2] = 1.0, 0.85  # component A: peak 1.0, 2 px
    amap[4, 5:8] = [0.9, 0.95, 0.82]  # component B: peak 0.95, 3 px
    amap[5, 0] = 0.81  # component C: 1 px
    ext = extreme_region(amap, 0.8)
    assert ext.sum() == 6 and not ext[0, 0]
    comps = extreme_components(ext, amap, 2, 5)
    assert [int(c.sum()) for c in comps] == [2, 3]  # C too small; A (peak 1.0) first
    assert comps[0][1, 1] and comps[1][4, 6]
    assert extreme_components(ext, amap, 1, 1)[0][1, 1]  # max_count keeps the highest peak
    assert not extreme_region(np.zeros((3, 3), np.float32), 0.8).any()
    assert not extreme_region(-np.ones((3, 3), np.float32), 0.8).any()


def _naive_spaced(coords: np.ndarray, scores: np.ndarray, k: int, dist: float, lowest: bool) -> list[int]:
    order = sorted(range(len(scores)), key=lambda i: (scores[i] if lowest else -scores[i], i))
    chosen: list[int] = []
    for i in order:
        if len(chosen) == k:
            break
        if all(math.dist(coords[i], coords[j]) >= dist for j in chosen):
            chosen.append(i)
    return chosen


@pytest.mark.parametrize("lowest", [False, True])
def test_spaced_selection_against_a_greedy_loop(lowest):
    rng = np.random.default_rng(int(lowest))
    coords = rng.integers(0, 30, (40, 2))
    scores = rng.random(40)
    got = spaced_selection(coords, scores, 4, 6.0, lowest=lowest).tolist()
    assert got == _naive_spaced(coords, scores, 4, 6.0, lowest)
    assert spaced_selection(coords, scores, 0, 6.0, lowest=lowest).tolist() == []
    assert spaced_selection(coords[:1], scores[:1], 3, 6.0, lowest=lowest).tolist() == [0]
    assert spaced_selection(coords[:0], scores[:0], 3, 6.0, lowest=lowest).tolist() == []
    # no spacing: neighbouring pixels may both be chosen (only the pixel itself is removed)
    line = np.array([[0, 0], [0, 1], [0, 2]])
    assert sorted(spaced_selection(line, np.array([3.0, 2.0, 1.0]), 3, 0.0, lowest=lowest).tolist()) == [0, 1, 2]


def test_positive_points_are_x_y_of_the_spaced_maxima():
    amap = np.zeros((10, 12), np.float32)
    amap[2, 3], amap[2, 4], amap[7, 9] = 1.0, 0.99, 0.9
    comp = amap > 0.5
    pts = positive_points(comp, amap, 3, 2.0)
    assert pts.tolist() == [[3.0, 2.0], [9.0, 7.0]]  # (2, 4) is closer than 2 px to (2, 3)


def test_negative_ring_and_points_by_hand():
    comp = np.zeros((7, 7), bool)
    comp[3, 3] = True
    ext = comp.copy()
    ext[3, 4] = True  # another extreme pixel never becomes a negative
    ring = negative_ring(comp, ext, 3)  # 3×3 ellipse = a cross
    assert sorted(zip(*np.nonzero(ring))) == [(2, 3), (3, 2), (4, 3)]
    feats = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    np.testing.assert_allclose(cosine_to(feats, np.array([2.0, 0.0])), [1.0, 0.0, 1 / math.sqrt(2)])
    small = np.array([[0.3, 0.0], [0.0, 0.2]])  # norms below 1 are not floored at 1
    np.testing.assert_allclose(cosine_to(small, np.array([0.5, 0.0])), [1.0, 0.0])
    ring_yx = np.array([[2, 3], [3, 2], [4, 3]])
    neg = negative_points(ring_yx, feats, np.array([1.0, 0.0]), 2, 0.0)
    assert neg.tolist() == [[2.0, 3.0], [3.0, 4.0]]  # (y=3, x=2) least similar, then (y=4, x=3)
    assert negative_points(ring_yx, feats, np.array([1.0, 0.0]), 1, 0.0).tolist() == [[2.0, 3.0]]
    assert negative_points(ring_yx[:1], feats[:1], np.array([1.0, 0.0]), 1, 0.0).tolist() == [[3.0, 2.0]]
    assert negative_points(ring_yx, feats, np.array([1.0, 0.0]), 0, 0.0).shape == (0, 2)
    assert even_sample(np.arange(10)[:, None], 3)[:, 0].tolist() == [0, 4, 9]  # linspace 0, 4.5, 9 rounded
    assert mask_box(comp) == (3, 3, 3, 3)


# ------------------------------------------------------------------------------ CPS helpers
def test_pad_prompts_and_choose_masks_by_hand():
    a = PointPrompts(np.array([[1.0, 2.0]], np.float32), np.array([[3.0, 4.0]], np.float32), (0, 0, 1, 1), 0.9)
    b = PointPrompts(np.array([[5.0, 6.0]], np.float32), np.zeros((0, 2), np.float32), (0, 0, 1, 1), 0.8)
    pts, labels = pad_prompts([a, b])
    assert pts.tolist() == [[[1, 2], [3, 4]], [[5, 6], [0, 0]]] and labels.tolist() == [[1, 0], [1, -1]]
    masks = np.zeros((1, 3, 4, 4), bool)
    masks[0, 0, :2, :2] = True  # mean CLIP 0.9
    masks[0, 1, :, :] = True  # mean CLIP (4·0.9 + 12·0.1) / 16 = 0.3
    amap = np.full((4, 4), 0.1, np.float32)
    amap[:2, :2] = 0.9
    dec = SamDecode(masks, np.array([[0.2, 0.9, 0.5]]), torch.zeros(1, 3, 256, 256))
    assert choose_masks(dec, "iou", amap).tolist() == [1]
    assert choose_masks(dec, "clip", amap).tolist() == [0]  # the empty third mask never wins


def test_sam_evidence_and_fusion_by_hand():
    amap = np.zeros((4, 6), np.float32)
    amap[:, :3] = 0.8
    logits = torch.full((2, 4, 6), -20.0)
    logits[0, :2, :2] = 2.0  # mask 0 inside the high part: c = 0.8
    logits[1, 2:, 2:5] = 0.0  # sigmoid 0.5, not > 0.5: empty mask -> c from its component box
    sets = [PointPrompts(np.zeros((1, 2)), np.zeros((0, 2)), (0, 0, 1, 1), 0.8),
            PointPrompts(np.zeros((1, 2)), np.zeros((0, 2)), (3, 0, 4, 3), 0.8)]  # box cols 3..4: A = 0
    ev, masks, conf = sam_evidence(amap, logits, sets)
    np.testing.assert_allclose(conf, [0.8, 0.0])
    assert masks[0].sum() == 4 and masks[1].sum() == 0
    s = 1 / (1 + math.exp(-2.0))
    assert ev[0, 0] == pytest.approx(0.8 * s, rel=1e-5) and ev[3, 5] == pytest.approx(0.8 / (1 + math.exp(20)))
    fused = fuse(amap, ev, True, 0.25)
    assert fused[0, 0] == pytest.approx(0.25 * 0.8 + 0.75 * 0.8 * s, rel=1e-5)
    np.testing.assert_allclose(fuse(amap, ev, False, 0.25), 0.25 * amap)
    m = np.zeros((3, 4, 4), bool)
    m[0, 0, 0] = m[0, 0, 1] = True
    m[1, 0, 1] = m[1, 1, 1] = True  # shares (0, 1) with mask 0
    m[2, 3, 3] = True
    merged = merge_overlapping(m)
    assert [int(x.sum()) for x in merged] == [3, 1]


# ------------------------------------------------------------------------------ APRIL-GAN
def _naive_upsample_align_corners(m: np.ndarray, size: int) -> np.ndarray:
    h, w = m.shape
    out = np.zeros((size, size))
    for i in range(size):
        sy = i * (h - 1) / (size - 1)
        y0 = min(int(np.floor(sy)), h - 2) if h > 1 else 0
        fy = sy - y0
        for j in range(size):
            sx = j * (w - 1) / (size - 1)
            x0 = min(int(np.floor(sx)), w - 2) if w > 1 else 0
            fx = sx - x0
            out[i, j] = ((1 - fy) * ((1 - fx) * m[y0, x0] + fx * m[y0, x0 + 1])
                         + fy * ((1 - fx) * m[y0 + 1, x0] + fx * m[y0 + 1, x0 + 1]))
    return out


def test_layer_maps_and_ensemble_text_against_loops():
    rng = np.random.default_rng(0)
    text = rng.normal(size=(2, 5))
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    toks = [rng.normal(size=(1, 9, 5)) * 0.05 for _ in range(2)]
    got = layer_anomaly_maps([torch.tensor(t, dtype=torch.float32) for t in toks],
                             torch.tensor(text, dtype=torch.float32), (3, 3), 8).numpy()
    for layer, t in enumerate(toks):
        f = t[0] / np.linalg.norm(t[0], axis=1, keepdims=True)
        logits = 100.0 * f @ text.T  # 9×2
        up = [_naive_upsample_align_corners(logits[:, c].reshape(3, 3), 8) for c in range(2)]
        want = 1.0 / (1.0 + np.exp(up[0] - up[1]))
        np.testing.assert_allclose(got[layer, 0], want, atol=1e-4)
    e = rng.normal(size=(4, 5))
    unit = e / np.linalg.norm(e, axis=1, keepdims=True)
    mean = unit.mean(axis=0)
    np.testing.assert_allclose(ensemble_text(torch.tensor(e)).numpy(), mean / np.linalg.norm(mean), atol=1e-6)


def test_aprilgan_map_is_the_adapted_tokens_against_the_text(tmp_path, monkeypatch):
    """The whole provider re-derived: open_clip's own blocks (hooked), adapters by hand, text by hand."""
    import open_clip
    from PIL import Image

    from inspector.cache import ArrayCache
    from tests.test_adapters import tiny_adapter_state

    clip = tiny_clip(seed=2)
    state = tiny_adapter_state(clip)
    hub = ModelHub(device="cpu", precision="fp32")
    hub.provide("clip", clip)
    hub.provide("adapter", {"trainable_linearlayer": state})
    profile = ProductProfile(name="p", pipeline="clipsam", object="part", clipsam={"aprilgan_image_size": 64})
    provider = AprilGanMap(cache=ArrayCache(tmp_path / "cache"))
    provider.prepare(profile, hub)
    img = (np.random.default_rng(5).random((40, 56, 3)) * 255).astype(np.uint8)
    got = provider(img)

    # text: every template around every state word, normalised, averaged, re-normalised
    tok = open_clip.tokenizer.SimpleTokenizer(context_length=77)

    def text_vec(states):
        prompts = [t.format(s.replace("{object}", "part")) for s in states for t in TEMPLATES]
        with torch.no_grad():
            e = clip.encode_text(tok(prompts)).double()
        e = e / e.norm(dim=-1, keepdim=True)
        m = e.mean(0)
        return m / m.norm()

    text = torch.stack([text_vec(NORMAL_STATES), text_vec(ANOMALOUS_STATES)])
    # image: PIL bicubic to 64², OpenAI norm; tokens after every block from open_clip's forward
    x = np.asarray(Image.fromarray(img).resize((64, 64), Image.Resampling.BICUBIC), np.float64)
    x = torch.tensor(((x / 255 - MEAN) / STD).transpose(2, 0, 1)[None], dtype=torch.float32)
    visual = clip.visual
    from inspector.models.clip import resample_positional_embedding

    captured = []
    hooks = [b.register_forward_hook(lambda m, i, o: captured.append(o)) for b in visual.transformer.resblocks]
    saved = visual.positional_embedding.data.clone()
    visual.positional_embedding.data = resample_positional_embedding(saved, (4, 4))
    try:
        with torch.no_grad():
            pooled = visual(x)
    finally:
        visual.positional_embedding.data = saved
        for h in hooks:
            h.remove()
    maps = []
    for i, tokens in enumerate(captured):  # 4 adapters on the 4 blocks
        w, b = state[f"fc.{i}.weight"].double(), state[f"fc.{i}.bias"].double()
        f = tokens[0, 1:].double() @ w.T + b
        f = f / f.norm(dim=-1, keepdim=True)
        logits = (100.0 * f @ text.T).numpy()
        up = [_naive_upsample_align_corners(logits[:, c].reshape(4, 4), 64) for c in range(2)]
        maps.append(1.0 / (1.0 + np.exp(up[0] - up[1])))
    want = np.mean(maps, axis=0)
    import cv2

    want = cv2.resize(want.astype(np.float32), (56, 40), interpolation=cv2.INTER_AREA)
    np.testing.assert_allclose(got.anomaly_map, np.clip(want, 0, 1), atol=1e-4)
    cls = pooled[0].double() / pooled[0].double().norm()
    logit = 100.0 * cls @ text.T
    assert got.image_score == pytest.approx(float(torch.softmax(logit, 0)[1]), abs=1e-5)


# ------------------------------------------------------------------------------ through `inspector eval`
def _naive_cascade_evidence(sam_module, image: np.ndarray, amap: np.ndarray, prompts: list[dict]) -> np.ndarray:
    """CPS on segment_anything's SamPredictor (eq. 9–12), one prompt set at a time, and E = max σ(ℓ)·c."""
    from segment_anything import SamPredictor

    predictor = SamPredictor(sam_module)
    predictor.set_image(image)
    evidence = np.zeros(amap.shape)
    for p in prompts:
        pts = np.array(p["positives"] + p["negatives"], dtype=np.float32)
        labels = np.array([1] * len(p["positives"]) + [0] * len(p["negatives"]))
        _, _, low1 = predictor.predict(pts, labels, multimask_output=False, return_logits=True)
        full2, _, low2 = predictor.predict(pts, labels, mask_input=low1, multimask_output=False, return_logits=True)
        m2 = full2[0] > 0
        if m2.any():
            ys, xs = np.nonzero(m2)
            box = np.array([xs.min(), ys.min(), xs.max(), ys.max()], np.float32)
        else:
            box = np.array(p["box"], np.float32)
        full3, _, _ = predictor.predict(pts, labels, box=box, mask_input=low2, multimask_output=False,
                                        return_logits=True)
        prob = 1.0 / (1.0 + np.exp(-full3[0].astype(np.float64)))
        inside = amap[prob > 0.5]
        if inside.size == 0:
            x0, y0, x1, y1 = p["box"]
            inside = amap[y0:y1 + 1, x0:x1 + 1]
        evidence = np.maximum(evidence, prob * float(inside.mean()))
    return evidence


@pytest.mark.slow
def test_clipsam_through_inspector_eval_matches_the_library_paths(tmp_path, monkeypatch):
    """CLIP→SAM (FADE language map) through `inspector eval`: the positives are the spaced maxima of
    the naive FADE map, the saved map is ε·A + (1 − ε)·E with E from SamPredictor's own cascade,
    and metrics.json's AUROCs are sklearn's on those maps."""
    import csv
    import json
    from pathlib import Path

    from sklearn.metrics import roc_auc_score

    import inspector.commands.eval as eval_cmd
    from inspector.cli import main
    from inspector.imaging import read_image
    from inspector.profile import save_profile
    from tests.support.tiny_datasets import make_mvtec
    from tests.support.tiny_models import tiny_sam
    from tests.test_fade_known import naive_fade

    monkeypatch.setenv("INSPECTOR_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("INSPECTOR_CONFIG", str(tmp_path / "home" / "settings.yaml"))
    clip, sam_module = tiny_clip(seed=0), tiny_sam(seed=3)
    hub = ModelHub(device="cpu", precision="fp32")
    hub.provide("clip", clip)
    hub.provide("sam", sam_module)
    monkeypatch.setattr(eval_cmd, "make_hub", lambda args: hub)
    cat = make_mvtec(tmp_path / "data", n_train=1, n_good=1, n_defect=1, defects=("bright", "dark"))
    prof = ProductProfile(name="widget", pipeline="clipsam", object="widget", image_scales=[240],
                          prompts={"normal_states": ["flawless {c}"], "anomalous_states": ["damaged {c}"]},
                          fade={"industrial_prompts": False}, decision={"image_threshold": 0.0},
                          clipsam={"max_regions": 1, "outside_weight": 0.2, "min_point_distance_px": 6})
    save_profile(prof, tmp_path / "widget")
    out = tmp_path / "run"
    rc = main(["eval", "--dataset", str(cat), "--profile", str(tmp_path / "widget"), "--eval-size", "64",
               "--save-maps", "--out", str(out)])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    rows = {Path(r["path"]).parent.name + "/" + Path(r["path"]).name: r
            for r in csv.DictReader((out / "scores.csv").open())}
    from inspector.inspection import Inspector

    inspector = Inspector(prof, hub)
    labels, scores, pix_true, pix_score = [], [], [], []
    for path in sorted((cat / "test").rglob("*.png")):
        image = read_image(path)
        want = naive_fade(clip, prof, image, [])
        lang = np.clip(_bilinear_to(want, image.shape[:2]), 0, 1)
        det = inspector.inspect(image).detection
        prompts = det.extras["prompts"]
        assert len(prompts) == 1
        comp = lang >= 0.8 * lang.max()  # one component (max_regions 1) holds the global maximum
        y, x = np.unravel_index(np.argmax(np.where(comp, lang, -1)), lang.shape)
        assert prompts[0]["positives"][0] == [float(x), float(y)]
        evidence = _naive_cascade_evidence(sam_module, image, lang, prompts)
        fused = np.clip(0.2 * lang + 0.8 * evidence, 0, 1)
        saved = np.load(out / "maps" / path.parent.name / f"{path.stem}.npy")
        np.testing.assert_allclose(saved, fused, atol=2e-3)
        assert float(rows[f"{path.parent.name}/{path.name}"]["score"]) == pytest.approx(want["p_ac"], abs=1e-4)
        mask = np.zeros((64, 64), bool)
        if path.parent.name != "good":
            mask = read_image(cat / "ground_truth" / path.parent.name / f"{path.stem}_mask.png")[..., 0] > 127
        labels.append(path.parent.name != "good")
        scores.append(want["p_ac"])
        pix_true.append(mask.ravel())
        pix_score.append(fused.ravel())
    assert metrics["image_auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-6)
    assert metrics["pixel_auroc"] == pytest.approx(
        roc_auc_score(np.concatenate(pix_true), np.concatenate(pix_score)), abs=2e-3)


def _bilinear_to(naive: dict, hw: tuple[int, int]) -> np.ndarray:
    """The language-only map (FadeLanguageMap: map = L_AS) upsampled to the image, from the naive grid."""
    from tests.test_fade_known import naive_bilinear

    lang = np.mean([naive_bilinear(m, naive["language"][max(naive["language"])].shape)
                    for m in naive["language"].values()], axis=0)
    return naive_bilinear(lang, hw)
