"""The station's main window: Operator, Records and Engineer tabs around one StationWorker.

The UI thread only shows things and records decisions; every image read and every model
forward runs in the worker (:mod:`inspector.ui.worker`). Keyboard-first; see
:mod:`inspector.ui.decision_bar` for the decision keys. Other keys: ``→``/``PgDn`` next,
``←``/``PgUp`` previous, ``Space`` hold/release a live camera view, ``H`` heatmap, ``B``
reference shot beside the image, ``F`` fit, ``Ctrl+L`` log out.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSettings, Qt, QTimer, Signal
from PySide6.QtGui import QCloseEvent, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QAbstractSpinBox,
    QApplication,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMainWindow,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSplitter,
    QTabWidget,
    QTextEdit,
    QVBoxLayout,
    QWidget,
)

from inspector.archive import plan_archive, write_archive
from inspector.imaging import render_overlay
from inspector.models.hub import ModelHub
from inspector.profile import list_profiles
from inspector.records import (
    InspectionRecord,
    RecordKeeper,
    RecordStore,
    RecordStoreError,
    SqliteRecordStore,
    utc_now_iso,
)
from inspector.settings import Settings, inspector_home
from inspector.sources import FolderSource, SourceError, open_source
from inspector.ui.decision_bar import DecisionBar
from inspector.ui.identity import Identity
from inspector.ui.image_view import ImageView
from inspector.ui.records_view import RecordsView
from inspector.ui.review import Review
from inspector.ui.worker import ProfileInfo, StationResult, StationWorker

log = logging.getLogger(__name__)

SOURCE_KINDS = [("Folder", "folder"), ("Hot folder", "hot"), ("Camera", "camera"),
                ("Video file", "video"), ("GenICam", "genicam")]
VIDEO_EXT = (".avi", ".mp4", ".mkv", ".mov", ".m4v", ".webm")
_TEXT_WIDGETS = (QLineEdit, QAbstractSpinBox, QTextEdit, QPlainTextEdit)


def guess_source_kind(target: str | Path) -> str:
    t = str(target)
    if t.strip().isdigit() or "://" in t:
        return "camera"
    p = Path(t)
    if p.suffix.lower() in VIDEO_EXT:
        return "video"
    return "folder"


def format_timings(timings: dict[str, float]) -> str:
    return " · ".join(f"{k} {v * 1000:.0f} ms" for k, v in timings.items())


class MainWindow(QMainWindow):
    """Operator station. ``worker``/``hub``/``store``/``qsettings`` can be injected (tests)."""

    decision_saved = Signal(object)  # the InspectionRecord as stored (or pending)
    result_shown = Signal(object)  # the StationResult now under review

    def __init__(
        self,
        settings: Settings | None = None,
        worker: StationWorker | None = None,
        hub: ModelHub | None = None,
        qsettings: QSettings | None = None,
        store: RecordStore | None = None,
        lookahead: int = 1,
    ) -> None:
        super().__init__()
        self.settings = settings or Settings.load()
        self.qs = qsettings or QSettings("Inspector", "Station")
        self.identity = Identity(self.qs)
        self.lookahead = lookahead
        self._own_worker = worker is None
        self.worker = worker or StationWorker(hub=hub, settings=self.settings)
        if not self.worker.is_running():
            self.worker.start()
        self.profile_info: ProfileInfo | None = None
        self.review: Review | None = None
        self.folder: FolderSource | None = None
        self.source_kind: str | None = None
        self._pending_source: tuple[str, str] | None = None
        self._shown_at = time.monotonic()
        self._undo: list[tuple[int, InspectionRecord, StationResult]] = []
        self._archiver = ThreadPoolExecutor(max_workers=1, thread_name_prefix="archive")
        self._closing = False
        self.dropped = 0
        self.queue = 0

        # ---- records
        self.store: RecordStore | None = store
        self._store_error: str | None = None
        if self.store is None:
            try:
                self.store = SqliteRecordStore(self.settings.records_path)
            except RecordStoreError as exc:
                self._store_error = str(exc)
        self.keeper = RecordKeeper(self.store, opener=lambda: SqliteRecordStore(self.settings.records_path))
        self._retry_timer = QTimer(self)
        self._retry_timer.setInterval(5000)
        self._retry_timer.timeout.connect(self._retry_pending)

        self._build_ui()
        self._connect_worker()
        self._build_shortcuts()
        self._restore()
        self.decision.set_operator(self.identity.operator)
        self._update_status()
        if self._store_error:
            self.decision.add_event(self._store_error, "error")
            self.decision.set_save_status("Records database unavailable: decisions are kept in memory", False)

    # ================================================================== construction
    def _build_ui(self) -> None:
        self.setWindowTitle("Inspector — station " + self.settings.station_id)
        self.tabs = QTabWidget()
        self.setCentralWidget(self.tabs)

        # ---- operator tab
        op = QWidget()
        self.profile_combo = QComboBox()
        self.profile_combo.setMinimumWidth(180)
        self.profile_open = QPushButton("Open…")
        self.source_kind_combo = QComboBox()
        for label, kind in SOURCE_KINDS:
            self.source_kind_combo.addItem(label, kind)
        self.source_edit = QLineEdit()
        self.source_edit.setPlaceholderText("folder, camera index / URL, or video file")
        self.source_browse = QPushButton("Browse…")
        self.start_button = QPushButton("▶ Start")
        self.stop_button = QPushButton("■ Stop")
        self.auto_advance = QCheckBox("Auto-advance")
        self.auto_advance.setChecked(True)
        self.hold_on_fail = QCheckBox("Hold on FAIL")
        self.hold_on_fail.setChecked(True)
        for w in (self.profile_open, self.source_browse, self.start_button, self.stop_button,
                  self.auto_advance, self.hold_on_fail):
            w.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        top = QHBoxLayout()
        top.addWidget(QLabel("Profile"))
        top.addWidget(self.profile_combo)
        top.addWidget(self.profile_open)
        top.addSpacing(16)
        top.addWidget(QLabel("Source"))
        top.addWidget(self.source_kind_combo)
        top.addWidget(self.source_edit, 1)
        top.addWidget(self.source_browse)
        top.addWidget(self.start_button)
        top.addWidget(self.stop_button)
        top.addWidget(self.auto_advance)
        top.addWidget(self.hold_on_fail)

        self.view = ImageView()
        self.prev_button = QPushButton("◀ Prev")
        self.next_button = QPushButton("Next ▶")
        self.position_label = QLabel("")
        self.batch_progress = QProgressBar()
        self.batch_progress.setFormat("%v / %m inspected")
        self.batch_progress.setVisible(False)
        self.add_reference_button = QPushButton("+ Reference shot")
        self.add_reference_button.setToolTip("add the image on screen to the profile's reference shots "
                                             "(Engineer tab → Profile)")
        for w in (self.prev_button, self.next_button, self.add_reference_button):
            w.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        nav = QHBoxLayout()
        nav.addWidget(self.prev_button)
        nav.addWidget(self.position_label)
        nav.addWidget(self.next_button)
        nav.addWidget(self.batch_progress, 1)
        nav.addWidget(self.add_reference_button)
        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 0, 0)
        ll.addWidget(self.view, 1)
        ll.addLayout(nav)

        self.decision = DecisionBar()
        self.decision.setMinimumWidth(320)
        self.decision.setMaximumWidth(440)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(left)
        split.addWidget(self.decision)
        split.setStretchFactor(0, 1)
        self.op_splitter = split
        ol = QVBoxLayout(op)
        ol.addLayout(top)
        ol.addWidget(split, 1)
        self.operator_tab = op
        self.tabs.addTab(op, "Operator")

        # ---- records tab
        self.records_view = RecordsView(lambda: self.store)
        self.tabs.addTab(self.records_view, "Records")
        self._records_dirty = True

        # ---- engineer tab
        self.engineer = self._make_engineer()
        self.tabs.addTab(self.engineer, "Engineer")
        self.add_reference_button.setVisible(hasattr(self.engineer, "add_current_image"))
        self.add_reference_button.clicked.connect(self.add_current_to_references)
        self.tabs.currentChanged.connect(self._tab_changed)

        # ---- status bar
        sb = self.statusBar()
        self.device_label = QLabel("device: —")
        self.model_label = QLabel("no profile")
        self.timing_label = QLabel("")
        self.queue_label = QLabel("queue 0")
        self.dropped_label = QLabel("")
        self.records_label = QLabel("")
        self.loading_bar = QProgressBar()
        self.loading_bar.setRange(0, 100)
        self.loading_bar.setMaximumWidth(220)
        self.loading_bar.setVisible(False)
        for w in (self.device_label, self.model_label, self.timing_label, self.queue_label,
                  self.dropped_label, self.records_label):
            sb.addPermanentWidget(w)
        sb.addPermanentWidget(self.loading_bar)

        # ---- wiring
        self.refresh_profiles()
        self.profile_combo.activated.connect(self._profile_chosen)
        self.profile_open.clicked.connect(self._open_profile_dialog)
        self.source_browse.clicked.connect(self._browse_source)
        self.start_button.clicked.connect(lambda: self.start_source())
        self.stop_button.clicked.connect(self.stop_source)
        self.prev_button.clicked.connect(lambda: self.step(-1))
        self.next_button.clicked.connect(lambda: self.step(1))
        self.decision.accepted.connect(lambda: self._decide("PASS", None, ""))
        self.decision.rejected.connect(lambda reason, note: self._decide("FAIL", reason, note))
        self.decision.undo_requested.connect(self.undo)
        self.decision.logout_requested.connect(self.logout)
        self.decision.login.logged_in.connect(self.login)
        self.view.opacity.valueChanged.connect(lambda v: self.qs.setValue("view/opacity", v))
        self.resize(1400, 860)

    def _make_engineer(self) -> QWidget:
        try:
            from inspector.ui.engineer import EngineerPanel  # type: ignore[import-not-found]
        except ModuleNotFoundError as exc:
            if exc.name != "inspector.ui.engineer":
                raise
            label = QLabel("Engineer tools are not installed in this build.")
            label.setAlignment(Qt.AlignmentFlag.AlignCenter)
            return label
        try:
            return EngineerPanel(self.worker, self.settings, parent=None)
        except Exception as exc:  # noqa: BLE001 - a broken engineer panel must not stop the station
            log.exception("engineer panel failed to start")
            label = QLabel(f"Engineer tools failed to start:\n{type(exc).__name__}: {exc}")
            label.setAlignment(Qt.AlignmentFlag.AlignCenter)
            return label

    def _connect_worker(self) -> None:
        w = self.worker
        w.models_loading.connect(self._on_loading)
        w.profile_ready.connect(self._on_profile_ready)
        w.profile_failed.connect(self._on_profile_failed)
        w.result.connect(self._on_result)
        w.error.connect(self._on_worker_error)
        w.queue_changed.connect(self._on_queue)
        w.dropped_changed.connect(self._on_dropped)
        w.source_finished.connect(self._on_source_finished)
        w.busy_changed.connect(self._on_busy)

    # Worker signals are emitted in the worker thread: connect them only to methods of this
    # QObject (queued into the UI thread), never to lambdas (which would run in the worker).
    def _on_worker_error(self, message: str) -> None:
        self.decision.add_event(message, "error")

    def _on_busy(self, _busy: bool) -> None:
        self._update_status()

    def _build_shortcuts(self) -> None:
        self._shortcuts: list[QShortcut] = []

        def add(keys: str | QKeySequence.StandardKey | Qt.Key | int, fn: Any) -> None:
            sc = QShortcut(QKeySequence(keys), self)
            sc.setContext(Qt.ShortcutContext.WindowShortcut)
            sc.activated.connect(fn)
            self._shortcuts.append(sc)

        for k in (Qt.Key.Key_A, Qt.Key.Key_Return, Qt.Key.Key_Enter):
            add(k, self.decision.press_accept)
        add(Qt.Key.Key_R, self.decision.press_reject)
        add(Qt.Key.Key_Escape, self.decision.press_escape)
        add("Ctrl+Z", self.undo)
        for k in (Qt.Key.Key_Right, Qt.Key.Key_PageDown):
            add(k, lambda: self.step(1))
        for k in (Qt.Key.Key_Left, Qt.Key.Key_PageUp):
            add(k, lambda: self.step(-1))
        add(Qt.Key.Key_Space, self.toggle_hold)
        add(Qt.Key.Key_H, self.view.toggle_heatmap)
        add(Qt.Key.Key_B, self.view.toggle_reference)
        add(Qt.Key.Key_F, self.view.fit)
        add("Ctrl+L", self.logout)
        for n in range(1, 10):
            add(getattr(Qt.Key, f"Key_{n}"), lambda n=n: self.decision.press_digit(n))
        app = QApplication.instance()
        if app is not None:
            app.focusChanged.connect(self._focus_changed)  # type: ignore[attr-defined]

    def _focus_changed(self, _old: QWidget | None, new: QWidget | None) -> None:
        self._update_shortcuts(new)

    def _update_shortcuts(self, focus: QWidget | None = None) -> None:
        focus = focus if focus is not None else QApplication.focusWidget()
        typing = isinstance(focus, _TEXT_WIDGETS) or (isinstance(focus, QComboBox) and focus.isEditable())
        enabled = self.tabs.currentWidget() is self.operator_tab and not typing
        for sc in self._shortcuts:
            sc.setEnabled(enabled)

    def _tab_changed(self, _index: int) -> None:
        self._update_shortcuts()
        if self.tabs.currentWidget() is self.records_view and self._records_dirty:
            self._records_dirty = False
            self.records_view.refresh()

    # ================================================================== settings
    def _restore(self) -> None:
        geo = self.qs.value("window/geometry")
        if geo is not None:
            self.restoreGeometry(geo)
        self.view.opacity.setValue(int(self.qs.value("view/opacity", 40)))
        kind = str(self.qs.value("source/kind", "folder"))
        idx = self.source_kind_combo.findData(kind)
        self.source_kind_combo.setCurrentIndex(max(idx, 0))
        self.source_edit.setText(str(self.qs.value("source/target", "")))
        self.auto_advance.setChecked(str(self.qs.value("review/auto_advance", "true")) == "true")

    def _save_settings(self) -> None:
        self.qs.setValue("window/geometry", self.saveGeometry())
        self.qs.setValue("source/kind", self.source_kind_combo.currentData())
        self.qs.setValue("source/target", self.source_edit.text())
        self.qs.setValue("review/auto_advance", "true" if self.auto_advance.isChecked() else "false")
        if self.profile_info is not None and self.profile_info.folder is not None:
            self.qs.setValue("profile/last", str(self.profile_info.folder))
        self.qs.sync()

    def restore_last_profile(self) -> bool:
        last = self.qs.value("profile/last")
        if last and Path(str(last)).is_dir():
            self.load_profile(str(last))
            return True
        return False

    # ================================================================== identity
    def login(self, operator: str) -> None:
        try:
            op = self.identity.login(operator)
        except ValueError as exc:
            self.decision.login.error.setText(str(exc))
            return
        self.decision.set_operator(op)
        self.decision.add_event(f"operator {op} started the shift")
        self._update_status()
        self._show_current(auto_skip=False)
        self._focus_view()

    def logout(self) -> None:
        op = self.identity.operator
        self.identity.logout()
        self._undo.clear()
        self.decision.set_operator(None)
        if op:
            self.decision.add_event(f"operator {op} logged out")
        self._update_status()

    # ================================================================== profiles
    def refresh_profiles(self) -> None:
        self.profile_combo.blockSignals(True)
        self.profile_combo.clear()
        self.profile_combo.addItem("— pick a profile —", "")
        try:
            folders = list_profiles(self.settings.default_profiles_dir())
        except OSError:
            folders = []
        for folder in folders:
            self.profile_combo.addItem(folder.name, str(folder))
        self.profile_combo.blockSignals(False)

    def _profile_chosen(self, index: int) -> None:
        path = self.profile_combo.itemData(index)
        if path:
            self.load_profile(path)

    def _open_profile_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open profile folder", str(self.settings.default_profiles_dir()))
        if folder:
            self.load_profile(folder)

    def load_profile(self, target: str | Path) -> None:
        """Ask the worker to load a profile (folder, profile.yaml or name); the UI stays live."""
        target = str(target)
        idx = self.profile_combo.findData(target)
        if idx < 0:
            p = Path(target)
            folder = p.parent if p.name == "profile.yaml" else p
            self.profile_combo.addItem(folder.name, str(folder))
            idx = self.profile_combo.count() - 1
        self.profile_combo.setCurrentIndex(idx)
        if self.review is not None:
            self.review.forget_results()
        self.worker.load_profile(target)
        self.decision.add_event(f"loading profile {Path(target).name} …")

    def _on_loading(self, frac: float, msg: str) -> None:
        done = frac >= 1.0
        self.loading_bar.setVisible(not done)
        self.loading_bar.setValue(int(frac * 100))
        self.loading_bar.setFormat(f"{msg} %p%" if msg else "%p%")
        if done:
            self.statusBar().clearMessage()
        elif msg:
            self.statusBar().showMessage(msg, 3000)

    def _on_profile_ready(self, info: ProfileInfo) -> None:
        self.profile_info = info
        p = info.profile
        self.device_label.setText(f"device: {info.device}")
        models = ", ".join(k.split(":", 1)[-1] for k in info.model_keys) or "weight-free"
        self.model_label.setText(f"{p.name} v{p.version} · {p.pipeline} · {models}")
        self.decision.add_event(
            f"profile {p.name} v{p.version} ready ({p.pipeline}, {len(info.references)} reference shots, "
            f"{info.seconds:.1f} s)"
        )
        self.view.set_message("")
        if self.review is not None:
            self.review.forget_results()
            self._request_more()
            self._show_current(auto_skip=False)
        if self._pending_source is not None:
            kind, target = self._pending_source
            self._pending_source = None
            self.start_source(kind, target)
        self._update_status()

    def _on_profile_failed(self, message: str) -> None:
        self.profile_info = None
        self.model_label.setText("no profile")
        self.decision.add_event(message.split("\n")[0] + " — see the message on the image", "error")
        self.view.set_message(message, error=True)
        self.decision.clear("Profile not loaded — pick another profile.")
        self._pending_source = None
        self._update_status()

    # ================================================================== sources
    def _browse_source(self) -> None:
        kind = self.source_kind_combo.currentData()
        if kind in ("folder", "hot"):
            path = QFileDialog.getExistingDirectory(self, "Image folder", self.source_edit.text())
        elif kind == "video":
            path, _ = QFileDialog.getOpenFileName(self, "Video file", self.source_edit.text(),
                                                  "Videos (*.avi *.mp4 *.mkv *.mov)")
        elif kind == "genicam":
            path, _ = QFileDialog.getOpenFileName(self, "GenTL producer", "", "GenTL producers (*.cti)")
        else:
            return
        if path:
            self.source_edit.setText(path)

    def set_source(self, kind: str, target: str) -> None:
        idx = self.source_kind_combo.findData(kind)
        if idx >= 0:
            self.source_kind_combo.setCurrentIndex(idx)
        self.source_edit.setText(str(target))

    def start_source(self, kind: str | None = None, target: str | None = None) -> bool:
        """Start a source; folders and hot folders wait for a profile (cameras show frames at once)."""
        kind = kind or self.source_kind_combo.currentData()
        target = str(target if target is not None else self.source_edit.text()).strip()
        self.set_source(kind, target)
        self.stop_source()
        if kind in ("folder", "hot") and self.profile_info is None:
            self._pending_source = (kind, target)
            msg = "Pick a product profile: the source starts when it is loaded."
            self.view.set_message(msg)
            self.decision.add_event(msg, "warning")
            return False
        try:
            if kind == "folder":
                self.folder = FolderSource(target)
                if not len(self.folder):
                    raise SourceError(f"{target}: no images (PNG, JPEG, BMP, TIFF) in this folder")
                self.review = Review("folder", len(self.folder), lookahead=self.lookahead)
            else:
                source = open_source(kind, target)
                self.review = Review("live" if source.live else "stream",
                                     hold_on_fail=self.hold_on_fail.isChecked())
                self.worker.start_source(source)
        except (SourceError, OSError) as exc:
            self.folder = None
            self.review = None
            self.view.set_message(str(exc), error=True)
            self.decision.add_event(str(exc), "error")
            return False
        self.source_kind = kind
        self.dropped = 0
        self.decision.add_event(f"started {kind}: {target}")
        self.batch_progress.setVisible(kind == "folder")
        if kind == "folder":
            self.batch_progress.setRange(0, len(self.folder))  # type: ignore[arg-type]
            self.batch_progress.setValue(0)
        self._request_more()
        self._show_current(auto_skip=False)
        self._update_status()
        self._focus_view()
        return True

    def stop_source(self) -> None:
        self.worker.stop_source()
        self.worker.cancel_inspections()
        if self.review is not None:
            self.decision.add_event("source stopped")
        self.review = None
        self.folder = None
        self.source_kind = None
        self._update_status()

    def _on_source_finished(self, failure: str) -> None:
        if failure:
            self.decision.add_event(f"source stopped: {failure}", "error")
        else:
            self.decision.add_event("source ended")

    def _on_dropped(self, n: int) -> None:
        self.dropped = n
        self._update_status()

    def _on_queue(self, n: int) -> None:
        self.queue = n
        self._update_status()

    # ================================================================== results
    def _request_more(self) -> None:
        if self.review is None or self.folder is None or self.profile_info is None:
            return
        for key in self.review.wanted():
            self.worker.inspect_item(self.folder, key)

    def _on_result(self, res: StationResult) -> None:
        review = self.review
        if review is None:
            return
        if review.mode != "stream" and self.profile_info is not None and res.inspection is not None \
                and res.generation != self.profile_info.generation:
            review.requested.discard(res.key)
            self._request_more()
            return
        if res.error:
            level = "warning" if res.live else "error"
            self.decision.add_event(res.error, level)
            if res.live:
                self.statusBar().showMessage(res.error, 5000)
                return
        is_fail = res.inspection is not None and res.inspection.verdict == "FAIL"
        if review.mode == "live" and res.inspection is None and review.hold:
            return
        is_current = review.add(res.key, res, is_fail)
        if review.mode == "folder":
            self.batch_progress.setValue(review.done_count())
        if is_current:
            self._show_current(auto_skip=True)
        else:
            self._update_position()
        self._request_more()

    def _show_current(self, auto_skip: bool = True) -> None:
        review = self.review
        if review is None:
            return
        while True:
            res = review.current()
            key = review.current_key()
            if auto_skip and res is not None and res.error and review.mode != "live" and key not in review.decided:
                review.advance()
                self._request_more()
                continue
            break
        self._update_position()
        if review.at_end():
            n = review.total
            self.view.set_message(f"All {n} images reviewed." if n else "Waiting for images…")
            self.decision.clear("nothing to review")
            return
        if res is None:
            if key is not None and self.folder is not None:
                name = self.folder.paths[key].relative_to(self.folder.folder).as_posix()
                self.view.set_message(f"inspecting {name} …")
                self.decision.show_busy(name)
            elif review.mode == "live":
                self.decision.clear("waiting for the camera …")
            return
        self._display(res, key)

    def display_name(self, frame: Any) -> str:
        """The image's path relative to the folder under review (``scratch/003.png``), or its name."""
        path = frame.path
        if path is None:
            return frame.name
        if self.folder is not None:
            try:
                return path.relative_to(self.folder.folder).as_posix()
            except ValueError:
                pass
        return f"{path.parent.name}/{path.name}" if path.parent.name else path.name

    def _display(self, res: StationResult, key: int | None) -> None:
        frame = res.frame
        name = self.display_name(frame)
        if res.error:
            if frame.image is not None:
                self.view.show_inspection(frame.image, message=res.error)
            else:
                self.view.clear(res.error)
            self.view.set_message(res.error, error=True)
            self.decision.show_error(name, res.error)
            return
        if res.inspection is None:
            assert frame.image is not None
            self.view.show_inspection(frame.image, message="no profile loaded: frames are shown, not inspected")
            self.decision.clear("no profile loaded")
            return
        ins = res.inspection
        profile = self.profile_info.profile if self.profile_info else None
        threshold = profile.decision.image_threshold if profile else 0.5
        reasons = profile.reason_codes if profile else []
        assert frame.image is not None
        ref_title = res.reference_path.name if res.reference_path else ""
        self.view.show_inspection(
            frame.image, ins.detection.anomaly_map, ins.regions, res.gt_mask, res.reference, ref_title,
            vmax=2.0 * threshold if threshold > 0 else 1.0,
        )
        decided = None
        if self.review is not None and key in self.review.decided:
            decided = "Already decided (Ctrl+Z undoes the last decision)."
        self.decision.show_result(name, ins.verdict, ins.image_score, threshold, ins.regions, reasons, decided)
        self.timing_label.setText(format_timings(ins.detection.timings))
        self._shown_at = time.monotonic()
        self.result_shown.emit(res)

    def _update_position(self) -> None:
        r = self.review
        if r is None:
            self.position_label.setText("")
            return
        if r.mode == "live":
            self.position_label.setText("HOLD" if r.hold else "live")
        else:
            self.position_label.setText(f"{min(r.pos + 1, r.total)} / {r.total}")

    def step(self, delta: int) -> None:
        if self.review is not None and self.review.step(delta):
            self.decision.press_escape()
            self._request_more()
            self._show_current(auto_skip=False)

    def add_current_to_references(self) -> str | None:
        """Hand the frame on screen to the engineer tools as a new reference shot of the edited profile."""
        res = self.review.current() if self.review is not None else None
        if res is None or res.frame.image is None or not hasattr(self.engineer, "add_current_image"):
            self.statusBar().showMessage("no image to add", 3000)
            return None
        if getattr(self.engineer, "editor", None) is not None and self.engineer.editor.profile is None \
                and self.profile_info is not None and self.profile_info.folder is not None:
            self.engineer.open_profile(self.profile_info.folder)
        rel = self.engineer.add_current_image(res.frame.image)
        if rel:
            self.decision.add_event(f"added {self.display_name(res.frame)} as reference shot {rel} "
                                    "(save the profile in the Engineer tab)")
        else:
            self.decision.add_event("could not add the reference shot (see the Engineer tab)", "warning")
        return rel

    def toggle_hold(self) -> None:
        if self.review is not None and self.review.mode == "live":
            self.review.hold = not self.review.hold
            self._update_position()

    # ================================================================== decisions
    def _decide(self, verdict: str, reason: str | None, note: str) -> None:
        review = self.review
        res = review.current() if review is not None else None
        key = review.current_key() if review is not None else None
        operator = self.identity.operator
        if review is None or res is None or res.inspection is None or key is None or not operator:
            return
        if key in review.decided:
            return
        ins = res.inspection
        profile = self.profile_info.profile if self.profile_info else None
        timestamp = utc_now_iso()
        rec = InspectionRecord(
            station_id=self.settings.station_id, operator_id=operator,
            profile_name=ins.profile_name, profile_version=ins.profile_version, profile_hash=ins.profile_hash,
            pipeline=ins.pipeline, model_keys=ins.model_keys, image_path=ins.image_path,
            image_sha256=ins.image_sha256, image_score=ins.image_score, auto_verdict=ins.verdict,
            operator_verdict=verdict, reason=reason, note=note, duration_s=ins.seconds,
            decision_s=time.monotonic() - self._shown_at, source_id=res.frame.source_id, timestamp=timestamp,
        )
        plan = plan_archive(self.settings.archive_dir, rec.uid, timestamp, ins.image_path,
                            self.settings.archive_images)
        rec.overlay_path = str(plan.overlay)
        rec.archive_path = str(plan.image) if plan.image else None
        stored = self.keeper.save(rec)
        self._report_save(stored, rec)
        review.mark_decided(key, rec.uid)
        self._undo.append((key, rec, res))
        self._archive(plan, res, profile.decision.image_threshold if profile else 0.5)
        self._records_dirty = True
        self.decision_saved.emit(stored or rec)
        if self.auto_advance.isChecked() or review.mode == "live":
            review.advance()
            self._request_more()
            self._show_current(auto_skip=True)
        else:
            self._show_current(auto_skip=False)

    def _report_save(self, stored: InspectionRecord | None, rec: InspectionRecord) -> None:
        if stored is not None:
            verdict = "UNDO" if rec.kind == "correction" else rec.operator_verdict
            image = Path(rec.image_path) if rec.image_path else None
            name = f"{image.parent.name}/{image.name}" if image is not None else (rec.source_id or "")
            self.decision.set_save_status(f"✔ last decision saved #{stored.id}: {verdict} · {name}", True)
        else:
            n = len(self.keeper.pending)
            self.decision.set_save_status(f"⚠ NOT SAVED — {n} decision(s) kept in memory, retrying", False)
            self.decision.add_event(self.keeper.last_error or "record not saved", "error")
            self._retry_timer.start()
        self._update_status()

    def _retry_pending(self) -> None:
        if not self.keeper.pending:
            self._retry_timer.stop()
            return
        saved = self.keeper.retry()
        if not self.keeper.pending:
            self._retry_timer.stop()
            self.decision.set_save_status(f"✔ {saved} pending decision(s) saved", True)
            self.decision.add_event(f"{saved} pending decision(s) saved")
            self._records_dirty = True
        self._update_status()

    def _archive(self, plan: Any, res: StationResult, threshold: float) -> None:
        ins = res.inspection
        image = res.frame.image
        if ins is None or image is None:
            return

        def job() -> None:
            try:
                overlay = render_overlay(image, ins.detection.anomaly_map, ins.regions, res.gt_mask,
                                         vmax=2.0 * threshold if threshold > 0 else 1.0)
                write_archive(plan, overlay, image, res.frame.path)
            except Exception:  # noqa: BLE001 - the decision is saved; the archive is secondary
                log.exception("archiving %s failed", plan.overlay)

        self._archiver.submit(job)

    def undo(self) -> None:
        """Undo the last decision of this shift: a correction row, and the item is back for review."""
        if not self._undo or not self.identity.operator:
            self.statusBar().showMessage("nothing to undo", 3000)
            return
        key, rec, res = self._undo.pop()
        corr = InspectionRecord(
            station_id=self.settings.station_id, operator_id=self.identity.operator,
            profile_name=rec.profile_name, profile_version=rec.profile_version, profile_hash=rec.profile_hash,
            pipeline=rec.pipeline, model_keys=rec.model_keys, image_path=rec.image_path,
            image_sha256=rec.image_sha256, image_score=rec.image_score, auto_verdict=rec.auto_verdict,
            operator_verdict=None, reason="undo", note=f"undo of decision {rec.uid}",
            kind="correction", corrects_uid=rec.uid, source_id=rec.source_id,
        )
        stored = self.keeper.save(corr)
        self._report_save(stored, corr)
        self.decision.add_event(f"undid {rec.operator_verdict} on {Path(rec.image_path or '').name or 'frame'}")
        self._records_dirty = True
        self.decision_saved.emit(stored or corr)
        review = self.review
        if review is None:
            return
        review.undecide(key)
        if review.mode == "live":
            review.results[key] = res
        review.seek_key(key)
        self._show_current(auto_skip=False)

    # ================================================================== misc
    def _focus_view(self) -> None:
        self.view.graphics.setFocus()
        self._update_shortcuts()

    def _update_status(self) -> None:
        self.queue_label.setText(f"queue {self.queue}" + (" · busy" if self.worker.is_busy() else ""))
        self.dropped_label.setText(f"dropped {self.dropped}" if self.review and self.review.mode == "live" else "")
        pending = len(self.keeper.pending)
        if pending:
            self.records_label.setText(f"<b style='color:#e53935'>{pending} NOT SAVED</b>")
        elif self.store is not None:
            self.records_label.setText(f"records ✔ · station {self.settings.station_id}")
        else:
            self.records_label.setText("<b style='color:#e53935'>records unavailable</b>")
        self._update_position()

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt API
        if self._closing:
            event.accept()
            return
        self._closing = True
        self._save_settings()
        self.worker.stop_source()
        if self._own_worker:
            self.worker.stop()
        self._archiver.shutdown(wait=True)
        if self.keeper.pending:
            self.keeper.retry()
        if self.keeper.pending:
            aside = inspector_home() / f"pending-records-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
            try:
                self.keeper.dump_pending(aside)
                log.error("%d decisions could not be saved to the records database; kept in %s "
                          "(import with `inspector records import %s`)", len(self.keeper.pending), aside, aside)
            except OSError:
                log.critical("%d decisions could not be saved anywhere: %s", len(self.keeper.pending),
                             [r.content() for r in self.keeper.pending])
        if self.store is not None:
            self.store.close()
        super().closeEvent(event)


__all__ = ["MainWindow", "guess_source_kind"]
