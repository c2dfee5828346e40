"""Evaluation reports: ``metrics.json``, ``scores.csv``, ``curves.png`` and a console table.

Undefined metrics (``nan``, e.g. pixel metrics without masks) are written as JSON ``null`` and shown as
``-``. Plots use matplotlib's Agg canvas directly, so no global backend is switched (the GUI process
stays untouched).
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from inspector.evaluate.metrics import AUPR_DEFINITION, METRIC_KEYS, precision_recall_curve, roc_curve

if TYPE_CHECKING:  # pragma: no cover
    from inspector.evaluate.runner import EvalResult

_COUNT_KEYS = ("n_images", "n_anomalous")
_HEADERS = {
    "image_auroc": "I-AUROC", "image_aupr": "I-AUPR", "image_f1max": "I-F1max",
    "pixel_auroc": "P-AUROC", "pixel_ap": "P-AP", "pixel_f1max": "P-F1max", "pixel_aupro": "AUPRO",
}


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (np.floating, np.integer)):
        return _clean(value.item())
    return value


def _row(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: _clean(metrics.get(k, math.nan)) for k in (*METRIC_KEYS, *_COUNT_KEYS)}


def metrics_document(result: EvalResult) -> dict[str, Any]:
    """The ``metrics.json`` content: the metric keys, counts, ``seconds`` and ``per_defect`` rows."""
    doc = _row(result.metrics)
    doc["seconds"] = round(float(result.seconds), 3)
    doc["per_defect"] = {d: _row(m) for d, m in result.metrics.get("per_defect", {}).items()}
    return doc


def _write_text_atomic(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_metrics(result: EvalResult, path: str | Path) -> Path:
    return _write_text_atomic(Path(path), json.dumps(metrics_document(result), indent=2) + "\n")


def write_json(data: dict[str, Any], path: str | Path) -> Path:
    return _write_text_atomic(Path(path), json.dumps(data, indent=2, default=str) + "\n")


def write_scores_csv(result: EvalResult, path: str | Path) -> Path:
    """One row per test image: path, defect, label, score, verdict, mask known, map file, error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "defect", "label", "score", "verdict", "has_mask", "map", "error"])
        for r in result.records:
            map_rel = ""
            if r.map_file is not None:
                try:
                    map_rel = r.map_file.relative_to(path.parent).as_posix()
                except ValueError:
                    map_rel = str(r.map_file)
            w.writerow([
                str(r.path), r.defect, r.label, "" if r.score is None else f"{r.score:.6g}",
                r.verdict or "", int(r.has_mask), map_rel, r.error or "",
            ])
    os.replace(tmp, path)
    return path


def plot_curves(result: EvalResult, path: str | Path) -> Path:
    """Image-level ROC and PR curves and the score histograms of good vs defective images."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    labels, scores = result.labels(), result.scores()
    m = result.metrics
    fig = Figure(figsize=(13.5, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax_roc, ax_pr, ax_hist = fig.subplots(1, 3)
    both = labels.size and 0 < labels.sum() < labels.size

    def fmt(key: str) -> str:
        v = _clean(m.get(key))
        return "-" if v is None else f"{v:.3f}"

    if both:
        fpr, tpr, _ = roc_curve(labels, scores)
        ax_roc.plot(fpr, tpr, color="tab:blue", lw=2, label=f"AUROC {fmt('image_auroc')}")
        precision, recall, _ = precision_recall_curve(labels, scores)
        ax_pr.plot(np.r_[0.0, recall], np.r_[1.0, precision], color="tab:orange", lw=2,
                   drawstyle="steps-post", label=f"AP {fmt('image_aupr')}, F1max {fmt('image_f1max')}")
        ax_pr.axhline(labels.mean(), color="grey", ls=":", lw=1, label="chance")
    else:
        for ax in (ax_roc, ax_pr):
            ax.text(0.5, 0.5, "needs good and defective images", ha="center", va="center", transform=ax.transAxes)
    ax_roc.plot([0, 1], [0, 1], color="grey", ls=":", lw=1)
    ax_roc.set(xlabel="false positive rate", ylabel="true positive rate", title="Image ROC", xlim=(0, 1), ylim=(0, 1.02))
    ax_pr.set(xlabel="recall", ylabel="precision", title="Image precision-recall", xlim=(0, 1), ylim=(0, 1.02))
    for ax in (ax_roc, ax_pr):
        if both:
            ax.legend(loc="lower right" if ax is ax_roc else "lower left", fontsize=8)
        ax.grid(alpha=0.3)

    if scores.size:
        lo, hi = float(scores.min()), float(scores.max())
        if result.threshold is not None:
            lo, hi = min(lo, result.threshold), max(hi, result.threshold)
        bins = np.linspace(lo, hi if hi > lo else lo + 1e-6, 31)
        ax_hist.hist(scores[labels == 0], bins=bins, alpha=0.6, color="tab:green", label=f"good ({int((labels == 0).sum())})")
        ax_hist.hist(scores[labels == 1], bins=bins, alpha=0.6, color="tab:red", label=f"defective ({int(labels.sum())})")
        if result.threshold is not None:
            ax_hist.axvline(result.threshold, color="black", ls="--", lw=1, label=f"threshold {result.threshold:g}")
        ax_hist.legend(fontsize=8)
    ax_hist.set(xlabel="image score", ylabel="images", title="Score histogram")
    ax_hist.yaxis.set_major_locator(MaxNLocator(integer=True))
    title = f"{result.category} — {result.pipeline}"
    if result.profile_name:
        title += f" ({result.profile_name})"
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def format_table(result: EvalResult) -> str:
    """Console table, metrics in percent; one line for all images and one per defect type."""
    cols = [_HEADERS[k] for k in METRIC_KEYS]
    rows = [("all", result.metrics)] + sorted(result.metrics.get("per_defect", {}).items())
    name_w = max(8, *(len(str(name)) for name, _ in rows))

    def cell(v: Any) -> str:
        v = _clean(v)
        return "-" if v is None else f"{100 * v:.1f}"

    lines = [f"{'defect':<{name_w}}  " + "  ".join(f"{c:>7}" for c in cols) + "  images  anomalous"]
    lines.append("-" * len(lines[0]))
    for name, met in rows:
        vals = "  ".join(f"{cell(met.get(k)):>7}" for k in METRIC_KEYS)
        lines.append(f"{str(name):<{name_w}}  {vals}  {met.get('n_images', 0):>6}  {met.get('n_anomalous', 0):>9}")
    notes = [f"I-AUPR = {AUPR_DEFINITION}; pixel metrics at {result.eval_size}x{result.eval_size}, AUPRO to FPR 0.3"]
    if result.failed:
        notes.append(f"{len(result.failed)} images failed and are left out (see scores.csv)")
    if result.cancelled:
        notes.append("cancelled: metrics cover only the images done")
    n_done = len(result.scored)
    notes.append(f"{n_done} images in {result.seconds:.1f} s ({result.seconds / max(n_done, 1):.3f} s per image)")
    return "\n".join(lines + notes)


def write_report(result: EvalResult, out_dir: str | Path) -> dict[str, Path]:
    """metrics.json, scores.csv and curves.png in ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return {
        "metrics": write_metrics(result, out / "metrics.json"),
        "scores": write_scores_csv(result, out / "scores.csv"),
        "curves": plot_curves(result, out / "curves.png"),
    }
