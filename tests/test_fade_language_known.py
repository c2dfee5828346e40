"""FADE's language map on a tiny *real* open_clip CLIP whose weights are constructed, so the answer
is known without running the pipeline (issue 17, item 2).

The construction (every number is set in :func:`constructed_clip`; nothing fakes an output, the
open_clip modules, GEM and the FADE engine compute everything):

* **Image tower.** ``conv1`` reads only the red channel: a patch's token is
  ``(r̄ − KAPPA)·e1 + BETA·e2`` (r̄ = mean normalised red over the patch; ``−KAPPA·e1 + BETA·e2``
  is the constant positional table). Attention is switched off (``out_proj = 0``) in every block,
  so GEM's self-self attention contributes nothing and the GEM stream is the embedded tokens;
  ``proj`` sends e1 → the defect axis d and e2 → the object axis w of the joint space. So a GEM
  patch is ``normalize((r̄ − KAPPA)·d + BETA·w)``: red patches lean to +d, grey ones to −d.
  Each block's MLP outputs only a constant bias ``RHO/2·e2``: it runs on the CLIP path but not on
  the GEM path (GEM has no FFN and starts before the first block here), and it turns every *CLIP*
  patch towards w — a map built from the CLIP patches is ≈ 0.5 everywhere, so feeding the wrong
  token set, starting the GEM stream after a block, or adding the FFN to GEM fails.
* **Text tower.** All token embeddings are 0 except the state words (one direction each); q, k
  are 0 so the causal attention mean-pools the prompt into the end token; ``text_projection``
  sends each word's direction to its joint embedding ``u_word``. So every prompt embeds to the
  unit ``u`` of its state word: "damaged"/"cracked" ``normalize(w + δd ± εg)``, "flawless"/
  "perfect" ``normalize(w − δd ± εg)``. Their ensemble means are *not* unit (ε = 1), so a
  re-normalised mean changes the softmax.

Then the language map at a patch is ``σ(⟨f, t̄_a − t̄_n⟩ / T)`` with ``t̄_a − t̄_n ∝ d``: high on
the planted red square, low on the grey background, between them at blurred borders.
The expected maps below are computed in float64 numpy from the constructed arrays (PIL resize,
written-out normalisation, patch means, LayerNorm, projection, softmax, bilinear resizes), sharing
no code with the engine. Broken pipelines (normal/anomalous swapped, a constant map, CLIP patches
in place of GEM ones, a GEM stream that starts a block late or runs the FFN, a fixed or inverted
temperature, re-normalised text means, a transposed grid, max instead of mean over scales, the
largest scale alone, CLS from the GEM tokens) were checked to fail these tests.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from inspector.cache import ArrayCache
from inspector.detect.fade import FadeLanguageMap
from inspector.models.hub import ModelHub
from inspector.profile import ProductProfile, load_profile, save_profile
from tests.test_fade_known import naive_bilinear

MEAN = np.array([0.48145466, 0.4578275, 0.40821073])
STD = np.array([0.26862954, 0.26130258, 0.27577711])

VISION_WIDTH, TEXT_WIDTH, EMBED_DIM, PATCH = 64, 32, 32, 16
KAPPA, BETA, RHO = 0.82, 1.5, 100.0  # red threshold, object-axis offset, CLIP-path MLP bias (sum)
DELTA, EPS = 0.1, 1.0  # text directions: defect-axis lean and per-word spread
TEMPERATURE = 0.02  # not FADE's default 0.01: a hard-coded temperature fails
LN_EPS = 1e-5

SCALES = [48, 96]  # grids 3×3 and 6×6
SIZE = 96  # images are 96×96: the 96 scale is no resize, the 48 scale a 2× PIL bicubic shrink
PLANT = (slice(32, 64), slice(64, 96))  # rows 2–3, cols 4–5 at 96; patch (1, 2) at 48 (asymmetric)
PLANT_RGB = (230, 40, 30)

NORMAL_STATES = ["flawless {c}", "perfect {c}"]
ANOMALOUS_STATES = ["damaged {c}", "damaged {c}", "cracked {c}"]  # a duplicate acts as a weight


# ------------------------------------------------------------------------------ construction
def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _basis(n: int, i: int) -> np.ndarray:
    e = np.zeros(n)
    e[i] = 1.0
    return e


def _pair(n: int, i: int) -> np.ndarray:
    """(E_i − E_{i+1}) / √2: unit and zero-mean, so LayerNorm only rescales it."""
    return (_basis(n, i) - _basis(n, i + 1)) / np.sqrt(2.0)


E1, E2 = _pair(VISION_WIDTH, 0), _pair(VISION_WIDTH, 2)  # vision-width directions
W_AXIS, D_AXIS, G_AXIS = (_basis(EMBED_DIM, i) for i in range(3))  # joint space: object, defect, spread
WORD_U = {  # joint embedding of each state word
    "damaged": _unit(W_AXIS + DELTA * D_AXIS + EPS * G_AXIS),
    "cracked": _unit(W_AXIS + DELTA * D_AXIS - EPS * G_AXIS),
    "flawless": _unit(W_AXIS - DELTA * D_AXIS + EPS * G_AXIS),
    "perfect": _unit(W_AXIS - DELTA * D_AXIS - EPS * G_AXIS),
}
WORD_DIR = {word: _pair(TEXT_WIDTH, 2 * i) for i, word in enumerate(WORD_U)}  # text-width directions
TEXT_MEAN_N = (WORD_U["flawless"] + WORD_U["perfect"]) / 2
TEXT_MEAN_A = (2 * WORD_U["damaged"] + WORD_U["cracked"]) / 3
POSITIONAL_ROW = -KAPPA * E1 + BETA * E2
VISION_PROJ = np.outer(E1, D_AXIS) + np.outer(E2, W_AXIS)


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(a, dtype=torch.float32)


def constructed_clip() -> torch.nn.Module:
    """open_clip ``CLIP`` (2 vision blocks, 1 text block) with the weights described above."""
    import open_clip
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(0)
    model = CLIP(
        embed_dim=EMBED_DIM,
        vision_cfg=CLIPVisionCfg(layers=2, width=VISION_WIDTH, head_width=16, patch_size=PATCH, image_size=240),
        text_cfg=CLIPTextCfg(context_length=77, vocab_size=49408, width=TEXT_WIDTH, heads=2, layers=1),
    )
    v = model.visual
    with torch.no_grad():
        v.conv1.weight.zero_()
        v.conv1.weight[:, 0] = _t(E1).view(-1, 1, 1) / PATCH**2  # token = mean red · e1
        v.class_embedding.zero_()
        v.positional_embedding.copy_(_t(POSITIONAL_ROW).expand_as(v.positional_embedding))
        blocks = list(v.transformer.resblocks)
        for block in blocks:
            block.attn.out_proj.weight.zero_()  # in_proj stays random: GEM's attention runs, then is cut
            block.attn.out_proj.bias.zero_()
            block.mlp.c_fc.weight.zero_()
            block.mlp.c_fc.bias.zero_()  # GELU(0) = 0: the MLP outputs its c_proj bias
            block.mlp.c_proj.weight.zero_()
            block.mlp.c_proj.bias.copy_(_t(RHO / len(blocks) * E2))
        for ln in (v.ln_pre, v.ln_post):
            ln.weight.fill_(1.0)
            ln.bias.zero_()
        v.proj.copy_(_t(VISION_PROJ))

        tok = open_clip.tokenizer.SimpleTokenizer(context_length=77)
        model.token_embedding.weight.zero_()
        for word, direction in WORD_DIR.items():
            (token_id,) = tok.encode(word)
            model.token_embedding.weight[token_id] = _t(direction)
        model.positional_embedding.zero_()
        (block,) = model.transformer.resblocks
        w = TEXT_WIDTH
        block.attn.in_proj_weight.zero_()
        block.attn.in_proj_weight[2 * w :] = torch.eye(w)  # v = ln_1(x); q = k = 0: uniform causal mean
        block.attn.in_proj_bias.zero_()
        block.attn.out_proj.weight.copy_(torch.eye(w))
        block.attn.out_proj.bias.zero_()
        for p in (block.mlp.c_fc.weight, block.mlp.c_fc.bias, block.mlp.c_proj.weight, block.mlp.c_proj.bias):
            p.zero_()
        model.text_projection.copy_(_t(sum(np.outer(WORD_DIR[k], WORD_U[k]) for k in WORD_U)))
    return model.eval()


# ------------------------------------------------------------------------------ float64 reference
def _layer_norm(x: np.ndarray) -> np.ndarray:
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + LN_EPS)


def _project(stream: np.ndarray) -> np.ndarray:
    y = _layer_norm(stream) @ VISION_PROJ
    return y / np.linalg.norm(y, axis=-1, keepdims=True)


def red_patch_means(image: np.ndarray, scale: int) -> np.ndarray:
    """Mean normalised red per 16×16 patch of the image squash-resized (PIL bicubic) to scale²."""
    pil = Image.fromarray(image)
    if pil.size != (scale, scale):
        pil = pil.resize((scale, scale), Image.Resampling.BICUBIC)
    red = (np.asarray(pil, dtype=np.float64)[..., 0] / 255.0 - MEAN[0]) / STD[0]
    g = scale // PATCH
    return red.reshape(g, PATCH, g, PATCH).mean(axis=(1, 3))


def expected_patches(image: np.ndarray, scale: int, path: str = "gem") -> np.ndarray:
    """Unit patch features (g×g×D) of the constructed tower, from its arrays."""
    embedded = _layer_norm(red_patch_means(image, scale)[..., None] * E1 + POSITIONAL_ROW)  # ln_pre
    stream = embedded if path == "gem" else embedded + RHO * E2  # the CLIP path also has the MLP bias
    return _project(stream)


def softmax_anomalous(f: np.ndarray, normal: np.ndarray, anomalous: np.ndarray, temperature: float) -> np.ndarray:
    logits = np.stack([f @ normal, f @ anomalous], axis=-1) / temperature
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e[..., 1] / e.sum(axis=-1)


def expected_language(image: np.ndarray, path: str = "gem") -> tuple[dict[int, np.ndarray], np.ndarray, np.ndarray]:
    """(per-scale maps, fused 6×6 grid map, map at the image size)."""
    per_scale = {s: softmax_anomalous(expected_patches(image, s, path), TEXT_MEAN_N, TEXT_MEAN_A, TEMPERATURE)
                 for s in SCALES}
    big = max(SCALES) // PATCH
    grid = np.clip(np.mean([naive_bilinear(m, (big, big)) for m in per_scale.values()], axis=0), 0, 1)
    return per_scale, grid, np.clip(naive_bilinear(grid, image.shape[:2]), 0, 1)


def expected_p_ac() -> float:
    """The CLIP CLS token: positional row only (class embedding 0, no attention) + the MLP bias."""
    cls = _project(_layer_norm(POSITIONAL_ROW) + RHO * E2)
    return float(softmax_anomalous(cls, TEXT_MEAN_N, TEXT_MEAN_A, TEMPERATURE))


# ------------------------------------------------------------------------------ fixtures
def planted_image(plant: bool = True) -> np.ndarray:
    """Grey-ish background whose red channel ramps 90 → 150 across the columns; a red square."""
    img = np.empty((SIZE, SIZE, 3), np.uint8)
    img[..., 0] = np.round(90 + 60 * np.arange(SIZE) / (SIZE - 1)).astype(np.uint8)[None, :]
    img[..., 1], img[..., 2] = 128, 110
    if plant:
        img[PLANT] = PLANT_RGB
    return img


def plant_mask() -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), bool)
    mask[PLANT] = True
    return mask


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return constructed_clip()


def _profile(folder: Path) -> ProductProfile:
    prof = ProductProfile(name="widget", pipeline="fade", object="widget", image_scales=SCALES,
                          prompts={"normal_states": NORMAL_STATES, "anomalous_states": ANOMALOUS_STATES},
                          fade={"industrial_prompts": False, "temperature": TEMPERATURE,
                                "classification_scale": 96})
    save_profile(prof, folder)
    return load_profile(folder)


@pytest.fixture(scope="module")
def provider(tmp_path_factory, model) -> FadeLanguageMap:
    folder = tmp_path_factory.mktemp("fade_language")
    hub = ModelHub(device="cpu", precision="fp32")
    hub.provide("clip", model)
    p = FadeLanguageMap(cache=ArrayCache(folder / "cache", key=b"k" * 32))
    p.prepare(_profile(folder / "widget"), hub)
    return p


# ------------------------------------------------------------------------------ the construction holds
def test_the_constructed_towers_compute_the_designed_embeddings(model):
    """Precondition: the real towers embed prompts and patches as designed (else the test proves nothing)."""
    import open_clip

    from inspector.models.gem import GemEncoder

    tok = open_clip.tokenizer.SimpleTokenizer(context_length=77)
    for word, u in WORD_U.items():
        for text in (f"a photo of a {word} object.", f"a cropped photo of the {word} widget for anomaly detection."):
            with torch.no_grad():
                e = model.encode_text(tok([text]))[0].double().numpy()
            np.testing.assert_allclose(e / np.linalg.norm(e), u, atol=1e-6)
    # the two means lean to ±d and are not unit
    assert TEXT_MEAN_A @ D_AXIS > 0 > TEXT_MEAN_N @ D_AXIS
    assert np.linalg.norm(TEXT_MEAN_N) == pytest.approx(np.sqrt((1 + DELTA**2) / (1 + DELTA**2 + EPS**2)))
    image = planted_image()
    x = torch.as_tensor(((image / 255.0 - MEAN) / STD).transpose(2, 0, 1)[None], dtype=torch.float32)
    with torch.no_grad():
        tokens = GemEncoder(model.visual)(x)
    np.testing.assert_allclose(tokens.gem_patches[0].double().numpy(), expected_patches(image, 96).reshape(36, -1),
                               atol=1e-5)
    np.testing.assert_allclose(tokens.clip_patches[0].double().numpy(),
                               expected_patches(image, 96, "clip").reshape(36, -1), atol=1e-5)


# ------------------------------------------------------------------------------ the language map
def test_language_map_lights_up_the_planted_square_and_matches_float64(provider):
    image = planted_image()
    analysis = provider.engine.analyse(image)
    want_scales, want_grid, want_map = expected_language(image)
    for s in SCALES:
        np.testing.assert_allclose(analysis.language[s], want_scales[s], atol=1e-5, err_msg=f"scale {s}")
    got = provider(image)
    np.testing.assert_allclose(got.anomaly_map, want_map, atol=1e-5)
    assert got.image_score == pytest.approx(expected_p_ac(), abs=1e-5)

    # the known answer, independent of the reference: the 4 planted patches at 96 px are the top 4,
    # all near 1; every background patch is low; at 48 px the planted patch (1, 2) is the maximum
    fine = analysis.language[96]
    top4 = {divmod(int(i), 6) for i in np.argsort(fine.ravel())[-4:]}
    assert top4 == {(2, 4), (2, 5), (3, 4), (3, 5)}
    assert fine[2:4, 4:6].min() > 0.9
    background = np.ones((6, 6), bool)
    background[1:5, 3:6] = False  # planted patches and their neighbours
    assert fine[background].max() < 0.15
    coarse = analysis.language[48]
    assert np.unravel_index(np.argmax(coarse), coarse.shape) == (1, 2) and coarse[1, 2] > 0.9
    # at the image: the peak is on the square, its inside is high, and it separates square from rest
    amap = got.anomaly_map
    assert amap.shape == (SIZE, SIZE)
    assert plant_mask()[np.unravel_index(np.argmax(amap), amap.shape)]
    assert amap[PLANT].mean() > 0.65
    assert roc_auc_score(plant_mask().ravel(), amap.ravel()) > 0.99
    # the background ramps in red, so its map rises to the right (the columns are not mixed up)
    assert np.all(np.diff(fine[0]) > 0)


def test_no_planted_square_no_peak(provider):
    image = planted_image(plant=False)
    got = provider(image)
    _, _, want_map = expected_language(image)
    np.testing.assert_allclose(got.anomaly_map, want_map, atol=1e-5)
    assert got.anomaly_map.max() < 0.15


def test_the_map_from_clip_patches_would_be_flat(provider):
    """The wrong token set has no peak: the engine's map is not it (so GEM patches feed the map)."""
    image = planted_image()
    _, _, clip_map = expected_language(image, path="clip")
    assert clip_map.max() - clip_map.min() < 0.15
    assert np.abs(provider(image).anomaly_map - clip_map).max() > 0.3
