"""Benchmark of the weight-free ``variation`` pipeline on the demo product line.

Measures, per category and averaged (unweighted) over categories:

* image AUROC, pixel AUROC and AUPRO (``inspector.evaluate.metrics``) of the method and of a naive
  baseline (global nearest neighbour on per-cell colour + gradient-magnitude statistics, no
  alignment, no photometric matching, no neighbourhood aggregation);
* PASS/FAIL confusion at the profile's threshold (0.5 on the calibrated scale);
* ms per 256² image after ``prepare`` (``analyse`` + ``finish``, median over the test set);
* ``prepare`` time cold (empty cache) and warm (cached).

Usage::

    .venv/bin/python bench/variation.py [--root DIR] [--shots 4] [--seed 0] [--categories fabric pcb]
                                        [--no-baseline] [--json out.json]

Nothing here is a test; numbers depend on the machine (report the CPU and its load).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from inspector.demo import CATEGORIES, generate_demo_line, is_current, write_demo_profiles
from inspector.progress import Progress
from inspector.detect.variation import VariationDetector, describe
from inspector.evaluate.metrics import image_metrics, pixel_metrics
from inspector.imaging import list_images, read_image
from inspector.profile import ProductProfile, load_profile, save_profile

if TYPE_CHECKING:  # pragma: no cover
    from inspector.models.hub import ModelHub


#: what the naive comparison turns off in the product method (every other variation number is kept)
BASELINE_OVERRIDES = {
    "photometric": False,  # no brightness/contrast matching
    "alignment": "none",  # no registration
    "memory": "global",  # nearest neighbour anywhere
    "whitening": 0.0,  # plain standardised distance
    "global_dims": 0,  # every descriptor dimension
    "scale_fusion": "joint",  # one descriptor of all levels
    "variation_model": False,
}


def baseline_profile(profile: ProductProfile) -> ProductProfile:
    """``profile`` with :data:`BASELINE_OVERRIDES` applied to its ``variation`` section."""
    return profile.model_copy(update={"variation": profile.variation.model_copy(update=BASELINE_OVERRIDES)})


def baseline_features(lab: np.ndarray, levels: int, stride: int) -> np.ndarray:
    """Naive descriptor: mean L, a, b and gradient magnitude per cell at each scale, (4·levels, h, w)."""
    h, w = lab.shape[:2]
    out_hw = (max(1, h // stride), max(1, w // stride))
    feats = []
    cur = lab
    for _ in range(levels):
        lum = cur[..., 0]
        mag = np.sqrt(cv2.Sobel(lum, cv2.CV_32F, 1, 0) ** 2 + cv2.Sobel(lum, cv2.CV_32F, 0, 1) ** 2) * 0.125
        stack = np.concatenate([cur, mag[..., None]], axis=-1)
        interp = cv2.INTER_AREA if cur.shape[0] >= out_hw[0] else cv2.INTER_LINEAR
        feats.append(cv2.resize(stack, (out_hw[1], out_hw[0]), interpolation=interp))
        cur = cv2.pyrDown(cur)
    return np.ascontiguousarray(np.concatenate(feats, axis=-1).transpose(2, 0, 1))


class BaselineDetector(VariationDetector):
    """The naive comparison method: the product detector with :func:`baseline_features` as descriptors
    and :data:`BASELINE_OVERRIDES`; its prepared references are cached apart from the product's."""

    cache_namespace = "variation-baseline"

    def prepare(self, profile: ProductProfile, hub: ModelHub | None = None, progress: Progress | None = None) -> None:
        super().prepare(baseline_profile(profile), hub, progress)

    def retune(self, profile: ProductProfile) -> None:
        super().retune(baseline_profile(profile))

    def patch_descriptors(self, lab: np.ndarray) -> np.ndarray:
        p = self.params
        return baseline_features(lab, p.pyramid_levels, p.feature_stride)


def _test_set(root: Path, cat: str) -> list[tuple[Path, np.ndarray | None]]:
    out = []
    test = root / cat / "test"
    for sub in sorted(p for p in test.iterdir() if p.is_dir()):
        for img in list_images(sub):
            mask = None
            if sub.name != "good":
                mask = read_image(root / cat / "ground_truth" / sub.name / f"{img.stem}_mask.png")[..., 0] > 127
            out.append((img, mask))
    return out


