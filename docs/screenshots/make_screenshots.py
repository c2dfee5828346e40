"""Regenerate the README screenshots from the real station on the demo line.

    QT_QPA_PLATFORM=offscreen .venv/bin/python docs/screenshots/make_screenshots.py

Writes ``docs/screenshots/operator.png`` (a FAIL on the demo line) and ``records.png``. Everything
else (demo line, profiles, records, caches) goes to a temporary folder.
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


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="inspector-shots-"))
    os.environ["INSPECTOR_HOME"] = str(tmp / "home")
    os.environ["INSPECTOR_CONFIG"] = str(tmp / "settings.yaml")
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from inspector.demo import generate_demo_line, write_demo_profiles
    from inspector.settings import Settings
    from inspector.ui.main_window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    line = generate_demo_line(tmp / "line", seed=0)
    write_demo_profiles(tmp / "profiles", line_root=line)
    settings = Settings(records_path=tmp / "records.sqlite", archive_dir=tmp / "archive",
                        profiles_dir=tmp / "profiles", station_id="line-3-station-A", device="cpu")
    win = MainWindow(settings=settings, qsettings=QSettings(str(tmp / "q.ini"), QSettings.Format.IniFormat))
    win.resize(1500, 900)
    win.show()

    def pump(cond, timeout: float = 300.0) -> None:
        t0 = time.monotonic()
        while not cond():
            app.processEvents()
            time.sleep(0.01)
            if time.monotonic() - t0 > timeout:
                raise TimeoutError("station did not get there in time")

    win.login("op-117")
    win.load_profile(tmp / "profiles" / f"demo_{CATEGORY}")
    pump(lambda: win.profile_info is not None)
    win.start_source("folder", str(line / CATEGORY / "test"))
    names = [p.relative_to(line / CATEGORY / "test").as_posix() for p in win.folder.paths]
    target = names.index(FAIL_IMAGE)

    def current_ready() -> bool:
        res = win.review.current() if win.review else None
        return res is not None and win.decision.state in ("ready", "error")

    # decide a few parts the way an operator would, to give the records some content
    decided = 0
    while win.review.pos < target and decided < 12:
        pump(current_ready)
        res = win.review.current()
        if res.inspection is None:
            win.review.advance()
            continue
        defect = res.frame.path.parent.name
        if defect == "good":  # the operator passes good parts, overriding a false FAIL if needed
            win.decision.press_accept()
            if win.decision.state == "confirm_accept":
                win.decision.press_accept()
        else:
            win.decision.press_reject()
            reasons = win.profile_info.profile.reason_codes
            pick = next((i for i, r in enumerate(reasons) if defect in r or r in defect), len(reasons) - 1)
            win.decision.press_digit(pick + 1)
            win.decision.press_accept()  # Enter confirms the reject
        decided += 1
    win.review.seek_key(target)
    win._request_more()
    win._show_current(auto_skip=False)
    pump(current_ready)
    win.view.ref_check.setChecked(True)
    app.processEvents()
    time.sleep(0.3)
    app.processEvents()
    win.grab().save(str(OUT / "operator.png"))

    win.tabs.setCurrentWidget(win.records_view)
    win.records_view.period.setCurrentText("All")
    win.records_view.refresh()
    app.processEvents()
    win.grab().save(str(OUT / "records.png"))
    print(f"verdict shown: {win.review.current().inspection.verdict}; wrote {OUT / 'operator.png'} and records.png")
    win.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
