"""The one image reader: every odd input a camera or a folder can give, plus the write helpers."""

from __future__ import annotations

import hashlib
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from inspector.imaging import (
    DEFAULT_MAX_SIDE,
    ImageReadError,
    decode_image,
    file_sha256,
    list_images,
    read_image,
    resize_square,
    write_png,
)


@pytest.fixture
def rgb(rng: np.random.Generator) -> np.ndarray:
    img = rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)
    img[0, 0] = (255, 0, 0)  # a pure red corner pins the channel order
    return img


def _save_cv(path: Path, img: np.ndarray, params: tuple[int, ...] = ()) -> Path:
    """Write through OpenCV (BGR order on disk for colour)."""
    arr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR) if img.ndim == 3 and img.shape[2] == 3 else img
    ok, enc = cv2.imencode(path.suffix, arr, list(params))
    assert ok
    path.write_bytes(enc.tobytes())
    return path


# ------------------------------------------------------------------------------ formats and depths
@pytest.mark.parametrize("ext", [".png", ".bmp", ".tif", ".tiff"])
def test_lossless_formats_read_back_exactly(tmp_path: Path, rgb: np.ndarray, ext: str) -> None:
    out = read_image(_save_cv(tmp_path / f"part{ext}", rgb))
    assert out.dtype == np.uint8 and out.shape == rgb.shape and out.flags.c_contiguous
    np.testing.assert_array_equal(out, rgb)
    assert tuple(out[0, 0]) == (255, 0, 0)


@pytest.mark.parametrize("ext", [".jpg", ".jpeg", ".JPG"])
def test_jpeg(tmp_path: Path, ext: str) -> None:
    img = np.zeros((16, 16, 3), np.uint8)
    img[:, :, 0] = 200  # red
    out = read_image(_save_cv(tmp_path / f"part{ext}", img, (cv2.IMWRITE_JPEG_QUALITY, 100)))
    assert out.shape == (16, 16, 3)
    assert abs(int(out[8, 8, 0]) - 200) <= 3 and out[8, 8, 2] <= 3


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_16_bit_is_scaled_to_8_bit(tmp_path: Path, ext: str) -> None:
    img16 = np.zeros((4, 6, 3), np.uint16)
    img16[..., 0] = 65535
    img16[..., 1] = 257 * 100
    img16[..., 2] = 257 * 7
    out = read_image(_save_cv(tmp_path / f"deep{ext}", img16))
    assert out.dtype == np.uint8
    assert tuple(out[0, 0]) == (255, 100, 7)


@pytest.mark.parametrize("dtype, value, expected", [(np.uint8, 77, 77), (np.uint16, 257 * 200, 200)])
def test_grey_becomes_rgb(tmp_path: Path, dtype, value: int, expected: int) -> None:
    grey = np.full((5, 7), value, dtype)
    out = read_image(_save_cv(tmp_path / "grey.png", grey))
    assert out.shape == (5, 7, 3) and (out == expected).all()


def test_grey_jpeg(tmp_path: Path) -> None:
    grey = np.full((8, 8), 90, np.uint8)
    out = read_image(_save_cv(tmp_path / "grey.jpg", grey, (cv2.IMWRITE_JPEG_QUALITY, 100)))
    assert out.shape == (8, 8, 3) and abs(int(out.mean()) - 90) <= 2


def test_float_tiff(tmp_path: Path) -> None:
    f = np.zeros((4, 4, 3), np.float32)
    f[..., 0] = 1.0
    f[..., 1] = 0.5
    out = read_image(_save_cv(tmp_path / "float.tif", f))
    assert tuple(out[0, 0]) == (255, 128, 0)


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_channel_is_dropped(tmp_path: Path, mode: str) -> None:
    if mode == "RGBA":
        im = Image.new("RGBA", (6, 4), (10, 20, 30, 0))
        want = (10, 20, 30)
    else:
        im = Image.new("LA", (6, 4), (60, 128))
        want = (60, 60, 60)
    path = tmp_path / f"alpha_{mode}.png"
    im.save(path)
    out = read_image(path)
    assert out.shape == (4, 6, 3) and tuple(out[2, 3]) == want


