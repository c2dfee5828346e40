"""Known-answer tests of the open_clip wrapper (``inspector/models/clip.py``) that kill the mutants
the loading / GEM / FADE tests left alive (bench/mutation.md).

Tiny random-initialised open_clip models (the library's own ``CLIP`` / ``CustomTextCLIP``), no
mocks. Every expected value comes from somewhere else than the wrapper: a float64 copy of the
same open_clip module run directly with open_clip's own tokenizers, PIL + numpy for the
preprocessing, hashlib for the fingerprint, and a second open_clip model for the loader.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
import yaml
from PIL import Image

from inspector.models.clip import ClipModel, load_open_clip_state
from inspector.models.store import ModelStore
from tests.support.tiny_models import TINY_CLIP_IMAGE_SIZE, tiny_clip, write_tiny_bert

CPU = torch.device("cpu")
PROMPTS = ["a photo of a scratched bottle", "a crack", "metal nut", "a flawless widget", "stain on the part"]
OPENAI_MEAN = np.array([0.48145466, 0.4578275, 0.40821073])
OPENAI_STD = np.array([0.26862954, 0.26130258, 0.27577711])


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return tiny_clip(seed=3, layers=2)


@pytest.fixture(scope="module")
def reference(model: torch.nn.Module) -> torch.nn.Module:
    """The same weights in float64, run directly (no wrapper)."""
    return copy.deepcopy(model).double().eval()


def _unit(e: torch.Tensor) -> np.ndarray:
    e = e.detach().double().numpy()
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def _ref_text(ref: torch.nn.Module, prompts: list[str], tokenizer=open_clip.tokenize) -> np.ndarray:
    with torch.no_grad():
        return _unit(ref.encode_text(tokenizer(prompts)))


def _ref_image(ref: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return _unit(ref.encode_image(x.double()))


def _image(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3)).astype(np.uint8)


def _ref_preprocess(img: np.ndarray, size: int, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    resized = np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.BICUBIC), np.float64)
    return ((resized / 255.0 - mean) / std).transpose(2, 0, 1)


# ------------------------------------------------------------------------------ the wrapper's state
def test_from_module_records_what_it_was_given(model):
    clip = ClipModel.from_module(model, CPU, torch.float32)
    assert clip.key == "*" and clip.device == CPU and clip.dtype == torch.float32
    assert (clip.image_size, clip.patch_size) == (TINY_CLIP_IMAGE_SIZE, 16)
    assert (clip.text_calls, clip.image_calls) == (0, 0)
    assert clip.embed_dim == 32 and clip.model.training is False
    other = ClipModel.from_module(model, CPU, torch.bfloat16, "tiny_b")
    assert other.key == "tiny_b" and other.dtype == torch.bfloat16


def test_fingerprint_is_the_key_and_a_hash_of_the_projections(model):
    clip = ClipModel(model, CPU, torch.float32, "tiny")
    h = hashlib.sha256(b"tiny")
    for t in (model.text_projection, model.visual.proj, model.visual.positional_embedding):
        h.update(t.detach().numpy().astype(np.float32).tobytes())
    assert clip.fingerprint == f"tiny:{h.hexdigest()[:16]}"
    assert clip.fingerprint is clip.fingerprint  # computed once
    other = ClipModel(tiny_clip(seed=4, layers=2), CPU, torch.float32, "tiny")
    assert other.fingerprint.startswith("tiny:") and other.fingerprint != clip.fingerprint


# ------------------------------------------------------------------------------ encoders
def test_encode_text_in_batches_is_the_float64_reference(model, reference):
    """The wrapper's own tokenizer (built from the model's context length) + batches of 2."""
    clip = ClipModel.from_module(model, CPU, torch.float32)
    got = clip.encode_text(PROMPTS, batch_size=2)
    assert got.dtype == torch.float32 and tuple(got.shape) == (5, 32)
    np.testing.assert_allclose(got.numpy(), _ref_text(reference, PROMPTS), atol=2e-6, rtol=0)
    assert clip.text_calls == 3  # ceil(5 / 2) batches
    np.testing.assert_allclose(clip.encode_text(PROMPTS[:1]).numpy(), _ref_text(reference, PROMPTS[:1]),
                               atol=2e-6, rtol=0)
    assert clip.text_calls == 4


def test_encode_text_of_no_prompts_is_an_empty_batch(model):
    clip = ClipModel.from_module(model, CPU, torch.float32)
    out = clip.encode_text([])
    assert tuple(out.shape) == (0, 32) and out.dtype == torch.float32 and clip.text_calls == 0


def test_encode_image_and_dense_are_the_reference_and_count_calls(model, reference):
    clip = ClipModel.from_module(model, CPU, torch.float32)
    x = clip.preprocess([_image(50, 70, 1), _image(40, 40, 2)], TINY_CLIP_IMAGE_SIZE)
    got = clip.encode_image(x)
    assert got.dtype == torch.float32 and tuple(got.shape) == (2, 32)
    np.testing.assert_allclose(got.numpy(), _ref_image(reference, x), atol=2e-6, rtol=0)
    assert clip.image_calls == 1
    dense = clip.encode_dense(x)
    assert clip.image_calls == 2
    np.testing.assert_allclose(dense.cls.numpy(), _ref_image(reference, x), atol=1e-5, rtol=0)
    assert clip.gem is clip.gem  # the GEM encoder is built once


def test_bf16_autocast_runs_on_the_cpu(model, reference):
    """dtype bfloat16 on the CPU: the three encoders run under CPU autocast (not plain fp32)."""
    fp32 = ClipModel(model, CPU, torch.float32, "tiny")
    bf16 = ClipModel(model, CPU, torch.bfloat16, "tiny")
    x = fp32.preprocess(_image(50, 60, 3), TINY_CLIP_IMAGE_SIZE)
    for got, exact, want in ((bf16.encode_text(PROMPTS), fp32.encode_text(PROMPTS), _ref_text(reference, PROMPTS)),
                             (bf16.encode_image(x), fp32.encode_image(x), _ref_image(reference, x)),
                             (bf16.encode_dense(x).cls, fp32.encode_dense(x).cls, _ref_image(reference, x))):
        assert got.dtype == torch.float32
        np.testing.assert_allclose(got.numpy(), want, atol=0.03, rtol=0)
        assert float((got - exact).abs().max()) > 1e-4  # bf16 rounding: autocast was on


def test_preprocess_takes_a_list_or_one_image():
    clip = ClipModel(tiny_clip(seed=0, layers=1), CPU, torch.float32, "tiny")
    a, b = _image(30, 50, 4), _image(64, 20, 5)
    both = clip.preprocess([a, b], 32)
    assert tuple(both.shape) == (2, 3, 32, 32)
    for i, img in enumerate((a, b)):
        np.testing.assert_allclose(both[i].numpy(), _ref_preprocess(img, 32, OPENAI_MEAN, OPENAI_STD), atol=1e-5)
        torch.testing.assert_close(clip.preprocess(img, 32)[0], both[i], atol=0, rtol=0)


# ------------------------------------------------------------------------------ the loader
def test_a_misfit_checkpoint_names_the_default_source_and_the_fix():
    state = tiny_clip(seed=1, layers=1).state_dict()
    with pytest.raises(ValueError, match=r"(?s)^checkpoint: the checkpoint does not fit this open_clip architecture "
                                         r"\(.*\); check the entry's arch or re-import the file$"):
        load_open_clip_state(tiny_clip(seed=1, layers=2), state)


def _clip(seed: int, **kw) -> torch.nn.Module:
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(seed)
    vision = CLIPVisionCfg(layers=1, width=32, head_width=16, patch_size=16, image_size=32)
    text = CLIPTextCfg(context_length=16, vocab_size=49408, width=32, heads=2, layers=1)
    return CLIP(embed_dim=16, vision_cfg=vision, text_cfg=text, **kw).eval()


def test_a_clip_checkpoint_loads_into_a_siglip_style_model_with_a_zero_bias():
    """No ``logit_bias`` in the checkpoint, one in the model: open_clip adds a zero bias."""
    src = _clip(1, init_logit_scale=2.5)
    dst = _clip(2, init_logit_bias=-10.0)
    load_open_clip_state(dst, src.state_dict())
    assert dst.logit_bias.shape == () and float(dst.logit_bias.detach()) == 0.0
    assert float(dst.logit_scale.detach()) == pytest.approx(2.5)
    torch.testing.assert_close(dst.visual.proj, src.visual.proj, atol=0, rtol=0)


def test_scalar_logit_parameters_load_into_a_model_with_1d_ones():
    src = _clip(1, init_logit_scale=2.5, init_logit_bias=-7.0)
    dst = _clip(2, init_logit_bias=-10.0, nonscalar_logit_scale=True)
    assert src.logit_scale.ndim == 0 and dst.logit_scale.shape == (1,)
    load_open_clip_state(dst, src.state_dict())
    assert dst.logit_scale.tolist() == pytest.approx([2.5]) and dst.logit_bias.tolist() == pytest.approx([-7.0])
    # and both missing-bias fixes together: the zero bias takes the reshaped scale's shape
    plain = _clip(3, init_logit_scale=1.5)
    load_open_clip_state(dst, plain.state_dict())
    assert dst.logit_scale.tolist() == pytest.approx([1.5]) and dst.logit_bias.tolist() == [0.0]


def test_an_old_hf_text_checkpoint_with_position_ids_loads(tmp_path):
    """An HF text tower saved by transformers < 4.31 carries ``embeddings.position_ids``, which
    today's BertEmbeddings keeps as a non-persistent buffer: the key is dropped, the rest loads."""
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg, CustomTextCLIP

    bert = write_tiny_bert(tmp_path / "bert")

    def build(seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        text = CLIPTextCfg(hf_model_name=str(bert), hf_model_pretrained=False, hf_tokenizer_name=str(bert),
                           hf_proj_type="linear", hf_pooler_type="cls_pooler", context_length=16)
        vision = CLIPVisionCfg(layers=1, width=32, head_width=16, patch_size=16, image_size=32)
        return CustomTextCLIP(embed_dim=16, vision_cfg=vision, text_cfg=text).eval()

    src, dst = build(1), build(2)
    state = src.state_dict()
    key = "text.transformer.embeddings.position_ids"
    assert key not in state
    state[key] = torch.arange(256)[None]
    load_open_clip_state(dst, state)
    tokens = torch.randint(5, 30, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(dst.encode_text(tokens), src.encode_text(tokens), atol=0, rtol=0)

    # a model built with an older transformers keeps position_ids as a persistent buffer: the
    # checkpoint's table is loaded, not dropped (a strict load would then miss the key)
    old = build(3)
    old.text.transformer.embeddings.register_buffer("position_ids", torch.zeros(1, 256, dtype=torch.long))
    assert key in old.state_dict()
    load_open_clip_state(old, state)
    assert old.text.transformer.embeddings.position_ids.tolist() == [list(range(256))]


# ------------------------------------------------------------------------------ from the model store
def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_from_store_uses_the_arch_config_tokenizer_preprocessing_and_quick_gelu(tmp_path):
    """A ``local-dir:`` open_clip config (open_clip's own schema) with a 20-token context, a
    punctuation-stripping tokenizer, a non-OpenAI mean/std, and QuickGELU from the entry's options:
    each must reach the wrapper. The reference is the saved model itself, in float64, with the
    tokenizer and normalisation written out here."""
    arch_dir = tmp_path / "arch"
    arch_dir.mkdir()
    mean, std = np.array([0.5, 0.4, 0.3]), np.array([0.25, 0.5, 0.2])
    model_cfg = {"embed_dim": 16,
                 "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
                 "text_cfg": {"context_length": 20, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1,
                              "tokenizer_kwargs": {"clean": "canonicalize"}}}
    (arch_dir / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": model_cfg, "preprocess_cfg": {"mean": mean.tolist(), "std": std.tolist()}}))
    arch = f"local-dir:{arch_dir}"
    torch.manual_seed(5)
    saved = open_clip.create_model(arch, pretrained=None, force_quick_gelu=True).eval()
    assert type(saved.visual.transformer.resblocks[0].mlp.gelu).__name__ == "QuickGELU"
    root = tmp_path / "models"
    (root / "oc").mkdir(parents=True)
    (root / "bad").mkdir()
    torch.save(saved.state_dict(), root / "oc" / "oc.pt")
    torch.save(tiny_clip(seed=0, layers=1).state_dict(), root / "bad" / "bad.pt")
    entries = {k: {"kind": "clip", "arch": arch, "licence": "test", "size_mb": 0.1,
                   "options": {"quick_gelu": True},
                   "files": {f"{k}.pt": {"sha256": _sha(root / k / f"{k}.pt")}}} for k in ("oc", "bad")}
    (tmp_path / "models.yaml").write_text(yaml.safe_dump({"models": entries}), encoding="utf-8")
    store = ModelStore(root, tmp_path / "models.yaml")

    clip = ClipModel.from_store(store, "oc", CPU, torch.float32)
    assert clip.key == "oc" and clip.device == CPU and clip.dtype == torch.float32
    assert (clip.image_size, clip.patch_size) == (32, 16)
    ref = copy.deepcopy(saved).double()
    prompts = ["A Photo, of: a CRACK!", "metal-nut; bent wire?"]
    canonical = open_clip.tokenizer.SimpleTokenizer(context_length=20, clean="canonicalize")
    assert not torch.equal(canonical(prompts), open_clip.tokenizer.SimpleTokenizer(context_length=20)(prompts))
    np.testing.assert_allclose(clip.encode_text(prompts).numpy(), _ref_text(ref, prompts, canonical),
                               atol=2e-6, rtol=0)
    img = _image(40, 52, 6)
    x = clip.preprocess(img, 32)
    np.testing.assert_allclose(x[0].numpy(), _ref_preprocess(img, 32, mean, std), atol=1e-5)
    np.testing.assert_allclose(clip.encode_image(x).numpy(), _ref_image(ref, x), atol=2e-6, rtol=0)

    with pytest.raises(ValueError, match=r"^model store entry 'bad': the checkpoint does not fit"):
        ClipModel.from_store(store, "bad", CPU, torch.float32)


def test_from_store_takes_mean_std_and_quick_gelu_from_the_weights_tag(tmp_path, monkeypatch):
    """Weights published under an open_clip pretrained tag carry their own normalisation and
    activation (SigLIP's webli: mean = std = 0.5; OpenAI's: QuickGELU). A tag registered in open_clip's
    own pretrained table, for an arch whose config says neither, must reach the wrapper; the entry's
    ``options`` still outrank it."""
    arch_dir = tmp_path / "arch"
    arch_dir.mkdir()
    model_cfg = {"embed_dim": 16,
                 "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
                 "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    (arch_dir / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg}))
    arch = f"local-dir:{arch_dir}"
    mean, std = np.array([0.5, 0.5, 0.5]), np.array([0.5, 0.5, 0.5])
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, arch,
                        {"site_tag": {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "quick_gelu": True}})
    torch.manual_seed(9)
    saved = open_clip.create_model(arch, pretrained=None, force_quick_gelu=True).eval()
    root = tmp_path / "models"
    (root / "oc").mkdir(parents=True)
    torch.save(saved.state_dict(), root / "oc" / "oc.pt")
    sha = _sha(root / "oc" / "oc.pt")
    entries = {"tagged": {"kind": "clip", "arch": arch, "tag": "site-tag", "licence": "test", "size_mb": 0.1,
                          "files": {"oc.pt": {"sha256": sha}}},
               "overridden": {"kind": "clip", "arch": arch, "tag": "site-tag", "licence": "test", "size_mb": 0.1,
                              "options": {"quick_gelu": False}, "files": {"oc.pt": {"sha256": sha}}},
               "untagged": {"kind": "clip", "arch": arch, "licence": "test", "size_mb": 0.1,
                            "files": {"oc.pt": {"sha256": sha}}}}
    for k in ("tagged", "overridden", "untagged"):
        (root / k).mkdir(exist_ok=True)
        (root / k / "oc.pt").write_bytes((root / "oc" / "oc.pt").read_bytes())
    (tmp_path / "models.yaml").write_text(yaml.safe_dump({"models": entries}), encoding="utf-8")
    store = ModelStore(root, tmp_path / "models.yaml")
    img = _image(40, 52, 6)

    clip = ClipModel.from_store(store, "tagged", CPU, torch.float32)
    assert type(clip.model.visual.transformer.resblocks[0].mlp.gelu).__name__ == "QuickGELU"
    x = clip.preprocess(img, 32)
    np.testing.assert_allclose(x[0].numpy(), _ref_preprocess(img, 32, mean, std), atol=1e-5)
    np.testing.assert_allclose(clip.encode_image(x).numpy(), _ref_image(copy.deepcopy(saved).double(), x),
                               atol=2e-6, rtol=0)
    over = ClipModel.from_store(store, "overridden", CPU, torch.float32)
    assert type(over.model.visual.transformer.resblocks[0].mlp.gelu).__name__ == "GELU"
    plain = ClipModel.from_store(store, "untagged", CPU, torch.float32)  # arch config only: OpenAI's
    assert type(plain.model.visual.transformer.resblocks[0].mlp.gelu).__name__ == "GELU"
    np.testing.assert_allclose(plain.preprocess(img, 32)[0].numpy(), _ref_preprocess(img, 32, OPENAI_MEAN, OPENAI_STD),
                               atol=1e-5)
