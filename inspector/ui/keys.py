"""The station's keys: one table (:data:`KEYS`) builds the shortcuts and the help overlay's list.

Scopes: ``operator`` — on the Operator tab when no text field or list has the focus; ``decision``
— only when the image or the decision panel has the focus (``Enter``); ``window`` — everywhere
(a printable key of a window-wide action, ``?``, is left to a text field that has the focus).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import QWidget

# (keys, what they do, the window's method, scope — see the module docstring)
KEYS: list[tuple[tuple[str, ...], str, str, str]] = [
    (("A", "Enter"), "accept the part (PASS); a FAIL proposal asks for a second press", "key_accept", "decision"),
    (("R",), "reject (FAIL): pick a reason with 1–9, Enter confirms, Esc cancels", "key_reject", "operator"),
    (("1", "2", "3", "4", "5", "6", "7", "8", "9"), "pick a reject reason", "key_digit", "operator"),
    (("Esc",), "cancel the reject / the confirmation; close this help", "key_escape", "operator"),
    (("Ctrl+Z",), "correct: void the decision of the part on screen (or the last one), decide again",
     "correct", "operator"),
    (("Right", "PgDown"), "next part (an undecided part you leave is SKIPPED)", "key_next", "operator"),
    (("Left", "PgUp"), "previous part", "key_previous", "operator"),
    (("Space",), "hold / release a live camera view", "toggle_hold", "operator"),
    (("H",), "heatmap on / off", "key_heatmap", "operator"),
    (("B",), "nearest reference shot beside the image", "key_reference", "operator"),
    (("C",), "contours on / off", "key_contours", "operator"),
    (("X",), "boxes and labels on / off", "key_boxes", "operator"),
    (("G",), "ground-truth contour on / off", "key_truth", "operator"),
    (("[", "]"), "heatmap opacity down / up", "key_opacity", "operator"),
    (("F",), "fit the image", "key_fit", "operator"),
    (("+", "="), "zoom in", "key_zoom_in", "operator"),
    (("-",), "zoom out", "key_zoom_out", "operator"),
    (("Ctrl+Shift+R",), "add the image on screen as a reference shot (engineers)", "add_current_to_references",
     "operator"),
    (("F5",), "start (or restart) the source", "key_start", "window"),
    (("Shift+F5",), "stop the source", "stop_source", "window"),
    (("Alt+A",), "auto-advance on / off", "key_toggle_auto", "window"),
    (("Alt+O",), "hold on FAIL on / off", "key_toggle_hold_fail", "window"),
    (("Alt+I",), "hot folder: inspect / ignore files already there", "key_toggle_hot_existing", "window"),
    (("Ctrl+P",), "choose the profile (arrows, then Enter)", "key_focus_profile", "window"),
    (("Ctrl+K",), "choose the source kind", "key_focus_kind", "window"),
    (("Ctrl+O",), "type the source (folder, camera, video); Enter starts it", "key_focus_source", "window"),
    (("Ctrl+1", "Ctrl+2", "Ctrl+3"), "Operator / Records / Engineer tab", "key_tab", "window"),
    (("Ctrl+U",), "accounts (admins)", "manage_users", "window"),
    (("Ctrl+L",), "log out (writes the shift report)", "logout", "window"),
    (("F1", "?"), "this help", "toggle_help", "window"),
]


_SPECIAL_KEYS = {"Return": Qt.Key.Key_Return, "Enter": Qt.Key.Key_Enter, "Esc": Qt.Key.Key_Escape,
                 "+": Qt.Key.Key_Plus, "=": Qt.Key.Key_Equal, "-": Qt.Key.Key_Minus, "?": Qt.Key.Key_Question,
                 "[": Qt.Key.Key_BracketLeft, "]": Qt.Key.Key_BracketRight}


def _qt_keys(name: str) -> QKeySequence:
    key = _SPECIAL_KEYS.get(name)
    return QKeySequence(key) if key is not None else QKeySequence(name)


def key_rows() -> list[tuple[str, str]]:
    """(keys, action) for the help overlay (``1``–``9`` written as a range)."""

    def name(keys: tuple[str, ...]) -> str:
        if len(keys) > 3 and all(k.isdigit() for k in keys):
            return f"{keys[0]}–{keys[-1]}"
        return " / ".join(keys)

    return [(name(keys), what) for keys, what, _fn, _scope in KEYS]


def _handler(fn: Callable[..., Any], fn_name: str, key: str) -> Callable[[], Any]:
    if fn_name in ("key_digit", "key_tab"):
        return lambda: fn(int(key[-1]))
    if fn_name == "key_opacity":
        return lambda: fn(10 if key == "]" else -10)
    return lambda: fn()


class KeyBindings:
    """The shortcuts of ``window`` (one per key of :data:`KEYS`), enabled by scope."""

    def __init__(self, window: QWidget) -> None:
        self.shortcuts: list[tuple[QShortcut, str]] = []
        for keys, _what, fn_name, scope in KEYS:
            fn = getattr(window, fn_name)
            for k in keys:
                key_scope = "untyped" if scope == "window" and len(k) == 1 else scope
                for name in (["Return", "Enter"] if k == "Enter" else [k]):
                    sc = QShortcut(_qt_keys(name), window)
                    sc.setContext(Qt.ShortcutContext.WindowShortcut)
                    sc.activated.connect(_handler(fn, fn_name, k))
                    self.shortcuts.append((sc, key_scope))

    def update(self, *, on_operator: bool, typing: bool, owns: bool, help_open: bool) -> None:
        """``on_operator``: the Operator tab shows and the help is closed; ``typing``: a text field or
        list has the focus; ``owns``: the image or the decision panel has it."""
        for sc, scope in self.shortcuts:
            if scope == "window":
                sc.setEnabled(not help_open or sc.key() == _qt_keys("F1"))
            elif scope == "untyped":
                sc.setEnabled(not typing)
            elif scope == "decision":
                sc.setEnabled(on_operator and not typing and owns)
            else:
                sc.setEnabled(on_operator and not typing)
