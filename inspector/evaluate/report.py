"""Evaluation reports: ``metrics.json``, ``scores.csv``, ``curves.png``, a console table, and one
self-contained HTML report (curves, metrics, per-defect breakdown, the confusion counts at the chosen
threshold, and a gallery of the escapes and false rejects with their overlays).

Undefined metrics (``nan``, e.g. pixel metrics without masks) are written as JSON ``null`` and shown as
``-``. Plots use matplotlib's Agg canvas directly, so no global backend is switched (the GUI process
stays untouched).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from inspector.evaluate.metrics import AUPR_DEFINITION, METRIC_KEYS, precision_recall_curve, roc_curve
from inspector.files import atomic_write

if TYPE_CHECKING:  # pragma: no cover
    from inspector.evaluate.runner import EvalResult

log = logging.getLogger(__name__)

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
    return atomic_write(path, text, fsync=False)


def write_metrics(result: EvalResult, path: str | Path) -> Path:
    return _write_text_atomic(Path(path), json.dumps(metrics_document(result), indent=2) + "\n")


def write_json(data: dict[str, Any], path: str | Path) -> Path:
    return _write_text_atomic(Path(path), json.dumps(data, indent=2, default=str) + "\n")


def write_scores_csv(result: EvalResult, path: str | Path) -> Path:
    """One row per test image: path, defect, label, score, verdict, mask known, map file, error."""
    path = Path(path)
    fh = io.StringIO(newline="")
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
    return atomic_write(path, fh.getvalue(), fsync=False)


def plot_curves(result: EvalResult, path: str | Path) -> Path:
    """Image-level ROC and PR curves and the score histograms of good vs defective images."""
    fig = curves_figure(result)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def curves_figure(result: EvalResult, threshold: float | None = None) -> Any:
    """The figure of :func:`plot_curves`; ``threshold`` (default: the profile's) is drawn on the histogram."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    labels, scores = result.labels(), result.scores()
    thr = result.threshold if threshold is None else threshold
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
        if thr is not None:
            lo, hi = min(lo, thr), max(hi, thr)
        bins = np.linspace(lo, hi if hi > lo else lo + 1e-6, 31)
        ax_hist.hist(scores[labels == 0], bins=bins, alpha=0.6, color="tab:green", label=f"good ({int((labels == 0).sum())})")
        ax_hist.hist(scores[labels == 1], bins=bins, alpha=0.6, color="tab:red", label=f"defective ({int(labels.sum())})")
        if thr is not None:
            ax_hist.axvline(thr, color="black", ls="--", lw=1, label=f"threshold {thr:g}")
        ax_hist.legend(fontsize=8)
    ax_hist.set(xlabel="image score", ylabel="images", title="Score histogram")
    ax_hist.yaxis.set_major_locator(MaxNLocator(integer=True))
    title = f"{result.category} — {result.pipeline}"
    if result.profile_name:
        title += f" ({result.profile_name})"
    fig.suptitle(title)
    fig.tight_layout()
    return fig


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


# ------------------------------------------------------------------------------ confusion
@dataclass(frozen=True)
class Confusion:
    """Counts at one threshold; a part FAILs when its score reaches the threshold."""

    caught: int  # defective and FAIL (true positive)
    escapes: int  # defective but PASS (false negative)
    false_rejects: int  # good but FAIL (false positive)
    passed: int  # good and PASS (true negative)

    @property
    def n_defective(self) -> int:
        return self.caught + self.escapes

    @property
    def n_good(self) -> int:
        return self.false_rejects + self.passed

    @property
    def escape_rate(self) -> float:
        return self.escapes / self.n_defective if self.n_defective else float("nan")

    @property
    def false_reject_rate(self) -> float:
        return self.false_rejects / self.n_good if self.n_good else float("nan")


def confusion_at(scores: np.ndarray, labels: np.ndarray, threshold: float) -> Confusion:
    """Confusion counts of ``score >= threshold`` → FAIL against labels (1 = defective).

    The image score alone: the profile's ``min_defect_area_px`` (applied by the station's
    ``decide``) can turn a few of these FAILs into PASSes; the evaluation's own verdicts include it.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1).astype(bool)
    if s.shape != y.shape:
        raise ValueError(f"scores and labels differ in size: {s.size} vs {y.size}")
    fail = s >= threshold
    return Confusion(
        caught=int(np.sum(fail & y)),
        escapes=int(np.sum(~fail & y)),
        false_rejects=int(np.sum(fail & ~y)),
        passed=int(np.sum(~fail & ~y)),
    )


# ------------------------------------------------------------------------------ HTML report
GALLERY_LIMIT = 12
"""At most this many escapes and as many false rejects are shown (the worst first)."""
THUMB_SIDE = 320
"""Gallery images are scaled to this longest side and embedded as JPEG."""

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:22px;margin-bottom:4px} h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
.meta{color:#555;font-size:13px} table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:right} th{background:#f4f4f4}
td.l,th.l{text-align:left} .bad{color:#c0392b;font-weight:600} .warn{color:#b9770e;font-weight:600}
.gallery{display:flex;flex-wrap:wrap;gap:12px} figure{margin:0;border:1px solid #ddd;padding:6px;width:646px}
figure img{width:320px;height:auto;vertical-align:top;margin-right:2px} figcaption{font-size:12px;color:#333;margin-top:4px;
word-break:break-all} img.curves{max-width:100%}
"""


@dataclass
class GalleryItem:
    """One wrongly decided image: the picture and its overlay as data URIs."""

    record: Any
    kind: str  # "escape" | "false reject"
    image_uri: str
    overlay_uri: str | None


def _data_uri(rgb: np.ndarray, side: int = THUMB_SIDE) -> str:
    import cv2

    h, w = rgb.shape[:2]
    scale = min(1.0, side / max(h, w))
    if scale < 1.0:
        rgb = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    ok, enc = cv2.imencode(".jpg", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, 88])
    if not ok:
        raise OSError("JPEG encoding failed")
    return "data:image/jpeg;base64," + base64.b64encode(enc.tobytes()).decode("ascii")


