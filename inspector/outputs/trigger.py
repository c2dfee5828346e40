"""What an OPC UA Trigger does: grab one frame from the camera source, inspect it, answer OK/NG/NO-READ."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol

from inspector.outputs.opcua import TriggerResult
from inspector.sources import Frame

log = logging.getLogger(__name__)


class _Inspects(Protocol):  # inspector.inspection.Inspector, without importing the pipelines here
    def inspect(self, image: Any, image_path: Any = None, image_sha256: str | None = None) -> Any: ...


class FrameGrabber:
    """Pulls the next frame from a source's iterator on demand (thread-safe); None when it ends."""

    def __init__(self, source: Iterable[Frame]) -> None:
        self._it: Iterator[Frame] = iter(source)
        self._lock = threading.Lock()

    def __call__(self) -> Frame | None:
        with self._lock:
            frame = next(self._it, None)
        return frame.resolve() if frame is not None else None  # hot folders queue paths (deferred frames)


class InspectOnTrigger:
    """A :data:`~inspector.outputs.opcua.TriggerHandler` over a frame grabber and one inspector per recipe.

    ``on_inspection(recipe, frame, inspection)`` is called after each good inspection (the station
    records it there); ``on_no_read(recipe, frame, reason)`` for a missing or unreadable frame.
    """

    def __init__(self, grab: Callable[[], Frame | None], inspectors: Mapping[str, _Inspects],
                 on_inspection: Callable[[str, Frame, Any], None] | None = None,
                 on_no_read: Callable[[str, Frame | None, str], None] | None = None) -> None:
        self.grab = grab
        self.inspectors = dict(inspectors)
        self.on_inspection = on_inspection
        self.on_no_read = on_no_read

    def __call__(self, index: int, recipe: str) -> TriggerResult:
        inspector = self.inspectors.get(recipe)
        if inspector is None:
            return self._no_read(recipe, None, f"recipe {recipe!r} has no inspector on this station")
        frame = self.grab()
        if frame is None:
            return self._no_read(recipe, None, "the camera source delivered no frame")
        if not frame.ok:
            return self._no_read(recipe, frame, frame.error or "unreadable frame")
        ins = inspector.inspect(frame.image, frame.path)
        if self.on_inspection is not None:
            self.on_inspection(recipe, frame, ins)
        return TriggerResult("OK" if ins.verdict == "PASS" else "NG", float(ins.image_score), "")

    def _no_read(self, recipe: str, frame: Frame | None, reason: str) -> TriggerResult:
        log.warning("OPC UA trigger (%s): NO-READ: %s", recipe, reason)
        if self.on_no_read is not None:
            self.on_no_read(recipe, frame, reason)
        return TriggerResult("NO-READ", 0.0, reason)
