"""Helpers for the station window tests: accounts, a window fixture that takes them, log in, keys."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from inspector.users import User, UserStore

LOAD_TIMEOUT_MS = 90_000
STEP_TIMEOUT_MS = 30_000
PINS = {"ann": "1111", "bob": "2222", "carol": "3333", "dora": "4444", "eve": "5555", "root": "9999"}
ROLES = {"ann": "operator", "bob": "operator", "carol": "operator", "dora": "operator", "eve": "engineer",
         "root": "admin"}


@pytest.fixture(scope="session")
def users_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("accounts") / "users.json"
    store = UserStore(path)
    admin = store.create_first_admin("root", PINS["root"])
    for name, role in ROLES.items():
        if name != "root":
            store.create(admin, name, role, PINS[name])
    return path


@pytest.fixture
def users(users_file: Path) -> UserStore:
    return UserStore(users_file)


def make_window(qtbot, settings, qsettings, users: UserStore, **kw):
    from inspector.ui.main_window import MainWindow

    win = MainWindow(settings=settings, qsettings=qsettings, users=users, **kw)
    win.asked = []

    def ask(title: str, text: str) -> bool:
        win.asked.append((title, text))
        return True

    win.ask = ask
    qtbot.addWidget(win)
    return win


def login(qtbot, win, name: str = "ann") -> User:
    panel = win.decision.login
    panel.name.setFocus()
    qtbot.keyClicks(panel.name, name)
    qtbot.keyClick(panel.name, Qt.Key.Key_Return)  # Enter moves to the PIN field
    assert panel.secret.hasFocus() or not win.isActiveWindow()
    qtbot.keyClicks(panel.secret, PINS[name])
    qtbot.keyClick(panel.secret, Qt.Key.Key_Return)
    assert win.decision.logged_in, panel.error.text()
    assert win.user is not None and win.user.name == name
    return win.user


def load(qtbot, win, folder: Path) -> None:
    """Load a profile and wait until the *window* has taken it (not just the worker's signal)."""
    before = win.profile_info.generation if win.profile_info else 0
    win.load_profile(folder)

    def taken() -> None:
        assert win.profile_info is not None and win.profile_info.generation > before

    qtbot.waitUntil(taken, timeout=LOAD_TIMEOUT_MS)


def wait_current(qtbot, win, name: str) -> None:
    def shown() -> None:
        assert win.review is not None
        res = win.review.current()
        assert res is not None and res.frame.path is not None and res.frame.path.name == name
        assert win.decision.state in ("ready", "error", "decided")

    qtbot.waitUntil(shown, timeout=STEP_TIMEOUT_MS)


def key(qtbot, win, k: Qt.Key, modifier: Qt.KeyboardModifier = Qt.KeyboardModifier.NoModifier) -> None:
    win._update_shortcuts()
    qtbot.keyClick(win.view.graphics, k, modifier)


def events(win) -> list[str]:
    return [win.decision.events.item(i).toolTip() or win.decision.events.item(i).text()
            for i in range(win.decision.events.count())]


def records(win) -> list:
    return win.store.query()
