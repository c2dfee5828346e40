"""One part as it reached the station: the frame, the inspection (or why there is none)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from inspector.inspection import Inspection
from inspector.sources import Frame


@dataclass
class StationResult:
    """One inspected frame: the frame, the inspection (or the error), and what to show beside it."""

    frame: Frame
    key: int
    generation: int
    inspection: Inspection | None = None
    error: str | None = None
    gt_mask: np.ndarray | None = None
    reference: np.ndarray | None = None  # nearest reference shot, resized to the frame
    reference_path: Path | None = None
    live: bool = False

    @property
    def ok(self) -> bool:
        return self.inspection is not None and self.error is None


def part_name(frame: Frame) -> str:
    """How a part is named in records and on screen: the file name, or ``<video>#<frame>``."""
    if frame.path is not None and is_video(frame.path):
        return f"{frame.path.name}#{frame.index}"
    return frame.name


def part_path(frame: Frame) -> str | None:
    """The part's path for the record: the image file, or ``<video path>#<frame index>``."""
    if frame.path is None:
        return None
    if is_video(frame.path):
        return f"{frame.path}#{frame.index}"
    return str(frame.path)


VIDEO_SUFFIXES = (".avi", ".mp4", ".mkv", ".mov", ".m4v", ".webm", ".mpg", ".mpeg")


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES
