"""The one image reader, plus resize helpers (overlays live in :mod:`inspector.overlay`).

:func:`read_image` accepts whatever a camera or a folder gives — PNG, JPEG, BMP, TIFF; 8- or
16-bit; grey, RGB or RGBA; EXIF-rotated JPEGs; non-ASCII paths — and always returns RGB uint8
HxWx3. Truncated or corrupt files and files whose content does not match their extension raise
:class:`ImageReadError` naming the file and the reason.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2
import numpy as np

from inspector.files import (  # noqa: F401  (file_sha256/array_sha256 re-exported; home is files.py)
    NotRegularFileError,
    array_sha256,
    atomic_write,
    bytes_sha256,
    describe_os_error,
    file_sha256,
    read_regular,
)

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
DEFAULT_MAX_SIDE = 4096
"""Images whose long side exceeds this are downscaled on read (area interpolation)."""
MAX_PIXELS = 250_000_000
"""Refuse to decode anything larger (a corrupt header claiming a gigantic image)."""

_MAGIC: dict[str, tuple[bytes, ...]] = {
    ".png": (b"\x89PNG\r\n\x1a\n",),
    ".jpg": (b"\xff\xd8\xff",),
    ".jpeg": (b"\xff\xd8\xff",),
    ".bmp": (b"BM",),
    ".tif": (b"II*\x00", b"MM\x00*"),
    ".tiff": (b"II*\x00", b"MM\x00*"),
}
_KIND_BY_MAGIC = {b"\x89PNG": "PNG", b"\xff\xd8\xff": "JPEG", b"BM": "BMP", b"II*\x00": "TIFF", b"MM\x00*": "TIFF"}


class ImageReadError(ValueError):
    """An image file could not be read; the message names the file and what to do."""


def _sniff(head: bytes) -> str | None:
    for magic, kind in _KIND_BY_MAGIC.items():
        if head.startswith(magic):
            return kind
    return None


def _png_complete(data: bytes) -> bool:
    """Walk the chunk list: complete when an IEND chunk lies fully inside the data."""
    pos, n = 8, len(data)
    while pos + 12 <= n:
        length = int.from_bytes(data[pos : pos + 4], "big")
        end = pos + 12 + length
        if end > n:
            return False
        if data[pos + 4 : pos + 8] == b"IEND":
            return True
        pos = end
    return False


def _check_complete(path: Path, data: bytes, kind: str | None) -> None:
    """Detect truncation that decoders silently paper over (they fill missing rows with grey).

    Bytes after the end marker (maker notes some cameras append) are tolerated.
    """
    if kind == "JPEG":
        # entropy-coded data cannot contain 0xFFDA (bytes are stuffed), so the last one starts the
        # last scan (an EXIF thumbnail's scan comes earlier); a complete file ends that scan with EOI
        sos = data.rfind(b"\xff\xda")
        if sos < 0 or data.find(b"\xff\xd9", sos + 2) < 0:
            raise ImageReadError(f"{path}: truncated JPEG (no end-of-image marker); re-copy or re-capture the file")
    if kind == "PNG" and not _png_complete(data):
        raise ImageReadError(f"{path}: truncated PNG (no IEND chunk); re-copy or re-capture the file")


_TIFF_WIDTH, _TIFF_LENGTH = 256, 257
_TIFF_SHORT, _TIFF_LONG = 3, 4


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a TIFF's first image from its first IFD (what OpenCV decodes)."""
    order = "little" if data[:2] == b"II" else "big"
    ifd = int.from_bytes(data[4:8], order)
    count = int.from_bytes(data[ifd : ifd + 2], order)
    if ifd < 8 or ifd + 2 + 12 * count > len(data):
        return None
    found: dict[int, int] = {}
    for i in range(count):
        pos = ifd + 2 + 12 * i
        tag = int.from_bytes(data[pos : pos + 2], order)
        if tag not in (_TIFF_WIDTH, _TIFF_LENGTH):
            continue
        typ = int.from_bytes(data[pos + 2 : pos + 4], order)
        if typ == _TIFF_SHORT:
            found[tag] = int.from_bytes(data[pos + 8 : pos + 10], order)
        elif typ == _TIFF_LONG:
            found[tag] = int.from_bytes(data[pos + 8 : pos + 12], order)
    if _TIFF_WIDTH in found and _TIFF_LENGTH in found:
        return found[_TIFF_WIDTH], found[_TIFF_LENGTH]
    return None


