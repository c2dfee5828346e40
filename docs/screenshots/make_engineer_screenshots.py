"""Screenshots of the engineer tools: the profile history/diff view and the HTML evaluation report.

    xvfb-run -s "-screen 0 1600x1000x24" .venv/bin/python docs/screenshots/make_engineer_screenshots.py

Writes ``docs/screenshots/history.png`` (the station window at 1600×1000 with the History dialog of
a demo profile: versions with author, date and note, and the field-by-field diff) and
``docs/screenshots/report.png`` (``report.html`` of an evaluation of the demo washer line, rendered
by headless Chromium when it is installed; ``inspector eval --report`` writes the same file).
Without a display it falls back to Qt's offscreen platform and a widget grab. Demo line, profiles,
records and caches go to a temporary folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent
CATEGORY = "washer"
SIZE = (1600, 1000)


def _versions(folder: Path) -> None:
    """Three more versions of the demo profile, as engineers would save them."""
    from inspector.profile import load_profile, save_profile

    steps = [
        ("ana", "fewer false rejects on shift B (oil film reads as a stain)",
         lambda p: setattr(p.decision, "image_threshold", 0.62)),
        ("ben", "ignore specks below 40 px; tighter smoothing after the new lens",
         lambda p: (setattr(p.decision, "min_defect_area_px", 40), setattr(p.patchcore, "smoothing_sigma", 3.0))),
        ("ana", "reason codes agreed with QA; description for the night shift",
         lambda p: (setattr(p, "reason_codes", ["scratch", "dent", "stain", "burr", "other"]),
                    setattr(p, "description", "stamped washer, line 3 (night shift: check burrs first)"))),
    ]
    for author, note, change in steps:
        prof = load_profile(folder)
        change(prof)
        save_profile(prof, bump=True, note=note, author=author)
        time.sleep(1.1)  # distinct save times


def _trim_bottom(path: Path, margin: int = 24) -> int:
    """Cut the blank page below the report's last line (the window is taller than any report)."""
    from PySide6.QtGui import QImage

    image = QImage(str(path))
    if image.isNull():
        raise OSError(f"{path}: chromium wrote no readable PNG")
    background = image.pixel(image.width() - 1, image.height() - 1)
    last = image.height() - 1
    while last > 0 and all(image.pixel(x, last) == background for x in range(0, image.width(), 2)):
        last -= 1
    height = min(image.height(), last + 1 + margin)
    if not image.copy(0, 0, image.width(), height).save(str(path)):
        raise OSError(f"{path}: could not write the trimmed report screenshot")
    return height


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="inspector-eng-shots-"))
    os.environ["INSPECTOR_HOME"] = str(tmp / "home")
    os.environ["INSPECTOR_CONFIG"] = str(tmp / "settings.yaml")
    os.environ.setdefault("QT_QPA_PLATFORM", "xcb" if os.environ.get("DISPLAY") else "offscreen")

    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from inspector.demo import generate_demo_line, write_demo_profiles
    from inspector.evaluate import evaluate, load_dataset
    from inspector.evaluate.report import write_html_report
    from inspector.inspection import Inspector
    from inspector.models.hub import ModelHub
    from inspector.profile import load_profile
    from inspector.settings import Settings
    from inspector.ui.main_window import MainWindow
    from inspector.ui.profile_history import ProfileHistoryDialog

    app = QApplication.instance() or QApplication(sys.argv[:1])
    line = generate_demo_line(tmp / "line", seed=0, categories=[CATEGORY])
    write_demo_profiles(tmp / "profiles", line_root=line)
    folder = tmp / "profiles" / f"demo_{CATEGORY}"
    _versions(folder)

    # ---- the HTML report (evaluation of the current version on the demo line)
    profile = load_profile(folder)
    inspector = Inspector(profile, ModelHub(device="cpu"))
    result = evaluate(inspector, load_dataset(line / CATEGORY), eval_size=128)
    # the operating point v4 runs at (v2 raised it against false rejects): the report shows what it
    # costs, with the overlays of the parts it decides wrongly
    threshold = profile.decision.image_threshold
    report = write_html_report(result, tmp / "report.html", threshold, inspector, profile_version=profile.version)
    scores, labels = result.scores(), result.labels()
    print(f"wrote {report} (pipeline {result.pipeline}, threshold {threshold:g}: "
          f"{int(((scores < threshold) & (labels == 1)).sum())} escapes, "
          f"{int(((scores >= threshold) & (labels == 0)).sum())} false rejects; good scores "
          f"{scores[labels == 0].min():.3f}-{scores[labels == 0].max():.3f}, defective "
          f"{scores[labels == 1].min():.3f}-{scores[labels == 1].max():.3f})")

    # ---- the history view over the station window
    settings = Settings(records_path=tmp / "records.sqlite", archive_dir=tmp / "archive",
                        profiles_dir=tmp / "profiles", station_id="line-3-station-A", device="cpu")
    extra, admin = {}, None
    try:  # log in as an engineer-capable user where the station has accounts
        from inspector.users import UserStore

        users = UserStore(tmp / "users.json")
        admin = users.create_first_admin("ana", "line3-secret-pin")
        extra = {"users": users}
    except Exception as exc:  # noqa: BLE001 - older/newer account API: screenshot without logging in
        print(f"not logged in: {exc}")
    win = MainWindow(settings=settings, qsettings=QSettings(str(tmp / "q.ini"), QSettings.Format.IniFormat),
                     **extra)
    if admin is not None:
        win.login(admin)
    win.resize(*SIZE)
    win.move(0, 0)
    win.show()
    win.tabs.setCurrentIndex(getattr(win, "engineer_index", 2))  # the panel sits in a scroll area
    win.engineer.open_profile(folder)
    dialog = ProfileHistoryDialog(folder, win, author="ana")
    dialog.resize(1180, 720)
    dialog.move(210, 150)
    dialog.view.select_version(1)  # v1 against the current version
    dialog.show()
    t0 = time.monotonic()
    while time.monotonic() - t0 < 3.0:
        app.processEvents()
        time.sleep(0.02)
    screen = app.primaryScreen()
    if os.environ["QT_QPA_PLATFORM"] == "xcb":
        shot = screen.grabWindow(0, 0, 0, *SIZE)
    else:
        shot = dialog.grab()
    shot.save(str(OUT / "history.png"))
    print(f"wrote {OUT / 'history.png'} ({shot.width()}x{shot.height()})")
    dialog.close()
    win.close()

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium:
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--screenshot={OUT / 'report.png'}", "--window-size=1400,4000",
                        report.as_uri()], check=True, capture_output=True, timeout=120)
        height = _trim_bottom(OUT / "report.png")
        print(f"wrote {OUT / 'report.png'} (1400x{height})")
    else:
        print("chromium not installed (apt-get install chromium): report.png not rendered")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
