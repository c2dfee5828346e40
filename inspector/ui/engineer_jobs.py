"""Engineer-side client of the station worker's generic job API.

The worker (``inspector.ui.worker.StationWorker``) runs ``fn(hub, progress, is_cancelled)`` in its
thread and reports through ``job_progress(tag, frac, msg)``, ``job_done(tag, result)`` and
``job_failed(tag, msg)``. :class:`JobClient` gives each engineer widget unique tags and routes
those signals back to per-job callbacks in the UI thread. :class:`JobFeedback` is the progress bar +
status label that shows such a job's progress and failure.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import QLabel, QProgressBar

from inspector.progress import JobFn

log = logging.getLogger(__name__)

_counter = itertools.count(1)


@dataclass
class _Callbacks:
    done: Callable[[Any], None] | None
    failed: Callable[[str], None] | None
    progress: Callable[[float, str], None] | None


class JobClient(QObject):
    """Submits jobs under ``engineer.<owner>.<name>.<n>`` tags and dispatches their signals.

    ``busy_changed(name, busy)`` lets widgets disable buttons while a job of that name runs.
    """

    busy_changed = Signal(str, bool)

    def __init__(self, worker: Any, owner: str, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.worker = worker
        self.owner = owner
        self._jobs: dict[str, tuple[str, _Callbacks]] = {}
        worker.job_progress.connect(self._on_progress)
        worker.job_done.connect(self._on_done)
        worker.job_failed.connect(self._on_failed)

    def submit(
        self,
        name: str,
        fn: JobFn,
        done: Callable[[Any], None] | None = None,
        failed: Callable[[str], None] | None = None,
        progress: Callable[[float, str], None] | None = None,
    ) -> str:
        tag = f"engineer.{self.owner}.{name}.{next(_counter)}"
        self._jobs[tag] = (name, _Callbacks(done, failed, progress))
        self.busy_changed.emit(name, True)
        self.worker.submit_job(tag, fn)
        return tag

    def running(self, name: str) -> list[str]:
        return [t for t, (n, _) in self._jobs.items() if n == name]

    def is_busy(self, name: str) -> bool:
        return bool(self.running(name))

    def cancel(self, name: str) -> None:
        for tag in self.running(name):
            self.worker.cancel_job(tag)

    # ------------------------------------------------------------------ signal routing
    def _on_progress(self, tag: str, frac: float, msg: str) -> None:
        entry = self._jobs.get(tag)
        if entry and entry[1].progress:
            entry[1].progress(frac, msg)

    def _finish(self, tag: str) -> _Callbacks | None:
        entry = self._jobs.pop(tag, None)
        if entry is None:
            return None
        name, cbs = entry
        if not self.is_busy(name):
            self.busy_changed.emit(name, False)
        return cbs

    def _on_done(self, tag: str, result: object) -> None:
        cbs = self._finish(tag)
        if cbs and cbs.done:
            cbs.done(result)

    def _on_failed(self, tag: str, msg: str) -> None:
        cbs = self._finish(tag)
        if cbs is None:
            return
        log.warning("job %s failed: %s", tag, msg)
        if cbs.failed:
            cbs.failed(msg)


class JobFeedback:
    """A hidden progress bar (0..1000) and a selectable, word-wrapped status label for worker jobs.

    The owning widget lays out :attr:`progress` and :attr:`status` itself and passes
    :meth:`on_progress` / :meth:`on_failed` as the job's callbacks.
    """

    def __init__(self, text_visible: bool = True) -> None:
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        if not text_visible:
            self.progress.setTextVisible(False)
        self.progress.hide()
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

    def start(self, text: str) -> None:
        """Show the bar at zero with ``text`` as the status."""
        self.progress.setValue(0)
        self.progress.show()
        self.status.setText(text)

    def on_progress(self, frac: float, msg: str) -> None:
        self.progress.setValue(int(max(0.0, min(1.0, frac)) * 1000))
        if msg:
            self.status.setText(msg)

    def on_failed(self, msg: str) -> None:
        self.progress.hide()
        self.status.setText(f"<span style='color:#c0392b'>{msg}</span>")
