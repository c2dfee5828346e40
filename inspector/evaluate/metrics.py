"""Detection and segmentation metrics (pure numpy), following ``shared/methods/evaluation.md``.

Conventions: the ground truth comes first (``labels`` 0/1 per image, ``masks`` bool NxHxW), the
scores second (higher = more anomalous). Every curve is exact: every distinct score is a threshold
and ties are taken together (as scikit-learn does); all pixel metrics share one pass of sorting. A metric that is
undefined for the input (e.g. AUROC without any anomalous sample) is ``nan``.

Definitions used in reports:

* AUROC — area under the ROC curve (trapezoid), identical to ``sklearn.metrics.roc_auc_score``.
* AUPR — **average precision** ``sum_n (R_n - R_{n-1}) P_n`` (``sklearn.metrics.average_precision_score``,
  the anomalib / most-papers definition). :func:`aupr_trapezoid` gives FADE's trapezoid area instead.
* F1-max — max over the PR curve's thresholds of ``2 P R / (P + R)``.
* AUPRO — MVTec AD: regions are 8-connected components of each image's mask; PRO(t) is the mean over
  all regions of the detected fraction of the region; FPR(t) counts false-positive pixels over all
  normal pixels (good images included); PRO is integrated over FPR in [0, max_fpr] (the point at
  ``max_fpr`` interpolated) and divided by ``max_fpr``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

DEFAULT_MAX_FPR = 0.3
"""Upper FPR limit of AUPRO integration (MVTec AD protocol)."""

_trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 names it trapz

METRIC_KEYS = (
    "image_auroc", "image_aupr", "image_f1max",
    "pixel_auroc", "pixel_ap", "pixel_f1max", "pixel_aupro",
)
"""The metrics of one evaluation, in report order."""

AUPR_DEFINITION = "average precision (sum of (R_n - R_n-1) * P_n, as sklearn average_precision_score)"


@dataclass(frozen=True)
class Curve:
    """Cumulative counts at each distinct threshold, in descending score order.

    ``tps[i]``/``fps[i]`` are the (weighted) positives / negatives with score >= ``thresholds[i]``.
    """

    thresholds: np.ndarray
    tps: np.ndarray
    fps: np.ndarray

    @property
    def n_pos(self) -> float:
        return float(self.tps[-1]) if self.tps.size else 0.0

    @property
    def n_neg(self) -> float:
        return float(self.fps[-1]) if self.fps.size else 0.0


def _as_1d(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).reshape(-1).astype(bool)
    s = np.asarray(scores).reshape(-1)
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in size: {y.size} vs {s.size}")
    if s.size and not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or infinite values")
    return y, s


def _counts_at_or_above(sorted_asc: np.ndarray, thresholds_asc: np.ndarray) -> np.ndarray:
    """How many values of ``sorted_asc`` are >= each threshold (thresholds ascending: searchsorted hint)."""
    return sorted_asc.size - np.searchsorted(sorted_asc, thresholds_asc, side="left")


def _curve(y: np.ndarray, s: np.ndarray, weights: np.ndarray | None = None) -> tuple[Curve, np.ndarray | None]:
    """Counts at every distinct threshold, descending; with ``weights`` also the weighted positive sum.

    Negatives and positives are sorted separately (plain sorts, far faster than one argsort of all
    pixels), merged in linear time (stable sort of two sorted runs) to find the distinct thresholds,
    and counted with binary searches. Ties are one threshold.
    """
    neg = np.sort(s[~y])
    pos_idx = np.flatnonzero(y)
    pos_order = np.argsort(s[pos_idx], kind="stable")
    pos = s[pos_idx][pos_order]
    merged = np.sort(np.concatenate([neg, pos]), kind="stable")
    if merged.size == 0:
        empty = np.zeros(0, dtype=np.float64)
        return Curve(thresholds=merged, tps=empty, fps=empty), (empty if weights is not None else None)
    distinct = merged[np.r_[merged[1:] != merged[:-1], True]]  # ascending
    tps = _counts_at_or_above(pos, distinct)[::-1].astype(np.float64)
    fps = _counts_at_or_above(neg, distinct)[::-1].astype(np.float64)
    curve = Curve(thresholds=distinct[::-1], tps=tps, fps=fps)
    if weights is None:
        return curve, None
    w = weights.reshape(-1)[pos_idx][pos_order]
    top_down = np.r_[0.0, np.cumsum(w[::-1], dtype=np.float64)]  # weight of the k highest positives
    return curve, top_down[tps.astype(np.int64)]


def clf_curve(labels: np.ndarray, scores: np.ndarray) -> Curve:
    """True/false positive counts at every distinct threshold (descending)."""
    y, s = _as_1d(labels, scores)
    return _curve(y, s)[0]


def _both_classes(curve: Curve) -> bool:
    return curve.n_pos > 0 and curve.n_neg > 0


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) starting at (0, 0) with threshold +inf."""
    c = clf_curve(labels, scores)
    fpr = np.r_[0.0, c.fps / max(c.n_neg, 1e-300)]
    tpr = np.r_[0.0, c.tps / max(c.n_pos, 1e-300)]
    return fpr, tpr, np.r_[np.inf, c.thresholds]


