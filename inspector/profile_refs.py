"""Reference ("good") shots of a profile: copied into the profile folder under readable, unique names.

A profile folder is self-contained and portable: every reference shot lives in
``<profile folder>/references/<original stem>_<sha256[:16]><ext>`` (the stem says where it came
from, the hash keeps names unique) and ``profile.reference_shots`` lists those paths relative to
the folder. The same image added twice (under any name, from anywhere) is stored once. Removing a shot from the profile keeps its file, because older saved versions of the
profile (``profile.v<N>.yaml``) may still name it.

Qt-free and torch-free: the engineer GUI and scripts both call these functions.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from inspector.files import atomic_write
from inspector.imaging import ImageReadError, decode_image, is_image_file, list_images, write_png
from inspector.profile import ProductProfile
from inspector.progress import Progress

log = logging.getLogger(__name__)

REFERENCES_DIR = "references"
HASH_CHARS = 16
"""Hex characters of the sha256 kept in a reference file name (64 bits: collisions are not a concern)."""


class ReferenceShotError(ValueError):
    """A reference shot could not be added; the message names the file and what to do."""


def _profile_folder(profile: ProductProfile) -> Path:
    if profile.folder is None:
        raise ReferenceShotError(
            f"profile {profile.name!r} has no folder yet; save the profile before adding reference shots"
        )
    return profile.folder


STEM_CHARS = 40
"""At most this many characters of the original file name are kept."""


def _suffix(suffix: str) -> str:
    suffix = suffix.lower()
    return {".jpeg": ".jpg", ".tiff": ".tif"}.get(suffix, suffix)


def safe_stem(stem: str) -> str:
    """The original name reduced to letters, digits, '_', '-', '.' (others become '_')."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).strip("._-")[:STEM_CHARS].rstrip("._-")


def reference_file_name(data: bytes, suffix: str, stem: str = "") -> str:
    """File name for encoded image bytes: ``<stem>_<sha256[:16]><ext>``, e.g. ``good_07_3fa9c0d1e2b4a597.png``
    (only the hash where no usable stem is given)."""
    digest = hashlib.sha256(data).hexdigest()[:HASH_CHARS]
    clean = safe_stem(stem)
    return f"{clean}_{digest}{_suffix(suffix)}" if clean else digest + _suffix(suffix)


def _same_content(refs: Path, data: bytes, suffix: str) -> str | None:
    """The name of a stored file holding exactly ``data`` (any stem), if there is one."""
    digest = hashlib.sha256(data).hexdigest()
    for pattern in (f"*{digest[:HASH_CHARS]}{suffix}", f"*{digest}{suffix}"):
        for existing in sorted(refs.glob(pattern)):
            if existing.is_file() and existing.stat().st_size == len(data) and existing.read_bytes() == data:
                return existing.name
    return None


def _store_bytes(folder: Path, data: bytes, suffix: str, stem: str = "") -> str:
    """Write ``data`` once (as ``<stem>_<hash>``) and return the path relative to ``folder``.

    Content already stored under any name is reused, so an image keeps its first name."""
    refs = folder / REFERENCES_DIR
    refs.mkdir(parents=True, exist_ok=True)
    suffix = _suffix(suffix)
    existing = _same_content(refs, data, suffix)
    if existing is not None:
        return f"{REFERENCES_DIR}/{existing}"
    name = reference_file_name(data, suffix, stem)
    target = refs / name
    if target.is_file():  # a 64-bit prefix collision: fall back to the full hash
        name = f"{safe_stem(stem) + '_' if safe_stem(stem) else ''}{hashlib.sha256(data).hexdigest()}{suffix}"
        target = refs / name
    atomic_write(target, data)
    return f"{REFERENCES_DIR}/{name}"


def _append(profile: ProductProfile, rels: Iterable[str]) -> None:
    current = list(profile.reference_shots)
    for rel in rels:
        if rel not in current:
            current.append(rel)
    profile.reference_shots = current  # validated assignment


def add_reference_shots(
    profile: ProductProfile,
    paths: Sequence[str | os.PathLike[str]],
    progress: Progress | None = None,
    errors: list[str] | None = None,
) -> list[str]:
    """Copy image files into the profile's ``references/`` and list them in ``profile.reference_shots``.

    Each file is decoded first (the one image reader), so a corrupt or non-image file is refused
    with a message naming it. By default one bad file refuses the whole batch and nothing is
    copied; pass an ``errors`` list to add the good files and collect one message per bad file.

    Returns the relative paths (``references/<hash><ext>``) of the accepted images, in input order,
    without duplicates. The profile object is updated in memory; saving it is the caller's job.
    """
    folder = _profile_folder(profile)
    accepted: list[tuple[bytes, str, str]] = []
    problems: list[str] = []
    total = max(len(paths), 1)
    for i, raw in enumerate(paths):
        path = Path(raw)
        if progress:
            progress(i / total, f"checking {path.name}")
        if not is_image_file(path):
            problems.append(f"{path}: not an image file (expected .png, .jpg, .bmp or .tif)")
            continue
        try:
            data = path.read_bytes()
            if not data:
                raise ImageReadError(f"{path}: empty file (0 bytes); the copy may still be in progress")
            decode_image(data, str(path))
        except ImageReadError as exc:
            problems.append(str(exc))
            continue
        except OSError as exc:
            problems.append(f"{path}: cannot read ({exc.strerror or exc})")
            continue
        accepted.append((data, path.suffix, path.stem))
    if problems and errors is None:
        raise ReferenceShotError("no reference shots added:\n" + "\n".join(problems))
    if errors is not None:
        errors.extend(problems)
    rels: list[str] = []
    for data, suffix, stem in accepted:
        rel = _store_bytes(folder, data, suffix, stem)
        if rel not in rels:
            rels.append(rel)
    _append(profile, rels)
    if progress:
        progress(1.0, f"{len(rels)} reference shot(s) added")
    log.info("profile %s: %d reference shot(s) added, %d refused", profile.name, len(rels), len(problems))
    return rels


def add_reference_folder(
    profile: ProductProfile,
    folder: str | os.PathLike[str],
    progress: Progress | None = None,
    errors: list[str] | None = None,
) -> list[str]:
    """Add every image of a folder (not recursive, sorted by name); see :func:`add_reference_shots`."""
    src = Path(folder)
    if not src.is_dir():
        raise ReferenceShotError(f"{src}: not a folder")
    images = list_images(src)
    if not images:
        raise ReferenceShotError(f"{src}: no images (.png, .jpg, .bmp, .tif) in this folder")
    return add_reference_shots(profile, images, progress, errors)


def add_reference_image(profile: ProductProfile, image: np.ndarray, stem: str | None = None) -> str:
    """Store a decoded RGB image (e.g. the station's current frame) as a PNG reference shot.

    ``stem`` names it (default ``station_<date>-<time>``)."""
    folder = _profile_folder(profile)
    refs = folder / REFERENCES_DIR
    tmp = write_png(refs / ".incoming.png", image)
    try:
        rel = _store_bytes(folder, tmp.read_bytes(), ".png", stem or time.strftime("station_%Y%m%d-%H%M%S"))
    finally:
        tmp.unlink(missing_ok=True)
    _append(profile, [rel])
    return rel


def remove_reference_shots(profile: ProductProfile, rels: Iterable[str]) -> list[str]:
    """Drop entries from ``profile.reference_shots``; the files stay (older versions may use them)."""
    drop = set(rels)
    removed = [r for r in profile.reference_shots if r in drop]
    profile.reference_shots = [r for r in profile.reference_shots if r not in drop]
    return removed
