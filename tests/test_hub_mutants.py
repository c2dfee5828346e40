"""Known-answer tests of :class:`inspector.models.hub.ModelHub` (caching, injection, store access,
release, autocast, describe) through a recording stand-in wrapper class, so no network is built."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
import torch

from inspector.models import device as device_mod
from inspector.models import hub as hub_mod
from inspector.models.hub import ANY_KEY, ModelHub, wrapper_class

CPU = torch.device("cpu")


class _Wrapper:
    """Records how the hub built it."""

    calls: list[tuple] = []

    def __init__(self, how: str, source: Any, key: str, device: torch.device, dtype: torch.dtype) -> None:
        self.how, self.source, self.key, self.device, self.dtype = how, source, key, device, dtype

    @classmethod
    def from_module(cls, module: Any, device: torch.device, dtype: torch.dtype, key: str) -> _Wrapper:
        cls.calls.append(("module", module, key, device, dtype))
        return cls("module", module, key, device, dtype)

    @classmethod
    def from_store(cls, store: Any, key: str, device: torch.device, dtype: torch.dtype) -> _Wrapper:
        cls.calls.append(("store", store, key, device, dtype))
        return cls("store", store, key, device, dtype)


class _Store:
    def __repr__(self) -> str:
        return "<store>"


@pytest.fixture
def fake_wrappers(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Every kind resolves to ``_Wrapper``; returns its call log."""
    target = f"{__name__}:_Wrapper"
    monkeypatch.setattr(hub_mod, "WRAPPERS", {k: target for k in hub_mod.WRAPPERS})
    _Wrapper.calls = []
    return _Wrapper.calls


def _hub(**kw: Any) -> ModelHub:
    return ModelHub(kw.pop("store", _Store()), device="cpu", precision="fp32", **kw)


def test_wrapper_class_resolves_each_kind_and_names_the_known_ones() -> None:
    assert wrapper_class("adapter").__name__ == "AprilGanAdapter"
    assert wrapper_class("adapter").__module__ == "inspector.models.adapters"
    msg = "unknown model kind 'clap'; choose one of adapter, backbone, clip, grounding, sam"
    with pytest.raises(ValueError, match=f"^{re.escape(msg)}$"):
        wrapper_class("clap")
    with pytest.raises(ValueError, match=f"^{re.escape(msg)}$"):
        ModelHub(device="cpu", precision="fp32").provide("clap", object())


def test_constructor_resolves_device_and_precision(monkeypatch: pytest.MonkeyPatch) -> None:
    store = _Store()
    hub = ModelHub(store, device="cpu", precision="bf16")
    assert hub.store is store and hub.device == CPU and hub.dtype is torch.bfloat16
    assert hub._provided == {} and hub._loaded == {} and hub.load_counts == {}
    assert hub.loaded() == []
    # the defaults are "auto" for both: CPU without CUDA, and the processor's bf16 support decides
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for bf16, want in ((True, torch.bfloat16), (False, torch.float32)):
        monkeypatch.setattr(device_mod, "cpu_supports_bf16", lambda bf16=bf16: bf16)
        hub = ModelHub()
        assert hub.store is None and hub.device == CPU and hub.dtype is want
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    hub = ModelHub()
    assert hub.device == torch.device("cuda") and hub.dtype is torch.float16


def test_repr_lists_device_dtype_and_loaded_keys(fake_wrappers: list) -> None:
    hub = _hub()
    assert repr(hub) == "ModelHub(device=cpu, dtype=torch.float32, loaded=[])"
    hub.provide("sam", "m")
    hub.get("sam", "b")
    hub.get("clip", "a")
    assert repr(hub) == "ModelHub(device=cpu, dtype=torch.float32, loaded=[('clip', 'a'), ('sam', 'b')])"


def test_get_builds_from_the_store_once_with_device_dtype_and_logs(
    fake_wrappers: list, caplog: pytest.LogCaptureFixture
) -> None:
    store = _Store()
    hub = ModelHub(store, device="cpu", precision="bf16")
    with caplog.at_level(logging.INFO, logger="inspector.models.hub"):
        w = hub.get("clip", "vit")
    assert fake_wrappers == [("store", store, "vit", CPU, torch.bfloat16)]
    assert (w.how, w.source, w.key, w.device, w.dtype) == ("store", store, "vit", CPU, torch.bfloat16)
    assert [r.getMessage() for r in caplog.records if r.name == "inspector.models.hub"] == [
        "loading clip model 'vit' on cpu (torch.bfloat16)"]
    assert [r.levelno for r in caplog.records if r.name == "inspector.models.hub"] == [logging.INFO]
    assert hub.get("clip", "vit") is w and len(fake_wrappers) == 1
    assert hub.load_counts == {("clip", "vit"): 1}
    assert hub._loaded == {("clip", "vit"): w}
    hub.get("clip", "other")
    assert hub.load_counts == {("clip", "vit"): 1, ("clip", "other"): 1}
    assert hub.loaded() == [("clip", "other"), ("clip", "vit")]


