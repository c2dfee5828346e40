"""The inspection image with its layers: heatmap, predicted contours, ground truth, boxes, labels.

Coordinates: one scene unit is one image pixel; pixel ``(row r, column c)`` covers the square
``[c, c+1) × [r, r+1)`` (pyqtgraph ``ImageItem`` with ``axisOrder="row-major"``, y pointing down).
The heatmap is always stretched over exactly that rectangle, whatever its own resolution, so
it sits on the pixels it describes. Contours from masks are drawn through pixel centres.

Keyboard (when the view has focus or via the main window): ``H`` heatmap on/off, ``F`` fit,
``+`` / ``-`` zoom in / out. Each region is labelled with what the pipeline knows (class or
phrase, score), its centre and size in pixels; :meth:`ImageView.zoom_to_region` frames one.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QFont, QPainterPath, QPen
from PySide6.QtWidgets import (
    QCheckBox,
    QGraphicsPathItem,
    QGraphicsRectItem,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from inspector.detect.base import Region
from inspector.ui.text import shrinkable, wrap_anywhere

PRED_COLOR = QColor(255, 0, 0)
GT_COLOR = QColor(255, 255, 255)
BOX_COLOR = QColor(255, 64, 64)
LABEL_COLOR = QColor(255, 255, 0)


def jet_lut() -> np.ndarray:
    """256×3 uint8 jet lookup table, identical to OpenCV's (and :func:`inspector.overlay.colorize_map`)."""
    ramp = np.arange(256, dtype=np.uint8).reshape(-1, 1)
    return cv2.cvtColor(cv2.applyColorMap(ramp, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB).reshape(256, 3)


def mask_contours(mask: np.ndarray) -> list[np.ndarray]:
    """Outer contours of a bool mask as (N, 2) float arrays of pixel-centre (x, y) coordinates."""
    cs, _ = cv2.findContours(np.ascontiguousarray(mask, dtype=np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [c.reshape(-1, 2).astype(np.float64) + 0.5 for c in cs]


def _path(contours: Sequence[np.ndarray]) -> QPainterPath:
    path = QPainterPath()
    for c in contours:
        if len(c) == 0:
            continue
        path.moveTo(QPointF(*c[0]))
        for x, y in c[1:]:
            path.lineTo(QPointF(x, y))
        path.closeSubpath()
    return path


def _pen(color: QColor, width: float = 2.0, style: Qt.PenStyle = Qt.PenStyle.SolidLine) -> QPen:
    pen = QPen(color)
    pen.setWidthF(width)
    pen.setCosmetic(True)  # width in screen pixels whatever the zoom
    pen.setStyle(style)
    return pen


def region_label(r: Region) -> str:
    """``scratch 0.87 · (48, 22) · 12×9 px`` — label, score, centre and size of the region's box."""
    x0, y0, x1, y1 = r.box
    return f"{r.label} {r.score:.2f} · ({(x0 + x1) // 2}, {(y0 + y1) // 2}) · {max(x1 - x0, 1)}×{max(y1 - y0, 1)} px"


def _new_view() -> tuple[pg.GraphicsLayoutWidget, pg.ViewBox]:
    widget = pg.GraphicsLayoutWidget()
    widget.setBackground(QColor(24, 24, 24))
    widget.ci.setContentsMargins(0, 0, 0, 0)
    view = widget.addViewBox(lockAspect=True, invertY=True, enableMenu=False)
    view.setDefaultPadding(0.0)
    return widget, view


class ImageView(QWidget):
    """pyqtgraph view of one inspection, plus an optional nearest-reference view beside it."""

    layers_changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._shape: tuple[int, int] | None = None
        self._regions: list[Region] = []

        self.graphics, self.view = _new_view()
        self.image_item = pg.ImageItem(axisOrder="row-major")
        self.heat_item = pg.ImageItem(axisOrder="row-major")
        self.heat_item.setLookupTable(jet_lut())
        self.heat_item.setZValue(1)
        self.view.addItem(self.image_item)
        self.view.addItem(self.heat_item)
        self.contour_items: list[QGraphicsPathItem] = []
        self.gt_items: list[QGraphicsPathItem] = []
        self.box_items: list[QGraphicsRectItem] = []
        self.label_items: list[pg.TextItem] = []

        self.ref_graphics, self.ref_view = _new_view()
        self.ref_item = pg.ImageItem(axisOrder="row-major")
        self.ref_view.addItem(self.ref_item)
        self.ref_view.setXLink(self.view)
        self.ref_view.setYLink(self.view)
        self.ref_title = QLabel("nearest reference shot")
        self.ref_title.setAlignment(Qt.AlignmentFlag.AlignCenter)
        ref_box = QWidget()
        rl = QVBoxLayout(ref_box)
        rl.setContentsMargins(0, 0, 0, 0)
        rl.addWidget(self.ref_title)
        rl.addWidget(self.ref_graphics, 1)
        self.ref_panel = ref_box
        self.ref_panel.setVisible(False)

        # ---- controls
        self.heat_check = QCheckBox("Heat (H)")
        self.heat_check.setChecked(True)
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(40)
        self.opacity.setMinimumWidth(50)
        self.opacity.setMaximumWidth(120)
        self.opacity.setToolTip("heatmap opacity")
        self.contour_check = QCheckBox("Contours (C)")
        self.contour_check.setChecked(True)
        self.box_check = QCheckBox("Boxes (X)")
        self.box_check.setChecked(True)
        self.gt_check = QCheckBox("Truth (G)")
        self.gt_check.setToolTip("ground-truth contour (white, dashed) when the folder has masks")
        self.gt_check.setChecked(True)
        self.ref_check = QCheckBox("Ref. (B)")
        self.ref_check.setToolTip("nearest reference shot beside the image (B)")
        self.fit_button = QPushButton("Fit (F)")
        self.fit_button.setToolTip("fit the image (F); + / - zoom")
        for w in (self.heat_check, self.opacity, self.contour_check, self.box_check, self.gt_check,
                  self.ref_check, self.fit_button):
            w.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.heat_check.toggled.connect(self._apply_visibility)
        self.contour_check.toggled.connect(self._apply_visibility)
        self.box_check.toggled.connect(self._apply_visibility)
        self.gt_check.toggled.connect(self._apply_visibility)
        self.ref_check.toggled.connect(self._apply_visibility)
        self.opacity.valueChanged.connect(lambda v: self.heat_item.setOpacity(v / 100.0))
        self.fit_button.clicked.connect(self.fit)
        self.heat_item.setOpacity(self.opacity.value() / 100.0)

        self.banner = QLabel("")
        self.banner.setWordWrap(True)
        shrinkable(self.banner)
        self.banner.setStyleSheet("QLabel { background: #333; color: #fff; padding: 6px; font-size: 14px; }")
        self.banner.setVisible(False)
        self.message_text = ""

        controls = QHBoxLayout()
        controls.setContentsMargins(0, 0, 0, 0)
        controls.addWidget(self.heat_check)
        controls.addWidget(QLabel("opacity"))
        controls.addWidget(self.opacity)
        for w in (self.contour_check, self.box_check, self.gt_check, self.ref_check):
            controls.addWidget(w)
        controls.addStretch(1)
        controls.addWidget(self.fit_button)

        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.graphics)
        split.addWidget(self.ref_panel)
        split.setChildrenCollapsible(False)
        self.splitter = split

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(controls)
        layout.addWidget(self.banner)
        layout.addWidget(split, 1)

    # ------------------------------------------------------------------ content
    def clear(self, message: str = "") -> None:
        self.image_item.clear()
        self.heat_item.clear()
        self.ref_item.clear()
        self._clear_overlays()
        self._shape = None
        self.set_message(message)

    def set_message(self, text: str, error: bool = False) -> None:
        self.message_text = text  # as given (the banner's text has invisible break points)
        self.banner.setText(wrap_anywhere(text))
        self.banner.setToolTip(text)
        color = "#8b1a1a" if error else "#333"
        self.banner.setStyleSheet(f"QLabel {{ background: {color}; color: #fff; padding: 6px; font-size: 14px; }}")
        self.banner.setVisible(bool(text))

    def set_image(self, image: np.ndarray) -> None:
        """Show an RGB uint8 image; the view refits when the size changes."""
        h, w = image.shape[:2]
        self.image_item.setImage(image, autoLevels=False, levels=(0, 255))
        self.image_item.setRect(QRectF(0, 0, w, h))
        if self._shape != (h, w):
            self._shape = (h, w)
            self.fit()

    def set_heatmap(self, amap: np.ndarray | None, vmax: float = 1.0) -> None:
        """Show an anomaly map over the image (jet, levels [0, vmax]); ``None`` hides it."""
        if amap is None or self._shape is None:
            self.heat_item.clear()
            return
        h, w = self._shape
        self.heat_item.setImage(np.asarray(amap, dtype=np.float32), autoLevels=False, levels=(0.0, max(vmax, 1e-6)))
        self.heat_item.setRect(QRectF(0, 0, w, h))

    def set_regions(self, regions: Sequence[Region]) -> None:
        for item in self.contour_items + self.box_items + self.label_items:
            self.view.removeItem(item)
        self.contour_items, self.box_items, self.label_items = [], [], []
        self._regions = list(regions)
        for r in regions:
            if r.mask is not None and r.mask.any():
                item = QGraphicsPathItem(_path(mask_contours(r.mask)))
                item.setPen(_pen(PRED_COLOR, 2.0))
                item.setZValue(3)
                self.view.addItem(item)
                self.contour_items.append(item)
            x0, y0, x1, y1 = r.box
            box = QGraphicsRectItem(QRectF(x0, y0, max(x1 - x0, 1), max(y1 - y0, 1)))
            box.setPen(_pen(BOX_COLOR, 1.0, Qt.PenStyle.DashLine))
            box.setZValue(2)
            self.view.addItem(box)
            self.box_items.append(box)
            # a region in the right half is labelled leftwards from its right edge, so the text stays on the image
            right = self._shape is not None and x0 > self._shape[1] / 2
            label = pg.TextItem(region_label(r), color=LABEL_COLOR, anchor=(1, 1) if right else (0, 1),
                                fill=pg.mkBrush(0, 0, 0, 160))
            font = QFont()
            font.setPointSize(10)
            label.setFont(font)
            label.setPos(x1 if right else x0, y0)
            label.setZValue(4)
            self.view.addItem(label)
            self.label_items.append(label)
        self._apply_visibility()

    def set_ground_truth(self, mask: np.ndarray | None) -> None:
        for item in self.gt_items:
            self.view.removeItem(item)
        self.gt_items = []
        if mask is not None and mask.any():
            item = QGraphicsPathItem(_path(mask_contours(mask)))
            item.setPen(_pen(GT_COLOR, 1.5, Qt.PenStyle.DashLine))
            item.setZValue(2.5)
            self.view.addItem(item)
            self.gt_items.append(item)
        self._apply_visibility()

    def set_reference(self, image: np.ndarray | None, title: str = "") -> None:
        if image is None:
            self.ref_item.clear()
            self.ref_title.setText("no reference shot in this profile")
            return
        h, w = image.shape[:2]
        self.ref_item.setImage(image, autoLevels=False, levels=(0, 255))
        self.ref_item.setRect(QRectF(0, 0, w, h))
        self.ref_title.setText(f"nearest reference: {title}" if title else "nearest reference shot")

    def show_inspection(
        self,
        image: np.ndarray,
        amap: np.ndarray | None = None,
        regions: Sequence[Region] = (),
        gt_mask: np.ndarray | None = None,
        reference: np.ndarray | None = None,
        reference_title: str = "",
        vmax: float = 1.0,
        message: str = "",
    ) -> None:
        self.set_image(image)
        self.set_heatmap(amap, vmax)
        self.set_regions(regions)
        self.set_ground_truth(gt_mask)
        self.set_reference(reference, reference_title)
        self.set_message(message)

    def _clear_overlays(self) -> None:
        for item in self.contour_items + self.box_items + self.label_items + self.gt_items:
            self.view.removeItem(item)
        self.contour_items, self.box_items, self.label_items, self.gt_items = [], [], [], []

    # ------------------------------------------------------------------ layers
    def _apply_visibility(self) -> None:
        self.heat_item.setVisible(self.heat_check.isChecked())
        for item in self.contour_items:
            item.setVisible(self.contour_check.isChecked())
        for item in self.box_items + self.label_items:
            item.setVisible(self.box_check.isChecked())
        for item in self.gt_items:
            item.setVisible(self.gt_check.isChecked())
        self.ref_panel.setVisible(self.ref_check.isChecked())
        self.layers_changed.emit()

    def toggle_heatmap(self) -> None:
        self.heat_check.toggle()

    def toggle_reference(self) -> None:
        self.ref_check.toggle()

    def fit(self) -> None:
        if self._shape is not None:
            h, w = self._shape
            self.view.setRange(QRectF(0, 0, w, h), padding=0.0)

    def zoom(self, factor: float) -> None:
        """Zoom about the centre of the view (factor > 1 zooms in)."""
        if self._shape is None or factor <= 0:
            return
        self.view.scaleBy((1.0 / factor, 1.0 / factor))

    def zoom_in(self) -> None:
        self.zoom(1.25)

    def zoom_out(self) -> None:
        self.zoom(0.8)

    def zoom_to_region(self, index: int) -> bool:
        """Frame region ``index`` (with a margin of half its size). False when there is no such region."""
        if not 0 <= index < len(self._regions):
            return False
        x0, y0, x1, y1 = self._regions[index].box
        w, h = max(x1 - x0, 1), max(y1 - y0, 1)
        self.view.setRange(QRectF(x0 - w / 2, y0 - h / 2, 2 * w, 2 * h), padding=0.0)
        return True

    def visible_rect(self) -> QRectF:
        """The image rectangle now in view (image pixels)."""
        (x0, x1), (y0, y1) = self.view.viewRange()
        return QRectF(x0, y0, x1 - x0, y1 - y0)

    def image_to_widget(self, x: float, y: float) -> QPointF:
        """Where image point (x, y) lands in ``self.graphics`` widget pixels (for tests and tools)."""
        scene = self.view.mapViewToScene(QPointF(x, y))
        return QPointF(self.graphics.mapFromScene(scene))

    def widget_to_image(self, px: float, py: float) -> QPointF:
        scene = self.graphics.mapToScene(int(round(px)), int(round(py)))
        return self.view.mapSceneToView(scene)
