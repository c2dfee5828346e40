"""F1 / ? : a panel over the operator screen listing every key (built from the window's key table)."""

from __future__ import annotations

import html
from collections.abc import Sequence

from PySide6.QtCore import QEvent, QObject, Qt, Signal
from PySide6.QtWidgets import QFrame, QLabel, QVBoxLayout, QWidget


class HelpOverlay(QFrame):
    """A dark panel covering its parent; any key or click closes it."""

    closed = Signal()

    def __init__(self, parent: QWidget, rows: Sequence[tuple[str, str]]) -> None:
        super().__init__(parent)
        self.setObjectName("help_overlay")
        self.setStyleSheet("#help_overlay { background: rgba(20, 20, 20, 235); border-radius: 8px; }"
                           "QLabel { color: #ffffff; font-size: 13px; }")
        half = (len(rows) + 1) // 2  # two columns, so that the whole table fits 1024×700

        def cells(i: int) -> str:
            if i >= len(rows):
                return "<td></td><td></td>"
            k, a = rows[i]
            return (f"<td style='padding:1px 10px 1px 0'><b>{html.escape(k)}</b></td>"
                    f"<td style='padding:1px 24px 1px 0'>{html.escape(a)}</td>")

        body = "".join(f"<tr>{cells(i)}{cells(i + half)}</tr>" for i in range(half))
        self.label = QLabel(f"<h2>Keys</h2><table>{body}</table><p>Any key closes this panel.</p>")
        self.label.setTextFormat(Qt.TextFormat.RichText)
        self.label.setWordWrap(True)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(24, 16, 24, 16)
        lay.addWidget(self.label)
        self.rows = list(rows)
        self.hide()
        parent.installEventFilter(self)

    def toggle(self) -> None:
        if self.isVisible():
            self.hide()
        else:
            self.open()

    def open(self) -> None:
        self._fit()
        self.show()
        self.raise_()
        self.setFocus()

    def _fit(self) -> None:
        p = self.parentWidget()
        if p is not None:
            self.setGeometry(p.rect().adjusted(40, 30, -40, -30))

    def hideEvent(self, event) -> None:  # noqa: N802, ANN001 - Qt API
        super().hideEvent(event)
        self.closed.emit()

    def keyPressEvent(self, event) -> None:  # noqa: N802, ANN001 - Qt API
        self.hide()
        event.accept()

    def mousePressEvent(self, event) -> None:  # noqa: N802, ANN001 - Qt API
        self.hide()
        event.accept()

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt API
        if obj is self.parentWidget() and event.type() == QEvent.Type.Resize and self.isVisible():
            self._fit()
        return False
