"""Progress and cancellation callbacks: one definition for the detectors, the store, the
reference shots and the Qt worker's jobs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Progress = Callable[[float, str], None]
"""Progress callback: fraction done in [0, 1] and a short message."""

Cancelled = Callable[[], bool]
"""True once the user asked to stop; long jobs poll it between steps."""

JobFn = Callable[[Any, Progress, Cancelled], Any]
"""A background job: ``fn(hub, progress, cancelled) -> result`` (the hub is the worker's ``ModelHub``)."""
