"""Tiny labelled datasets in the MVTec-AD, VisA and plain-folder layouts (for evaluation tests).

Good images are a flat grey part with mild seeded noise; defective ones carry a bright square
(``bright``) or a dark square (``dark``) whose exact mask is written beside them. Deterministic.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from inspector.imaging import write_png

SIZE = 64


def good_image(rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    base = np.full((size, size, 3), 120, dtype=np.float32)
    base += rng.normal(0, 3, (size, size, 1))
    return base.clip(0, 255).astype(np.uint8)


def defect_image(rng: np.random.Generator, kind: str, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    img = good_image(rng, size)
    mask = np.zeros((size, size), dtype=np.uint8)
    s = size // 5
    y, x = (int(v) for v in rng.integers(4, size - s - 4, 2))
    mask[y:y + s, x:x + s] = 255
    img[mask > 0] = 250 if kind == "bright" else 10
    return img, mask


def make_mvtec(root: Path, category: str = "widget", n_train: int = 4, n_good: int = 3, n_defect: int = 2,
               defects: tuple[str, ...] = ("bright", "dark"), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    cat = root / category
    for i in range(n_train):
        write_png(cat / "train" / "good" / f"{i:03d}.png", good_image(rng))
    for i in range(n_good):
        write_png(cat / "test" / "good" / f"{i:03d}.png", good_image(rng))
    for d in defects:
        for i in range(n_defect):
            img, mask = defect_image(rng, d)
            write_png(cat / "test" / d / f"{i:03d}.png", img)
            write_png(cat / "ground_truth" / d / f"{i:03d}_mask.png", mask)
    return cat


def make_visa(root: Path, category: str = "candle", n_train: int = 3, n_good: int = 2, n_bad: int = 3,
              seed: int = 0, with_anno: bool = True) -> Path:
    """VisA: images under Data/Images/{Normal,Anomaly}, masks with values 0/1/2, split_csv/1cls.csv."""
    rng = np.random.default_rng(seed)
    cat = root / category
    rows = []
    anno = []
    for i in range(n_train + n_good):
        rel = f"{category}/Data/Images/Normal/{i:04d}.png"
        write_png(root / rel, good_image(rng))
        rows.append([category, "train" if i < n_train else "test", "normal", rel, ""])
        anno.append([rel, "normal", ""])
    for i in range(n_bad):
        img, mask = defect_image(rng, "bright" if i % 2 == 0 else "dark")
        rel = f"{category}/Data/Images/Anomaly/{i:03d}.png"
        mrel = f"{category}/Data/Masks/Anomaly/{i:03d}.png"
        write_png(root / rel, img)
        write_png(root / mrel, (mask > 0).astype(np.uint8) * (1 + i % 2))  # VisA: non-zero = anomalous
        rows.append([category, "test", "anomaly", rel, mrel])
        anno.append([rel, "bright spot" if i % 2 == 0 else "dark spot", mrel])
    split = root / "split_csv" / "1cls.csv"
    split.parent.mkdir(parents=True, exist_ok=True)
    with open(split, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["object", "split", "label", "image", "mask"])
        w.writerow(["other", "test", "normal", "other/none.png", ""])
        w.writerows(rows)
    if with_anno:
        with open(cat / "image_anno.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["image", "label", "mask"])
            w.writerows(anno)
    return cat


def make_folder(root: Path, n_good: int = 4, n_bad: int = 2, masks: str = "_mask", reference: int = 0,
                seed: int = 0) -> Path:
    """Plain folders: good/, bad/ (direct), masks/<stem><masks>.png, optional reference/."""
    rng = np.random.default_rng(seed)
    for i in range(n_good):
        write_png(root / "good" / f"g{i}.png", good_image(rng))
    for i in range(n_bad):
        img, mask = defect_image(rng, "bright")
        write_png(root / "bad" / f"b{i}.png", img)
        if masks is not None:
            write_png(root / "masks" / f"b{i}{masks}.png", mask)
    for i in range(reference):
        write_png(root / "reference" / f"r{i}.png", good_image(rng))
    return root
