"""Threshold tuning and evaluation: run ``evaluate`` on a labelled folder and pick the threshold.

The run (MVTec-AD / VisA / plain-folder layouts, :mod:`inspector.evaluate`) is a worker job with
progress and cancel. The plots show the image-score histograms of good vs defective parts with the
decision threshold as a draggable line, the ROC and PR curves with the operating point, and the
confusion counts at the line — escapes (defective parts passed) and false rejects (good parts
failed) — which follow the line live. "Apply to profile" saves the threshold as a new profile
version. Clicking a row of the per-image table shows that image with its heatmap, predicted
contours and ground truth in the station's image view.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from inspector.evaluate.datasets import LAYOUTS, load_dataset
from inspector.evaluate.metrics import precision_recall_curve, roc_curve
from inspector.evaluate.report import Confusion, confusion_at, write_html_report
from inspector.evaluate.runner import EvalResult, evaluate
from inspector.ground_truth import read_mask
from inspector.imaging import read_image
from inspector.inspection import Inspector
from inspector.overlay import heat_vmax
from inspector.profile import ProductProfile, ProfileError, load_profile, save_profile
from inspector.settings import Settings
from inspector.ui.engineer_jobs import JobClient
from inspector.ui.image_view import ImageView

log = logging.getLogger(__name__)

HIST_BINS = 30
GOOD_COLOUR = (52, 152, 219)
BAD_COLOUR = (231, 76, 60)
LINE_COLOUR = (241, 196, 15)  # visible on pyqtgraph's dark and light backgrounds
COLUMNS = ("image", "defect", "truth", "score", "verdict")


def histogram_edges(scores: np.ndarray, bins: int = HIST_BINS) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    lo, hi = (float(s.min()), float(s.max())) if s.size else (0.0, 1.0)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, bins + 1)


class EvaluationView(QWidget):
    """Run an evaluation of the current profile and tune its decision threshold."""

    profile_saved = Signal(str, float)  # profile folder, applied threshold

    def __init__(self, worker: Any, settings: Settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        self.jobs = JobClient(worker, "evaluation", self)
        self.profile: ProductProfile | None = None
        self.result: EvalResult | None = None
        self._inspector: Inspector | None = None
        self._scores = np.zeros(0)
        self._labels = np.zeros(0, dtype=np.int64)
        self._rows: list[Any] = []
        self._masks: dict[Path, Path | None] = {}
        self._syncing = False

        # ---- run controls
        self.dataset_edit = QLineEdit()
        self.dataset_edit.setPlaceholderText("labelled folder: MVTec-AD / VisA category, or good/ + bad/")
        self.browse_button = QPushButton("Browse…")
        self.browse_button.clicked.connect(self._browse)
        self.layout_combo = QComboBox()
        self.layout_combo.addItems(["auto", *LAYOUTS])
        self.eval_size = QSpinBox()
        self.eval_size.setRange(32, 1024)
        self.eval_size.setValue(256)
        self.eval_size.setSuffix(" px")
        self.eval_size.setToolTip("resolution of the pixel metrics")
        self.profile_label = QLabel("no profile open")
        self.profile_label.setTextFormat(Qt.TextFormat.RichText)
        self.run_button = QPushButton("Run evaluation")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.status = QLabel("no evaluation yet")  # the metrics of the last run stay here
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.message = QLabel("")  # why a button is disabled, what Apply / Export did
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.message.setStyleSheet("color: #555")
        self.run_hint = QLabel("")  # why "Run evaluation" is disabled, beside it
        self.run_hint.setStyleSheet("color: #b9770e")
        self.run_hint.setWordWrap(True)

        # ---- plots
        self.graphics = pg.GraphicsLayoutWidget()
        self.graphics.setMinimumHeight(220)
        self.hist_plot = self.graphics.addPlot(title="image scores")
        self.hist_plot.addLegend(offset=(-10, 10))
        self.hist_plot.setLabel("bottom", "score")
        self.hist_plot.setLabel("left", "images")
        self.good_hist = pg.PlotDataItem(stepMode="center", fillLevel=0, name="good",
                                         pen=pg.mkPen(GOOD_COLOUR, width=2), brush=(*GOOD_COLOUR, 80))
        self.bad_hist = pg.PlotDataItem(stepMode="center", fillLevel=0, name="defective",
                                        pen=pg.mkPen(BAD_COLOUR, width=2), brush=(*BAD_COLOUR, 80))
        self.hist_plot.addItem(self.good_hist)
        self.hist_plot.addItem(self.bad_hist)
        self.hist_plot.getAxis("bottom").enableAutoSIPrefix(False)
        self.threshold_line = pg.InfiniteLine(pos=0.5, angle=90, movable=True, pen=pg.mkPen(LINE_COLOUR, width=2),
                                              hoverPen=pg.mkPen(LINE_COLOUR, width=4), label="threshold {value:.3f}",
                                              labelOpts={"position": 0.7, "color": LINE_COLOUR, "movable": True})
        self.threshold_line.sigPositionChanged.connect(self._on_line_moved)
        self.hist_plot.addItem(self.threshold_line)
        self.roc_plot = self.graphics.addPlot(title="ROC")
        self.roc_plot.setLabel("bottom", "false reject rate (FPR)")
        self.roc_plot.setLabel("left", "detection rate (TPR)")
        self.roc_plot.setRange(xRange=(0, 1), yRange=(0, 1))
        self.roc_curve = self.roc_plot.plot(pen=pg.mkPen(BAD_COLOUR, width=2))
        self.roc_point = self.roc_plot.plot(symbol="o", symbolSize=11, symbolBrush=LINE_COLOUR, pen=None)
        self.pr_plot = self.graphics.addPlot(title="precision / recall")
        self.pr_plot.setLabel("bottom", "recall")
        self.pr_plot.setLabel("left", "precision")
        self.pr_plot.setRange(xRange=(0, 1), yRange=(0, 1))
        self.pr_curve = self.pr_plot.plot(pen=pg.mkPen(GOOD_COLOUR, width=2))
        self.pr_point = self.pr_plot.plot(symbol="o", symbolSize=11, symbolBrush=LINE_COLOUR, pen=None)

        # ---- threshold controls
        self.threshold_spin = QDoubleSpinBox()
        self.threshold_spin.setDecimals(4)
        self.threshold_spin.setRange(0.0, 1.0)  # every pipeline scores in [0, 1] (profile validation)
        self.threshold_spin.setSingleStep(0.01)
        self.threshold_spin.setValue(0.5)
        # typed text is taken on Enter / focus-out: a value echoed back per keystroke would
        # reformat "0." to "0.0000" under the cursor (arrows and the line still follow live)
        self.threshold_spin.setKeyboardTracking(False)
        self.threshold_spin.valueChanged.connect(self._on_spin)
        self.confusion_label = QLabel("")
        self.confusion_label.setTextFormat(Qt.TextFormat.RichText)
        self.apply_button = QPushButton("Apply to profile")
        self.apply_button.setToolTip("Save this threshold as the profile's decision threshold (new version)")
        self.apply_button.clicked.connect(self.apply_threshold)
        self.apply_button.setEnabled(False)
        self.report_button = QPushButton("Export report…")
        self.report_button.setToolTip("One HTML file: curves, metrics, per-defect table, confusion counts at "
                                      "this threshold, and the escapes and false rejects with their overlays")
        self.report_button.clicked.connect(self._export_dialog)
        self.report_button.setEnabled(False)

        # ---- per-image table + detail
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.cellClicked.connect(lambda row, _col: self.open_row(row))
        self.detail = ImageView()  # the station's view: heatmap, contours, ground truth, zoom
        self.detail.setMinimumSize(240, 240)
        self.detail.set_message("click an image in the table")
        self.detail_caption = QLabel("")
        self.detail_caption.setWordWrap(True)

        run_row = QHBoxLayout()
        run_row.addWidget(self.profile_label)
        run_row.addWidget(QLabel("Dataset"))
        run_row.addWidget(self.dataset_edit, 1)
        run_row.addWidget(self.browse_button)
        run_row.addWidget(QLabel("layout"))
        run_row.addWidget(self.layout_combo)
        run_row.addWidget(QLabel("pixel metrics at"))
        run_row.addWidget(self.eval_size)
        run_row.addWidget(self.run_button)
        run_row.addWidget(self.cancel_button)
        thr_row = QHBoxLayout()
        thr_row.addWidget(QLabel("Decision threshold"))
        thr_row.addWidget(self.threshold_spin)
        thr_row.addWidget(self.confusion_label, 1)
        thr_row.addWidget(self.apply_button)
        thr_row.addWidget(self.report_button)
        detail_host = QWidget()
        dv = QVBoxLayout(detail_host)
        dv.setContentsMargins(0, 0, 0, 0)
        dv.addWidget(self.detail, 1)
        dv.addWidget(self.detail_caption)
        bottom = QSplitter(Qt.Orientation.Horizontal)
        bottom.addWidget(self.table)
        bottom.addWidget(detail_host)
        bottom.setStretchFactor(0, 2)
        bottom.setStretchFactor(1, 1)
        main = QSplitter(Qt.Orientation.Vertical)
        main.addWidget(self.graphics)
        main.addWidget(bottom)

        layout = QVBoxLayout(self)
        layout.addLayout(run_row)
        layout.addWidget(self.run_hint)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.message)
        layout.addLayout(thr_row)
        layout.addWidget(main, 1)
        self.jobs.busy_changed.connect(self._on_busy)
        self._update_buttons()

    # ------------------------------------------------------------------ profile
    def set_profile(self, profile: ProductProfile | None) -> None:
        """The profile to evaluate (as saved); its threshold becomes the line's position."""
        self.profile = profile
        if profile is None:
            self.profile_label.setText("no profile open")
        else:
            self.profile_label.setText(f"Evaluates <b>{profile.name} v{profile.version}</b> ({profile.pipeline})")
        if profile is not None and self.result is None:
            self.set_threshold(profile.decision.image_threshold)
        self._update_buttons()

    def set_profile_folder(self, folder: str | Path) -> None:
        try:
            self.set_profile(load_profile(folder, check_files=False))
        except ProfileError as exc:
            self.status.setText(str(exc))

    # ------------------------------------------------------------------ run
    def _browse(self) -> None:
        start = self.dataset_edit.text().strip() or (str(self.profile.folder) if self.profile and self.profile.folder
                                                      else "")
        folder = QFileDialog.getExistingDirectory(self, "Labelled dataset folder (one category)", start)
        if folder:
            self.dataset_edit.setText(folder)

    def run(self) -> None:
        if self.profile is None:
            self.status.setText("open a profile first")
            return
        root = self.dataset_edit.text().strip()
        if not root:
            self.status.setText("choose a labelled dataset folder")
            return
        profile = self.profile.model_copy(deep=True).with_folder(self.profile.folder)
        layout, size = self.layout_combo.currentText(), self.eval_size.value()

        def job(hub: Any, progress: Callable[[float, str], None], cancelled: Callable[[], bool]) -> tuple:
            dataset = load_dataset(root, layout)
            inspector = Inspector(profile, hub)
            result = evaluate(inspector, dataset, size, progress, cancelled)
            return result, inspector, {s.path: s.mask_path for s in dataset.samples}

        self.progress.setValue(0)
        self.status.setText(f"evaluating {profile.name} v{profile.version} on {root}…")
        self.jobs.submit("run", job, done=self._on_done, failed=self._on_failed, progress=self._on_progress)

    def cancel(self) -> None:
        self.status.setText("cancelling after the current image…")
        self.jobs.cancel("run")  # a queued run ends at once (job_failed "cancelled")

    def _on_progress(self, frac: float, msg: str) -> None:
        self.progress.setValue(int(max(0.0, min(1.0, frac)) * 1000))
        self.status.setText(msg)

    def _on_failed(self, msg: str) -> None:
        if msg.startswith("cancelled"):
            self.status.setText("evaluation cancelled")
        else:
            self.status.setText(f"<span style='color:#c0392b'>evaluation failed: {msg}</span>")

    def _on_done(self, payload: tuple) -> None:
        result, inspector, masks = payload
        self._inspector = inspector
        self._masks = masks
        self.show_result(result)

    def _on_busy(self, name: str, _busy: bool) -> None:
        self._update_buttons()

    def run_blocked_reason(self) -> str:
        """Why "Run evaluation" is disabled ("" when it is enabled)."""
        if self.profile is None:
            return "Open a profile in the Profile tab first: the evaluation runs the open profile."
        if self.jobs.is_busy("run"):
            return "An evaluation is running; cancel it or wait for it to finish."
        return ""

    def _update_buttons(self) -> None:
        running = self.jobs.is_busy("run")
        reason = self.run_blocked_reason()
        self.run_button.setEnabled(not reason)
        self.run_button.setToolTip(reason or "Run the open profile on every image of the dataset")
        self.run_hint.setText(reason if not running else "")
        self.cancel_button.setEnabled(running)
        self.apply_button.setEnabled(self.profile is not None and self.profile.folder is not None and not running)
        self.report_button.setEnabled(self.result is not None and not running)

    # ------------------------------------------------------------------ results
    def show_result(self, result: EvalResult) -> None:
        """Plot a finished (or cancelled) evaluation and fill the table."""
        self.result = result
        self._rows = [r for r in result.records if r.ok]
        self._scores = np.array([r.score for r in self._rows], dtype=np.float64)
        self._labels = np.array([r.label for r in self._rows], dtype=np.int64)
        m = result.metrics
        parts = [f"{len(self._rows)} images scored ({int(self._labels.sum())} defective)"]
        for key, name in (("image_auroc", "image AUROC"), ("pixel_auroc", "pixel AUROC"), ("pixel_aupro", "AUPRO")):
            value = m.get(key)
            if value is not None and np.isfinite(value):
                parts.append(f"{name} {value:.3f}")
        if result.failed:
            parts.append(f"{len(result.failed)} unreadable")
        if result.cancelled:
            parts.append("cancelled")
        parts.append(f"{result.seconds:.1f} s")
        self.status.setText(" · ".join(parts))
        self.progress.setValue(1000)

        edges = histogram_edges(self._scores)
        good, bad = self._scores[self._labels == 0], self._scores[self._labels == 1]
        self.good_hist.setData(edges, np.histogram(good, edges)[0].astype(float))
        self.bad_hist.setData(edges, np.histogram(bad, edges)[0].astype(float))
        if good.size and bad.size:
            fpr, tpr, _ = roc_curve(self._labels, self._scores)
            precision, recall, _ = precision_recall_curve(self._labels, self._scores)
            self.roc_curve.setData(fpr, tpr)
            self.pr_curve.setData(recall, precision)
        else:
            self.roc_curve.setData([], [])
            self.pr_curve.setData([], [])
        span = edges[-1] - edges[0]
        self.threshold_line.setBounds((max(0.0, edges[0] - span), min(1.0, edges[-1] + span)))
        self.hist_plot.enableAutoRange()
        self._fill_table()
        start = result.threshold if result.threshold is not None else self.threshold()
        self.set_threshold(start)
        self.refresh_counts()  # the line may not have moved, and then it signals nothing
        self._update_buttons()

    def _fill_table(self) -> None:
        self.table.setSortingEnabled(False)
        self.table.setRowCount(len(self._rows))
        for i, rec in enumerate(self._rows):
            cells = (rec.path.name, rec.defect, "defective" if rec.label else "good", f"{rec.score:.4f}", "")
            for j, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setData(Qt.ItemDataRole.UserRole, i)
                if j == 0:
                    item.setToolTip(str(rec.path))
                self.table.setItem(i, j, item)
        self._update_verdicts()

    def _update_verdicts(self) -> None:
        t = self.threshold()
        for row in range(self.table.rowCount()):
            idx = self.table.item(row, 0).data(Qt.ItemDataRole.UserRole)
            score, label = self._scores[idx], self._labels[idx]
            fail = score >= t
            item = self.table.item(row, 4)
            item.setText("FAIL" if fail else "PASS")
            wrong = bool(fail) != bool(label)
            colour = QColor(250, 219, 216) if wrong else QColor(255, 255, 255)
            for col in range(self.table.columnCount()):
                self.table.item(row, col).setBackground(QBrush(colour))

    # ------------------------------------------------------------------ threshold
    def threshold(self) -> float:
        return float(self.threshold_line.value())

    def set_threshold(self, value: float) -> None:
        self.threshold_line.setValue(float(value))  # -> _on_line_moved

    def confusion(self) -> Confusion:
        return confusion_at(self._scores, self._labels, self.threshold())

    def _on_spin(self, value: float) -> None:
        if not self._syncing:
            self.set_threshold(value)

    def _on_line_moved(self) -> None:
        t = self.threshold()
        self._syncing = True
        try:
            if abs(self.threshold_spin.value() - t) > 0.5 * 10 ** -self.threshold_spin.decimals():
                self.threshold_spin.setValue(t)
        finally:
            self._syncing = False
        self.refresh_counts()

    def refresh_counts(self) -> None:
        """Confusion counts, operating points and verdict column at the current threshold."""
        c = self.confusion()
        fr = f" ({c.false_reject_rate:.1%})" if c.n_good else ""
        es = f" ({c.escape_rate:.1%})" if c.n_defective else ""
        self.confusion_label.setText(
            f"<b style='color:#c0392b'>escapes {c.escapes}</b>{es} of {c.n_defective} defective &nbsp;·&nbsp; "
            f"<b style='color:#b9770e'>false rejects {c.false_rejects}</b>{fr} of {c.n_good} good &nbsp;·&nbsp; "
            f"caught {c.caught}, passed {c.passed}"
        )
        if c.n_good and c.n_defective:
            self.roc_point.setData([c.false_rejects / c.n_good], [c.caught / c.n_defective])
            precision = c.caught / (c.caught + c.false_rejects) if c.caught + c.false_rejects else 1.0
            self.pr_point.setData([c.caught / c.n_defective], [precision])
        self._update_verdicts()

    def apply_threshold(self) -> Path | None:
        """Save the line's threshold into the profile on disk as a new version."""
        if self.profile is None or self.profile.folder is None:
            return None
        t = round(self.threshold(), 6)
        try:
            current = load_profile(self.profile.folder, check_files=False)
            old = current.decision.image_threshold
            current.decision.image_threshold = t
            where = f" on {Path(self.result.dataset).name}" if self.result is not None and self.result.dataset else ""
            file = save_profile(current, bump=True, note=f"decision threshold {old:g} -> {t:g} from the evaluation{where}")
        except (ProfileError, OSError, ValueError) as exc:
            self.message.setText(f"<span style='color:#c0392b'>threshold not saved: {exc}</span>")
            return None
        self.set_profile(current)
        self.message.setText(f"threshold {t:g} saved as {current.name} v{current.version}")
        self.profile_saved.emit(str(current.folder), t)
        return file

    # ------------------------------------------------------------------ report
    def _export_dialog(self) -> None:
        if self.result is None:
            return
        start = Path(self.profile.folder) if self.profile and self.profile.folder else Path.cwd()
        name = f"report_{self.result.profile_name or 'eval'}_{Path(self.result.dataset).name or 'data'}.html"
        path, _ = QFileDialog.getSaveFileName(self, "Evaluation report", str(start / name), "HTML (*.html)")
        if path:
            self.export_report(path)

    def export_report(self, path: str | Path) -> None:
        """Write the HTML report at the current threshold (worker job: the gallery re-inspects images)."""
        if self.result is None:
            return
        result, inspector, threshold = self.result, self._inspector, self.threshold()
        # the version that was evaluated (Apply may have saved a newer one since)
        version = inspector.profile.version if inspector is not None else (self.profile.version if self.profile else None)
        target = Path(path)

        def job(_hub: Any, _progress: Any, _cancelled: Any) -> Path:
            return write_html_report(result, target, threshold, inspector, profile_version=version)

        self.message.setText(f"writing {target.name}…")
        self.jobs.submit("report", job, done=lambda p: self.message.setText(f"report written: {p}"),
                         failed=lambda msg: self.message.setText(
                             f"<span style='color:#c0392b'>report not written: {msg}</span>"))

    # ------------------------------------------------------------------ detail
    def open_row(self, row: int) -> None:
        """Inspect the row's image again (worker) and show it with its overlay and ground truth."""
        if self._inspector is None or row < 0 or row >= self.table.rowCount():
            return
        rec = self._rows[self.table.item(row, 0).data(Qt.ItemDataRole.UserRole)]
        inspector = self._inspector
        threshold = self.threshold()
        mask_path = self._masks.get(rec.path)

        def job(_hub: Any, _progress: Any, _cancelled: Any) -> tuple:
            tuned = inspector.profile.model_copy(deep=True).with_folder(inspector.profile.folder)
            tuned.decision.image_threshold = threshold
            inspector.retune(tuned)
            image = read_image(rec.path)
            ins = inspector.inspect(image, image_path=rec.path)
            gt = None
            if mask_path is not None:
                gt = read_mask(mask_path, image.shape[:2])
            return image, ins, gt, rec, threshold

        self.detail_caption.setText(f"inspecting {rec.path.name}…")
        self.jobs.submit("detail", job, done=self._on_detail, failed=self._on_detail_failed)

    def _on_detail(self, payload: tuple) -> None:
        image, ins, gt, rec, threshold = payload
        det = ins.detection
        vmax = heat_vmax(threshold)
        self.detail.show_inspection(image, det.anomaly_map, det.regions, gt_mask=gt, vmax=vmax)
        truth = "defective" if rec.label else "good"
        self.detail_caption.setText(
            f"{rec.path.name}: {ins.verdict} (score {det.image_score:.4f}), truth {truth} ({rec.defect})")

    def _on_detail_failed(self, msg: str) -> None:
        self.detail_caption.setText(f"<span style='color:#c0392b'>{msg}</span>")
