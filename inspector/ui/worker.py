"""The station's worker: a QObject living in its own QThread that owns the ModelHub and the Inspector.

The UI thread never touches torch: it calls the thread-safe methods below, which queue a task
and wake the worker; results come back as Qt signals (queued into the UI thread).

Tasks run one at a time in submission order:

* :meth:`StationWorker.load_profile` — validate, build the :class:`~inspector.inspection.Inspector`,
  ``prepare`` it (``models_loading`` progress), then ``profile_ready`` or ``profile_failed``
  (the message of e.g. ``ModelMissingError`` plus what to do; the station stays usable).
* :meth:`StationWorker.inspect_item` / :meth:`StationWorker.inspect_frame` — one image →
  ``result(StationResult)``. A crash inside a pipeline is caught, logged and returned as a
  result carrying the error; the worker carries on.
* :meth:`StationWorker.submit_job` — generic jobs for the engineer tools:
  ``fn(hub, progress, is_cancelled)`` → ``job_progress`` / ``job_done`` / ``job_failed``.
  A job cancelled before it starts, or that returns after :meth:`cancel_job`, ends with
  ``job_failed(tag, "cancelled")``; every submitted job ends with exactly one of the two.

Live sources (:meth:`start_source`) run in a :class:`~inspector.sources.FrameGrabber`; when the
task queue is empty the worker takes the grabber's frame — the *latest* one for cameras (never a
backlog; overwritten frames are counted in ``dropped_changed``), every one for hot folders.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QThread, Qt, Signal, Slot

from inspector.files import array_sha256, file_sha256
from inspector.inspection import Inspector
from inspector.models.hub import ModelHub
from inspector.profile import ProductProfile, load_profile
from inspector.progress import JobFn
from inspector.settings import Settings
from inspector.sources import FolderSource, Frame, FrameGrabber, Source, read_ground_truth
from inspector.station.references import ReferenceMatcher
from inspector.station.result import StationResult, is_video, part_path
from inspector.ui import gc_guard

log = logging.getLogger(__name__)



@dataclass
class ProfileInfo:
    """What the UI needs to know about the loaded profile."""

    profile: ProductProfile
    folder: Path | None
    device: str
    seconds: float
    generation: int
    references: list[Path] = field(default_factory=list)
    model_keys: list[str] = field(default_factory=list)  # "kind:key" of the networks loaded


@dataclass
class _Load:
    target: str | Path | ProductProfile


@dataclass
class _Inspect:
    key: int
    frame: Frame | None = None
    source: FolderSource | None = None
    index: int = 0
    live: bool = False
    profile: Path | None = None  # load this profile folder first unless it is the current one (PLC recipe)
    done: Callable[[StationResult | None], None] | None = None  # the result, or None when the task is dropped


@dataclass
class _Job:
    tag: str
    fn: JobFn


@dataclass
class _Call:
    fn: Callable[[], None]


class StationWorker(QObject):
    """Owns the hub and the current Inspector in a worker thread (see module docstring)."""

    models_loading = Signal(float, str)
    profile_ready = Signal(object)  # ProfileInfo
    profile_failed = Signal(str)  # message: what failed and what to do
    result = Signal(object)  # StationResult
    error = Signal(str)
    busy_changed = Signal(bool)
    queue_changed = Signal(int)
    dropped_changed = Signal(int)
    source_status = Signal(str)
    source_finished = Signal(str)  # empty string when the source ended normally
    job_progress = Signal(str, float, str)
    job_done = Signal(str, object)
    job_failed = Signal(str, str)
    _wake = Signal()

    def __init__(self, hub: ModelHub | None = None, settings: Settings | None = None) -> None:
        super().__init__()
        self._settings = settings
        self._hub = hub
        self._hub_injected = hub is not None
        self._lock = threading.RLock()
        self._tasks: deque[Any] = deque()
        self._cancelled: set[str] = set()
        self._running_tag: str | None = None
        self._stopping = False
        self._busy = False
        self._inspector: Inspector | None = None
        self._profile: ProductProfile | None = None
        self._profile_target: str | Path | ProductProfile | None = None
        self._generation = 0
        self._refs = ReferenceMatcher()
        self._grabber: FrameGrabber | None = None
        self._grabber_reported = False
        self._live_key = 0
        self._dropped_reported = 0
        self._thread = QThread()
        self._thread.setObjectName("inspector-worker")
        self.moveToThread(self._thread)
        self._wake.connect(self._drain, Qt.ConnectionType.QueuedConnection)

    # ================================================================== lifecycle (UI thread)
    def start(self) -> StationWorker:
        gc_guard.install()  # from now on Python's GC must not run in the worker thread
        self._thread.start()
        return self

    def is_running(self) -> bool:
        return self._thread.isRunning()

    def stop(self, timeout_s: float = 10.0) -> bool:
        """Stop the source, cancel jobs, let the current task finish, end the thread. True if clean."""
        with self._lock:
            self._stopping = True
            for task in self._tasks:
                if isinstance(task, _Job):
                    self.job_failed.emit(task.tag, "cancelled (station closing)")
            self._drop_inspections()
            self._tasks.clear()
        self.stop_source()
        self._thread.quit()
        ok = self._thread.wait(int(timeout_s * 1000))
        if not ok:
            log.warning("worker thread did not stop within %.0f s", timeout_s)
        return bool(ok)

    # ================================================================== requests (any thread)
    def load_profile(self, target: str | Path | ProductProfile) -> None:
        """Load a profile folder / profile.yaml / in-memory profile; stale inspections are dropped."""
        with self._lock:
            self._drop_inspections()
            self._tasks.append(_Load(target))
        self._changed()

    def reload_profile(self) -> None:
        """Load the current profile again (after the engineer saved it)."""
        if self._profile_target is not None:
            self.load_profile(self._profile_target)

    def inspect_item(self, source: FolderSource, index: int) -> None:
        """Read ``source[index]`` and inspect it (the read happens in the worker thread)."""
        self._push(_Inspect(key=index, source=source, index=index))

    def inspect_frame(self, frame: Frame, key: int | None = None, profile: Path | None = None,
                      done: Callable[[StationResult | None], None] | None = None) -> None:
        """Inspect ``frame`` (in order with the other tasks); ``result`` is emitted as for any frame.

        ``profile``: a profile folder to load first unless it is the current one (a PLC's recipe;
        the operator view switches with it). ``done`` is called in the worker thread with the
        emitted result, or with None when the task is dropped (source stopped, profile changed,
        station closing), so that a caller waiting on it (the OPC UA trigger) never hangs."""
        with self._lock:
            stopping = self._stopping
        if stopping:
            if done is not None:
                done(None)
            return
        self._push(_Inspect(key=frame.index if key is None else key, frame=frame, profile=profile, done=done))

    def cancel_inspections(self) -> None:
        with self._lock:
            self._drop_inspections()
        self._changed(wake=False)

    def submit_job(self, tag: str, fn: JobFn) -> None:
        """Run ``fn(hub, progress, is_cancelled)`` in the worker thread (engineer tools)."""
        with self._lock:
            self._cancelled.discard(tag)
            if self._stopping:
                self.job_failed.emit(tag, "cancelled (station closing)")
                return
        self._push(_Job(tag, fn))

    def cancel_job(self, tag: str) -> None:
        with self._lock:
            queued = [t for t in self._tasks if isinstance(t, _Job) and t.tag == tag]
            if queued:
                self._tasks = deque(t for t in self._tasks if t not in queued)
            elif self._running_tag == tag:
                self._cancelled.add(tag)
        if queued:
            self.job_failed.emit(tag, "cancelled")

    def call(self, fn: Callable[[], None]) -> None:
        """Run a small function in the worker thread (ordering with the other tasks kept)."""
        self._push(_Call(fn))

    def set_device(self, device: str, precision: str | None = None) -> None:
        """Switch compute device (``auto``, ``cpu``, ``cuda``, ``cuda:1``) and reload the profile."""

        def switch() -> None:
            if self._hub_injected:
                raise RuntimeError("this station's model hub was provided from outside; device is fixed")
            settings = self.settings
            settings.device = device
            if precision is not None:
                settings.precision = precision  # type: ignore[assignment]
            if self._hub is not None:
                self._hub.release()
            self._hub = None
            self._inspector = None
            if self._profile_target is not None:
                self._load(self._profile_target)

        self.call(switch)

    def start_source(self, source: Source) -> None:
        """Stream a live source (camera, video, GenICam: latest wins) or a hot folder (keep all)."""
        self.stop_source()
        grabber = FrameGrabber(source, on_frame=self._wake.emit)
        with self._lock:
            self._grabber = grabber
            self._grabber_reported = False
            self._dropped_reported = 0
        grabber.start()
        self.dropped_changed.emit(0)

    def stop_source(self) -> None:
        with self._lock:
            grabber, self._grabber = self._grabber, None
        if grabber is not None:
            grabber.stop()

    # ================================================================== state (any thread)
    def current_profile(self) -> ProductProfile | None:
        return self._profile

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = Settings.load()
        return self._settings

    @property
    def hub(self) -> ModelHub:
        """The model hub (created on first use, in the worker thread) and its store from our settings."""
        if self._hub is None:
            s = self.settings
            self._hub = ModelHub(device=s.device, precision=s.precision)
        if self._hub.store is None:  # also an injected hub: the store follows the station's settings
            from inspector.models.store import ModelStore

            self._hub.store = ModelStore.from_settings(self.settings)
        return self._hub

    def queue_depth(self) -> int:
        with self._lock:
            n = sum(isinstance(t, _Inspect) for t in self._tasks)
            grabber = self._grabber
        return n + (grabber.pending if grabber is not None else 0)

    def dropped(self) -> int:
        grabber = self._grabber
        return grabber.dropped if grabber is not None else 0

    def is_busy(self) -> bool:
        return self._busy

    def generation(self) -> int:
        return self._generation

    # ================================================================== internals
    def _drop_inspections(self) -> None:
        """Remove the queued inspections (caller holds the lock); their waiters get None."""
        dropped = [t for t in self._tasks if isinstance(t, _Inspect)]
        self._tasks = deque(t for t in self._tasks if not isinstance(t, _Inspect))
        for task in dropped:
            if task.done is not None:
                task.done(None)

    def _push(self, task: Any) -> None:
        with self._lock:
            if self._stopping:
                return
            self._tasks.append(task)
        self._changed()

    def _changed(self, wake: bool = True) -> None:
        self.queue_changed.emit(self.queue_depth())
        if wake:
            self._wake.emit()

    def _next_task(self) -> Any | None:
        with self._lock:
            if self._stopping:
                return None
            if self._tasks:
                task = self._tasks.popleft()
                if isinstance(task, _Job):
                    self._running_tag = task.tag
                return task
            grabber = self._grabber
        if grabber is None:
            return None
        frame = grabber.take()
        if frame is not None:
            self._live_key += 1
            return _Inspect(key=self._live_key, frame=frame, live=grabber.source.live)
        if grabber.finished.is_set() and not self._grabber_reported:
            self._grabber_reported = True
            self.source_finished.emit(grabber.failure or "")
        return None

    def _more_work(self) -> bool:
        with self._lock:
            if self._stopping:
                return False
            if self._tasks:
                return True
            grabber = self._grabber
        return grabber is not None and grabber.pending > 0

    def _set_busy(self, busy: bool) -> None:
        if busy != self._busy:
            self._busy = busy
            self.busy_changed.emit(busy)

    @Slot()
    def _drain(self) -> None:
        task = self._next_task()
        if task is None:
            self._set_busy(False)
            return
        self._set_busy(True)
        try:
            if isinstance(task, _Load):
                self._load(task.target)
            elif isinstance(task, _Inspect):
                self._inspect(task)
            elif isinstance(task, _Job):
                self._run_job(task)
            elif isinstance(task, _Call):
                try:
                    task.fn()
                except Exception as exc:  # noqa: BLE001
                    log.exception("worker call failed")
                    self.error.emit(str(exc) or type(exc).__name__)
        finally:
            with self._lock:
                self._running_tag = None
            grabber = self._grabber
            if grabber is not None and grabber.dropped != self._dropped_reported:
                self._dropped_reported = grabber.dropped
                self.dropped_changed.emit(grabber.dropped)
            self.queue_changed.emit(self.queue_depth())
            if self._more_work():
                self._wake.emit()
            else:
                self._set_busy(False)

    # ------------------------------------------------------------------ profile
    def _load(self, target: str | Path | ProductProfile) -> None:
        """Build and prepare ``target``; the working profile keeps inspecting until it is ready.

        On failure the previous profile (if any) stays loaded and ``profile_failed`` says why."""
        name = target.name if isinstance(target, ProductProfile) else str(target)
        t0 = time.perf_counter()
        self.models_loading.emit(0.0, f"loading profile {name}")
        try:
            profile = target if isinstance(target, ProductProfile) else load_profile(target)
            inspector = Inspector(profile, self.hub)
            check_all_weights(inspector)  # fail fast, naming every missing model, before building any

            def progress(frac: float, msg: str = "") -> None:
                self.models_loading.emit(float(frac), str(msg))

            inspector.prepare(progress)
            refs = ReferenceMatcher.from_profile(profile)
        except Exception as exc:  # noqa: BLE001 - any failure leaves the station usable
            log.exception("loading profile %s failed", name)
            self.models_loading.emit(1.0, "")
            self.profile_failed.emit(_failure_text(name, exc))
            return
        self._generation += 1
        self._profile_target = target
        self._profile = profile
        self._inspector = inspector
        self._refs = refs
        self.models_loading.emit(1.0, "ready")
        self.profile_ready.emit(
            ProfileInfo(
                profile=profile, folder=profile.folder, device=self.hub.describe(),
                seconds=time.perf_counter() - t0, generation=self._generation,
                references=refs.paths, model_keys=inspector.model_keys(),
            )
        )

    # ------------------------------------------------------------------ inspection
    def _inspect(self, task: _Inspect) -> None:
        res = self._inspection(task)
        self.result.emit(res)
        if task.done is not None:
            task.done(res)

    def _is_current(self, folder: Path) -> bool:
        current = self._profile.folder if self._profile is not None else None
        return current is not None and Path(current).resolve() == Path(folder).resolve()

    def _inspection(self, task: _Inspect) -> StationResult:
        if task.profile is not None and not self._is_current(task.profile):
            self._load(task.profile)  # emits profile_ready (or profile_failed) before this result
            if not self._is_current(task.profile):
                frame = task.frame or Frame(None, "", time.time(), None, task.index, None)
                return StationResult(frame=frame, key=task.key, generation=self._generation, live=task.live,
                                     error=f"profile {Path(task.profile).name} could not be loaded (see the station)")
        generation = self._generation
        if task.frame is not None:
            frame = task.frame
        else:
            assert task.source is not None
            try:
                frame = task.source.read(task.index)
            except Exception as exc:  # noqa: BLE001
                frame = Frame(None, task.source.source_id, time.time(), None, task.index, str(exc))
        res = StationResult(frame=frame, key=task.key, generation=generation, live=task.live)
        if not frame.ok:
            res.error = frame.error or "empty frame"
            return res
        inspector = self._inspector
        if inspector is None:
            res.error = None if task.live else "no profile loaded: pick a product profile first"
            return res
        assert frame.image is not None
        try:
            if frame.sha256 is not None:  # the bytes the image was decoded from (read once)
                sha = frame.sha256
            elif frame.path is not None and not is_video(frame.path):
                sha = file_sha256(frame.path)
            else:  # a camera frame or a frame of a video file: the hash of the frame itself
                sha = array_sha256(frame.image)
            res.inspection = inspector.inspect(frame.image, part_path(frame), sha)
        except Exception as exc:  # noqa: BLE001 - a pipeline crash must not stop the station
            log.exception("pipeline %s failed on %s", inspector.pipeline, frame.name)
            res.error = f"{frame.name}: the {inspector.pipeline} pipeline failed ({type(exc).__name__}: {exc})"
            return res
        if frame.path is not None and not is_video(frame.path):
            res.gt_mask = read_ground_truth(frame.path, frame.image.shape[:2])
        res.reference_path, res.reference = self._refs.nearest(frame.image)
        return res

    # ------------------------------------------------------------------ jobs
    def _run_job(self, job: _Job) -> None:
        tag = job.tag

        def is_cancelled() -> bool:
            return self._stopping or tag in self._cancelled

        def progress(frac: float, msg: str = "") -> None:
            self.job_progress.emit(tag, float(frac), str(msg))

        try:
            out = job.fn(self.hub, progress, is_cancelled)
        except Exception as exc:  # noqa: BLE001
            if is_cancelled():
                self.job_failed.emit(tag, "cancelled")
            else:
                log.exception("job %s failed", tag)
                self.job_failed.emit(tag, str(exc) or type(exc).__name__)
        else:
            if is_cancelled():
                self.job_failed.emit(tag, "cancelled")
            else:
                self.job_done.emit(tag, out)
        finally:
            with self._lock:
                self._cancelled.discard(tag)


def missing_weights(hub: ModelHub, folders: list[Path]) -> dict[str, list[str]]:
    """Profile folder -> the model keys it needs that are not installed (no network is built)."""
    out: dict[str, list[str]] = {}
    for folder in folders:
        try:
            profile = load_profile(folder, check_files=False)
            missing = missing_models(Inspector(profile, hub))
        except Exception as exc:  # noqa: BLE001 - a broken profile is reported when it is picked
            log.debug("weights pre-flight of %s: %s", folder, exc)
            continue
        if missing:
            out[str(folder)] = missing
    return out


def _missing(inspector: Inspector) -> list[Exception]:
    """The store's ModelMissingError for every model the inspector needs that is not installed."""
    from inspector.models.store import ModelMissingError

    keys = [key for kind, key in inspector.required_models() if not inspector.hub.is_provided(kind, key)]
    if not keys:
        return []
    store = inspector.hub.model_store()
    errors: list[Exception] = []
    for key in store.with_requirements(keys):
        try:
            store.path(key)
        except ModelMissingError as exc:
            errors.append(exc)
    return errors


def missing_models(inspector: Inspector) -> list[str]:
    """Every model key the inspector needs whose weights are not installed (not only the first)."""
    return [str(getattr(e, "key", "") or e) for e in _missing(inspector)]


class MissingWeightsError(RuntimeError):
    """Several models are missing: every one is named, each with the store's own message."""


def check_all_weights(inspector: Inspector) -> None:
    """Like ``Inspector.check_weights`` but naming every missing model at once."""
    errors = _missing(inspector)
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise MissingWeightsError(f"{len(errors)} models are not installed:\n" + "\n".join(f"• {e}" for e in errors))


def _failure_text(name: str, exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    kind = type(exc).__name__
    if kind in ("ModelMissingError", "MissingWeightsError"):
        hint = "Install the weights as the message says (or import an offline bundle in Engineer → Models), " \
               "or pick a profile that uses the weight-free 'variation' pipeline."
    elif kind == "ProfileError":
        hint = "Fix the profile (Engineer tab or `inspector profile validate`) or pick another profile."
    else:
        hint = "Pick another profile, or see the log for details."
    return f"Profile {name} could not be loaded:\n{text}\n\n{hint}"
