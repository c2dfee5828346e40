"""Frame sources: folders, hot folders (no half-written reads), cameras (reconnect), video, GenICam."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from inspector.imaging import write_png
from inspector.sources import (
    CameraSource,
    FolderSource,
    FrameGrabber,
    HotFolderSource,
    Source,
    SourceError,
    VideoFileSource,
    ground_truth_path,
    open_source,
    read_ground_truth,
)


def _img(value: int, h: int = 24, w: int = 32) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = value
    img[..., 2] = 255 - value
    return img


def test_folder_sorted_with_next_previous_seek_and_bad_files(tmp_path: Path) -> None:
    for i in (3, 1, 2):
        write_png(tmp_path / f"img_{i}.png", _img(i * 10))
    (tmp_path / "img_0.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")  # corrupt
    (tmp_path / "notes.txt").write_text("not an image")
    src = FolderSource(tmp_path)
    assert [p.name for p in src.paths] == ["img_0.png", "img_1.png", "img_2.png", "img_3.png"]
    frames = list(src)
    assert [f.index for f in frames] == [0, 1, 2, 3]
    assert frames[0].error is not None and "img_0.png" in frames[0].error and frames[0].image is None
    assert all(f.ok for f in frames[1:])
    assert frames[2].image[0, 0, 0] == 20  # RGB order kept
    src.seek(2)
    assert src.next().index == 2
    assert src.next().index == 3
    assert src.next() is None
    src.seek(3)
    src.next()
    assert src.previous().index == 2
    assert src.read(1).path.name == "img_1.png"
    with pytest.raises(IndexError):
        src.read(9)


def test_folder_recurses_into_mvtec_test_and_finds_ground_truth(tmp_path: Path) -> None:
    cat = tmp_path / "washer"
    write_png(cat / "test" / "good" / "000.png", _img(1))
    write_png(cat / "test" / "scratch" / "000.png", _img(2))
    mask = np.zeros((24, 32), np.uint8)
    mask[5:9, 10:20] = 255
    write_png(cat / "ground_truth" / "scratch" / "000_mask.png", mask)
    src = FolderSource(cat / "test")
    assert [p.relative_to(cat / "test").as_posix() for p in src.paths] == ["good/000.png", "scratch/000.png"]
    assert ground_truth_path(src.paths[0]) is None
    assert ground_truth_path(src.paths[1]) == cat / "ground_truth" / "scratch" / "000_mask.png"
    gt = read_ground_truth(src.paths[1], (48, 64))  # resized to the image shape
    assert gt.shape == (48, 64) and gt[12, 30] and not gt[0, 0]
    # whole category: masks are never listed as images
    assert all("ground_truth" not in p.parts for p in FolderSource(cat, recursive=True).paths)


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="folder not found"):
        FolderSource(tmp_path / "nope")
    with pytest.raises(SourceError, match="unknown source kind"):
        open_source("scanner", "x")


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_hot_folder_waits_for_complete_stable_files(tmp_path: Path) -> None:
    write_png(tmp_path / "old.png", _img(5))
    clock = _Clock()
    hot = HotFolderSource(tmp_path, settle_s=0.5, give_up_s=5.0, clock=clock)
    assert hot.poll() == []  # existing file skipped
    full = cv2.imencode(".png", _img(9))[1].tobytes()
    target = tmp_path / "new.png"
    target.write_bytes(full[: len(full) // 2])  # copy in progress
    assert hot.poll() == []
    clock.t = 1.0
    assert hot.poll() == []  # stable but does not decode yet: keep waiting
    with open(target, "ab") as fh:  # the copy finishes
        fh.write(full[len(full) // 2 :])
    clock.t = 1.2
    assert hot.poll() == []  # changed: settle again
    clock.t = 1.5
    assert hot.poll() == []
    clock.t = 1.8
    queued = hot.poll()
    assert [f.path.name for f in queued] == ["new.png"] and queued[0].deferred and queued[0].image is None
    frames = [f.resolve() for f in queued]  # decoded when the consumer takes it
    assert frames[0].ok and not frames[0].deferred
    assert frames[0].image[0, 0, 2] == 9  # written as BGR by cv2, read back as RGB
    assert hot.poll() == []  # each file once
    # a file that never becomes readable is reported after give_up_s, as an error frame
    (tmp_path / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n junk")
    hot.poll()
    clock.t = 3.0
    assert hot.poll() == []
    clock.t = 9.0
    bad = hot.poll()
    assert len(bad) == 1 and bad[0].error and "junk.png" in bad[0].error


def test_hot_folder_iterates_in_a_thread_and_closes(tmp_path: Path) -> None:
    hot = HotFolderSource(tmp_path, poll_s=0.02, settle_s=0.05)
    got = []
    grabber = FrameGrabber(hot, on_frame=lambda: None).start()
    assert grabber.keep_all
    write_png(tmp_path / "a.png", _img(1))
    write_png(tmp_path / "b.png", _img(2))
    deadline = time.monotonic() + 5
    while len(got) < 2 and time.monotonic() < deadline:
        f = grabber.take()
        if f is not None:
            got.append(f)
        time.sleep(0.01)
    grabber.stop()
    assert sorted(f.path.name for f in got) == ["a.png", "b.png"]
    assert grabber.finished.is_set() and grabber.dropped == 0


def _write_video(path: Path, n: int = 12, fps: float = 50.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (64, 48))
    assert writer.isOpened()
    for i in range(n):
        frame = np.full((48, 64, 3), 0, np.uint8)
        frame[:, : 4 + 4 * i] = (0, 0, 255)  # red bar (BGR) growing with the frame number
        writer.write(frame)
    writer.release()
    return path


def test_video_file_source_reads_all_frames_rgb(tmp_path: Path) -> None:
    video = _write_video(tmp_path / "line.avi")
    frames = list(VideoFileSource(video, realtime=False))
    assert len(frames) == 12 and all(f.ok for f in frames)
    assert frames[0].image.shape == (48, 64, 3)
    assert frames[5].image[24, 2, 0] > 200 and frames[5].image[24, 2, 2] < 60  # red in RGB


def test_camera_reconnects_after_drop_with_backoff(tmp_path: Path) -> None:
    video = _write_video(tmp_path / "cam.avi", n=3)
    cam = CameraSource(str(video), backoff=0.01, max_backoff=0.02)  # a file: it "drops" at its end
    frames = []
    for f in cam:
        frames.append(f)
        if len(frames) >= 8:
            cam.close()
    oks = [f.ok for f in frames]
    assert oks[:4] == [True, True, True, False]  # three frames, then the drop is reported
    assert "connection lost" in frames[3].error
    assert oks[4:7] == [True, True, True]  # reconnected
    assert cam.reconnects >= 1


def test_camera_that_cannot_open_retries_then_works() -> None:
    attempts = []

    class FakeCap:
        def __init__(self, ok: bool) -> None:
            self.ok = ok

        def isOpened(self) -> bool:  # noqa: N802 - OpenCV API
            return self.ok

        def read(self):
            return True, np.zeros((4, 4, 3), np.uint8)

        def release(self) -> None:
            pass

    def opener(target):
        attempts.append(target)
        return FakeCap(ok=len(attempts) >= 3)

    cam = CameraSource("0", backoff=0.001, opener=opener)
    it = iter(cam)
    first = [next(it) for _ in range(3)]
    cam.close()
    assert attempts[0] == 0  # "0" means device index 0
    assert [f.ok for f in first] == [False, False, True]
    assert "cannot open" in first[0].error


class _Counter(Source):
    live = True

    def __init__(self, n: int) -> None:
        super().__init__("counter")
        self.n = n

    def __iter__(self):
        from inspector.sources import Frame

        for i in range(self.n):
            if self.closed:
                return
            yield Frame(np.zeros((2, 2, 3), np.uint8), self.source_id, time.time(), None, i)


def test_grabber_latest_wins_counts_dropped() -> None:
    wake = threading.Event()
    g = FrameGrabber(_Counter(200), on_frame=wake.set).start()
    assert not g.keep_all
    g.finished.wait(5)
    f = g.take()
    assert f.index == 199  # the newest frame, not the oldest
    assert g.take() is None
    assert g.dropped == 199 and g.received == 200
    assert wake.is_set()


def test_grabber_keep_all_drops_nothing() -> None:
    g = FrameGrabber(_Counter(50), keep_all=True).start()
    g.finished.wait(5)
    got = []
    while (f := g.take()) is not None:
        got.append(f.index)
    assert got == list(range(50)) and g.dropped == 0


def test_genicam_simulator_serves_images() -> None:
    pytest.importorskip("harvesters")
    from inspector.sources import GenICamSource, default_cti

    if default_cti() is None:
        pytest.skip("genicam wheel without the simulated producer (viky.cti)")
    cam = GenICamSource(device=0)
    frames = []
    for f in cam:
        frames.append(f)
        if len(frames) == 2:
            cam.close()
    assert all(f.ok for f in frames), [f.error for f in frames]
    img = frames[0].image
    assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8
    assert img.std() > 0  # a real test pattern, not a blank buffer


# ------------------------------------------------------------------------------ issue 16 items 8, 12, 13
def _png(value: int) -> bytes:
    return cv2.imencode(".png", _img(value))[1].tobytes()


def _take_all(grabber: FrameGrabber, n: int, timeout: float = 5.0) -> list:
    got: list = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        f = grabber.take()
        if f is None:
            time.sleep(0.01)
        else:
            got.append(f)
    return got


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="needs mkfifo")
@pytest.mark.parametrize("use_events", [False, True])
def test_hot_folder_fifo_is_an_error_frame_and_stop_ends_it(tmp_path: Path, use_events: bool) -> None:
    import os

    hot = HotFolderSource(tmp_path, poll_s=0.02, settle_s=0.05, use_events=use_events)
    grabber = FrameGrabber(hot).start()
    os.mkfifo(tmp_path / "x.png")
    write_png(tmp_path / "y.png", _img(3))
    got = _take_all(grabber, 2)
    t0 = time.monotonic()
    grabber.stop(timeout=2.0)
    assert time.monotonic() - t0 < 1.5 and not grabber._thread.is_alive()  # stop() ends it
    by_name = {f.path.name: f for f in got}
    assert set(by_name) == {"x.png", "y.png"}
    assert by_name["x.png"].error and "FIFO" in by_name["x.png"].error and by_name["y.png"].ok


def test_hot_folder_rereads_a_file_that_stalled_past_give_up_once_it_completes(tmp_path: Path) -> None:
    clock = _Clock()
    hot = HotFolderSource(tmp_path, settle_s=0.5, give_up_s=2.0, clock=clock, use_events=False)
    full = _png(7)
    target = tmp_path / "slow.png"
    target.write_bytes(full[: len(full) // 2])  # the writer stalls half-way
    assert hot.poll() == []
    clock.t = 3.0
    gave_up = hot.poll()
    assert len(gave_up) == 1 and "truncated PNG" in gave_up[0].error  # reported after give_up_s
    clock.t = 4.0
    assert hot.poll() == []  # the same unreadable file is not reported again
    with open(target, "ab") as fh:  # the writer resumes and finishes
        fh.write(full[len(full) // 2 :])
    clock.t = 5.0
    assert hot.poll() == []
    clock.t = 6.0
    frames = [f.resolve() for f in hot.poll()]
    assert [f.path.name for f in frames] == ["slow.png"] and frames[0].ok
    assert frames[0].image[0, 0, 2] == 7
    clock.t = 9.0
    assert hot.poll() == []


@pytest.mark.parametrize("use_events", [False, True])
def test_hot_folder_does_not_inspect_a_rename_twice(tmp_path: Path, use_events: bool) -> None:
    hot = HotFolderSource(tmp_path, poll_s=0.02, settle_s=0.05, use_events=use_events)
    grabber = FrameGrabber(hot).start()
    write_png(tmp_path / "a.png", _img(1))
    assert [f.path.name for f in _take_all(grabber, 1)] == ["a.png"]
    (tmp_path / "a.png").rename(tmp_path / "b.png")
    write_png(tmp_path / "c.png", _img(2))  # a genuinely new file still comes through
    got = _take_all(grabber, 2, timeout=1.5)
    grabber.stop()
    assert [f.path.name for f in got] == ["c.png"]


def test_hot_folder_sees_a_new_file_renamed_over_a_done_name(tmp_path: Path) -> None:
    hot = HotFolderSource(tmp_path, poll_s=0.02, settle_s=0.05, use_events=True)
    grabber = FrameGrabber(hot).start()
    write_png(tmp_path / "latest.png", _img(1))
    assert len(_take_all(grabber, 1)) == 1
    write_png(tmp_path / "latest.png", _img(2))  # a new image under the same name (atomic replace)
    got = _take_all(grabber, 1)
    grabber.stop()
    assert len(got) == 1 and got[0].image[0, 0, 0] == 2


def test_hot_folder_queue_is_bounded_and_holds_paths_not_pixels(tmp_path: Path) -> None:
    hot = HotFolderSource(tmp_path, poll_s=0.01, settle_s=0.02, use_events=False, max_batch=3)
    grabber = FrameGrabber(hot, max_pending=4).start()
    for i in range(20):
        (tmp_path / f"{i:03d}.png").write_bytes(_png(i))
    deadline = time.monotonic() + 5
    while grabber.pending < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)  # the consumer is busy: the source must wait, not fill memory
    with grabber._lock:
        held = list(grabber._buf)
    assert len(held) == 4 and all(f.deferred and f.image is None for f in held)
    got = _take_all(grabber, 20)
    grabber.stop()
    assert [f.path.name for f in got] == [f"{i:03d}.png" for i in range(20)]
    assert all(f.ok for f in got) and got[5].image[0, 0, 2] == 5  # decoded on take, nothing dropped
    assert grabber.dropped == 0


def test_hot_folder_idle_poll_does_not_list_the_folder(tmp_path: Path) -> None:
    import os

    for i in range(5_000):  # the 20,000: see the hot-folder figures in the closing note
        os.close(os.open(tmp_path / f"{i:05d}.png", os.O_CREAT | os.O_WRONLY, 0o644))
    hot = HotFolderSource(tmp_path, use_events=False)
    hot.poll()
    scans = hot.scans
    t0 = time.perf_counter()
    for _ in range(50):
        assert hot.poll() == []
    per_poll = (time.perf_counter() - t0) / 50
    assert hot.scans == scans  # idle: the folder's mtime did not change, so it was not listed
    assert per_poll < 0.01, f"idle poll took {per_poll * 1e3:.1f} ms"
    (tmp_path / "new.png").write_bytes(_png(1))
    hot.poll()
    assert hot.scans == scans + 1  # a new name changes the folder's mtime: listed once


def test_hot_folder_uses_file_events_when_available(tmp_path: Path) -> None:
    hot = HotFolderSource(tmp_path, poll_s=0.02, settle_s=0.05, use_events=True)
    grabber = FrameGrabber(hot).start()
    deadline = time.monotonic() + 2
    while not hot.watching and time.monotonic() < deadline:
        time.sleep(0.01)
    assert hot.watching
    write_png(tmp_path / "e.png", _img(4))
    got = _take_all(grabber, 1)
    scans = hot.scans
    time.sleep(0.2)
    assert hot.scans == scans  # events, not listings, while idle
    grabber.stop()
    assert [f.path.name for f in got] == ["e.png"] and got[0].ok
    assert not hot.watching  # the observer is stopped with the source


def test_hot_folder_reports_a_symlink_loop_once(tmp_path: Path) -> None:
    hot = HotFolderSource(tmp_path, use_events=False)
    (tmp_path / "loop.png").symlink_to("loop.png")
    first = hot.poll()
    assert len(first) == 1 and "symbolic link loop" in first[0].error
    assert hot.poll() == []


class _StallingCap:
    """A capture whose reads block until released (a stalled network stream)."""

    def __init__(self, frames_before_stall: int = 0) -> None:
        self.release_event = threading.Event()
        self.frames = frames_before_stall
        self.released = False

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV API
        return True

    def read(self):
        if self.frames > 0:
            self.frames -= 1
            return True, np.zeros((4, 4, 3), np.uint8)
        self.release_event.wait(30)
        return False, None

    def release(self) -> None:
        self.released = True


def test_camera_stalled_stream_is_reported_within_the_read_timeout() -> None:
    caps: list[_StallingCap] = []

    def opener(target):
        caps.append(_StallingCap(frames_before_stall=1))
        return caps[-1]

    cam = CameraSource("rtsp://127.0.0.1:9/stream", backoff=0.01, opener=opener, read_timeout_s=0.2)
    it = iter(cam)
    t0 = time.monotonic()
    first, second = next(it), next(it)
    assert first.ok
    assert second.error and "stalled" in second.error and time.monotonic() - t0 < 2.0
    assert cam.reconnects == 1
    cam.close()
    for c in caps:
        c.release_event.set()


def test_camera_stop_is_prompt_while_a_read_is_blocked() -> None:
    cap = _StallingCap()
    cam = CameraSource(0, opener=lambda t: cap, read_timeout_s=30.0)
    frames: list = []
    t = threading.Thread(target=lambda: frames.extend(cam), daemon=True)
    t.start()
    time.sleep(0.2)  # the read is now blocked
    t0 = time.monotonic()
    cam.close()
    t.join(2.0)
    assert not t.is_alive() and time.monotonic() - t0 < 0.5
    cap.release_event.set()
    deadline = time.monotonic() + 2
    while not cap.released and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cap.released  # the device is released once the blocked read returns


def test_camera_open_timeout_and_reasons() -> None:
    gate = threading.Event()

    def slow_opener(target):
        gate.wait(10)
        return _StallingCap()

    cam = CameraSource("rtsp://127.0.0.1:9/x", opener=slow_opener, open_timeout_s=0.2, backoff=0.01)
    t0 = time.monotonic()
    frame = next(iter(cam))
    cam.close()
    gate.set()
    assert time.monotonic() - t0 < 2.0
    assert "cannot open (no answer within" in frame.error
    from inspector.sources import camera_open_failure

    assert "no device /dev/video97" in camera_open_failure(97, False, 10)
    assert "could not connect to rtsp://127.0.0.1:9" in camera_open_failure("rtsp://u:p@127.0.0.1:9/s", False, 10)
    assert "credentials" in camera_open_failure("rtsp://127.0.0.1:9/s", False, 10)
    assert "neither a device index" in camera_open_failure("/nonexistent/file.avi", False, 10)


def test_camera_default_opener_passes_the_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list = []

    class Cap:
        def __init__(self, *args) -> None:
            seen.append(args)

        def isOpened(self) -> bool:  # noqa: N802
            return False

        def release(self) -> None:
            pass

    monkeypatch.setattr(cv2, "VideoCapture", Cap)
    cam = CameraSource(97, open_timeout_s=3.0, read_timeout_s=1.5, backoff=0.01)
    frame = next(iter(cam))
    cam.close()
    target, api, params = seen[0]
    assert target == 97 and api == cv2.CAP_ANY
    assert dict(zip(params[::2], params[1::2])) == {cv2.CAP_PROP_OPEN_TIMEOUT_MSEC: 3000,
                                                    cv2.CAP_PROP_READ_TIMEOUT_MSEC: 1500}
    assert "cannot open (no device /dev/video97" in frame.error


def test_a_frame_carries_the_sha256_of_the_bytes_it_was_decoded_from(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The file is read once: replacing it right after the read cannot change the recorded hash."""
    import hashlib

    import inspector.imaging as imaging
    from inspector.sources import read_frame

    path = write_png(tmp_path / "part.png", np.full((8, 8, 3), 40, np.uint8))
    original = path.read_bytes()
    real = imaging.decode_image

    def decode_then_replace(data: bytes, *args: object, **kw: object) -> np.ndarray:
        out = real(data, *args, **kw)  # type: ignore[arg-type]
        write_png(path, np.full((8, 8, 3), 200, np.uint8))  # the file changes after the read
        return out

    monkeypatch.setattr(imaging, "decode_image", decode_then_replace)
    frame = read_frame(path, "folder", 0)
    assert frame.ok and frame.image is not None and int(frame.image[0, 0, 0]) == 40
    assert frame.sha256 == hashlib.sha256(original).hexdigest()
    assert hashlib.sha256(path.read_bytes()).hexdigest() != frame.sha256  # a second read would differ
