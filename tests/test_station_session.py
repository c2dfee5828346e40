"""The shift without Qt: decide, correct any decision, every part accounted for, counters, archive.

Parts are real inspections: a weight-free ``variation`` profile on 48×48 synthetic plates (a dark
spot makes a FAIL), so each call takes milliseconds on a shared CPU.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from inspector.files import file_sha256
from inspector.imaging import write_png
from inspector.inspection import Inspector
from inspector.models.hub import ModelHub
from inspector.profile import ProductProfile, load_profile, save_profile
from inspector.records import RecordKeeper, SqliteRecordStore, accounted, effective
from inspector.sources import Frame, read_frame
from inspector.station import ProfileStamp, Review, Session, StationResult
from inspector.station.references import ReferenceMatcher
from inspector.station.report import report_csv
from inspector.users import User

SIZE = 48
ANN = User("ann", "operator")
EVE = User("eve", "engineer")


def plate(seed: int, defect: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    base = 140 + 12 * np.sin(xx / 2.5) + rng.normal(0, 2, (SIZE, SIZE))
    img = np.stack([base, base * 0.95, base * 0.85], axis=-1)
    if defect:
        cv2.circle(img, (30, 15), 5, (20, 20, 20), -1)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def inspector(tmp_path_factory: pytest.TempPathFactory) -> Inspector:
    folder = tmp_path_factory.mktemp("profile") / "plate"
    shots = []
    for i in range(3):
        write_png(folder / "references" / f"r{i}.png", plate(100 + i))
        shots.append(f"references/r{i}.png")
    p = ProductProfile(name="plate", pipeline="variation", object="plate", reference_shots=shots,
                       reason_codes=["spot", "scratch"])
    p.variation.working_size = SIZE
    p.variation.alignment = "none"
    p.variation.memory = "global"
    p.variation.pyramid_levels = 2
    p.variation.photometric = False
    save_profile(p, folder)
    ins = Inspector(load_profile(folder), ModelHub(device="cpu", precision="fp32"))
    ins.prepare()
    return ins


@pytest.fixture
def line(tmp_path: Path) -> Path:
    folder = tmp_path / "line"
    write_png(folder / "0_good.png", plate(1))
    write_png(folder / "1_bad.png", plate(2, defect=True))
    write_png(folder / "2_good.png", plate(3))
    (folder / "3_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 30)
    write_png(folder / "4_good.png", plate(4))
    return folder


@pytest.fixture
def session(tmp_path: Path, inspector: Inspector):
    store = SqliteRecordStore(tmp_path / "records.sqlite")
    s = Session(RecordKeeper(store), "st-1", tmp_path / "archive", archive_images=True)
    p = inspector.profile
    s.set_profile(ProfileStamp(p.name, p.version, p.content_hash(), p.pipeline), p.decision.image_threshold, 1,
                  list(p.reason_codes))
    yield s
    s.close()
    store.close()


def result(inspector: Inspector, path: Path, key: int) -> StationResult:
    frame = read_frame(path, "folder:line", key)
    res = StationResult(frame=frame, key=key, generation=1)
    if not frame.ok:
        res.error = frame.error
        return res
    res.inspection = inspector.inspect(frame.image, path, file_sha256(path))
    return res


def feed_folder(session: Session, inspector: Inspector, line: Path) -> list[Path]:
    paths = sorted(line.iterdir())
    session.start(Review("folder", total=len(paths), lookahead=len(paths)))
    for key in session.review.wanted():
        session.receive(result(inspector, paths[key], key))
    return paths


def stored(session: Session) -> list:
    return session.keeper.store.query()


def test_every_part_is_accounted_for_when_the_source_stops(session, inspector, line) -> None:
    session.login(ANN)
    feed_folder(session, inspector, line)
    assert session.settle(auto_skip=True).frame.path.name == "0_good.png"
    session.decide("PASS")
    assert session.review.current().frame.path.name == "1_bad.png"
    assert session.review.step(1)  # PgDn past the FAIL without deciding: SKIPPED
    assert session.review.current().frame.path.name == "2_good.png"
    session.stop("the source stopped")  # 2 is on screen, 4 was inspected but never shown

    rows = stored(session)
    by_name = {Path(r.image_path).name: r for r in accounted(rows)}
    assert {n: r.kind for n, r in by_name.items()} == {
        "0_good.png": "decision", "1_bad.png": "skipped", "2_good.png": "not_decided",
        "3_corrupt.png": "no_read", "4_good.png": "not_decided"}
    assert "on screen" in by_name["2_good.png"].reason and "not shown" in by_name["4_good.png"].reason
    assert by_name["3_corrupt.png"].reason and "3_corrupt.png" in by_name["3_corrupt.png"].reason
    assert by_name["1_bad.png"].auto_verdict == "FAIL" and by_name["1_bad.png"].operator_verdict is None
    assert all(r.operator_id == "ann" and r.role == "operator" and r.station_id == "st-1" for r in rows)
    assert session.keeper.store.verify().ok
    s = session.summary()
    assert (s.inspected, s.passed, s.failed, s.no_read, s.skipped, s.not_decided) == (4, 1, 0, 1, 1, 2)


def test_no_read_waits_for_a_login_and_is_written_once(session, inspector, line) -> None:
    paths = feed_folder(session, inspector, line)
    assert stored(session) == []  # nobody logged in yet
    session.login(ANN)
    assert [r.kind for r in stored(session)] == ["no_read"]
    session.receive(result(inspector, paths[3], 3))  # the same unreadable file again (profile reload)
    assert [r.kind for r in stored(session)] == ["no_read"]


def test_any_decision_of_the_shift_can_be_corrected(session, inspector, line) -> None:
    session.login(ANN)
    feed_folder(session, inspector, line)
    session.settle(auto_skip=True)
    first = session.decide("PASS").record  # 0
    session.decide("FAIL", "spot")  # 1
    session.decide("PASS")  # 2
    assert session.settle(auto_skip=True).frame.path.name == "4_good.png"  # 3 is a NO-READ
    session.decide("PASS")
    assert session.review.at_end()
    with pytest.raises(ValueError, match="reason"):
        session.review.seek_key(0)
        session.correct()
        session.decide("FAIL")  # a FAIL needs one of the profile's reasons
    corr = next(r for r in stored(session) if r.kind == "correction")
    assert corr.corrects_uid == first.uid and corr.operator_id == "ann" and corr.role == "operator"
    assert session.review.current_key() == 0 and 0 not in session.review.decided
    session.decide("FAIL", "scratch", "seen on the edge")
    rows = stored(session)
    standing = {Path(r.image_path).name: (r.operator_verdict, r.reason) for r in effective(rows)}
    assert standing == {"0_good.png": ("FAIL", "scratch"), "1_bad.png": ("FAIL", "spot"),
                        "2_good.png": ("PASS", None), "4_good.png": ("PASS", None)}
    s = session.summary()
    assert (s.passed, s.failed, s.corrections, s.overrides) == (2, 2, 1, 1)  # 0 was PASS by the station
    assert s.yield_pct == pytest.approx(50.0)
    assert [v for _, v in s.recent] == ["NO-READ", "FAIL", "PASS", "PASS", "FAIL"]


def test_correct_without_a_part_on_screen_voids_the_last_decision(session, inspector, line) -> None:
    session.login(ANN)
    feed_folder(session, inspector, line)
    session.settle(auto_skip=True)
    session.decide("PASS")
    second = session.decide("FAIL", "spot").record
    session.review.step(1)  # on 2 (undecided): Ctrl+Z voids the last decision, 1
    assert session.correct().record.corrects_uid == second.uid
    assert session.review.current_key() == 1


def test_decided_part_tells_who_decided_what(session, inspector, line) -> None:
    from inspector.station import describe_decision

    session.login(EVE)
    feed_folder(session, inspector, line)
    session.settle(auto_skip=True)
    session.decide("FAIL", "scratch", advance=False)
    rec = session.decision_of(0)
    assert rec is not None and rec.operator_verdict == "FAIL"
    text = describe_decision(rec)
    assert text.startswith("FAIL (scratch) by eve (engineer) at ") and rec.timestamp[11:19] in text


def test_logout_closes_the_shift_with_its_report(session, inspector, line) -> None:
    session.login(ANN)
    feed_folder(session, inspector, line)
    session.settle(auto_skip=True)
    session.decide("PASS")
    summary = session.logout()
    assert session.user is None and session.review is None
    assert summary.ended and summary.passed == 1 and summary.not_decided == 3 and summary.skipped == 0
    csv_text = report_csv(summary)
    assert "pass,1" in csv_text and "no_read,1" in csv_text and "yield_pct,100.0" in csv_text


def test_archive_keeps_the_image_and_the_overlay(session, inspector, line) -> None:
    session.login(ANN)
    feed_folder(session, inspector, line)
    session.settle(auto_skip=True)
    rec = session.decide("FAIL", "spot", advance=False).record
    session.flush_archive()
    assert Path(rec.archive_path).read_bytes() == (line / "0_good.png").read_bytes()
    assert Path(rec.overlay_path).is_file()


def test_video_frame_is_archived_as_itself(session, inspector, tmp_path) -> None:
    """A frame of a video is named <video>#<frame>, hashed by its pixels and archived as a PNG."""
    from inspector.files import array_sha256
    from inspector.imaging import read_image
    from inspector.station.result import part_path

    video = tmp_path / "line.avi"
    video.write_bytes(b"not decoded here: the frame below is what the source gave")
    image = plate(7)
    frame = Frame(image, "video:line.avi", time.time(), video, 12)
    res = StationResult(frame=frame, key=1, generation=1, live=True)
    res.inspection = inspector.inspect(image, part_path(frame), array_sha256(image))
    session.login(ANN)
    session.start(Review("live"))
    session.receive(res)
    rec = session.decide("PASS").record
    session.flush_archive()
    assert rec.image_path == f"{video}#12" and rec.image_sha256 == array_sha256(image)
    assert Path(rec.archive_path).name == f"{rec.uid}_line.avi#12.png"
    assert np.array_equal(read_image(rec.archive_path), image)


