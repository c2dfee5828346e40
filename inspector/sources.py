"""Where images come from: iterators of :class:`Frame` (Qt-free, torch-free).

=====================  ==========================================================================
source                 behaviour
=====================  ==========================================================================
:class:`FolderSource`  a fixed, sorted list of image files with next / previous / seek
:class:`HotFolderSource`  files that appear while running; a file is read only once its size and
                       mtime are stable and it decodes (a copy in progress is never read half-way)
:class:`CameraSource`  OpenCV ``VideoCapture`` (device index or URL); reconnects with backoff after
                       a drop and reports the drop as an error frame
:class:`VideoFileSource`  a video file paced at its frame rate (exercises the camera path in tests)
:class:`GenICamSource` GigE/USB3 Vision cameras through ``harvesters`` (``pip install inspector[genicam]``)
=====================  ==========================================================================

Nothing here raises on a bad image: a frame that cannot be read is a :class:`Frame` whose
``error`` says which file and why, and whose ``image`` is ``None``.

Live sources block while waiting for the next frame; :meth:`Source.close` (from any thread)
ends the iteration promptly. :class:`FrameGrabber` runs a source in a thread and hands frames
to a consumer either *latest wins* (cameras: no backlog, overwritten frames are counted as
dropped) or *keep all* (hot folders: every file is inspected).
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from inspector.imaging import ImageReadError, is_image_file, list_images, read_image, to_rgb_uint8

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

    @property
    def ok(self) -> bool:
        return self.error is None and self.image is not None

    @property
    def name(self) -> str:
        return self.path.name if self.path is not None else f"{self.source_id}#{self.index}"


def read_frame(path: Path, source_id: str, index: int) -> Frame:
    """Read one file into a frame; unreadable files give a frame carrying the error."""
    try:
        image = read_image(path)
    except ImageReadError as exc:
        return Frame(None, source_id, time.time(), path, index, str(exc))
    except Exception as exc:  # noqa: BLE001 - a decoder bug must not stop the line
        log.exception("unexpected error reading %s", path)
        return Frame(None, source_id, time.time(), path, index, f"{path}: cannot read ({exc})")
    return Frame(image, source_id, time.time(), path, index)


def ground_truth_path(image_path: str | Path) -> Path | None:
    """Ground-truth mask of an image in MVTec-AD layout, if present.

    ``<cat>/test/<defect>/<stem>.png`` → ``<cat>/ground_truth/<defect>/<stem>_mask.png``.
    """
    p = Path(image_path)
    if len(p.parts) < 3 or p.parent.parent.name != "test":
        return None
    gt_dir = p.parent.parent.parent / "ground_truth" / p.parent.name
    for cand in (gt_dir / f"{p.stem}_mask.png", gt_dir / f"{p.stem}.png"):
        if cand.is_file():
            return cand
    return None


def read_ground_truth(image_path: str | Path, shape_hw: tuple[int, int]) -> np.ndarray | None:
    """Bool mask of the ground truth for ``image_path`` at ``shape_hw``, or ``None`` when unknown."""
    gt = ground_truth_path(image_path)
    if gt is None:
        return None
    try:
        mask = read_image(gt)[:, :, 0] > 127
    except ImageReadError as exc:
        log.warning("ground truth unreadable: %s", exc)
        return None
    if mask.shape != tuple(shape_hw):
        mask = cv2.resize(mask.astype(np.uint8), (shape_hw[1], shape_hw[0]), interpolation=cv2.INTER_NEAREST) > 0
    return mask


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


class HotFolderSource(Source):
    """New image files in a folder, each yielded once, only after the copy into it has finished.

    A file is *ready* when its size and mtime have not changed for ``settle_s`` and it decodes.
    A file that still fails to decode ``give_up_s`` after it stopped changing is reported as an
    error frame (so a truly corrupt file is not waited for forever). Files present when the
    source starts are skipped unless ``include_existing``.
    """

    def __init__(
        self,
        folder: str | Path,
        poll_s: float = 0.2,
        settle_s: float = 0.3,
        give_up_s: float = 10.0,
        include_existing: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        root = Path(folder).expanduser()
        if not root.is_dir():
            raise SourceError(f"{root}: hot folder not found; create it or pick another folder")
        super().__init__(f"hot:{root}")
        self.folder = root
        self.poll_s = poll_s
        self.settle_s = settle_s
        self.give_up_s = give_up_s
        self._clock = clock
        self._done: set[Path] = set() if include_existing else set(self._scan())
        # path -> (size, mtime_ns, time the pair was first seen)
        self._pending: dict[Path, tuple[int, int, float]] = {}
        self._index = 0

    def _scan(self) -> list[Path]:
        try:
            return sorted(p for p in self.folder.iterdir() if is_image_file(p) and not p.name.startswith("."))
        except OSError as exc:
            log.warning("%s: cannot list (%s)", self.folder, exc)
            return []

    def poll(self) -> list[Frame]:
        """One scan: the frames of the files that became ready since the last call."""
        now = self._clock()
        ready: list[Frame] = []
        present = set()
        for path in self._scan():
            if path in self._done:
                continue
            present.add(path)
            try:
                st = path.stat()
            except OSError:
                continue  # vanished between listing and stat
            sig = (st.st_size, st.st_mtime_ns)
            prev = self._pending.get(path)
            if prev is None or prev[:2] != sig:
                self._pending[path] = (*sig, now)
                continue
            stable_for = now - prev[2]
            if stable_for < self.settle_s or st.st_size == 0 and stable_for < self.give_up_s:
                continue
            frame = read_frame(path, self.source_id, self._index)
            if frame.error is not None and stable_for < self.give_up_s:
                continue  # maybe still being written by a writer that pre-allocates; wait
            self._done.add(path)
            del self._pending[path]
            self._index += 1
            ready.append(frame)
        for gone in set(self._pending) - present:
            del self._pending[gone]
        return ready

    def __iter__(self) -> Iterator[Frame]:
        while not self.closed:
            yield from self.poll()
            self._stop.wait(self.poll_s)


# --------------------------------------------------------------------------- cameras
class CameraSource(Source):
    """An OpenCV camera (device index) or stream URL; survives drops by reconnecting.

    When a read fails the source yields one error frame describing the drop, releases the
    device, waits ``backoff`` seconds (doubling up to ``max_backoff``; interrupted by
    :meth:`close`) and reopens. ``reconnects`` counts the drops.
    """

    live = True

    def __init__(
        self,
        target: int | str,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        fps_limit: float | None = None,
        opener: Callable[[int | str], Any] | None = None,
    ) -> None:
        if isinstance(target, str) and target.strip().isdigit():
            target = int(target.strip())
        super().__init__(f"camera:{target}")
        self.target = target
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.fps_limit = fps_limit
        self._opener = opener or cv2.VideoCapture
        self.reconnects = 0
        self._index = 0

    def _open(self) -> Any | None:
        cap = self._opener(self.target)
        if cap is None or not cap.isOpened():
            if cap is not None:
                cap.release()
            return None
        return cap

    def _frame_from(self, bgr: np.ndarray) -> Frame:
        frame = Frame(to_rgb_uint8(bgr), self.source_id, time.time(), None, self._index)
        self._index += 1
        return frame

    def _error(self, message: str) -> Frame:
        return Frame(None, self.source_id, time.time(), None, self._index, message)

    def __iter__(self) -> Iterator[Frame]:
        delay = self.backoff
        cap = None
        last = 0.0
        try:
            while not self.closed:
                if cap is None:
                    cap = self._open()
                    if cap is None:
                        yield self._error(f"{self.source_id}: cannot open; retrying in {delay:.1f} s")
                        self._stop.wait(delay)
                        delay = min(delay * 2, self.max_backoff)
                        continue
                ok, bgr = cap.read()
                if not ok or bgr is None:
                    cap.release()
                    cap = None
                    self.reconnects += 1
                    yield self._error(f"{self.source_id}: connection lost; reconnecting in {delay:.1f} s")
                    self._stop.wait(delay)
                    delay = min(delay * 2, self.max_backoff)
                    continue
                delay = self.backoff
                if self.fps_limit:
                    wait = 1.0 / self.fps_limit - (time.monotonic() - last)
                    if wait > 0 and self._stop.wait(wait):
                        break
                    last = time.monotonic()
                yield self._frame_from(bgr)
        finally:
            if cap is not None:
                cap.release()


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
class FrameGrabber:
    """Runs a source in a daemon thread and buffers its frames for one consumer.

    ``keep_all=False`` (cameras): one slot, the newest frame overwrites an untaken one and
    ``dropped`` counts the overwritten frames — the consumer never falls behind.
    ``keep_all=True`` (hot folders): a FIFO; nothing is dropped.
    ``on_frame`` is called (from the grabber thread) when the buffer goes from empty to
    non-empty, so a consumer can sleep until there is work.
    """

    def __init__(self, source: Source, on_frame: Callable[[], None] | None = None,
                 keep_all: bool | None = None) -> None:
        self.source = source
        self.keep_all = (not source.live) if keep_all is None else keep_all
        self._on_frame = on_frame
        self._buf: deque[Frame] = deque()
        self._lock = threading.Lock()
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
        try:
            for frame in self.source:
                with self._lock:
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
            self.finished.set()
            if self._on_frame is not None:
                self._on_frame()

    def take(self) -> Frame | None:
        with self._lock:
            return self._buf.popleft() if self._buf else None

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._buf)

    def stop(self, timeout: float = 5.0) -> None:
        self.source.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("source %s did not stop within %.1f s", self.source.source_id, timeout)
