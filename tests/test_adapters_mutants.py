"""Known-answer tests for inspector.models.adapters that the mutation run of bench/mutate.sh showed
missing: exact error messages, the attributes an adapter keeps, the store's trained-on log line, the
adapters' projection against a float64 re-derivation, and intermediate_tokens on a real open_clip ViT
with a sequence-first transformer, one without a ``batch_first`` attribute, and tables / embeddings
in another dtype (all compared with open_clip's own forward, hooked)."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import pytest
import torch

from inspector.models.adapters import (
    CHECKPOINT_KEY,
    AdapterError,
    AprilGanAdapter,
    adapter_state_dict,
    evenly_spaced_layers,
    intermediate_tokens,
)
from tests.test_adapters import write_adapter_store

CPU = torch.device("cpu")


def _state(count: int = 3, width: int = 5, dim: int = 4, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for i in range(count):
        out[f"fc.{i}.weight"] = torch.randn(dim, width, generator=g)
        out[f"fc.{i}.bias"] = torch.randn(dim, generator=g)
    return out


# ------------------------------------------------------------------ adapter_state_dict messages
def test_state_dict_messages_are_exact() -> None:
    with pytest.raises(AdapterError, match=r"^a\.pth: 'trainable_linearlayer' is a list, expected a state dict$"):
        adapter_state_dict({CHECKPOINT_KEY: [1, 2]}, "a.pth")
    with pytest.raises(AdapterError, match=r"^a\.pth: fc\.0\.bias is a list, expected a tensor$"):
        adapter_state_dict({"fc.0.weight": torch.zeros(2, 3), "fc.0.bias": [0.0, 0.0]}, "a.pth")
    with pytest.raises(AdapterError, match=r"^adapter checkpoint: no fc\.<i>\.weight tensors found; "
                                           r"is this an APRIL-GAN adapter checkpoint\?$"):
        adapter_state_dict({})  # the default source
    state = _state(3)
    del state["fc.1.weight"]
    with pytest.raises(AdapterError, match=r"^a\.pth: fc\.1\.weight missing \(found 3 adapters, "
                                           r"they must be fc\.0\.\.fc\.2\)$"):
        adapter_state_dict(state, "a.pth")
    state = _state(2)
    state["fc.1.bias"] = torch.zeros(5)
    with pytest.raises(AdapterError, match=r"^a\.pth: fc\.1\.bias has shape \(5,\), expected \(4,\)$"):
        adapter_state_dict(state, "a.pth")
    flat = {"fc.0.weight": torch.zeros(4), "fc.0.bias": torch.zeros(4)}  # 1-D weight
    with pytest.raises(AdapterError, match=r"^a\.pth: adapter weights must all be 2-D of one shape, got \[\(4,\)\]$"):
        adapter_state_dict(flat, "a.pth")
    # unwrapped and module.-stripped, the same tensors
    state = _state(2)
    out = adapter_state_dict({CHECKPOINT_KEY: {f"module.{k}": v for k, v in state.items()}})
    assert list(out) == list(state) and all(out[k] is state[k] for k in state)


def test_evenly_spaced_layers_by_hand() -> None:
    assert evenly_spaced_layers(5, 1) == (5,)  # one adapter: the last block
    assert evenly_spaced_layers(1, 1) == (1,)
    assert evenly_spaced_layers(7, 3) == (2, 4, 7)  # 7//3, 14//3, 21//3
    with pytest.raises(AdapterError, match=r"^0 adapters do not fit a ViT of 3 blocks$"):
        evenly_spaced_layers(3, 0)


# ------------------------------------------------------------------ the adapter object
def test_adapter_keeps_device_dtype_key_and_says_what_is_wrong() -> None:
    state = _state(3)
    a = AprilGanAdapter(state, CPU, torch.float16)
    assert (a.device, a.dtype, a.key, a.trained_on, a.layers, a.clip_key) == (CPU, torch.float16, "*", None, None, None)
    assert repr(a) == "AprilGanAdapter(key='*', 3×Linear(5→4), layers=None)"
    b = AprilGanAdapter.from_module(state, CPU, torch.bfloat16)
    assert (b.device, b.dtype, b.key) == (CPU, torch.bfloat16, "*")
    c = AprilGanAdapter.from_module(state, CPU, torch.float32, key="k")
    assert c.key == "k"
    with pytest.raises(AdapterError, match=r"^adapter 'k': no fc\.<i>\.weight tensors found; "):
        AprilGanAdapter({}, CPU, torch.float32, key="k")
    with pytest.raises(AdapterError, match=r"^adapter 'k': 3 adapters but 2 layers \(1, 2\)$"):
        AprilGanAdapter(state, CPU, torch.float32, key="k", layers=[1, 2])
    with pytest.raises(AdapterError, match=r"^adapter 'k' expects 3 token sets, got 2$"):
        c.project([torch.zeros(1, 2, 5)] * 2)
    with pytest.raises(AdapterError, match=r"^adapter 'k' maps 5→4 but the CLIP has vision width 5 and embedding "
                                           r"size 8; use the CLIP it was trained with \(ViT-L-14-336 for the "
                                           r"published APRIL-GAN adapters: profile models\.clip\)$"):
        c.check_clip(5, 8)  # the default clip name; in fits, out does not
    with pytest.raises(AdapterError, match=r"^adapter 'k': layers \(1, 9\) outside the CLIP's 1\.\.8 blocks$"):
        AprilGanAdapter(_state(2), CPU, torch.float32, key="k", layers=(1, 9)).layers_for(8)
    assert AprilGanAdapter(_state(2), CPU, torch.float32, layers=(1, 8)).layers_for(8) == (1, 8)


def test_project_is_each_linear_on_its_own_token_set() -> None:
    state = _state(3)
    a = AprilGanAdapter(state, CPU, torch.float32)
    g = torch.Generator().manual_seed(5)
    tokens = [torch.randn(2, 6, 5, generator=g) for _ in range(3)]
    with torch.no_grad():
        out = a.project(tokens)
    for i in range(3):  # float64 by hand: t·Wᵀ + b, adapter i on set i
        w, bias = state[f"fc.{i}.weight"].double(), state[f"fc.{i}.bias"].double()
        expected = torch.einsum("bld,od->blo", tokens[i].double(), w) + bias
        assert torch.allclose(out[i].double(), expected, atol=1e-5)


def test_from_store_passes_device_dtype_key_and_logs_the_training_set(tmp_path: Path, caplog) -> None:
    store, _ = write_adapter_store(tmp_path, "ad", {"v.pth": {CHECKPOINT_KEY: _state(2)}, "bad.pth": {CHECKPOINT_KEY: {
        "fc.0.weight": torch.zeros(4), "fc.0.bias": torch.zeros(4)}}}, {"trained_on": {"v.pth": "visa"}})
    with caplog.at_level(logging.INFO, logger="inspector.models.adapters"):
        a = AprilGanAdapter.from_store(store, "ad:v.pth", CPU, torch.float16)
    assert (a.device, a.dtype, a.key, a.trained_on) == (CPU, torch.float16, "ad:v.pth", "visa")
    messages = [r.getMessage() for r in caplog.records if r.name == "inspector.models.adapters"]
    assert messages == ["adapter ad/v.pth was trained on visa: never evaluate it there"]
    with pytest.raises(AdapterError, match=r"^model store entry 'ad' file 'bad\.pth': adapter weights must all be "
                                           r"2-D of one shape, got \[\(4,\)\]$"):
        AprilGanAdapter.from_store(store, "ad:bad.pth", CPU, torch.float32)


# ------------------------------------------------------------------ intermediate_tokens
def _hooked(model, x):
    """open_clip's own forward, the block outputs captured (batch-first) by hooks."""
    captured = {}
    hooks = [b.register_forward_hook(lambda m, i, o, n=n: captured.__setitem__(n, o))
             for n, b in enumerate(model.visual.transformer.resblocks, start=1)]
    try:
        with torch.no_grad():
            pooled = model.visual(x)
    finally:
        for h in hooks:
            h.remove()
    return captured, pooled


