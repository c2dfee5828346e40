"""Text that never widens a window: break points in long paths and words, labels that shrink."""

from __future__ import annotations

import re

from PySide6.QtWidgets import QLabel, QSizePolicy, QWidget

ZWSP = "\u200b"  # zero-width space: an invisible place where Qt may break a line
_LONG_RUN = re.compile(r"\S{24,}")
_BREAK_AFTER = re.compile(r"([/\\_.,:;=&?#-])")


def wrap_anywhere(text: str, run: int = 24) -> str:
    """``text`` with break opportunities inside long unbroken runs (paths, hashes, URLs).

    Qt wraps only at spaces; a 300-character path in a word-wrapped label would otherwise set the
    label's minimum width, and with it the window's."""

    def split(m: re.Match[str]) -> str:
        chunk = _BREAK_AFTER.sub(r"\1" + ZWSP, m.group(0))
        parts = chunk.split(ZWSP)
        out = []
        for p in parts:  # still-long pieces (a hash) get a break every ``run`` characters
            out.append(ZWSP.join(p[i:i + run] for i in range(0, len(p), run)) if len(p) > run else p)
        return ZWSP.join(out)

    return _LONG_RUN.sub(split, text)


def shrinkable(*widgets: QWidget, wrap: bool = True) -> None:
    """Let the layout make these widgets narrower than their text.

    Word-wrapped labels (``wrap``) keep their height-for-width (an *ignored* width would make Qt
    ask for their height at a width of a few pixels, and the window would grow tall); their text
    goes through :func:`wrap_anywhere`. Single-line labels (``wrap=False``) ignore their text
    width and are cut at the edge (give them a tooltip with the full text)."""
    for w in widgets:
        if wrap and isinstance(w, QLabel):
            w.setWordWrap(True)
            w.setMinimumWidth(1)
            continue
        policy = w.sizePolicy()
        policy.setHorizontalPolicy(QSizePolicy.Policy.Ignored)
        w.setSizePolicy(policy)