@pytest.mark.parametrize("orientation, shape, white_at", [(1, (20, 40), (10, 5)), (6, (40, 20), (5, 10)),
                                                          (3, (20, 40), (10, 35)), (8, (40, 20), (35, 10))])
def test_exif_orientation_is_applied(tmp_path: Path, orientation: int, shape: tuple[int, int],
                                     white_at: tuple[int, int]) -> None:
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = 255  # left half white, as stored
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"rotated_{orientation}.jpg"
    Image.fromarray(pixels).save(path, "JPEG", exif=exif.tobytes(), quality=95)
    out = read_image(path)
    assert out.shape[:2] == shape
    assert out[white_at].min() > 200  # where the white half ends up once displayed upright
    # same result as Pillow's own orientation handling
    from PIL import ImageOps

    upright = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    assert np.abs(upright.astype(int) - out.astype(int)).max() <= 2


def test_non_ascii_path(tmp_path: Path, rgb: np.ndarray) -> None:
    folder = tmp_path / "Prüfstand_画像"
    folder.mkdir()
    path = _save_cv(folder / "Teil_Ø12_ñ.png", rgb)
    np.testing.assert_array_equal(read_image(path), rgb)
    write_png(folder / "überlagerung.png", rgb)
    np.testing.assert_array_equal(read_image(folder / "überlagerung.png"), rgb)


# ------------------------------------------------------------------------------ size policy
def test_huge_image_is_downscaled_keeping_aspect(tmp_path: Path) -> None:
    wide = np.zeros((10, DEFAULT_MAX_SIDE + 4, 3), np.uint8)
    wide[:, : (DEFAULT_MAX_SIDE + 4) // 2] = 255
    path = _save_cv(tmp_path / "wide.png", wide)
    out = read_image(path)
    assert out.shape == (10, DEFAULT_MAX_SIDE, 3)
    assert read_image(path, max_side=None).shape == wide.shape
    small = read_image(path, max_side=412)
    assert small.shape == (1, 412, 3)


def test_header_claiming_a_gigantic_image_is_refused(tmp_path: Path) -> None:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    path = tmp_path / "bomb.png"
    path.write_bytes(png)
    with pytest.raises(ImageReadError, match="bomb.png.*100000x100000"):
        read_image(path)


# ------------------------------------------------------------------------------ broken inputs
def test_truncated_jpeg(tmp_path: Path, rng: np.random.Generator) -> None:
    img = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = _save_cv(tmp_path / "full.jpg", img).read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ImageReadError, match="cut.jpg: truncated JPEG"):
        read_image(cut)


def test_truncated_png(tmp_path: Path, rng: np.random.Generator) -> None:
    img = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = _save_cv(tmp_path / "full.png", img).read_bytes()
    cut = tmp_path / "cut.png"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="cut.png: truncated PNG"):
        read_image(cut)


def test_trailing_bytes_after_the_image_are_tolerated(tmp_path: Path, rgb: np.ndarray) -> None:
    """Some cameras append maker data after the end marker; the picture itself is complete."""
    for ext in (".png", ".jpg"):
        data = _save_cv(tmp_path / f"img{ext}", rgb, (cv2.IMWRITE_JPEG_QUALITY, 100)).read_bytes()
        padded = tmp_path / f"padded{ext}"
        padded.write_bytes(data + b"MAKERNOTE" * 40)
        assert read_image(padded).shape == rgb.shape


def test_corrupt_png_data(tmp_path: Path, rgb: np.ndarray) -> None:
    data = bytearray(_save_cv(tmp_path / "ok.png", rgb).read_bytes())
    idat = data.find(b"IDAT")
    for i in range(idat + 4, idat + 40):
        data[i] ^= 0x5A
    bad = tmp_path / "bad.png"
    bad.write_bytes(bytes(data))
    with pytest.raises(ImageReadError, match="bad.png"):
        read_image(bad)


def test_wrong_extension(tmp_path: Path, rgb: np.ndarray) -> None:
    png_bytes = _save_cv(tmp_path / "a.png", rgb).read_bytes()
    wrong = tmp_path / "really_a_png.jpg"
    wrong.write_bytes(png_bytes)
    with pytest.raises(ImageReadError, match=r"extension '\.jpg' but the content is PNG; rename"):
        read_image(wrong)


