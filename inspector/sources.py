"""Where images come from: iterators of :class:`Frame` (Qt-free, torch-free).

=====================  ==========================================================================
source                 behaviour
=====================  ==========================================================================
:class:`FolderSource`  a fixed, sorted list of image files with next / previous / seek
:class:`HotFolderSource`  files that appear while running (file-system events, polling fallback); a
                       file is queued once its size and mtime are stable and its bytes are complete
                       (a copy in progress is never read half-way), each file once even if renamed
:class:`CameraSource`  OpenCV ``VideoCapture`` (device index or URL) with open and read timeouts;
                       says why it cannot open, reconnects with backoff after a drop or a stall
:class:`VideoFileSource`  a video file paced at its frame rate (exercises the camera path in tests)
:class:`GenICamSource` GigE/USB3 Vision cameras through ``harvesters`` (``pip install inspector[genicam]``)
=====================  ==========================================================================

Nothing here raises on a bad image: a frame that cannot be read is a :class:`Frame` whose
``error`` says which file and why, and whose ``image`` is ``None``.

Live sources block while waiting for the next frame; :meth:`Source.close` (from any thread)
ends the iteration promptly. :class:`FrameGrabber` runs a source in a thread and hands frames
to a consumer either *latest wins* (cameras: no backlog, overwritten frames are counted as
dropped) or *keep all* (hot folders: every file is inspected, through a bounded queue of paths
that are decoded when the consumer takes them). Only regular files are ever opened: a FIFO or
a device with an image name is an error frame, never a hang.
"""

from __future__ import annotations

import logging
import os
import queue
import stat
import threading
import time
import urllib.parse
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from inspector.files import describe_os_error, file_kind
from inspector.ground_truth import mvtec_mask_path, read_mask
from inspector.imaging import (
    ImageReadError,
    is_image_file,
    list_images,
    probe_image,
    read_image_hashed,
    to_rgb_uint8,
)

log = logging.getLogger(__name__)

SOURCE_KINDS = ("folder", "hot", "camera", "video", "genicam")


class SourceError(RuntimeError):
    """A source cannot be opened at all (missing folder, unknown kind, missing optional package)."""


@dataclass
class Frame:
    """One image from a source. ``image`` is RGB uint8 HxWx3, or ``None`` when ``error`` is set."""

    image: np.ndarray | None
    source_id: str
    timestamp: float  # seconds since the epoch (UTC)
    path: Path | None = None
    index: int = 0
    error: str | None = None
    deferred: bool = False
    """True for a frame that names a ready file whose pixels are read by :meth:`resolve`
    (hot folders queue paths, not decoded images)."""
    sha256: str | None = None
    """sha256 of the file bytes the image was decoded from (frames read from files)."""

    @property
    def ok(self) -> bool:
        return self.error is None and self.image is not None

    def resolve(self) -> Frame:
        """This frame with its image read (deferred frames), or itself; never raises."""
        if not self.deferred or self.path is None:
            return self
        frame = read_frame(self.path, self.source_id, self.index)
        frame.timestamp = self.timestamp
        return frame

    @property
    def name(self) -> str:
        return self.path.name if self.path is not None else f"{self.source_id}#{self.index}"


def read_frame(path: Path, source_id: str, index: int) -> Frame:
    """Read one file into a frame; unreadable files give a frame carrying the error."""
    try:
        image, sha = read_image_hashed(path)
    except ImageReadError as exc:
        return Frame(None, source_id, time.time(), path, index, str(exc))
    except Exception as exc:  # noqa: BLE001 - a decoder bug must not stop the line
        log.exception("unexpected error reading %s", path)
        return Frame(None, source_id, time.time(), path, index, f"{path}: cannot read ({exc})")
    return Frame(image, source_id, time.time(), path, index, sha256=sha)


def ground_truth_path(image_path: str | Path) -> Path | None:
    """Ground-truth mask of an image in MVTec-AD layout, if present (:func:`inspector.ground_truth.mvtec_mask_path`)."""
    return mvtec_mask_path(image_path)


def read_ground_truth(image_path: str | Path, shape_hw: tuple[int, int]) -> np.ndarray | None:
    """Bool mask of the ground truth for ``image_path`` at ``shape_hw``, or ``None`` when unknown
    (the one reader: :func:`inspector.ground_truth.read_mask`)."""
    gt = mvtec_mask_path(image_path)
    if gt is None:
        return None
    try:
        return read_mask(gt, shape_hw)
    except ImageReadError as exc:
        log.warning("ground truth unreadable: %s", exc)
        return None


