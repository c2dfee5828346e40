"""Archive beside the records: the overlay PNG of each decision and (optionally) the image itself.

Layout: ``<archive_dir>/<YYYY-MM-DD>/<record uid>_overlay.png`` and ``<uid>_<original name>``
(``<uid>_frame.png`` for camera frames; ``<uid>_<video name>#<frame>.png`` for a frame of a video
file: the frame itself, never a copy of the whole video). :func:`plan_archive` decides the paths before the
record is saved (so the record names them); :func:`write_archive` writes the files and can run
in a background thread after the decision is committed.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from inspector.files import atomic_copy
from inspector.imaging import write_png

log = logging.getLogger(__name__)


_VIDEO_FRAME = re.compile(r"\.(avi|mp4|mkv|mov|m4v|webm|mpg|mpeg)#\d+$", re.IGNORECASE)


def is_video_frame(path_or_name: str) -> bool:
    """True for a frame of a video file, named ``<video>#<frame index>``."""
    return bool(_VIDEO_FRAME.search(path_or_name))


@dataclass(frozen=True)
class ArchivePlan:
    overlay: Path
    image: Path | None


def plan_archive(archive_dir: str | Path, uid: str, timestamp: str, image_path: str | Path | None,
                 archive_image: bool) -> ArchivePlan:
    day = timestamp[:10] if len(timestamp) >= 10 else "undated"
    folder = Path(archive_dir) / day
    image = None
    if archive_image:
        name = Path(str(image_path)).name if image_path else "frame.png"
        if is_video_frame(name):  # "<video>#<frame>": the frame is written as PNG
            name += ".png"
        image = folder / f"{uid}_{name}"
    return ArchivePlan(folder / f"{uid}_overlay.png", image)


def write_archive(plan: ArchivePlan, overlay: np.ndarray, image: np.ndarray | None,
                  image_path: str | Path | None) -> None:
    """Write the overlay and the image copy (an image file is copied byte for byte; a frame,
    including a frame of a video file ``<video>#<frame>``, as PNG)."""
    write_png(plan.overlay, overlay)
    if plan.image is None:
        return
    if image_path is not None and not is_video_frame(str(image_path)) and Path(image_path).is_file():
        atomic_copy(image_path, plan.image, keep_times=True, fsync=False)
    elif image is not None:
        write_png(plan.image, image)