def _header_size(data: bytes, kind: str) -> tuple[int, int] | None:
    """(width, height) from the file header without decoding (PNG, JPEG, BMP, TIFF), else None."""
    try:
        if kind == "TIFF":
            return _tiff_size(data)
        if kind == "PNG" and data[12:16] == b"IHDR":
            return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        if kind == "BMP":
            if int.from_bytes(data[14:18], "little") == 12:  # OS/2 core header
                return int.from_bytes(data[18:20], "little"), int.from_bytes(data[20:22], "little")
            w = int.from_bytes(data[18:22], "little", signed=True)
            h = int.from_bytes(data[22:26], "little", signed=True)
            return abs(w), abs(h)
        if kind == "JPEG":
            pos = 2
            while pos + 9 < len(data):
                if data[pos] != 0xFF:
                    return None
                marker = data[pos + 1]
                if marker == 0xFF:  # fill byte
                    pos += 1
                    continue
                if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
                    pos += 2
                    continue
                if marker == 0xDA:  # start of scan: no frame header seen
                    return None
                length = int.from_bytes(data[pos + 2 : pos + 4], "big")
                if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                    h = int.from_bytes(data[pos + 5 : pos + 7], "big")
                    w = int.from_bytes(data[pos + 7 : pos + 9], "big")
                    return w, h
                pos += 2 + length
    except (IndexError, ValueError):
        return None
    return None