class Source(ABC):
    """Base of all sources. Iterating yields frames until the source ends or is closed."""

    #: live sources (cameras) never build a backlog: consumers take the latest frame
    live: bool = False

    def __init__(self, source_id: str) -> None:
        self.source_id = source_id
        self._stop = threading.Event()

    @abstractmethod
    def __iter__(self) -> Iterator[Frame]: ...

    def close(self) -> None:
        """Stop iteration (thread-safe); blocking waits inside the source return promptly."""
        self._stop.set()

    @property
    def closed(self) -> bool:
        return self._stop.is_set()

    def describe(self) -> str:
        return self.source_id

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# --------------------------------------------------------------------------- folders
def _is_ground_truth(path: Path, root: Path) -> bool:
    rel = path.relative_to(root)
    return "ground_truth" in rel.parts or path.stem.endswith("_mask")


class FolderSource(Source):
    """A sorted list of image files. Random access (:meth:`read`) is thread-safe.

    With ``recursive=None`` the folder is searched recursively only when it holds no image
    directly (e.g. an MVTec ``test/`` folder with one sub-folder per defect type); ground-truth
    masks are never listed.
    """

    def __init__(self, folder: str | Path, recursive: bool | None = None) -> None:
        root = Path(folder).expanduser()
        if not root.is_dir():
            raise SourceError(f"{root}: folder not found; pick an existing folder of images")
        super().__init__(f"folder:{root}")
        self.folder = root
        files = list_images(root, recursive=False)
        if recursive or (recursive is None and not files):
            files = [p for p in list_images(root, recursive=True) if not _is_ground_truth(p, root)]
        self.paths: list[Path] = files
        self.position = 0

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, index: int) -> Frame:
        if not 0 <= index < len(self.paths):
            raise IndexError(f"{self.folder}: index {index} outside 0..{len(self.paths) - 1}")
        return read_frame(self.paths[index], self.source_id, index)

    def seek(self, index: int) -> None:
        self.position = min(max(index, 0), len(self.paths))

    def next(self) -> Frame | None:
        """The frame at the current position, then advance; ``None`` at the end."""
        if self.position >= len(self.paths):
            return None
        frame = self.read(self.position)
        self.position += 1
        return frame

    def previous(self) -> Frame | None:
        """Step back one frame (the one before the last returned) and return it."""
        if self.position <= 1:
            self.position = 0
            return None
        self.position -= 2
        return self.next()

    def __iter__(self) -> Iterator[Frame]:
        while not self.closed:
            frame = self.next()
            if frame is None:
                return
            yield frame


class _FolderEvents:
    """File-system events for one folder through watchdog (inotify, FSEvents, ReadDirectoryChangesW).

    Collects the names of files created, modified, moved or deleted; :meth:`drain` hands them
    over. ``overflowed`` is set when the observer died (then the caller rescans)."""

    def __init__(self, folder: Path) -> None:
        from watchdog.events import FileSystemEvent, FileSystemEventHandler
        from watchdog.observers import Observer

        self._lock = threading.Lock()
        self._names: set[str] = set()
        sink = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                if event.is_directory:
                    return
                for raw in (event.src_path, getattr(event, "dest_path", "")):
                    if raw:
                        name = os.path.basename(os.fsdecode(raw))
                        with sink._lock:
                            sink._names.add(name)

        self._observer = Observer()
        self._observer.daemon = True
        self._observer.schedule(Handler(), str(folder), recursive=False)
        self._observer.start()

    @property
    def alive(self) -> bool:
        return self._observer.is_alive()

    def drain(self) -> set[str]:
        with self._lock:
            names, self._names = self._names, set()
        return names

    def stop(self) -> None:
        self._observer.stop()
        if self._observer is not threading.current_thread():
            self._observer.join(2.0)


_FileId = tuple[int, int, int, int]
"""(st_dev, st_ino, st_size, st_mtime_ns): the same file under any name (a rename keeps it)."""


