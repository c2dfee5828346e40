"""The operator's decision panel: verdict badge, score, regions, Accept / Reject / Undo.

Keyboard (routed here by the main window):

* ``A`` / ``Enter`` — accept the part (operator verdict PASS). When the station proposed FAIL,
  the first press asks for confirmation and a second ``A``/``Enter`` passes the part.
* ``R`` — reject (FAIL): opens the reason list. Nothing is preselected: ``1``–``9`` pick a reason
  (``Tab`` to the note), ``Enter`` confirms, ``Esc`` cancels.
* ``Ctrl+Z`` — correct: void the decision of the part on screen (or the shift's last decision)
  with a correction row; the part is back for review.

Colours: text is dark on a light tint (warning, error) or white on a dark fill (badges), so
every message keeps a contrast of at least 4.5:1 (WCAG AA).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from PySide6.QtCore import QEvent, QObject, Qt, Signal
from PySide6.QtGui import QColor, QFont
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QScrollArea,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from inspector.detect.base import Region
from inspector.ui.identity import LoginPanel
from inspector.ui.shift_summary import ShiftSummaryView
from inspector.ui.text import shrinkable, wrap_anywhere
from inspector.users import User, UserStore

BADGE_STYLE = {
    "PASS": ("#1e8e3e", "#ffffff"),
    "FAIL": ("#c62828", "#ffffff"),
    "ERROR": ("#e67e22", "#ffffff"),
    "BUSY": ("#455a64", "#ffffff"),
    "NONE": ("#2b2b2b", "#d0d0d0"),
    "NO-READ": ("#6d4c41", "#ffffff"),
}
# (text, background) of the message levels: dark text on a light tint, contrast >= 7:1
LEVEL_COLORS = {"error": ("#8c1d18", "#fdecea"), "warning": ("#5c3b00", "#fff4ce")}
PROMPT_STYLE = "QLabel { color: #5c3b00; background: #fff4ce; font-weight: bold; padding: 4px; border-radius: 4px; }"


def region_text(i: int, r: Region) -> str:
    """``1. scratch 0.87 — centre (48, 22), 12×9 px (80 px²)``: what the pipeline knows, where, how big."""
    x0, y0, x1, y1 = r.box
    w, h = max(x1 - x0, 1), max(y1 - y0, 1)
    return f"{i}. {r.label} {r.score:.2f} — centre ({(x0 + x1) // 2}, {(y0 + y1) // 2}), {w}×{h} px ({r.area_px} px²)"


class DecisionBar(QWidget):
    accepted = Signal()
    rejected = Signal(str, str)  # reason, note
    undo_requested = Signal()
    logout_requested = Signal()
    region_clicked = Signal(int)  # index into the regions shown

    def __init__(self, users: UserStore | None = None, station_id: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = "empty"  # empty | busy | ready | confirm_accept | reject | decided | error
        self.auto_verdict: str | None = None
        self._reasons: list[str] = []
        self._region_labels: list[str] = []

        self.login = LoginPanel(users or UserStore(), station_id)
        self.page = QWidget()
        self.stack = QStackedWidget()
        self.stack.addWidget(self.login)
        self.stack.addWidget(self.page)

        self.operator_label = QLabel("")
        self.logout_button = QPushButton("Log out")
        self.logout_button.clicked.connect(self.logout_requested.emit)

        self.badge = QLabel("—")
        self.badge.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.badge.setMinimumHeight(90)
        f = QFont()
        f.setPointSize(44)
        f.setBold(True)
        self.badge.setFont(f)
        self.name_label = QLabel("")
        self.name_label.setWordWrap(True)
        self.score_label = QLabel("")
        sf = QFont()
        sf.setPointSize(13)
        self.score_label.setFont(sf)
        self.regions = QListWidget()
        self.regions.setMaximumHeight(130)
        self.regions.setWordWrap(True)
        self.regions.setToolTip("click a region to zoom to it")
        self.regions.itemClicked.connect(lambda item: self.region_clicked.emit(self.regions.row(item)))

        self.prompt = QLabel("")
        self.prompt.setWordWrap(True)
        self.prompt.setStyleSheet(PROMPT_STYLE)
        self.prompt.setVisible(False)

        self.accept_button = QPushButton("Accept  [A / Enter]")
        self.reject_button = QPushButton("Reject  [R]")
        self.undo_button = QPushButton("Correct a decision  [Ctrl+Z]")
        self.undo_button.setToolTip("void the decision of the part on screen (or the last one) and decide again")
        self.accept_button.setStyleSheet("QPushButton { background: #1e8e3e; color: white; padding: 10px; font-size: 15px; }")
        self.reject_button.setStyleSheet("QPushButton { background: #c62828; color: white; padding: 10px; font-size: 15px; }")
        self.accept_button.clicked.connect(self.press_accept)
        self.reject_button.clicked.connect(self.press_reject)
        self.undo_button.clicked.connect(self.undo_requested.emit)

        # ---- reject panel
        self.reject_panel = QFrame()
        self.reject_panel.setFrameShape(QFrame.Shape.StyledPanel)
        self.reason_list = QListWidget()
        self.reason_list.setMaximumHeight(170)
        self.reason_hint = QLabel("")
        self.reason_hint.setWordWrap(True)
        self.note = QLineEdit()
        self.note.setPlaceholderText("note (optional)")
        self.confirm_button = QPushButton("Confirm reject  [Enter]")
        self.cancel_button = QPushButton("Cancel  [Esc]")
        self.confirm_button.clicked.connect(self._confirm_reject)
        self.cancel_button.clicked.connect(self.press_escape)
        self.note.returnPressed.connect(self._confirm_reject)
        self.note.installEventFilter(self)
        self.reason_list.installEventFilter(self)
        rp = QVBoxLayout(self.reject_panel)
        rp.addWidget(QLabel("Reason (1–9) — pick one:"))
        rp.addWidget(self.reason_list)
        rp.addWidget(self.reason_hint)
        rp.addWidget(self.note)
        rrow = QHBoxLayout()
        rrow.addWidget(self.confirm_button)
        rrow.addWidget(self.cancel_button)
        rp.addLayout(rrow)
        self.reject_panel.setVisible(False)

        self.save_label = QLabel("")
        self.save_label.setWordWrap(True)
        self.events = QListWidget()
        self.events.setMinimumHeight(60)
        self.events.setWordWrap(True)
        self.events.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)

        for b in (self.accept_button, self.reject_button, self.undo_button, self.confirm_button,
                  self.cancel_button, self.logout_button):
            b.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.regions.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.events.setFocusPolicy(Qt.FocusPolicy.NoFocus)

        self.summary = ShiftSummaryView()
        top = QHBoxLayout()
        top.addWidget(self.operator_label, 1)
        top.addWidget(self.logout_button)
        buttons = QHBoxLayout()
        buttons.addWidget(self.accept_button)
        buttons.addWidget(self.reject_button)
        lay = QVBoxLayout(self.page)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(top)
        lay.addWidget(self.summary)
        lay.addWidget(self.badge)
        lay.addWidget(self.name_label)
        lay.addWidget(self.score_label)
        lay.addWidget(QLabel("Regions"))
        lay.addWidget(self.regions)
        lay.addWidget(self.prompt)
        lay.addLayout(buttons)
        lay.addWidget(self.reject_panel)
        lay.addWidget(self.undo_button)
        lay.addWidget(self.save_label)
        lay.addWidget(QLabel("Messages"))
        lay.addWidget(self.events, 1)

        shrinkable(self.name_label, self.save_label, self.prompt, self.operator_label, self.score_label,
                   self.reason_hint)
        # the panel scrolls rather than making the window taller (the reject list opens inside it)
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.scroll.setWidget(self.stack)
        self.scroll.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(6, 6, 6, 6)
        outer.addWidget(self.scroll)
        self.set_operator(None)
        self._set_badge("NONE", "—")
        self._update_buttons()

    # ------------------------------------------------------------------ identity
    def set_operator(self, user: User | None) -> None:
        if user is not None:
            self.operator_label.setText(f"<b>{user.name}</b> ({user.role})")
            self.stack.setCurrentWidget(self.page)
        else:
            self.login.refresh()
            self.stack.setCurrentWidget(self.login)
        self._update_buttons()

    @property
    def logged_in(self) -> bool:
        return self.stack.currentWidget() is self.page

    # ------------------------------------------------------------------ display
    def _set_badge(self, kind: str, text: str) -> None:
        bg, fg = BADGE_STYLE[kind]
        self.badge.setText(text)
        self.badge.setStyleSheet(f"QLabel {{ background: {bg}; color: {fg}; border-radius: 8px; }}")

    def clear(self, message: str = "") -> None:
        self.state = "empty"
        self.auto_verdict = None
        self._set_badge("NONE", "—")
        self.name_label.setText(wrap_anywhere(message))
        self.score_label.setText("")
        self.regions.clear()
        self._close_reject()
        self._set_prompt("")
        self._update_buttons()

    def _set_prompt(self, text: str) -> None:
        self.prompt.setText(wrap_anywhere(text))
        self.prompt.setVisible(bool(text))

    def show_busy(self, name: str) -> None:
        self.clear()
        self.state = "busy"
        self._set_badge("BUSY", "…")
        self.name_label.setText(wrap_anywhere(f"{name}\ninspecting…"))
        self._update_buttons()

    def show_error(self, name: str, message: str, recorded: str = "") -> None:
        """A part that could not be inspected (NO-READ): nothing to decide; ``recorded`` says how it was logged."""
        self.clear()
        self.state = "error"
        self._set_badge("NO-READ", "NO-READ")
        self.name_label.setText(wrap_anywhere(f"{name}\n{message}"))
        if recorded:
            self._set_prompt(recorded)
        self._update_buttons()

    def show_result(
        self,
        name: str,
        verdict: str,
        score: float,
        threshold: float,
        regions: Sequence[Region],
        reasons: Sequence[str],
        decided: str | None = None,
        operator_verdict: str | None = None,
    ) -> None:
        """Show one inspection. A decided part (``decided``: who decided what, when) shows the
        operator's verdict on the badge, the station's proposal beside the score."""
        self._close_reject()
        self.auto_verdict = verdict
        self._reasons = list(reasons)
        self._region_labels = [r.label for r in regions]
        if decided and operator_verdict:
            self._set_badge(operator_verdict, operator_verdict)
        else:
            self._set_badge(verdict, verdict)
        self.name_label.setText(wrap_anywhere(name))
        proposal = f" &nbsp; station: {verdict}" if decided else ""
        self.score_label.setText(f"score <b>{score:.3f}</b> &nbsp; (FAIL at ≥ {threshold:.2f}){proposal}")
        self.regions.clear()
        for i, r in enumerate(regions[:50], 1):
            self.regions.addItem(region_text(i, r))
        if not regions:
            self.regions.addItem("no region above the threshold")
        self.state = "decided" if decided else "ready"
        self._set_prompt(f"Decided: {decided}. Ctrl+Z corrects it." if decided else "")
        self._update_buttons()

    def set_save_status(self, text: str, ok: bool) -> None:
        style = "color: #0d5302;" if ok else "color: #8c1d18; background: #fdecea; padding: 3px;"
        self.save_label.setText(wrap_anywhere(text))
        self.save_label.setStyleSheet(f"QLabel {{ {style} font-weight: bold; }}")

    def add_event(self, text: str, level: str = "info") -> None:
        stamp = datetime.now().strftime("%H:%M:%S")
        item = QListWidgetItem(f"{stamp}  {wrap_anywhere(text)}")
        item.setToolTip(text)
        if level in LEVEL_COLORS:
            fg, bg = LEVEL_COLORS[level]
            item.setForeground(QColor(fg))
            item.setBackground(QColor(bg))
        self.events.insertItem(0, item)
        while self.events.count() > 500:
            self.events.takeItem(self.events.count() - 1)

    def _update_buttons(self) -> None:
        can = self.logged_in and self.state in ("ready", "confirm_accept", "reject")
        self.accept_button.setEnabled(can and self.state != "reject")
        self.reject_button.setEnabled(can and self.state != "reject")

    # ------------------------------------------------------------------ keys
    def press_accept(self) -> bool:
        if not self.logged_in:
            return False
        if self.state == "reject":
            self._confirm_reject()
            return True
        if self.state == "ready" and self.auto_verdict == "FAIL":
            self.state = "confirm_accept"
            self._set_prompt("The station says FAIL. Press A or Enter again to PASS this part, Esc to cancel.")
            self._update_buttons()
            return True
        if self.state in ("ready", "confirm_accept"):
            self._set_prompt("")
            self.state = "decided"
            self._update_buttons()
            self.accepted.emit()
            return True
        return False

    def press_reject(self) -> bool:
        if not self.logged_in or self.state not in ("ready", "confirm_accept"):
            return False
        self._set_prompt("")
        self.state = "reject"
        self.reason_list.clear()
        for i, reason in enumerate(self._reasons, 1):
            self.reason_list.addItem(f"{i}. {reason}" if i <= 9 else reason)
        self.reason_list.setCurrentRow(-1)  # nothing preselected: the operator picks the reason
        self.reason_list.clearSelection()
        hint = self._suggested_reason()
        self.reason_hint.setText(f"The top region looks like “{hint}”." if hint else "")
        self.note.clear()
        self.reject_panel.setVisible(True)
        self.scroll.ensureWidgetVisible(self.reject_panel)
        self.reason_list.setFocus()
        self._update_buttons()
        return True

    def _suggested_reason(self) -> str | None:
        """A reason code equal to the top region's label (shown as a hint, never preselected)."""
        if self._region_labels:
            top = self._region_labels[0].lower()
            for reason in self._reasons:
                if reason.lower() == top:
                    return reason
        return None

    def press_digit(self, n: int) -> bool:
        if self.state != "reject" or not 1 <= n <= min(9, len(self._reasons)):
            return False
        self.reason_list.setCurrentRow(n - 1)
        return True

    def press_escape(self) -> bool:
        if self.state == "reject":
            self._close_reject()
            self.state = "ready"
            self._update_buttons()
            return True
        if self.state == "confirm_accept":
            self.state = "ready"
            self._set_prompt("")
            self._update_buttons()
            return True
        return False

    def selected_reason(self) -> str | None:
        items = self.reason_list.selectedItems()
        row = self.reason_list.row(items[0]) if items else -1
        return self._reasons[row] if 0 <= row < len(self._reasons) else None

    def _confirm_reject(self) -> None:
        if self.state != "reject":
            return
        reason = self.selected_reason()
        if reason is None and self._reasons:
            self._set_prompt("Pick a reason first (1–9), then Enter.")
            return
        note = self.note.text().strip()
        self._close_reject()
        self.state = "decided"
        self._update_buttons()
        self.rejected.emit(reason or "", note)

    def _close_reject(self) -> None:
        was_open = self.reject_panel.isVisible()
        self.reject_panel.setVisible(False)
        self.scroll.verticalScrollBar().setValue(0)  # the user, the counters and the badge in view again
        if was_open and self.window() is not None:
            self.window().setFocus()

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt API
        if event.type() == QEvent.Type.KeyPress and self.state == "reject":
            key = event.key()  # type: ignore[attr-defined]
            if key == Qt.Key.Key_Escape:
                self.press_escape()
                return True
            if obj is self.reason_list:
                if key in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
                    self._confirm_reject()
                    return True
                if Qt.Key.Key_1 <= key <= Qt.Key.Key_9:
                    self.press_digit(key - Qt.Key.Key_0)
                    return True
        return super().eventFilter(obj, event)
