"""A bounded first-in-first-out queue on disk: one small JSON file per entry.

Entries survive a restart or ``kill -9`` of the station (each is written to a temp file and
renamed into place, so a crash leaves either the whole entry or none). ``fsync=True`` also
survives a power cut at the cost of one disk flush per part. When ``max_items`` entries are
waiting, the oldest is dropped to make room (counted in :attr:`DiskQueue.dropped`, logged):
the records database, not an output queue, is where every decision is kept for good.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inspector.files import atomic_write

log = logging.getLogger(__name__)

_SUFFIX = ".json"


class QueueError(RuntimeError):
    """The queue folder cannot be created or written; the message names it."""


@dataclass(frozen=True)
class QueueItem:
    name: str  # file name inside the queue folder (orders the queue)
    key: str  # the part's uid
    payload: dict[str, Any]


class DiskQueue:
    """Thread-safe bounded FIFO in ``folder`` (created if missing)."""

    def __init__(self, folder: str | Path, max_items: int = 10_000, fsync: bool = False) -> None:
        if max_items < 1:
            raise ValueError(f"queue max_items must be at least 1, got {max_items}")
        self.folder = Path(folder)
        self.max_items = max_items
        self.fsync = fsync
        self.dropped = 0
        self._lock = threading.Lock()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            for stale in self.folder.glob("*.tmp"):
                stale.unlink()  # a crash between write and rename: the entry was never queued
            names = sorted(p.name for p in self.folder.iterdir() if p.name.endswith(_SUFFIX))
        except OSError as exc:
            raise QueueError(f"output queue {self.folder}: cannot open ({exc}); check the folder's permissions") from exc
        self._names: deque[str] = deque(names)
        self._seq = int(names[-1][: -len(_SUFFIX)]) + 1 if names else 1
        if len(self._names) > self.max_items:
            self._drop(len(self._names) - self.max_items)

    def __len__(self) -> int:
        with self._lock:
            return len(self._names)

    def _drop(self, n: int) -> None:
        for _ in range(n):
            name = self._names.popleft()
            try:
                (self.folder / name).unlink()
            except FileNotFoundError:
                pass
            self.dropped += 1
        log.error("output queue %s full (%d entries): dropped the %d oldest (%d dropped in all)",
                  self.folder, self.max_items, n, self.dropped)

    def put(self, key: str, payload: dict[str, Any]) -> QueueItem:
        data = json.dumps({"key": key, "payload": payload}, sort_keys=True).encode("utf-8")
        with self._lock:
            name = f"{self._seq:016d}{_SUFFIX}"
            self._seq += 1
            try:
                atomic_write(self.folder / name, data, fsync=self.fsync)
            except OSError as exc:
                raise QueueError(f"output queue {self.folder}: cannot write an entry ({exc}); "
                                 "free disk space or move outputs.queue_dir") from exc
            self._names.append(name)
            if len(self._names) > self.max_items:
                self._drop(len(self._names) - self.max_items)
        return QueueItem(name, key, payload)

    def peek(self) -> QueueItem | None:
        """The oldest entry (not removed), or None when empty. Unreadable entries are set aside."""
        with self._lock:
            while self._names:
                name = self._names[0]
                try:
                    data = json.loads((self.folder / name).read_text(encoding="utf-8"))
                    return QueueItem(name, str(data["key"]), dict(data["payload"]))
                except (OSError, ValueError, KeyError, TypeError) as exc:
                    self._names.popleft()
                    self._set_aside(name, f"unreadable ({exc})")
            return None

    def ack(self, item: QueueItem) -> None:
        """Remove a delivered entry (a no-op when it was dropped meanwhile)."""
        with self._lock:
            try:
                self._names.remove(item.name)
            except ValueError:
                return
            try:
                (self.folder / item.name).unlink()
            except FileNotFoundError:
                pass

    def reject(self, item: QueueItem, why: str) -> None:
        """Move an entry the receiver refused for good to ``rejected/`` (kept for inspection)."""
        with self._lock:
            try:
                self._names.remove(item.name)
            except ValueError:
                return
            self._set_aside(item.name, why)

    def _set_aside(self, name: str, why: str) -> None:
        dest = self.folder / "rejected"
        try:
            dest.mkdir(exist_ok=True)
            os.replace(self.folder / name, dest / name)
        except OSError as exc:
            log.error("output queue %s: cannot set %s aside (%s)", self.folder, name, exc)
        log.error("output queue %s: entry %s set aside in %s: %s", self.folder, name, dest, why)