def _file_id(st: os.stat_result) -> _FileId:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class HotFolderSource(Source):
    """New image files in a folder, each yielded once, only after the copy into it has finished.

    * **Ready** means: a regular file whose size and mtime have not changed for ``settle_s`` and
      whose bytes pass :func:`~inspector.imaging.probe_image` (complete PNG/JPEG/BMP structure,
      TIFFs decode). The frame is *deferred*: it carries the path, and the pixels are decoded by
      :meth:`Frame.resolve` when the consumer takes it (:class:`FrameGrabber` does), so a burst
      of files never sits decoded in memory.
    * A file that still fails the probe ``give_up_s`` after it stopped changing is reported as
      an error frame; if it changes later (the writer resumes) it is read again once complete.
    * A FIFO, device or socket with an image name is reported once as an error frame, never opened.
    * A file is identified by device, inode, size and mtime, so a rename (``a.png`` → ``b.png``)
      is not inspected a second time.
    * Changes are seen through file-system events (watchdog) when available, with a full listing
      every ``rescan_s`` as a safety net; otherwise by polling, where an idle poll costs one
      ``stat`` of the folder (its mtime changes whenever a name is added, removed or renamed).
    * At most ``max_batch`` frames per poll; the rest wait on disk (the queue stays bounded).

    Files present when the source starts are skipped unless ``include_existing``; with it,
    the names in ``skip_names`` (e.g. files the station already has a record of) are still skipped.
    """

    def __init__(
        self,
        folder: str | Path,
        poll_s: float = 0.2,
        settle_s: float = 0.3,
        give_up_s: float = 10.0,
        include_existing: bool = False,
        clock: Callable[[], float] = time.monotonic,
        use_events: bool | None = None,
        rescan_s: float = 30.0,
        max_batch: int = 16,
        skip_names: Iterable[str] = (),
    ) -> None:
        root = Path(folder).expanduser()
        if not root.is_dir():
            raise SourceError(f"{root}: hot folder not found; create it or pick another folder")
        super().__init__(f"hot:{root}")
        self.folder = root
        self.poll_s = poll_s
        self.settle_s = settle_s
        self.give_up_s = give_up_s
        self.rescan_s = rescan_s
        self.max_batch = max(1, max_batch)
        self._clock = clock
        self._use_events = use_events
        self._events: _FolderEvents | None = None
        # name -> file id of what was yielded (or skipped at start) under that name
        self._done: dict[str, _FileId] = {}
        self._done_ids: set[_FileId] = set()
        # name -> (size, mtime_ns, time the pair was first seen)
        self._pending: dict[str, tuple[int, int, float]] = {}
        # name -> (size, mtime_ns) reported as unreadable after give_up_s; read again if it changes
        self._gave_up: dict[str, tuple[int, int]] = {}
        self._dir_mtime: int | None = None
        self._last_full = -float("inf")
        self._index = 0
        self.scans = 0
        """Full listings made so far (an idle source makes none)."""
        names = self._list(note_existing=not include_existing)
        if include_existing:
            self._pending.update({n: (-1, -1, 0.0) for n in names})
        for n in skip_names:  # files already there that the station has a record of (helper-14)
            if self._pending.pop(n, None) is not None:
                self._mark_done(n)

    # ---------------------------------------------------------------- bookkeeping
    def _mark_done(self, name: str, st: os.stat_result | None = None) -> None:
        if st is None:
            try:
                st = os.lstat(self.folder / name)
                st = os.stat(self.folder / name)
            except OSError:
                if st is None:
                    return
        fid = _file_id(st)
        self._done[name] = fid
        self._done_ids.add(fid)

    def _list(self, note_existing: bool = False) -> list[str]:
        """Image names in the folder (one ``scandir``; the folder's mtime is noted first).

        ``note_existing`` marks every listed file as done (the files present at start)."""
        try:
            self._dir_mtime = os.stat(self.folder).st_mtime_ns
            names = []
            with os.scandir(self.folder) as it:
                for e in it:
                    if e.name.startswith(".") or not is_image_file(e.name):
                        continue
                    names.append(e.name)
                    if note_existing:
                        try:
                            self._mark_done(e.name, e.stat())
                        except OSError:
                            self._mark_done(e.name)
        except OSError as exc:
            log.warning("%s: cannot list (%s)", self.folder, exc)
            self._dir_mtime = None
            return []
        self.scans += 1
        self._last_full = self._clock()
        return names

    @property
    def watching(self) -> bool:
        """True while file-system events (not polling) tell the source what changed."""
        return self._events is not None and self._events.alive

    def _start_events(self) -> None:
        if self._events is not None or self._use_events is False:
            return
        try:
            self._events = _FolderEvents(self.folder)
        except Exception as exc:  # noqa: BLE001 - e.g. inotify watch limit reached: poll instead
            if self._use_events:
                raise SourceError(f"{self.folder}: cannot watch for file events ({exc})") from exc
            log.info("%s: file events unavailable (%s); polling every %.1f s", self.folder, exc, self.poll_s)
            self._use_events = False

    def _stop_events(self) -> None:
        if self._events is not None:
            self._events.stop()
            self._events = None

    def close(self) -> None:
        super().close()
        self._stop_events()

    # ---------------------------------------------------------------- polling
    def _candidates(self, now: float) -> set[str]:
        """Names worth a ``stat`` this round: new or changed names, pending and given-up files."""
        names = set(self._pending) | set(self._gave_up)
        events = self._events  # close() may clear it from another thread
        if events is not None and events.alive:
            names |= events.drain()
            if now - self._last_full >= self.rescan_s:
                names |= {n for n in self._list() if n not in self._done}
            return names
        try:
            dir_mtime = os.stat(self.folder).st_mtime_ns
        except OSError as exc:
            log.warning("%s: cannot read the folder (%s)", self.folder, exc)
            return names
        # unchanged folder mtime: no name was added, removed or renamed (rescanned now and then
        # anyway, for file systems with coarse timestamps)
        if dir_mtime != self._dir_mtime or now - self._last_full >= self.rescan_s:
            listed = self._list()
            present = set(listed)
            for gone in [n for n in self._done if n not in present]:
                del self._done[gone]
            names |= {n for n in listed if n not in self._done}
        return names

    def poll(self) -> list[Frame]:
        """One round: the frames of the files that became ready since the last call (deferred)."""
        now = self._clock()
        ready: list[Frame] = []
        for name in sorted(self._candidates(now)):
            path = self.folder / name
            try:
                st = os.stat(path)
            except OSError as exc:
                self._pending.pop(name, None)
                self._gave_up.pop(name, None)
                try:  # a broken symlink or a symlink loop: report it once
                    lst = os.lstat(path)
                except OSError:  # vanished: forget the name (its id stays known, so renamed back it is still done)
                    self._done.pop(name, None)
                    continue
                if self._done.get(name) != _file_id(lst):
                    self._mark_done(name, lst)
                    ready.append(self._error(path, f"{path}: cannot read ({describe_os_error(exc)})"))
                continue
            fid = _file_id(st)
            if self._done.get(name) == fid:
                self._pending.pop(name, None)
                continue
            if fid in self._done_ids:  # renamed: the same file under a new name
                self._done[name] = fid
                self._pending.pop(name, None)
                continue
            if not stat.S_ISREG(st.st_mode):
                self._mark_done(name, st)
                ready.append(self._error(path, f"{path}: is {file_kind(st.st_mode)}, not a regular file; "
                                               "only image files are inspected"))
                continue
            sig = (st.st_size, st.st_mtime_ns)
            if name in self._gave_up:
                if self._gave_up[name] == sig:
                    continue  # still the same unreadable file
                del self._gave_up[name]  # the writer resumed: wait for it again
            prev = self._pending.get(name)
            if prev is None or prev[:2] != sig:
                self._pending[name] = (*sig, now)
                continue
            if len(ready) >= self.max_batch:
                continue  # bounded: the rest is taken next round
            stable_for = now - prev[2]
            if stable_for < self.settle_s:
                continue
            try:
                probe_image(path)
            except ImageReadError as exc:
                if stable_for < self.give_up_s:
                    continue  # maybe still being written by a writer that pre-allocates; wait
                del self._pending[name]
                self._gave_up[name] = sig
                ready.append(self._error(path, str(exc)))
                continue
            except Exception as exc:  # noqa: BLE001 - a decoder bug must not stop the line
                log.exception("unexpected error probing %s", path)
                del self._pending[name]
                self._gave_up[name] = sig
                ready.append(self._error(path, f"{path}: cannot read ({exc})"))
                continue
            del self._pending[name]
            self._mark_done(name, st)
            ready.append(Frame(None, self.source_id, time.time(), path, self._next_index(), deferred=True))
        return ready

    def _next_index(self) -> int:
        self._index += 1
        return self._index - 1

    def _error(self, path: Path, message: str) -> Frame:
        return Frame(None, self.source_id, time.time(), path, self._next_index(), message)

    def __iter__(self) -> Iterator[Frame]:
        self._start_events()
        self._last_full = -float("inf")  # list once now: files created before the watch began
        try:
            while not self.closed:
                yield from self.poll()
                self._stop.wait(self.poll_s)
        finally:
            self._stop_events()


