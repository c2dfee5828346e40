"""Device and precision rules (:mod:`inspector.models.device`), one home for the hub and the wrappers."""

from __future__ import annotations

import pytest
import torch

from inspector.models import device as device_mod
from inspector.models import hub as hub_mod
from inspector.models.device import inference_autocast, resolve_device, resolve_precision


def test_explicit_precisions_and_the_cpu_fp16_refusal() -> None:
    cpu = torch.device("cpu")
    assert resolve_precision(cpu, "fp32") is torch.float32
    assert resolve_precision(cpu, "bf16") is torch.bfloat16
    assert resolve_precision(torch.device("cuda"), "fp16") is torch.float16
    with pytest.raises(ValueError, match="fp16 is not supported on CPU"):
        resolve_precision(cpu, "fp16")
    with pytest.raises(ValueError, match="got 'int8'"):
        resolve_precision(cpu, "int8")


@pytest.mark.parametrize(("bf16", "expected"), [(True, torch.bfloat16), (False, torch.float32)])
def test_auto_precision_on_cpu_follows_the_processor(monkeypatch: pytest.MonkeyPatch, bf16: bool,
                                                     expected: torch.dtype) -> None:
    monkeypatch.setattr(device_mod, "cpu_supports_bf16", lambda: bf16)
    assert resolve_precision(torch.device("cpu")) is expected
    assert resolve_precision(torch.device("cuda")) is torch.float16


def test_auto_device_and_a_missing_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(RuntimeError, match="CUDA is not available; use --device cpu"):
        resolve_device("cuda:0")


def test_inference_autocast_runs_in_inference_mode_and_casts() -> None:
    a = torch.ones(2, 2)
    with inference_autocast(torch.device("cpu"), torch.bfloat16):
        assert torch.is_inference_mode_enabled()
        assert (a @ a).dtype is torch.bfloat16
    with inference_autocast(torch.device("cpu"), torch.float32):
        assert (a @ a).dtype is torch.float32


def test_the_hub_re_exports_the_rules_for_older_imports() -> None:
    assert hub_mod.inference_autocast is inference_autocast
    assert hub_mod.resolve_precision is resolve_precision
