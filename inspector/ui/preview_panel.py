"""Image pane of the profile editor: sample image, live overlay, and the ROI polygon tool.

Shows the last preview result in the station's own :class:`inspector.ui.image_view.ImageView`
(heatmap, contours, boxes; one image pixel is one view unit, y pointing down), so the ROI
polygon drawn on that view has its vertices in image pixel coordinates (x, y), as the profile
stores them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from inspector.imaging import IMAGE_EXTENSIONS, ImageReadError, read_image
from inspector.inspection import Inspection
from inspector.overlay import heat_vmax
from inspector.ui.image_view import ImageView

log = logging.getLogger(__name__)

ROI_INSET = 0.1
"""A new ROI starts as a rectangle inset by this fraction of the image size."""

EFFECT_TEXT = {
    "none": "re-used cached analysis",
    "finish": "re-ran the cheap stage only",
    "prepare": "re-prepared the profile and re-analysed",
    "pipeline": "built the pipeline and analysed",
}


class PreviewPanel(QWidget):
    """Sample picker, overlay view with ROI editing, and the verdict of the last preview."""

    sample_changed = Signal(str)
    roi_changed = Signal(object)  # list[(x, y)] in image pixels, or None

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._image_shape: tuple[int, int] | None = None
        self._roi_item: pg.PolyLineROI | None = None
        self._silent = False
        self.start_dir = ""
        """Where the sample-image dialog opens (the editor sets the profile folder)."""

        self.sample_combo = QComboBox()
        self.sample_combo.setMinimumContentsLength(24)
        self.sample_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.sample_combo.currentIndexChanged.connect(self._on_combo)
        self.open_button = QPushButton("Sample image…")
        self.open_button.clicked.connect(self._open_dialog)
        self.draw_roi_button = QPushButton("Draw ROI")
        self.draw_roi_button.setToolTip("Add a polygon; drag its corners, click an edge to add a corner")
        self.draw_roi_button.clicked.connect(self.start_roi)
        self.clear_roi_button = QPushButton("Clear ROI")
        self.clear_roi_button.clicked.connect(lambda: self.set_roi(None, emit=True))

        self.image_view = ImageView()
        self.image_view.setMinimumSize(320, 240)
        self.view = self.image_view.view

        self.verdict_label = QLabel("no preview yet")
        self.verdict_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.effect_label = QLabel("")
        self.effect_label.setStyleSheet("color: gray")
        self.roi_error = QLabel("")
        self.roi_error.setStyleSheet("color: #c0392b")
        self.roi_error.setWordWrap(True)
        self.roi_error.hide()

        top = QHBoxLayout()
        top.addWidget(self.sample_combo, 1)
        top.addWidget(self.open_button)
        roi_row = QHBoxLayout()
        roi_row.addWidget(self.draw_roi_button)
        roi_row.addWidget(self.clear_roi_button)
        roi_row.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(top)
        layout.addWidget(self.image_view, 1)
        layout.addLayout(roi_row)
        layout.addWidget(self.roi_error)
        layout.addWidget(self.verdict_label)
        layout.addWidget(self.effect_label)

    # ------------------------------------------------------------------ samples
    def sample_path(self) -> str | None:
        data = self.sample_combo.currentData()
        return str(data) if data else None

    def add_sample(self, path: str | Path, select: bool = True) -> None:
        path = str(Path(path))
        idx = self.sample_combo.findData(path)
        if idx < 0:
            self.sample_combo.addItem(Path(path).name, path)
            idx = self.sample_combo.count() - 1
        if select:
            self.sample_combo.setCurrentIndex(idx)

    def clear_samples(self) -> None:
        """Forget the samples of the previous profile (another product looks different)."""
        self.sample_combo.blockSignals(True)
        self.sample_combo.clear()
        self.sample_combo.blockSignals(False)
        self._image_shape = None
        self.image_view.set_message("pick a sample image of this product")
        self.verdict_label.setText("no preview yet")
        self.effect_label.setText("")

    def _on_combo(self, _index: int) -> None:
        path = self.sample_path()
        if not path:
            return
        try:  # show the picture at once; the overlay follows when the worker is done
            self.show_image(read_image(path))  # the station reader's cap, so ROI pixels match the full image
            self.verdict_label.setText("analysing…")
        except ImageReadError as exc:
            self.show_message(str(exc), error=True)
            return
        self.sample_changed.emit(path)

    def _open_dialog(self) -> None:
        pattern = " ".join(f"*{e}" for e in IMAGE_EXTENSIONS)
        path, _ = QFileDialog.getOpenFileName(self, "Sample image", self.start_dir, f"Images ({pattern})")
        if path:
            self.add_sample(path)

    # ------------------------------------------------------------------ results
    def show_image(self, image: np.ndarray) -> None:
        """The bare sample image (its overlay follows when the preview job is done)."""
        self._image_shape = image.shape[:2]
        self.image_view.show_inspection(image)

    def show_result(self, image: np.ndarray, inspection: Inspection, effect: str, threshold: float,
                    analysed: bool = False) -> None:
        det = inspection.detection
        self._image_shape = image.shape[:2]
        self.image_view.show_inspection(image, det.anomaly_map, det.regions, vmax=heat_vmax(threshold))
        colour = "#c0392b" if inspection.verdict == "FAIL" else "#1e8449"
        self.verdict_label.setText(
            f"<b style='color:{colour}'>{inspection.verdict}</b> &nbsp; score {det.image_score:.3f}"
            f" (threshold {threshold:g}) &nbsp; {len(det.regions)} region(s)"
        )
        timing = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in det.timings.items())
        what = "analysed the image" if analysed and effect in ("none", "finish") else EFFECT_TEXT.get(effect, effect)
        self.effect_label.setText(f"{what} — {timing}")

    def show_message(self, text: str, error: bool = False) -> None:
        self.verdict_label.setText(f"<span style='color:#c0392b'>{text}</span>" if error else text)
        self.effect_label.setText("")

    # ------------------------------------------------------------------ ROI
    def roi_points(self) -> list[tuple[float, float]] | None:
        if self._roi_item is None:
            return None
        pts = []
        for _, local in self._roi_item.getLocalHandlePositions():
            p = self._roi_item.mapToParent(local)
            pts.append((round(float(p.x()), 1), round(float(p.y()), 1)))
        return pts

    def set_roi(self, points: list[tuple[float, float]] | None, emit: bool = False) -> None:
        if self._roi_item is not None:
            self.view.removeItem(self._roi_item)
            self._roi_item = None
        if points:
            self._roi_item = pg.PolyLineROI([list(p) for p in points], closed=True, pen=pg.mkPen("y", width=2))
            self._roi_item.sigRegionChangeFinished.connect(self._on_roi_moved)
            self.view.addItem(self._roi_item)
        if emit:
            self.roi_changed.emit(self.roi_points())

    def start_roi(self) -> None:
        """Add a rectangular polygon inset in the current image (or a 100 px square)."""
        h, w = self._image_shape or (100, 100)
        x0, y0, x1, y1 = w * ROI_INSET, h * ROI_INSET, w * (1 - ROI_INSET), h * (1 - ROI_INSET)
        self.set_roi([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], emit=True)

    def _on_roi_moved(self) -> None:
        self.roi_changed.emit(self.roi_points())

    def set_roi_error(self, text: str) -> None:
        self.roi_error.setText(text)
        self.roi_error.setVisible(bool(text))
