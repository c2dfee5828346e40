"""Device and precision rules for every network: which device, which compute dtype, and the
inference context (inference mode plus autocast) the wrappers run their forwards in.

``precision="auto"``: CUDA → fp16; CPU → bf16 autocast when the processor supports bf16 natively
(AVX512-BF16 / AMX), else fp32. This module imports nothing of Inspector, so the model wrappers
and the hub can both use it without importing each other.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 matrix instructions (AVX512-BF16 or AMX)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as fh:
            flags = fh.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if isinstance(device, torch.device):
        return device
    if device in ("auto", "", None):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available; use --device cpu")
    return dev


def resolve_precision(device: torch.device, precision: str = "auto") -> torch.dtype:
    """Compute dtype for autocast: fp16 on CUDA, bf16 on CPUs that support it, else fp32."""
    table = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if precision != "auto":
        if precision not in table:
            raise ValueError(f"precision must be auto, fp32, fp16 or bf16, got {precision!r}")
        if device.type == "cpu" and precision == "fp16":
            raise ValueError("fp16 is not supported on CPU; use bf16 or fp32")
        return table[precision]
    if device.type == "cuda":
        return torch.float16
    return torch.bfloat16 if cpu_supports_bf16() else torch.float32


@contextlib.contextmanager
def inference_autocast(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """Inference mode plus autocast to ``dtype`` on ``device`` (plain inference mode for fp32)."""
    with torch.inference_mode():
        if dtype == torch.float32:
            yield
        else:
            with torch.autocast(device_type=device.type, dtype=dtype):
                yield
