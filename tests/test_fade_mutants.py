"""FADE's engine, detector and language-map provider against a naive float64 re-derivation, fast.

``test_fade_known.py`` checks the same stages at 240/272 px (FADE's own sizes, ~15 s). These tests
run the engine at 32 and 48 px (2×2 and 3×3 patch grids, well under a second per image), so that
mutation testing (``bench/mutate.sh``) can afford to run them once per mutant of the engine.
Every expected value comes from the naive reference in ``test_fade_known.py`` (PIL + written-out
OpenAI normalisation, raw open_clip text tower, explicit softmax, neighbour loops and bilinear
resizes) or is written out here by hand; scipy's labelling is the reference for the regions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch

from inspector.cache import ArrayCache
from inspector.detect.fade import FadeDetector, FadeEngine, FadeLanguageMap, fuse_guidance, fuse_scales, knn_distance
from inspector.detect.prompts import classification_prompts, segmentation_prompts
from inspector.imaging import read_image, write_png
from inspector.models.hub import ModelHub
from inspector.params.fade import FadeParams
from inspector.profile import ProductProfile, load_profile, save_profile
from tests.support.tiny_models import tiny_clip
from tests.test_fade_known import (
    SMALL_PROMPTS,
    naive_bilinear,
    naive_knn,
    naive_pixels,
    naive_softmax_anomalous,
    naive_text_mean,
)

SCALES = [32, 48]
# weights and gains that are not 0.5 / 1 tell language from vision and V from gain·V
FADE = {"industrial_prompts": False, "temperature": 0.02, "zero_shot_language_weight": 0.3,
        "zero_shot_vision_gain": 2.0, "few_shot_language_weight": 0.2, "few_shot_vision_gain": 3.0}


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return tiny_clip(seed=0)


def _image(seed: int, defect: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:40, 0:56]
    img = np.stack([100 + 50 * np.sin(xx / 3.0), 120 + 30 * np.cos(yy / 4.0), 90 + 0 * xx], axis=-1)
    img = img + rng.normal(0, 8, img.shape)
    if defect:
        img[12:26, 30:46] = [235, 30, 20]
    return np.clip(img, 0, 255).astype(np.uint8)


def _profile(folder: Path, shots: int, classification_scale: int) -> ProductProfile:
    refs = []
    for i in range(shots):
        write_png(folder / "references" / f"r{i}.png", _image(50 + i))
        refs.append(f"references/r{i}.png")
    prof = ProductProfile(name="widget", pipeline="fade", object="widget", image_scales=SCALES,
                          prompts=SMALL_PROMPTS, fade={**FADE, "classification_scale": classification_scale},
                          reference_shots=refs)
    save_profile(prof, folder)
    return load_profile(folder)


def _hub(model: torch.nn.Module) -> ModelHub:
    hub = ModelHub(device="cpu", precision="fp32")
    hub.provide("clip", model)
    return hub


def naive(model: torch.nn.Module, profile: ProductProfile, image: np.ndarray, shots: bool,
          language: bool = True, vision: bool = True) -> dict:
    """FADE re-derived at any scales; the CLS pass may be at a scale of its own."""
    from inspector.models.gem import GemEncoder

    p = profile.fade
    seg, cls = segmentation_prompts(profile), classification_prompts(profile)
    enc = GemEncoder(model.visual)
    refs = [read_image(r) for r in profile.reference_paths()] if shots else []
    out: dict = {"language": {}, "vision": {}}
    with torch.no_grad():
        for s in profile.image_scales:
            tok = enc(naive_pixels(image, s))
            g = s // 16
            gem, clip = tok.gem[0, 1:].double().numpy(), tok.clip[0, 1:].double().numpy()
            if language:
                out["language"][s] = naive_softmax_anomalous(
                    gem, naive_text_mean(model, seg.normal), naive_text_mean(model, seg.anomalous),
                    p.temperature).reshape(g, g)
            if vision and refs:
                bank = np.concatenate([enc(naive_pixels(r, s)).clip[0, 1:].double().numpy() for r in refs])
                out["vision"][s] = naive_knn(clip, bank, 1).reshape(g, g)
            elif vision:
                out["vision"][s] = naive_knn(gem, gem, 2).reshape(g, g)
        cls_token = enc(naive_pixels(image, p.classification_scale)).clip[0, 0].double().numpy()
    out["p_ac"] = float(naive_softmax_anomalous(cls_token, naive_text_mean(model, cls.normal),
                                                naive_text_mean(model, cls.anomalous), p.temperature))
    big = max(profile.image_scales) // 16
    mean_up = lambda maps: np.mean([naive_bilinear(m, (big, big)) for m in maps.values()], axis=0)  # noqa: E731
    lang = mean_up(out["language"]) if language else None
    vis = mean_up(out["vision"]) if vision else None
    w, gain = ((p.few_shot_language_weight, p.few_shot_vision_gain) if shots
               else (p.zero_shot_language_weight, p.zero_shot_vision_gain))
    if vis is None:
        grid, score = lang, out["p_ac"]
    elif lang is None:
        grid, score = gain * vis, float(np.max(gain * vis))
    else:
        grid = w * lang + (1 - w) * gain * vis
        score = (out["p_ac"] + np.max(gain * vis)) / 2 if shots else out["p_ac"]
    out["grid_map"] = np.clip(grid, 0, 1)
    out["map"] = np.clip(naive_bilinear(out["grid_map"], image.shape[:2]), 0, 1)
    out["score"] = float(np.clip(score, 0, 1))
    return out


def naive_regions(amap: np.ndarray, threshold: float, min_area: int) -> list[tuple[int, float, tuple]]:
    """(area, max score, box) of the 8-connected components of amap ≥ threshold, area ≥ min_area."""
    labels, n = ndi.label(amap >= threshold, structure=np.ones((3, 3)))
    out = []
    for i in range(1, n + 1):
        ys, xs = np.nonzero(labels == i)
        if len(ys) >= max(min_area, 1):
            out.append((len(ys), float(amap[ys, xs].max()), (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)))
    return sorted(out, key=lambda t: -t[1])


# ------------------------------------------------------------------------------ pure functions
def test_knn_distance_edge_cases_by_hand():
    """A bank of exactly ``rank`` rows is enough; rounding outside [0, 1] is clamped; the error names sizes."""
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    bank = torch.tensor([[0.6, 0.8], [1.0, 0.0]])
    # rank 2 of 2 rows: the farther row. q0: cos 1, 0.6 -> 0.2; q1: cos 0.8, 0 -> 0.5
    np.testing.assert_allclose(knn_distance(q, bank, rank=2).numpy(), [0.2, 0.5], atol=1e-7)
    # norms a little above 1 (as rounding leaves them): 0.5 (1 - 1.000002) < 0 and 0.5 (1 + 1.000002) > 1
    e = torch.tensor([[1.000001, 0.0]])
    assert knn_distance(e, e).tolist() == [0.0]
    assert knn_distance(e, -e).tolist() == [1.0]
    with pytest.raises(ValueError, match=r"^memory bank has 1 rows; need at least 2$"):
        knn_distance(q, bank[:1], rank=2)


def test_fuse_scales_picks_the_grid_with_most_cells():
    """Largest by area (h·w), not by tuple order nor by width: (6, 2) over (3, 3), (3, 5) over (4, 3)."""
    a, b = np.arange(12, dtype=np.float32).reshape(6, 2) / 12, np.full((3, 3), 0.5, np.float32)
    np.testing.assert_allclose(fuse_scales([a, b]), (a + naive_bilinear(b, (6, 2))) / 2, atol=1e-6)
    c, d = np.arange(15, dtype=np.float32).reshape(3, 5) / 15, np.full((4, 3), 0.25, np.float32)
    np.testing.assert_allclose(fuse_scales([d, c]), (naive_bilinear(d, (3, 5)) + c) / 2, atol=1e-6)


def test_fusion_returns_float32_and_the_exact_error():
    params = FadeParams()
    m, _ = fuse_guidance(np.full((2, 2), 0.25), np.zeros((2, 2)), 0.5, few_shot=False, params=params)
    assert m.dtype == np.float32
    with pytest.raises(ValueError, match=r"^FADE needs language or vision guidance; both are off$"):
        fuse_guidance(None, None, 0.5, few_shot=False, params=params)


# ------------------------------------------------------------------------------ engine, detector, provider
@pytest.mark.parametrize(("shots", "cls_scale"), [(0, 48), (2, 64)])
def test_engine_detector_and_regions_match_the_naive_rederivation(tmp_path, model, shots, cls_scale):
    """0-shot with the CLS read from the 48 px pass; 2-shot with a CLS pass of its own at 64 px."""
    profile = _profile(tmp_path / "widget", shots, cls_scale)
    reports: list[tuple[float, str]] = []
    det = FadeDetector(cache=ArrayCache(tmp_path / "cache", key=b"k" * 32))
    det.prepare(profile, _hub(model), lambda f, m: reports.append((round(f, 6), m)))
    image = _image(3, defect=True)
    calls = det.engine.clip.image_calls
    analysis = det.analyse(image)
    # one GEM pass per scale; the CLS is read from the 48 px pass, or needs a pass of its own at 64 px
    assert det.engine.clip.image_calls - calls == len(SCALES) + (cls_scale not in SCALES)
    want = naive(model, profile, image, bool(shots))

    assert analysis.few_shot is bool(shots) and analysis.image_hw == (40, 56)
    assert sorted(analysis.language) == sorted(analysis.vision) == SCALES
    for s in SCALES:
        np.testing.assert_allclose(analysis.language[s], want["language"][s], atol=2e-5)
        np.testing.assert_allclose(analysis.vision[s], want["vision"][s], atol=2e-5)
    assert analysis.p_ac == pytest.approx(want["p_ac"], abs=2e-5)
    assert set(analysis.timings) == {"gem_32", "gem_48", "language", "vision", "classification"}
    seg = segmentation_prompts(profile)
    assert det.engine.text_seg.count == (len(seg.normal), len(seg.anomalous))
    cls = classification_prompts(profile)
    assert det.engine.text_cls.count == (len(cls.normal), len(cls.anomalous))

    # the fused map is neither saturated nor flat: weights, gains and clipping all show
    assert 0.0 < want["grid_map"].min() < want["grid_map"].max() < 1.0
    grid_map, score = det.engine.fuse(analysis, profile.fade)
    np.testing.assert_allclose(grid_map, want["grid_map"], atol=5e-5)
    assert score == pytest.approx(want["score"], abs=5e-5)

    # regions: a threshold between the map's values; every component, then none reaching the minimum area
    amap_want = want["map"]
    threshold = float(np.quantile(amap_want, 0.7))
    comps = naive_regions(amap_want, threshold, 0)
    assert comps  # something to find
    for min_area in (0, max(a for a, _, _ in comps), max(a for a, _, _ in comps) + 1):
        retuned = profile.model_copy(deep=True)
        retuned.decision.pixel_threshold = threshold
        retuned.decision.min_defect_area_px = min_area
        det.retune(retuned)
        assert det.engine.profile is retuned
        out = det.finish(analysis, image)
        expected = naive_regions(amap_want, threshold, min_area)
        assert [(r.area_px, r.box) for r in out.regions] == [(a, tuple(int(v) for v in b)) for a, _, b in expected]
        np.testing.assert_allclose([r.score for r in out.regions], [s for _, s, _ in expected], atol=5e-5)
    assert out.regions == []  # the last minimum is above every component
    np.testing.assert_allclose(out.anomaly_map, amap_want, atol=5e-5)
    assert out.image_score == pytest.approx(want["score"], abs=5e-5)
    assert out.extras["few_shot"] is bool(shots) and out.extras["scales"] == SCALES
    assert out.extras["p_ac"] == pytest.approx(want["p_ac"], abs=2e-5)
    np.testing.assert_allclose(out.extras["grid_map"], want["grid_map"], atol=5e-5)
    assert {"fusion", "regions", "gem_32"} <= set(out.timings)

    # progress: by hand (prompts at 0.05 / 0.2; reference k at scale si: 0.4 + 0.6 (si + k/n) / 2)
    head = [(0.0, "loading CLIP"), (0.05, "encoding classification prompts"), (0.2, "encoding segmentation prompts")]
    banks = [(round(0.4 + 0.6 * (si + k / shots) / 2, 6), f"reference {k + 1}/{shots} at {s}px")
             for si, s in enumerate(SCALES) for k in range(shots)]
    tail = [(1.0, f"{shots} reference shots ready")] if shots else []
    assert reports == head + banks + tail + [(1.0, "FADE ready")]


def test_language_map_provider_alone_and_with_vision(tmp_path, model):
    """FadeLanguageMap: language alone (map = L, score = p_AC); with fuse_vision the k-shot table."""
    profile = _profile(tmp_path / "widget", 2, 48)
    image = _image(4, defect=True)
    cache = ArrayCache(tmp_path / "cache", key=b"k" * 32)
    for fuse_vision in (False, True):
        provider = FadeLanguageMap(fuse_vision=fuse_vision, cache=cache)
        provider.prepare(profile, _hub(model))
        assert provider.profile is profile and provider.engine.use_vision is fuse_vision
        got = provider(image)
        want = naive(model, profile, image, shots=True, vision=fuse_vision)
        np.testing.assert_allclose(got.anomaly_map, want["map"], atol=5e-5)
        assert got.image_score == pytest.approx(want["score"], abs=5e-5)
        assert {"fusion", "language", "classification"} <= set(got.timings)
        assert ("vision" in got.timings) is fuse_vision
    with pytest.raises(RuntimeError, match=r"^FadeLanguageMap is not prepared; call prepare\(profile, hub\) first$"):
        FadeLanguageMap()(image)


@pytest.mark.parametrize("which", ["language", "vision"])
def test_one_guidance_switched_off(tmp_path, model, which):
    """``which`` is switched off. No language: vision alone (score = max gV); no vision: language alone."""
    profile = _profile(tmp_path / "widget", 0, 48)
    profile.fade.use_language = which != "language"
    profile.fade.use_vision = which != "vision"
    det = FadeDetector(cache=ArrayCache(tmp_path / "cache", key=b"k" * 32))
    det.prepare(profile, _hub(model))
    assert (det.engine.text_seg is None) is (which == "language")
    image = _image(5, defect=True)
    analysis = det.analyse(image)
    want = naive(model, profile, image, shots=False, language=which != "language", vision=which != "vision")
    assert (analysis.p_ac is None) is (which == "language")
    assert (not analysis.vision) is (which == "vision")
    out = det.finish(analysis, image)
    np.testing.assert_allclose(out.anomaly_map, want["map"], atol=5e-5)
    assert out.image_score == pytest.approx(want["score"], abs=5e-5)
    assert out.extras["scales"] == SCALES  # the scales of whichever guidance ran


def test_engine_errors_name_what_to_fix(tmp_path, model):
    profile = _profile(tmp_path / "widget", 1, 48)
    with pytest.raises(RuntimeError, match=r"^FADE is not prepared; call prepare\(profile, hub\) first$"):
        FadeEngine().analyse(_image(1))
    with pytest.raises(RuntimeError, match=r"^FadeDetector is not prepared; call prepare\(profile, hub\) first$"):
        FadeDetector().analyse(_image(1))
    with pytest.raises(ValueError, match="^profile 'widget': fade.use_language and fade.use_vision are both off$"):
        FadeEngine(use_language=False, use_vision=False).prepare(profile, _hub(model))
    det = FadeDetector(cache=ArrayCache(tmp_path / "cache", key=b"k" * 32))
    det.prepare(profile, _hub(model))
    with pytest.raises(ValueError, match=r"^FADE expects an RGB uint8 HxWx3 image, got float64 \(40, 56, 3\)$"):
        det.analyse(_image(1).astype(np.float64))
    with pytest.raises(ValueError, match=r"got uint8 \(40, 56\)"):
        det.analyse(_image(1)[..., 0])
    with pytest.raises(ValueError, match=r"got uint8 \(40, 56, 4\)"):
        det.analyse(np.zeros((40, 56, 4), np.uint8))
    bad = profile.model_copy(deep=True)
    bad.image_scales = [32, 40]
    with pytest.raises(ValueError, match=r"'widget': image_scales / fade.classification_scale \[40\] are not "
                                         r"multiples of the CLIP patch size 16; use e.g. \[240, 448, 896\]"):
        FadeDetector().prepare(bad, _hub(model))
    (tmp_path / "widget" / "references" / "r0.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"'widget': reference shot .*r0.png cannot be read .*; "
                                                r"add the image or remove it from reference_shots"):
        FadeDetector(cache=ArrayCache(tmp_path / "cache2", key=b"k" * 32)).prepare(profile, _hub(model))


def test_set_up_plumbing_cost_estimate_and_per_clip_banks(tmp_path, model):
    """CPU estimate by hand (60 s at 896 px, cubic); the provider passes its cache and progress to
    the engine; the reference banks are cached per CLIP (another CLIP, same cache: its own bank)."""
    from inspector.detect.fade import estimated_cpu_seconds

    assert estimated_cpu_seconds([448, 896]) == pytest.approx(60.0 * (0.125 + 1.0))
    assert estimated_cpu_seconds([240]) == pytest.approx(60.0 * (240 / 896) ** 3)
    fresh = FadeLanguageMap()
    assert fresh.fuse_vision is False and fresh.engine is None and fresh.profile is None
    profile = _profile(tmp_path / "widget", 1, 48)
    cache = ArrayCache(tmp_path / "cache", key=b"k" * 32)
    reports: list[str] = []
    provider = FadeLanguageMap(cache=cache)
    provider.prepare(profile, _hub(model), lambda f, m: reports.append(m))
    assert provider.engine.cache is cache and provider.engine.use_language is True
    assert reports[0] == "loading CLIP" and reports[-1] == "FADE ready"
    image = _image(6, defect=True)
    other = tiny_clip(seed=1)
    for m in (model, other):
        det = FadeDetector(cache=cache)
        det.prepare(profile, _hub(m))
        analysis = det.analyse(image)
        want = naive(m, profile, image, shots=True)
        for s in SCALES:
            np.testing.assert_allclose(analysis.vision[s], want["vision"][s], atol=2e-5)
            np.testing.assert_allclose(analysis.language[s], want["language"][s], atol=2e-5)
    # another text template, same cache: the prompts are encoded anew, inside that template
    import open_clip

    templated = profile.model_copy(deep=True)
    templated.fade.text_template = "a cropped photo of the {}."
    det = FadeDetector(cache=cache)
    det.prepare(templated, _hub(model))
    tok = open_clip.tokenizer.SimpleTokenizer(context_length=77)

    def mean_text(prompts: tuple[str, ...]) -> np.ndarray:
        with torch.no_grad():
            e = model.encode_text(tok([f"a cropped photo of the {p.strip().rstrip('.').strip()}." for p in prompts]))
        e = e.double().numpy()
        return (e / np.linalg.norm(e, axis=1, keepdims=True)).mean(axis=0)

    seg = segmentation_prompts(templated)
    np.testing.assert_allclose(det.engine.text_seg.normal.numpy(), mean_text(seg.normal), atol=1e-5)
    np.testing.assert_allclose(det.engine.text_seg.anomalous.numpy(), mean_text(seg.anomalous), atol=1e-5)