def precision_recall_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, thresholds) in descending threshold order (recall increasing)."""
    c = clf_curve(labels, scores)
    return _precision(c), c.tps / max(c.n_pos, 1e-300), c.thresholds


def _precision(c: Curve) -> np.ndarray:
    denom = c.tps + c.fps
    return np.divide(c.tps, denom, out=np.zeros_like(c.tps), where=denom > 0)


def _auroc_from(c: Curve) -> float:
    if not _both_classes(c):
        return math.nan
    fpr = np.r_[0.0, c.fps / c.n_neg]
    tpr = np.r_[0.0, c.tps / c.n_pos]
    return float(_trapezoid(tpr, fpr))


def _ap_from(c: Curve) -> float:
    if not _both_classes(c):
        return math.nan
    recall = np.r_[0.0, c.tps / c.n_pos]
    return float(np.sum(np.diff(recall) * _precision(c)))  # AP = sum (R_n - R_{n-1}) P_n


def _f1max_from(c: Curve) -> float:
    if not _both_classes(c):
        return math.nan
    p = _precision(c)
    r = c.tps / c.n_pos
    denom = p + r
    f1 = np.divide(2 * p * r, denom, out=np.zeros_like(p), where=denom > 0)
    return float(f1.max())


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (== ``sklearn.metrics.roc_auc_score``)."""
    return _auroc_from(clf_curve(labels, scores))


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """AP = sum_n (R_n - R_{n-1}) P_n (== ``sklearn.metrics.average_precision_score``)."""
    return _ap_from(clf_curve(labels, scores))


def aupr_trapezoid(labels: np.ndarray, scores: np.ndarray) -> float:
    """Trapezoid area under the PR curve (FADE's AUPR), the curve starting at (R=0, P=1)."""
    c = clf_curve(labels, scores)
    if not _both_classes(c):
        return math.nan
    recall = np.r_[0.0, c.tps / c.n_pos]
    precision = np.r_[1.0, _precision(c)]
    return float(_trapezoid(precision, recall))


def f1_max(labels: np.ndarray, scores: np.ndarray) -> float:
    """Maximum F1 = 2PR/(P+R) over all thresholds of the PR curve."""
    return _f1max_from(clf_curve(labels, scores))


# image level: same functions, named for readers of the protocol
image_auroc = auroc
image_aupr = average_precision
image_f1max = f1_max