# --------------------------------------------------------------------------- cameras
CAMERA_OPEN_TIMEOUT_S = 10.0
"""How long opening a camera or stream may take before it is reported and retried."""
CAMERA_READ_TIMEOUT_S = 5.0
"""How long a frame may take before the stream counts as stalled (reported, then reconnected)."""


def _open_capture(target: int | str, open_timeout_s: float, read_timeout_s: float) -> Any:
    """``cv2.VideoCapture`` with the backend's own open and read timeouts set (FFmpeg, GStreamer …)."""
    params = [
        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(open_timeout_s * 1000),
        cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(read_timeout_s * 1000),
    ]
    return cv2.VideoCapture(target, cv2.CAP_ANY, params)


def camera_open_failure(target: int | str, timed_out: bool, timeout_s: float) -> str:
    """Why a camera or stream could not be opened, as far as can be told, and what to check."""
    if timed_out:
        return f"no answer within {timeout_s:.0f} s; check that the camera is on and reachable"
    if isinstance(target, int):
        dev = Path(f"/dev/video{target}")
        if os.name == "posix" and Path("/dev").is_dir():
            if not dev.exists():
                return f"no device {dev}; check that the camera is plugged in (or pick another index)"
            if not os.access(dev, os.R_OK | os.W_OK):
                return f"no permission to open {dev}; add the station's user to the 'video' group"
            return f"{dev} exists but could not be opened; it may be in use by another program"
        return f"camera index {target} could not be opened; check that it is plugged in and not in use"
    parts = urllib.parse.urlsplit(target)
    if parts.scheme and parts.netloc:
        return (f"could not connect to {parts.scheme}://{parts.hostname or parts.netloc}"
                f"{':' + str(parts.port) if parts.port else ''}; check the address, the network and the credentials")
    if not Path(target).exists():
        return f"{target} is neither a device index, a stream URL nor an existing file"
    return "the video backend could not open it (unsupported format or codec?)"


