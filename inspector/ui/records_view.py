"""Past inspections: a filterable table with counts, CSV export and a chain check."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QDate, QEvent, QModelIndex, QObject, QPersistentModelIndex, Qt
from PySide6.QtGui import QColor, QFont, QPixmap
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDateEdit,
    QDialog,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from inspector.records import (
    PART_OUTCOME_KINDS,
    InspectionRecord,
    RecordQuery,
    RecordStore,
    RecordStoreError,
    counts,
    effective,
    export_csv,
    local_time,
    to_utc_iso,
)

log = logging.getLogger(__name__)

PERIODS = ("Today", "Last 7 days", "Last 30 days", "All", "Dates…")
OUTCOME_TEXT = {"correction": "CORRECTION", "no_read": "NO-READ", "skipped": "SKIPPED",
                "not_decided": "NOT DECIDED"}
RESULTS = [("Any result", ""), ("PASS", "PASS"), ("FAIL", "FAIL"), ("NO-READ", "no_read"), ("SKIPPED", "skipped"),
           ("NOT DECIDED", "not_decided")]
MAX_ROWS = 20000


def _short_path(path: str) -> str:
    p = Path(path)
    return f"{p.parent.name}/{p.name}" if p.parent.name else p.name


COLUMNS: list[tuple[str, Callable[[InspectionRecord], Any]]] = [
    ("#", lambda r: r.id),
    ("Time", lambda r: local_time(r.timestamp)),
    ("Station", lambda r: r.station_id),
    ("User", lambda r: f"{r.operator_id} ({r.role})" if r.role else r.operator_id),
    ("Profile", lambda r: f"{r.profile_name} v{r.profile_version}"),
    ("Image", lambda r: _short_path(r.image_path) if r.image_path else (r.source_id or "")),
    ("Score", lambda r: "" if r.image_score is None else f"{r.image_score:.3f}"),
    ("Station verdict", lambda r: r.auto_verdict or ""),
    ("Operator verdict", lambda r: r.operator_verdict or OUTCOME_TEXT.get(r.kind, r.kind.upper())),
    ("Reason", lambda r: r.reason or ""),
    ("Note", lambda r: r.note),
]


class RecordsModel(QAbstractTableModel):
    def __init__(self) -> None:
        super().__init__()
        self.rows: list[InspectionRecord] = []
        self._voided: set[str] = set()

    def set_rows(self, rows: list[InspectionRecord]) -> None:
        self.beginResetModel()
        self.rows = rows
        self._voided = {r.corrects_uid for r in rows if r.kind == "correction" and r.corrects_uid}
        self.endResetModel()

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: N802, B008
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: N802, B008
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:  # noqa: N802
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return COLUMNS[section][0]
        return None

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        rec = self.rows[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return str(COLUMNS[index.column()][1](rec))
        if role == Qt.ItemDataRole.ForegroundRole:
            if rec.kind == "correction" or rec.uid in self._voided:
                return QColor("#8a8a8a")
            name = COLUMNS[index.column()][0]
            value = COLUMNS[index.column()][1](rec)
            if name.endswith("verdict"):
                # dark enough on white and on the alternate row (contrast >= 5:1)
                return QColor("#b71c1c") if value == "FAIL" else QColor("#1b5e20") if value == "PASS" else None
        if role == Qt.ItemDataRole.FontRole:
            if rec.uid in self._voided:
                f = QFont()
                f.setStrikeOut(True)
                return f
            if rec.agrees is False:
                f = QFont()
                f.setBold(True)
                return f
        if role == Qt.ItemDataRole.ToolTipRole:
            lines = [f"uid {rec.uid}", f"image {rec.image_path}", f"sha256 {rec.image_sha256}",
                     f"pipeline {rec.pipeline} {', '.join(rec.model_keys)}", f"hash {rec.row_hash[:16]}…"]
            if rec.overlay_path:
                lines.append(f"overlay {rec.overlay_path}")
            return "\n".join(lines)
        return None


class ArchivedImageDialog(QDialog):
    """One record's archived image with the overlay the operator saw; ``O`` toggles the overlay."""

    def __init__(self, record: InspectionRecord, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.record = record
        name = Path(record.image_path).name if record.image_path else (record.source_id or "frame")
        verdict = record.operator_verdict or OUTCOME_TEXT.get(record.kind, record.kind)
        self.setWindowTitle(f"#{record.id} {name} — {verdict} by {record.operator_id}")
        self.overlay = QCheckBox("Overlay  [O]")
        self.overlay.setChecked(True)
        self.image = QLabel()
        self.image.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.image.setMinimumSize(200, 150)
        self.caption = QLabel("")
        self.caption.setWordWrap(True)
        lay = QVBoxLayout(self)
        lay.addWidget(self.overlay)
        lay.addWidget(self.image, 1)
        lay.addWidget(self.caption)
        self.overlay.toggled.connect(self._show)
        self.resize(760, 560)
        self._show()

    def shown_path(self) -> Path | None:
        path = self.record.overlay_path if self.overlay.isChecked() else self.record.archive_path
        return Path(path) if path else None

    def _show(self) -> None:
        path = self.shown_path()
        which = "overlay" if self.overlay.isChecked() else "archived image"
        pixmap = QPixmap(str(path)) if path is not None and path.is_file() else QPixmap()
        if pixmap.isNull():
            self.image.setPixmap(QPixmap())
            self.image.setText(f"No {which} for this record" + (f" ({path} is missing)" if path else "")
                               + ". The archive keeps decisions only when archiving is on.")
        else:
            self.image.setPixmap(pixmap.scaled(self.image.size(), Qt.AspectRatioMode.KeepAspectRatio,
                                               Qt.TransformationMode.SmoothTransformation)
                                 if self.image.width() > 10 else pixmap)
        self.caption.setText(f"{which}: {path or '—'}\nimage: {self.record.image_path or '—'}  "
                             f"sha256 {self.record.image_sha256 or '—'}")

    def keyPressEvent(self, event) -> None:  # noqa: N802, ANN001 - Qt API
        if event.key() == Qt.Key.Key_O:
            self.overlay.toggle()
            return
        super().keyPressEvent(event)

    def resizeEvent(self, event) -> None:  # noqa: N802, ANN001 - Qt API
        super().resizeEvent(event)
        self._show()


class RecordsView(QWidget):
    """Filters (period, profile, operator verdict, operator), table, counts, export, verify."""

    def __init__(self, store_getter: Callable[[], RecordStore | None], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._store_getter = store_getter
        self.period = QComboBox()
        self.period.addItems(PERIODS)
        self.period.setCurrentText("Last 7 days")
        self.date_from = QDateEdit(QDate.currentDate().addDays(-7))
        self.date_to = QDateEdit(QDate.currentDate())
        for d in (self.date_from, self.date_to):
            d.setCalendarPopup(True)
            d.setDisplayFormat("yyyy-MM-dd")
        self.profile = QComboBox()
        self.verdict = QComboBox()
        for text, data in RESULTS:
            self.verdict.addItem(text, data)
        self.operator = QComboBox()
        self.refresh_button = QPushButton("Refresh")
        self.export_button = QPushButton("Export CSV…")
        self.verify_button = QPushButton("Verify chain")
        self.counts_label = QLabel("")
        self.status = QLabel("")
        self.status.setWordWrap(True)

        self.model = RecordsModel()
        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QTableView.SelectionBehavior.SelectRows)
        self.table.setAlternatingRowColors(True)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)

        filters = QHBoxLayout()
        for label, w in (("Period", self.period), ("from", self.date_from), ("to", self.date_to),
                         ("Profile", self.profile), ("Result", self.verdict), ("User", self.operator)):
            filters.addWidget(QLabel(label))
            filters.addWidget(w)
        filters.addStretch(1)
        actions = QHBoxLayout()  # a second row, so that the filters alone fit 1024 px
        actions.addWidget(self.refresh_button)
        actions.addWidget(self.export_button)
        # issue 15 item 9: the shown decisions (corrections applied) -> brush/SAM masks -> MVTec-layout set
        self.label_button = QPushButton("Label parts…")
        self.label_button.setToolTip("Turn the shown accepted and rejected parts into an evaluation set")

        def label_parts() -> None:
            from inspector.settings import Settings
            from inspector.ui.labelling import open_labelling

            open_labelling(self, self.rows(), getattr(self.window(), "settings", None) or Settings.load())

        self.label_button.clicked.connect(label_parts)
        actions.addWidget(self.label_button)
        actions.addWidget(self.verify_button)
        actions.addStretch(1)
        self.open_hint = QLabel("Double-click a row (or Enter) to open its archived image with the overlay.")
        actions.addWidget(self.open_hint)
        lay = QVBoxLayout(self)
        lay.addLayout(filters)
        lay.addLayout(actions)
        lay.addWidget(self.counts_label)
        lay.addWidget(self.table, 1)
        lay.addWidget(self.status)

        self._loading = False
        for combo in (self.period, self.profile, self.verdict, self.operator):
            combo.currentIndexChanged.connect(self.refresh)
        self.date_from.dateChanged.connect(self.refresh)
        self.date_to.dateChanged.connect(self.refresh)
        self.refresh_button.clicked.connect(self.refresh)
        self.export_button.clicked.connect(self._export_dialog)
        self.verify_button.clicked.connect(self.verify)
        self.table.doubleClicked.connect(lambda index: self.open_record(index.row()))
        self.table.installEventFilter(self)
        self._sync_dates()

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt API
        if obj is self.table and event.type() == QEvent.Type.KeyPress \
                and event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter):  # type: ignore[attr-defined]
            index = self.table.currentIndex()
            if index.isValid():
                self.open_record(index.row())
                return True
        return super().eventFilter(obj, event)

    def open_record(self, row: int) -> QDialog | None:
        """Show the archived image of row ``row`` with its overlay (O toggles the overlay)."""
        if not 0 <= row < len(self.model.rows):
            return None
        dialog = ArchivedImageDialog(self.model.rows[row], self)
        dialog.show()
        self._dialog = dialog  # keep it alive while shown
        return dialog

    # ------------------------------------------------------------------ filters
    def _sync_dates(self) -> None:
        custom = self.period.currentText() == "Dates…"
        self.date_from.setEnabled(custom)
        self.date_to.setEnabled(custom)

    def query(self) -> RecordQuery:
        now = datetime.now().astimezone()
        midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
        since = until = None
        period = self.period.currentText()
        if period == "Today":
            since = midnight
        elif period == "Last 7 days":
            since = midnight - timedelta(days=6)
        elif period == "Last 30 days":
            since = midnight - timedelta(days=29)
        elif period == "Dates…":
            f, t = self.date_from.date(), self.date_to.date()
            since = datetime(f.year(), f.month(), f.day()).astimezone()
            until = datetime(t.year(), t.month(), t.day()).astimezone() + timedelta(days=1)
        return RecordQuery(
            since=to_utc_iso(since) if since else None,
            until=to_utc_iso(until) if until else None,
            profile=self.profile.currentData() or None,
            operator=self.operator.currentData() or None,
            verdict=self.verdict.currentData() if self.verdict.currentData() in ("PASS", "FAIL") else None,
            kind=self.verdict.currentData() if self.verdict.currentData() in PART_OUTCOME_KINDS else None,
            limit=MAX_ROWS,
            newest_first=True,
        )

    def _fill_combo(self, combo: QComboBox, everyone: str, values: list[str]) -> None:
        current = combo.currentData()
        combo.blockSignals(True)
        combo.clear()
        combo.addItem(everyone, "")
        for v in values:
            combo.addItem(v, v)
        idx = combo.findData(current) if current else 0
        combo.setCurrentIndex(max(idx, 0))
        combo.blockSignals(False)

    # ------------------------------------------------------------------ actions
    def refresh(self) -> None:
        if self._loading:
            return
        self._loading = True
        try:
            self._sync_dates()
            store = self._store_getter()
            if store is None:
                self.model.set_rows([])
                self.status.setText("Records database not available (see the Operator tab messages).")
                return
            try:
                self._fill_combo(self.profile, "All profiles", store.distinct("profile_name"))
                self._fill_combo(self.operator, "All users", store.distinct("operator_id"))
                rows = store.query(self.query())
            except RecordStoreError as exc:
                self.status.setText(str(exc))
                return
            self.model.set_rows(rows)
            c = counts(rows)
            overrides = f", {c.overrides} overriding the station" if c.overrides else ""
            self.counts_label.setText(
                f"<b>{c.decisions}</b> decisions: <span style='color:#1b5e20'><b>{c.passed}</b> PASS</span>, "
                f"<span style='color:#b71c1c'><b>{c.failed}</b> FAIL</span>{overrides}; "
                f"{c.corrections} corrections; "
                + (f"{c.no_read} NO-READ, {c.skipped} skipped, {c.not_decided} not decided; "
                   if c.no_read or c.skipped or c.not_decided else "")
                + f"{len(rows)} rows shown"
                + (" (limit reached)" if len(rows) >= MAX_ROWS else "")
            )
            self.status.setText(f"{store.location}")
        finally:
            self._loading = False

    def rows(self) -> list[InspectionRecord]:
        return list(self.model.rows)

    def standing(self) -> list[InspectionRecord]:
        return effective(self.model.rows)

    def export_to(self, path: str | Path) -> int:
        """Export the rows shown (oldest first) to CSV."""
        n = export_csv(sorted(self.model.rows, key=lambda r: r.id or 0), path)
        self.status.setText(f"exported {n} rows to {path}")
        return n

    def _export_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export records", "records.csv", "CSV files (*.csv)")
        if path:
            try:
                self.export_to(path)
            except OSError as exc:
                self.status.setText(f"export failed: {path}: {exc}")

    def verify(self) -> bool:
        store = self._store_getter()
        if store is None:
            self.status.setText("Records database not available.")
            return False
        res = store.verify()
        self.status.setText(("Chain OK: " if res.ok else "CHAIN BROKEN: ") + res.message)
        self.status.setStyleSheet("" if res.ok else "QLabel { color: #b71c1c; font-weight: bold; }")
        return res.ok
