"""Drive the real station window: log in, profile, folder review with the keyboard, records, failures."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QElapsedTimer, Qt, QTimer

from inspector.files import file_sha256
from inspector.imaging import write_png
from inspector.records import SqliteRecordStore, accounted, effective
from tests.support.sqlite_connect import KeptConnection
from tests.ui.conftest import REASONS, make_profile, plate
from tests.ui.station_support import (  # noqa: F401 - fixtures
    LOAD_TIMEOUT_MS,
    STEP_TIMEOUT_MS,
    events,
    key,
    load,
    login,
    make_window,
    records,
    users,
    users_file,
    wait_current,
)


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


@pytest.fixture
def window(qtbot, station_settings, qsettings, users):
    win = make_window(qtbot, station_settings, qsettings, users)
    win.show()
    qtbot.waitExposed(win)
    win.activateWindow()
    yield win
    win.close()
    assert not win.worker.is_running(), "closing the window must stop the worker thread"


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

    # 003 is corrupt: reported, recorded as NO-READ, and skipped
    wait_current(qtbot, win, "004_bad.png")
    assert any("003_corrupt.png" in e and "NO-READ" in e for e in events(win))
    # accepting a FAIL needs a second press
    key(qtbot, win, Qt.Key.Key_A)
    assert win.decision.state == "confirm_accept"
    assert len(effective(records(win))) == 3
    key(qtbot, win, Qt.Key.Key_A)
    qtbot.waitUntil(lambda: win.review.at_end(), timeout=STEP_TIMEOUT_MS)
    end = win.view.message_text
    assert "End of the 5 images" in end and "4 decided (3 PASS, 1 FAIL)" in end and "1 NO-READ" in end

    # correct the override: a correction row, the image is back for review
    key(qtbot, win, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    wait_current(qtbot, win, "004_bad.png")
    key(qtbot, win, Qt.Key.Key_R)
    key(qtbot, win, Qt.Key.Key_1)
    key(qtbot, win, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: win.review.at_end(), timeout=STEP_TIMEOUT_MS)
    longest = meter.stop()

    rows = records(win)
    assert [(r.kind, r.operator_verdict, r.auto_verdict, Path(r.image_path).name) for r in rows
            if r.kind != "no_read"] == [
        ("decision", "PASS", "PASS", "000_good.png"),
        ("decision", "FAIL", "FAIL", "001_bad.png"),
        ("decision", "PASS", "PASS", "002_good.png"),
        ("decision", "PASS", "FAIL", "004_bad.png"),
        ("correction", None, "FAIL", "004_bad.png"),
        ("decision", "FAIL", "FAIL", "004_bad.png"),
    ]
    no_read = [r for r in rows if r.kind == "no_read"]
    assert len(no_read) == 1 and no_read[0].image_path.endswith("003_corrupt.png") and no_read[0].reason
    decisions = [r for r in rows if r.kind != "no_read"]
    assert decisions[1].reason == REASONS[1] and decisions[1].note == "edge of plate"
    assert decisions[4].corrects_uid == decisions[3].uid
    assert sorted(Path(r.image_path).name for r in accounted(rows)) == [
        "000_good.png", "001_bad.png", "002_good.png", "003_corrupt.png", "004_bad.png"]
    assert rows[0].image_sha256 == file_sha256(station_env["line"] / "000_good.png")
    assert all(r.operator_id == "ann" and r.role == "operator" and r.station_id == "st-test"
               and r.profile_name == "plate" for r in rows)
    assert decisions[0].pipeline == "variation" and decisions[0].duration_s > 0
    check = SqliteRecordStore(win.settings.records_path)
    assert check.verify().ok
    check.close()
    assert "saved #7" in win.decision.save_label.text()
    assert "inspected 4" in win.decision.summary.text() and "NO-READ 1" in win.decision.summary.text()

    # overlays and image copies land in the archive (written in the background)
    win.session.flush_archive()
    assert Path(decisions[1].overlay_path).is_file()
    assert Path(decisions[1].archive_path).read_bytes() == (station_env["line"] / "001_bad.png").read_bytes()

    # records tab: table, counts, CSV export
    win.tabs.setCurrentWidget(win.records_view)
    view = win.records_view
    assert view.model.rowCount() == 7
    assert "<b>4</b> decisions" in view.counts_label.text()
    view.verdict.setCurrentText("FAIL")
    assert {r.operator_verdict for r in view.rows()} == {"FAIL"}
    view.verdict.setCurrentIndex(0)
    out = Path(win.settings.records_path).parent / "export.csv"
    assert view.export_to(out) == 7
    assert [r["kind"] for r in csv.DictReader(out.open())].count("correction") == 1
    assert view.verify()

    # the UI never froze while profiles loaded and images were inspected
    assert longest < 1000, f"event loop stalled for {longest} ms"


def test_missing_weights_are_explained_and_station_stays_usable(qtbot, window, station_env) -> None:
    win = window
    win.load_profile(station_env["weights"])
    qtbot.waitUntil(lambda: "not installed" in win.view.message_text, timeout=LOAD_TIMEOUT_MS)
    message = win.view.message_text  # the model store's own text, plus what to do
    assert "needs_weights" in message and "clip_vit_b16_plus_240" in message and "inspector models" in message
    assert "Engineer" in message or "variation" in message
    assert win.profile_info is None
    assert not win.start_source("folder", str(station_env["line"]))  # waits for a profile
    # bug 7: the reason stays on screen after Start (it used to become "Pick a product profile…")
    assert "not installed" in win.view.message_text and "starts when a product profile is loaded" in \
        win.view.message_text
    load(qtbot, win, station_env["profile"])  # the pending folder starts once a profile is ready
    login(qtbot, win, "bob")
    wait_current(qtbot, win, "000_good.png")
    assert win.decision.badge.text() == "PASS"


def test_bug7_working_profile_kept_every_missing_model_named_and_marked(qtbot, window, station_env,
                                                                       tmp_path) -> None:
    """Bug 7: a profile needing several missing models names them all; the working profile keeps
    running; the list marks the profiles whose weights are not installed."""
    win = window
    two = make_profile(tmp_path / "needs_two", name="needs_two", pipeline="saa")  # GroundingDINO + SAM
    login(qtbot, win)
    load(qtbot, win, station_env["profile"])
    assert win.start_source("folder", str(station_env["line"]))
    wait_current(qtbot, win, "000_good.png")
    working = win.profile_info
    win.load_profile(two)
    qtbot.waitUntil(lambda: "not installed" in win.view.message_text, timeout=LOAD_TIMEOUT_MS)
    message = win.view.message_text
    assert message.count("is not installed") >= 2, message  # every missing model, not only the first
    assert "Still running profile plate" in message
    assert win.profile_info is working and win.profile_combo.currentData() == str(station_env["profile"])
    # the part on screen still has its own verdict from the working profile, and can be decided
    key(qtbot, win, Qt.Key.Key_A)
    wait_current(qtbot, win, "001_bad.png")
    assert win.review.current().inspection.profile_name == "plate"
    # the profile list says which profiles need weights that are not installed
    qtbot.waitUntil(lambda: str(station_env["weights"]) in win.missing_weights, timeout=LOAD_TIMEOUT_MS)
    idx = win.profile_combo.findData(str(station_env["weights"]))
    assert "needs weights" in win.profile_combo.itemText(idx)
    assert "clip" in win.profile_combo.itemData(idx, Qt.ItemDataRole.ToolTipRole)
    assert "needs weights" not in win.profile_combo.itemText(win.profile_combo.findData(str(station_env["profile"])))


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
    assert any("b.png" in e and "simulated pipeline bug" in e for e in events(win))
    assert win.review.results[1].error and win.review.results[2].ok
    row = next(r for r in records(win) if r.kind == "no_read")
    assert row.image_path.endswith("b.png") and "simulated pipeline bug" in row.reason


def test_hot_folder_picks_up_a_new_file_and_ignores_existing_by_setting(qtbot, window, station_env,
                                                                         tmp_path) -> None:
    win = window
    hot = tmp_path / "hot"
    hot.mkdir()
    write_png(hot / "already_there.png", plate(20))
    login(qtbot, win)
    load(qtbot, win, station_env["profile"])
    win.hot_existing.setCurrentIndex(win.hot_existing.findData("ignore"))
    assert win.start_source("hot", str(hot))
    assert win.review.mode == "stream"
    assert any("1 file(s) already there: ignored" in e for e in events(win))  # said, not silent
    write_png(hot / "new_part.png", plate(21, defect=True))
    wait_current(qtbot, win, "new_part.png")
    assert win.decision.badge.text() == "FAIL"
    assert win.review.total == 1  # the file present at start was not inspected
    key(qtbot, win, Qt.Key.Key_R)
    key(qtbot, win, Qt.Key.Key_1)
    key(qtbot, win, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: len(records(win)) == 1, timeout=STEP_TIMEOUT_MS)
    assert records(win)[0].image_path.endswith("new_part.png")


def test_bug2_hot_folder_files_already_there_are_inspected_by_default(qtbot, window, station_env, tmp_path) -> None:
    """Bug 2: files already in the hot folder at Start were skipped silently; now the default inspects them."""
    win = window
    hot = tmp_path / "hot"
    hot.mkdir()
    write_png(hot / "a_first.png", plate(22))
    write_png(hot / "b_second.png", plate(23))
    login(qtbot, win)
    load(qtbot, win, station_env["profile"])
    assert win.hot_existing.currentData() == "inspect"
    assert win.start_source("hot", str(hot))
    assert any("2 file(s) already there: inspected" in e for e in events(win))
    wait_current(qtbot, win, "a_first.png")
    key(qtbot, win, Qt.Key.Key_A)
    wait_current(qtbot, win, "b_second.png")
    win.stop_source()  # b_second is on screen: NOT DECIDED
    kinds = {Path(r.image_path).name: r.kind for r in records(win)}
    assert kinds == {"a_first.png": "decision", "b_second.png": "not_decided"}
    # a restart of the hot folder does not inspect again what already has a record here
    write_png(hot / "c_third.png", plate(24))
    assert win.start_source("hot", str(hot))
    assert any("3 file(s) already there: inspected (2 already recorded here, not again)" in e for e in events(win))
    wait_current(qtbot, win, "c_third.png")
    assert win.review.total == 1


def test_bug2_every_part_gets_a_record_and_the_end_screen_counts_kinds(qtbot, window, station_env) -> None:
    """Bug 2: unreadable files, skipped parts and the part on screen at Stop all leave a row."""
    win = window
    login(qtbot, win)
    load(qtbot, win, station_env["profile"])
    win.start_source("folder", str(station_env["line"]))
    wait_current(qtbot, win, "000_good.png")
    key(qtbot, win, Qt.Key.Key_PageDown)  # skip 000 without deciding
    wait_current(qtbot, win, "001_bad.png")
    key(qtbot, win, Qt.Key.Key_Right)  # skip 001
    wait_current(qtbot, win, "002_good.png")
    key(qtbot, win, Qt.Key.Key_A)
    wait_current(qtbot, win, "004_bad.png")  # 003 is unreadable
    qtbot.waitUntil(lambda: any(r.kind == "no_read" for r in records(win)), timeout=STEP_TIMEOUT_MS)
    key(qtbot, win, Qt.Key.Key_F5, Qt.KeyboardModifier.ShiftModifier)  # Stop, 004 on screen
    assert win.review is None
    by_name = {Path(r.image_path).name: r for r in records(win)}
    assert {n: r.kind for n, r in by_name.items()} == {
        "000_good.png": "skipped", "001_bad.png": "skipped", "002_good.png": "decision",
        "003_corrupt.png": "no_read", "004_bad.png": "not_decided"}
    assert "on screen" in by_name["004_bad.png"].reason
    assert by_name["003_corrupt.png"].operator_verdict is None and by_name["003_corrupt.png"].reason
    s = win.session.summary()
    assert (s.passed, s.no_read, s.skipped, s.not_decided) == (1, 1, 2, 1)


def test_bug2_end_screen_counts_each_kind(qtbot, window, station_env) -> None:
    win = window
    login(qtbot, win)
    load(qtbot, win, station_env["profile"])
    win.start_source("folder", str(station_env["line"]))
    wait_current(qtbot, win, "000_good.png")
    key(qtbot, win, Qt.Key.Key_Right)  # skip 000
    for name in ("001_bad.png", "002_good.png", "004_bad.png"):
        wait_current(qtbot, win, name)
        key(qtbot, win, Qt.Key.Key_R)
        key(qtbot, win, Qt.Key.Key_1)
        key(qtbot, win, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: win.review.at_end(), timeout=STEP_TIMEOUT_MS)
    end = win.view.message_text
    assert "3 decided (0 PASS, 3 FAIL)" in end and "1 NO-READ" in end and "1 SKIPPED" in end
    assert "All 5 images reviewed" not in end


def test_bug3_no_verdict_beside_another_parts_image(qtbot, window, station_env, tmp_path) -> None:
    """Bug 3: after a source change or a profile change, and while inspecting, the view is cleared."""
    win = window
    login(qtbot, win)
    load(qtbot, win, station_env["profile"])
    win.start_source("folder", str(station_env["line"]))
    wait_current(qtbot, win, "000_good.png")
    assert win.view.image_item.image is not None and win.decision.badge.text() == "PASS"
    other = tmp_path / "other"
    write_png(other / "x.png", plate(50, defect=True))
    win.start_source("folder", str(other))  # a source change: nothing of 000 stays on screen
    assert win.review.current() is None
    assert win.view.image_item.image is None and win.decision.badge.text() in ("…", "—")
    assert "inspecting x.png" in win.view.message_text
    wait_current(qtbot, win, "x.png")
    assert win.decision.badge.text() == "FAIL"
    win.load_profile(station_env["profile"])  # a profile change: the part is inspected again

    def reinspecting() -> None:
        # while the part is inspected again nothing is shown; the old generation's verdict never is
        # (under load the busy state can pass between two polls: then the new result is on screen)
        assert win.profile_info.generation >= 2
        current = win.review.current()
        if current is None:
            assert win.view.image_item.image is None and win.decision.state == "busy"
        else:
            assert current.generation == win.profile_info.generation

    qtbot.waitUntil(reinspecting, timeout=LOAD_TIMEOUT_MS)
    wait_current(qtbot, win, "x.png")
    win.stop_source()
    assert win.view.image_item.image is None and win.decision.badge.text() == "—"


def test_bug4_reject_has_no_preselected_reason(qtbot) -> None:
    from inspector.detect.base import Region
    from inspector.ui.decision_bar import DecisionBar
    from inspector.users import User

    bar = DecisionBar()
    qtbot.addWidget(bar)
    region = Region(box=(1, 2, 3, 4), score=0.9, label="scratch", area_px=4, mask=np.ones((2, 2), bool))
    bar.show_result("x.png", "FAIL", 0.9, 0.5, [region], REASONS)
    assert not bar.press_accept() and not bar.press_reject()  # nobody logged in
    bar.set_operator(User("ann", "operator"))
    rejected = []
    bar.rejected.connect(lambda reason, note: rejected.append(reason))
    assert bar.press_reject() and bar.selected_reason() is None  # R: nothing preselected
    assert "scratch" in bar.reason_hint.text()  # the top region's label is a hint only
    assert bar.press_accept() and rejected == [] and "Pick a reason" in bar.prompt.text()  # R, Enter: nothing
    assert bar.press_digit(3) and bar.selected_reason() == REASONS[2]
    assert bar.press_accept() and rejected == [REASONS[2]]


def test_bug5_decided_part_shows_who_decided_and_any_decision_can_be_corrected(qtbot, window, station_env):
    """Bug 5: a decided part shows the operator's decision with who and when; not only the last
    decision can be corrected."""
    win = window
    login(qtbot, win)
    load(qtbot, win, station_env["profile"])
    win.start_source("folder", str(station_env["line"]))
    wait_current(qtbot, win, "000_good.png")
    key(qtbot, win, Qt.Key.Key_A)
    wait_current(qtbot, win, "001_bad.png")
    key(qtbot, win, Qt.Key.Key_A)
    key(qtbot, win, Qt.Key.Key_A)  # override: PASS on a FAIL proposal
    wait_current(qtbot, win, "002_good.png")
    key(qtbot, win, Qt.Key.Key_A)
    wait_current(qtbot, win, "004_bad.png")
    key(qtbot, win, Qt.Key.Key_Left)
    key(qtbot, win, Qt.Key.Key_Left)
    key(qtbot, win, Qt.Key.Key_Left)  # back to 001 (003 is in between)
    wait_current(qtbot, win, "001_bad.png")
    assert win.decision.state == "decided"
    assert win.decision.badge.text() == "PASS"  # the operator's decision, not the station's FAIL
    prompt = win.decision.prompt.text().replace("\u200b", "")
    assert "PASS by ann (operator) at" in prompt and "UTC" in prompt
    override = next(r for r in records(win) if r.kind == "decision" and r.image_path.endswith("001_bad.png"))
    key(qtbot, win, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)  # correct 001, not the last (002)
    wait_current(qtbot, win, "001_bad.png")
    assert win.decision.state == "ready"
    corr = records(win)[-1]
    assert corr.kind == "correction" and corr.corrects_uid == override.uid
    key(qtbot, win, Qt.Key.Key_R)
    key(qtbot, win, Qt.Key.Key_1)
    key(qtbot, win, Qt.Key.Key_Return)
    standing = {Path(r.image_path).name: r.operator_verdict for r in effective(records(win))}
    assert standing == {"000_good.png": "PASS", "001_bad.png": "FAIL", "002_good.png": "PASS"}


def test_bug6_video_frame_is_recorded_and_archived_as_itself(qtbot, window, station_env, tmp_path) -> None:
    """Bug 6: a decision on a video frame archives that frame (PNG, ``<video>#<frame>``) with its own
    sha256, not a copy of the whole video."""
    import cv2

    from inspector.files import array_sha256, file_sha256
    from inspector.imaging import read_image

    video = tmp_path / "line.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (72, 72))
    for i in range(20):
        writer.write(cv2.cvtColor(plate(70 + i), cv2.COLOR_RGB2BGR))
    writer.release()
    win = window
    login(qtbot, win)
    load(qtbot, win, station_env["profile"])
    assert win.start_source("video", str(video))
    qtbot.waitUntil(lambda: win.review.current() is not None and win.review.current().ok
                    and win.decision.state == "ready", timeout=STEP_TIMEOUT_MS)
    win.toggle_hold()  # hold the frame on screen
    shown = win.review.current()
    key(qtbot, win, Qt.Key.Key_A)
    if win.decision.state == "confirm_accept":
        key(qtbot, win, Qt.Key.Key_A)
    qtbot.waitUntil(lambda: any(r.kind == "decision" for r in records(win)), timeout=STEP_TIMEOUT_MS)
    rec = next(r for r in records(win) if r.kind == "decision")
    assert rec.image_path == f"{video}#{shown.frame.index}"
    assert rec.image_sha256 == array_sha256(shown.frame.image) != file_sha256(video)
    win.session.flush_archive()
    archived = Path(rec.archive_path)
    assert archived.name == f"{rec.uid}_line.avi#{shown.frame.index}.png"
    assert np.array_equal(read_image(archived), shown.frame.image)


def test_bug8_long_messages_wrap_and_every_screen_works_at_1024x700(qtbot, window, station_env) -> None:
    """Bug 8: a long message made the window 2,446 px wide; at 1024×700 fields and labels were cut."""
    win = window
    login(qtbot, win)
    load(qtbot, win, station_env["profile"])
    win.start_source("folder", str(station_env["line"]))
    wait_current(qtbot, win, "000_good.png")
    key(qtbot, win, Qt.Key.Key_A)
    wait_current(qtbot, win, "001_bad.png")  # a part with regions, a saved row, messages
    win.resize(1024, 700)
    qtbot.waitUntil(lambda: win.width() == 1024, timeout=5000)
    long_path = "/very/long/" + "sub_folder_" * 60 + "image.png"
    win.view.set_message(f"{long_path}: cannot read the file " * 3, error=True)
    win.decision.add_event(f"could not read {long_path}", "error")
    win.decision.set_save_status(f"not saved: {long_path}", False)
    win.decision.clear(long_path)
    qtbot.wait(50)
    assert win.minimumSizeHint().width() <= 1024 and win.minimumSizeHint().height() <= 700
    assert (win.width(), win.height()) == (1024, 700)
    for w in (win.source_edit,):
        assert w.width() >= 150, f"source field {w.width()} px wide"
    for w in (win.auto_advance, win.hold_on_fail, win.start_button, win.stop_button,
              win.view.heat_check, win.view.ref_check, win.view.gt_check):
        assert w.width() >= w.sizeHint().width(), f"{w.text()} is cut ({w.width()} < {w.sizeHint().width()})"
    bar = win.statusBar()
    for w in (win.device_label, win.queue_label, win.records_label):
        assert w.isVisible() and w.geometry().right() <= bar.width(), w.text()
    for i in range(win.tabs.count()):
        win.tabs.setTabEnabled(i, True)
        win.tabs.setCurrentIndex(i)
        qtbot.wait(20)
        assert (win.width(), win.height()) == (1024, 700), i
        assert win.minimumSizeHint().width() <= 1024 and win.minimumSizeHint().height() <= 700, i


def _contrast(fg: str, bg: str) -> float:
    def lum(hex_color: str) -> float:
        rgb = [int(hex_color[i:i + 2], 16) / 255 for i in (1, 3, 5)]
        lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

    a, b = sorted((lum(fg), lum(bg)), reverse=True)
    return (a + 0.05) / (b + 0.05)


def test_bug9_warning_and_error_text_is_readable(qtbot, window) -> None:
    """Bug 9: yellow/pink text on white; now every message level keeps WCAG AA contrast (4.5:1)."""
    win = window
    win.decision.add_event("a warning", "warning")
    win.decision.add_event("an error", "error")
    panel_bg = win.decision.events.palette().base().color().name()
    for row in (0, 1):
        item = win.decision.events.item(row)
        bg = item.background().color().name() if item.background().style() != Qt.BrushStyle.NoBrush else panel_bg
        assert _contrast(item.foreground().color().name(), bg) >= 4.5, item.text()
    import re

    from inspector.ui.decision_bar import PROMPT_STYLE

    fg, bg = re.search(r"color: (#\w{6}).*background: (#\w{6})", PROMPT_STYLE).groups()
    assert _contrast(fg, bg) >= 4.5


def test_users_and_roles(qtbot, window, station_env, users) -> None:
    """Operators cannot open the Engineer tab or add reference shots; engineers can; a wrong PIN
    is refused and logged; every record carries the user and the role."""
    win = window
    assert not win.decision.logged_in and not win.tabs.isTabEnabled(win.engineer_index)
    panel = win.decision.login
    qtbot.keyClicks(panel.name, "ann")
    qtbot.keyClick(panel.name, Qt.Key.Key_Return)
    qtbot.keyClicks(panel.secret, "0000")
    qtbot.keyClick(panel.secret, Qt.Key.Key_Return)
    assert not win.decision.logged_in and "Wrong name or password" in panel.error.text()
    assert "ann" in (users.path.with_name("logins.log")).read_text()
    panel.name.clear()
    login(qtbot, win, "ann")
    assert not win.tabs.isTabEnabled(win.engineer_index) and not win.add_reference_button.isVisible()
    load(qtbot, win, station_env["profile"])
    win.start_source("folder", str(station_env["line"]))
    wait_current(qtbot, win, "000_good.png")
    assert win.add_current_to_references() is None  # refused for an operator
    key(qtbot, win, Qt.Key.Key_A)
    win.logout()
    login(qtbot, win, "eve")
    assert win.tabs.isTabEnabled(win.engineer_index)
    assert win.add_reference_button.isVisible() == hasattr(win.engineer, "editor")
    rows = records(win)
    assert rows[0].operator_id == "ann" and rows[0].role == "operator"


def test_login_does_not_survive_a_restart(qtbot, station_settings, qsettings, station_env, users) -> None:
    win = make_window(qtbot, station_settings, qsettings, users)
    login(qtbot, win, "carol")
    win.set_source("hot", str(station_env["line"]))
    win.view.opacity.setValue(70)
    win.close()
    again = make_window(qtbot, station_settings, qsettings, users)
    assert not again.decision.logged_in and again.user is None  # log in again after a restart
    assert again.source_kind_combo.currentData() == "hot"  # the settings are remembered
    assert again.source_edit.text() == str(station_env["line"])
    assert again.view.opacity.value() == 70
    again.close()


def test_first_start_creates_the_admin_who_creates_users(qtbot, station_settings, qsettings, tmp_path) -> None:
    from inspector.users import UserStore

    store = UserStore(tmp_path / "fresh" / "users.json")
    win = make_window(qtbot, station_settings, qsettings, store)
    panel = win.decision.login
    assert panel.first_run and panel.repeat.isVisible() is False or panel.first_run
    panel.name.setText("boss")
    panel.secret.setText("4321")
    panel.repeat.setText("4321")
    qtbot.keyClick(panel.secret, Qt.Key.Key_Return)
    assert win.user is not None and win.user.role == "admin"
    from inspector.ui.identity import UsersDialog

    dialog = UsersDialog(store, win.user, win)
    dialog.name.setText("olga")
    dialog.role.setCurrentText("operator")
    dialog.secret.setText("1212")
    assert dialog.create() is not None and "olga" in dialog.list.item(1).text() + dialog.list.item(0).text()
    assert store.authenticate("olga", "1212").role == "operator"
    row = next(i for i in range(dialog.list.count()) if dialog.list.item(i).text().startswith("olga"))
    dialog.list.setCurrentRow(row)
    dialog.toggle_selected()
    assert store.disabled_names() == {"olga"} and "(disabled)" in dialog.list.item(row).text()
    dialog.close()
    win.close()


def test_shift_summary_and_report_at_logout(qtbot, window, station_env) -> None:
    win = window
    login(qtbot, win, "dora")
    load(qtbot, win, station_env["profile"])
    win.start_source("folder", str(station_env["line"]))
    wait_current(qtbot, win, "000_good.png")
    key(qtbot, win, Qt.Key.Key_A)
    wait_current(qtbot, win, "001_bad.png")
    key(qtbot, win, Qt.Key.Key_A)
    key(qtbot, win, Qt.Key.Key_A)  # an override
    wait_current(qtbot, win, "002_good.png")
    text = win.decision.summary.text()
    assert "PASS 2" in text and "FAIL 0" in text and "overrides 1" in text and "yield 100 %" in text
    assert [sq.toolTip() for sq in win.decision.summary.squares[:2]] == ["000_good.png: PASS", "001_bad.png: PASS"]
    summary = win.logout()
    folder = Path(win.settings.records_path).parent / "shift-reports"
    csvs, pdfs = list(folder.glob("shift-*dora*.csv")), list(folder.glob("shift-*dora*.pdf"))
    assert len(csvs) == 1 and len(pdfs) == 1
    rows = dict(csv.reader(csvs[0].open()))
    assert rows["pass"] == "2" and rows["overrides"] == "1" and rows["user"] == "dora" and rows["role"] == "operator"
    assert pdfs[0].read_bytes()[:5] == b"%PDF-" and pdfs[0].stat().st_size > 1000
    assert summary.not_decided >= 1  # 002 was on screen at logout


def test_keyboard_only_shift(qtbot, window, station_env) -> None:
    """Every action from the keyboard: help, source kind and target, start, toggles, zoom, stop;
    Enter accepts only when the decision panel owns it; closing with an undecided part asks."""
    win = window
    login(qtbot, win)
    load(qtbot, win, station_env["profile"])
    key(qtbot, win, Qt.Key.Key_F1)
    assert win.help.isVisible() and "Shift+F5" in win.help.label.text()
    qtbot.keyClick(win.help, Qt.Key.Key_Escape)
    assert not win.help.isVisible()
    key(qtbot, win, Qt.Key.Key_O, Qt.KeyboardModifier.ControlModifier)
    assert win.source_edit.hasFocus() or QApplicationFocus(win) is win.source_edit
    win.source_edit.setText(str(station_env["line"]))
    win.source_kind_combo.setCurrentIndex(win.source_kind_combo.findData("folder"))
    qtbot.keyClick(win.source_edit, Qt.Key.Key_Return)  # Enter in the source field starts it
    wait_current(qtbot, win, "000_good.png")
    before = win.auto_advance.isChecked()
    key(qtbot, win, Qt.Key.Key_A, Qt.KeyboardModifier.AltModifier)
    assert win.auto_advance.isChecked() != before
    key(qtbot, win, Qt.Key.Key_A, Qt.KeyboardModifier.AltModifier)
    rect = win.view.visible_rect()
    key(qtbot, win, Qt.Key.Key_Plus)
    assert win.view.visible_rect().width() < rect.width()
    key(qtbot, win, Qt.Key.Key_Minus)
    key(qtbot, win, Qt.Key.Key_F)
    for k, box in ((Qt.Key.Key_H, win.view.heat_check), (Qt.Key.Key_C, win.view.contour_check),
                   (Qt.Key.Key_X, win.view.box_check), (Qt.Key.Key_G, win.view.gt_check),
                   (Qt.Key.Key_B, win.view.ref_check)):
        before_toggle = box.isChecked()
        key(qtbot, win, k)
        assert box.isChecked() != before_toggle, box.text()
        key(qtbot, win, k)
    opacity = win.view.opacity.value()
    key(qtbot, win, Qt.Key.Key_BracketRight)
    assert win.view.opacity.value() == opacity + 10
    # Enter while the profile list has the focus does not accept the part
    win.profile_combo.setFocus()
    win._update_shortcuts(win.profile_combo)
    qtbot.keyClick(win.profile_combo, Qt.Key.Key_Return)
    assert not [r for r in records(win) if r.kind == "decision"]
    win.view.graphics.setFocus()
    key(qtbot, win, Qt.Key.Key_Return)  # the image has the focus: Enter accepts
    qtbot.waitUntil(lambda: len([r for r in records(win) if r.kind == "decision"]) == 1, timeout=STEP_TIMEOUT_MS)
    wait_current(qtbot, win, "001_bad.png")
    win.source_edit.setFocus()
    win._update_shortcuts(win.source_edit)
    qtbot.keyClick(win.source_edit, Qt.Key.Key_Question, Qt.KeyboardModifier.ShiftModifier)
    assert not win.help.isVisible() and win.source_edit.text().endswith("?")  # "?" types into a field
    win.view.graphics.setFocus()
    win.close()  # a part on screen is not decided: the station asks first
    assert win.asked and "not decided" in win.asked[0][1]


def QApplicationFocus(win):  # noqa: N802 - helper
    from PySide6.QtWidgets import QApplication

    return QApplication.focusWidget()


def test_regions_are_labelled_and_a_click_zooms_to_one(qtbot, window, station_env) -> None:
    win = window
    login(qtbot, win)
    load(qtbot, win, station_env["profile"])
    win.start_source("folder", str(station_env["line"]))
    wait_current(qtbot, win, "000_good.png")
    key(qtbot, win, Qt.Key.Key_A)
    wait_current(qtbot, win, "001_bad.png")
    region = win.review.current().inspection.regions[0]
    x0, y0, x1, y1 = region.box
    text = win.decision.regions.item(0).text()
    assert f"centre ({(x0 + x1) // 2}, {(y0 + y1) // 2})" in text and f"{x1 - x0}×{y1 - y0} px" in text
    assert region.label in text and f"{region.score:.2f}" in text
    assert f"({(x0 + x1) // 2}, {(y0 + y1) // 2})" in win.view.label_items[0].textItem.toPlainText()
    item = win.decision.regions.item(0)
    rect = win.decision.regions.visualItemRect(item)
    qtbot.mouseClick(win.decision.regions.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    shown = win.view.visible_rect()
    w, h = x1 - x0, y1 - y0  # the region framed with half its size around it (aspect kept)
    assert shown.contains(x0, y0) and shown.contains(x1, y1)
    assert abs(shown.width() - 2 * w) < 1 or abs(shown.height() - 2 * h) < 1, (shown, region.box)


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
            seen["session"] = wins[0].session
            wins[0].close()
            return
        QTimer.singleShot(50, close_when_reviewing)

    QTimer.singleShot(50, close_when_reviewing)
    t0 = time.monotonic()
    rc = station_app.run_station(profile=station_env["profile"], source=station_env["line"])
    assert rc == 0 and seen["name"] == "000_good.png"
    assert seen["session"].user is None  # nobody logged in: the window is a view of the app's session
    assert time.monotonic() - t0 < 120


@pytest.fixture
def kept() -> KeptConnection:
    """The records store's own connection (its ``connect`` factory), for faults SQLite keeps per connection."""
    return KeptConnection()


@pytest.fixture
def kept_window(qtbot, station_settings, qsettings, users, kept: KeptConnection):
    """The station window with its records store opened through ``kept``."""
    store = SqliteRecordStore(station_settings.records_path, connect=kept)
    win = make_window(qtbot, station_settings, qsettings, users, store=store)
    win.show()
    qtbot.waitExposed(win)
    win.activateWindow()
    yield win
    win.close()
    assert not win.worker.is_running(), "closing the window must stop the worker thread"


def test_read_only_records_keep_the_decision_and_retry(qtbot, kept_window, kept: KeptConnection, station_env,
                                                       tmp_path) -> None:
    win = kept_window
    line = tmp_path / "one"
    write_png(line / "a.png", plate(40))
    write_png(line / "b.png", plate(41))
    login(qtbot, win)
    load(qtbot, win, station_env["profile"])
    win.start_source("folder", str(line))
    wait_current(qtbot, win, "a.png")
    kept.con.execute("PRAGMA query_only=ON")  # the database now refuses writes
    key(qtbot, win, Qt.Key.Key_A)
    assert "NOT SAVED" in win.decision.save_label.text()
    assert "NOT SAVED" in win.records_label.text()
    assert any("read-only" in e or "readonly" in e.lower() for e in events(win))
    assert len(win.keeper.pending) == 1 and win._retry_timer.isActive()
    wait_current(qtbot, win, "b.png")  # the station carries on
    key(qtbot, win, Qt.Key.Key_A)
    assert len(win.keeper.pending) == 2
    kept.con.execute("PRAGMA query_only=OFF")
    win._retry_pending()  # what the retry timer does every few seconds
    assert not win.keeper.pending and not win._retry_timer.isActive()
    rows = records(win)
    assert [Path(r.image_path).name for r in rows] == ["a.png", "b.png"]
    assert "saved" in win.decision.save_label.text()


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
        assert any("connection lost" in e for e in events(win))
        assert win.review.live_key is not None and win.review.live_key > 6  # frames again after reconnecting

    qtbot.waitUntil(dropped_and_back, timeout=STEP_TIMEOUT_MS)
    assert win.review.current() is not None and win.review.current().ok


def test_bug1_reference_shot_goes_to_the_running_profile(qtbot, window, station_env, tmp_path) -> None:
    """Bug 1: with another profile open in the Engineer tab, "+ Reference shot" on a FAIL image
    went to that profile without a warning, and Revert left the file on disk."""
    win = window
    if not hasattr(win.engineer, "editor"):
        pytest.skip("engineer tools not present in this build")
    login(qtbot, win, "eve")
    load(qtbot, win, station_env["profile"])
    other = make_profile(tmp_path / "other", name="other")
    win.engineer.open_profile(other)  # the engineer is editing another profile
    win.start_source("folder", str(station_env["line"]))
    wait_current(qtbot, win, "000_good.png")
    key(qtbot, win, Qt.Key.Key_A)
    wait_current(qtbot, win, "001_bad.png")  # a FAIL image
    before_other = set((other / "references").iterdir())
    win.asked.clear()
    win.ask = lambda title, text: (win.asked.append((title, text)), False)[1]  # the engineer says no
    assert win.add_current_to_references() is None and "FAIL" in win.asked[0][1]
    win.ask = lambda title, text: (win.asked.append((title, text)), True)[1]
    rel = win.add_current_to_references()
    assert rel and rel.startswith("references/")
    assert (station_env["profile"] / rel).is_file()  # in the running profile ...
    assert set((other / "references").iterdir()) == before_other  # ... not the edited one
    editor = win.engineer.editor
    assert Path(editor.profile.folder) == station_env["profile"] and rel in editor.references.shots()
    editor.revert()
    assert not (station_env["profile"] / rel).exists(), "Revert removes the shot it added"
    assert rel not in editor.references.shots()


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
            if win.decision.state == "confirm_accept":  # a false FAIL: the operator passes it
                key(qtbot, win, Qt.Key.Key_A)
        else:
            reason = next(r for r in spec.reasons if defect in r or r in defect)
            expected.append(("FAIL", reason))
            key(qtbot, win, Qt.Key.Key_R)
            key(qtbot, win, getattr(Qt.Key, f"Key_{spec.reasons.index(reason) + 1}"))
            key(qtbot, win, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: win.review.at_end(), timeout=STEP_TIMEOUT_MS)
    rows = records(win)
    assert [(r.operator_verdict, r.reason) for r in rows if r.kind == "decision"] == expected
    assert all(r.kind == "decision" for r in rows)  # every part decided: no other rows
    assert all(r.profile_name == "demo_pcb" and r.operator_id == "dora" and r.role == "operator" for r in rows)
    check = SqliteRecordStore(win.settings.records_path)
    assert check.verify().ok
    check.close()


def test_records_database_down_at_start_decisions_go_to_the_journal(qtbot, station_settings, qsettings, users,
                                                                   station_env, tmp_path) -> None:
    bad = tmp_path / "not_a_db"
    bad.mkdir()  # a folder where the database file should be: it cannot be opened
    settings = station_settings.model_copy(update={"records_path": bad, "records_journal": tmp_path / "j.journal"})
    win = make_window(qtbot, settings, qsettings, users)
    win.show()
    qtbot.waitExposed(win)
    assert win.store is None and "journal" in win.decision.save_label.text()
    login(qtbot, win)
    load(qtbot, win, station_env["profile"])
    win.start_source("folder", str(station_env["line"]))
    wait_current(qtbot, win, "000_good.png")
    key(qtbot, win, Qt.Key.Key_A)
    assert len(win.keeper.pending) == 1 and "NOT SAVED in the database" in win.decision.save_label.text()
    import json

    journal = [json.loads(line)["record"] for line in (tmp_path / "j.journal").read_text().splitlines()]
    assert [(r["kind"], Path(r["image_path"]).name) for r in journal] == [("decision", "000_good.png")]  # durable
    win.close()


def test_status_bar_timing_puts_the_total_first() -> None:
    from inspector.ui.main_window import format_timings

    assert format_timings({"align": 0.0604, "features": 0.0896, "finish": 0.002}, 0.185) == \
        "185 ms: align 60 · features 90 · finish 2"
    assert format_timings({}, 0.0123) == "12 ms"
