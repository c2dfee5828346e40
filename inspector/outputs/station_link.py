"""The station's OPC UA link: a PLC Trigger inspects the next frame of the operator's source.

:class:`OpcUaLink` owns the :class:`~inspector.outputs.opcua.OpcUaStation` server of the
``outputs.opcua`` section and answers its Triggers with the station's own worker, so the PLC
and the operator see the same inspection (one detector, one thread: the trigger's frame is a
task in the worker's queue, in order with the operator's tasks).

While the link is on, a source the operator starts is not streamed: it is *attached* here and a
frame is taken only when the PLC triggers:

* a hot folder or a folder: the next file, in order;
* a camera, video or GenICam source: the first frame captured after the Trigger.

Each Trigger is then one part of the operator's review (a stream, reviewed in order):

1. ``RecipeIndex`` names a profile of ``outputs.opcua.recipes``; when it is not the loaded one
   the worker loads it first (the operator view switches to it, as if picked by hand);
2. the frame is inspected; the PLC gets ``OK`` (automatic PASS) or ``NG`` (FAIL) and the image
   score at once; it does not wait for the operator;
3. the part appears on the operator screen, who decides PASS/FAIL as usual; the decision row
   (automatic verdict + the operator's) is recorded and sent to MQTT / webhook like any other.

A Trigger without a frame (none within ``grab_timeout_s``), a frame that cannot be read, a
recipe whose profile does not load and a pipeline failure answer ``NO-READ`` (reason in
``Error``) and are recorded as NO-READ rows. A Trigger while no source runs answers NO-READ and
records nothing (there is no part); so does an unknown ``RecipeIndex`` (the server answers it).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, Protocol

from inspector.outputs.config import OpcUaOutput
from inspector.outputs.opcua import OpcUaError, OpcUaStation, TriggerResult
from inspector.sources import Frame, FrameGrabber, Source

log = logging.getLogger(__name__)

State = Literal["off", "starting", "listening", "failed"]


class StationWorker(Protocol):  # inspector.ui.worker.StationWorker, without importing Qt here
    def inspect_frame(self, frame: Frame, key: int | None = None, profile: Path | None = None,
                      done: Callable[[Any], None] | None = None) -> None: ...


class OpcUaLink:
    """The OPC UA server of ``config`` answering Triggers through ``worker`` (see module docstring)."""

    def __init__(self, config: OpcUaOutput, recipes: Mapping[str, Path]) -> None:
        self.config = config
        self.recipes = dict(recipes)  # profile name (what ``Recipe`` shows) -> profile folder, in index order
        self.state: State = "off"
        self.error = ""
        self.triggers = 0
        self.last = ""  # "NG 0.731 demo_washer" / "NO-READ: why", for the status bar
        self.server: OpcUaStation | None = None
        self._worker: StationWorker | None = None
        self._grabber: FrameGrabber | None = None
        self._key = 0
        self._lock = threading.Lock()
        self._arrived = threading.Event()
        self._waiting: set[threading.Event] = set()
        self._closed = False

    @property
    def endpoint(self) -> str:
        return self.config.endpoint

    # ------------------------------------------------------------------ lifecycle (UI thread)
    def start(self, worker: StationWorker, on_state: Callable[[], None] | None = None) -> None:
        """Start the server in the background (binding takes seconds); ``state`` tells how it went.

        A server that cannot bind (port in use) leaves ``state == "failed"`` and ``error`` saying why;
        the station runs on without it. ``on_state`` is called (from another thread) when it changes."""
        self._worker = worker
        self.server = OpcUaStation(self, list(self.recipes), endpoint=self.config.endpoint, poll_s=self.config.poll_s)
        self.state = "starting"
        server = self.server

        def run() -> None:
            try:
                server.start()
            except OpcUaError as exc:
                server.stop(timeout_s=1.0)
                self.state, self.error = "failed", str(exc)
                log.error("%s; the station runs without the PLC link", exc)
            else:
                self.state = "listening"
            if on_state is not None:
                on_state()

        threading.Thread(target=run, name="opcua-start", daemon=True).start()

    def close(self) -> None:
        """Stop the server; a Trigger being answered gets NO-READ at once."""
        with self._lock:
            self._closed = True
            for ev in self._waiting:
                ev.set()
        self.detach()
        if self.server is not None:
            self.server.stop()
        self.state = "off"

    def attach(self, source: Source) -> None:
        """Take frames from ``source`` at each Trigger (instead of streaming it); a new run of parts."""
        self.detach()
        grabber = FrameGrabber(source, on_frame=self._arrived.set, max_pending=1)  # memory: one frame ahead
        with self._lock:
            self._grabber = grabber
            self._key = 0
        grabber.start()

    def detach(self) -> None:
        with self._lock:
            grabber, self._grabber = self._grabber, None
        if grabber is not None:
            grabber.stop()

    @property
    def attached(self) -> bool:
        return self._grabber is not None

    # ------------------------------------------------------------------ Trigger (server thread)
    def __call__(self, index: int, recipe: str) -> TriggerResult:
        res = self._answer(recipe)
        self.triggers += 1
        self.last = (f"{res.result} {res.score:.3f} {recipe}" if res.result != "NO-READ"
                     else f"NO-READ ({recipe}): {res.error}")
        return res

    def _answer(self, recipe: str) -> TriggerResult:
        worker, folder = self._worker, self.recipes.get(recipe)
        with self._lock:
            grabber = self._grabber
            closed = self._closed
            self._key += 1
            key = self._key
        if closed or worker is None:
            return TriggerResult("NO-READ", 0.0, "the station is closing")
        if folder is None:
            return TriggerResult("NO-READ", 0.0, f"recipe {recipe!r} is not a profile of this station")
        if grabber is None:
            return TriggerResult("NO-READ", 0.0, "no source is running at the station: the operator starts one (F5)")
        frame = self._grab(grabber, key)
        done = threading.Event()
        box: list[Any] = []

        def finished(res: Any) -> None:
            box.append(res)
            done.set()

        with self._lock:
            self._waiting.add(done)
        try:
            worker.inspect_frame(frame, key=key, profile=folder, done=finished)
            if not done.wait(self.config.inspect_timeout_s):
                return TriggerResult("NO-READ", 0.0, f"the inspection did not finish within "
                                                     f"{self.config.inspect_timeout_s:.0f} s")
        finally:
            with self._lock:
                self._waiting.discard(done)
        res = box[0] if box else None
        if res is None:
            return TriggerResult("NO-READ", 0.0, "the inspection was dropped (source stopped, profile changed "
                                                 "or station closing)")
        if res.error:
            return TriggerResult("NO-READ", 0.0, str(res.error))
        if res.inspection is None:
            return TriggerResult("NO-READ", 0.0, "no profile loaded")
        ins = res.inspection
        return TriggerResult("OK" if ins.verdict == "PASS" else "NG", float(ins.image_score), "")

    def _grab(self, grabber: FrameGrabber, key: int) -> Frame:
        """The next frame (live sources: the first one captured after now), or an error frame."""
        t0 = time.time()
        deadline = time.monotonic() + self.config.grab_timeout_s
        live = grabber.source.live
        while True:
            self._arrived.clear()
            frame = grabber.take()
            if frame is not None and (not live or frame.timestamp >= t0):
                return frame
            if frame is None and grabber.finished.is_set():
                why = grabber.failure or f"{grabber.source.describe()} has no more frames"
                return Frame(None, grabber.source.source_id, time.time(), None, key, f"no frame: {why}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return Frame(None, grabber.source.source_id, time.time(), None, key,
                             f"no frame from {grabber.source.describe()} within {self.config.grab_timeout_s:g} s")
            self._arrived.wait(min(remaining, 0.5))


def status_text(link: OpcUaLink) -> tuple[str, str, bool]:
    """(label, tooltip, is_error) for the station's status bar."""
    if link.state == "failed":
        return "OPC UA off", f"{link.error}", True
    if link.state == "starting":
        return "OPC UA starting…", f"starting the PLC link on {link.endpoint}", False
    if link.state == "listening":
        tip = f"PLC link on {link.endpoint}; recipes: " + ", ".join(
            f"{i}={name}" for i, name in enumerate(link.recipes))
        answered = link.server.parts if link.server is not None else 0  # PartCount: every Trigger answered
        tip += f"\n{answered} Trigger(s) answered" + (f"; last inspected: {link.last}" if link.last else "")
        if not link.attached:
            tip += "\nno source running: Triggers answer NO-READ"
        return "OPC UA ✔", tip, False
    return "", "", False
