"""Reduced precision vs fp32 for the networks the pipelines run (not a test).

For each model — the tiny test instances, and with ``--real`` the real-size architectures with
random weights (SAM ViT-B image encoder at 1024², the CLIP ViT-B-16-plus-240 image tower at 240²,
timm WideResNet50-2 layers 1-3) — run one input in fp32 and under the hub's autocast in bf16 on
CPU (fp16 too with ``--device cuda``), and report:

* max |Δ| and max |Δ| / max |fp32| over every output element,
* mean cosine similarity of output vectors (channels for feature maps, rows for tokens),
* median seconds per forward (after one warm-up) for each precision,

plus whether this CPU has native bf16 (``inspector.models.hub.cpu_supports_bf16``: AVX512-BF16 /
AMX); without it bf16 autocast is emulated and usually slower than fp32.

Random weights give activations of a different scale than trained ones; read the relative
deviation and cosine, not the absolute error.

Usage::

    .venv/bin/python bench/precision.py                      # tiny models only (seconds)
    .venv/bin/python bench/precision.py --real --only sam    # SAM ViT-B at 1024 (minutes on 2 cores)
    .venv/bin/python bench/precision.py --real --json out.json --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inspector.models.hub import cpu_supports_bf16, inference_autocast  # noqa: E402


# ------------------------------------------------------------------------------ models
def _tiny_sam() -> tuple[torch.nn.Module, tuple[int, ...]]:
    from tests.support.tiny_models import tiny_sam

    return tiny_sam().image_encoder, (1, 3, 1024, 1024)


def _tiny_clip() -> tuple[torch.nn.Module, tuple[int, ...]]:
    from tests.support.tiny_models import tiny_clip

    return tiny_clip().visual, (1, 3, 240, 240)


def _tiny_backbone() -> tuple[torch.nn.Module, tuple[int, ...]]:
    from tests.support.tiny_models import tiny_backbone

    return tiny_backbone(), (1, 3, 256, 256)


def _real_sam() -> tuple[torch.nn.Module, tuple[int, ...]]:
    from segment_anything import sam_model_registry

    torch.manual_seed(0)
    return sam_model_registry["vit_b"](checkpoint=None).image_encoder.eval(), (1, 3, 1024, 1024)


def _real_clip() -> tuple[torch.nn.Module, tuple[int, ...]]:
    import open_clip

    torch.manual_seed(0)
    return open_clip.create_model("ViT-B-16-plus-240", pretrained=None).visual.eval(), (1, 3, 240, 240)


def _real_backbone() -> tuple[torch.nn.Module, tuple[int, ...]]:
    import timm

    torch.manual_seed(0)
    model = timm.create_model("wide_resnet50_2", pretrained=False, features_only=True, out_indices=(1, 2, 3))
    return model.eval(), (1, 3, 256, 256)


MODELS: dict[str, tuple[str, Callable[[], tuple[torch.nn.Module, tuple[int, ...]]]]] = {
    "tiny_sam": ("tiny", _tiny_sam),
    "tiny_clip": ("tiny", _tiny_clip),
    "tiny_backbone": ("tiny", _tiny_backbone),
    "sam_vit_b": ("real", _real_sam),
    "clip_vit_b16_plus_240": ("real", _real_clip),
    "wide_resnet50_2": ("real", _real_backbone),
}


# ------------------------------------------------------------------------------ measuring
def _flatten(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _flatten(o)]
    if isinstance(out, dict):
        return [t for o in out.values() for t in _flatten(o)]
    return []


def _run(model: torch.nn.Module, x: torch.Tensor, dtype: torch.dtype, repeats: int) -> tuple[list[torch.Tensor], float]:
    times = []
    out: list[torch.Tensor] = []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        with inference_autocast(x.device, dtype):
            out = [t.float() for t in _flatten(model(x))]
        if x.device.type == "cuda":
            torch.cuda.synchronize()
        if i:  # the first call is a warm-up
            times.append(time.perf_counter() - t0)
    return out, statistics.median(times)


def _compare(ref: list[torch.Tensor], got: list[torch.Tensor]) -> dict[str, float]:
    max_abs = max(float((r - g).abs().max()) for r, g in zip(ref, got))
    scale = max(float(r.abs().max()) for r in ref)
    cos = []
    for r, g in zip(ref, got):
        dim = 1 if r.ndim == 4 else -1  # channels of NCHW maps, last dim of token tensors
        cos.append(float(torch.nn.functional.cosine_similarity(r, g, dim=dim, eps=1e-12).mean()))
    return {"max_abs": max_abs, "rel_max_abs": max_abs / max(scale, 1e-12), "mean_cosine": min(cos)}


def bench(name: str, device: torch.device, repeats: int) -> dict[str, Any]:
    size, factory = MODELS[name]
    t0 = time.perf_counter()
    model, shape = factory()
    model = model.to(device).eval()
    build = time.perf_counter() - t0
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0)).to(device)
    x = (x - 0.45) / 0.27  # roughly what the normalised inputs look like
    ref, t32 = _run(model, x, torch.float32, repeats)
    row: dict[str, Any] = {"model": name, "size": size, "input": list(shape), "build_s": round(build, 2),
                           "fp32_s": round(t32, 4)}
    low = [torch.bfloat16] + ([torch.float16] if device.type == "cuda" else [])
    for dtype in low:
        got, t = _run(model, x, dtype, repeats)
        tag = str(dtype).replace("torch.", "").replace("bfloat16", "bf16").replace("float16", "fp16")
        row[f"{tag}_s"] = round(t, 4)
        row[f"{tag}_speedup"] = round(t32 / t, 2)
        row.update({f"{tag}_{k}": v for k, v in _compare(ref, got).items()})
    del model
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--real", action="store_true", help="also the real-size architectures (slow on CPU)")
    ap.add_argument("--only", default="", help="comma-separated substrings of model names to run")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=2, help="timed forwards per precision (after a warm-up)")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    names = [n for n, (size, _) in MODELS.items() if size == "tiny" or args.real]
    if args.only:
        names = [n for n in names if any(s in n for s in args.only.split(","))]
    info = {
        "cpu": platform.processor() or platform.machine(),
        "cpu_supports_bf16": cpu_supports_bf16(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "loadavg": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
    }
    print(json.dumps(info))
    rows = []
    for name in names:
        row = bench(name, device, args.repeats)
        rows.append(row)
        print(json.dumps(row), flush=True)
    header = f"{'model':24} {'fp32 s':>8} {'bf16 s':>8} {'speedup':>7} {'max|Δ|':>10} {'rel':>9} {'cos':>8}"
    print("\n" + header)
    for r in rows:
        print(f"{r['model']:24} {r['fp32_s']:8.3f} {r['bf16_s']:8.3f} {r['bf16_speedup']:7.2f} "
              f"{r['bf16_max_abs']:10.3g} {r['bf16_rel_max_abs']:9.2e} {r['bf16_mean_cosine']:8.5f}")
        if "fp16_s" in r:
            print(f"{'  (fp16)':24} {'':8} {r['fp16_s']:8.3f} {r['fp16_speedup']:7.2f} "
                  f"{r['fp16_max_abs']:10.3g} {r['fp16_rel_max_abs']:9.2e} {r['fp16_mean_cosine']:8.5f}")
    if args.json:
        args.json.write_text(json.dumps({"info": info, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
