"""APRIL-GAN adapter loading and the intermediate-token forward, on a tiny open_clip ViT."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from inspector.models.adapters import (
    CHECKPOINT_KEY,
    AdapterError,
    AprilGanAdapter,
    adapter_state_dict,
    evenly_spaced_layers,
    intermediate_tokens,
    vit_depth,
    vit_width,
)
from inspector.models.clip import resample_positional_embedding

CPU = torch.device("cpu")


def tiny_adapter_state(clip_model, count: int | None = None, seed: int = 3) -> dict[str, torch.Tensor]:
    """APRIL-GAN ``LinearLayer`` state sized for a CLIP: width → embed_dim, one per chosen block."""
    visual = clip_model.visual
    count = count or vit_depth(visual)
    torch.manual_seed(seed)
    fc = torch.nn.ModuleList(
        torch.nn.Linear(vit_width(visual), int(clip_model.text_projection.shape[1])) for _ in range(count)
    )
    return {f"fc.{k}": v for k, v in fc.state_dict().items()}


def write_adapter_store(tmp_path: Path, key: str, checkpoints: dict[str, Any], options: dict[str, Any],
                        default_file: str | None = None):
    """A real :class:`ModelStore` whose manifest holds one adapter entry ``key``: each checkpoint
    object saved under its file name (sha256 recorded), ``default_file`` the first unless named."""
    from inspector.models.store import ModelStore

    folder = tmp_path / "models" / key
    folder.mkdir(parents=True)
    files = {}
    for name, obj in checkpoints.items():
        path = folder / name
        torch.save(obj, path)
        files[name] = {"sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    manifest = {"format": 1, "models": {key: {
        "kind": "adapter", "arch": "aprilgan-linear", "licence": "MIT", "size_mb": 0.1,
        "state_key": CHECKPOINT_KEY, "default_file": default_file or next(iter(checkpoints)), "files": files,
        "options": options,
    }}}
    (tmp_path / "manifest.yaml").write_text(yaml.safe_dump(manifest), encoding="utf-8")
    return ModelStore(tmp_path / "models", manifest_path=tmp_path / "manifest.yaml"), folder


def adapter_store(tmp_path: Path, clip_model, options: dict[str, Any] | None = None, count: int | None = None):
    """A store with one APRIL-GAN-like entry with two files (like the published one: an adapter
    trained on MVTec-AD and one trained on VisA)."""
    names = ("mvtec_pretrained.pth", "visa_pretrained.pth")
    checkpoints = {name: {CHECKPOINT_KEY: tiny_adapter_state(clip_model, count, seed=seed)}
                   for seed, name in enumerate(names)}
    trained_on = {"trained_on": {"mvtec_pretrained.pth": "mvtec", "visa_pretrained.pth": "visa"}}
    return write_adapter_store(tmp_path, "aprilgan_tiny", checkpoints, {**trained_on, **(options or {})},
                               "visa_pretrained.pth")


def test_checkpoint_layout_loads_from_the_store(tmp_path, clip):
    store, folder = adapter_store(tmp_path, clip)
    adapter = AprilGanAdapter.from_store(store, "aprilgan_tiny", CPU, torch.float32)
    depth, width, dim = vit_depth(clip.visual), vit_width(clip.visual), int(clip.text_projection.shape[1])
    assert (adapter.count, adapter.in_features, adapter.out_features) == (depth, width, dim)
    saved = torch.load(folder / "visa_pretrained.pth", weights_only=True)[CHECKPOINT_KEY]  # the default file
    for i in range(depth):
        assert torch.equal(adapter.fc[i].weight, saved[f"fc.{i}.weight"])
        assert torch.equal(adapter.fc[i].bias, saved[f"fc.{i}.bias"])
    assert adapter.trained_on == "visa"
    assert adapter.layers_for(depth) == tuple(range(1, depth + 1))
    adapter.check_clip(width, dim)  # fits
    other = AprilGanAdapter.from_store(store, "aprilgan_tiny:mvtec_pretrained.pth", CPU, torch.float32)
    assert other.trained_on == "mvtec" and not torch.equal(other.fc[0].weight, adapter.fc[0].weight)


def test_store_options_name_layers_and_clip(tmp_path, clip):
    store, _ = adapter_store(tmp_path, clip, {"layers": [1, 3], "clip": "clip_tiny"}, count=2)
    adapter = AprilGanAdapter.from_store(store, "aprilgan_tiny", CPU, torch.float32)
    assert adapter.layers_for(4) == (1, 3)
    assert adapter.clip_key == "clip_tiny"


def test_layers_spread_over_depth():
    assert evenly_spaced_layers(24, 4) == (6, 12, 18, 24)  # the published ViT-L-14-336 blocks
    assert evenly_spaced_layers(12, 4) == (3, 6, 9, 12)
    with pytest.raises(AdapterError, match="do not fit"):
        evenly_spaced_layers(2, 4)


def test_from_module_accepts_module_state_and_dataparallel_prefix(clip):
    state = tiny_adapter_state(clip)

    class LinearLayer(torch.nn.Module):  # APRIL-GAN's module shape: a ModuleList named fc
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.ModuleList(torch.nn.Linear(64, 32) for _ in range(4))

    module = LinearLayer()
    module.load_state_dict(state)
    a = AprilGanAdapter.from_module(module, CPU, torch.float32)
    b = AprilGanAdapter.from_module({f"module.{k}": v for k, v in state.items()}, CPU, torch.float32)
    for i in range(4):
        assert torch.equal(a.fc[i].weight, b.fc[i].weight)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: s.update({"head.weight": torch.zeros(1)}), "unexpected key 'head.weight'"),
        (lambda s: s.pop("fc.1.bias"), "fc.1.bias missing"),
        (lambda s: [s.pop("fc.0.weight"), s.pop("fc.0.bias")], "fc.0.weight missing"),
        (lambda s: s.update({"fc.2.weight": torch.zeros(8, 64)}), "one shape"),
        (lambda s: s.clear(), "no fc"),
        (lambda s: s.update({3: torch.zeros(1)}), r"^adapter\.pth: key 3 is a int, expected a parameter name$"),
    ],
)
def test_bad_checkpoints_say_what_is_wrong(clip, mutate, message):
    state = tiny_adapter_state(clip)
    mutate(state)
    with pytest.raises(AdapterError, match=message):
        adapter_state_dict({CHECKPOINT_KEY: state}, "adapter.pth")


def test_adapter_for_another_clip_is_refused(clip):
    adapter = AprilGanAdapter.from_module(tiny_adapter_state(clip), CPU, torch.float32, key="aprilgan_vitl14_336")
    with pytest.raises(AdapterError, match="vision width 1024"):
        adapter.check_clip(1024, 768, "CLIP 'clip_vit_l14_336'")
    with pytest.raises(AdapterError, match="outside"):
        AprilGanAdapter(tiny_adapter_state(clip, 2), CPU, torch.float32, layers=(2, 9)).layers_for(4)


def test_intermediate_tokens_match_open_clip_forward(clip):
    visual = clip.visual
    torch.manual_seed(0)
    x = torch.randn(2, 3, 240, 240)
    captured: dict[int, torch.Tensor] = {}
    hooks = [
        blk.register_forward_hook(lambda m, i, o, n=n: captured.__setitem__(n, o))
        for n, blk in enumerate(visual.transformer.resblocks, start=1)
    ]
    try:
        with torch.no_grad():
            expected = clip.encode_image(x)
            tokens, pooled = intermediate_tokens(visual, x, (2, 4))
    finally:
        for h in hooks:
            h.remove()
    assert torch.allclose(pooled, expected, atol=1e-5)
    assert torch.allclose(tokens[0], captured[2], atol=1e-6)
    assert torch.allclose(tokens[1], captured[4], atol=1e-6)
    assert tokens[0].shape == (2, 1 + 15 * 15, vit_width(visual))


def test_intermediate_tokens_at_a_larger_grid_need_the_resampled_table(clip):
    visual = clip.visual
    x = torch.randn(1, 3, 320, 320)  # 20×20 patches instead of 15×15
    with pytest.raises(ValueError, match="resample"):
        intermediate_tokens(visual, x, (1,))
    pos = resample_positional_embedding(visual.positional_embedding.detach(), (20, 20))
    with torch.no_grad():
        tokens, pooled = intermediate_tokens(visual, x, (1, 4), pos)
    assert tokens[1].shape == (1, 401, vit_width(visual))
    assert pooled.shape == (1, int(clip.text_projection.shape[1]))


def test_positional_table_for_vit_l14_at_518():
    pos = torch.randn(1 + 24 * 24, 8)
    out = resample_positional_embedding(pos, (37, 37))  # 336 px (24²) → 518 px (37²)
    assert out.shape == (1 + 37 * 37, 8) and torch.equal(out[0], pos[0])
