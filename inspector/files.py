"""Files on disk: the one streaming hasher and the one atomic write.

Every file Inspector writes in place (profiles, settings, caches, records sidecars, archive
images, weight files) goes through :func:`atomic_write` or :func:`atomic_writer`: the data is
written to a temporary file created *exclusively* (``O_EXCL | O_NOFOLLOW``) in the target
folder, fsynced, then renamed over the target. A symlink planted at the temporary name is
therefore never followed, a crash never leaves a half-written target, and a reader sees either
the old or the new content.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import shutil
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

CHUNK = 1 << 20


class NotRegularFileError(OSError):
    """A path names a FIFO, a device, a socket or a folder where a regular file is needed.

    Reading one could block forever (a FIFO without a writer) or never end (``/dev/zero``), so
    every reader of input files opens through :func:`open_regular`, which refuses them.
    """


_KIND_NAMES = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def file_kind(mode: int) -> str:
    """What a ``st_mode`` is, in words ("a regular file", "a FIFO (named pipe)" …)."""
    if stat.S_ISREG(mode):
        return "a regular file"
    return next((name for test, name in _KIND_NAMES if test(mode)), "not a regular file")


def describe_os_error(exc: OSError) -> str:
    """Short operator-facing reason for an ``OSError`` (a symlink loop is named as such)."""
    if exc.errno == errno.ELOOP:
        return "symbolic link loop (the link points back at itself); fix or remove the link"
    return str(exc.strerror or exc)


def open_regular(path: str | os.PathLike[str]) -> BinaryIO:
    """Open ``path`` for reading only if it is a regular file (symlinks to one are fine).

    The path is checked with ``os.stat`` before opening, opened with ``O_NONBLOCK`` (so a FIFO
    that slipped in between cannot block the open) and checked again with ``fstat`` on the open
    descriptor; anything but a regular file raises :class:`NotRegularFileError`. Other failures
    raise the usual ``OSError`` subclasses (``FileNotFoundError``, ``PermissionError``, ELOOP …).
    """
    p = os.fspath(path)
    st = os.stat(p)
    if not stat.S_ISREG(st.st_mode):
        raise NotRegularFileError(errno.EINVAL, f"is {file_kind(st.st_mode)}, not a regular file", p)
    fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFileError(errno.EINVAL, f"is {file_kind(st.st_mode)}, not a regular file", p)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)  # regular files never block; plain reads from here on
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


class FileTooLargeError(OSError):
    """A file is larger than the reader accepts."""


def read_regular(path: str | os.PathLike[str], max_bytes: int | None = None) -> bytes:
    """The bytes of a regular file (see :func:`open_regular`), refusing files over ``max_bytes``."""
    with open_regular(path) as fh:
        if max_bytes is not None:
            size = os.fstat(fh.fileno()).st_size
            if size > max_bytes:
                raise FileTooLargeError(errno.EFBIG, f"{size} bytes, more than the {max_bytes} accepted", os.fspath(path))
            data = fh.read(max_bytes + 1)
            if len(data) > max_bytes:  # grew while we read
                raise FileTooLargeError(errno.EFBIG, f"more than the {max_bytes} bytes accepted", os.fspath(path))
            return data
        return fh.read()


class NoSpaceError(OSError):
    """Not enough free space for a file; ``str()`` names the file, the folder and what to do."""

    def __init__(self, path: Path, needed: int, free: int) -> None:
        super().__init__(errno.ENOSPC, "No space left on device", str(path))
        self.path, self.needed, self.free = Path(path), needed, free

    def __str__(self) -> str:
        return (
            f"{self.path}: needs {self.needed / 1e6:.1f} MB but only {self.free / 1e6:.1f} MB are free on the "
            f"disk holding {self.path.parent}; free space there (or point the setting at another disk) and retry"
        )


def ensure_free_space(path: str | os.PathLike[str], needed: int, margin: int = 16 << 20) -> None:
    """Raise :class:`NoSpaceError` unless the disk holding ``path``'s folder has ``needed`` (+margin) bytes free."""
    target = Path(path)
    folder = target.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:  # cannot tell: let the write itself report ENOSPC
        return
    if free < needed + margin:
        raise NoSpaceError(target, needed, free)


def file_sha256(path: str | os.PathLike[str], progress: Callable[[int], None] | None = None) -> str:
    """Streaming sha256 of a regular file (1 MiB chunks); ``progress`` receives the bytes read so far."""
    h = hashlib.sha256()
    done = 0
    with open_regular(path) as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            h.update(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done)
    return h.hexdigest()


def bytes_sha256(data: bytes | bytearray | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def array_sha256(img: np.ndarray) -> str:
    """Hash of decoded pixels plus shape (for frames that have no file)."""
    h = hashlib.sha256(str(img.shape).encode())
    h.update(np.ascontiguousarray(img).tobytes())
    return h.hexdigest()


def no_space_message(path: Path, exc: OSError) -> str:
    """The operator-facing text for a full disk: which file, which folder, what to do."""
    return (
        f"{path}: no space left on the disk holding {path.parent} ({exc.strerror or exc}); "
        "free space there (or point the setting at another disk) and retry"
    )


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike[str], mode: int = 0o644, fsync: bool = True) -> Iterator[BinaryIO]:
    """Open a binary stream whose content replaces ``path`` atomically when the block ends.

    The temporary file lives in the same folder (so the rename is atomic), is created with
    ``O_CREAT | O_EXCL | O_NOFOLLOW`` under a random name, and is removed if the block raises.
    ``mode`` is applied with ``fchmod``, so it holds whatever the umask.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(16):
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(tmp, flags, mode)
            break
        except FileExistsError:
            continue
    else:  # pragma: no cover - 16 random collisions
        raise FileExistsError(errno.EEXIST, "could not create a unique temporary file", str(target))
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if fsync:
        with contextlib.suppress(OSError):
            dfd = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)


def atomic_write(path: str | os.PathLike[str], data: bytes | str, mode: int = 0o644, fsync: bool = True) -> Path:
    """Replace ``path`` with ``data`` atomically (see :func:`atomic_writer`)."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_writer(path, mode=mode, fsync=fsync) as fh:
        fh.write(raw)
    return Path(path)


def atomic_copy(src: str | os.PathLike[str], dest: str | os.PathLike[str], keep_times: bool = False,
                fsync: bool = True) -> Path:
    """Copy ``src`` over ``dest`` atomically, byte for byte (see :func:`atomic_writer`).

    ``src`` must be a regular file (:func:`open_regular`); ``keep_times`` carries its access and
    modification times over, as ``shutil.copy2`` does."""
    with open_regular(src) as fin, atomic_writer(dest, fsync=fsync) as fout:
        shutil.copyfileobj(fin, fout, CHUNK)
    if keep_times:
        st = os.stat(src)
        os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns))
    return Path(dest)