def _png_uri(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def wrong_decisions(result: EvalResult, threshold: float, limit: int = GALLERY_LIMIT) -> list[tuple[Any, str]]:
    """(record, kind) of the escapes (lowest score first) and false rejects (highest first), ``limit`` each."""
    scored = result.scored
    escapes = sorted((r for r in scored if r.label and r.score < threshold), key=lambda r: r.score)
    rejects = sorted((r for r in scored if not r.label and r.score >= threshold), key=lambda r: -r.score)
    return [(r, "escape") for r in escapes[:limit]] + [(r, "false reject") for r in rejects[:limit]]


def _overlay_for(record: Any, image: np.ndarray, inspector: Any | None, threshold: float) -> np.ndarray | None:
    """The overlay the station would show: re-inspect with ``inspector``, else the saved map, else none."""
    from inspector.overlay import heat_vmax, render_overlay

    if inspector is not None:
        profile = inspector.profile.model_copy(deep=True).with_folder(inspector.profile.folder)
        profile.decision.image_threshold = threshold
        inspector.retune(profile)
        det = inspector.inspect(image, image_path=record.path).detection
        return render_overlay(image, det.anomaly_map, det.regions, vmax=heat_vmax(threshold))
    if record.map_file is not None and Path(record.map_file).is_file():
        amap = np.load(record.map_file)
        return render_overlay(image, amap.astype(np.float32), (), vmax=heat_vmax(threshold))
    return None


def build_gallery(result: EvalResult, threshold: float, inspector: Any | None = None,
                  limit: int = GALLERY_LIMIT) -> list[GalleryItem]:
    from inspector.imaging import ImageReadError, read_image

    items = []
    for rec, kind in wrong_decisions(result, threshold, limit):
        try:
            image = read_image(rec.path)
        except ImageReadError as exc:
            log.warning("report gallery: %s", exc)
            continue
        overlay = _overlay_for(rec, image, inspector, threshold)
        items.append(GalleryItem(rec, kind, _data_uri(image), _data_uri(overlay) if overlay is not None else None))
    return items


def _pct(v: Any) -> str:
    v = _clean(v)
    return "-" if v is None else f"{100 * v:.1f}"


def per_defect_counts(result: EvalResult, threshold: float) -> dict[str, Confusion]:
    """Confusion counts per defect type (``good`` holds the good images) at ``threshold``."""
    out: dict[str, Confusion] = {}
    for defect in sorted({r.defect for r in result.scored}):
        rows = [r for r in result.scored if r.defect == defect]
        out[defect] = confusion_at(np.array([r.score for r in rows]), np.array([r.label for r in rows]), threshold)
    return out


def html_report(result: EvalResult, threshold: float | None = None, inspector: Any | None = None,
                title: str = "", profile_version: int | None = None, limit: int = GALLERY_LIMIT) -> str:
    """The whole report as one self-contained HTML document (images embedded, no scripts)."""
    esc = html.escape
    if threshold is None and result.threshold is None:
        raise ValueError("no decision threshold: pass one (the result carries none)")
    t = float(result.threshold if threshold is None else threshold)  # type: ignore[arg-type]
    if not math.isfinite(t):
        raise ValueError(f"threshold must be finite, got {t}")
    conf = confusion_at(result.scores(), result.labels(), t)
    fig = curves_figure(result, t)
    m = result.metrics
    version = f" v{profile_version}" if profile_version is not None else ""
    heading = title or f"Evaluation of {result.profile_name or result.pipeline}{version}"
    when = time.strftime("%Y-%m-%d %H:%M")
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{esc(heading)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{esc(heading)}</h1>",
        f"<div class='meta'>profile <b>{esc(result.profile_name)}{esc(version)}</b> · pipeline "
        f"{esc(result.pipeline)} · dataset {esc(result.dataset)} ({esc(result.category)}) · "
        f"{len(result.scored)} images scored, {len(result.failed)} unreadable · pixel metrics at "
        f"{result.eval_size}×{result.eval_size} · {result.seconds:.1f} s · written {esc(when)}"
        + (" · <span class='warn'>cancelled: covers only the images done</span>" if result.cancelled else "")
        + "</div>",
        "<h2>Decision at the chosen threshold</h2>",
        f"<p>threshold <b>{t:g}</b> (a part FAILs when its image score reaches it)</p>",
        "<table><tr><th class='l'></th><th>FAIL</th><th>PASS</th><th>rate</th></tr>",
        f"<tr><th class='l'>defective ({conf.n_defective})</th><td>{conf.caught}</td>"
        f"<td class='bad'>{conf.escapes} escape{'' if conf.escapes == 1 else 's'}</td><td>{_pct(conf.escape_rate)} % escape</td></tr>",
        f"<tr><th class='l'>good ({conf.n_good})</th><td class='warn'>{conf.false_rejects} false "
        f"reject{'' if conf.false_rejects == 1 else 's'}</td>"
        f"<td>{conf.passed}</td><td>{_pct(conf.false_reject_rate)} % false reject</td></tr></table>",
        "<h2>Curves</h2>",
        f"<img class='curves' alt='ROC, precision-recall and score histogram' src='{_png_uri(fig)}'>",
        "<h2>Metrics (%)</h2>",
        "<table><tr><th class='l'>defect type</th>" + "".join(f"<th>{_HEADERS[k]}</th>" for k in METRIC_KEYS)
        + "<th>images</th><th>defective</th><th>caught</th><th>escapes</th><th>false rejects</th></tr>",
    ]
    counts = per_defect_counts(result, t)
    rows = [("all", m, conf)] + [(d, md, counts.get(d)) for d, md in sorted(m.get("per_defect", {}).items())]
    if "good" in counts and "good" not in m.get("per_defect", {}):
        rows.append(("good", {"n_images": counts["good"].n_good, "n_anomalous": 0}, counts["good"]))
    for name, met, c in rows:
        cells = "".join(f"<td>{_pct(met.get(k))}</td>" for k in METRIC_KEYS)
        cc = (f"<td>{c.caught}</td><td>{c.escapes}</td><td>{c.false_rejects}</td>" if c is not None
              else "<td>-</td><td>-</td><td>-</td>")
        parts.append(f"<tr><td class='l'>{esc(str(name))}</td>{cells}<td>{met.get('n_images', 0)}</td>"
                     f"<td>{met.get('n_anomalous', 0)}</td>{cc}</tr>")
    parts.append("</table>")
    parts.append(f"<p class='meta'>I-AUPR = {esc(AUPR_DEFINITION)}; AUPRO integrated to FPR 0.3. Per-defect rows "
                 "score each defect type against the good images.</p>")
    gallery = build_gallery(result, t, inspector, limit)
    n_wrong = conf.escapes + conf.false_rejects
    parts.append(f"<h2>Escapes and false rejects ({n_wrong}{', worst ' + str(len(gallery)) + ' shown' if len(gallery) < n_wrong else ''})</h2>")
    if not gallery:
        parts.append("<p>none at this threshold</p>")
    parts.append("<div class='gallery'>")
    for item in gallery:
        rec = item.record
        cls = "bad" if item.kind == "escape" else "warn"
        over = (f"<img alt='overlay' src='{item.overlay_uri}'>" if item.overlay_uri
                else "<span class='meta'>(no map kept; run with the profile to see the overlay)</span>")
        parts.append(
            f"<figure><img alt='image' src='{item.image_uri}'>{over}<figcaption><span class='{cls}'>"
            f"{esc(item.kind)}</span> · {esc(rec.defect)} · score {rec.score:.4f} → "
            f"{'FAIL' if rec.score >= t else 'PASS'} at {t:g}"
            f"<br>{esc(str(rec.path))}</figcaption></figure>")
    parts.append("</div></body></html>")
    return "\n".join(parts)


def write_html_report(result: EvalResult, path: str | Path, threshold: float | None = None,
                      inspector: Any | None = None, profile_version: int | None = None,
                      limit: int = GALLERY_LIMIT) -> Path:
    """Write :func:`html_report` atomically to ``path``."""
    return _write_text_atomic(Path(path), html_report(result, threshold, inspector, profile_version=profile_version,
                                                      limit=limit))
