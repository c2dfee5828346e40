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
    frames = hot.poll()
    assert [f.path.name for f in frames] == ["new.png"] and frames[0].ok
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