def image_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Image AUROC, AUPR (average precision) and F1-max from one sort."""
    c = clf_curve(labels, scores)
    return {"image_auroc": _auroc_from(c), "image_aupr": _ap_from(c), "image_f1max": _f1max_from(c)}


# ---------------------------------------------------------------------------------- pixel level
def _stack(masks: np.ndarray | list[np.ndarray], maps: np.ndarray | list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    m = np.asarray(masks).astype(bool, copy=False)
    a = np.asarray(maps)
    if m.ndim == 2:
        m = m[None]
    if a.ndim == 2:
        a = a[None]
    if m.shape != a.shape or m.ndim != 3:
        raise ValueError(f"masks and maps must both be NxHxW of one shape, got {m.shape} and {a.shape}")
    return m, a


def region_weights(masks: np.ndarray) -> np.ndarray:
    """Per-pixel weight 1 / (|region| * n_regions) inside ground-truth regions, 0 elsewhere.

    Regions are the 8-connected components of each image's mask, so the sum of the weights of the
    detected pixels is the mean over regions of the detected fraction (PRO).
    """
    weights = np.zeros(masks.shape, dtype=np.float32)
    n_regions = 0
    for i, mask in enumerate(masks):
        if not mask.any():
            continue
        n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
        areas = stats[:, cv2.CC_STAT_AREA].astype(np.float64)
        inv = np.zeros(n, dtype=np.float32)
        inv[1:] = 1.0 / areas[1:]
        weights[i] = inv[labels]
        n_regions += n - 1
    if n_regions:
        weights /= n_regions
    return weights


def integrate_pro(fpr: np.ndarray, pro: np.ndarray, max_fpr: float = DEFAULT_MAX_FPR) -> float:
    """Trapezoid integral of PRO over FPR in [0, max_fpr], interpolated at max_fpr, / max_fpr."""
    if not 0 < max_fpr <= 1:
        raise ValueError(f"max_fpr must be in (0, 1], got {max_fpr}")
    cut = int(np.searchsorted(fpr, max_fpr, side="right"))  # fpr is non-decreasing
    x, y = fpr[:cut], pro[:cut]
    if cut < fpr.size and x[-1] < max_fpr:
        x0, x1, y0, y1 = fpr[cut - 1], fpr[cut], pro[cut - 1], pro[cut]
        y_cut = y0 + (y1 - y0) * (max_fpr - x0) / (x1 - x0)
        x, y = np.r_[x, max_fpr], np.r_[y, y_cut]
    return float(_trapezoid(y, x) / max_fpr)


def aupro(masks: np.ndarray, maps: np.ndarray, max_fpr: float = DEFAULT_MAX_FPR) -> float:
    """Normalised area under the PRO curve up to ``max_fpr`` (see module docstring)."""
    return pixel_metrics(masks, maps, max_fpr)["pixel_aupro"]


def pixel_auroc(masks: np.ndarray, maps: np.ndarray) -> float:
    m, a = _stack(masks, maps)
    return auroc(m, a)


def pixel_ap(masks: np.ndarray, maps: np.ndarray) -> float:
    m, a = _stack(masks, maps)
    return average_precision(m, a)


def pixel_f1max(masks: np.ndarray, maps: np.ndarray) -> float:
    m, a = _stack(masks, maps)
    return f1_max(m, a)


def pixel_metrics(masks: np.ndarray, maps: np.ndarray, max_fpr: float = DEFAULT_MAX_FPR) -> dict[str, float]:
    """Pixel AUROC, AP, F1-max and AUPRO over all pixels of all images, from a single sort."""
    m, a = _stack(masks, maps)
    y, s = _as_1d(m, a)
    if not y.any() or y.all():
        return dict.fromkeys(("pixel_auroc", "pixel_ap", "pixel_f1max", "pixel_aupro"), math.nan)
    curve, pro = _curve(y, s, region_weights(m))
    fpr = np.r_[0.0, curve.fps / curve.n_neg]
    pro = np.r_[0.0, pro]
    return {
        "pixel_auroc": _auroc_from(curve),
        "pixel_ap": _ap_from(curve),
        "pixel_f1max": _f1max_from(curve),
        "pixel_aupro": integrate_pro(fpr, pro, max_fpr),
    }


# --------------------------------------------------------------------------------- summary
def summarise(
    labels: np.ndarray,
    scores: np.ndarray,
    defects: list[str],
    maps: np.ndarray,
    masks: np.ndarray,
    pixel_ok: np.ndarray,
    max_fpr: float = DEFAULT_MAX_FPR,
) -> dict[str, Any]:
    """Metrics over all images plus one row per defect type (that type's images + all good ones).

    Pixel metrics use the images whose mask is known (good images, anomalous ones with a mask); they
    are ``nan`` when no anomalous image has a mask.
    """
    labels = np.asarray(labels, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    defect_arr = np.asarray(defects, dtype=object)

    def row(sel: np.ndarray) -> dict[str, Any]:
        out: dict[str, Any] = dict(image_metrics(labels[sel], scores[sel]))
        psel = sel & pixel_ok
        if psel.all():  # no fancy-index copy of every map for the all-images row
            out.update(pixel_metrics(masks, maps, max_fpr))
        elif psel.any() and labels[psel].any():
            out.update(pixel_metrics(masks[psel], maps[psel], max_fpr))
        else:
            out.update(dict.fromkeys(("pixel_auroc", "pixel_ap", "pixel_f1max", "pixel_aupro"), math.nan))
        out["n_images"] = int(sel.sum())
        out["n_anomalous"] = int(labels[sel].sum())
        return {k: out[k] for k in (*METRIC_KEYS, "n_images", "n_anomalous")}

    everything = np.ones(labels.shape, dtype=bool)
    metrics = row(everything)
    good = labels == 0
    metrics["per_defect"] = {
        d: row(good | (defect_arr == d)) for d in sorted({d for d, y in zip(defects, labels) if y})
    }
    return metrics
