"""Profile history: every kept version with author, date and change note; a field-by-field diff
between any two; roll back to an earlier version (which saves it as a *new* version, so the
records made with every version still resolve).

The data comes from :func:`inspector.profile.profile_history`, :func:`~inspector.profile.diff_profiles`
and :func:`~inspector.profile.rollback_profile` (Qt-free); this module only shows them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QHeaderView,
    QInputDialog,
    QLabel,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from inspector.profile import (
    ProfileError,
    ProfileVersion,
    diff_profiles,
    load_profile_version,
    profile_history,
    rollback_profile,
)

log = logging.getLogger(__name__)

VERSION_COLUMNS = ("version", "saved", "author", "change note")
DIFF_COLUMNS = ("field", "from", "to")
OLD_COLOUR, NEW_COLOUR = QColor(250, 219, 216), QColor(213, 245, 227)


def _value_text(value: Any) -> str:
    """One cell: scalars as written in YAML, lists/mappings as compact JSON, absent as an em dash."""
    if value is None:
        return "—"
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _when(saved_at: str) -> str:
    return saved_at.replace("T", " ").split("+")[0] if saved_at else "(not recorded)"


def ask_rollback_note(parent: QWidget, version: int) -> str | None:
    note, ok = QInputDialog.getText(parent, "Roll back", f"Make v{version} current again (as a new version).\n"
                                    "Why? (kept as the change note)")
    return note.strip() if ok else None


class ProfileHistoryView(QWidget):
    """Versions table, the two versions compared, their diff, and the rollback button."""

    rolled_back = Signal(str)  # profile folder

    def __init__(self, folder: str | Path, parent: QWidget | None = None, author: str | None = None) -> None:
        super().__init__(parent)
        self.folder = Path(folder)
        self.author = author
        self.versions: list[ProfileVersion] = []
        self.note_prompt: Callable[[QWidget, int], str | None] = ask_rollback_note

        self.title = QLabel("")
        self.title.setTextFormat(Qt.TextFormat.RichText)
        self.table = QTableWidget(0, len(VERSION_COLUMNS))
        self.table.setHorizontalHeaderLabels(list(VERSION_COLUMNS))
        header = self.table.horizontalHeader()
        for col in range(len(VERSION_COLUMNS) - 1):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(len(VERSION_COLUMNS) - 1, QHeaderView.ResizeMode.Stretch)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.verticalHeader().setVisible(False)
        self.table.itemSelectionChanged.connect(self._on_selected)

        self.from_combo = QComboBox()
        self.to_combo = QComboBox()
        self.from_combo.currentIndexChanged.connect(lambda _i: self.show_diff())
        self.to_combo.currentIndexChanged.connect(lambda _i: self.show_diff())
        self.diff = QTableWidget(0, len(DIFF_COLUMNS))
        self.diff.setHorizontalHeaderLabels(list(DIFF_COLUMNS))
        dh = self.diff.horizontalHeader()
        dh.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        dh.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        dh.setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        self.diff.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.diff.verticalHeader().setVisible(False)
        self.diff.setWordWrap(True)
        self.diff_summary = QLabel("")
        self.rollback_button = QPushButton("Roll back to selected…")
        self.rollback_button.setToolTip("Save the selected version's content as a new version")
        self.rollback_button.clicked.connect(self._rollback_clicked)
        self.status = QLabel("")
        self.status.setWordWrap(True)

        compare = QHBoxLayout()
        compare.addWidget(QLabel("Compare"))
        compare.addWidget(self.from_combo)
        compare.addWidget(QLabel("with"))
        compare.addWidget(self.to_combo)
        compare.addWidget(self.diff_summary, 1)
        top = QWidget()
        tv = QVBoxLayout(top)
        tv.setContentsMargins(0, 0, 0, 0)
        tv.addWidget(self.table)
        row = QHBoxLayout()
        row.addWidget(self.rollback_button)
        row.addWidget(self.status, 1)
        tv.addLayout(row)
        bottom = QWidget()
        bv = QVBoxLayout(bottom)
        bv.setContentsMargins(0, 0, 0, 0)
        bv.addLayout(compare)
        bv.addWidget(self.diff, 1)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(top)
        split.addWidget(bottom)
        split.setStretchFactor(0, 2)
        split.setStretchFactor(1, 3)
        layout = QVBoxLayout(self)
        layout.addWidget(self.title)
        layout.addWidget(split, 1)
        self.refresh()

    # ------------------------------------------------------------------ data
    def refresh(self) -> None:
        try:
            self.versions = profile_history(self.folder)
        except ProfileError as exc:
            self.versions = []
            self.status.setText(f"<span style='color:#c0392b'>{exc}</span>")
        self.title.setText(f"<b>{self.folder.name}</b> — {len(self.versions)} version(s) kept"
                           " (every record names the version that made its verdict)")
        self.table.setRowCount(len(self.versions))
        for r, v in enumerate(self.versions):
            cells = (f"v{v.version}" + (" (current)" if v.current else ""), _when(v.saved_at),
                     v.author or "—", v.note or "—")
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setData(Qt.ItemDataRole.UserRole, v.version)
                if c == 3:
                    item.setToolTip(v.note)
                self.table.setItem(r, c, item)
        for combo in (self.from_combo, self.to_combo):
            combo.blockSignals(True)
            combo.clear()
            for v in self.versions:
                combo.addItem(f"v{v.version}", v.version)
            combo.blockSignals(False)
        if len(self.versions) >= 2:
            self.compare(self.versions[1].version, self.versions[0].version)
        else:
            self.show_diff()
        self._update_buttons()

    def selected_version(self) -> int | None:
        rows = self.table.selectionModel().selectedRows()
        return self.table.item(rows[0].row(), 0).data(Qt.ItemDataRole.UserRole) if rows else None

    def select_version(self, version: int) -> None:
        for r in range(self.table.rowCount()):
            if self.table.item(r, 0).data(Qt.ItemDataRole.UserRole) == version:
                self.table.selectRow(r)
                return

    def _on_selected(self) -> None:
        v = self.selected_version()
        if v is not None and self.versions and v != self.versions[0].version:
            self.compare(v, self.versions[0].version)
        self._update_buttons()

    def _update_buttons(self) -> None:
        v = self.selected_version()
        self.rollback_button.setEnabled(v is not None and bool(self.versions) and v != self.versions[0].version)

    # ------------------------------------------------------------------ diff
    def compare(self, old: int, new: int) -> None:
        for combo, version in ((self.from_combo, old), (self.to_combo, new)):
            combo.blockSignals(True)
            combo.setCurrentIndex(max(combo.findData(version), 0))
            combo.blockSignals(False)
        self.show_diff()

    def show_diff(self) -> None:
        old, new = self.from_combo.currentData(), self.to_combo.currentData()
        self.diff.setRowCount(0)
        if old is None or new is None:
            self.diff_summary.setText("")
            return
        self.diff.setHorizontalHeaderLabels(["field", f"v{old}", f"v{new}"])
        try:
            changes = diff_profiles(load_profile_version(self.folder, old), load_profile_version(self.folder, new))
        except ProfileError as exc:
            self.diff_summary.setText(f"<span style='color:#c0392b'>{exc}</span>")
            return
        self.diff.setRowCount(len(changes))
        for r, ch in enumerate(changes):
            for c, (text, colour) in enumerate(((ch.path, None), (_value_text(ch.old), OLD_COLOUR),
                                                (_value_text(ch.new), NEW_COLOUR))):
                item = QTableWidgetItem(text)
                item.setToolTip(text)
                if colour is not None:
                    item.setBackground(QBrush(colour))
                self.diff.setItem(r, c, item)
        self.diff.resizeRowsToContents()
        self.diff_summary.setText("same content" if not changes and old != new else
                                  f"{len(changes)} field(s) differ" if changes else "")

    def diff_rows(self) -> list[tuple[str, str, str]]:
        return [tuple(self.diff.item(r, c).text() for c in range(3))  # type: ignore[misc]
                for r in range(self.diff.rowCount())]

    # ------------------------------------------------------------------ rollback
    def _rollback_clicked(self) -> None:
        v = self.selected_version()
        if v is None:
            return
        note = self.note_prompt(self, v)
        if note is not None:
            self.rollback(v, note)

    def rollback(self, version: int, note: str = "") -> bool:
        try:
            restored = rollback_profile(self.folder, version, note, author=self.author)
        except (ProfileError, OSError) as exc:
            self.status.setText(f"<span style='color:#c0392b'>not rolled back: {exc}</span>")
            return False
        log.info("profile %s rolled back to v%d as v%d", self.folder.name, version, restored.version)
        self.refresh()
        self.status.setText(f"v{version} restored as v{restored.version}")
        self.rolled_back.emit(str(self.folder))
        return True


class ProfileHistoryDialog(QDialog):
    """The history view in a window of its own (Profile tab → History…)."""

    rolled_back = Signal(str)

    def __init__(self, folder: str | Path, parent: QWidget | None = None, author: str | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(f"History of {Path(folder).name}")
        self.view = ProfileHistoryView(folder, self, author)
        self.view.rolled_back.connect(self.rolled_back)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.view, 1)
        layout.addWidget(buttons)
        self.resize(980, 680)
