"""Ground-truth masks: the one finder and the one reader, used by the station and the evaluation.

Finder: a mask is ``<stem>_mask.<ext>`` or ``<stem>.<ext>`` for any image type the reader accepts
(:data:`inspector.imaging.IMAGE_EXTENSIONS`, either case). In MVTec-AD layout the mask of
``<cat>/test/<defect>/<stem>.*`` lives in ``<cat>/ground_truth/<defect>/``.

Reader: any non-zero pixel is anomalous (MVTec-AD writes 0/255, VisA 0/label); a mask of another
size is resized as a coverage map (area-averaged when shrinking, bilinear otherwise) and a pixel
is anomalous when at least :data:`MASK_COVERAGE` of it is covered.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from inspector.imaging import IMAGE_EXTENSIONS, read_image

MASK_COVERAGE = 0.5


def find_mask(folder: str | os.PathLike[str], stem: str) -> Path | None:
    """The mask of image ``stem`` in ``folder`` (``<stem>_mask.*`` first, then ``<stem>.*``), if any."""
    folder = Path(folder)
    for name in (f"{stem}_mask", stem):
        for ext in IMAGE_EXTENSIONS:
            for candidate in (folder / f"{name}{ext}", folder / f"{name}{ext.upper()}"):
                if candidate.is_file():
                    return candidate
    return None


def mvtec_mask_path(image_path: str | os.PathLike[str]) -> Path | None:
    """``<cat>/test/<defect>/<stem>.*`` → its mask in ``<cat>/ground_truth/<defect>/``, if present."""
    p = Path(image_path)
    if len(p.parts) < 3 or p.parent.parent.name != "test":
        return None
    return find_mask(p.parent.parent.parent / "ground_truth" / p.parent.name, p.stem)


def read_mask(path: str | os.PathLike[str], shape_hw: tuple[int, int] | None = None) -> np.ndarray:
    """The bool mask in ``path`` (non-zero = anomalous), at ``shape_hw`` when given.

    Raises :class:`inspector.imaging.ImageReadError` for an unreadable file."""
    mask = read_image(path, max_side=None).max(axis=2) > 0
    if shape_hw is None or mask.shape == tuple(shape_hw):
        return mask
    h, w = shape_hw
    shrink = mask.shape[0] > h and mask.shape[1] > w
    cover = cv2.resize(mask.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return cover >= MASK_COVERAGE