def run_category(root: Path, profile_dir: Path, cat: str, baseline: bool) -> dict:
    profile = load_profile(profile_dir)
    kind = BaselineDetector if baseline else VariationDetector
    det = kind()
    t0 = time.perf_counter()
    det.prepare(profile, None)
    t_cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    kind().prepare(profile, None)
    t_warm = time.perf_counter() - t0
    labels, scores, masks, maps, times, cpu = [], [], [], [], [], []
    confusion = {"good": {"PASS": 0, "FAIL": 0}, "defect": {"PASS": 0, "FAIL": 0}}
    for path, mask in _test_set(root, cat):
        img = read_image(path)
        t0, c0 = time.perf_counter(), time.process_time()
        d = det.detect(img)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        labels.append(int(mask is not None))
        scores.append(d.image_score)
        masks.append(mask if mask is not None else np.zeros(img.shape[:2], bool))
        maps.append(d.anomaly_map)
        verdict = "FAIL" if d.image_score >= profile.decision.image_threshold else "PASS"
        confusion["defect" if mask is not None else "good"][verdict] += 1
    im = image_metrics(np.array(labels), np.array(scores))
    px = pixel_metrics(np.stack(masks), np.stack(maps))
    return {
        "image_auroc": im["image_auroc"],
        "pixel_auroc": px["pixel_auroc"],
        "aupro": px["pixel_aupro"],
        "ms_per_image": 1000 * statistics.median(times),
        "cpu_ms_per_image": 1000 * statistics.median(cpu),
        "prepare_cold_s": t_cold,
        "prepare_warm_s": t_warm,
        "confusion": confusion,
        **{f"prepared_{k}": v for k, v in describe(det).items()},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=None, help="demo line folder (default: a temporary one)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shots", type=int, default=4)
    ap.add_argument("--categories", nargs="*", default=list(CATEGORIES))
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a variation parameter in every profile, e.g. --set search_radius=2")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="variation-bench-") as tmp:
        return _run(args, Path(tmp))


def _run(args: argparse.Namespace, work: Path) -> int:
    os.environ["INSPECTOR_CACHE_DIR"] = str(work / "cache")  # an empty cache: "cold" means cold
    root = args.root or work / "line"
    if not is_current(root, args.seed):
        t0 = time.perf_counter()
        generate_demo_line(root, args.seed)
        print(f"generated demo line in {time.perf_counter() - t0:.1f}s at {root}")
    profiles = work / "profiles"
    write_demo_profiles(profiles, root, args.seed)
    for cat in CATEGORIES:
        prof = load_profile(profiles / f"demo_{cat}")
        prof.reference_shots = prof.reference_shots[: args.shots] if args.shots <= 4 else prof.reference_shots
        if args.shots > 4:  # more shots: copy further train/good images
            for i in range(4, args.shots):
                src = root / cat / "train" / "good" / f"{i:03d}.png"
                shutil.copyfile(src, profiles / f"demo_{cat}" / "references" / src.name)
                prof.reference_shots.append(f"references/{src.name}")
        for kv in args.set:
            key, value = kv.split("=", 1)
            setattr(prof.variation, key, json.loads(value) if value[:1] in "0123456789-[{tf" else value)
        save_profile(prof, profiles / f"demo_{cat}")

    results: dict[str, dict[str, dict]] = {}
    methods = ["variation"] + ([] if args.no_baseline else ["baseline"])
    for method in methods:
        results[method] = {}
        for cat in args.categories:
            r = run_category(root, profiles / f"demo_{cat}", cat, baseline=(method == "baseline"))
            results[method][cat] = r
            print(f"{method:9s} {cat:8s} imgAUROC {r['image_auroc']:.3f}  pixAUROC {r['pixel_auroc']:.3f}  "
                  f"AUPRO {r['aupro']:.3f}  {r['ms_per_image']:.0f} ms/img ({r['cpu_ms_per_image']:.0f} cpu)  "
                  f"prepare {r['prepare_cold_s']:.2f}s cold / {r['prepare_warm_s']:.3f}s cached  "
                  f"[{r['prepared_mode']}/{r['prepared_alignment']}]  "
                  f"good {r['confusion']['good']}  defect {r['confusion']['defect']}", flush=True)
        keys = ("image_auroc", "pixel_auroc", "aupro", "ms_per_image", "cpu_ms_per_image")
        mean = {k: float(np.mean([results[method][c][k] for c in args.categories])) for k in keys}
        results[method]["mean"] = mean
        print(f"{method:9s} {'MEAN':8s} imgAUROC {mean['image_auroc']:.3f}  pixAUROC {mean['pixel_auroc']:.3f}  "
              f"AUPRO {mean['aupro']:.3f}  {mean['ms_per_image']:.0f} ms/img ({mean['cpu_ms_per_image']:.0f} cpu)")
    print(f"\ncpu: {os.cpu_count()} logical cores, load {os.getloadavg()[0]:.2f}; shots {args.shots}, seed {args.seed}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
