"""The operator screen's shift counters and the strip of the last results (a view of
:class:`inspector.station.ShiftSummary`)."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QGridLayout, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from inspector.station.session import RECENT, ShiftSummary

STRIP_COLORS = {"PASS": "#1e8e3e", "FAIL": "#c62828", "NO-READ": "#6d4c41"}


class ShiftSummaryView(QWidget):
    """inspected · PASS · FAIL · overrides · NO-READ · yield, and one square per recent result."""

    FIELDS = (("inspected", "inspected"), ("pass", "PASS"), ("fail", "FAIL"), ("overrides", "overrides"),
              ("no_read", "NO-READ"), ("yield", "yield"))

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        grid = QGridLayout()
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setHorizontalSpacing(6)
        grid.setVerticalSpacing(0)
        self.values: dict[str, QLabel] = {}
        for col, (key, title) in enumerate(self.FIELDS):
            value = QLabel("0")
            value.setAlignment(Qt.AlignmentFlag.AlignCenter)
            value.setStyleSheet("QLabel { font-size: 15px; font-weight: bold; }")
            name = QLabel(title)
            name.setAlignment(Qt.AlignmentFlag.AlignCenter)
            name.setStyleSheet("QLabel { font-size: 10px; }")
            grid.addWidget(value, 0, col)
            grid.addWidget(name, 1, col)
            self.values[key] = value
        self.strip = QHBoxLayout()
        self.strip.setContentsMargins(0, 2, 0, 0)
        self.strip.setSpacing(2)
        self.squares: list[QLabel] = []
        for _ in range(RECENT):
            sq = QLabel("")
            sq.setFixedSize(11, 11)
            self.strip.addWidget(sq)
            self.squares.append(sq)
        self.strip.addStretch(1)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 4)
        lay.addLayout(grid)
        lay.addLayout(self.strip)
        self.show_summary(None)

    def show_summary(self, s: ShiftSummary | None) -> None:
        s = s or ShiftSummary(user="", role="", station_id="", started="")
        self.values["inspected"].setText(str(s.inspected))
        self.values["pass"].setText(str(s.passed))
        self.values["fail"].setText(str(s.failed))
        self.values["overrides"].setText(str(s.overrides))
        self.values["no_read"].setText(str(s.no_read))
        self.values["yield"].setText(f"{s.yield_pct:.0f} %" if s.yield_pct is not None else "—")
        recent = s.recent[-len(self.squares):]
        for i, sq in enumerate(self.squares):
            if i < len(recent):
                name, verdict = recent[i]
                sq.setStyleSheet(f"QLabel {{ background: {STRIP_COLORS.get(verdict, '#888')}; border-radius: 2px; }}")
                sq.setToolTip(f"{name}: {verdict}")
            else:
                sq.setStyleSheet("QLabel { background: #dddddd; border-radius: 2px; }")
                sq.setToolTip("")

    def text(self) -> str:
        """The counters as one line (tests and the status bar's tooltip)."""
        return " · ".join(f"{title} {self.values[key].text()}" for key, title in self.FIELDS)
