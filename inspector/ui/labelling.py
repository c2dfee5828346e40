"""Turn decided parts into labelled data: paint defect masks, export an MVTec-layout set.

Opened from the Records tab (:func:`open_labelling`) with the records to label. Each part's
image-level label is the operator's decision (see :mod:`inspector.evaluate.labelled_set`); for a
rejected part the engineer paints where the defect is:

* **Brush** (always): left button paints, the Erase mode (or the right button) removes.
* **SAM click** (where SAM weights are installed): a click is a SAM point prompt; the best of
  SAM's three candidate masks (highest predicted IoU) is added to the mask. The image is embedded
  once, in a background thread (seconds on CUDA, a minute on a 2-core CPU for ViT-B), then each
  click only runs the light decoder. Without SAM weights the mode is disabled and says why.

"Export…" writes the set; "Evaluate this set" hands its folder to the evaluation view.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QImage, QMouseEvent, QPainter, QPaintEvent
from PySide6.QtWidgets import (
    QButtonGroup,
    QDialog,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from inspector.evaluate.labelled_set import (
    LabelledPart,
    LabelledSet,
    LabelledSetError,
    export_mvtec,
    parts_from_records,
)
from inspector.imaging import ImageReadError, read_image
from inspector.settings import Settings

log = logging.getLogger(__name__)

MASK_COLOUR = QColor(231, 76, 60, 120)
DEFAULT_BRUSH_PX = 8
DEFAULT_SAM_KEY = "sam_vit_b"


def _qimage(rgb: np.ndarray) -> QImage:
    rgb = np.ascontiguousarray(rgb)
    h, w = rgb.shape[:2]
    return QImage(rgb.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()


def _mask_qimage(mask: np.ndarray) -> QImage:
    h, w = mask.shape
    rgba = np.zeros((h, w, 4), np.uint8)
    rgba[mask] = (MASK_COLOUR.red(), MASK_COLOUR.green(), MASK_COLOUR.blue(), MASK_COLOUR.alpha())
    return QImage(np.ascontiguousarray(rgba).data, w, h, 4 * w, QImage.Format.Format_RGBA8888).copy()


def paint_disc(mask: np.ndarray, x: float, y: float, radius: float, value: bool = True) -> None:
    """Set (or clear) every pixel whose centre lies within ``radius`` of (x, y) — image px."""
    h, w = mask.shape
    r = max(radius, 0.5)
    x0, x1 = max(0, int(np.floor(x - r))), min(w, int(np.ceil(x + r)) + 1)
    y0, y1 = max(0, int(np.floor(y - r))), min(h, int(np.ceil(y + r)) + 1)
    if x0 >= x1 or y0 >= y1:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1]
    inside = (xx + 0.5 - x) ** 2 + (yy + 0.5 - y) ** 2 <= r * r
    mask[y0:y1, x0:x1][inside] = value


class MaskCanvas(QWidget):
    """The image scaled to fit, the mask over it; brush strokes edit the mask in image pixels."""

    clicked = Signal(float, float)  # image px, in SAM mode
    mask_edited = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumSize(320, 240)
        self.setMouseTracking(False)
        self.image: np.ndarray | None = None
        self.mask: np.ndarray | None = None
        self.mode = "brush"  # brush | erase | sam
        self.radius = float(DEFAULT_BRUSH_PX)
        self._qimage: QImage | None = None
        self._last: tuple[float, float] | None = None

    def set_image(self, image: np.ndarray | None, mask: np.ndarray | None) -> None:
        self.image, self.mask = image, mask
        self._qimage = _qimage(image) if image is not None else None
        self.update()

    def image_rect(self) -> QRectF:
        """Where the image is drawn (aspect kept, centred)."""
        if self.image is None:
            return QRectF()
        h, w = self.image.shape[:2]
        scale = min(self.width() / w, self.height() / h)
        dw, dh = w * scale, h * scale
        return QRectF((self.width() - dw) / 2, (self.height() - dh) / 2, dw, dh)

    def to_image(self, pos: QPointF) -> tuple[float, float] | None:
        rect = self.image_rect()
        if self.image is None or rect.width() <= 0:
            return None
        h, w = self.image.shape[:2]
        x = (pos.x() - rect.x()) / rect.width() * w
        y = (pos.y() - rect.y()) / rect.height() * h
        return (x, y) if 0 <= x < w and 0 <= y < h else None

    def to_widget(self, x: float, y: float) -> QPointF:
        rect = self.image_rect()
        h, w = self.image.shape[:2]  # type: ignore[union-attr]
        return QPointF(rect.x() + x / w * rect.width(), rect.y() + y / h * rect.height())

    # ------------------------------------------------------------------ painting
    def paintEvent(self, _event: QPaintEvent) -> None:  # noqa: N802 - Qt API
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(30, 30, 30))
        if self._qimage is not None:
            rect = self.image_rect()
            p.drawImage(rect, self._qimage)
            if self.mask is not None and self.mask.any():
                p.drawImage(rect, _mask_qimage(self.mask))
        p.end()

    def _stroke(self, pos: QPointF, erase: bool) -> None:
        pt = self.to_image(pos)
        if pt is None or self.mask is None or self.image is None:
            return
        scale = self.image.shape[1] / max(self.image_rect().width(), 1e-6)
        radius = self.radius  # image px
        steps = [pt]
        if self._last is not None:  # fill the gap of a fast stroke
            n = int(np.hypot(pt[0] - self._last[0], pt[1] - self._last[1]) / max(radius / 2, 0.5 * scale))
            steps = [(self._last[0] + (pt[0] - self._last[0]) * t, self._last[1] + (pt[1] - self._last[1]) * t)
                     for t in np.linspace(0, 1, max(n, 1) + 1)[1:]]
        for x, y in steps:
            paint_disc(self.mask, x, y, radius, not erase)
        self._last = pt
        self.update()
        self.mask_edited.emit()

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt API
        pos = event.position()
        if self.mode == "sam" and event.button() == Qt.MouseButton.LeftButton:
            pt = self.to_image(pos)
            if pt is not None:
                self.clicked.emit(*pt)
            return
        self._last = None
        self._stroke(pos, self.mode == "erase" or event.button() == Qt.MouseButton.RightButton)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt API
        if self.mode == "sam" or not event.buttons():
            return
        self._stroke(event.position(), self.mode == "erase" or bool(event.buttons() & Qt.MouseButton.RightButton))

    def mouseReleaseEvent(self, _event: QMouseEvent) -> None:  # noqa: N802 - Qt API
        self._last = None


class SamClicker:
    """SAM point prompts on one image at a time: embed once (background thread), decode per click."""

    def __init__(self, load: Callable[[], Any]) -> None:
        self._load = load
        self._sam: Any | None = None
        self._emb: Any | None = None
        self._emb_for: np.ndarray | None = None  # the image object embedded (identity, not content)

    def embed(self, image: np.ndarray) -> None:
        if self._sam is None:
            self._sam = self._load()
        self._emb = self._sam.embed(image)
        self._emb_for = image

    def ready_for(self, image: np.ndarray) -> bool:
        return self._emb is not None and self._emb_for is image

    def segment(self, x: float, y: float) -> np.ndarray:
        """The best-IoU mask of SAM's three candidates for one positive point at (x, y) image px."""
        if self._emb is None or self._sam is None:
            raise RuntimeError("embed the image first")
        out = self._sam.decode(self._emb, points=np.array([[[x, y]]], np.float32), labels=np.array([[1]]),
                               multimask=True)
        return out.masks[0, int(np.argmax(out.scores[0]))].astype(bool)


