"""Speed and memory of the patchcore pipeline (fp32 and bf16) beside the weight-free variation one.

Each configuration runs in its own process so that its peak RSS is its own:

    .venv/bin/python bench/patchcore.py                 # the whole table (a few minutes on 2 cores)
    .venv/bin/python bench/patchcore.py --sizes 512     # one size

Reported per (pipeline, precision, image size): model load seconds (a fresh process: the first
use imports timm and torchvision), prepare seconds (8 shots, cold bank cache, models loaded), median
ms per image after prepare (``--repeat`` images), peak RSS of the process, memory-bank MB.
Images are demo-line fabric shots resized to the size; "5MP" is 2592×1944 and is tiled by the
patchcore defaults (tiles of 512 px at native resolution). Targets (issue 12): ≤ 150 ms per
512² image, prepare ≤ 5 s for 8 shots, bank ≤ 200 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = {"256": (256, 256), "512": (512, 512), "1024": (1024, 1024), "5MP": (1944, 2592)}


def one(pipeline: str, precision: str, size: str, shots: int, repeat: int) -> dict:
    import cv2
    import numpy as np

    from inspector.demo import _rng, render_sample
    from inspector.imaging import write_png
    from inspector.inspection import Inspector
    from inspector.models.hub import ModelHub
    from inspector.profile import ProductProfile

    h, w = SIZES[size]
    tmp = Path(tempfile.mkdtemp(prefix="bench-pc-"))
    os.environ["INSPECTOR_CACHE_DIR"] = str(tmp / "cache")  # cold cache: prepare measured in full
    refs = []
    for i in range(shots):
        img, _ = render_sample("fabric", None, _rng(0, "fabric", "train", i))
        write_png(tmp / "references" / f"{i:03d}.png", cv2.resize(img, (w, h), interpolation=cv2.INTER_CUBIC))
        refs.append(f"references/{i:03d}.png")
    tests = []
    for i in range(repeat):
        img, _ = render_sample("fabric", "hole" if i % 2 else None, _rng(0, "fabric", "test_good", i))
        tests.append(cv2.resize(img, (w, h), interpolation=cv2.INTER_CUBIC))
    prof = ProductProfile(name="bench", object="fabric", pipeline=pipeline, reference_shots=refs).with_folder(tmp)
    hub = ModelHub(device="cpu", precision=precision)
    ins = Inspector(prof, hub)
    t0 = time.perf_counter()
    for kind, key in ins.required_models():  # loaded once per station session (first use pays the imports)
        hub.get(kind, key)
    load = time.perf_counter() - t0
    t0 = time.perf_counter()
    ins.prepare()  # what a new profile or new reference shots cost: features, coreset, index, calibration
    prep = time.perf_counter() - t0
    ins.inspect(tests[0])  # warm-up (first-call allocations)
    times = []
    for im in tests:
        t0 = time.perf_counter()
        ins.inspect(im)
        times.append(time.perf_counter() - t0)
    det = ins.detector
    bank = getattr(det, "bank", None)
    bank_mb = float(bank.numel() * 4 / 1e6) if bank is not None else None
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"pipeline": pipeline, "precision": str(hub.dtype).replace("torch.", ""), "size": size,
            "load_s": round(load, 2), "prepare_s": round(prep, 2), "ms_per_image": round(1000 * statistics.median(times), 1),
            "peak_rss_mb": round(rss_mb), "bank_mb": None if bank_mb is None else round(bank_mb, 1),
            "load": round(os.getloadavg()[0], 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="*", default=list(SIZES), choices=list(SIZES))
    ap.add_argument("--shots", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=6)
    ap.add_argument("--one", nargs=3, metavar=("PIPELINE", "PRECISION", "SIZE"), help=argparse.SUPPRESS)
    ap.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(*args.one, args.shots, args.repeat)))
        return 0
    rows = []
    configs = [("patchcore", "fp32"), ("patchcore", "bf16"), ("variation", "fp32")]
    for size in args.sizes:
        for pipeline, precision in configs:
            if pipeline == "variation" and size == "5MP":
                continue  # variation works at 256 px whatever the image: its figure would only time the resize
            cmd = [sys.executable, __file__, "--one", pipeline, precision, size,
                   "--shots", str(args.shots), "--repeat", str(args.repeat)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if out.returncode != 0:
                print(f"{pipeline} {precision} {size}: failed\n{out.stderr[-2000:]}", file=sys.stderr)
                continue
            row = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"{row['pipeline']:<10} {row['precision']:<9} {row['size']:>5}  load {row['load_s']:>5.2f} s  prepare {row['prepare_s']:>6.2f} s  "
                  f"{row['ms_per_image']:>8.1f} ms/img  peak RSS {row['peak_rss_mb']:>5} MB  "
                  f"bank {row['bank_mb']} MB  (load {row['load']})", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
