"""Reading an offline bundle (folder, .zip, .tar[.gz]) and importing its checkpoints into the store."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from inspector.files import (
    atomic_writer,
    file_sha256 as sha256_of,  # the one streaming file hasher
    no_space_message,
)
from inspector.models.store.download import _check_space
from inspector.models.store.errors import BundleRejectedError, ModelCorruptError, ModelStoreError
from inspector.models.store.manifest import CHUNK, ModelEntry
from inspector.models.store.verify import _mismatch
from inspector.progress import Progress

log = logging.getLogger("inspector.models.store")  # one logger for the whole store


# ---------------------------------------------------------------------------------------- bundle
@dataclass
class _Member:
    """One file inside an import bundle (folder, zip or tar)."""

    name: str  # posix path relative to the bundle root
    size: int
    open: Callable[[], IO[bytes]]
    local: Path | None = None  # the file itself when the bundle is a folder


def _skip_member(name: str) -> bool:
    parts = PurePosixPath(name).parts
    return not parts or "__MACOSX" in parts or parts[-1].startswith("._") or parts[-1] == ".DS_Store"


@contextlib.contextmanager
def _bundle(src: Path) -> Iterator[list[_Member]]:
    if src.is_dir():
        members = []
        for p in sorted(src.rglob("*")):
            rel = p.relative_to(src).as_posix()
            if p.is_file() and not _skip_member(rel):
                members.append(_Member(rel, p.stat().st_size, lambda p=p: open(p, "rb"), p))
        yield members
    elif zipfile.is_zipfile(src):
        with zipfile.ZipFile(src) as zf:
            yield [
                _Member(i.filename, i.file_size, lambda i=i: zf.open(i))
                for i in zf.infolist()
                if not i.is_dir() and not _skip_member(i.filename)
            ]
    elif tarfile.is_tarfile(src):
        with tarfile.open(src, "r:*") as tf:
            yield [
                _Member(m.name, m.size, lambda m=m: tf.extractfile(m))  # type: ignore[arg-type,return-value]
                for m in tf.getmembers()
                if m.isfile() and not _skip_member(m.name)
            ]
    else:
        raise ModelStoreError(f"{src}: not a folder, a .zip or a .tar[.gz] archive; nothing imported")


class BundleImport:
    """:class:`~inspector.models.store.ModelStore` methods that import an offline bundle."""

    def import_from(self, src: str | os.PathLike[str], progress: Progress | None = None) -> list[str]:
        """Copy the known checkpoints found in a bundle into the store; returns the keys touched.

        ``src`` is a folder or a .zip/.tar[.gz] archive laid out as ``<key>/<file>`` (a copied
        model folder works) or holding the files flat, matched by file name. Every file is
        copied to a temporary name while hashing, verified, then renamed into place; a file that
        fails verification is not installed and :class:`ModelCorruptError` lists it after the
        good files are in.
        """
        src = Path(src).expanduser()
        if not src.exists():
            raise FileNotFoundError(f"{src}: no such folder or archive")
        touched: list[str] = []
        failures: list[str] = []
        with _bundle(src) as members:
            plan = self._plan_import(members)
            if not plan:
                raise ModelStoreError(
                    f"{src}: no known model file found (expected <key>/<file> or the files' own names, "
                    f"e.g. {self.entries()[0].key}/{self.entries()[0].files[0]}); see `inspector models list`"
                )
            total = sum(m.size for _, _, m in plan) or 1
            done = 0
            for entry, file, member in plan:
                def step(n: int, done: int = done, label: str = f"importing {entry.key}/{file}") -> None:
                    if progress is not None:
                        progress(min((done + n) / total, 1.0), label)

                try:
                    self._install_member(entry, file, member, f"import:{src}", step)
                except ModelCorruptError as exc:
                    failures.append(f"{member.name}: {exc.detail}")
                else:
                    if entry.key not in touched:
                        touched.append(entry.key)
                done += member.size
        if progress is not None:
            progress(1.0, "import finished")
        if failures:
            raise BundleRejectedError(src, touched, failures)
        return touched

    def _plan_import(self, members: list[_Member]) -> list[tuple[ModelEntry, str, _Member]]:
        by_name: dict[str, list[ModelEntry]] = {}
        for e in self.entries():
            for f in e.files:
                by_name.setdefault(f, []).append(e)
        exact: dict[tuple[str, str], _Member] = {}
        flat: dict[tuple[str, str], _Member] = {}
        for m in members:
            parts = PurePosixPath(m.name).parts
            name = parts[-1]
            if len(parts) >= 2 and parts[-2] in self._entries and name in self._entries[parts[-2]].files:
                exact.setdefault((parts[-2], name), m)
                continue
            owners = by_name.get(name, [])
            if len(owners) == 1:
                flat.setdefault((owners[0].key, name), m)
            elif len(owners) > 1:
                log.warning("%s: several models have a file called %s; put it in a <key>/ folder", m.name, name)
            else:
                log.info("import: ignoring %s (not a known model file)", m.name)
        chosen = {**flat, **exact}
        # archive order keeps streaming tar.gz reads sequential
        order = {id(m): i for i, m in enumerate(members)}
        plan = [(self._entries[k], f, m) for (k, f), m in chosen.items()]
        return sorted(plan, key=lambda t: order[id(t[2])])

    def _install_member(
        self, entry: ModelEntry, file: str, member: _Member, source: str, step: Callable[[int], None]
    ) -> None:
        dest = self.root / entry.key / file
        dest.parent.mkdir(parents=True, exist_ok=True)
        if member.local is not None and member.local.resolve() == dest.resolve():
            sha = sha256_of(dest, step)  # importing the store onto itself: verify in place
            problem = _mismatch(entry, file, dest.stat().st_size, sha, dest)
            if problem:
                raise ModelCorruptError(entry.key, dest, problem)
            self._record(entry.key, file, dest, sha, source)
            return
        expected = entry.file_bytes.get(file)
        if expected is not None and member.size != expected:  # the header (or stat) says so: copy nothing
            raise ModelCorruptError(
                entry.key, Path(member.name), f"size {member.size} bytes, expected {expected}; nothing was copied"
            )
        limit = expected if expected is not None else member.size
        _check_space(dest, limit)
        h = hashlib.sha256()
        git = hashlib.sha1(f"blob {limit}\0".encode()) if file in entry.git_blob_sha1 else None
        n = 0
        try:
            # exclusive temporary file in the target folder, renamed over dest only when verified
            with member.open() as fin, atomic_writer(dest) as fout:
                while chunk := fin.read(min(CHUNK, limit + 1 - n)):
                    n += len(chunk)
                    if n > limit:  # a member larger than its header or the manifest says: stop here
                        raise ModelCorruptError(
                            entry.key, Path(member.name),
                            f"more than the {limit} bytes expected; copying stopped there and nothing was installed",
                        )
                    fout.write(chunk)
                    h.update(chunk)
                    if git is not None:
                        git.update(chunk)
                    step(n)
                problem = _mismatch(entry, file, n, h.hexdigest(), None, git.hexdigest() if git else None)
                if problem:
                    raise ModelCorruptError(entry.key, Path(member.name), problem)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise ModelStoreError(no_space_message(dest, exc)) from exc
            raise
        self._record(entry.key, file, dest, h.hexdigest(), source)
        log.info("installed %s/%s from %s", entry.key, file, source)