def test_sequence_first_transformer_and_one_without_the_attribute(clip) -> None:
    from open_clip.transformer import Transformer

    torch.manual_seed(2)
    x = torch.randn(2, 3, 240, 240)
    captured, pooled = _hooked(clip, x)
    # the same weights in a sequence-first (L×B×D) transformer, as older open_clip builds
    seq = copy.deepcopy(clip)
    old = seq.visual.transformer
    new = Transformer(old.width, len(old.resblocks), old.resblocks[0].attn.num_heads,
                      mlp_ratio=old.resblocks[0].mlp.c_fc.out_features / old.width, batch_first=False)
    new.load_state_dict(old.state_dict())
    new.eval()
    seq.visual.transformer = new
    with torch.no_grad():
        tokens, p = intermediate_tokens(seq.visual, x, (3, 1))
    assert torch.allclose(p, pooled, atol=1e-5)
    assert tokens[0].shape == (2, 226, 64)
    assert torch.allclose(tokens[0], captured[3], atol=1e-5) and torch.allclose(tokens[1], captured[1], atol=1e-5)
    # a batch-first transformer without the attribute is read as batch-first
    bare = copy.deepcopy(clip)
    del bare.visual.transformer.batch_first
    with torch.no_grad():
        tokens, p = intermediate_tokens(bare.visual, x, (4,))
    assert torch.allclose(p, pooled, atol=1e-5) and torch.allclose(tokens[0], captured[4], atol=1e-5)


def test_tables_in_another_dtype_are_cast_and_the_message_is_exact(clip) -> None:
    torch.manual_seed(3)
    x = torch.randn(1, 3, 240, 240)
    model = copy.deepcopy(clip)
    pos = torch.randn_like(model.visual.positional_embedding) * 0.1
    with torch.no_grad():
        model.visual.positional_embedding.copy_(pos)
    captured, pooled = _hooked(model, x)  # open_clip with that table
    with torch.no_grad():
        tokens, p = intermediate_tokens(clip.visual, x, (2,), pos.double())  # float64 table: cast to float32
    assert tokens[0].dtype == torch.float32
    assert torch.allclose(p, pooled, atol=1e-5) and torch.allclose(tokens[0], captured[2], atol=1e-5)
    # a float64 class embedding is cast to the tokens' dtype too
    cls64 = copy.deepcopy(clip)
    cls64.visual.class_embedding = torch.nn.Parameter(clip.visual.class_embedding.detach().double())
    ref_captured, ref_pooled = _hooked(clip, x)
    with torch.no_grad():
        tokens, p = intermediate_tokens(cls64.visual, x, (1,))
    assert torch.allclose(p, ref_pooled, atol=1e-5) and torch.allclose(tokens[0], ref_captured[1], atol=1e-5)
    with pytest.raises(ValueError, match=r"^positional table has 226 rows but the input gives 401 tokens; "
                                         r"resample it to the patch grid$"):
        intermediate_tokens(clip.visual, torch.randn(1, 3, 320, 320), (1,))
