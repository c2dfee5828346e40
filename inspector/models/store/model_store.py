"""The weight store on disk: records of installed files, status, verify, paths and state dicts."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inspector.files import (
    atomic_write,
    file_sha256 as sha256_of,  # the one streaming file hasher
)
from inspector.models.store.bundle import BundleImport
from inspector.models.store.checkpoint import _load_checkpoint
from inspector.models.store.download import Downloads
from inspector.models.store.errors import ModelCorruptError, ModelMissingError, UnknownModelError
from inspector.models.store.manifest import (
    ModelEntry,
    RECORDS_FILE,
    WEIGHT_SUFFIXES,
    default_manifest_path,
    load_manifest,
    packaged_file,
)
from inspector.models.store.verify import (
    FileCheck,
    Status,
    VerifyReport,
    _entry_status,
    _mark_needed,
    _mismatch,
    _record_mac,
    _record_trusted,
    _signature,
    _size_mismatch,
)
from inspector.progress import Progress

if TYPE_CHECKING:  # pragma: no cover
    from inspector.settings import Settings

log = logging.getLogger("inspector.models.store")  # one logger for the whole store


# ----------------------------------------------------------------------------------------- store
class ModelStore(BundleImport, Downloads):
    """The weight store rooted at ``root`` (see module docstring)."""

    def __init__(self, root: str | os.PathLike[str], manifest_path: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root).expanduser()
        self.manifest_path = Path(manifest_path) if manifest_path is not None else default_manifest_path()
        self._entries = load_manifest(self.manifest_path)
        self._lock = threading.RLock()
        # (size, mtime_ns, inode, ctime_ns, sha256) per "<key>/<file>": hashed in this process
        self._seen: dict[str, tuple[int, int, int, int, str]] = {}

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> ModelStore:
        """The store at ``Settings.model_dir`` (env ``INSPECTOR_MODEL_DIR``) with the packaged manifest."""
        if settings is None:
            from inspector.settings import Settings

            settings = Settings.load()
        return cls(settings.model_dir)

    def __repr__(self) -> str:
        return f"ModelStore({str(self.root)!r}, {len(self._entries)} entries)"

    # ------------------------------------------------------------------ manifest
    def entries(self) -> list[ModelEntry]:
        return list(self._entries.values())

    def entry(self, key: str) -> ModelEntry:
        try:
            return self._entries[key]
        except KeyError:
            raise UnknownModelError(
                f"unknown model key {key!r}; known keys: {', '.join(self._entries)} (see {self.manifest_path})"
            ) from None

    def with_requirements(self, keys: Iterable[str]) -> list[str]:
        """``keys`` plus everything they require (transitively), in a stable order."""
        out: list[str] = []

        def add(k: str) -> None:
            if k in out:
                return
            out.append(k)
            for r in self.entry(k).requires:
                add(r)

        for k in keys:
            add(k)
        return out

    def file_path(self, key: str, file: str) -> Path:
        """Where a file of an entry lives (whether or not it is installed)."""
        entry = self.entry(key)
        if file not in entry.files:
            raise ValueError(f"model {key!r} has no file {file!r}; its files: {', '.join(entry.files)}")
        if file in entry.packaged:
            shipped = packaged_file(entry.packaged[file])
            if shipped is not None:
                return shipped
        return self.root / key / file

    def is_packaged(self, key: str, file: str | None = None) -> bool:
        """True when the file (default: the entry's first) comes from an installed Python package."""
        entry = self.entry(key)
        file = file or entry.files[0]
        return file in entry.packaged and packaged_file(entry.packaged[file]) is not None

    # ------------------------------------------------------------------ records (installed.json)
    @property
    def records_path(self) -> Path:
        return self.root / RECORDS_FILE

    def records(self) -> dict[str, dict[str, Any]]:
        """``{"<key>/<file>": {"sha256", "size", "mtime_ns", "ino", "ctime_ns", "source", "recorded", "mac"}}``.

        A record is trusted as a digest cache only when its ``mac`` (HMAC under the station key,
        :func:`_record_mac`) is valid and size, mtime, inode and ctime all match the file (see
        :meth:`_sha256`); a forged or copied ``installed.json`` therefore only costs a re-hash."""
        path = self.records_path
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("%s: unreadable (%s); digests will be recomputed", path, exc)
            return {}
        files = data.get("files") if isinstance(data, dict) else None
        return files if isinstance(files, dict) else {}

    @contextlib.contextmanager
    def _records_lock(self) -> Iterator[None]:
        with self._lock:
            self.root.mkdir(parents=True, exist_ok=True)
            try:
                import fcntl
            except ImportError:  # pragma: no cover - Windows
                yield
                return
            flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
            with os.fdopen(os.open(self.root / ".installed.lock", flags, 0o644), "r+b") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(fh, fcntl.LOCK_UN)

    def _record(self, key: str, file: str, path: Path, sha: str, source: str | None = None) -> None:
        st = path.stat()
        rel = f"{key}/{file}"
        self._seen[rel] = (*_signature(st), sha)
        try:
            with self._records_lock():
                files = self.records()
                old = files.get(rel, {})
                size, mtime_ns, ino, ctime_ns = _signature(st)
                rec: dict[str, Any] = {
                    "sha256": sha,
                    "size": size,
                    "mtime_ns": mtime_ns,
                    "ino": ino,
                    "ctime_ns": ctime_ns,
                    "source": source or old.get("source", "found in the store"),
                    "recorded": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                }
                mac = _record_mac(rel, rec)
                if mac is not None:
                    rec["mac"] = mac
                files[rel] = rec
                atomic_write(self.records_path, json.dumps({"format": 2, "files": files}, indent=1, sort_keys=True))
        except OSError as exc:  # a read-only store still verifies, it just cannot cache
            log.warning("%s: cannot record the digest of %s (%s)", self.records_path, rel, exc)

    def _sha256(self, key: str, file: str, path: Path, full: bool, progress: Progress | None = None) -> str:
        """sha256 of an installed file: from a signed record whose size, mtime, inode and ctime all
        match (unless ``full``), else hashed in full (and re-recorded)."""
        st = path.stat()
        rel = f"{key}/{file}"
        sig = _signature(st)
        if not full:
            seen = self._seen.get(rel)
            if seen is not None and seen[:4] == sig:
                return seen[4]
            rec = self.records().get(rel)
            if _record_trusted(rel, rec, sig):
                assert rec is not None
                self._seen[rel] = (*sig, rec["sha256"])
                return str(rec["sha256"])
        log.info("hashing %s (%.0f MB)", path, st.st_size / 1e6)
        msg = f"verifying {rel}"
        cb = (lambda n: progress(n / max(st.st_size, 1), msg)) if progress else None
        sha = sha256_of(path, cb)
        self._seen[rel] = (*sig, sha)
        shipped = file in self.entry(key).packaged and path != self.root / key / file
        self._record(key, file, path, sha, "shipped with the package" if shipped else None)
        return sha

    # ------------------------------------------------------------------ checks
    def check_file(self, key: str, file: str, full: bool = False, progress: Progress | None = None) -> FileCheck:
        """State of one file of an entry: ``ok``, ``missing`` or ``corrupt`` (with the reason)."""
        entry = self.entry(key)
        path = self.file_path(key, file)
        if not path.exists():
            return FileCheck(key, file, path, "missing", "not installed")
        if not path.is_file():
            return FileCheck(key, file, path, "corrupt", "is not a regular file")
        size = path.stat().st_size
        wrong_size = _size_mismatch(entry, file, size)
        if wrong_size is not None:  # cheap: no hashing needed to see a truncated file
            return FileCheck(key, file, path, "corrupt", wrong_size)
        try:
            sha = self._sha256(key, file, path, full, progress)
        except OSError as exc:
            return FileCheck(key, file, path, "corrupt", f"cannot read ({exc.strerror or exc})")
        problem = _mismatch(entry, file, size, sha, path)
        if problem:
            return FileCheck(key, file, path, "corrupt", problem)
        detail = "verified" if entry.has_digest(file) else "present (no published digest to check)"
        return FileCheck(key, file, path, "ok", detail)

    def _checks(self, entry: ModelEntry, full: bool, progress: Progress | None = None) -> dict[str, FileCheck]:
        checks = {f: self.check_file(entry.key, f, full, progress) for f in entry.files}
        _mark_needed(entry, checks)
        return checks

    def status(self, key: str) -> Status:
        """``installed`` / ``missing`` / ``corrupt`` — cheap after the first check of each file."""
        entry = self.entry(key)
        return _entry_status(entry, self._checks(entry, full=False))

    def verify(self, key: str | None = None, full: bool = True, progress: Progress | None = None) -> VerifyReport:
        """Check every file of ``key`` (or of every entry); ``full`` re-hashes even recorded files."""
        entries = [self.entry(key)] if key is not None else self.entries()
        checks: list[FileCheck] = []
        statuses: dict[str, Status] = {}
        total = sum(e.size_mb for e in entries) or 1.0
        done = 0.0
        for e in entries:
            sub = None
            if progress is not None:
                base, share = done / total, e.size_mb / total
                sub = lambda f, m, base=base, share=share: progress(base + share * f, m)  # noqa: E731
            by_file = self._checks(e, full, sub)
            checks.extend(by_file.values())
            statuses[e.key] = _entry_status(e, by_file)
            done += e.size_mb
        if progress is not None:
            progress(1.0, "verified")
        return VerifyReport(checks, statuses)

    def installed_size_mb(self, key: str) -> float:
        entry = self.entry(key)
        total = 0
        for f in entry.files:
            p = self.file_path(key, f)
            if p.is_file():
                total += p.stat().st_size
        return total / 1e6

    # ------------------------------------------------------------------ paths
    def path(self, key: str, file: str | None = None) -> Path:
        """The installed file (or, for a multi-file entry with ``file=None``, its folder).

        Raises :class:`ModelMissingError` / :class:`ModelCorruptError` (with the fixing command).
        """
        entry = self.entry(key)
        if file is None and not entry.multi_file:
            file = entry.files[0]
        if file is not None:
            check = self.check_file(key, file)
            if check.state == "missing":
                raise ModelMissingError(key, check.path, f"file {file} is missing" if entry.multi_file else "")
            if check.state == "corrupt":
                raise ModelCorruptError(key, check.path, check.detail)
            return check.path
        checks = self._checks(entry, full=False)
        bad = next((c for c in checks.values() if c.state == "corrupt"), None)
        if bad is not None:
            raise ModelCorruptError(key, bad.path, bad.detail)
        absent = [" or ".join(g) for g in entry.groups() if not any(checks[f].state == "ok" for f in g)]
        if absent:
            raise ModelMissingError(key, self.root / key, f"missing {', '.join(absent)}")
        return self.root / key

    def weights_file(self, key: str) -> str:
        """The file :meth:`load_state_dict` reads when no file is named."""
        entry = self.entry(key)
        if entry.default_file:
            return entry.default_file
        if not entry.multi_file:
            return entry.files[0]
        weights = [f for f in entry.files if f.endswith(WEIGHT_SUFFIXES)]
        groups = {tuple(g) for g in entry.groups() if set(g) & set(weights)}
        if len(groups) == 1:
            group = next(iter(groups))
            for f in group:  # the first installed alternative, in manifest order
                if (self.root / key / f).is_file():
                    return f
            return group[0]
        if not weights:
            raise ValueError(f"model {key!r} lists no checkpoint file (none ends in {', '.join(WEIGHT_SUFFIXES)}); "
                             "pass file=, or set default_file in its manifest entry")
        raise ValueError(f"model {key!r} holds several checkpoints ({', '.join(weights)}); pass file=")

    # ------------------------------------------------------------------ loading
    def load_state_dict(self, key: str, file: str | None = None, map_location: Any = "cpu") -> dict[str, Any]:
        """Load a checkpoint as a state dict, safely (no unrestricted unpickling).

        Unwraps the entry's ``state_key`` (e.g. ``model``, ``trainable_linearlayer``), drops its
        ``drop_keys`` and strips a ``module.`` prefix left by DistributedDataParallel.
        """
        entry = self.entry(key)
        file = file or self.weights_file(key)
        path = self.path(key, file)
        obj = _load_checkpoint(entry, path, map_location, self.manifest_path)
        if entry.state_key and isinstance(obj, dict) and entry.state_key in obj:
            obj = obj[entry.state_key]
        if not isinstance(obj, dict) or not obj:
            raise ModelCorruptError(key, path, f"holds a {type(obj).__name__}, not a state dict")
        state = {k: v for k, v in obj.items() if k not in entry.drop_keys}
        if all(isinstance(k, str) and k.startswith("module.") for k in state):
            state = {k[len("module.") :]: v for k, v in state.items()}
        return state
