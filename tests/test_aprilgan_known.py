"""APRIL-GAN map provider: prompts, input size, positional table, text ensemble and its cache,
written out by hand or re-derived naively (the map itself is re-derived in
``test_clipsam_known.py::test_aprilgan_map_is_the_adapted_tokens_against_the_text``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inspector.cache import ArrayCache
from inspector.detect.aprilgan import (
    ANOMALOUS_STATES,
    DEFAULT_ADAPTER_KEY,
    LOGIT_SCALE,
    NORMAL_STATES,
    TEMPLATES,
    AprilGanMap,
    layer_anomaly_maps,
    state_prompts,
)
from inspector.models.adapters import AdapterError
from inspector.models.hub import ModelHub
from inspector.profile import ProductProfile
from tests.support.tiny_models import tiny_clip
from tests.test_adapters import tiny_adapter_state

@pytest.fixture(scope="module")
def clip() -> torch.nn.Module:
    return tiny_clip(seed=2)


def _hub(clip, adapter=None) -> ModelHub:
    hub = ModelHub(device="cpu", precision="fp32")
    hub.provide("clip", clip)
    hub.provide("adapter", adapter if adapter is not None else {"trainable_linearlayer": tiny_adapter_state(clip)})
    return hub


def _naive_text(clip, prompts: list[str]) -> np.ndarray:
    import open_clip

    tok = open_clip.tokenizer.SimpleTokenizer(context_length=77)
    with torch.no_grad():
        e = clip.encode_text(tok(prompts)).double().numpy()
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    m = e.mean(axis=0)
    return m / np.linalg.norm(m)


def test_the_published_prompt_lists():
    assert len(TEMPLATES) == 35 and len(set(TEMPLATES)) == 35
    assert len(NORMAL_STATES) == 7 and len(ANOMALOUS_STATES) == 5
    assert TEMPLATES[0] == "a bad photo of a {}." and TEMPLATES[-1] == "this is one {} in the scene."
    assert NORMAL_STATES[0] == "{object}" and ANOMALOUS_STATES[-1] == "{object} with damage"
    assert LOGIT_SCALE == 100.0 and DEFAULT_ADAPTER_KEY == "aprilgan_vitl14_336"


def test_state_prompts_fill_every_template_with_every_state():
    prof = ProductProfile(name="p", object="screw")
    got = state_prompts(("{object}", "broken {object}"), prof)
    want = [t.format("screw") for t in TEMPLATES] + [t.format("broken screw") for t in TEMPLATES]
    assert got == want


def test_prepare_rounds_the_input_to_whole_patches_and_resamples_the_table(tmp_path, clip):
    """Requested 70 px -> round(70/16) = 4 patches = 64 px; 90 -> round(5.625) = 6 = 96 px. The table
    is CLS + the 15×15 grid resized bicubic (antialias, align_corners=False) to g×g."""
    for requested, g in [(70, 4), (90, 6), (32, 2)]:
        profile = ProductProfile(name="p", pipeline="clipsam", object="part",
                                 clipsam={"aprilgan_image_size": requested})
        reports: list[tuple[float, str]] = []
        provider = AprilGanMap(cache=ArrayCache(tmp_path / "cache", key=b"k" * 32))
        provider.prepare(profile, _hub(clip), lambda f, m: reports.append((f, m)))
        assert provider.grid == (g, g) and provider.input_size == 16 * g
        assert provider.layers == (1, 2, 3, 4)  # 4 adapters on a 4-block ViT: every block
        pos = clip.visual.positional_embedding.detach().double()
        table = pos[1:].reshape(15, 15, -1).permute(2, 0, 1)[None]
        table = torch.nn.functional.interpolate(table, size=(g, g), mode="bicubic", antialias=True,
                                                align_corners=False)[0].permute(1, 2, 0).reshape(g * g, -1)
        want = torch.cat([pos[:1], table])
        torch.testing.assert_close(provider._positional.double(), want, atol=1e-5, rtol=0)
        assert reports == [(0.0, f"loading adapters {DEFAULT_ADAPTER_KEY}"), (0.1, f"loading CLIP {profile.models.clip}"),
                           (0.2, "encoding state prompts"), (1.0, "APRIL-GAN map ready")]


def test_text_is_the_profile_states_ensemble_and_is_cached(tmp_path, clip):
    """Profile state words replace the built-in ones; the two vectors are cached per prompts + CLIP."""
    cache = ArrayCache(tmp_path / "cache", key=b"k" * 32)
    profile = ProductProfile(name="p", pipeline="clipsam", object="bolt", clipsam={"aprilgan_image_size": 32},
                             prompts={"normal_states": ["clean {object}"], "anomalous_states": ["cracked {object}",
                                                                                                "bent {object}"]})
    provider = AprilGanMap(cache=cache)
    provider.prepare(profile, _hub(clip))
    normal = _naive_text(clip, [t.format("clean bolt") for t in TEMPLATES])
    anomalous = _naive_text(clip, [t.format(s) for s in ("cracked bolt", "bent bolt") for t in TEMPLATES])
    np.testing.assert_allclose(provider.text.numpy(), np.stack([normal, anomalous]), atol=1e-5)
    assert provider.text.dtype == torch.float32
    assert cache.misses == 1 and cache.hits == 0
    again = AprilGanMap(cache=cache)
    again.prepare(profile, _hub(clip))
    assert cache.hits == 1
    torch.testing.assert_close(again.text, provider.text)
    # other prompts: another entry, computed anew
    default = ProductProfile(name="p", pipeline="clipsam", object="bolt", clipsam={"aprilgan_image_size": 32})
    third = AprilGanMap(cache=cache)
    third.prepare(default, _hub(clip))
    assert cache.misses == 2
    want = np.stack([_naive_text(clip, state_prompts(NORMAL_STATES, default)),
                     _naive_text(clip, state_prompts(ANOMALOUS_STATES, default))])
    np.testing.assert_allclose(third.text.numpy(), want, atol=1e-5)


def test_map_is_the_mean_over_layers_and_counts_one_image_call(tmp_path, clip):
    profile = ProductProfile(name="p", pipeline="clipsam", object="part", clipsam={"aprilgan_image_size": 32})
    provider = AprilGanMap(cache=ArrayCache(tmp_path / "cache", key=b"k" * 32))
    provider.prepare(profile, _hub(clip))
    img = (np.random.default_rng(1).random((32, 32, 3)) * 255).astype(np.uint8)
    import time

    calls = provider.clip.image_calls
    t0 = time.perf_counter()
    got = provider(img)
    elapsed = time.perf_counter() - t0
    provider(img)
    assert provider.clip.image_calls == calls + 2
    assert set(got.timings) == {"clip_map"} and 0 < got.timings["clip_map"] <= elapsed
    # per-layer maps from the provider's own adapted tokens: the map is their mean (not the sum, not one layer)
    from inspector.models.adapters import intermediate_tokens

    with torch.no_grad():
        x = provider.clip.preprocess(img, 32)
        tokens, _ = intermediate_tokens(clip.visual, x, provider.layers, provider._positional)
        adapted = provider.adapter.project([t[:, 1:] for t in tokens])
        per_layer = layer_anomaly_maps(adapted, provider.text, (2, 2), 32).numpy()[:, 0]
    assert np.abs(per_layer[0] - per_layer[-1]).max() > 1e-3  # the layers differ: the mean is visible
    np.testing.assert_allclose(got.anomaly_map, per_layer.mean(axis=0), atol=1e-5)


def test_errors_name_the_clip_and_what_to_do(tmp_path, clip):
    with pytest.raises(RuntimeError, match=r"^AprilGanMap.prepare\(profile, hub\) must run before maps are computed$"):
        AprilGanMap()(np.zeros((8, 8, 3), np.uint8))
    profile = ProductProfile(name="p", pipeline="clipsam", object="part", clipsam={"aprilgan_image_size": 32})
    six = {"trainable_linearlayer": tiny_adapter_state(clip, 6)}  # 6 adapters, 4 blocks
    with pytest.raises(AdapterError, match=r"^6 adapters do not fit a ViT of 4 blocks \(CLIP '"
                                           + profile.models.clip + r"'\)$"):
        AprilGanMap(cache=ArrayCache(tmp_path / "c", key=b"k" * 32)).prepare(profile, _hub(clip, six))
    wide = {"fc.0.weight": torch.zeros(32, 48), "fc.0.bias": torch.zeros(32)}
    with pytest.raises(AdapterError, match=r"maps 48→32 but CLIP '" + profile.models.clip
                       + r"' has vision width 64 and embedding size 32"):
        AprilGanMap(cache=ArrayCache(tmp_path / "c", key=b"k" * 32)).prepare(profile, _hub(clip, wide))


def test_a_provider_whose_text_encoding_failed_refuses_to_map(tmp_path, clip, monkeypatch):
    """prepare sets the CLIP and the adapters before the text: if the text fails, no map is made."""
    profile = ProductProfile(name="p", pipeline="clipsam", object="part", clipsam={"aprilgan_image_size": 32})
    provider = AprilGanMap(cache=ArrayCache(tmp_path / "cache", key=b"k" * 32))

    def fail(_profile):
        raise MemoryError("text tower out of memory")

    monkeypatch.setattr(provider, "_text_features", fail)
    with pytest.raises(MemoryError):
        provider.prepare(profile, _hub(clip))
    assert provider.clip is not None and provider.adapter is not None and provider.text is None
    with pytest.raises(RuntimeError, match=r"^AprilGanMap.prepare\(profile, hub\) must run before maps"):
        provider(np.zeros((8, 8, 3), np.uint8))


def test_text_cache_entry_is_per_clip_and_per_state_set(tmp_path, clip, caplog):
    """One cache: another CLIP, other normal words only, other anomalous words only each get their
    own entry (and their own naive text); without a cache argument the station cache is used."""
    import logging
    import re
    import time

    cache = ArrayCache(tmp_path / "cache", key=b"k" * 32)

    def prepared(model, normal, anomalous):
        profile = ProductProfile(name="p", pipeline="clipsam", object="nut", clipsam={"aprilgan_image_size": 32},
                                 prompts={"normal_states": normal, "anomalous_states": anomalous})
        provider = AprilGanMap(cache=cache)
        provider.prepare(profile, _hub(model))
        want = np.stack([_naive_text(model, state_prompts(normal, profile)),
                         _naive_text(model, state_prompts(anomalous, profile))])
        np.testing.assert_allclose(provider.text.numpy(), want, atol=1e-5)

    other = tiny_clip(seed=4)
    with caplog.at_level(logging.INFO, logger="inspector.detect.aprilgan"):
        t0 = time.perf_counter()
        prepared(clip, ["good {object}"], ["bad {object}"])
        elapsed = time.perf_counter() - t0
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("encoded")]
    assert len(logged) == 1
    found = re.fullmatch(r"encoded 70 APRIL-GAN prompts in (\d+\.\d)s", logged[0])
    assert found and float(found.group(1)) <= elapsed + 0.05
    prepared(other, ["good {object}"], ["bad {object}"])
    prepared(clip, ["fine {object}"], ["bad {object}"])
    prepared(clip, ["good {object}"], ["worn {object}"])
    assert cache.misses == 4 and cache.hits == 0
    prepared(clip, ["good {object}"], ["bad {object}"])
    assert cache.hits == 1
    # no cache given: the station's cache (under this test's private INSPECTOR_HOME)
    profile = ProductProfile(name="p", pipeline="clipsam", object="nut", clipsam={"aprilgan_image_size": 32})
    provider = AprilGanMap()
    provider.prepare(profile, _hub(clip))
    assert provider.text.shape == (2, 32)


def test_prepare_asks_the_hub_for_the_profiles_adapter_and_logs_the_set_up(tmp_path, clip, caplog):
    """The adapter key is the profile's (default: the published one), the CLIP key the profile's;
    one INFO line says what was set up."""
    import logging

    from inspector.models.store.errors import UnknownModelError

    for chosen in (None, "my_adapter"):
        profile = ProductProfile(name="p", pipeline="clipsam", object="part", clipsam={"aprilgan_image_size": 64},
                                 models={"adapter": chosen})
        key = chosen or DEFAULT_ADAPTER_KEY
        hub = ModelHub(device="cpu", precision="fp32")
        hub.provide("clip", clip, key=profile.models.clip)
        hub.provide("adapter", {"trainable_linearlayer": tiny_adapter_state(clip)}, key=key)
        provider = AprilGanMap(cache=ArrayCache(tmp_path / "cache", key=b"k" * 32))
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="inspector.detect.aprilgan"):
            provider.prepare(profile, hub)
        assert provider.adapter.key == key
        assert f"APRIL-GAN map: CLIP {profile.models.clip}, adapters {key} on blocks (1, 2, 3, 4), input 64 " \
               "(grid 4²)" in [r.getMessage() for r in caplog.records]
    other = ProductProfile(name="p", pipeline="clipsam", object="part", models={"adapter": "not_provided"})
    with pytest.raises(UnknownModelError, match="unknown model key 'not_provided'"):
        AprilGanMap(cache=ArrayCache(tmp_path / "cache", key=b"k" * 32)).prepare(other, hub)


def test_a_patch_32_clip_gets_a_single_cell_grid_at_32_px(tmp_path):
    """32 px with 32 px patches: one patch (grid 1×1), not the two a minimum of 2 would force."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(11)
    coarse = CLIP(embed_dim=32, vision_cfg=CLIPVisionCfg(layers=4, width=64, head_width=16, patch_size=32,
                                                         image_size=224),
                  text_cfg=CLIPTextCfg(context_length=77, vocab_size=49408, width=32, heads=2, layers=1)).eval()
    profile = ProductProfile(name="p", pipeline="clipsam", object="part", clipsam={"aprilgan_image_size": 32})
    provider = AprilGanMap(cache=ArrayCache(tmp_path / "cache", key=b"k" * 32))
    provider.prepare(profile, _hub(coarse))
    assert provider.grid == (1, 1) and provider.input_size == 32 and provider._positional.shape[0] == 2
    amap = provider(np.full((20, 30, 3), 128, np.uint8)).anomaly_map
    assert amap.shape == (20, 30) and np.ptp(amap) < 1e-6  # one cell: a constant map