class _CaptureThread:
    """One camera connection driven by its own thread, so that a stalled open or read never blocks
    the source: the caller waits with a timeout and can give up; the thread releases the device
    when the blocked call returns (the backend's own timeouts bound that)."""

    def __init__(self, open_fn: Callable[[], Any]) -> None:
        self._requests: queue.Queue[bool] = queue.Queue()
        self._results: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._open_fn = open_fn
        self._thread = threading.Thread(target=self._run, name="camera reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        cap = None
        try:
            try:
                cap = self._open_fn()
                opened = cap is not None and bool(cap.isOpened())
            except Exception as exc:  # noqa: BLE001 - reported as a failed open
                self._results.put(("open", exc))
                return
            self._results.put(("open", opened))
            if not opened:
                return
            while self._requests.get():
                try:
                    self._results.put(("frame", cap.read()))
                except Exception as exc:  # noqa: BLE001 - reported as a drop
                    self._results.put(("frame", exc))
        finally:
            if cap is not None:
                try:
                    cap.release()
                except Exception:  # noqa: BLE001
                    log.debug("camera release failed", exc_info=True)

    def wait(self, timeout_s: float, stop: threading.Event) -> tuple[str, Any] | None:
        """The next result, or None after ``timeout_s`` or when ``stop`` is set (checked every 50 ms)."""
        deadline = time.monotonic() + timeout_s
        while not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                return self._results.get(timeout=min(0.05, left))
            except queue.Empty:
                continue
        return None

    def request_frame(self) -> None:
        self._requests.put(True)

    def close(self) -> None:
        self._requests.put(False)


class CameraSource(Source):
    """An OpenCV camera (device index) or stream URL; survives drops and stalls by reconnecting.

    Opening may take ``open_timeout_s`` and each frame ``read_timeout_s`` (both also passed to the
    backend as ``CAP_PROP_OPEN_TIMEOUT_MSEC`` / ``CAP_PROP_READ_TIMEOUT_MSEC``). A failed open is
    reported with the reason (no such device, permission, unreachable host, timeout); a failed or
    stalled read is reported as a drop. Then the device is released, the source waits ``backoff``
    seconds (doubling up to ``max_backoff``) and reopens. :meth:`close` ends the iteration within
    about 50 ms even while a read is blocked. ``reconnects`` counts the drops.
    """

    live = True

    def __init__(
        self,
        target: int | str,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        fps_limit: float | None = None,
        opener: Callable[[int | str], Any] | None = None,
        open_timeout_s: float = CAMERA_OPEN_TIMEOUT_S,
        read_timeout_s: float = CAMERA_READ_TIMEOUT_S,
    ) -> None:
        if isinstance(target, str) and target.strip().isdigit():
            target = int(target.strip())
        super().__init__(f"camera:{target}")
        self.target = target
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.fps_limit = fps_limit
        self.open_timeout_s = open_timeout_s
        self.read_timeout_s = read_timeout_s
        self._opener = opener
        self.reconnects = 0
        self._index = 0

    def _connect(self) -> _CaptureThread:
        if self._opener is not None:
            opener = self._opener
            return _CaptureThread(lambda: opener(self.target))
        return _CaptureThread(lambda: _open_capture(self.target, self.open_timeout_s, self.read_timeout_s))

    def _frame_from(self, bgr: np.ndarray) -> Frame:
        frame = Frame(to_rgb_uint8(bgr), self.source_id, time.time(), None, self._index)
        self._index += 1
        return frame

    def _error(self, message: str) -> Frame:
        return Frame(None, self.source_id, time.time(), None, self._index, message)

    def __iter__(self) -> Iterator[Frame]:
        delay = self.backoff
        cap: _CaptureThread | None = None
        last = 0.0
        try:
            while not self.closed:
                if cap is None:
                    cap = self._connect()
                    got = cap.wait(self.open_timeout_s, self._stop)
                    if self.closed:
                        break
                    if got is None or got[1] is not True:
                        if isinstance(got, tuple) and isinstance(got[1], Exception):
                            why = f"{type(got[1]).__name__}: {got[1]}"
                        else:
                            why = camera_open_failure(self.target, got is None, self.open_timeout_s)
                        cap.close()
                        cap = None
                        yield self._error(f"{self.source_id}: cannot open ({why}); retrying in {delay:.1f} s")
                        self._stop.wait(delay)
                        delay = min(delay * 2, self.max_backoff)
                        continue
                cap.request_frame()
                got = cap.wait(self.read_timeout_s, self._stop)
                if self.closed:
                    break
                result = got[1] if got is not None else None
                if not isinstance(result, tuple) or not result[0] or result[1] is None:
                    cap.close()
                    cap = None
                    self.reconnects += 1
                    why = (f"no frame for {self.read_timeout_s:.0f} s (stream stalled)" if got is None
                           else f"read failed ({result})" if isinstance(result, Exception) else "connection lost")
                    yield self._error(f"{self.source_id}: {why}; reconnecting in {delay:.1f} s")
                    self._stop.wait(delay)
                    delay = min(delay * 2, self.max_backoff)
                    continue
                delay = self.backoff
                if self.fps_limit:
                    wait = 1.0 / self.fps_limit - (time.monotonic() - last)
                    if wait > 0 and self._stop.wait(wait):
                        break
                    last = time.monotonic()
                yield self._frame_from(result[1])
        finally:
            if cap is not None:
                cap.close()


class VideoFileSource(Source):
    """A video file played like a camera: paced at its frame rate (``realtime``), optional loop."""

    live = True

    def __init__(self, path: str | Path, realtime: bool = True, loop: bool = False) -> None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise SourceError(f"{p}: video file not found")
        super().__init__(f"video:{p}")
        self.path = p
        self.realtime = realtime
        self.loop = loop

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        while not self.closed:
            cap = cv2.VideoCapture(str(self.path))
            if not cap.isOpened():
                yield Frame(None, self.source_id, time.time(), self.path, index, f"{self.path}: cannot open video")
                return
            fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
            period = 1.0 / fps if self.realtime and fps > 0 else 0.0
            t_next = time.monotonic()
            try:
                while not self.closed:
                    ok, bgr = cap.read()
                    if not ok or bgr is None:
                        break
                    if period:
                        t_next += period
                        wait = t_next - time.monotonic()
                        if wait > 0 and self._stop.wait(wait):
                            return
                    yield Frame(to_rgb_uint8(bgr), self.source_id, time.time(), self.path, index)
                    index += 1
            finally:
                cap.release()
            if not self.loop:
                return


# --------------------------------------------------------------------------- GenICam
def _genicam_to_rgb(data: np.ndarray, width: int, height: int, fmt: str) -> np.ndarray:
    """Convert a GenICam buffer component to RGB uint8 (common PFNC formats)."""
    fmt_l = fmt.lower()
    if fmt_l.startswith("bayer"):
        code = {
            "rg": cv2.COLOR_BayerRGGB2RGB, "gr": cv2.COLOR_BayerGRBG2RGB,
            "gb": cv2.COLOR_BayerGBRG2RGB, "bg": cv2.COLOR_BayerBGGR2RGB,
        }[fmt_l[5:7]]
        raw = data.reshape(height, width)
        if raw.dtype != np.uint8:
            raw = to_rgb_uint8(raw)[:, :, 0]
        return cv2.cvtColor(raw, code)
    channels = data.size // max(width * height, 1)
    arr = data.reshape(height, width, channels) if channels > 1 else data.reshape(height, width)
    if channels == 1:
        return to_rgb_uint8(arr)
    rgb = arr[:, :, :3]
    if fmt_l.startswith("bgr"):
        rgb = rgb[:, :, ::-1]
    return to_rgb_uint8(np.ascontiguousarray(rgb[:, :, ::-1]))  # to_rgb_uint8 expects BGR order


def default_cti() -> Path | None:
    """The simulated GenTL producer shipped with the ``genicam`` wheel, if installed."""
    try:
        import genicam  # type: ignore[import-not-found]
    except ImportError:
        return None
    cand = Path(genicam.__file__).parent / "viky.cti"
    return cand if cand.is_file() else None


class GenICamSource(Source):
    """A GenICam (GigE Vision / USB3 Vision) camera via ``harvesters`` and a GenTL producer (.cti).

    ``device`` is an index into the discovered devices or a serial number. Fetch timeouts are
    reported as error frames and the acquisition is restarted with backoff.
    """

    live = True

    def __init__(
        self, cti: str | Path | None = None, device: int | str = 0, timeout_s: float = 3.0,
        backoff: float = 0.5, max_backoff: float = 8.0,
    ) -> None:
        try:
            from harvesters.core import Harvester  # type: ignore[import-not-found]  # noqa: F401
        except ImportError:
            raise SourceError(
                "GenICam cameras need the optional packages: pip install 'inspector[genicam]'"
            ) from None
        cti_path = Path(cti) if cti else default_cti()
        if cti_path is None or not cti_path.is_file():
            raise SourceError(f"GenTL producer {cti_path or '(none)'} not found; pass the camera vendor's .cti file")
        super().__init__(f"genicam:{cti_path.name}#{device}")
        self.cti = cti_path
        self.device = int(device) if isinstance(device, str) and device.isdigit() else device
        self.timeout_s = timeout_s
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.reconnects = 0

    def _create(self, harvester: Any) -> Any:
        if isinstance(self.device, int):
            if self.device >= len(harvester.device_info_list):
                raise SourceError(f"{self.source_id}: no device {self.device} ({len(harvester.device_info_list)} found)")
            return harvester.create(self.device)
        return harvester.create({"serial_number": str(self.device)})

    def __iter__(self) -> Iterator[Frame]:
        from harvesters.core import Harvester  # type: ignore[import-not-found]

        harvester = Harvester()
        harvester.add_file(str(self.cti))
        harvester.update()
        index = 0
        delay = self.backoff
        acquirer = None
        try:
            while not self.closed:
                try:
                    if acquirer is None:
                        acquirer = self._create(harvester)
                        acquirer.start()
                    with acquirer.fetch(timeout=self.timeout_s) as buf:
                        comp = buf.payload.components[0]
                        rgb = _genicam_to_rgb(comp.data, comp.width, comp.height, str(comp.data_format))
                    delay = self.backoff
                    yield Frame(rgb, self.source_id, time.time(), None, index)
                    index += 1
                except SourceError:
                    raise
                except Exception as exc:  # noqa: BLE001 - any transport error means: reconnect
                    self.reconnects += 1
                    yield Frame(None, self.source_id, time.time(), None, index,
                                f"{self.source_id}: {type(exc).__name__}: {exc}; reconnecting in {delay:.1f} s")
                    if acquirer is not None:
                        try:
                            acquirer.destroy()
                        except Exception:  # noqa: BLE001
                            pass
                        acquirer = None
                    self._stop.wait(delay)
                    delay = min(delay * 2, self.max_backoff)
        finally:
            if acquirer is not None:
                try:
                    acquirer.stop()
                    acquirer.destroy()
                except Exception:  # noqa: BLE001
                    log.debug("genicam cleanup failed", exc_info=True)
            harvester.reset()


# --------------------------------------------------------------------------- factory
def open_source(kind: str, target: str) -> Source:
    """Open a source by kind (``folder``, ``hot``, ``camera``, ``video``, ``genicam``) and target.

    For ``genicam`` the target is ``[path/to/producer.cti][#device]`` (empty = simulator, device 0).
    """
    kind = kind.lower().strip()
    target = target.strip()
    if kind == "folder":
        return FolderSource(target)
    if kind in ("hot", "hotfolder", "hot folder"):
        return HotFolderSource(target)
    if kind == "camera":
        if not target:
            raise SourceError("camera: give a device index (0, 1, ...) or a stream URL")
        return CameraSource(target)
    if kind == "video":
        return VideoFileSource(target, realtime=True, loop=True)
    if kind == "genicam":
        cti, _, dev = target.partition("#")
        return GenICamSource(cti or None, dev or 0)
    raise SourceError(f"unknown source kind {kind!r}; choose one of {', '.join(SOURCE_KINDS)}")


# --------------------------------------------------------------------------- grabbing
GRABBER_MAX_PENDING = 64
"""Most frames a keep-all grabber holds (hot folders: paths, decoded on take)."""


class FrameGrabber:
    """Runs a source in a daemon thread and buffers its frames for one consumer.

    ``keep_all=False`` (cameras): one slot, the newest frame overwrites an untaken one and
    ``dropped`` counts the overwritten frames — the consumer never falls behind.
    ``keep_all=True`` (hot folders): a FIFO of at most ``max_pending`` frames; when it is full
    the source waits (files wait on disk), so nothing is dropped and memory stays bounded.
    Deferred frames (paths) are decoded by :meth:`take`, i.e. in the consumer's thread.
    ``on_frame`` is called (from the grabber thread) when the buffer goes from empty to
    non-empty, so a consumer can sleep until there is work.
    """

    def __init__(self, source: Source, on_frame: Callable[[], None] | None = None,
                 keep_all: bool | None = None, max_pending: int = GRABBER_MAX_PENDING) -> None:
        self.source = source
        self.keep_all = (not source.live) if keep_all is None else keep_all
        self.max_pending = max(1, max_pending)
        self._on_frame = on_frame
        self._buf: deque[Frame] = deque()
        self._lock = threading.Lock()
        self._space = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self.dropped = 0
        self.received = 0
        self.finished = threading.Event()
        self.failure: str | None = None

    def start(self) -> FrameGrabber:
        self._thread = threading.Thread(target=self._run, name=f"grab {self.source.source_id}", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        frames = iter(self.source)
        try:
            for frame in frames:
                with self._lock:
                    while self.keep_all and len(self._buf) >= self.max_pending and not self.source.closed:
                        self._space.wait(0.1)  # bounded: wait for the consumer (stop() wakes us)
                    if self.source.closed:
                        break
                    was_empty = not self._buf
                    if not self.keep_all and self._buf:
                        self.dropped += len(self._buf)
                        self._buf.clear()
                    self._buf.append(frame)
                    self.received += 1
                if was_empty and self._on_frame is not None:
                    self._on_frame()
        except Exception as exc:  # noqa: BLE001 - reported to the consumer, never raised in a thread
            log.exception("source %s failed", self.source.source_id)
            self.failure = f"{self.source.source_id}: {exc}"
        finally:
            close = getattr(frames, "close", None)
            if close is not None:  # run the source's own clean-up (watchers, devices) now
                try:
                    close()
                except Exception:  # noqa: BLE001
                    log.debug("closing source %s failed", self.source.source_id, exc_info=True)
            self.finished.set()
            if self._on_frame is not None:
                self._on_frame()

    def take(self) -> Frame | None:
        """The next frame (a deferred hot-folder frame is decoded here), or None."""
        with self._lock:
            if not self._buf:
                return None
            frame = self._buf.popleft()
            self._space.notify()
        return frame.resolve()

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._buf)

    def stop(self, timeout: float = 5.0) -> None:
        self.source.close()
        with self._lock:
            self._space.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("source %s did not stop within %.1f s", self.source.source_id, timeout)
