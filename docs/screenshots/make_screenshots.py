"""Regenerate the README screenshots from the real station window on the demo line.

Run it under a real X server (Xvfb), once per size::

    Xvfb :99 -screen 0 1600x1000x24 &
    DISPLAY=:99 QT_QPA_PLATFORM=xcb .venv/bin/python docs/screenshots/make_screenshots.py 1600x1000
    DISPLAY=:99 QT_QPA_PLATFORM=xcb .venv/bin/python docs/screenshots/make_screenshots.py 1024x700

Writes ``operator.png`` / ``keys.png`` / ``records.png`` (1600×1000) or ``operator_1024.png`` /
``keys_1024.png`` / ``records_1024.png`` (1024×700): the pixels the X server shows, grabbed from the screen, not a
widget rendering. An operator account logs in with a PIN, decides a few parts with the same key
handlers the keyboard drives, and stops on a FAIL. Everything else (demo line, profiles,
records, accounts, caches) goes to a temporary folder.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent
CATEGORY = os.environ.get("SHOT_CATEGORY", "pcb")
FAIL_IMAGE = os.environ.get("SHOT_IMAGE", "missing/001.png")


def main(argv: list[str]) -> int:
    size = argv[0] if argv else "1600x1000"
    width, height = (int(v) for v in size.lower().split("x"))
    suffix = "" if (width, height) == (1600, 1000) else f"_{width}"
    tmp = Path(tempfile.mkdtemp(prefix="inspector-shots-"))
    os.environ["INSPECTOR_HOME"] = str(tmp / "home")
    os.environ["INSPECTOR_CONFIG"] = str(tmp / "settings.yaml")

    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from inspector.demo import generate_demo_line, write_demo_profiles
    from inspector.settings import Settings
    from inspector.ui.main_window import MainWindow
    from inspector.users import UserStore

    app = QApplication.instance() or QApplication(sys.argv[:1])
    line = generate_demo_line(tmp / "line", seed=0, categories=[CATEGORY])
    write_demo_profiles(tmp / "profiles", line_root=line)
    users = UserStore(tmp / "home" / "users.json")
    admin = users.create_first_admin("admin", "0000")
    users.create(admin, "op-117", "operator", "1170")
    settings = Settings(records_path=tmp / "records.sqlite", archive_dir=tmp / "archive",
                        profiles_dir=tmp / "profiles", station_id="line-3-station-A", device="cpu")
    win = MainWindow(settings=settings, qsettings=QSettings(str(tmp / "q.ini"), QSettings.Format.IniFormat),
                     users=users)
    win.ask = lambda _title, _text: True
    win.move(0, 0)
    win.resize(width, height)
    win.show()

    def pump(cond, timeout: float = 600.0) -> None:
        t0 = time.monotonic()
        while not cond():
            app.processEvents()
            time.sleep(0.01)
            if time.monotonic() - t0 > timeout:
                raise TimeoutError("station did not get there in time")

    panel = win.decision.login
    panel.name.setText("op-117")
    panel.secret.setText("1170")
    panel._submit()
    win.load_profile(tmp / "profiles" / f"demo_{CATEGORY}")
    pump(lambda: win.profile_info is not None)
    win.start_source("folder", str(line / CATEGORY / "test"))
    names = [p.relative_to(line / CATEGORY / "test").as_posix() for p in win.folder.paths]
    target = names.index(FAIL_IMAGE)

    def current_ready() -> bool:
        res = win.review.current() if win.review else None
        return res is not None and win.decision.state in ("ready", "error", "decided")

    decided = 0
    while win.review.pos < target and decided < 12:
        pump(current_ready)
        res = win.review.current()
        if res.inspection is None:
            win.review.advance()
            continue
        defect = res.frame.path.parent.name
        if defect == "good":  # the operator passes good parts, overriding a false FAIL if needed
            win.key_accept()
            if win.decision.state == "confirm_accept":
                win.key_accept()
        else:
            win.key_reject()
            reasons = win.profile_info.profile.reason_codes
            pick = next((i for i, r in enumerate(reasons) if defect in r or r in defect), len(reasons) - 1)
            win.key_digit(pick + 1)
            win.key_accept()  # Enter confirms the reject
        decided += 1
    win.review.seek_key(target)
    win._request_more()
    win._show_current(auto_skip=False)
    pump(current_ready)
    # the worker inspects ahead of the operator: let it go idle so the status bar and the progress
    # bar show the station at rest ("queue 0"), not in the middle of the next part
    pump(lambda: not win.worker.is_busy() and win.queue == 0)
    win.view.ref_check.setChecked(True)
    settle(app)
    grab(app, win, OUT / f"operator{suffix}.png")
    win.toggle_help()  # F1: the key table over the operator screen
    settle(app)
    grab(app, win, OUT / f"keys{suffix}.png")
    win.toggle_help()

    win.tabs.setCurrentWidget(win.records_view)
    win.records_view.period.setCurrentText("All")
    win.records_view.refresh()
    settle(app)
    grab(app, win, OUT / f"records{suffix}.png")
    shown = win.review.current().inspection
    print(f"{width}x{height}: {FAIL_IMAGE} shown with verdict {shown.verdict}, score {shown.image_score:.3f}, "
          f"pipeline {shown.pipeline}, {len(shown.regions)} region(s); window "
          f"{win.width()}x{win.height()}; wrote operator{suffix}.png, keys{suffix}.png and records{suffix}.png")
    win.close()
    return 0


def settle(app) -> None:  # noqa: ANN001
    for _ in range(30):
        app.processEvents()
        time.sleep(0.02)


def grab(app, win, path: Path) -> None:  # noqa: ANN001
    """The window's pixels as the X server shows them (a screen grab of the window's rectangle)."""
    screen = app.primaryScreen()
    geo = win.frameGeometry()
    shot = screen.grabWindow(0, geo.x(), geo.y(), geo.width(), geo.height())
    if not shot.save(str(path)):
        raise OSError(f"{path}: could not write the screenshot")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
