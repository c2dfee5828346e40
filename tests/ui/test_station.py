"""Drive the real station window: profile, folder review with the keyboard, records, failures."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QElapsedTimer, Qt, QTimer

from inspector.imaging import file_sha256, write_png
from inspector.records import SqliteRecordStore, effective
from tests.ui.conftest import REASONS, plate

LOAD_TIMEOUT_MS = 90_000
STEP_TIMEOUT_MS = 30_000


class StallMeter:
    """Longest gap between ticks of a 10 ms timer on the UI thread (an event-loop stall)."""

    def __init__(self) -> None:
        self.clock = QElapsedTimer()
        self.longest = 0
        self.timer = QTimer()
        self.timer.setInterval(10)
        self.timer.timeout.connect(self._tick)

    def start(self) -> StallMeter:
        self.clock.start()
        self.timer.start()
        return self

    def _tick(self) -> None:
        self.longest = max(self.longest, self.clock.restart())

    def stop(self) -> int:
        self.timer.stop()
        return self.longest


def login(qtbot, win, operator: str = "ann") -> None:
    win.decision.login.edit.setFocus()
    qtbot.keyClicks(win.decision.login.edit, operator)
    qtbot.keyClick(win.decision.login.edit, Qt.Key.Key_Return)
    assert win.decision.logged_in
    assert win.identity.operator == operator


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
        assert win.decision.state in ("ready", "error")

    qtbot.waitUntil(shown, timeout=STEP_TIMEOUT_MS)


def key(qtbot, win, k: Qt.Key, modifier: Qt.KeyboardModifier = Qt.KeyboardModifier.NoModifier) -> None:
    win._update_shortcuts()
    qtbot.keyClick(win.view.graphics, k, modifier)


def records(win) -> list:
    return win.store.query()


def test_folder_review_with_keyboard_records_and_chain(qtbot, window, station_env) -> None:
    win = window
    meter = StallMeter().start()
    login(qtbot, win)
    load(qtbot, win, station_env["profile"])
    assert "plate v1" in win.model_label.text() and "CPU" in win.device_label.text()
    assert win.start_source("folder", str(station_env["line"]))

    wait_current(qtbot, win, "000_good.png")
    assert win.decision.badge.text() == "PASS"
    # while the operator looks at image 0, image 1 is already being (or has been) inspected
    qtbot.waitUntil(lambda: 1 in win.review.results, timeout=STEP_TIMEOUT_MS)
    assert win.review.in_flight() <= win.lookahead + 1
    key(qtbot, win, Qt.Key.Key_Return)  # accept

    wait_current(qtbot, win, "001_bad.png")
    assert win.decision.badge.text() == "FAIL"
    shown = win.review.current()
    assert shown.inspection.regions, "a FAIL shows where the defect is"
    box = shown.inspection.regions[0].box
    assert box[0] <= 48 <= box[2] and box[1] <= 22 <= box[3]  # the spot
    assert win.view.heat_item.image is not None and win.view.contour_items
    key(qtbot, win, Qt.Key.Key_R)
    assert win.decision.state == "reject" and win.decision.reject_panel.isVisible()
    key(qtbot, win, Qt.Key.Key_2)  # second reason code
    assert win.decision.selected_reason() == REASONS[1]
    win.decision.note.setFocus()
    qtbot.keyClicks(win.decision.note, "edge of plate")
    qtbot.keyClick(win.decision.note, Qt.Key.Key_Return)  # confirm from the note field

    wait_current(qtbot, win, "002_good.png")
    key(qtbot, win, Qt.Key.Key_A)

    # 003 is corrupt: reported and skipped
    wait_current(qtbot, win, "004_bad.png")
    events = [win.decision.events.item(i).text() for i in range(win.decision.events.count())]
    assert any("003_corrupt.png" in e for e in events)
    # accepting a FAIL needs a second press
    key(qtbot, win, Qt.Key.Key_A)
    assert win.decision.state == "confirm_accept"
    assert len(records(win)) == 3
    key(qtbot, win, Qt.Key.Key_A)
    qtbot.waitUntil(lambda: win.review.at_end(), timeout=STEP_TIMEOUT_MS)
    assert "All 5 images reviewed" in win.view.banner.text()

    # undo the override: a correction, the image is back for review
    key(qtbot, win, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    wait_current(qtbot, win, "004_bad.png")
    key(qtbot, win, Qt.Key.Key_R)
    key(qtbot, win, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: win.review.at_end(), timeout=STEP_TIMEOUT_MS)
    longest = meter.stop()

    rows = records(win)
    assert [(r.kind, r.operator_verdict, r.auto_verdict) for r in rows] == [
        ("decision", "PASS", "PASS"),
        ("decision", "FAIL", "FAIL"),
        ("decision", "PASS", "PASS"),
        ("decision", "PASS", "FAIL"),
        ("correction", None, "FAIL"),
        ("decision", "FAIL", "FAIL"),
    ]
    assert rows[1].reason == REASONS[1] and rows[1].note == "edge of plate"
    assert rows[4].corrects_uid == rows[3].uid
    assert [Path(r.image_path).name for r in effective(rows)] == ["000_good.png", "001_bad.png", "002_good.png",
                                                                   "004_bad.png"]
    assert rows[0].image_sha256 == file_sha256(station_env["line"] / "000_good.png")
    assert all(r.operator_id == "ann" and r.station_id == "st-test" and r.profile_name == "plate" for r in rows)
    assert rows[0].pipeline == "variation" and rows[0].duration_s > 0
    check = SqliteRecordStore(win.settings.records_path)
    assert check.verify().ok
    check.close()
    assert "saved #6" in win.decision.save_label.text()

    # overlays and image copies land in the archive (written in the background)
    win._archiver.submit(lambda: None).result(timeout=30)
    assert Path(rows[1].overlay_path).is_file()
    assert Path(rows[1].archive_path).read_bytes() == (station_env["line"] / "001_bad.png").read_bytes()

    # records tab: table, counts, CSV export
    win.tabs.setCurrentWidget(win.records_view)
    view = win.records_view
    assert view.model.rowCount() == 6
    assert "<b>4</b> decisions" in view.counts_label.text()
    view.verdict.setCurrentText("FAIL")
    assert {r.operator_verdict for r in view.rows()} == {"FAIL"}
    view.verdict.setCurrentIndex(0)
    out = Path(win.settings.records_path).parent / "export.csv"
    assert view.export_to(out) == 6
    assert [r["kind"] for r in csv.DictReader(out.open())].count("correction") == 1
    assert view.verify()

    # the UI never froze while profiles loaded and images were inspected
    assert longest < 1000, f"event loop stalled for {longest} ms"


def test_missing_weights_are_explained_and_station_stays_usable(qtbot, window, station_env) -> None:
    win = window
    win.load_profile(station_env["weights"])
    qtbot.waitUntil(lambda: "not installed" in win.view.banner.text(), timeout=LOAD_TIMEOUT_MS)
    message = win.view.banner.text()  # the model store's own text, plus what to do
    assert "needs_weights" in message and "clip_vit_b16_plus_240" in message and "inspector models" in message
    assert "Engineer" in message or "variation" in message
    assert win.profile_info is None
    assert not win.start_source("folder", str(station_env["line"]))  # waits for a profile
    load(qtbot, win, station_env["profile"])  # the pending folder starts once a profile is ready
    login(qtbot, win, "bob")
    wait_current(qtbot, win, "000_good.png")
    assert win.decision.badge.text() == "PASS"


def test_pipeline_crash_is_reported_and_the_worker_carries_on(qtbot, window, station_env, tmp_path, monkeypatch):
    from inspector.detect.variation import VariationDetector

    line = tmp_path / "line"
    write_png(line / "a.png", plate(11))
    write_png(line / "b.png", plate(12) // 2)  # darker: this one crashes the pipeline
    write_png(line / "c.png", plate(13))
    original = VariationDetector.analyse

    def analyse(self, image):
        if image.mean() < 90:
            raise RuntimeError("simulated pipeline bug")
        return original(self, image)

    monkeypatch.setattr(VariationDetector, "analyse", analyse)
    win = window
    login(qtbot, win)
    load(qtbot, win, station_env["profile"])
    win.start_source("folder", str(line))
    wait_current(qtbot, win, "a.png")
    key(qtbot, win, Qt.Key.Key_A)
    wait_current(qtbot, win, "c.png")  # b.png reported and skipped
    events = [win.decision.events.item(i).text() for i in range(win.decision.events.count())]
    assert any("b.png" in e and "simulated pipeline bug" in e for e in events)
    assert win.review.results[1].error and win.review.results[2].ok


def test_hot_folder_picks_up_a_new_file(qtbot, window, station_env, tmp_path) -> None:
    win = window
    hot = tmp_path / "hot"
    hot.mkdir()
    write_png(hot / "already_there.png", plate(20))
    login(qtbot, win)
    load(qtbot, win, station_env["profile"])
    assert win.start_source("hot", str(hot))
    assert win.review.mode == "stream"
    write_png(hot / "new_part.png", plate(21, defect=True))
    wait_current(qtbot, win, "new_part.png")
    assert win.decision.badge.text() == "FAIL"
    assert win.review.total == 1  # the file present at start was not inspected
    key(qtbot, win, Qt.Key.Key_R)
    key(qtbot, win, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: len(records(win)) == 1, timeout=STEP_TIMEOUT_MS)
    assert records(win)[0].image_path.endswith("new_part.png")


def test_video_file_as_camera_latest_frame_wins(qtbot, window, station_env, tmp_path) -> None:
    import cv2

    video = tmp_path / "line.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 200.0, (72, 72))
    for i in range(60):
        writer.write(cv2.cvtColor(plate(30 + i), cv2.COLOR_RGB2BGR))
    writer.release()
    win = window
    win.hold_on_fail.setChecked(False)
    load(qtbot, win, station_env["profile"])
    depths = []
    win.worker.queue_changed.connect(depths.append)
    assert win.start_source("video", str(video))
    assert win.review.mode == "live"
    qtbot.waitUntil(lambda: win.review.live_key is not None and win.review.live_key >= 3, timeout=STEP_TIMEOUT_MS)
    qtbot.waitUntil(lambda: win.dropped > 0, timeout=STEP_TIMEOUT_MS)  # 200 fps is faster than inspection
    assert "dropped" in win.dropped_label.text()
    assert max(depths) <= 1, "a camera never builds a backlog"
    win.stop_source()
    assert win.review is None


def test_gui_command_needs_a_display_and_does_not_import_qt(monkeypatch, capsys) -> None:
    import subprocess
    import sys

    code = ("import sys, inspector.cli as c; c.build_parser(); "
            "assert 'PySide6' not in sys.modules and 'pyqtgraph' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    from inspector.cli import main

    assert main(["gui"]) == 2
    assert "no display" in capsys.readouterr().err


def test_run_station_entry_point(qtbot, station_env, tmp_path, monkeypatch) -> None:
    """``run_station`` opens the window, loads the profile, starts the folder, and returns on close."""
    from PySide6.QtWidgets import QApplication

    from inspector.ui import app as station_app
    from inspector.ui.main_window import MainWindow

    monkeypatch.setenv("INSPECTOR_RECORDS_PATH", str(tmp_path / "r.sqlite"))
    monkeypatch.setenv("INSPECTOR_ARCHIVE_DIR", str(tmp_path / "archive"))
    monkeypatch.setenv("INSPECTOR_DEVICE", "cpu")
    seen = {}

    def close_when_reviewing() -> None:
        wins = [w for w in QApplication.topLevelWidgets() if isinstance(w, MainWindow) and w.isVisible()]
        if wins and wins[0].review is not None and wins[0].review.current() is not None:
            seen["name"] = wins[0].review.current().frame.path.name
            wins[0].close()
            return
        QTimer.singleShot(50, close_when_reviewing)

    QTimer.singleShot(50, close_when_reviewing)
    t0 = time.monotonic()
    rc = station_app.run_station(profile=station_env["profile"], source=station_env["line"])
    assert rc == 0 and seen["name"] == "000_good.png"
    assert time.monotonic() - t0 < 120


@pytest.mark.parametrize("n", [3])
def test_decision_bar_keys_without_login_do_nothing(qtbot, n) -> None:
    from inspector.detect.base import Region
    from inspector.ui.decision_bar import DecisionBar

    bar = DecisionBar()
    qtbot.addWidget(bar)
    region = Region(box=(1, 2, 3, 4), score=0.9, label="scratch", area_px=4, mask=np.ones((2, 2), bool))
    bar.show_result("x.png", "FAIL", 0.9, 0.5, [region], REASONS)
    assert not bar.press_accept() and not bar.press_reject()
    bar.set_operator("ann")
    accepted = []
    bar.accepted.connect(lambda: accepted.append(True))
    assert bar.press_reject() and bar.selected_reason() == "scratch"  # preselected from the top region
    assert bar.press_digit(n) and bar.selected_reason() == REASONS[n - 1]
    assert bar.press_escape() and bar.state == "ready"
    assert bar.press_accept() and bar.state == "confirm_accept" and not accepted
    assert bar.press_escape() and bar.state == "ready"
    assert bar.press_accept() and bar.press_accept() and accepted == [True]


def test_read_only_records_keep_the_decision_and_retry(qtbot, window, station_env, tmp_path) -> None:
    win = window
    line = tmp_path / "one"
    write_png(line / "a.png", plate(40))
    write_png(line / "b.png", plate(41))
    login(qtbot, win)
    load(qtbot, win, station_env["profile"])
    win.start_source("folder", str(line))
    wait_current(qtbot, win, "a.png")
    win.store._con.execute("PRAGMA query_only=ON")  # the database now refuses writes
    key(qtbot, win, Qt.Key.Key_A)
    assert "NOT SAVED" in win.decision.save_label.text()
    assert "NOT SAVED" in win.records_label.text()
    events = [win.decision.events.item(i).text() for i in range(win.decision.events.count())]
    assert any("read-only" in e for e in events)
    assert len(win.keeper.pending) == 1 and win._retry_timer.isActive()
    wait_current(qtbot, win, "b.png")  # the station carries on
    key(qtbot, win, Qt.Key.Key_A)
    assert len(win.keeper.pending) == 2
    win.store._con.execute("PRAGMA query_only=OFF")
    win._retry_pending()  # what the retry timer does every few seconds
    assert not win.keeper.pending and not win._retry_timer.isActive()
    rows = records(win)
    assert [Path(r.image_path).name for r in rows] == ["a.png", "b.png"]
    assert "saved" in win.decision.save_label.text()


def test_operator_and_settings_are_remembered_until_logout(qtbot, station_settings, qsettings, station_env) -> None:
    from inspector.ui.main_window import MainWindow

    win = MainWindow(settings=station_settings, qsettings=qsettings)
    qtbot.addWidget(win)
    login(qtbot, win, "carol")
    win.set_source("hot", str(station_env["line"]))
    win.view.opacity.setValue(70)
    win.close()
    again = MainWindow(settings=station_settings, qsettings=qsettings)
    qtbot.addWidget(again)
    assert again.decision.logged_in and again.identity.operator == "carol"
    assert again.source_kind_combo.currentData() == "hot"
    assert again.source_edit.text() == str(station_env["line"])
    assert again.view.opacity.value() == 70
    again.logout()
    assert not again.decision.logged_in and again.identity.operator is None
    again.close()


def test_camera_drop_is_reported_and_the_camera_reconnects(qtbot, window, station_env, tmp_path) -> None:
    import cv2

    video = tmp_path / "cam.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (72, 72))
    for i in range(5):
        writer.write(cv2.cvtColor(plate(60 + i), cv2.COLOR_RGB2BGR))
    writer.release()
    win = window
    win.hold_on_fail.setChecked(False)  # compressed frames may score FAIL; keep the view live
    load(qtbot, win, station_env["profile"])
    assert win.start_source("camera", str(video))  # a file behind a capture "drops" at its end

    def dropped_and_back() -> None:
        events = [win.decision.events.item(i).text() for i in range(win.decision.events.count())]
        assert any("connection lost" in e for e in events)
        assert win.review.live_key is not None and win.review.live_key > 6  # frames again after reconnecting

    qtbot.waitUntil(dropped_and_back, timeout=STEP_TIMEOUT_MS)
    assert win.review.current() is not None and win.review.current().ok


def test_image_on_screen_can_become_a_reference_shot(qtbot, window, station_env) -> None:
    win = window
    if not hasattr(win.engineer, "add_current_image"):
        pytest.skip("engineer tools not present in this build")
    load(qtbot, win, station_env["profile"])
    win.start_source("folder", str(station_env["line"]))
    wait_current(qtbot, win, "000_good.png")
    rel = win.add_current_to_references()
    assert rel and rel.startswith("references/")
    assert rel in win.engineer.editor.references.shots()
    assert (station_env["profile"] / rel).is_file()
    (station_env["profile"] / rel).unlink()  # the session's profile stays as it was (not saved)


@pytest.mark.slow
def test_demo_line_review_by_ground_truth(qtbot, window, station_env, tmp_path_factory) -> None:
    """The real demo line (one category, a few images) through the station, decided by an operator
    who follows the ground truth: ground-truth contours are shown, every decision is recorded."""
    import shutil

    from inspector.demo import CATEGORIES, REFERENCE_SHOTS, generate_demo_line
    from inspector.profile import ProductProfile, save_profile

    root = tmp_path_factory.mktemp("demo")
    line = generate_demo_line(root / "line", seed=0, categories=["pcb"], n_train=REFERENCE_SHOTS,
                              n_test_good=1, n_per_defect=1)
    spec = CATEGORIES["pcb"]
    folder = root / "demo_pcb"
    (folder / "references").mkdir(parents=True)
    shots = []
    for i in range(REFERENCE_SHOTS):  # as `inspector demo --write-profiles` builds product_profiles/demo_pcb
        shutil.copyfile(line / "pcb" / "train" / "good" / f"{i:03d}.png", folder / "references" / f"{i:03d}.png")
        shots.append(f"references/{i:03d}.png")
    save_profile(ProductProfile(name="demo_pcb", pipeline="variation", object=spec.object, reference_shots=shots,
                                reason_codes=list(spec.reasons), variation=dict(spec.variation)), folder)
    win = window
    login(qtbot, win, "dora")
    load(qtbot, win, folder)
    assert win.start_source("folder", str(line / "pcb" / "test"))
    expected = []
    for path in list(win.folder.paths):
        rel = path.relative_to(line / "pcb" / "test").as_posix()
        qtbot.waitUntil(lambda rel=rel: win.review.current() is not None
                        and win.display_name(win.review.current().frame) == rel
                        and win.decision.state == "ready", timeout=LOAD_TIMEOUT_MS)
        defect = path.parent.name
        assert bool(win.view.gt_items) == (defect != "good")  # white ground-truth contour when known
        if defect == "good":
            expected.append(("PASS", None))
            key(qtbot, win, Qt.Key.Key_A)
            if win.decision.state == "confirm_accept":
                key(qtbot, win, Qt.Key.Key_A)
        else:
            reason = next(r for r in spec.reasons if defect in r or r in defect)
            expected.append(("FAIL", reason))
            key(qtbot, win, Qt.Key.Key_R)
            key(qtbot, win, getattr(Qt.Key, f"Key_{spec.reasons.index(reason) + 1}"))
            key(qtbot, win, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: win.review.at_end(), timeout=STEP_TIMEOUT_MS)
    rows = records(win)
    assert [(r.operator_verdict, r.reason) for r in rows] == expected
    assert all(r.profile_name == "demo_pcb" and r.operator_id == "dora" for r in rows)
    check = SqliteRecordStore(win.settings.records_path)
    assert check.verify().ok
    check.close()
