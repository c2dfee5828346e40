"""Benchmark of the FADE pipeline at the real model size (random weights).

Builds open_clip ``ViT-B-16-plus-240`` with ``pretrained=None`` (same shapes and FLOPs as the
``laion400m_e31`` checkpoint, random numbers), injects it into the hub and measures, per
configuration, in a fresh subprocess (so peak memory is that configuration's own):

* ``prepare`` cold (empty cache: prompt ensembles encoded, reference banks built) and cached
  (a second detector on the same profile: nothing re-encoded);
* seconds per image (``analyse`` + ``finish``, median) and per stage (``gem_<scale>`` = one GEM
  forward at that scale, ``language``, ``vision``, ``classification``, ``fusion``, ``regions``);
* peak resident memory (``resource.getrusage`` max RSS) after model build, after prepare and
  after the images.

Usage::

    .venv/bin/python bench/fade.py --scales 240,448 --shots 0 1 [--images 3] [--precision fp32]
    .venv/bin/python bench/fade.py --scales 240,448,896 --shots 0 --images 1

Configurations share one cache folder in the order given: the first is the cold one for the text
means; each later one reuses them (its "cold" figure is then the reference-bank cost only).
Nothing here is a test; numbers depend on the machine, report the CPU and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _image(seed: int, size: int = 512):
    import numpy as np

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    base = 128 + 50 * np.sin(xx / 9.0 + seed)[..., None] + rng.normal(0, 8, (size, size, 1))
    img = np.repeat(base, 3, axis=2)
    img[200:260, 300:380] = [220, 60, 40]
    return np.clip(img, 0, 255).astype(np.uint8)


def worker(args: argparse.Namespace) -> dict:
    import torch
    import open_clip

    from inspector.cache import ArrayCache
    from inspector.detect.fade import FadeDetector
    from inspector.imaging import write_png
    from inspector.models.hub import ModelHub
    from inspector.profile import ProductProfile, save_profile

    out: dict = {"scales": args.scales, "shots": args.shots, "precision": args.precision,
                 "threads": torch.get_num_threads()}
    t0 = time.perf_counter()
    torch.manual_seed(args.seed)  # same random weights in every configuration: the cache is shared
    model = open_clip.create_model("ViT-B-16-plus-240", pretrained=None)
    model.eval()
    hub = ModelHub(device=args.device, precision=args.precision)
    hub.provide("clip", model)
    clip = hub.get("clip", "clip_vit_b16_plus_240")
    out["device"] = hub.describe()
    out["model_build_s"] = time.perf_counter() - t0
    out["rss_model_mb"] = _max_rss_mb()

    folder = Path(tempfile.mkdtemp(prefix="fade_bench_")) / "widget"
    profile = ProductProfile(name="widget", pipeline="fade", object="metal part", image_scales=args.scales)
    refs = []
    for k in range(args.shots):
        rel = f"references/good_{k}.png"
        write_png(folder / rel, _image(100 + k))
        refs.append(rel)
    profile.reference_shots = refs
    save_profile(profile, folder)

    cache = ArrayCache(args.cache_dir)
    t_text0 = clip.text_calls
    t0 = time.perf_counter()
    det = FadeDetector(cache=cache)
    det.prepare(profile, hub)
    out["prepare_cold_s"] = time.perf_counter() - t0
    out["prepare_cold_text_batches"] = clip.text_calls - t_text0
    out["prompts"] = {"classification": list(det.engine.text_cls.count), "segmentation": list(det.engine.text_seg.count)}
    t0 = time.perf_counter()
    calls = (clip.text_calls, clip.image_calls)
    FadeDetector(cache=cache).prepare(profile, hub)
    out["prepare_cached_s"] = time.perf_counter() - t0
    out["prepare_cached_reencoded"] = (clip.text_calls - calls[0], clip.image_calls - calls[1])
    out["rss_prepare_mb"] = _max_rss_mb()

    totals, stages = [], {}
    for i in range(args.images):
        img = _image(i)
        t0 = time.perf_counter()
        d = det.detect(img)
        totals.append(time.perf_counter() - t0)
        for k, v in d.timings.items():
            stages.setdefault(k, []).append(v)
    out["image_size"] = list(_image(0).shape[:2])
    out["per_image_s"] = statistics.median(totals)
    out["per_image_all_s"] = totals
    out["stages_s"] = {k: statistics.median(v) for k, v in stages.items()}
    out["rss_peak_mb"] = _max_rss_mb()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scales", default="240,448", help="comma-separated input sizes (default 240,448)")
    ap.add_argument("--shots", type=int, nargs="+", default=[0, 1], help="reference shots per configuration")
    ap.add_argument("--images", type=int, default=3, help="images timed per configuration")
    ap.add_argument("--precision", default="fp32", choices=["auto", "fp32", "bf16", "fp16"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    ap.add_argument("--cache-dir", default=None, help="shared cache folder (default: a fresh temporary one)")
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    scales = [int(s) for s in str(args.scales).split(",") if s]

    if args.worker:
        args.scales, args.shots = scales, args.shots[0]
        print(json.dumps(worker(args)))
        return 0

    cache_dir = args.cache_dir or tempfile.mkdtemp(prefix="fade_bench_cache_")
    results = []
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.1f} at start", flush=True)
    for shots in args.shots:
        cmd = [sys.executable, __file__, "--worker", "--scales", args.scales, "--shots", str(shots),
               "--images", str(args.images), "--precision", args.precision, "--device", args.device,
               "--seed", str(args.seed),
               "--cache-dir", cache_dir]
        load0 = os.getloadavg()[0]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return proc.returncode
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        res["load_avg_1min"] = [load0, os.getloadavg()[0]]
        results.append(res)
        stages = ", ".join(f"{k} {v:.2f}" for k, v in res["stages_s"].items() if k not in ("analyse", "finish"))
        print(f"scales {res['scales']} shots {shots} ({res['device']}): prepare cold {res['prepare_cold_s']:.1f} s, "
              f"cached {res['prepare_cached_s']:.2f} s (re-encoded {res['prepare_cached_reencoded']}); "
              f"per image {res['per_image_s']:.2f} s [{stages}]; RSS model {res['rss_model_mb']:.0f} MB, "
              f"after prepare {res['rss_prepare_mb']:.0f} MB, peak {res['rss_peak_mb']:.0f} MB; "
              f"load {load0:.1f}->{res['load_avg_1min'][1]:.1f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
