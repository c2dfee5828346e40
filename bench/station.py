"""Station throughput and responsiveness (not a test; prints figures).

    QT_QPA_PLATFORM=offscreen .venv/bin/python bench/station.py [--category pcb]

1. Record store: latency of a durable append (SQLite WAL, synchronous=FULL) and of ``verify``.
2. Worker: the demo line's test folder through :class:`StationWorker` (read, sha256, inspect,
   ground truth, nearest reference) vs. a bare ``Inspector.inspect`` loop; the longest UI
   event-loop stall meanwhile.
3. Camera path: a 100 fps video through the latest-frame-wins grabber: frames inspected vs dropped.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def bench_records(tmp: Path, n: int = 300) -> None:
    from inspector.records import InspectionRecord, SqliteRecordStore

    store = SqliteRecordStore(tmp / "bench.sqlite")
    lat = []
    for i in range(n):
        rec = InspectionRecord(station_id="st", operator_id="op", profile_name="p", profile_version=1,
                               profile_hash="h" * 64, pipeline="variation", auto_verdict="PASS",
                               operator_verdict="PASS", image_score=0.1, image_path=f"/x/{i}.png",
                               image_sha256="0" * 64)
        t0 = time.perf_counter()
        store.append(rec)
        lat.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    ok = store.verify().ok
    t_verify = time.perf_counter() - t0
    store.close()
    lat_ms = sorted(x * 1000 for x in lat)
    print(f"records: append median {statistics.median(lat_ms):.2f} ms, p95 {lat_ms[int(0.95 * n)]:.2f} ms, "
          f"max {lat_ms[-1]:.2f} ms; verify {n} rows {t_verify * 1000:.1f} ms (ok={ok})")


def bench_worker(tmp: Path, category: str) -> None:
    from PySide6.QtCore import QElapsedTimer, QObject, QTimer
    from PySide6.QtWidgets import QApplication

    from inspector.demo import generate_demo_line, write_demo_profiles
    from inspector.imaging import read_image
    from inspector.inspection import Inspector
    from inspector.models.hub import ModelHub
    from inspector.profile import load_profile
    from inspector.sources import FolderSource, VideoFileSource
    from inspector.ui.worker import StationWorker

    app = QApplication.instance() or QApplication(sys.argv[:1])
    line = generate_demo_line(tmp / "line", seed=0, categories=[category])
    write_demo_profiles(tmp / "profiles", line_root=line)
    profile_dir = tmp / "profiles" / f"demo_{category}"
    folder = FolderSource(line / category / "test")
    hub = ModelHub(device="cpu")

    ins = Inspector(load_profile(profile_dir), hub)
    ins.prepare()
    images = [read_image(p) for p in folder.paths]
    ins.inspect(images[0])
    t0 = time.perf_counter()
    for img in images:
        ins.inspect(img)
    t_direct = time.perf_counter() - t0

    class Sink(QObject):
        def __init__(self) -> None:
            super().__init__()
            self.results = []
            self.ready = False

        def on_result(self, res) -> None:
            self.results.append(res)

        def on_ready(self, _info) -> None:
            self.ready = True

    worker = StationWorker(hub=hub).start()
    sink = Sink()
    worker.result.connect(sink.on_result)
    worker.profile_ready.connect(sink.on_ready)
    clock = QElapsedTimer()
    longest = [0]

    def tick() -> None:
        longest[0] = max(longest[0], clock.restart())

    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(tick)
    clock.start()
    timer.start()
    worker.load_profile(profile_dir)
    while not sink.ready:
        app.processEvents()
        time.sleep(0.002)
    t0 = time.perf_counter()
    for i in range(len(folder)):
        worker.inspect_item(folder, i)
    while len(sink.results) < len(folder):
        app.processEvents()
        time.sleep(0.002)
    t_worker = time.perf_counter() - t0
    n = len(folder)
    print(f"worker ({category}, {n} images {images[0].shape[1]}x{images[0].shape[0]}): "
          f"{t_worker / n * 1000:.0f} ms/image through the worker vs {t_direct / n * 1000:.0f} ms/image bare "
          f"Inspector.inspect; longest UI stall {longest[0]} ms (10 ms timer)")

    # camera path
    import cv2

    video = tmp / "cam.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 100.0, images[0].shape[1::-1])
    for img in images * 4:
        writer.write(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    writer.release()
    sink.results.clear()
    longest[0] = 0
    clock.restart()
    src = VideoFileSource(video, realtime=True, loop=False)
    t0 = time.perf_counter()
    worker.start_source(src)
    grabber = worker._grabber
    while not grabber.finished.is_set() or worker.queue_depth():
        app.processEvents()
        time.sleep(0.002)
    for _ in range(50):
        app.processEvents()
        time.sleep(0.002)
    dt = time.perf_counter() - t0
    print(f"camera: {grabber.received} frames at 100 fps in {dt:.1f} s -> {len(sink.results)} inspected, "
          f"{grabber.dropped} dropped (latest wins, queue never above 1); longest UI stall {longest[0]} ms")
    worker.stop()
    timer.stop()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--category", default="pcb")
    args = ap.parse_args()
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    tmp = Path(tempfile.mkdtemp(prefix="inspector-bench-"))
    os.environ["INSPECTOR_HOME"] = str(tmp / "home")
    os.environ["INSPECTOR_CONFIG"] = str(tmp / "settings.yaml")
    bench_records(tmp)
    bench_worker(tmp, args.category)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
