"""Metrics against scikit-learn and brute-force computations on small cases with known answers."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_auc_score

from inspector.evaluate import metrics as M
from inspector.evaluate.metrics import summarise


def _case(seed: int, n: int = 300, ties: bool = True) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = rng.random(n) + 0.4 * y
    return y, (np.round(s, 1) if ties else s)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ties", [True, False])
def test_image_metrics_match_sklearn(seed: int, ties: bool) -> None:
    y, s = _case(seed, ties=ties)
    assert M.auroc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert M.average_precision(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)
    p, r, _ = precision_recall_curve(y, s)
    f1 = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-300), 0)
    assert M.f1_max(y, s) == pytest.approx(f1.max(), abs=1e-12)
    assert M.aupr_trapezoid(y, s) == pytest.approx(auc(r, p), abs=1e-12)
    both = M.image_metrics(y, s)
    assert both == {"image_auroc": M.auroc(y, s), "image_aupr": M.average_precision(y, s), "image_f1max": M.f1_max(y, s)}


def test_known_small_answers() -> None:
    y = np.array([0, 0, 1, 1])
    assert M.auroc(y, [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert M.auroc(y, [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert M.auroc(y, [0.4, 0.3, 0.2, 0.1]) == 0.0
    assert M.auroc(y, [0.5, 0.5, 0.5, 0.5]) == 0.5  # all tied: one threshold
    # F1 at the best threshold (0.35): P = 2/3, R = 1 -> 0.8
    assert M.f1_max(y, [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.8)
    # AP: ranks 0.8 (tp), 0.4 (fp), 0.35 (tp) -> 0.5 * 1 + 0.5 * 2/3
    assert M.average_precision(y, [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.5 + 1 / 3)


def test_single_class_is_nan_and_bad_input_is_refused() -> None:
    assert math.isnan(M.auroc([0, 0, 0], [0.1, 0.2, 0.3]))
    assert math.isnan(M.average_precision([1, 1], [0.1, 0.2]))
    assert math.isnan(M.f1_max([1, 1], [0.1, 0.2]))
    with pytest.raises(ValueError, match="differ in size"):
        M.auroc([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="NaN"):
        M.auroc([0, 1], [0.1, float("nan")])


def _pixel_case(seed: int, n: int = 6, size: int = 24) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, size, size), dtype=bool)
    for i in range(n // 2):
        for _ in range(int(rng.integers(1, 3))):
            y, x = rng.integers(0, size - 6, 2)
            h, w = rng.integers(2, 7, 2)
            masks[i, y:y + h, x:x + w] = True
    maps = (rng.random(masks.shape) + 0.6 * masks).astype(np.float32)
    return masks, np.round(maps, 2)  # rounding creates ties


@pytest.mark.parametrize("seed", [0, 3])
def test_pixel_metrics_match_sklearn(seed: int) -> None:
    masks, maps = _pixel_case(seed)
    got = M.pixel_metrics(masks, maps)
    y, s = masks.ravel(), maps.ravel()
    assert got["pixel_auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert got["pixel_ap"] == pytest.approx(average_precision_score(y, s), abs=1e-12)
    p, r, _ = precision_recall_curve(y, s)
    assert got["pixel_f1max"] == pytest.approx(np.max(2 * p * r / np.maximum(p + r, 1e-300)), abs=1e-12)
    assert M.pixel_auroc(masks, maps) == got["pixel_auroc"]
    assert M.pixel_ap(masks, maps) == got["pixel_ap"]
    assert M.pixel_f1max(masks, maps) == got["pixel_f1max"]
    assert M.aupro(masks, maps) == got["pixel_aupro"]


def _brute_force_aupro(masks: np.ndarray, maps: np.ndarray, max_fpr: float = 0.3) -> float:
    """Threshold by threshold, region by region, then a clipped trapezoid — no shared code."""
    regions = []
    for mask, amap in zip(masks, maps):
        n, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
        regions += [(amap, labels == k) for k in range(1, n)]
    normal = ~masks
    points = [(0.0, 0.0)]
    for t in sorted(np.unique(maps), reverse=True):
        fpr = float(((maps >= t) & normal).sum() / normal.sum())
        pro = float(np.mean([(amap[r] >= t).mean() for amap, r in regions]))
        points.append((fpr, pro))
    area = 0.0
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x0 >= max_fpr:
            break
        if x1 > max_fpr:
            y1 = y0 + (y1 - y0) * (max_fpr - x0) / (x1 - x0)
            x1 = max_fpr
        area += (x1 - x0) * (y0 + y1) / 2
    return area / max_fpr


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_aupro_matches_brute_force(seed: int) -> None:
    masks, maps = _pixel_case(seed)
    assert M.aupro(masks, maps) == pytest.approx(_brute_force_aupro(masks, maps), abs=1e-6)
    assert M.aupro(masks, maps, max_fpr=0.05) == pytest.approx(_brute_force_aupro(masks, maps, 0.05), abs=1e-6)


def test_aupro_perfect_random_and_inverted() -> None:
    masks, _ = _pixel_case(0, n=20, size=48)
    assert M.aupro(masks, masks.astype(np.float32)) == pytest.approx(1.0)
    rng = np.random.default_rng(7)
    random_map = rng.random(masks.shape).astype(np.float32)
    assert M.aupro(masks, random_map) == pytest.approx(0.15, abs=0.02)
    assert M.aupro(masks, 1.0 - masks.astype(np.float32)) == pytest.approx(0.0)


def test_aupro_averages_regions_not_pixels() -> None:
    """A big region found and a small one missed give PRO 0.5 at FPR 0, whatever their sizes."""
    mask = np.zeros((1, 40, 40), dtype=bool)
    mask[0, 2:22, 2:22] = True  # 400 px, detected
    mask[0, 30:32, 30:32] = True  # 4 px, missed
    amap = np.zeros(mask.shape, dtype=np.float32)
    amap[0, 2:22, 2:22] = 1.0
    # curve (0, 0) -> (0, 0.5) -> (1, 1); PRO(0.3) = 0.65; area (0.5 + 0.65) / 2 * 0.3; / 0.3
    assert M.aupro(mask, amap) == pytest.approx((0.5 + 0.65) / 2)
    # pixel AUROC, by contrast, is dominated by the big region
    assert M.pixel_auroc(mask, amap) > 0.99


def test_regions_are_8_connected() -> None:
    mask = np.zeros((1, 5, 5), dtype=bool)
    mask[0, 1, 1] = mask[0, 2, 2] = True  # diagonal neighbours: one region of two pixels
    mask[0, 4, 0] = True  # a second region
    w = M.region_weights(mask)
    assert w[0, 1, 1] == pytest.approx(0.25) and w[0, 2, 2] == pytest.approx(0.25)
    assert w[0, 4, 0] == pytest.approx(0.5)
    assert w.sum() == pytest.approx(1.0)


def test_integrate_pro_interpolates_at_the_limit() -> None:
    fpr = np.array([0.0, 0.2, 0.4, 1.0])
    pro = np.array([0.0, 0.6, 1.0, 1.0])
    # up to 0.3: (0,0)-(0.2,0.6) area 0.06, then (0.2,0.6)-(0.3,0.8) area 0.07
    assert M.integrate_pro(fpr, pro, 0.3) == pytest.approx(0.13 / 0.3)
    with pytest.raises(ValueError):
        M.integrate_pro(fpr, pro, 0.0)


def test_pixel_metrics_without_anomalous_pixels_are_nan() -> None:
    masks = np.zeros((2, 8, 8), dtype=bool)
    out = M.pixel_metrics(masks, np.random.default_rng(0).random(masks.shape))
    assert all(math.isnan(v) for v in out.values())
    with pytest.raises(ValueError, match="NxHxW"):
        M.pixel_metrics(masks, np.zeros((2, 8, 9)))


def test_summarise_per_defect_rows() -> None:
    labels = np.array([0, 0, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.9, 0.15, 0.8])
    defects = ["good", "good", "scratch", "stain", "stain"]
    masks = np.zeros((5, 8, 8), dtype=bool)
    masks[2:, 2:4, 2:4] = True
    maps = masks.astype(np.float32)
    pixel_ok = np.array([True, True, True, True, False])  # the last stain image has no mask
    out = summarise(labels, scores, defects, maps, masks, pixel_ok)
    assert out["n_images"] == 5 and out["n_anomalous"] == 3
    assert out["image_auroc"] == pytest.approx(roc_auc_score(labels, scores))
    assert set(out["per_defect"]) == {"scratch", "stain"}
    scratch, stain = out["per_defect"]["scratch"], out["per_defect"]["stain"]
    assert scratch["image_auroc"] == 1.0 and scratch["n_images"] == 3 and scratch["n_anomalous"] == 1
    # stain: scores 0.15 and 0.8 against goods 0.1, 0.2 -> 3 of 4 pairs ranked right
    assert stain["image_auroc"] == pytest.approx(0.75) and stain["n_images"] == 4
    assert stain["pixel_aupro"] == pytest.approx(1.0) and out["pixel_auroc"] == 1.0
