"""Past inspections: a filterable table with counts, CSV export and a chain check."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QDate, QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtGui import QColor, QFont
from PySide6.QtWidgets import (
    QComboBox,
    QDateEdit,
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
    InspectionRecord,
    RecordQuery,
    RecordStore,
    RecordStoreError,
    counts,
    effective,
    export_csv,
    to_utc_iso,
)

log = logging.getLogger(__name__)

PERIODS = ("Today", "Last 7 days", "Last 30 days", "All", "Dates…")
MAX_ROWS = 20000


def local_time(ts: str) -> str:
    try:
        moment = datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).astimezone()
    except ValueError:
        return ts
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _short_path(path: str) -> str:
    p = Path(path)
    return f"{p.parent.name}/{p.name}" if p.parent.name else p.name


COLUMNS: list[tuple[str, Callable[[InspectionRecord], Any]]] = [
    ("#", lambda r: r.id),
    ("Time", lambda r: local_time(r.timestamp)),
    ("Station", lambda r: r.station_id),
    ("Operator", lambda r: r.operator_id),
    ("Profile", lambda r: f"{r.profile_name} v{r.profile_version}"),
    ("Image", lambda r: _short_path(r.image_path) if r.image_path else (r.source_id or "")),
    ("Score", lambda r: "" if r.image_score is None else f"{r.image_score:.3f}"),
    ("Station verdict", lambda r: r.auto_verdict or ""),
    ("Operator verdict", lambda r: "UNDO" if r.kind == "correction" else (r.operator_verdict or "")),
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
                return QColor("#e53935") if value == "FAIL" else QColor("#43a047") if value == "PASS" else None
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
        self.verdict.addItems(["Any verdict", "PASS", "FAIL"])
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
                         ("Profile", self.profile), ("Verdict", self.verdict), ("Operator", self.operator)):
            filters.addWidget(QLabel(label))
            filters.addWidget(w)
        filters.addStretch(1)
        filters.addWidget(self.refresh_button)
        filters.addWidget(self.export_button)
        filters.addWidget(self.verify_button)
        lay = QVBoxLayout(self)
        lay.addLayout(filters)
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
        self._sync_dates()

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
            verdict=self.verdict.currentText() if self.verdict.currentIndex() > 0 else None,
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
                self._fill_combo(self.operator, "All operators", store.distinct("operator_id"))
                rows = store.query(self.query())
            except RecordStoreError as exc:
                self.status.setText(str(exc))
                return
            self.model.set_rows(rows)
            c = counts(rows)
            overrides = f", {c.overrides} overriding the station" if c.overrides else ""
            self.counts_label.setText(
                f"<b>{c.decisions}</b> decisions: <span style='color:#43a047'><b>{c.passed}</b> PASS</span>, "
                f"<span style='color:#e53935'><b>{c.failed}</b> FAIL</span>{overrides}; "
                f"{c.corrections} corrections; {len(rows)} rows shown"
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
        self.status.setStyleSheet("" if res.ok else "QLabel { color: #e53935; font-weight: bold; }")
        return res.ok