def test_not_an_image(tmp_path: Path) -> None:
    p = tmp_path / "notes.png"
    p.write_text("this is text, not pixels")
    with pytest.raises(ImageReadError, match="notes.png: not a PNG, JPEG, BMP or TIFF image"):
        read_image(p)


def test_empty_file_folder_and_missing_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty.png: empty file"):
        read_image(empty)
    folder = tmp_path / "looks_like.png"
    folder.mkdir()
    with pytest.raises(ImageReadError, match="is a folder"):
        read_image(folder)
    with pytest.raises(ImageReadError, match="missing.png: file not found"):
        read_image(tmp_path / "missing.png")
    assert issubclass(ImageReadError, ValueError)


def test_decode_bytes_from_a_camera(rgb: np.ndarray) -> None:
    ok, enc = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    np.testing.assert_array_equal(decode_image(enc.tobytes(), "camera-0"), rgb)
    with pytest.raises(ImageReadError, match="camera-0"):
        decode_image(b"\x00\x01garbage", "camera-0")


# ------------------------------------------------------------------------------ helpers
def test_write_png_is_atomic_and_lossless(tmp_path: Path, rgb: np.ndarray) -> None:
    target = tmp_path / "deep" / "er" / "overlay.png"
    assert write_png(target, rgb) == target
    assert not list(target.parent.glob("*.tmp"))
    np.testing.assert_array_equal(read_image(target), rgb)
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    write_png(tmp_path / "grey.png", grey)
    np.testing.assert_array_equal(read_image(tmp_path / "grey.png")[..., 1], grey)


def test_file_sha256(tmp_path: Path) -> None:
    p = tmp_path / "f.bin"
    p.write_bytes(b"x" * (3 << 20))
    assert file_sha256(p) == hashlib.sha256(b"x" * (3 << 20)).hexdigest()


def test_list_images(tmp_path: Path, rgb: np.ndarray) -> None:
    for name in ("b.PNG", "a.jpg", "c.tiff", "notes.txt", "sub/d.bmp"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "folder.png").mkdir()
    assert [p.name for p in list_images(tmp_path)] == ["a.jpg", "b.PNG", "c.tiff"]
    assert [p.name for p in list_images(tmp_path, recursive=True)] == ["a.jpg", "b.PNG", "c.tiff", "d.bmp"]


def test_resize_square(rgb: np.ndarray) -> None:
    assert resize_square(rgb, 32).shape == (32, 32, 3)
    sq = np.zeros((8, 8, 3), np.uint8)
    assert resize_square(sq, 8) is sq


# ------------------------------------------------------------------------------ issue 16 (inputs)
def _tiff_claiming(tmp_path: Path, width: int, height: int, name: str = "bomb.tif") -> Path:
    """A real 64x48 TIFF whose first IFD is patched to claim ``width`` x ``height`` pixels."""
    enc = _save_cv(tmp_path / "small.tif", np.zeros((48, 64, 3), np.uint8)).read_bytes()
    order = "<" if enc[:2] == b"II" else ">"
    data = bytearray(enc)
    ifd = struct.unpack(order + "I", data[4:8])[0]
    (count,) = struct.unpack(order + "H", data[ifd : ifd + 2])
    patched = 0
    for i in range(count):
        pos = ifd + 2 + 12 * i
        tag, typ = struct.unpack(order + "HH", data[pos : pos + 4])
        if tag in (256, 257):
            value = width if tag == 256 else height
            fmt = "H" if typ == 3 else "I"
            struct.pack_into(order + fmt, data, pos + 8, value)
            patched += 1
    assert patched == 2
    path = tmp_path / name
    path.write_bytes(bytes(data))
    return path