def test_live_camera_only_the_held_frame_is_a_part(session, inspector, line) -> None:
    session.login(ANN)
    session.start(Review("live", hold_on_fail=True))
    good = result(inspector, line / "0_good.png", 1)
    bad = result(inspector, line / "1_bad.png", 2)
    assert session.receive(good) == "current"
    assert session.receive(bad) == "current" and session.review.hold
    session.stop("the source stopped")
    assert [(Path(r.image_path).name, r.kind) for r in stored(session)] == [("1_bad.png", "not_decided")]


def test_nearest_reference_is_the_most_similar_shot(inspector) -> None:
    matcher = ReferenceMatcher.from_profile(inspector.profile)
    assert len(matcher.paths) == 3
    path, img = matcher.nearest(plate(101))  # shot r1 was made from seed 101
    assert path is not None and path.name == "r1.png" and img.shape == (SIZE, SIZE, 3)
    assert ReferenceMatcher().nearest(plate(1)) == (None, None)


def test_station_package_does_not_import_qt() -> None:
    import subprocess

    code = ("import sys, inspector.station, inspector.users; "
            "assert not [m for m in sys.modules if m.startswith(('PySide6', 'pyqtgraph', 'inspector.ui'))]")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_record_is_built_in_exactly_one_place() -> None:
    """Every row the station writes comes from inspector/station/record.py (no second builder in the UI)."""
    root = Path(__file__).resolve().parents[1] / "inspector"
    builders = sorted(str(p.relative_to(root)) for p in [*root.glob("station/*.py"), *root.glob("ui/*.py")]
                      if "InspectionRecord(" in p.read_text(encoding="utf-8"))
    assert builders == ["station/record.py"]


def test_a_skipped_part_is_recorded_even_after_a_profile_change_dropped_its_result(session, inspector, line):
    session.login(ANN)
    feed_folder(session, inspector, line)
    session.settle(auto_skip=True)
    session.review.step(1)  # 0 skipped
    session.review.forget_results()  # a new profile: results are requested again
    session.stop("the source stopped")
    rows = {Path(r.image_path).name: r.kind for r in stored(session)}
    assert rows["0_good.png"] == "skipped" and rows["1_bad.png"] == "not_decided" and len(rows) == 5
