"""Benchmark of the CLIP→SAM cascade at real model sizes (random weights) — not a test.

Builds SAM ViT-B (``sam_model_registry["vit_b"]()``) and open_clip ``ViT-B-16-plus-240``
(``pretrained=None``): the real shapes and FLOPs, random numbers. Measures in one process:

* reference: one SAM image embedding and one plain CLIP image forward (CLS, 240 px), in wall and
  process-CPU seconds (CPU seconds are steadier when other processes share the cores);
* the whole pipeline (``detect``: CLIP map + SAM embed + PPG + 3 decoder passes + fusion) per
  stage, median over ``--repeats`` images;
* PPG + CPS alone on the cached embedding for hand-made maps with 1, 3 and 8 defects (the map of
  a random CLIP is noise and gives up to ``max_regions`` components, far more than a real one).

Target (brief H5): PPG + the three decoder passes add ≤ 5 % to the encoder time.

    .venv/bin/python bench/clipsam.py [--provider fade] [--scales 240,448] [--size 1024x768] [--repeats 2]

The FADE map at 896 px costs ~60 s on CPU: the default runs the fast preset (240 + 448). The text
prompts are encoded once in ``prepare`` (cached in a temporary folder; not part of the figures).
Numbers depend on the machine and its load, both printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _image(h: int, w: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = 128 + 40 * np.sin(xx / 11.0 + seed)[..., None] + rng.normal(0, 6, (h, w, 1))
    img = np.repeat(base, 3, axis=2)
    img[h // 3 : h // 3 + 40, w // 2 : w // 2 + 70] = [210, 70, 40]  # one "defect"
    return img.clip(0, 255).astype(np.uint8)


def _blobs(h: int, w: int, n: int):
    import numpy as np

    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    amap = np.zeros((h, w), np.float32)
    for i in range(n):
        cy, cx = h * (0.2 + 0.6 * ((i * 0.37) % 1)), w * (0.15 + 0.7 * ((i * 0.61) % 1))
        amap = np.maximum(amap, (1 - 0.03 * i) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 18.0**2)))
    return amap


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--provider", default="fade", choices=["fade", "aprilgan"])
    ap.add_argument("--scales", default="240,448", help="FADE image scales")
    ap.add_argument("--size", default="1024x768", help="image WxH")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--regions", default="1,3,8", help="defect counts for the cascade-only figures")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    load_before = os.getloadavg()

    import numpy as np
    import open_clip
    import torch
    from segment_anything import sam_model_registry

    from inspector.cache import ArrayCache
    from inspector.detect.clipsam import ClipSamDetector
    from inspector.detect.clipsam.cascade import run_cascade
    from inspector.detect.clipsam.fusion import sam_evidence
    from inspector.detect.clipsam.points import prompt_sets
    from inspector.detect.clip_maps import create_map_provider
    from inspector.models.hub import ModelHub
    from inspector.profile import ProductProfile

    w, h = (int(v) for v in args.size.lower().split("x"))
    torch.manual_seed(0)
    t0 = time.perf_counter()
    sam_module = sam_model_registry["vit_b"]()
    clip_module = open_clip.create_model("ViT-B-16-plus-240", pretrained=None)
    build_s = time.perf_counter() - t0

    hub = ModelHub(device="cpu" if not torch.cuda.is_available() else "auto", precision=args.precision)
    hub.provide("sam", sam_module)
    hub.provide("clip", clip_module)
    if args.provider == "aprilgan":  # a random adapter sized for this CLIP (4 blocks of 12)
        width, dim = clip_module.visual.transformer.width, clip_module.text_projection.shape[1]
        hub.provide("adapter", {f"fc.{i}.{p}": t for i in range(4)
                                for p, t in torch.nn.Linear(width, dim).state_dict().items()})
    profile = ProductProfile(
        name="bench", pipeline="clipsam", object="part",
        image_scales=[int(s) for s in args.scales.split(",")],
        decision={"image_threshold": 0.0},  # gate always open: measure the full path
        clipsam={"map_provider": args.provider},
    )
    with tempfile.TemporaryDirectory() as cache_dir:
        provider = create_map_provider(args.provider)
        provider._cache = ArrayCache(cache_dir)  # type: ignore[attr-defined]
        det = ClipSamDetector(provider)
        t0 = time.perf_counter()
        det.prepare(profile, hub)
        prepare_s = time.perf_counter() - t0

        sam, clip = det.sam, hub.get("clip", profile.models.clip)
        img = _image(h, w)
        clip.encode_image(clip.preprocess(img, 240))  # warm-up
        (ref_embed, ref_embed_cpu), emb = _timed(lambda: sam.embed(img))
        ref_clip, ref_clip_cpu = min(_timed(lambda: clip.encode_image(clip.preprocess(img, 240)))[0]
                                     for _ in range(max(args.repeats, 2)))

        runs = []
        for i in range(args.repeats):
            (wall, cpu), out = _timed(lambda i=i: det.detect(_image(h, w, seed=i)))
            runs.append({"total": wall, "total_cpu": cpu, **out.timings, "sets": len(out.extras["prompts"])})
        stages = {k: statistics.median(r[k] for r in runs) for k in runs[0] if k != "sets"}
        sets_seen = [r["sets"] for r in runs]

        p = profile.clipsam
        cascade: dict[int, dict[str, float]] = {}
        for n in (int(v) for v in args.regions.split(",")):
            amap = _blobs(h, w, n)
            best: dict[str, float] = {}
            for _ in range(args.repeats):
                (t_ppg, c_ppg), sets = _timed(lambda: prompt_sets(amap, sam, emb, p))
                (t_cps, c_cps), res = _timed(lambda: run_cascade(sam, emb, sets, p, amap))
                (t_ev, c_ev), _ = _timed(lambda: sam_evidence(amap, res.logits, sets))
                cur = {"ppg": t_ppg, "cps": t_cps, "evidence": t_ev, "cpu": c_ppg + c_cps + c_ev, "sets": len(sets)}
                if not best or cur["ppg"] + cur["cps"] < best["ppg"] + best["cps"]:
                    best = cur
            cascade[n] = best

    encoders = stages["clip_map"] + stages["sam_embed"]
    added = stages["ppg"] + stages["cps"] + stages.get("evidence", 0.0)
    result = {
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                    "device": str(hub.device), "dtype": str(hub.dtype), "load_before": load_before,
                    "load_after": os.getloadavg()},
        "image": [h, w], "provider": args.provider, "scales": profile.image_scales,
        "build_s": build_s, "prepare_s": prepare_s,
        "reference": {"sam_embed": ref_embed, "clip_forward_240": ref_clip,
                      "sam_embed_cpu": ref_embed_cpu, "clip_forward_240_cpu": ref_clip_cpu},
        "pipeline_median": stages, "pipeline_sets": sets_seen,
        "pipeline_added_fraction_of_encoders": added / encoders,
        "pipeline_added_fraction_of_reference": added / (ref_embed + ref_clip),
        "cascade_only": {n: {**v,
                             "fraction_of_reference": (v["ppg"] + v["cps"] + v["evidence"]) / (ref_embed + ref_clip),
                             "fraction_of_encoders": (v["ppg"] + v["cps"] + v["evidence"]) / encoders,
                             "cpu_fraction_of_reference_cpu": v["cpu"] / (ref_embed_cpu + ref_clip_cpu)}
                         for n, v in cascade.items()},
    }
    print(json.dumps(result, indent=1, default=float))
    print(f"\nSAM embed {ref_embed:.2f}s + CLIP forward {ref_clip:.2f}s; pipeline {stages['total']:.2f}s "
          f"(clip_map {stages['clip_map']:.2f}, sam_embed {stages['sam_embed']:.2f}, ppg {stages['ppg']:.3f}, "
          f"cps {stages['cps']:.3f}; {sets_seen} prompt sets)")
    print(f"PPG+CPS added: {100 * added / encoders:.1f}% of the pipeline's encoder time")
    print(f"CPU seconds: SAM embed {ref_embed_cpu:.1f}, CLIP forward {ref_clip_cpu:.2f}")
    for n, v in cascade.items():
        frac = (v["ppg"] + v["cps"] + v["evidence"]) / encoders
        cfrac = v["cpu"] / (ref_embed_cpu + ref_clip_cpu)
        print(f"  {n} defect(s) ({v['sets']} sets): ppg {v['ppg']:.3f}s cps {v['cps']:.3f}s evidence "
              f"{v['evidence']:.3f}s = {100 * frac:.1f}% of the pipeline's encoder wall time; "
              f"{100 * cfrac:.1f}% of SAM embed + CLIP forward in CPU seconds")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=float), encoding="utf-8")


def _timed(fn):
    """((wall seconds, process CPU seconds), result): CPU time is the steadier figure on a shared machine."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return (time.perf_counter() - t0, time.process_time() - c0), out


if __name__ == "__main__":
    main()
