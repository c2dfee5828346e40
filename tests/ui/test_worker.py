"""StationWorker: generic jobs (progress, done, failed, cancel), inspections, clean stop."""

from __future__ import annotations

import threading
import time

import pytest
from PySide6.QtCore import QObject

from inspector.models.hub import ModelHub
from inspector.sources import FolderSource
from inspector.ui.worker import StationWorker
from tests.ui.conftest import make_profile, plate


class Collector(QObject):
    """Receives the worker's signals in the UI thread (methods of a QObject are queued)."""

    def __init__(self, worker: StationWorker) -> None:
        super().__init__()
        self.progress: list[tuple[str, float, str]] = []
        self.done: dict[str, object] = {}
        self.failed: dict[str, str] = {}
        self.results: list = []
        self.threads: set[str] = set()
        worker.job_progress.connect(self.on_progress)
        worker.job_done.connect(self.on_done)
        worker.job_failed.connect(self.on_failed)
        worker.result.connect(self.on_result)

    def on_progress(self, tag: str, frac: float, msg: str) -> None:
        self.progress.append((tag, frac, msg))

    def on_done(self, tag: str, result: object) -> None:
        self.threads.add(threading.current_thread().name)
        self.done[tag] = result

    def on_failed(self, tag: str, message: str) -> None:
        self.failed[tag] = message

    def on_result(self, res) -> None:
        self.results.append(res)


@pytest.fixture
def worker(qtbot, station_env):  # station_env keeps caches and settings out of the user's home
    w = StationWorker(hub=ModelHub(device="cpu", precision="fp32")).start()
    yield w
    assert w.stop(timeout_s=20)
    assert not w.is_running()


def test_jobs_run_in_the_worker_thread_with_progress(qtbot, worker) -> None:
    got = Collector(worker)
    ran_in = []

    def job(hub, progress, is_cancelled):
        ran_in.append(threading.current_thread().name)
        for i in range(3):
            progress((i + 1) / 3, f"step {i + 1}")
        return {"device": str(hub.device), "cancelled": is_cancelled()}

    def broken(hub, progress, is_cancelled):
        raise ValueError("reference folder is empty")

    worker.submit_job("a", job)
    worker.submit_job("b", broken)
    qtbot.waitUntil(lambda: "a" in got.done and "b" in got.failed, timeout=10_000)
    assert got.done["a"] == {"device": "cpu", "cancelled": False}
    assert ran_in and ran_in[0] != threading.current_thread().name
    assert got.threads == {threading.current_thread().name}
    assert [p[1] for p in got.progress if p[0] == "a"] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert got.failed["b"] == "reference folder is empty"


def test_cancel_queued_and_running_jobs(qtbot, worker) -> None:
    got = Collector(worker)
    started = threading.Event()

    def slow(hub, progress, is_cancelled):
        started.set()
        t0 = time.monotonic()
        while not is_cancelled():
            if time.monotonic() - t0 > 20:
                return "never cancelled"
            time.sleep(0.01)
        return "stopped early"

    worker.submit_job("slow", slow)
    worker.submit_job("queued", lambda hub, p, c: "ran")
    assert started.wait(10)
    worker.cancel_job("queued")  # still waiting: removed, reported at once
    worker.cancel_job("slow")  # running: sees is_cancelled()
    qtbot.waitUntil(lambda: {"slow", "queued"} <= set(got.failed), timeout=10_000)
    assert got.failed == {"slow": "cancelled", "queued": "cancelled"}
    assert not got.done
    # the same tag can be used again afterwards
    worker.submit_job("slow", lambda hub, p, c: "again")
    qtbot.waitUntil(lambda: "slow" in got.done, timeout=10_000)
    assert got.done["slow"] == "again"


def test_inspect_without_profile_and_after_profile(qtbot, worker, tmp_path) -> None:
    from inspector.imaging import write_png

    got = Collector(worker)
    write_png(tmp_path / "line" / "a.png", plate(1))
    src = FolderSource(tmp_path / "line")
    worker.inspect_item(src, 0)
    qtbot.waitUntil(lambda: len(got.results) == 1, timeout=10_000)
    assert "no profile loaded" in got.results[0].error
    worker.load_profile(make_profile(tmp_path / "plate"))
    worker.inspect_item(src, 0)
    qtbot.waitUntil(lambda: len(got.results) == 2, timeout=60_000)
    res = got.results[1]
    assert res.ok and res.inspection.verdict == "PASS" and res.key == 0
    assert res.reference is not None and res.reference.shape == (72, 72, 3)
    assert res.reference_path.name.startswith("ref_")
    assert worker.current_profile().name == "plate"


def test_stop_while_a_job_runs_ends_the_thread(qtbot, station_env) -> None:
    w = StationWorker(hub=ModelHub(device="cpu", precision="fp32")).start()
    got = Collector(w)
    started = threading.Event()

    def job(hub, progress, is_cancelled):
        started.set()
        while not is_cancelled():
            time.sleep(0.01)
        return None

    w.submit_job("long", job)
    w.submit_job("never", lambda hub, p, c: None)
    assert started.wait(10)
    assert w.stop(timeout_s=10)
    qtbot.waitUntil(lambda: {"long", "never"} <= set(got.failed), timeout=5_000)
    assert "cancelled" in got.failed["never"]
