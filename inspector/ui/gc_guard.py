"""Keep Python's cyclic garbage collector in the GUI thread.

When the collector runs in the worker thread it may free Qt objects that belong to the GUI
thread (a closed dialog caught in a reference cycle, say); their destructors then call back into
Python and deadlock or crash. Seen here as a hang in the UI tests. Automatic collection is turned
off and the GUI thread collects on a timer instead, generation by generation as Python would.
"""

from __future__ import annotations

import gc

from PySide6.QtCore import QCoreApplication, QTimer

_timer: QTimer | None = None
_thresholds = gc.get_threshold()


def _collect() -> None:
    g0, g1, g2 = gc.get_count()
    t0, t1, t2 = _thresholds
    if g0 > t0:
        gc.collect(0)
        if g1 > t1:
            gc.collect(1)
            if g2 > t2:
                gc.collect(2)


def install(interval_ms: int = 500) -> None:
    """Idempotent: disable automatic collection and collect from the GUI thread's event loop."""
    global _timer
    app = QCoreApplication.instance()
    if app is None or _timer is not None:
        return
    gc.disable()
    _timer = QTimer(app)
    _timer.timeout.connect(_collect)
    _timer.start(interval_ms)