def sam_loader(settings: Settings, hub: Any | None = None, key: str = DEFAULT_SAM_KEY
               ) -> tuple[Callable[[], Any] | None, str]:
    """(loader, "") where SAM weights are installed (or a SAM is provided to the hub), else (None, why)."""
    try:
        if hub is None:
            from inspector.models.hub import ModelHub

            hub = ModelHub(device=settings.device, precision=settings.precision)
        if not hub.is_provided("sam", key):
            state = hub.model_store().status(key)
            if state != "installed":
                return None, (f"SAM click needs the {key} weights ({state}); install them in Engineer → Models. "
                              "The brush works without them.")
    except Exception as exc:  # noqa: BLE001 - a broken store must not block the brush
        return None, f"SAM unavailable: {exc}"
    return (lambda: hub.get("sam", key)), ""


class LabellingDialog(QDialog):
    """Parts list, mask painter (brush; SAM click where available) and the export."""

    exported = Signal(str)  # category folder of the written set
    evaluate_requested = Signal(str)

    def __init__(self, parts: Sequence[LabelledPart], settings: Settings, parent: QWidget | None = None,
                 sam: Callable[[], Any] | None = None, sam_reason: str = "", skipped: Sequence[str] = ()) -> None:
        super().__init__(parent)
        self.setWindowTitle("Label parts: rejected and accepted parts as an evaluation set")
        self.settings = settings
        self.parts = list(parts)
        self.masks: dict[str, np.ndarray] = {}
        self.last_export: LabelledSet | None = None
        self._images: dict[str, np.ndarray] = {}
        self._clicker = SamClicker(sam) if sam is not None else None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sam-embed")
        self._pending: Future | None = None
        self._pending_click: tuple[float, float] | None = None
        self._poll = QTimer(self)
        self._poll.setInterval(50)
        self._poll.timeout.connect(self._check_embedding)

        self.list = QListWidget()
        for part in self.parts:
            text = f"{'REJECT' if part.label else 'accept'} · {part.defect} · {part.image.name}"
            item = QListWidgetItem(text)
            item.setData(Qt.ItemDataRole.UserRole, part.uid)
            item.setToolTip(str(part.image))
            self.list.addItem(item)
        self.list.currentRowChanged.connect(self._show_part)
        self.canvas = MaskCanvas()
        self.canvas.clicked.connect(self.sam_click)
        self.canvas.mask_edited.connect(self._update_caption)

        self.brush_radio = QRadioButton("Brush")
        self.erase_radio = QRadioButton("Erase")
        self.sam_radio = QRadioButton("SAM click")
        self.brush_radio.setChecked(True)
        group = QButtonGroup(self)
        for i, b in enumerate((self.brush_radio, self.erase_radio, self.sam_radio)):
            group.addButton(b, i)
        group.idToggled.connect(lambda _i, _on: self._set_mode())
        self.sam_radio.setEnabled(self._clicker is not None)
        self.sam_radio.setToolTip(sam_reason or "a click segments the defect (SAM point prompt)")
        self.brush_size = QSpinBox()
        self.brush_size.setRange(1, 200)
        self.brush_size.setValue(DEFAULT_BRUSH_PX)
        self.brush_size.setSuffix(" px")
        self.brush_size.valueChanged.connect(lambda v: setattr(self.canvas, "radius", float(v)))
        self.clear_button = QPushButton("Clear mask")
        self.clear_button.clicked.connect(self.clear_mask)
        self.caption = QLabel("")
        self.caption.setWordWrap(True)
        self.sam_status = QLabel(sam_reason)
        self.sam_status.setWordWrap(True)
        self.sam_status.setStyleSheet("color: #b9770e")

        self.folder_edit = QLineEdit(str(Path(settings.archive_dir).parent / "labelled"))
        self.category_edit = QLineEdit(self._default_category())
        self.train_spin = QSpinBox()
        self.train_spin.setRange(0, 10_000)
        self.train_spin.setToolTip("accepted parts put in train/good (the few-shot reference pool)")
        self.browse_button = QPushButton("Browse…")
        self.browse_button.clicked.connect(self._browse)
        self.export_button = QPushButton("Export…")
        self.export_button.clicked.connect(self.export)
        self.evaluate_button = QPushButton("Evaluate this set")
        self.evaluate_button.setEnabled(False)
        self.evaluate_button.clicked.connect(self._evaluate)
        self.status = QLabel(f"{len(self.parts)} part(s) with images"
                             + (f"; {len(skipped)} skipped (no image kept)" if skipped else ""))
        self.status.setWordWrap(True)
        if skipped:
            self.status.setToolTip("\n".join(skipped))

        tools = QHBoxLayout()
        for w in (self.brush_radio, self.erase_radio, self.sam_radio, QLabel("size"), self.brush_size,
                  self.clear_button):
            tools.addWidget(w)
        tools.addStretch(1)
        right = QVBoxLayout()
        right.addLayout(tools)
        right.addWidget(self.sam_status)
        right.addWidget(self.canvas, 1)
        right.addWidget(self.caption)
        body = QHBoxLayout()
        body.addWidget(self.list, 1)
        body.addLayout(right, 3)
        out = QHBoxLayout()
        out.addWidget(QLabel("Folder"))
        out.addWidget(self.folder_edit, 2)
        out.addWidget(self.browse_button)
        out.addWidget(QLabel("category"))
        out.addWidget(self.category_edit, 1)
        out.addWidget(QLabel("train/good"))
        out.addWidget(self.train_spin)
        out.addWidget(self.export_button)
        out.addWidget(self.evaluate_button)
        layout = QVBoxLayout(self)
        layout.addLayout(body, 1)
        layout.addLayout(out)
        layout.addWidget(self.status)
        self.resize(1200, 800)
        if self.parts:
            self.list.setCurrentRow(0)

    def _default_category(self) -> str:
        names = sorted({p.profile_name for p in self.parts if p.profile_name})
        return (names[0] if len(names) == 1 else "line") + "_decisions"

    # ------------------------------------------------------------------ parts
    def current_part(self) -> LabelledPart | None:
        row = self.list.currentRow()
        return self.parts[row] if 0 <= row < len(self.parts) else None

    def _show_part(self, row: int) -> None:
        part = self.current_part()
        if part is None:
            self.canvas.set_image(None, None)
            return
        try:
            image = self._images.get(part.uid)
            if image is None:
                image = read_image(part.image)
                self._images = {part.uid: image}  # one image in memory at a time
        except ImageReadError as exc:
            self.caption.setText(f"<span style='color:#c0392b'>{exc}</span>")
            self.canvas.set_image(None, None)
            return
        mask = self.masks.get(part.uid)
        if mask is None or mask.shape != image.shape[:2]:
            mask = np.zeros(image.shape[:2], bool)
            if part.label:  # accepted parts have no defect to paint
                self.masks[part.uid] = mask
        self.canvas.set_image(image, mask)
        self._set_mode()
        self._update_caption()
        if self._clicker is not None and part.label and self.sam_radio.isChecked():
            self._start_embedding(image)

    def _update_caption(self) -> None:
        part = self.current_part()
        if part is None:
            return
        if not part.label:
            self.caption.setText(f"accepted part ({part.image.name}): exported to test/good; nothing to paint")
            return
        mask = self.canvas.mask
        n = int(mask.sum()) if mask is not None else 0
        self.caption.setText(f"rejected as {part.defect!r} ({part.image.name}): mask {n} px"
                             + ("" if n else " — paint the defect, or export it for image metrics only"))

    def _set_mode(self) -> None:
        part = self.current_part()
        editable = part is not None and bool(part.label)
        for w in (self.brush_radio, self.erase_radio, self.clear_button, self.brush_size):
            w.setEnabled(editable)
        self.sam_radio.setEnabled(editable and self._clicker is not None)
        mode = "sam" if self.sam_radio.isChecked() else "erase" if self.erase_radio.isChecked() else "brush"
        self.canvas.mode = mode if editable else "none"
        if mode == "sam" and editable and self.canvas.image is not None:
            self._start_embedding(self.canvas.image)

    def clear_mask(self) -> None:
        if self.canvas.mask is not None:
            self.canvas.mask[:] = False
            self.canvas.update()
            self._update_caption()

    # ------------------------------------------------------------------ SAM
    def _start_embedding(self, image: np.ndarray) -> None:
        assert self._clicker is not None
        if self._clicker.ready_for(image) or (self._pending is not None and not self._pending.done()):
            return
        self.sam_status.setText("SAM: embedding the image…")
        self._pending = self._pool.submit(self._clicker.embed, image)
        self._poll.start()

    def _check_embedding(self) -> None:
        if self._pending is None or not self._pending.done():
            return
        self._poll.stop()
        exc = self._pending.exception()
        self._pending = None
        if exc is not None:
            log.warning("SAM embedding failed: %s", exc)
            self.sam_status.setText(f"SAM failed: {exc}; use the brush")
            return
        self.sam_status.setText("SAM ready: click the defect")
        if self.canvas.image is not None and not self._clicker.ready_for(self.canvas.image):  # type: ignore[union-attr]
            self._start_embedding(self.canvas.image)  # the part changed meanwhile
        elif self._pending_click is not None:
            x, y = self._pending_click
            self._pending_click = None
            self.sam_click(x, y)

    def sam_ready(self) -> bool:
        return (self._clicker is not None and self.canvas.image is not None
                and self._clicker.ready_for(self.canvas.image))

    def sam_click(self, x: float, y: float) -> None:
        """Add SAM's mask for a point prompt at (x, y) image px (waits for the embedding)."""
        if self._clicker is None or self.canvas.mask is None or self.canvas.image is None:
            return
        if not self._clicker.ready_for(self.canvas.image):
            self._pending_click = (x, y)
            self._start_embedding(self.canvas.image)
            return
        seg = self._clicker.segment(x, y)
        self.canvas.mask |= seg
        self.canvas.update()
        self._update_caption()
        self.sam_status.setText(f"SAM: {int(seg.sum())} px added at ({x:.0f}, {y:.0f})")

    # ------------------------------------------------------------------ export
    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder for the labelled set", self.folder_edit.text())
        if folder:
            self.folder_edit.setText(folder)

    def export(self) -> LabelledSet | None:
        try:
            result = export_mvtec(self.parts, self.folder_edit.text().strip(), self.category_edit.text().strip(),
                                  self.masks, self.train_spin.value())
        except (LabelledSetError, OSError) as exc:
            self.status.setText(f"<span style='color:#c0392b'>not exported: {exc}</span>")
            return None
        self.last_export = result
        self.status.setText(f"exported to {result.root}: {result.n_good} good, {result.n_defective} defective "
                            f"({result.n_masks} with masks), {result.n_train} train/good"
                            + (f"; {len(result.skipped)} unreadable" if result.skipped else ""))
        self.evaluate_button.setEnabled(True)
        self.exported.emit(str(result.root))
        return result

    def _evaluate(self) -> None:
        if self.last_export is not None:
            self.evaluate_requested.emit(str(self.last_export.root))
            self.accept()

    def done(self, result: int) -> None:  # noqa: D401 - Qt API
        self._poll.stop()
        self._pool.shutdown(wait=False, cancel_futures=True)
        super().done(result)


