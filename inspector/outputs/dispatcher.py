"""Lanes (one bounded queue + one sender thread per output) and the dispatcher over them."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from inspector.outputs.queues import DiskQueue, QueueError, QueueItem
from inspector.outputs.result import PartResult

log = logging.getLogger(__name__)


class OutputError(RuntimeError):
    """The output could not take the message now (down, timeout, 5xx): the lane retries it."""


class OutputRejected(OutputError):
    """The receiver refused the message for good (e.g. HTTP 400): it is set aside, not retried."""


class Sink(Protocol):
    """One output engine. ``send`` blocks (in the lane's thread) until delivered or raises."""

    name: str

    def send(self, key: str, payload: dict[str, Any]) -> None: ...

    @property
    def connected(self) -> bool: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class LaneStatus:
    name: str
    backlog: int
    dropped: int
    delivered: int
    rejected: int
    connected: bool
    last_error: str | None


class Lane:
    """Sends a :class:`DiskQueue`'s entries through one :class:`Sink`, oldest first, one at a time.

    A failing send is retried after ``retry_initial_s``, doubling up to ``retry_max_s`` and
    back to the start after a success. The head is never skipped (order is kept) unless the
    receiver rejects it (:class:`OutputRejected`).
    """

    def __init__(self, sink: Sink, queue: DiskQueue, retry_initial_s: float = 0.5, retry_max_s: float = 30.0) -> None:
        if retry_initial_s <= 0 or retry_max_s < retry_initial_s:
            raise ValueError("need 0 < retry_initial_s <= retry_max_s")
        self.sink = sink
        self.queue = queue
        self.name = sink.name
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.delivered = 0
        self.rejected = 0
        self.last_error: str | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"output-{self.name}", daemon=True)
        self._thread.start()

    def put(self, key: str, payload: dict[str, Any]) -> None:
        self.queue.put(key, payload)
        self._wake.set()

    def _run(self) -> None:
        delay = self.retry_initial_s
        while not self._stop.is_set():
            item = self.queue.peek()
            if item is None:
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            if self._deliver(item):
                delay = self.retry_initial_s
                continue
            self._stop.wait(delay)
            delay = min(delay * 2.0, self.retry_max_s)

    def _deliver(self, item: QueueItem) -> bool:
        try:
            self.sink.send(item.key, item.payload)
        except OutputRejected as exc:
            self.queue.reject(item, str(exc))
            self.rejected += 1
            self.last_error = str(exc)
            return True
        except OutputError as exc:
            if self.last_error != str(exc):
                log.warning("output %s: %s (%d waiting; retrying)", self.name, exc, len(self.queue))
            self.last_error = str(exc)
            return False
        except Exception as exc:  # an engine bug must not kill the lane; keep the entry and retry
            log.exception("output %s: unexpected error sending %s", self.name, item.key)
            self.last_error = f"{type(exc).__name__}: {exc}"
            return False
        self.queue.ack(item)
        self.delivered += 1
        if self.last_error is not None:
            log.info("output %s: back (%d waiting)", self.name, len(self.queue))
        self.last_error = None
        return True

    def status(self) -> LaneStatus:
        return LaneStatus(self.name, len(self.queue), self.queue.dropped, self.delivered, self.rejected,
                          bool(self.sink.connected), self.last_error)

    def close(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout_s)
        self.sink.close()


class Dispatcher:
    """Fans part results out to every lane. :meth:`publish` never waits for an output."""

    def __init__(self, lanes: Iterable[Lane] = ()) -> None:
        self.lanes: list[Lane] = list(lanes)

    def publish(self, result: PartResult) -> None:
        payload = result.to_json()
        for lane in self.lanes:
            try:
                lane.put(result.uid, payload)
            except QueueError as exc:  # the queue's disk failed: the record itself is already stored
                lane.last_error = str(exc)
                log.error("output %s: %s", lane.name, exc)

    def publish_record(self, record: Any) -> None:
        """Publish an :class:`inspector.records.InspectionRecord` (what the station calls after a save)."""
        self.publish(PartResult.from_record(record))

    def backlog(self) -> dict[str, int]:
        """Entries waiting per output (for the status bar)."""
        return {lane.name: len(lane.queue) for lane in self.lanes}

    @property
    def backlog_total(self) -> int:
        return sum(self.backlog().values())

    def status(self) -> list[LaneStatus]:
        return [lane.status() for lane in self.lanes]

    def drain(self, timeout_s: float) -> bool:
        """Wait until every queue is empty (shutdown, tests); False on timeout."""
        deadline = time.monotonic() + timeout_s
        while self.backlog_total:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    def close(self) -> None:
        for lane in self.lanes:
            lane.close()
