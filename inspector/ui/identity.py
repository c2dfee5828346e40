"""Who is at the station: the operator id asked at the start of a shift, remembered until logout."""

from __future__ import annotations

import re

from PySide6.QtCore import QSettings, Qt, Signal
from PySide6.QtGui import QFont
from PySide6.QtWidgets import QHBoxLayout, QLabel, QLineEdit, QPushButton, QVBoxLayout, QWidget

OPERATOR_KEY = "operator/id"
_VALID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.@-]{0,63}$")


def validate_operator_id(text: str) -> str:
    """Return the cleaned id or raise ValueError with what is wrong."""
    t = text.strip()
    if not t:
        raise ValueError("type your operator id (badge number or name)")
    if not _VALID.match(t):
        raise ValueError("use letters, digits, space, '.', '_', '-' or '@' (at most 64)")
    return t


class Identity:
    """The operator id kept in QSettings between sessions until logout."""

    def __init__(self, qsettings: QSettings) -> None:
        self._qs = qsettings

    @property
    def operator(self) -> str | None:
        value = self._qs.value(OPERATOR_KEY, "")
        return str(value) if value else None

    def login(self, operator_id: str) -> str:
        op = validate_operator_id(operator_id)
        self._qs.setValue(OPERATOR_KEY, op)
        self._qs.sync()
        return op

    def logout(self) -> None:
        self._qs.remove(OPERATOR_KEY)
        self._qs.sync()


class OperatorLogin(QWidget):
    """Start-of-shift panel: type the id, press Enter."""

    logged_in = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        title = QLabel("Start of shift")
        f = QFont()
        f.setPointSize(16)
        f.setBold(True)
        title.setFont(f)
        self.edit = QLineEdit()
        self.edit.setPlaceholderText("operator id")
        self.edit.setObjectName("operator_id")
        self.button = QPushButton("Start shift")
        self.error = QLabel("")
        self.error.setStyleSheet("color: #c0392b;")
        self.error.setWordWrap(True)
        row = QHBoxLayout()
        row.addWidget(self.edit, 1)
        row.addWidget(self.button)
        lay = QVBoxLayout(self)
        lay.addWidget(title)
        lay.addWidget(QLabel("Your decisions are recorded under this id until you log out."))
        lay.addLayout(row)
        lay.addWidget(self.error)
        lay.addStretch(1)
        self.edit.returnPressed.connect(self._submit)
        self.button.clicked.connect(self._submit)
        self.setFocusProxy(self.edit)
        self.edit.setFocusPolicy(Qt.FocusPolicy.StrongFocus)

    def _submit(self) -> None:
        try:
            op = validate_operator_id(self.edit.text())
        except ValueError as exc:
            self.error.setText(str(exc))
            return
        self.error.setText("")
        self.edit.clear()
        self.logged_in.emit(op)
