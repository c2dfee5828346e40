"""Model store view: which weights the manifest knows, which are installed, missing or corrupt,
and which profiles need each; download (where a network or a plant mirror exists) or import an
offline bundle; choose the compute device.

Checking a multi-gigabyte checkpoint streams its sha256 and takes seconds, and importing copies
gigabytes, so both run as worker jobs with progress. The device list comes from the worker too
(the UI thread never touches torch). The chosen device is written to ``Settings.device`` and
handed to the worker (``worker.set_device`` when the station's worker offers it; otherwise it
applies on the next start).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from inspector.models.store import ModelStore, ModelStoreError
from inspector.profile import ProfileError, list_profiles, load_profile
from inspector.settings import Settings, SettingsError
from inspector.ui.engineer_jobs import JobClient, JobFeedback

log = logging.getLogger(__name__)

COLUMNS = ("model", "kind", "state", "needed by", "size", "licence", "files")
STATE_COL, NEEDED_COL = 2, 3
STATE_COLOURS = {"installed": QColor(213, 245, 227), "missing": QColor(253, 235, 208), "corrupt": QColor(250, 219, 216)}


def detect_devices() -> list[tuple[str, str]]:
    """(device id, description) of every device this machine can compute on; CPU first.

    Runs in the worker thread (imports torch).
    """
    import os

    import torch

    from inspector.models.device import cpu_supports_bf16

    bf16 = ", bf16" if cpu_supports_bf16() else ""
    devices = [("cpu", f"CPU ({os.cpu_count() or '?'} cores{bf16})")]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            devices.append((f"cuda:{i}", f"CUDA {i}: {props.name} ({props.total_memory / 2**30:.0f} GiB)"))
    return devices


def profiles_needing(profiles_dir: str | Path, store: ModelStore, hub: Any) -> dict[str, list[str]]:
    """Model key -> names of the profiles under ``profiles_dir`` that load it (requirements included).

    Which models a profile loads is the inspection's own rule (``Inspector.required_models``).
    Runs in the worker (it imports the pipelines)."""
    from inspector.inspection import Inspector

    out: dict[str, list[str]] = {}
    for folder in list_profiles(profiles_dir):
        try:
            prof = load_profile(folder, check_files=False)
            wanted = [key for _kind, key in Inspector(prof, hub).required_models()]
        except (ProfileError, ImportError, ValueError) as exc:
            log.warning("needed-by: %s skipped: %s", folder.name, exc)
            continue
        for wanted_key in wanted:
            try:
                keys = store.with_requirements([wanted_key])
            except (ModelStoreError, KeyError) as exc:  # a key this manifest does not know
                log.warning("needed-by: %s: %s", folder.name, exc)
                continue
            for key in keys:
                if prof.name not in out.setdefault(key, []):
                    out[key].append(prof.name)
    return out


def _entry_value(entry: Any, *names: str, default: Any = "") -> Any:
    for name in names:
        if hasattr(entry, name):
            return getattr(entry, name)
    return default


class ModelStoreView(QWidget):
    """Table of the manifest's models with their state, bundle import, device choice."""

    device_changed = Signal(str)

    def __init__(self, worker: Any, settings: Settings, parent: QWidget | None = None,
                 store: ModelStore | None = None) -> None:
        super().__init__(parent)
        self.worker = worker
        self.settings = settings
        self.store = store or ModelStore.from_settings(settings)
        self.jobs = JobClient(worker, "models", self)
        self.states: dict[str, str] = {}
        self._last_action = ""  # e.g. the result of the last import, shown with the states

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        header = self.table.horizontalHeader()
        for col in range(len(COLUMNS) - 1):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(len(COLUMNS) - 1, QHeaderView.ResizeMode.Stretch)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.verify_button = QPushButton("Verify")
        self.verify_button.setToolTip("Check every installed file against its checksum")
        self.verify_button.clicked.connect(self.verify)
        self.import_folder_button = QPushButton("Import bundle folder…")
        self.import_archive_button = QPushButton("Import bundle archive…")
        self.download_button = QPushButton("Download")
        self.download_button.setToolTip("Download the selected model (and what it requires) with a progress bar; "
                                        "resumes an interrupted download and verifies the checksum")
        self.download_button.clicked.connect(self.download_selected)
        self.mirror_edit = QLineEdit()
        self.mirror_edit.setPlaceholderText("mirror URL (optional): <mirror>/<key>/<file>")
        self.mirror_edit.textChanged.connect(lambda _t: self._update_download())
        self.table.itemSelectionChanged.connect(self._update_download)
        self.import_folder_button.clicked.connect(self._import_folder_dialog)
        self.import_archive_button.clicked.connect(self._import_archive_dialog)
        self.store_label = QLabel(f"store: {self.store.root}")
        self.store_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self.device_combo = QComboBox()
        self.device_combo.addItem("auto (CUDA if present, else CPU)", "auto")
        self.device_apply = QPushButton("Use this device")
        self.device_apply.clicked.connect(lambda: self.apply_device(self.device_combo.currentData()))
        self.device_label = QLabel("detecting devices…")
        self.device_label.setWordWrap(True)

        self.feedback = JobFeedback()
        self.progress = self.feedback.progress
        self.status = self.feedback.status

        store_row = QHBoxLayout()
        store_row.addWidget(self.store_label, 1)
        store_row.addWidget(self.verify_button)
        store_row.addWidget(self.mirror_edit)
        store_row.addWidget(self.download_button)
        store_row.addWidget(self.import_folder_button)
        store_row.addWidget(self.import_archive_button)
        device_row = QHBoxLayout()
        device_row.addWidget(QLabel("Compute device"))
        device_row.addWidget(self.device_combo)
        device_row.addWidget(self.device_apply)
        device_row.addWidget(self.device_label, 1)
        layout = QVBoxLayout(self)
        layout.addLayout(store_row)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addLayout(device_row)
        self.jobs.busy_changed.connect(self._on_busy)

        self.needed: dict[str, list[str]] = {}
        self._fill_entries()
        self.refresh()
        self.refresh_needed()
        self._update_download()
        self.jobs.submit("devices", lambda _h, _p, _c: detect_devices(), done=self._on_devices,
                         failed=lambda msg: self.device_label.setText(msg))

    # ------------------------------------------------------------------ table
    def _fill_entries(self) -> None:
        entries = self.store.entries()
        self.table.setRowCount(len(entries))
        for row, e in enumerate(entries):
            size = _entry_value(e, "size_mb", default=None)
            url = _entry_value(e, "url", "urls", default="")
            licence = str(_entry_value(e, "licence", "license", default=""))
            cells = (e.key, e.kind, "…", "", f"{size:,.0f} MB" if isinstance(size, (int, float)) else "",
                     licence, ", ".join(e.files))
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if col == 0:
                    item.setData(Qt.ItemDataRole.UserRole, e.key)
                    item.setToolTip(str(url[0] if isinstance(url, (list, tuple)) and url else url))
                self.table.setItem(row, col, item)

    def row_of(self, key: str) -> int:
        for row in range(self.table.rowCount()):
            if self.table.item(row, 0).data(Qt.ItemDataRole.UserRole) == key:
                return row
        return -1

    def state_of(self, key: str) -> str:
        row = self.row_of(key)
        return self.table.item(row, STATE_COL).text() if row >= 0 else ""

    def needed_by(self, key: str) -> str:
        row = self.row_of(key)
        return self.table.item(row, NEEDED_COL).text() if row >= 0 else ""

    def refresh_needed(self) -> None:
        """Fill the "needed by" column from the profiles folder (worker job)."""
        store, folder = self.store, Path(self.settings.default_profiles_dir())

        def job(hub: Any, _p: Any, _c: Any) -> dict:
            return profiles_needing(folder, store, hub)

        self.jobs.submit("needed", job, done=self._on_needed, failed=lambda msg: log.warning("needed-by: %s", msg))

    def _on_needed(self, needed: dict[str, list[str]]) -> None:
        self.needed = needed
        for row in range(self.table.rowCount()):
            key = self.table.item(row, 0).data(Qt.ItemDataRole.UserRole)
            names = needed.get(key, [])
            item = self.table.item(row, NEEDED_COL)
            item.setText(", ".join(names) if names else "—")
            item.setToolTip("profiles that load this model: " + ", ".join(names) if names
                            else "no profile in the profiles folder loads it")

    # ------------------------------------------------------------------ download
    def selected_key(self) -> str | None:
        rows = self.table.selectionModel().selectedRows()
        return self.table.item(rows[0].row(), 0).data(Qt.ItemDataRole.UserRole) if rows else None

    def download_blocked_reason(self) -> str:
        key = self.selected_key()
        if key is None:
            return "select a model to download"
        if self.jobs.is_busy("download") or self.jobs.is_busy("import"):
            return "a transfer is running"
        if self.mirror_edit.text().strip():
            return ""
        entry = self.store.entry(key)
        if not all(any(f in entry.urls for f in group) for group in entry.groups()):
            return f"{key} has no download URL: enter a plant mirror, or import a bundle"
        return ""

    def _update_download(self) -> None:
        reason = self.download_blocked_reason()
        self.download_button.setEnabled(not reason)
        if reason:
            self.download_button.setToolTip(reason)

    def download_selected(self) -> None:
        key = self.selected_key()
        if key is not None:
            self.download(key, self.mirror_edit.text().strip() or None)

    def download(self, key: str, base_url: str | None = None) -> None:
        """Download ``key`` (and what it requires) into the store (worker job with progress)."""
        store = self.store

        def job(_hub: Any, progress: Callable[[float, str], None], _cancelled: Callable[[], bool]) -> list:
            return list(store.download(key, base_url=base_url, progress=progress))

        self.feedback.start(f"downloading {key}…")
        self.jobs.submit("download", job, done=self._on_downloaded,
                         failed=self._on_download_failed, progress=self.feedback.on_progress)

    def _on_downloaded(self, keys: list[str]) -> None:
        self.progress.hide()
        self._last_action = (f"downloaded {', '.join(keys)}" if keys
                             else "nothing to download: already installed")
        self.status.setText(self._last_action)
        self.refresh()

    def _on_download_failed(self, msg: str) -> None:
        self.feedback.on_failed(f"download failed: {msg} (offline? use Import bundle)")

    def refresh(self) -> None:
        """State of every entry (worker job: the first check of a big file hashes it)."""
        store = self.store
        keys = [e.key for e in store.entries()]

        def job(_hub: Any, progress: Callable[[float, str], None], cancelled: Callable[[], bool]) -> dict:
            out: dict[str, str] = {}
            for i, key in enumerate(keys):
                if cancelled():
                    break
                progress(i / max(len(keys), 1), f"checking {key}")
                try:
                    out[key] = str(store.status(key))
                except Exception as exc:  # noqa: BLE001 - one unreadable entry must not hide the others
                    out[key] = f"error: {exc}"
            return out

        self.feedback.start("checking installed models…")
        self.jobs.submit("verify", job, done=self._on_states,
                         failed=self.feedback.on_failed, progress=self.feedback.on_progress)

    def verify(self) -> None:
        """Re-hash every installed file against the manifest (worker job with progress)."""
        store = self.store

        def job(_hub: Any, progress: Callable[[float, str], None], _cancelled: Callable[[], bool]) -> dict:
            report = store.verify(full=True, progress=progress)
            details = {k: "; ".join(f"{c.file}: {c.detail or c.state}" for c in report.problems(k))
                       for k in report.statuses}
            return {"states": dict(report.statuses), "details": details}

        self.feedback.start("verifying checksums…")
        self.jobs.submit("verify", job, done=self._on_verified,
                         failed=self.feedback.on_failed, progress=self.feedback.on_progress)

    def _on_verified(self, result: dict) -> None:
        self._on_states(result["states"])
        for key, detail in result["details"].items():
            row = self.row_of(key)
            if row >= 0 and detail:
                self.table.item(row, STATE_COL).setToolTip(detail)

    def _on_states(self, states: dict[str, str]) -> None:
        self.progress.hide()
        self.states = states
        for key, state in states.items():
            row = self.row_of(key)
            if row < 0:
                continue
            self.table.item(row, STATE_COL).setText(state)
            colour = STATE_COLOURS.get(state, QColor(250, 219, 216))
            for col in range(self.table.columnCount()):
                self.table.item(row, col).setBackground(QBrush(colour))
        counts = {s: sum(1 for v in states.values() if v == s) for s in ("installed", "missing", "corrupt")}
        hint = "" if not counts["missing"] else " — get a bundle with `inspector models download` on a connected machine"
        summary = ", ".join(f"{n} {s}" for s, n in counts.items()) + hint
        self.status.setText(f"{self._last_action} — {summary}" if self._last_action else summary)
        self._last_action = ""

    # ------------------------------------------------------------------ import
    def import_bundle(self, path: str | Path) -> None:
        """Copy and verify the models of a bundle folder or archive into the store (worker job)."""
        store, src = self.store, Path(path)

        def job(_hub: Any, progress: Callable[[float, str], None], _cancelled: Callable[[], bool]) -> list:
            return list(store.import_from(src, progress))

        self.feedback.start(f"importing {src.name}…")
        self.jobs.submit("import", job, done=self._on_imported,
                         failed=self.feedback.on_failed, progress=self.feedback.on_progress)

    def _on_imported(self, keys: list[str]) -> None:
        self.progress.hide()
        self._last_action = f"imported {len(keys)} model(s): {', '.join(keys) or 'none matched the manifest'}"
        self.status.setText(self._last_action)
        self.refresh()

    def _import_folder_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Model bundle folder")
        if folder:
            self.import_bundle(folder)

    def _import_archive_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Model bundle archive", "",
                                              "Bundles (*.zip *.tar *.tar.gz *.tgz)")
        if path:
            self.import_bundle(path)

    # ------------------------------------------------------------------ device
    def _on_devices(self, devices: list[tuple[str, str]]) -> None:
        for dev, text in devices:
            if self.device_combo.findData(dev) < 0:
                self.device_combo.addItem(text, dev)
        current = self.settings.device
        idx = self.device_combo.findData(current)
        if idx < 0:  # e.g. "cuda" saved, listed as cuda:0
            idx = self.device_combo.findData(f"{current}:0") if current == "cuda" else 0
        self.device_combo.setCurrentIndex(max(idx, 0))
        self.device_label.setText("detected: " + "; ".join(text for _, text in devices))

    def apply_device(self, device: str) -> None:
        """Persist the device choice and tell the worker."""
        self.settings.device = device
        try:
            path = self.settings.save()
        except (OSError, SettingsError) as exc:
            self.status.setText(f"<span style='color:#c0392b'>device not saved: {exc}</span>")
            return
        if hasattr(self.worker, "set_device"):
            self.worker.set_device(device)
            self.status.setText(f"device set to {device} (saved in {path})")
        else:
            self.status.setText(f"device {device} saved in {path}; it applies when the station restarts")
        self.device_changed.emit(device)

    # ------------------------------------------------------------------ buttons
    def _on_busy(self, _name: str, _busy: bool) -> None:
        busy = self.jobs.is_busy("import") or self.jobs.is_busy("verify") or self.jobs.is_busy("download")
        for b in (self.verify_button, self.import_folder_button, self.import_archive_button):
            b.setEnabled(not busy)
        self._update_download()
