"""Speed of the evaluation metrics (not a test): pixel metrics + AUPRO over N images at S².

    .venv/bin/python bench/metrics.py [--images 100] [--size 256] [--sklearn]

Prints seconds for ``pixel_metrics`` (AUROC, AP, F1-max and AUPRO from one sort) and, with
``--sklearn``, for scikit-learn's ``roc_auc_score`` + ``average_precision_score`` on the same pixels.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from inspector.evaluate.metrics import pixel_metrics


def synthetic(n: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, size, size), dtype=bool)
    for i in range(n // 2):
        for _ in range(int(rng.integers(1, 4))):
            y, x = rng.integers(0, size - size // 6, 2)
            h, w = rng.integers(2, size // 6, 2)
            masks[i, y:y + h, x:x + w] = True
    maps = (rng.random(masks.shape) + 0.5 * masks).astype(np.float32)
    return masks, maps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sklearn", action="store_true")
    args = ap.parse_args()
    masks, maps = synthetic(args.images, args.size)
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        out = pixel_metrics(masks, maps)
        times.append(time.perf_counter() - t0)
    print(f"{args.images} images x {args.size}^2 = {masks.size / 1e6:.1f} M pixels")
    print(f"pixel_metrics (AUROC+AP+F1max+AUPRO): best {min(times):.2f} s, median {np.median(times):.2f} s")
    print("  " + ", ".join(f"{k}={v:.4f}" for k, v in out.items()))
    if args.sklearn:
        from sklearn.metrics import average_precision_score, roc_auc_score

        t0 = time.perf_counter()
        y, s = masks.ravel(), maps.ravel()
        auc, ap_ = roc_auc_score(y, s), average_precision_score(y, s)
        print(f"sklearn roc_auc_score + average_precision_score: {time.perf_counter() - t0:.2f} s "
              f"(AUROC={auc:.4f}, AP={ap_:.4f})")


if __name__ == "__main__":
    main()