def open_labelling(parent: QWidget | None, records: Sequence[Any], settings: Settings,
                   hub: Any | None = None) -> LabellingDialog:
    """The Records tab's entry point: label ``records`` (InspectionRecord rows) and export them.

    The station's hub is used for SAM when ``parent`` has a worker holding one. "Evaluate this
    set" opens the Engineer tab's evaluation view on the export when the window has one."""
    parts, skipped = parts_from_records(records, settings.archive_dir)
    window = parent.window() if parent is not None else None
    if hub is None:
        worker = getattr(window, "worker", None)
        hub = getattr(worker, "hub", None)
    loader, reason = sam_loader(settings, hub)
    dialog = LabellingDialog(parts, settings, parent, sam=loader, sam_reason=reason, skipped=skipped)
    engineer = getattr(window, "engineer", None)
    evaluation = getattr(engineer, "evaluation", None)
    if evaluation is not None:
        def to_evaluation(folder: str) -> None:
            evaluation.dataset_edit.setText(folder)
            engineer.tabs.setCurrentWidget(evaluation)  # type: ignore[union-attr]
            tabs = getattr(window, "tabs", None)
            if tabs is not None:
                tabs.setCurrentWidget(engineer)

        dialog.evaluate_requested.connect(to_evaluation)
    dialog.setModal(False)
    dialog.show()
    return dialog