def to_rgb_uint8(img: np.ndarray) -> np.ndarray:
    """Convert any decoded array (grey, BGR, BGRA, 16-bit, float) to RGB uint8 HxWx3."""
    if img.dtype == np.uint16:
        img = (img.astype(np.float32) / 257.0 + 0.5).clip(0, 255).astype(np.uint8)
    elif img.dtype in (np.float32, np.float64):
        top = 1.0 if float(np.nanmax(img)) <= 1.0 else 255.0
        img = np.rint(np.nan_to_num(img / top * 255.0)).clip(0, 255).astype(np.uint8)
    elif img.dtype != np.uint8:
        img = img.clip(0, 255).astype(np.uint8)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.shape[2] == 1:
        return cv2.cvtColor(img[:, :, 0], cv2.COLOR_GRAY2RGB)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def decode_image(data: bytes, source: str = "<bytes>", max_side: int | None = DEFAULT_MAX_SIDE) -> np.ndarray:
    """Decode encoded image bytes (EXIF orientation applied) to RGB uint8."""
    check_image_bytes(data, source)
    kind = _sniff(data[:8])
    buf = np.frombuffer(data, dtype=np.uint8)
    # ANYDEPTH keeps 16-bit; ANYCOLOR keeps grey/colour; EXIF orientation is honoured unless
    # IMREAD_IGNORE_ORIENTATION is given (IMREAD_UNCHANGED would drop it). Alpha is dropped:
    # the pixel colours are what the camera saw.
    try:
        img = cv2.imdecode(buf, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    except cv2.error as exc:  # e.g. a header claiming more pixels than OpenCV allows
        reason = str(exc).strip().splitlines()[-1][:200]
        raise ImageReadError(f"{source}: cannot decode this {kind} ({reason}); re-export the image") from exc
    if img is None:
        raise ImageReadError(f"{source}: corrupt or unsupported {kind} data; re-export the image")
    if img.size == 0 or img.shape[0] * img.shape[1] > MAX_PIXELS:
        raise ImageReadError(f"{source}: image size {img.shape[:2]} is outside what the station accepts")
    rgb = to_rgb_uint8(img)
    if max_side and max(rgb.shape[:2]) > max_side:
        scale = max_side / max(rgb.shape[:2])
        new = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
        log.info("%s: downscaling %sx%s to %sx%s", source, rgb.shape[1], rgb.shape[0], *new)
        rgb = cv2.resize(rgb, new, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(rgb)


def read_image(path: str | os.PathLike[str], max_side: int | None = DEFAULT_MAX_SIDE) -> np.ndarray:
    """Read an image file into RGB uint8 HxWx3 (see module docstring)."""
    p = Path(path)
    return decode_image(_read_file(p), str(p), max_side)


def read_image_hashed(path: str | os.PathLike[str], max_side: int | None = DEFAULT_MAX_SIDE) -> tuple[np.ndarray, str]:
    """Read an image file once: the RGB image and the sha256 of exactly the bytes that were decoded
    (a file replaced between a read and a second hashing read can never be recorded wrongly)."""
    p = Path(path)
    data = _read_file(p)
    return decode_image(data, str(p), max_side), bytes_sha256(data)


def _read_file(p: Path) -> bytes:
    try:
        # regular files only: a FIFO or a device would block or never end (non-ASCII paths work,
        # unlike cv2.imread on some platforms)
        data = read_regular(p)
    except FileNotFoundError:
        raise ImageReadError(f"{p}: file not found") from None
    except NotRegularFileError as exc:
        if os.path.isdir(p):
            raise ImageReadError(f"{p}: is a folder, not an image") from None
        raise ImageReadError(f"{p}: {exc.strerror}; only image files can be inspected") from None
    except OSError as exc:
        raise ImageReadError(f"{p}: cannot read ({describe_os_error(exc)})") from exc
    if not data:
        raise ImageReadError(f"{p}: empty file (0 bytes); the copy may still be in progress")
    return data


def check_image_bytes(data: bytes, source: str) -> None:
    """The checks :func:`decode_image` makes before decoding (kind, extension, completeness, size).

    Cheap: no pixels are decoded. Raises :class:`ImageReadError`. A hot folder uses it to tell a
    finished copy from one in progress without holding decoded frames."""
    path = Path(source)
    if not data:
        raise ImageReadError(f"{source}: empty file (0 bytes); the copy may still be in progress")
    kind = _sniff(data[:8])
    if kind is None:
        raise ImageReadError(f"{source}: not a PNG, JPEG, BMP or TIFF image (unrecognised content)")
    ext = path.suffix.lower()
    if ext in _MAGIC and not any(data.startswith(m) for m in _MAGIC[ext]):
        raise ImageReadError(f"{source}: extension {ext!r} but the content is {kind}; rename the file to match")
    _check_complete(path, data, kind)
    if kind == "BMP" and len(data) < int.from_bytes(data[2:6], "little"):
        raise ImageReadError(f"{source}: truncated BMP (shorter than its header says); re-copy the file")
    size = _header_size(data, kind)
    if size is not None and size[0] * size[1] > MAX_PIXELS:
        raise ImageReadError(
            f"{source}: image is {size[0]}x{size[1]} pixels ({size[0] * size[1] / 1e6:.0f} MP), more than the "
            f"station accepts ({MAX_PIXELS / 1e6:.0f} MP); export it smaller"
        )


def probe_image(path: str | os.PathLike[str]) -> None:
    """Read a file and check it as :func:`check_image_bytes` does; TIFFs (whose completeness the
    header cannot tell) are decoded and the pixels dropped. Raises :class:`ImageReadError`."""
    p = Path(path)
    data = _read_file(p)
    check_image_bytes(data, str(p))
    if _sniff(data[:8]) == "TIFF":
        decode_image(data, str(p), max_side=None)


def is_image_file(path: str | os.PathLike[str]) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def list_images(folder: str | os.PathLike[str], recursive: bool = False) -> list[Path]:
    """Image files in a folder, sorted by name (natural enough for camera counters)."""
    root = Path(folder)
    it = root.rglob("*") if recursive else root.iterdir()
    return sorted(p for p in it if p.is_file() and is_image_file(p))


def resize_square(img: np.ndarray, size: int, interpolation: int = cv2.INTER_CUBIC) -> np.ndarray:
    """Squash-resize to size×size (no crop), as the CLIP pipelines expect."""
    if img.shape[0] == size and img.shape[1] == size:
        return img
    return cv2.resize(img, (size, size), interpolation=interpolation)


def resize_antialiased(img: np.ndarray, size_hw: tuple[int, int], resample: str = "bicubic") -> np.ndarray:
    """Resize RGB/grey uint8 to (H, W) with PIL's antialiased filters (``"bicubic"`` or ``"bilinear"``).

    The reference pipelines (open_clip / FADE, GroundingDINO) resize PIL images through torchvision,
    which is this call; OpenCV's INTER_CUBIC / INTER_LINEAR do not low-pass when shrinking.
    """
    from PIL import Image

    h, w = int(size_hw[0]), int(size_hw[1])
    if img.shape[:2] == (h, w):
        return img
    filters = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}
    out = Image.fromarray(np.ascontiguousarray(img)).resize((w, h), filters[resample])
    return np.asarray(out)


def write_png(path: str | os.PathLike[str], rgb: np.ndarray) -> Path:
    """Write RGB (or grey) uint8 as PNG atomically (:func:`inspector.files.atomic_write`).

    Raises OSError with the path on failure."""
    p = Path(path)
    arr = rgb if rgb.ndim == 2 else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    ok, enc = cv2.imencode(".png", arr)
    if not ok:
        raise OSError(f"{p}: PNG encoding failed")
    return atomic_write(p, enc.tobytes(), fsync=False)
