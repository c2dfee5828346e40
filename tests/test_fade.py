"""FADE: scoring math, fusion table, caching, 0-shot and k-shot end to end on a tiny open_clip ViT."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from inspector.cache import ArrayCache
from inspector.detect import create_detector
from inspector.detect.clip_maps import ClipMap, create_map_provider
from inspector.detect.fade import (
    SCALE_PRESETS,
    FadeDetector,
    FadeLanguageMap,
    cpu_cost_warning,
    fuse_guidance,
    fuse_scales,
    knn_distance,
    text_anomaly_probability,
)
from inspector.imaging import write_png
from inspector.models.hub import ModelHub
from inspector.params.fade import FadeParams
from inspector.profile import ProductProfile, save_profile
from tests.support.tiny_models import tiny_clip

# a small prompt set (state overrides, no industrial descriptions) keeps most tests fast;
# test_zero_shot_end_to_end_full_ensemble runs the full built-in ensemble once.
SMALL_PROMPTS = {"normal_states": ["flawless {c}"], "anomalous_states": ["damaged {c}"]}
SMALL_FADE = {"industrial_prompts": False}


@pytest.fixture(scope="module")
def hub() -> ModelHub:
    h = ModelHub(device="cpu", precision="fp32")
    h.provide("clip", tiny_clip(seed=0))
    return h


def _image(seed: int, h: int = 96, w: int = 128, defect: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = 120 + 40 * np.sin(xx / 5.0)[..., None] + rng.normal(0, 6, (h, w, 1))
    img = np.repeat(base, 3, axis=2)
    if defect:
        img[30:50, 60:84] = [230, 40, 30]
    return np.clip(img, 0, 255).astype(np.uint8)


def _profile(tmp_path, shots: int = 0, small: bool = True, **kw) -> ProductProfile:
    fields = dict(name="widget", pipeline="fade", object="widget", image_scales=[240, 272],
                  decision={"image_threshold": 0.5})
    if small:
        fields.update(prompts=SMALL_PROMPTS, fade=SMALL_FADE)
    fields.update(kw)
    p = ProductProfile(**fields)
    folder = tmp_path / "widget"
    refs = []
    for k in range(shots):
        rel = f"references/good_{k}.png"
        write_png(folder / rel, _image(100 + k))
        refs.append(rel)
    p.reference_shots = refs
    save_profile(p, folder)
    return p


# ---------------------------------------------------------------------------------- math
def test_text_probability_is_softmax_over_two_means():
    n = torch.nn.functional.normalize(torch.tensor([1.0, 0.0, 0.0]), dim=0)
    a = torch.nn.functional.normalize(torch.tensor([0.0, 1.0, 0.0]), dim=0)
    f = torch.nn.functional.normalize(torch.tensor([[0.6, 0.8, 0.0], [0.8, 0.6, 0.0], [0.0, 0.0, 1.0]]), dim=1)
    p = text_anomaly_probability(f, n, a, 0.01)
    expected = [1 / (1 + np.exp(-(0.8 - 0.6) * 100)), 1 / (1 + np.exp(-(0.6 - 0.8) * 100)), 0.5]
    np.testing.assert_allclose(p.numpy(), expected, rtol=1e-5)


def test_zero_shot_self_bank_needs_the_second_neighbour():
    torch.manual_seed(0)
    f = torch.nn.functional.normalize(torch.randn(12, 8), dim=1)
    f[7] = f[2]  # patch 7 duplicates patch 2
    self_2nd = knn_distance(f, f, rank=2, chunk=5)
    # only the duplicated pair has a perfect second neighbour
    assert self_2nd[2] == pytest.approx(0.0, abs=1e-6) and self_2nd[7] == pytest.approx(0.0, abs=1e-6)
    others = [i for i in range(12) if i not in (2, 7)]
    assert (self_2nd[others] > 0.05).all()
    # brute force: 0.5 (1 - cos) to the 2nd most similar row
    sim = f @ f.T
    ref = 0.5 * (1 - sim.sort(dim=1, descending=True).values[:, 1])
    torch.testing.assert_close(self_2nd, ref.clamp(0, 1), atol=1e-6, rtol=0)
    # the 1st neighbour is the patch itself: useless as a score
    assert knn_distance(f, f, rank=1).abs().max() < 1e-6


def test_knn_chunking_does_not_change_the_answer():
    torch.manual_seed(1)
    q = torch.nn.functional.normalize(torch.randn(50, 16), dim=1)
    bank = torch.nn.functional.normalize(torch.randn(130, 16), dim=1)
    full = knn_distance(q, bank, chunk=1000)
    torch.testing.assert_close(knn_distance(q, bank, chunk=7), full)
    ref = 0.5 * (1 - (q @ bank.T).max(dim=1).values)
    torch.testing.assert_close(full, ref, atol=1e-6, rtol=0)
    q[3] = bank[77]
    assert knn_distance(q, bank)[3] == pytest.approx(0.0, abs=1e-6)


def test_fuse_scales_upsamples_to_largest_grid_and_averages():
    out = fuse_scales([np.full((2, 2), 0.2, np.float32), np.full((4, 4), 0.6, np.float32)])
    assert out.shape == (4, 4)
    np.testing.assert_allclose(out, 0.4, atol=1e-6)


def test_fusion_table_arithmetic():
    params = FadeParams()
    L = np.full((3, 3), 0.2, np.float32)
    V = np.full((3, 3), 0.004, np.float32)
    m, s = fuse_guidance(L, V, 0.7, few_shot=False, params=params)
    np.testing.assert_allclose(m, 0.5 * 0.2 + 0.5 * 80 * 0.004, atol=1e-6)
    assert s == pytest.approx(0.7)
    L = np.full((3, 3), 0.4, np.float32)
    V = np.zeros((3, 3), np.float32)
    V[1, 1] = 0.1
    m, s = fuse_guidance(L, V, 0.3, few_shot=True, params=params)
    assert m[1, 1] == pytest.approx(0.15 * 0.4 + 0.85 * 3.5 * 0.1)
    assert m[0, 0] == pytest.approx(0.15 * 0.4)
    assert s == pytest.approx((0.3 + 3.5 * 0.1) / 2)
    # clipped to [0, 1] after fusion
    m, s = fuse_guidance(L, np.full((3, 3), 0.5, np.float32), 0.9, few_shot=True, params=params)
    assert m.max() == 1.0 and s == 1.0
    # one guidance alone; both off is an error
    m, s = fuse_guidance(L, None, 0.3, few_shot=True, params=params)
    np.testing.assert_allclose(m, 0.4)
    assert s == pytest.approx(0.3)
    with pytest.raises(ValueError):
        fuse_guidance(None, None, None, False, params)


def test_cpu_cost_warning():
    full = ProductProfile(name="a", image_scales=SCALE_PRESETS["full"])
    fast = ProductProfile(name="b", image_scales=SCALE_PRESETS["fast"])
    msg = cpu_cost_warning(full, "cpu")
    assert msg is not None and "896" in msg and "fast" in msg
    assert cpu_cost_warning(fast, "cpu") is None
    assert cpu_cost_warning(full, torch.device("cuda")) is None


# ---------------------------------------------------------------------------------- pipeline
@pytest.mark.slow
def test_zero_shot_end_to_end_full_ensemble(tmp_path, hub, monkeypatch):
    monkeypatch.setenv("INSPECTOR_CACHE_DIR", str(tmp_path / "cache"))
    profile = _profile(tmp_path, shots=0, small=False)
    det = create_detector("fade")
    assert isinstance(det, FadeDetector)
    det.prepare(profile, hub)
    assert det.engine.text_seg.count == (154 + 423, 88 + 491)  # the full built-in ensemble
    assert det.engine.text_cls.count == (154, 88)
    img = _image(1, defect=True)
    d = det.detect(img)
    assert d.anomaly_map.shape == img.shape[:2] and d.anomaly_map.dtype == np.float32
    assert 0.0 <= d.anomaly_map.min() <= d.anomaly_map.max() <= 1.0
    assert 0.0 <= d.image_score <= 1.0 and d.extras["few_shot"] is False
    for stage in ("gem_240", "gem_272", "language", "vision", "classification", "fusion", "regions"):
        assert stage in d.timings
    # 0-shot: the image score is p_AC, and the map is the 0-shot fusion of the analysis
    a = det.analyse(img)
    assert d.image_score == pytest.approx(a.p_ac)
    assert set(a.language) == set(a.vision) == {240, 272}
    assert a.language[272].shape == (17, 17) and a.vision[240].shape == (15, 15)
    L = fuse_scales(list(a.language.values()))
    V = fuse_scales(list(a.vision.values()))
    np.testing.assert_allclose(d.extras["grid_map"], np.clip(0.5 * L + 0.5 * 80 * V, 0, 1), atol=1e-5)
    for r in d.regions:
        assert d.anomaly_map[r.mask].min() >= profile.decision.region_threshold


def test_k_shot_query_equal_to_reference_has_zero_vision_map(tmp_path, hub):
    profile = _profile(tmp_path, shots=2)
    det = FadeDetector(cache=ArrayCache(tmp_path / "cache"))
    det.prepare(profile, hub)
    assert det.engine.few_shot and set(det.engine.banks) == {240, 272}
    assert det.engine.banks[272].shape == (2 * 17 * 17, 32)
    same = _image(101)  # identical to reference shot 1
    a = det.analyse(same)
    for scale, v in a.vision.items():
        assert np.abs(v).max() < 1e-5, scale
    d = det.finish(a, same)
    L = fuse_scales(list(a.language.values()))
    np.testing.assert_allclose(d.extras["grid_map"], np.clip(0.15 * L, 0, 1), atol=1e-5)
    assert d.image_score == pytest.approx(a.p_ac / 2, abs=1e-5)
    # a different image is not at zero distance from the references
    other = det.analyse(_image(7, defect=True))
    assert max(float(v.max()) for v in other.vision.values()) > 1e-3
    assert other.few_shot is True


def test_second_prepare_reencodes_nothing(tmp_path, hub):
    profile = _profile(tmp_path, shots=2)
    cache = ArrayCache(tmp_path / "cache")
    clip = hub.get("clip", profile.models.clip)
    t0, i0 = clip.text_calls, clip.image_calls
    FadeDetector(cache=cache).prepare(profile, hub)
    assert clip.text_calls > t0 and clip.image_calls - i0 == 2 * 2  # 2 shots x 2 scales
    t1, i1 = clip.text_calls, clip.image_calls
    det = FadeDetector(cache=cache)
    det.prepare(profile, hub)
    assert (clip.text_calls, clip.image_calls) == (t1, i1)
    assert set(det.engine.banks) == {240, 272}
    # changing one reference image recomputes the banks, not the text means
    write_png(profile.folder / profile.reference_shots[0], _image(55))
    FadeDetector(cache=cache).prepare(profile, hub)
    assert clip.text_calls == t1 and clip.image_calls - i1 == 4
    # adding a scale only encodes the references at the new scale
    profile.image_scales = [240, 272, 304]
    t2, i2 = clip.text_calls, clip.image_calls
    FadeDetector(cache=cache).prepare(profile, hub)
    assert clip.text_calls == t2 and clip.image_calls - i2 == 2


def test_language_map_provider_is_the_detector_map(tmp_path, hub):
    profile = _profile(tmp_path, shots=2, fade={**SMALL_FADE, "use_vision": False})
    cache = ArrayCache(tmp_path / "cache")
    provider = create_map_provider("fade")
    assert isinstance(provider, FadeLanguageMap) and provider.fuse_vision is False
    provider._cache = cache
    provider.prepare(profile, hub)
    assert provider.engine.banks == {}  # language only: no reference banks needed
    det = FadeDetector(cache=cache)
    det.prepare(profile, hub)
    img = _image(3, h=80, w=100, defect=True)
    cm = provider(img)
    d = det.detect(img)
    assert isinstance(cm, ClipMap)
    assert cm.anomaly_map.shape == (80, 100) and cm.anomaly_map.dtype == np.float32
    np.testing.assert_allclose(cm.anomaly_map, d.anomaly_map, atol=1e-6)
    assert cm.image_score == pytest.approx(d.image_score)
    assert "gem_240" in cm.timings
    # with fuse_vision the reference banks join in (k-shot fusion)
    fused = FadeLanguageMap(fuse_vision=True, cache=cache)
    fused.prepare(_profile(tmp_path, shots=2), hub)
    assert set(fused.engine.banks) == {240, 272}
    assert 0.0 <= fused(img).image_score <= 1.0


def test_prepare_checks_scales_and_warns_on_cpu_cost(tmp_path, hub, caplog):
    det = FadeDetector(cache=ArrayCache(tmp_path / "cache"))
    with pytest.raises(ValueError, match="multiples of the CLIP patch size 16"):
        det.prepare(_profile(tmp_path, image_scales=[240, 250]), hub)
    with caplog.at_level(logging.WARNING, logger="inspector.detect.fade"):
        det.prepare(_profile(tmp_path, image_scales=[240, 896]), hub)
    assert any("896" in r.getMessage() and "CPU" in r.getMessage() for r in caplog.records)


def test_analyse_rejects_bad_input(tmp_path, hub):
    det = FadeDetector(cache=ArrayCache(tmp_path / "cache"))
    with pytest.raises(RuntimeError, match="not prepared"):
        det.analyse(_image(0))
    det.prepare(_profile(tmp_path), hub)
    with pytest.raises(ValueError, match="RGB uint8"):
        det.analyse(np.zeros((10, 10), np.uint8))
