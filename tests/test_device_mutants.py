"""Known-answer tests of :mod:`inspector.models.device`: the bf16 probe, device and precision
resolution (exact messages) and the inference context."""

from __future__ import annotations

import builtins
import re
from pathlib import Path

import pytest
import torch

from inspector.models import device as device_mod
from inspector.models.device import cpu_supports_bf16, inference_autocast, resolve_device, resolve_precision

CPU = torch.device("cpu")


def _cpuinfo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, content: bytes | None) -> list[str]:
    """``/proc/cpuinfo`` replaced by a file with ``content`` (None: unreadable); returns the paths opened."""
    fake = tmp_path / "cpuinfo"
    if content is not None:
        fake.write_bytes(content)
    opened: list[str] = []

    def fake_open(path, *args, **kwargs):
        opened.append(str(path))
        if str(path) != "/proc/cpuinfo":
            return builtins.open(path, *args, **kwargs)
        if content is None:
            raise PermissionError(13, "Permission denied", "/proc/cpuinfo")
        return builtins.open(fake, *args, **kwargs)

    monkeypatch.setattr(device_mod, "open", fake_open, raising=False)
    return opened


# non-ASCII bytes (not valid UTF-8 either) before the flags: the probe reads them without failing
_PREFIX = b"model name\t: Caf\xe9 \xff\xfe CPU\nflags\t\t: fpu sse2 avx2 "


@pytest.mark.parametrize(("flags", "want"), [
    (b"avx512f avx512_bf16 avx512_vnni\n", True),
    (b"avx512f amx_bf16 amx_tile\n", True),
    (b"avx512f avx512_bf16 amx_bf16\n", True),
    (b"avx512f avx512bw amx_tile bf16\n", False),
    (b"\n", False),
])
def test_bf16_probe_reads_the_cpuinfo_flags(monkeypatch, tmp_path, flags: bytes, want: bool) -> None:
    opened = _cpuinfo(monkeypatch, tmp_path, _PREFIX + flags)
    assert cpu_supports_bf16() is want
    assert opened == ["/proc/cpuinfo"]


def test_bf16_probe_is_false_when_cpuinfo_cannot_be_read(monkeypatch, tmp_path) -> None:
    opened = _cpuinfo(monkeypatch, tmp_path, None)
    assert cpu_supports_bf16() is False
    assert opened == ["/proc/cpuinfo"]


def test_bf16_probe_on_this_machine() -> None:
    try:
        flags = Path("/proc/cpuinfo").read_bytes().decode("ascii", errors="ignore")
    except OSError:
        flags = ""
    assert cpu_supports_bf16() is ("avx512_bf16" in flags or "amx_bf16" in flags)


def test_resolve_device(monkeypatch: pytest.MonkeyPatch) -> None:
    given = torch.device("cuda", 3)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device(given) is given  # a torch.device is taken as it is, CUDA or not
    for auto in ("auto", "", None):
        assert resolve_device(auto) == CPU
    assert resolve_device() == CPU
    assert resolve_device("cpu") == CPU
    msg = "device 'cuda:1' requested but CUDA is not available; use --device cpu"
    with pytest.raises(RuntimeError, match=f"^{re.escape(msg)}$"):
        resolve_device("cuda:1")
    with pytest.raises(RuntimeError, match="^" + re.escape("device 'cuda' requested but")):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for auto in ("auto", "", None):
        assert resolve_device(auto) == torch.device("cuda")
    assert resolve_device() == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("cpu") == CPU


def test_resolve_precision_explicit_and_refusals() -> None:
    cuda = torch.device("cuda")
    for dev in (CPU, cuda):
        assert resolve_precision(dev, "fp32") is torch.float32
        assert resolve_precision(dev, "bf16") is torch.bfloat16
    assert resolve_precision(cuda, "fp16") is torch.float16
    with pytest.raises(ValueError, match="^" + re.escape("fp16 is not supported on CPU; use bf16 or fp32") + "$"):
        resolve_precision(CPU, "fp16")
    for bad in ("int8", "FP32", ""):
        msg = f"precision must be auto, fp32, fp16 or bf16, got {bad!r}"
        for dev in (CPU, cuda):
            with pytest.raises(ValueError, match=f"^{re.escape(msg)}$"):
                resolve_precision(dev, bad)


def test_resolve_precision_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    for bf16, want in ((True, torch.bfloat16), (False, torch.float32)):
        monkeypatch.setattr(device_mod, "cpu_supports_bf16", lambda bf16=bf16: bf16)
        assert resolve_precision(CPU) is want
        assert resolve_precision(CPU, "auto") is want
        assert resolve_precision(torch.device("cuda")) is torch.float16
        assert resolve_precision(torch.device("cuda", 1), "auto") is torch.float16


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_inference_autocast_casts_to_the_given_dtype(dtype: torch.dtype) -> None:
    a = torch.ones(2, 2)
    with inference_autocast(CPU, dtype):
        assert torch.is_inference_mode_enabled() and torch.is_autocast_enabled("cpu")
        assert (a @ a).dtype is dtype
    assert not torch.is_inference_mode_enabled() and not torch.is_autocast_enabled("cpu")


def test_inference_autocast_fp32_is_plain_inference_mode() -> None:
    a = torch.ones(2, 2)
    with inference_autocast(CPU, torch.float32):
        assert torch.is_inference_mode_enabled() and not torch.is_autocast_enabled("cpu")
        assert (a @ a).dtype is torch.float32
    assert not torch.is_inference_mode_enabled()
