"""The station's main window: Operator, Records and Engineer tabs around one StationWorker.

The window is a view of a :class:`inspector.station.Session` (the shift: the part under review,
decisions, corrections, every part accounted for, the archive, the counters); it takes the
session it shows, as napari's ``QtViewer(viewer_model)`` takes its model. The UI thread only
shows things and forwards the operator's keys; every image read and every model forward runs
in the worker (:mod:`inspector.ui.worker`).

Keyboard-first: every action has a key; :data:`inspector.ui.keys.KEYS` is the one table the
shortcuts are built from and the help overlay (``F1`` or ``?``) lists.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QMarginsF, QSettings, Qt, QTimer, Signal
from PySide6.QtGui import QCloseEvent, QPageLayout, QPageSize, QPdfWriter, QTextDocument
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
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSplitter,
    QTabWidget,
    QTextEdit,
    QVBoxLayout,
    QWidget,
)

from inspector.imaging import is_image_file
from inspector.models.hub import ModelHub
from inspector.outputs.dispatcher import Dispatcher
from inspector.overlay import heat_vmax
from inspector.profile import list_profiles
from inspector.records import RecordKeeper, RecordStore, RecordStoreError, SqliteRecordStore
from inspector.settings import Settings, inspector_home
from inspector.sources import FolderSource, HotFolderSource, SourceError, open_source
from inspector.station import ProfileStamp, Review, Saved, Session, StationResult, describe_decision
from inspector.station.report import report_html, report_stem, write_report_csv
from inspector.station.session import ShiftSummary
from inspector.ui.decision_bar import DecisionBar
from inspector.ui.help_overlay import HelpOverlay
from inspector.ui.identity import UsersDialog
from inspector.ui.image_view import ImageView
from inspector.ui.keys import KEYS, KeyBindings, key_rows
from inspector.ui.records_view import RecordsView
from inspector.ui.text import shrinkable
from inspector.ui.worker import ProfileInfo, StationWorker, missing_weights
from inspector.users import User, UserStore

if TYPE_CHECKING:
    from inspector.outputs.station_link import OpcUaLink
    from inspector.sources import Source

log = logging.getLogger(__name__)

SOURCE_KINDS = [("Folder", "folder"), ("Hot folder", "hot"), ("Camera", "camera"),
                ("Video file", "video"), ("GenICam", "genicam")]
HOT_EXISTING = [("inspect files already there", "inspect"), ("ignore files already there", "ignore")]
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


def format_timings(timings: dict[str, float], total_s: float) -> str:
    """The inspection's total first (the status bar may cut the label), then each stage's ms:
    ``185 ms: align 60 · features 90 …``."""
    stages = " · ".join(f"{k} {v * 1000:.0f}" for k, v in timings.items())
    return f"{total_s * 1000:.0f} ms: {stages}" if stages else f"{total_s * 1000:.0f} ms"


class MainWindow(QMainWindow):
    """Operator station: a view of ``session`` (built from ``settings`` when not given).

    ``worker``/``hub``/``store``/``qsettings``/``users`` can be injected (tests)."""

    decision_saved = Signal(object)  # the InspectionRecord as stored (or pending)
    result_shown = Signal(object)  # the StationResult now under review
    weights_checked = Signal(object)  # {profile folder: [missing model keys]} from the pre-flight thread
    opcua_state_changed = Signal()  # the PLC link started listening or failed (from its start thread)

    def __init__(
        self,
        settings: Settings | None = None,
        worker: StationWorker | None = None,
        hub: ModelHub | None = None,
        qsettings: QSettings | None = None,
        store: RecordStore | None = None,
        lookahead: int = 1,
        session: Session | None = None,
        users: UserStore | None = None,
        dispatcher: Dispatcher | None = None,
        opcua: OpcUaLink | None = None,
    ) -> None:
        super().__init__()
        self.dispatcher = dispatcher  # the plant outputs (MQTT, webhook); stopped when the window closes
        self.opcua = opcua  # the PLC link (outputs.opcua): sources are taken frame by frame at its Triggers
        self.settings = settings or Settings.load()
        self.qs = qsettings or QSettings("Inspector", "Station")
        self.users = users or UserStore()
        self.lookahead = lookahead
        self._own_worker = worker is None
        self.worker = worker or StationWorker(hub=hub, settings=self.settings)
        if not self.worker.is_running():
            self.worker.start()
        self.profile_info: ProfileInfo | None = None
        self.folder: FolderSource | None = None
        self.source_kind: str | None = None
        self._pending_source: tuple[str, str] | None = None
        self._profile_failure = ""
        self._closing = False
        self.dropped = 0
        self.queue = 0
        self.missing_weights: dict[str, list[str]] = {}
        self.ask: Callable[[str, str], bool] = self._ask  # replaced in tests

        # ---- records and the session (the model this window shows)
        self.store: RecordStore | None = store
        self._store_error: str | None = None
        if session is None:
            if self.store is None:  # journal (settings.records_journal) first, then the database
                keeper = RecordKeeper.for_settings(self.settings)
                self.store = keeper.store
                if self.store is None:
                    self._store_error = keeper.last_error
            else:
                keeper = RecordKeeper(self.store, opener=lambda: SqliteRecordStore(self.settings.records_path))
            session = Session(keeper, self.settings.station_id, self.settings.archive_dir,
                              self.settings.archive_images,
                              on_saved=dispatcher.publish_record if dispatcher is not None else None)
        self.session = session
        self.keeper = session.keeper
        if self.store is None:
            self.store = self.keeper.store
        if self.store is None and self._store_error is None:
            self._store_error = self.keeper.last_error or \
                f"{self.settings.records_path}: the records database could not be opened"
        self._retry_timer = QTimer(self)
        self._retry_timer.setInterval(5000)
        self._retry_timer.timeout.connect(self._retry_pending)
        self._backlog_timer = QTimer(self)  # the backlogs drain in other threads: refresh them
        self._backlog_timer.setInterval(2000)
        self._backlog_timer.timeout.connect(self._update_backlog)
        self._backlog_timer.start()

        self._build_ui()
        self._connect_worker()
        self._build_shortcuts()
        self._restore()
        self._apply_user()
        self._update_status()
        if self.opcua is not None:
            self.opcua_state_changed.connect(self._opcua_state)
            self.opcua.start(self.worker, on_state=self.opcua_state_changed.emit)
            self.decision.add_event(f"PLC link (OPC UA) starting on {self.opcua.endpoint}: a source started here is "
                                    "inspected frame by frame at each PLC Trigger")
            self._update_backlog()
        if self._store_error:
            self.decision.add_event(self._store_error, "error")
            journal = getattr(self.keeper, "journal", None)
            self.decision.set_save_status(
                "Records database unavailable: decisions go to the journal and are written when it is back"
                if journal is not None else "Records database unavailable: decisions cannot be kept", False)

    # ================================================================== session views
    @property
    def review(self) -> Review | None:
        return self.session.review

    @property
    def user(self) -> User | None:
        return self.session.user

    # ================================================================== construction
    def _build_ui(self) -> None:
        self.setWindowTitle("Inspector — station " + self.settings.station_id)
        self.tabs = QTabWidget()
        self.setCentralWidget(self.tabs)

        # ---- operator tab: two rows of controls so that 1024 px wide is enough
        op = QWidget()
        self.profile_combo = QComboBox()
        self.profile_combo.setMinimumWidth(120)
        self.profile_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.profile_combo.setMinimumContentsLength(14)
        self.profile_open = QPushButton("Open…")
        self.source_kind_combo = QComboBox()
        for label, kind in SOURCE_KINDS:
            self.source_kind_combo.addItem(label, kind)
        self.source_edit = QLineEdit()
        self.source_edit.setMinimumWidth(180)
        self.source_edit.setPlaceholderText("folder, camera index / URL, or video file")
        self.source_browse = QPushButton("Browse…")
        self.start_button = QPushButton("▶ Start  [F5]")
        self.stop_button = QPushButton("■ Stop  [Shift+F5]")
        self.auto_advance = QCheckBox("Auto-advance [Alt+A]")
        self.auto_advance.setChecked(True)
        self.hold_on_fail = QCheckBox("Hold on FAIL [Alt+O]")
        self.hold_on_fail.setChecked(True)
        self.hot_existing = QComboBox()
        for label, value in HOT_EXISTING:
            self.hot_existing.addItem(label, value)
        self.hot_existing.setToolTip("Hot folder: what Start does with the files already in the folder [Alt+I]")
        for w in (self.profile_open, self.source_browse, self.start_button, self.stop_button,
                  self.auto_advance, self.hold_on_fail):
            w.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        row1 = QHBoxLayout()
        row1.addWidget(QLabel("Profile"))
        row1.addWidget(self.profile_combo, 1)
        row1.addWidget(self.profile_open)
        row1.addSpacing(8)
        row1.addWidget(QLabel("Source"))
        row1.addWidget(self.source_kind_combo)
        row1.addWidget(self.source_edit, 3)
        row1.addWidget(self.source_browse)
        row2 = QHBoxLayout()
        row2.addWidget(self.start_button)
        row2.addWidget(self.stop_button)
        row2.addSpacing(8)
        row2.addWidget(self.auto_advance)
        row2.addWidget(self.hold_on_fail)
        row2.addWidget(QLabel("Hot folder:"))
        row2.addWidget(self.hot_existing)
        row2.addStretch(1)
        self.help_button = QPushButton("Keys  [F1]")
        self.help_button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        row2.addWidget(self.help_button)

        self.view = ImageView()
        self.prev_button = QPushButton("◀ Prev")
        self.next_button = QPushButton("Next ▶")
        self.position_label = QLabel("")
        self.batch_progress = QProgressBar()
        self.batch_progress.setFormat("%v / %m inspected")
        self.batch_progress.setVisible(False)
        self.add_reference_button = QPushButton("+ Reference shot")
        self.add_reference_button.setToolTip("add the image on screen to the running profile's reference shots "
                                             "(engineers; Ctrl+Shift+R)")
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

        self.decision = DecisionBar(self.users, self.settings.station_id)
        self.decision.setMinimumWidth(300)
        self.decision.setMaximumWidth(440)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(left)
        split.addWidget(self.decision)
        split.setStretchFactor(0, 1)
        split.setChildrenCollapsible(False)
        self.op_splitter = split
        ol = QVBoxLayout(op)
        ol.setContentsMargins(6, 6, 6, 0)
        ol.addLayout(row1)
        ol.addLayout(row2)
        ol.addWidget(split, 1)
        self.operator_tab = op
        self.tabs.addTab(op, "Operator")

        # ---- records tab
        self.records_view = RecordsView(lambda: self.store)
        self.tabs.addTab(self.records_view, "Records")
        self._records_dirty = True

        # ---- engineer tab
        self.engineer = self._make_engineer()
        self.engineer_scroll = QScrollArea()  # scrolls rather than widening/heightening the window
        self.engineer_scroll.setWidgetResizable(True)
        self.engineer_scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        self.engineer_scroll.setWidget(self.engineer)
        self.engineer_index = self.tabs.addTab(self.engineer_scroll, "Engineer")
        self.add_reference_button.clicked.connect(self.add_current_to_references)
        self.tabs.currentChanged.connect(self._tab_changed)

        # ---- status bar: short labels, full text in tooltips, so 1024 px shows them all
        sb = self.statusBar()
        self.device_label = QLabel("device: —")
        self.model_label = QLabel("no profile")
        self.timing_label = QLabel("")
        self.queue_label = QLabel("queue 0")
        self.dropped_label = QLabel("")
        self.records_label = QLabel("")
        self.outputs_label = QLabel("")
        self.opcua_label = QLabel("")
        self.loading_bar = QProgressBar()
        self.loading_bar.setRange(0, 100)
        self.loading_bar.setMaximumWidth(200)
        self.loading_bar.setVisible(False)
        self.model_label.setMaximumWidth(300)
        self.timing_label.setMaximumWidth(220)
        shrinkable(self.model_label, self.timing_label, wrap=False)
        sb.addWidget(self.model_label, 2)
        sb.addWidget(self.timing_label, 1)
        for w in (self.device_label, self.queue_label, self.dropped_label, self.records_label, self.outputs_label,
                  self.opcua_label):
            sb.addPermanentWidget(w)
        sb.addPermanentWidget(self.loading_bar)

        self.help = HelpOverlay(self, self.key_rows())
        self.help.closed.connect(self._focus_view)
        self.weights_checked.connect(self._on_weights_checked)

        # ---- wiring
        self.refresh_profiles()
        self.profile_combo.activated.connect(self._profile_chosen)
        self.source_kind_combo.activated.connect(lambda _i: self.source_edit.setFocus())
        self.hot_existing.activated.connect(lambda _i: self._focus_view())
        self.profile_open.clicked.connect(self._open_profile_dialog)
        self.source_browse.clicked.connect(self._browse_source)
        self.source_edit.returnPressed.connect(lambda: self.start_source())
        self.start_button.clicked.connect(lambda: self.start_source())
        self.stop_button.clicked.connect(self.stop_source)
        self.prev_button.clicked.connect(lambda: self.step(-1))
        self.next_button.clicked.connect(lambda: self.step(1))
        self.help_button.clicked.connect(self.toggle_help)
        self.decision.accepted.connect(lambda: self._decide("PASS", None, ""))
        self.decision.rejected.connect(lambda reason, note: self._decide("FAIL", reason or None, note))
        self.decision.undo_requested.connect(self.correct)
        self.decision.logout_requested.connect(self.logout)
        self.decision.login.logged_in.connect(self.login)
        self.decision.region_clicked.connect(self.view.zoom_to_region)
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

    def _on_weights_checked(self, result: object) -> None:
        if isinstance(result, dict):
            self.missing_weights = result
            self._mark_profiles()

    def _preflight(self, folders: list[Path]) -> None:
        """Which profiles need weights that are not installed, in a daemon thread (reads files only;
        the worker stays free for the operator, and closing never waits for it)."""
        settings = self.settings
        signal = self.weights_checked

        def run() -> None:
            try:
                from inspector.models.store import ModelStore

                hub = ModelHub(store=ModelStore.from_settings(settings), device="cpu", precision="fp32")
                result = missing_weights(hub, folders)
                if not self._closing:
                    signal.emit(result)
            except Exception:  # noqa: BLE001 - the marks are a convenience; picking the profile explains
                log.exception("weights pre-flight failed")

        threading.Thread(target=run, name="weights-preflight", daemon=True).start()

    # ================================================================== keys
    def key_rows(self) -> list[tuple[str, str]]:
        return key_rows()

    def _build_shortcuts(self) -> None:
        self.keys = KeyBindings(self)
        app = QApplication.instance()
        if app is not None:
            app.focusChanged.connect(self._focus_changed)  # type: ignore[attr-defined]

    def _focus_changed(self, _old: QWidget | None, new: QWidget | None) -> None:
        if not self._closing:
            self._update_shortcuts(new)

    def _update_shortcuts(self, focus: QWidget | None = None) -> None:
        focus = focus if focus is not None else QApplication.focusWidget()
        typing = isinstance(focus, (*_TEXT_WIDGETS, QComboBox))
        on_operator = self.tabs.currentWidget() is self.operator_tab and not self.help.isVisible()
        owns = focus is None or focus is self or focus is self.operator_tab or focus is self.view.graphics \
            or self.view.isAncestorOf(focus) or self.decision.page.isAncestorOf(focus)
        if self.decision.state == "reject" and focus is self.decision.note:
            owns = False  # the note field confirms with its own Enter
        self.keys.update(on_operator=on_operator, typing=typing, owns=owns, help_open=self.help.isVisible())

    def key_accept(self) -> None:
        self.decision.press_accept()

    def key_reject(self) -> None:
        self.decision.press_reject()

    def key_digit(self, n: int) -> None:
        self.decision.press_digit(n)

    def key_escape(self) -> None:
        if self.help.isVisible():
            self.help.hide()
            return
        self.decision.press_escape()

    def key_next(self) -> None:
        self.step(1)

    def key_previous(self) -> None:
        self.step(-1)

    def key_heatmap(self) -> None:
        self.view.toggle_heatmap()

    def key_reference(self) -> None:
        self.view.toggle_reference()

    def key_contours(self) -> None:
        self.view.contour_check.toggle()

    def key_boxes(self) -> None:
        self.view.box_check.toggle()

    def key_truth(self) -> None:
        self.view.gt_check.toggle()

    def key_opacity(self, step: int) -> None:
        self.view.opacity.setValue(self.view.opacity.value() + step)

    def key_fit(self) -> None:
        self.view.fit()

    def key_zoom_in(self) -> None:
        self.view.zoom_in()

    def key_zoom_out(self) -> None:
        self.view.zoom_out()

    def key_start(self) -> None:
        self.start_source()

    def key_toggle_auto(self) -> None:
        self.auto_advance.toggle()
        self.statusBar().showMessage(f"auto-advance {'on' if self.auto_advance.isChecked() else 'off'}", 3000)

    def key_toggle_hold_fail(self) -> None:
        self.hold_on_fail.toggle()
        if self.review is not None:
            self.review.hold_on_fail = self.hold_on_fail.isChecked()
        self.statusBar().showMessage(f"hold on FAIL {'on' if self.hold_on_fail.isChecked() else 'off'}", 3000)

    def key_toggle_hot_existing(self) -> None:
        self.hot_existing.setCurrentIndex(1 - self.hot_existing.currentIndex())
        self.statusBar().showMessage(f"hot folder: {self.hot_existing.currentText()}", 3000)

    def key_focus_profile(self) -> None:
        self.tabs.setCurrentWidget(self.operator_tab)
        self.profile_combo.setFocus()
        self.profile_combo.showPopup()

    def key_focus_kind(self) -> None:
        self.tabs.setCurrentWidget(self.operator_tab)
        self.source_kind_combo.setFocus()
        self.source_kind_combo.showPopup()

    def key_focus_source(self) -> None:
        self.tabs.setCurrentWidget(self.operator_tab)
        self.source_edit.setFocus()
        self.source_edit.selectAll()

    def key_tab(self, n: int) -> None:
        if 1 <= n <= self.tabs.count() and self.tabs.isTabEnabled(n - 1):
            self.tabs.setCurrentIndex(n - 1)
            if n == 1:
                self._focus_view()
        elif n == 3:
            self.statusBar().showMessage("the Engineer tab needs an engineer or admin login", 4000)

    def toggle_help(self) -> None:
        self.help.toggle()
        self._update_shortcuts()
        if not self.help.isVisible():
            self._focus_view()

    def _tab_changed(self, _index: int) -> None:
        self._update_shortcuts()
        if self.tabs.currentWidget() is self.records_view:
            if self._records_dirty:
                self._records_dirty = False
                self.records_view.refresh()
            self.records_view.table.setFocus()  # arrows pick a row, Enter opens its archived image

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
        hot = self.hot_existing.findData(str(self.qs.value("source/hot_existing", "inspect")))
        self.hot_existing.setCurrentIndex(max(hot, 0))

    def _save_settings(self) -> None:
        self.qs.setValue("window/geometry", self.saveGeometry())
        self.qs.setValue("source/kind", self.source_kind_combo.currentData())
        self.qs.setValue("source/target", self.source_edit.text())
        self.qs.setValue("source/hot_existing", self.hot_existing.currentData())
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

    # ================================================================== users
    def login(self, user: User) -> None:
        self.session.login(user)
        self._apply_user()
        self.decision.add_event(f"{user.name} ({user.role}) started the shift")
        self._update_summary()
        self._update_status()
        self._show_current(auto_skip=False)
        self._focus_view()

    def logout(self) -> ShiftSummary | None:
        user = self.user
        if user is None:
            return None
        self.worker.stop_source()
        self.worker.cancel_inspections()
        summary = self.session.logout()
        self._after_stop()
        self._apply_user()
        if summary is not None:
            paths = self.write_shift_report(summary)
            where = ", ".join(p.name for p in paths) or "not written (see the log)"
            self.decision.add_event(f"{user.name} logged out; shift report {where}")
        self._update_summary()
        self._update_status()
        return summary

    def _apply_user(self) -> None:
        user = self.user
        self.decision.set_operator(user)
        engineer = user is not None and user.can("engineer")
        self.tabs.setTabEnabled(self.engineer_index, engineer)
        self.tabs.setTabToolTip(self.engineer_index, "" if engineer else "engineers and admins only")
        if not engineer and self.tabs.currentIndex() == self.engineer_index:
            self.tabs.setCurrentWidget(self.operator_tab)
        self.add_reference_button.setVisible(user is not None and user.can("reference_shots")
                                             and hasattr(self.engineer, "editor"))
        if user is None:
            self.decision.login.name.setFocus()  # type the name, Enter, the PIN, Enter

    def manage_users(self) -> None:
        user = self.user
        if user is None or not user.can("manage_users"):
            self.statusBar().showMessage("accounts are managed by an admin: log in as one", 4000)
            return
        UsersDialog(self.users, user, self).exec()

    def write_shift_report(self, summary: ShiftSummary) -> list[Path]:
        """The shift report beside the records: ``shift-…csv`` and a printable ``shift-…pdf``."""
        folder = Path(self.settings.records_path).parent / "shift-reports"
        out = []
        try:
            out.append(write_report_csv(summary, folder))
            pdf = folder / f"{report_stem(summary)}.pdf"
            writer = QPdfWriter(str(pdf))
            writer.setPageSize(QPageSize(QPageSize.PageSizeId.A4))
            writer.setPageMargins(QMarginsF(15, 15, 15, 15), QPageLayout.Unit.Millimeter)
            doc = QTextDocument()
            doc.setHtml(report_html(summary))
            doc.print_(writer)
            del writer
            out.append(pdf)
        except OSError as exc:
            log.error("shift report not written to %s: %s", folder, exc)
            self.decision.add_event(f"shift report not written: {exc}", "error")
        return out

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
        self._mark_profiles()
        if folders:
            self._preflight(list(folders))

    def _mark_profiles(self) -> None:
        """Profiles whose weights are not installed say so in the list (and which ones, in the tooltip)."""
        for i in range(1, self.profile_combo.count()):
            folder = str(self.profile_combo.itemData(i))
            name = Path(folder).name
            missing = self.missing_weights.get(folder)
            self.profile_combo.setItemText(i, f"{name}  — needs weights" if missing else name)
            self.profile_combo.setItemData(i, ("weights not installed: " + ", ".join(missing)) if missing else name,
                                           Qt.ItemDataRole.ToolTipRole)

    def _profile_chosen(self, index: int) -> None:
        path = self.profile_combo.itemData(index)
        if path:
            self.load_profile(path)
        self._focus_view()

    def _open_profile_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open profile folder", str(self.settings.default_profiles_dir()))
        if folder:
            self.load_profile(folder)

    def _select_profile_item(self, target: str | Path | None) -> None:
        if target is None:
            self.profile_combo.setCurrentIndex(0)
            return
        target = str(target)
        idx = self.profile_combo.findData(target)
        if idx < 0:
            p = Path(target)
            folder = p.parent if p.name == "profile.yaml" else p
            idx = self.profile_combo.findData(str(folder))
            if idx < 0:
                self.profile_combo.addItem(folder.name, str(folder))
                idx = self.profile_combo.count() - 1
        self.profile_combo.setCurrentIndex(idx)

    def load_profile(self, target: str | Path) -> None:
        """Ask the worker to load a profile; the working one keeps inspecting until the new one is ready."""
        target = str(target)
        self._select_profile_item(target)
        review = self.review
        if review is not None and review.mode == "folder":
            review.requested &= set(review.results)  # the worker drops its queued inspections
        self.worker.load_profile(target)
        self._request_more()
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
        self._profile_failure = ""
        p = info.profile
        self.session.set_profile(ProfileStamp(p.name, p.version, p.content_hash(), p.pipeline),
                                 p.decision.image_threshold, info.generation, list(p.reason_codes))
        self.device_label.setText(f"device: {info.device}")
        models = ", ".join(k.split(":", 1)[-1] for k in info.model_keys) or "weight-free"
        text = f"{p.name} v{p.version} · {p.pipeline} · {models}"
        self.model_label.setText(text)
        self.model_label.setToolTip(text)
        self._select_profile_item(info.folder)
        self.decision.add_event(
            f"profile {p.name} v{p.version} ready ({p.pipeline}, {len(info.references)} reference shots, "
            f"{info.seconds:.1f} s)"
        )
        if self.review is not None:
            self.review.forget_results()
            self._request_more()
            self._show_current(auto_skip=False)
        else:
            self.view.set_message("")
        if self._pending_source is not None:
            kind, target = self._pending_source
            self._pending_source = None
            self.start_source(kind, target)
        self._update_status()

    def _on_profile_failed(self, message: str) -> None:
        self._profile_failure = message
        working = self.profile_info
        self.decision.add_event(message.split("\n")[0] + " — see the message on the image", "error")
        if working is not None:
            self._select_profile_item(working.folder)
            self.view.set_message(message + f"\n\nStill running profile {working.profile.name} "
                                  f"v{working.profile.version}.", error=True)
        else:
            self.model_label.setText("no profile")
            self._placeholder(message, error=True, decision_text="Profile not loaded — pick another profile.")
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
        if kind in ("folder", "hot") and self.profile_info is None and not self._plc_mode():  # PLC: its recipe loads
            self._pending_source = (kind, target)
            msg = "The source starts when a product profile is loaded."
            if self._profile_failure:
                msg = self._profile_failure + "\n\n" + msg
            else:
                msg = "Pick a product profile: " + msg[0].lower() + msg[1:]
            self._placeholder(msg, error=bool(self._profile_failure))
            self.decision.add_event(msg.split("\n")[-1], "warning")
            return False
        try:
            if kind == "folder" and self._plc_mode():  # PLC mode: the folder's images, one per Trigger
                folder = FolderSource(target)
                if not len(folder):
                    raise SourceError(f"{target}: no images (PNG, JPEG, BMP, TIFF) in this folder")
                self.folder = None  # not reviewed by index: the Triggers take its images in order
                review = Review("stream")
                self._feed(folder)
                note = f" — {len(folder)} image(s), one per PLC Trigger"
            elif kind == "folder":
                folder = FolderSource(target)
                if not len(folder):
                    raise SourceError(f"{target}: no images (PNG, JPEG, BMP, TIFF) in this folder")
                self.folder = folder
                review = Review("folder", len(folder), lookahead=self.lookahead)
                note = ""
            elif kind == "hot":
                inspect_existing = self.hot_existing.currentData() == "inspect"
                try:
                    recorded = self.session.recorded_names(target) if inspect_existing else set()
                except RecordStoreError as exc:
                    log.warning("records not readable, hot folder files already there are all inspected: %s", exc)
                    recorded = set()
                source = HotFolderSource(target, include_existing=inspect_existing, skip_names=recorded)
                existing = self._count_images(source.folder)
                skipped = len(recorded & self._image_names(source.folder))
                if inspect_existing:
                    how = "inspected" + (f" ({skipped} already recorded here, not again)" if skipped else "")
                else:
                    how = "ignored (setting: ignore files already there)"
                note = f" — {existing} file(s) already there: {how}"
                review = Review("stream")
                self._feed(source)
            else:
                source = open_source(kind, target)
                review = Review("live" if source.live and not self._plc_mode() else "stream",
                                hold_on_fail=self.hold_on_fail.isChecked())
                self._feed(source)
                note = " — one frame per PLC Trigger" if self._plc_mode() else ""
        except (SourceError, OSError) as exc:
            self.folder = None
            self._placeholder(str(exc), error=True)
            self.decision.add_event(str(exc), "error")
            return False
        self.session.start(review)
        self.source_kind = kind
        self.dropped = 0
        self.decision.add_event(f"started {kind}: {target}{note}")
        self.batch_progress.setVisible(self.folder is not None and kind == "folder")
        if self.folder is not None and kind == "folder":
            self.batch_progress.setRange(0, len(self.folder))  # type: ignore[arg-type]
            self.batch_progress.setValue(0)
        self._request_more()
        self._show_current(auto_skip=False)
        self._update_status()
        self._focus_view()
        return True

    @staticmethod
    def _image_names(folder: Path) -> set[str]:
        try:
            return {p.name for p in folder.iterdir() if is_image_file(p) and not p.name.startswith(".")}
        except OSError:
            return set()

    def _count_images(self, folder: Path) -> int:
        return len(self._image_names(folder))

    def _plc_mode(self) -> bool:
        """Sources go to the PLC link (a frame per Trigger) unless it could not start."""
        return self.opcua is not None and self.opcua.state != "failed"

    def _feed(self, source: Source) -> None:
        """Stream ``source`` to the worker, or (PLC link on) hand it to the link: a frame per Trigger."""
        if self.opcua is not None and self._plc_mode():
            self.opcua.attach(source)
        else:
            self.worker.start_source(source)

    def stop_source(self) -> None:
        """Stop the source: the open parts are recorded (SKIPPED / NOT DECIDED) and the view cleared."""
        if self.opcua is not None:
            self.opcua.detach()
        self.worker.stop_source()
        self.worker.cancel_inspections()
        if self.review is None:
            return
        try:
            saved = self.session.stop("the source stopped")
        except RecordStoreError as exc:
            self._records_unavailable(exc)
            saved = []
        for s in saved:
            self._report_save(s)
        self.decision.add_event(f"source stopped ({len(saved)} open part(s) recorded)" if saved else "source stopped")
        self._after_stop()

    def _after_stop(self) -> None:
        self.folder = None
        self.source_kind = None
        self._placeholder("Source stopped. Press F5 to start it again.")
        self._update_summary()
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
        if res.error and res.live:
            self.decision.add_event(res.error, "warning")
            self.statusBar().showMessage(res.error, 5000)
        try:
            intake = self.session.receive(res)
        except RecordStoreError as exc:
            self._records_unavailable(exc)
            return
        if intake == "ignored":
            return
        if intake == "stale":
            self._request_more()
            return
        if intake == "no_read":
            self.decision.add_event(f"NO-READ {self.display_name(res.frame)}: {res.error}", "error")
            self._update_summary()
        review = self.review
        if review is not None and review.mode == "folder":
            self.batch_progress.setValue(review.done_count())
        if review is not None and res.key == review.current_key():
            self._show_current(auto_skip=True)
        else:
            self._update_position()
        self._request_more()

    def _placeholder(self, message: str, error: bool = False, decision_text: str = "") -> None:
        """Nothing beside anything: the image and the verdict are cleared together."""
        self.view.clear(message)
        if error:
            self.view.set_message(message, error=True)
        self.decision.clear(decision_text or "")
        self.timing_label.setText("")

    def _show_current(self, auto_skip: bool = True) -> None:
        review = self.review
        if review is None:
            return
        res = self.session.settle(auto_skip)
        self._request_more()
        key = review.current_key()
        self._update_position()
        if review.at_end():
            self._placeholder(self._end_text())
            self.decision.clear("nothing to review")
            return
        if res is None:
            if key is not None and self.folder is not None:
                name = self.folder.paths[key].relative_to(self.folder.folder).as_posix()
                self._placeholder(f"inspecting {name} …")
                self.decision.show_busy(name)
            elif review.mode == "live":
                self._placeholder("waiting for the camera …")
                self.decision.clear("waiting for the camera …")
            return
        self._display(res, key)

    def _end_text(self) -> str:
        c = self.session.run_counts()
        if not c.reached and not c.total:
            return "Waiting for images…"
        parts = [f"{c.decided} decided ({c.passed} PASS, {c.failed} FAIL)", f"{c.no_read} NO-READ"]
        if c.skipped:
            parts.append(f"{c.skipped} SKIPPED (← to go back)")
        if c.open - c.skipped > 0:
            parts.append(f"{c.open - c.skipped} not decided")
        if c.not_reached:
            parts.append(f"{c.not_reached} not reached")
        head = f"End of the {c.total} images" if self.source_kind == "folder" else "Waiting for images"
        return f"{head}: " + " · ".join(parts) + "."

    def display_name(self, frame: Any) -> str:
        """The image's path relative to the folder under review (``scratch/003.png``), or its name."""
        path = frame.path
        if path is None:
            return frame.name
        if path.suffix.lower() in VIDEO_EXT:
            return f"{path.name}#{frame.index}"
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
            outcome = self.session.outcome_of(key)
            if frame.image is not None:
                self.view.show_inspection(frame.image, message=res.error)
            else:
                self.view.clear(res.error)
            self.view.set_message(res.error, error=True)
            self.decision.show_error(name, res.error, "recorded as NO-READ" if outcome is not None else "")
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
            vmax=heat_vmax(threshold),
        )
        record = self.session.decision_of(key)
        decided = describe_decision(record) if record is not None else None
        self.decision.show_result(name, ins.verdict, ins.image_score, threshold, ins.regions, reasons, decided,
                                  record.operator_verdict if record is not None else None)
        self.timing_label.setText(format_timings(ins.detection.timings, ins.seconds))
        self.timing_label.setToolTip(self.timing_label.text())
        self.session.shown(key)
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

    def toggle_hold(self) -> None:
        if self.review is not None and self.review.mode == "live":
            self.review.hold = not self.review.hold
            self._update_position()

    # ================================================================== reference shots
    def add_current_to_references(self) -> str | None:
        """The image on screen becomes a reference shot of the *running* profile (staged in the
        Engineer tab; Revert there removes the file again). A FAIL image asks first."""
        user = self.user
        if user is None or not user.can("reference_shots"):
            self.statusBar().showMessage("reference shots are added by engineers: log in as one", 4000)
            return None
        res = self.review.current() if self.review is not None else None
        info = self.profile_info
        editor = getattr(self.engineer, "editor", None)
        if res is None or res.frame.image is None or editor is None:
            self.statusBar().showMessage("no image to add", 3000)
            return None
        if info is None or info.folder is None:
            self.statusBar().showMessage("no running profile to add the shot to", 3000)
            return None
        record = self.session.decision_of(self.review.current_key() if self.review else None)
        fail = (record.operator_verdict == "FAIL") if record is not None else (
            res.inspection is not None and res.inspection.verdict == "FAIL")
        if fail and not self.ask("Reference shot of a FAIL part?",
                                 f"{self.display_name(res.frame)} is a FAIL. Reference shots should show good "
                                 "parts: add it anyway?"):
            return None
        running = Path(info.folder)
        shown = editor.profile.folder if editor.profile is not None else None
        if shown is None or Path(shown).resolve() != running.resolve():
            confirm = getattr(self.engineer, "confirm_discard", None)
            if confirm is not None and not confirm(self):
                return None
            self.engineer.open_profile(running)
        rel = editor.references.add_image(res.frame.image)
        if rel:
            self.decision.add_event(f"added {self.display_name(res.frame)} to {info.profile.name} as reference "
                                    f"shot {rel} (save the profile in the Engineer tab; Revert removes it)")
        else:
            self.decision.add_event("could not add the reference shot (see the Engineer tab)", "warning")
        return rel

    # ================================================================== decisions
    def _decide(self, verdict: str, reason: str | None, note: str) -> None:
        review = self.review
        if review is None or self.user is None:
            return
        try:
            saved = self.session.decide(verdict, reason, note,
                                        advance=self.auto_advance.isChecked() or review.mode == "live")
        except ValueError as exc:
            self.decision.add_event(str(exc), "warning")
            self._show_current(auto_skip=False)
            return
        except RecordStoreError as exc:
            self._records_unavailable(exc)
            self._show_current(auto_skip=False)
            return
        if saved is None:
            return
        self._report_save(saved)
        self._records_dirty = True
        self.decision_saved.emit(saved.stored or saved.record)
        self._update_summary()
        self._request_more()
        self._show_current(auto_skip=True)

    def correct(self) -> None:
        """Void the decision of the part on screen (or the shift's last one): a correction row; decide again."""
        if self.user is None:
            return
        try:
            saved = self.session.correct()
        except RecordStoreError as exc:
            self._records_unavailable(exc)
            return
        if saved is None:
            self.statusBar().showMessage("no decision of this shift to correct", 3000)
            return
        orig = next((r for r in self.session.records if r.uid == saved.record.corrects_uid), None)
        self._report_save(saved)
        name = Path(saved.record.image_path or "").name or "frame"
        self.decision.add_event(f"corrected {orig.operator_verdict if orig else ''} on {name}: decide again")
        self._records_dirty = True
        self.decision_saved.emit(saved.stored or saved.record)
        self._update_summary()
        self._request_more()
        self._show_current(auto_skip=False)

    undo = correct  # Ctrl+Z

    def _report_save(self, saved: Saved) -> None:
        rec = saved.record
        if saved.ok:
            verdict = {"correction": "CORRECTION", "decision": rec.operator_verdict}.get(rec.kind, rec.kind.upper())
            image = Path(rec.image_path) if rec.image_path else None
            name = f"{image.parent.name}/{image.name}" if image is not None else (rec.source_id or "")
            self.decision.set_save_status(f"✔ last row saved #{saved.stored.id}: {verdict} · {name}", True)  # type: ignore[union-attr]
        else:
            n = len(self.keeper.pending)
            self.decision.set_save_status(f"⚠ NOT SAVED in the database — {n} row(s) waiting, retrying", False)
            self.decision.add_event(self.keeper.last_error or "record not saved", "error")
            self._retry_timer.start()
        self._update_status()

    def _records_unavailable(self, exc: Exception) -> None:
        self.decision.set_save_status(f"⚠ DECISION NOT ACCEPTED — records unavailable: {exc}", False)
        self.decision.add_event(str(exc), "error")

    def _retry_pending(self) -> None:
        if not self.keeper.pending:
            self._retry_timer.stop()
            return
        saved = self.keeper.retry()
        if not self.keeper.pending:
            self._retry_timer.stop()
            self.decision.set_save_status(f"✔ {saved} pending row(s) saved", True)
            self.decision.add_event(f"{saved} pending row(s) saved")
            self._records_dirty = True
        self._update_status()

    # ================================================================== misc
    def _update_summary(self) -> None:
        self.decision.summary.show_summary(self.session.summary() if self.user is not None else None)

    def _focus_view(self) -> None:
        self.view.graphics.setFocus()
        self._update_shortcuts()

    def _update_status(self) -> None:
        self.queue_label.setText(f"queue {self.queue}" + (" · busy" if self.worker.is_busy() else ""))
        self.dropped_label.setText(f"dropped {self.dropped}" if self.review and self.review.mode == "live" else "")
        self._update_backlog()
        self._update_position()

    def _update_backlog(self) -> None:
        """Records not yet in the database (``keeper.backlog``) and results not yet sent to the outputs."""
        pending = self.keeper.backlog
        if pending:
            self.records_label.setText(f"<b style='color:#8c1d18'>{pending} NOT SAVED</b>")
            journal = getattr(self.keeper, "journal", None)
            self.records_label.setToolTip(
                f"{pending} record(s) not in the records database yet"
                + (f"; kept in the journal {getattr(journal, 'path', '')} and written when it is back"
                   if journal is not None else ""))
        elif self.store is not None:
            self.records_label.setText("records ✔")
            self.records_label.setToolTip(f"records of station {self.settings.station_id}: {self.store.location}")
        else:
            self.records_label.setText("<b style='color:#8c1d18'>records unavailable</b>")
        self._update_opcua_label()
        if self.dispatcher is None or not self.dispatcher.lanes:
            self.outputs_label.setText("")
            return
        waiting = self.dispatcher.backlog_total
        self.outputs_label.setText(f"<b style='color:#8c1d18'>outputs: {waiting} waiting</b>" if waiting
                                   else "outputs ✔")
        self.outputs_label.setToolTip("\n".join(
            f"{st.name}: {st.backlog} waiting, {st.delivered} sent, {st.dropped} dropped, {st.rejected} rejected"
            + (f" — {st.last_error}" if st.last_error else "") for st in self.dispatcher.status()))

    def _update_opcua_label(self) -> None:
        if self.opcua is None:
            return
        from inspector.outputs.station_link import status_text

        text, tip, error = status_text(self.opcua)
        self.opcua_label.setText(f"<b style='color:#8c1d18'>{text}</b>" if error else text)
        self.opcua_label.setToolTip(tip)

    def _opcua_state(self) -> None:
        """The PLC link is listening, or could not start (the station runs on without it)."""
        self._update_opcua_label()
        if self.opcua is not None and self.opcua.state == "failed":
            self.decision.add_event(f"PLC link off: {self.opcua.error}", "error")
            self.statusBar().showMessage(f"PLC link (OPC UA) off: {self.opcua.error}", 15000)
            if self.opcua.attached:  # started while the link was starting: run it as without a PLC
                self.start_source()
        elif self.opcua is not None and self.opcua.state == "listening":
            self.decision.add_event(f"PLC link listening on {self.opcua.endpoint}")

    def _ask(self, title: str, text: str) -> bool:
        answer = QMessageBox.question(self, title, text)
        return answer == QMessageBox.StandardButton.Yes

    def undecided_on_screen(self) -> bool:
        review = self.review
        if review is None or self.user is None:
            return False
        res = review.current()
        return res is not None and res.inspection is not None and review.current_key() not in review.decided

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt API
        if self._closing:
            event.accept()
            return
        if self.undecided_on_screen() and not self.ask(
                "Close the station?", "The part on screen is not decided. Close anyway? It is recorded as "
                                      "NOT DECIDED."):
            event.ignore()
            return
        confirm = getattr(self.engineer, "confirm_discard", None)
        if confirm is not None and not confirm(self):
            event.ignore()
            return
        self._closing = True
        self.help.hide()
        self._save_settings()
        if self.opcua is not None:
            self.opcua.close()  # no more Triggers; one being answered gets NO-READ
        self.worker.stop_source()
        try:
            self.session.stop("the station was closed")
            summary = self.session.logout()  # closing ends the shift: its report is written
            if summary is not None:
                self.write_shift_report(summary)
        except RecordStoreError as exc:
            log.error("open parts not recorded at close: %s", exc)
        if self._own_worker:
            self.worker.stop()
        self.session.close()
        self._backlog_timer.stop()
        if self.dispatcher is not None:
            self.dispatcher.close()  # what is still queued stays on disk and is sent at the next start
        if self.keeper.pending:
            self.keeper.retry()
        journal = getattr(self.keeper, "journal", None)
        if self.keeper.pending and journal is not None:
            log.error("%d rows are not in the records database yet; they are kept in the journal %s and written "
                      "to the database at the next start", len(self.keeper.pending), getattr(journal, "path", "?"))
        elif self.keeper.pending:
            aside = inspector_home() / f"pending-records-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
            try:
                self.keeper.dump_pending(aside)
                log.error("%d rows could not be saved to the records database; kept in %s "
                          "(import with `inspector records import %s`)", len(self.keeper.pending), aside, aside)
            except OSError:
                log.critical("%d rows could not be saved anywhere: %s", len(self.keeper.pending),
                             [r.content() for r in self.keeper.pending])
        if self.store is not None:
            self.store.close()
        super().closeEvent(event)


__all__ = ["KEYS", "MainWindow", "guess_source_kind"]