def test_provided_modules_per_key_and_for_any_key(fake_wrappers: list, caplog: pytest.LogCaptureFixture) -> None:
    store = _Store()
    hub = ModelHub(store, device="cpu", precision="fp32")
    hub.provide("sam", "any-module")
    hub.provide("sam", "key-module", key="big")
    assert hub._provided == {("sam", ANY_KEY): "any-module", ("sam", "big"): "key-module"}
    with caplog.at_level(logging.INFO, logger="inspector.models.hub"):
        big, small = hub.get("sam", "big"), hub.get("sam", "small")
    assert fake_wrappers == [("module", "key-module", "big", CPU, torch.float32),
                             ("module", "any-module", "small", CPU, torch.float32)]
    assert (big.how, big.source, big.key) == ("module", "key-module", "big")
    assert not [r for r in caplog.records if r.name == "inspector.models.hub"]  # nothing loaded from disk
    # a key-only injection does not cover the other keys: they come from the store
    hub.provide("clip", "clip-module", key="b16")
    assert hub.get("clip", "l14").how == "store"
    assert hub.get("clip", "b16").source == "clip-module"
    assert hub.load_counts == {("sam", "big"): 1, ("sam", "small"): 1, ("clip", "l14"): 1, ("clip", "b16"): 1}


def test_is_provided(fake_wrappers: list) -> None:
    hub = _hub()
    assert not hub.is_provided("clip", "a")
    hub.provide("clip", "m", key="a")
    assert hub.is_provided("clip", "a") and not hub.is_provided("clip", "b") and not hub.is_provided("sam", "a")
    hub.provide("sam", "m")
    assert hub.is_provided("sam", "a") and hub.is_provided("sam", "zzz") and not hub.is_provided("clip", "b")


def test_provide_drops_only_the_matching_loaded_models(fake_wrappers: list) -> None:
    hub = _hub()
    for kind, key in [("clip", "a"), ("clip", "b"), ("sam", "a")]:
        hub.get(kind, key)
    hub.provide("clip", "new-a", key="a")
    assert hub.loaded() == [("clip", "b"), ("sam", "a")]
    assert hub.get("clip", "a").source == "new-a" and hub.get("clip", "b").how == "store"
    assert hub.load_counts[("clip", "a")] == 2 and hub.load_counts[("clip", "b")] == 1
    hub.provide("clip", "every")
    assert hub.loaded() == [("sam", "a")]
    assert hub.get("clip", "b").source == "every"
    assert hub.get("clip", "a").source == "new-a"  # the per-key injection still wins


def test_model_store_is_the_given_one_or_opened_from_settings_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from inspector.models import store as store_mod

    given = _Store()
    assert _hub(store=given).model_store() is given
    opened: list[object] = []

    def from_settings() -> object:
        opened.append(object())
        return opened[-1]

    monkeypatch.setattr(store_mod.ModelStore, "from_settings", staticmethod(from_settings))
    hub = ModelHub(device="cpu", precision="fp32")
    first = hub.model_store()
    assert first is opened[0] and hub.store is first
    assert hub.model_store() is first and len(opened) == 1


def test_get_without_a_store_opens_the_settings_store(fake_wrappers: list, monkeypatch: pytest.MonkeyPatch) -> None:
    from inspector.models import store as store_mod

    store = _Store()
    monkeypatch.setattr(store_mod.ModelStore, "from_settings", staticmethod(lambda: store))
    hub = ModelHub(device="cpu", precision="fp32")
    assert hub.get("backbone", "r18").source is store


def test_release_drops_everything_and_empties_the_cuda_cache_only_on_cuda(
    fake_wrappers: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    emptied: list[int] = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(1))
    hub = _hub()
    hub.get("clip", "a")
    hub.get("sam", "b")
    hub.release()
    assert hub.loaded() == [] and emptied == []
    assert hub.get("clip", "a") is not None and hub.load_counts[("clip", "a")] == 2
    cuda = ModelHub(_Store(), device=torch.device("cuda"), precision="fp16")
    cuda._loaded[("clip", "a")] = object()
    cuda.release()
    assert cuda.loaded() == [] and emptied == [1]


def test_autocast_uses_the_hubs_device_and_dtype() -> None:
    a = torch.ones(2, 2)
    with ModelHub(device="cpu", precision="bf16").autocast():
        assert torch.is_inference_mode_enabled()
        assert (a @ a).dtype is torch.bfloat16
    with ModelHub(device="cpu", precision="fp32").autocast():
        assert torch.is_inference_mode_enabled()
        assert (a @ a).dtype is torch.float32
    assert not torch.is_inference_mode_enabled()


def test_describe(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ModelHub(device="cpu", precision="fp32").describe() == "CPU (float32)"
    assert ModelHub(device="cpu", precision="bf16").describe() == "CPU (bfloat16)"
    asked: list[torch.device] = []
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d: asked.append(d) or "NVIDIA Test 40")
    assert ModelHub(device=torch.device("cuda", 1), precision="auto").describe() == "NVIDIA Test 40 (float16)"
    assert asked == [torch.device("cuda", 1)]