def test_tiff_header_claiming_a_gigantic_image_is_refused_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _tiff_claiming(tmp_path, 28000, 28000)
    calls: list[int] = []
    real = cv2.imdecode
    monkeypatch.setattr(cv2, "imdecode", lambda *a, **k: calls.append(1) or real(*a, **k))
    with pytest.raises(ImageReadError, match=r"bomb.tif.*28000x28000.*784 MP"):
        read_image(path)
    assert calls == []  # refused from the header: the decoder (GBs of RSS) never ran


def _hand_tiff(order: str, width: tuple[int, int], height: tuple[int, int]) -> bytes:
    """Header + one IFD (width, length entries as (type, value)) in byte order ``<`` or ``>``."""
    magic = b"II*\x00" if order == "<" else b"MM\x00*"
    entries = b""
    for tag, (typ, value) in ((256, width), (257, height)):
        val = struct.pack(order + "HH", value, 0) if typ == 3 else struct.pack(order + "I", value)
        entries += struct.pack(order + "HHI", tag, typ, 1) + val
    return magic + struct.pack(order + "I", 8) + struct.pack(order + "H", 2) + entries + b"\0\0\0\0"


@pytest.mark.parametrize("order", ["<", ">"])
def test_tiff_header_size_both_byte_orders_short_and_long(order: str) -> None:
    from inspector.imaging import _header_size

    assert _header_size(_hand_tiff(order, (3, 300), (4, 70000)), "TIFF") == (300, 70000)
    assert _header_size(_hand_tiff(order, (4, 28000), (3, 28000)), "TIFF") == (28000, 28000)
    assert _header_size(_hand_tiff(order, (3, 5), (3, 7))[:20], "TIFF") is None  # IFD cut short


def test_real_tiffs_report_their_true_size(tmp_path: Path) -> None:
    from inspector.imaging import _header_size

    path = _save_cv(tmp_path / "a.tif", np.zeros((48, 64, 3), np.uint8))
    assert _header_size(path.read_bytes(), "TIFF") == (64, 48)
    Image.new("L", (70, 30)).save(tmp_path / "b.tif")
    assert _header_size((tmp_path / "b.tif").read_bytes(), "TIFF") == (70, 30)
    assert read_image(tmp_path / "b.tif").shape == (30, 70, 3)


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="needs mkfifo")
def test_fifo_is_a_per_file_error_not_a_hang(tmp_path: Path) -> None:
    import os
    import threading

    fifo = tmp_path / "x.png"
    os.mkfifo(fifo)
    result: list[BaseException] = []
    t = threading.Thread(target=lambda: _catch(result, read_image, fifo), daemon=True)
    t.start()
    t.join(5)
    assert not t.is_alive(), "read_image blocked on a FIFO"
    assert isinstance(result[0], ImageReadError) and "x.png" in str(result[0]) and "FIFO" in str(result[0])
    with pytest.raises(OSError, match="FIFO"):
        file_sha256(fifo)  # the hasher refuses it too (it would block the same way)


def test_device_is_a_per_file_error() -> None:
    with pytest.raises(ImageReadError, match="/dev/zero.*character device"):
        read_image("/dev/zero")  # would otherwise read forever


def test_symlink_loop_is_a_clear_error(tmp_path: Path) -> None:
    loop = tmp_path / "loop.png"
    loop.symlink_to(loop.name)
    with pytest.raises(ImageReadError, match="loop.png.*symbolic link loop"):
        read_image(loop)


def test_symlink_to_an_image_is_read(tmp_path: Path, rgb: np.ndarray) -> None:
    write_png(tmp_path / "real.png", rgb)
    (tmp_path / "link.png").symlink_to("real.png")
    np.testing.assert_array_equal(read_image(tmp_path / "link.png"), rgb)


def test_write_png_never_follows_a_planted_temporary_symlink(tmp_path: Path, rgb: np.ndarray) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    target = tmp_path / "out.png"
    (tmp_path / "out.png.tmp").symlink_to(victim)  # the name the old code wrote through
    write_png(target, rgb)
    assert victim.read_text() == "keep me"
    np.testing.assert_array_equal(read_image(target), rgb)


def _catch(out: list[BaseException], fn, *args) -> None:  # type: ignore[no-untyped-def]
    try:
        fn(*args)
    except BaseException as exc:  # noqa: BLE001
        out.append(exc)
