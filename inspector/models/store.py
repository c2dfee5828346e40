"""The model weight store: a manifest of known checkpoints and the folder that holds them.

``resources/models.yaml`` lists every checkpoint a pipeline can load (key, kind, architecture,
file names, sha256 or its published prefix, size, licence, source URL). On disk the store is::

    <model_dir>/<key>/<file>          the checkpoint files, exactly as published
    <model_dir>/installed.json        sha256 (and size, mtime, inode, ctime) of every file as installed

``installed.json`` doubles as a digest cache: a file whose size, mtime, inode and ctime match its
record, and whose record carries a valid HMAC under the station key, is not hashed again by
:meth:`ModelStore.status` or before loading; any change (or a forged or copied ``installed.json``)
means a full hash at the next check or load. Import hashes every file as it is copied and
:meth:`ModelStore.verify` with ``full=True`` always re-hashes. Hashing streams in 1 MiB chunks, so
multi-GB files never sit in memory.

Import and download stop at the manifest's size (and an archive member's header size) instead of
writing whatever arrives, check free space first, and write through exclusively created temporary
files in the target folder (:mod:`inspector.files`), so a planted symlink is never followed.

Errors say what to do: :class:`ModelMissingError` and :class:`ModelCorruptError` name the key, the
expected path and the command that fixes it (``inspector models download <key>`` or
``inspector models import <bundle>``).

Loading never unpickles arbitrary Python: ``torch.load(weights_only=True)`` (plus, per entry, a
short allow-list of named plain types, ``safe_globals``), safetensors, or — only for the entry whose
manifest says ``loader: torchscript`` (OpenAI's CLIP archive), after its sha256 is checked —
``torch.jit.load``. A refused type raises :class:`CheckpointRefusedError`, which names the type and
the manifest entry, whatever PyTorch's own wording.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib.util
import hashlib
import http.client
import json
import logging
import os
import pickle
import re
import stat
import tarfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from inspector.files import (
    NoSpaceError,
    atomic_writer,
    atomic_write,
    ensure_free_space,
    open_regular,
    file_sha256 as sha256_of,  # the one streaming file hasher
    no_space_message,
)

if TYPE_CHECKING:  # pragma: no cover
    from inspector.settings import Settings

log = logging.getLogger(__name__)

Progress = Callable[[float, str], None]
"""Fraction done in [0, 1] and a short message (same contract as ``inspector.detect.base.Progress``)."""

Status = Literal["installed", "missing", "corrupt"]
FileState = Literal["ok", "missing", "corrupt"]
KINDS = ("clip", "sam", "grounding", "backbone", "adapter")
RECORDS_FILE = "installed.json"
CHUNK = 1 << 20
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")
_PART_SUFFIX = ".part"

# Python types a checkpoint may contain besides tensors/containers, by the name the manifest uses.
# Only these can be allow-listed; the manifest cannot name arbitrary importable objects.
SAFE_GLOBALS: dict[str, Any] = {"argparse.Namespace": argparse.Namespace}


def default_manifest_path() -> Path:
    from inspector.settings import resources_dir

    return resources_dir() / "models.yaml"


def fix_command(key: str) -> str:
    return (
        f"`inspector models download {key}`, or on a station without internet "
        "`inspector models import <bundle folder or archive>`"
    )


# ---------------------------------------------------------------------------------------- errors
class ModelStoreError(RuntimeError):
    """Base class of the store's errors."""


class ModelMissingError(ModelStoreError):
    """A checkpoint is not installed. ``key``, ``path`` and ``command`` say which, where and how."""

    def __init__(self, key: str, path: Path, detail: str = "") -> None:
        self.key, self.path, self.command = key, Path(path), f"inspector models download {key}"
        what = f": {detail}" if detail else ""
        super().__init__(
            f"model {key!r} is not installed{what} (expected {path}). Install it with {fix_command(key)}."
        )


class ModelCorruptError(ModelStoreError):
    """A checkpoint's size or checksum does not match the manifest, or it cannot be read."""

    def __init__(self, key: str, path: Path, detail: str) -> None:
        self.key, self.path, self.command = key, Path(path), f"inspector models download {key}"
        self.detail = detail
        super().__init__(f"model {key!r}: {path} is corrupt: {detail}. Replace it with {fix_command(key)}.")


class BundleRejectedError(ModelCorruptError):
    """Some files of an import bundle failed verification (the good ones were installed)."""

    def __init__(self, src: Path, imported: list[str], failures: list[str]) -> None:
        self.key, self.path, self.command = "", Path(src), "inspector models import"
        self.imported, self.failures = imported, failures
        done = f"imported {', '.join(imported)}; " if imported else "nothing imported; "
        self.detail = f"{done}{len(failures)} file(s) rejected:\n  " + "\n  ".join(failures)
        ModelStoreError.__init__(self, f"{src}: {self.detail}")


class ModelDownloadError(ModelStoreError):
    """A download could not start or was interrupted (a partial file may be kept for resuming)."""


class UnknownModelError(ModelStoreError, KeyError):
    """A key that the manifest does not list; the message lists the known keys."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ManifestError(ModelStoreError):
    """``models.yaml`` is unreadable or invalid; the message names the file and the field."""


# -------------------------------------------------------------------------------------- manifest
_HEX = re.compile(r"^[0-9a-f]+$")
_KEY = re.compile(r"^[a-z0-9][a-z0-9_]*$")


class _FileSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    sha256: str | None = None
    git_blob_sha1: str | None = None
    size_bytes: int | None = Field(None, alias="bytes", gt=0)
    url: str | None = None
    one_of: str | None = None
    package: str | None = None  # "module:relative/path" of a file shipped inside a PyPI package

    @field_validator("package")
    @classmethod
    def _package(cls, v: str | None) -> str | None:
        if v is None:
            return v
        module, _, rel = v.partition(":")
        if not module.isidentifier() or not rel or rel.startswith("/") or ".." in rel.split("/"):
            raise ValueError(f"must be 'module:relative/path' inside the package, got {v!r}")
        return v

    @field_validator("sha256")
    @classmethod
    def _sha256(cls, v: str | None) -> str | None:
        if v is None:
            return v
        v = v.strip().lower()
        if not _HEX.match(v) or not 6 <= len(v) <= 64:
            raise ValueError(f"must be 6-64 hex digits (a sha256 or its published prefix), got {v!r}")
        return v

    @field_validator("git_blob_sha1")
    @classmethod
    def _git(cls, v: str | None) -> str | None:
        if v is None:
            return v
        v = v.strip().lower()
        if not _HEX.match(v) or len(v) != 40:
            raise ValueError(f"must be 40 hex digits, got {v!r}")
        return v

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and urllib.parse.urlsplit(v).scheme not in ("http", "https"):
            raise ValueError(f"must be an http(s) URL, got {v!r}")
        return v


class _EntrySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["clip", "sam", "grounding", "backbone", "adapter"]
    arch: str
    tag: str = ""
    description: str = ""
    licence: str
    homepage: str = ""
    size_mb: float = Field(gt=0)
    requires: list[str] = Field(default_factory=list)
    state_key: str | None = None
    drop_keys: list[str] = Field(default_factory=list)
    safe_globals: list[str] = Field(default_factory=list)
    options: dict[str, Any] = Field(default_factory=dict)
    default_file: str | None = None
    loader: Literal["state_dict", "torchscript"] = "state_dict"
    files: dict[str, _FileSpec] = Field(min_length=1)

    @field_validator("files")
    @classmethod
    def _names(cls, v: dict[str, _FileSpec]) -> dict[str, _FileSpec]:
        for name in v:
            if not name or "/" in name or "\\" in name or name in (".", "..") or name.startswith("."):
                raise ValueError(f"file name {name!r} must be a plain file name")
        return v

    @field_validator("safe_globals")
    @classmethod
    def _globals(cls, v: list[str]) -> list[str]:
        unknown = [n for n in v if n not in SAFE_GLOBALS]
        if unknown:
            raise ValueError(f"{unknown} not allowed; known: {sorted(SAFE_GLOBALS)}")
        return v


class _ManifestSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: int = 1
    models: dict[str, _EntrySpec]


@dataclass
class ModelEntry:
    """One checkpoint (single file) or checkpoint folder (several files) the store knows."""

    key: str
    kind: str
    arch: str
    files: list[str]
    sha256: dict[str, str]
    """file -> full sha256 or its published prefix (files without one are checked otherwise)."""
    size_mb: float
    licence: str
    urls: dict[str, str]
    tag: str = ""
    description: str = ""
    homepage: str = ""
    file_bytes: dict[str, int] = field(default_factory=dict)
    git_blob_sha1: dict[str, str] = field(default_factory=dict)
    one_of: dict[str, list[str]] = field(default_factory=dict)
    """group name -> alternative files (any one is enough; the first is the one downloaded)."""
    requires: list[str] = field(default_factory=list)
    state_key: str | None = None
    drop_keys: list[str] = field(default_factory=list)
    safe_globals: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    default_file: str | None = None
    loader: str = "state_dict"
    """``torchscript`` only for the entry whose published file is a TorchScript archive."""
    packaged: dict[str, str] = field(default_factory=dict)
    """file -> "module:relative/path": shipped inside an installed Python package (a PyPI wheel)."""

    @property
    def url(self) -> str | None:
        """The first file's source URL (the entry's main source)."""
        return next(iter(self.urls.values()), None)

    @property
    def multi_file(self) -> bool:
        return len(self.files) > 1

    def groups(self) -> list[list[str]]:
        """What must be present: each plain file on its own, each ``one_of`` group as a whole."""
        seen: set[str] = set()
        out: list[list[str]] = []
        for f in self.files:
            if f in seen:
                continue
            group = next((g for g in self.one_of.values() if f in g), [f])
            seen.update(group)
            out.append(group)
        return out

    def has_digest(self, file: str) -> bool:
        return file in self.sha256 or file in self.git_blob_sha1


def load_manifest(path: str | os.PathLike[str]) -> dict[str, ModelEntry]:
    """Read and validate a manifest; errors name the file and the field path."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read the model manifest ({exc.strerror or exc})") from exc
    except yaml.YAMLError as exc:
        raise ManifestError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: expected a mapping with a 'models' section")
    try:
        spec = _ManifestSpec.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise ManifestError(f"{path}: {loc}: {err['msg'].removeprefix('Value error, ')}") from exc
    entries: dict[str, ModelEntry] = {}
    for key, e in spec.models.items():
        if not _KEY.match(key):
            raise ManifestError(f"{path}: models.{key}: keys are lower-case letters, digits and '_'")
        groups: dict[str, list[str]] = {}
        for name, f in e.files.items():
            if f.one_of:
                groups.setdefault(f.one_of, []).append(name)
        if e.default_file is not None and e.default_file not in e.files:
            raise ManifestError(f"{path}: models.{key}.default_file: {e.default_file!r} is not one of its files")
        entries[key] = ModelEntry(
            key=key,
            kind=e.kind,
            arch=e.arch,
            files=list(e.files),
            sha256={n: f.sha256 for n, f in e.files.items() if f.sha256},
            size_mb=e.size_mb,
            licence=e.licence,
            urls={n: f.url for n, f in e.files.items() if f.url},
            tag=e.tag,
            description=e.description,
            homepage=e.homepage,
            file_bytes={n: f.size_bytes for n, f in e.files.items() if f.size_bytes},
            git_blob_sha1={n: f.git_blob_sha1 for n, f in e.files.items() if f.git_blob_sha1},
            one_of=groups,
            requires=list(e.requires),
            state_key=e.state_key,
            drop_keys=list(e.drop_keys),
            safe_globals=list(e.safe_globals),
            options=dict(e.options),
            default_file=e.default_file,
            loader=e.loader,
            packaged={n: f.package for n, f in e.files.items() if f.package},
        )
    for key, entry in entries.items():
        missing = [r for r in entry.requires if r not in entries]
        if missing:
            raise ManifestError(f"{path}: models.{key}.requires: unknown keys {missing}")
    return entries


def packaged_file(spec: str) -> Path | None:
    """The path of ``"module:relative/path"`` inside an installed package, without importing it.

    None when the package is not installed or does not hold the file."""
    module, _, rel = spec.partition(":")
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    locations = list(found.submodule_search_locations or []) if found is not None else []
    for base in locations:
        candidate = Path(base) / rel
        if candidate.is_file():
            return candidate
    return None


# ---------------------------------------------------------------------------------------- hashing
def git_blob_sha1_of(path: Path) -> str:
    """git's blob id of a file: sha1 over ``b"blob <size>\\0"`` + content (streamed)."""
    h = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _signature(st: os.stat_result) -> tuple[int, int, int, int]:
    """What ties a recorded digest to one file: size, mtime, inode and ctime.

    ctime cannot be set back by ``touch`` or ``os.utime``, so an edited file never matches its old
    record even when its size and mtime are restored."""
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


_RECORD_FIELDS = ("sha256", "size", "mtime_ns", "ino", "ctime_ns", "source")


def _record_mac(rel: str, rec: dict[str, Any]) -> str | None:
    """HMAC (station key) of an ``installed.json`` record, or None when the key is unavailable."""
    from inspector.keys import StationKeyError, sign

    blob = json.dumps([rel, *(rec.get(f) for f in _RECORD_FIELDS)], separators=(",", ":")).encode()
    try:
        return sign(b"inspector-installed-v2\0" + blob)
    except (StationKeyError, OSError) as exc:
        log.warning("station key unavailable (%s); weight digests are not cached", exc)
        return None


def _record_trusted(rel: str, rec: dict[str, Any] | None, sig: tuple[int, int, int, int]) -> bool:
    """A record may stand in for hashing: signed by this station and matching the file's signature."""
    import hmac

    if not isinstance(rec, dict) or not isinstance(rec.get("sha256"), str) or not isinstance(rec.get("mac"), str):
        return False
    if (rec.get("size"), rec.get("mtime_ns"), rec.get("ino"), rec.get("ctime_ns")) != sig:
        return False
    mac = _record_mac(rel, rec)
    return mac is not None and hmac.compare_digest(mac, rec["mac"])


def _short(digest: str | None) -> str:
    return (digest[:12] + "…") if digest and len(digest) > 12 else (digest or "?")


def _mismatch(
    entry: ModelEntry, file: str, size: int, sha: str | None, path: Path | None, git_sha1: str | None = None
) -> str | None:
    """Why the file does not match the manifest, or None. Hashes ``path`` for git ids if needed
    (unless ``git_sha1``, computed while streaming, is given)."""
    want = entry.file_bytes.get(file)
    if want is not None and size != want:
        return f"size {size} bytes, expected {want} (incomplete copy or download?)"
    if size == 0:
        return "empty file"
    exp = entry.sha256.get(file)
    if exp is not None and sha is not None and not sha.startswith(exp):
        kind = "sha256" if len(exp) == 64 else "sha256 prefix"
        return f"sha256 {_short(sha)} does not match the published {kind} {_short(exp)}"
    git = entry.git_blob_sha1.get(file)
    if git is not None:
        got = git_sha1 if git_sha1 is not None or path is None else git_blob_sha1_of(path)
        if got != git:
            return f"git blob id {_short(got)} does not match the published {_short(git)}"
    return None


# --------------------------------------------------------------------------------------- reports
@dataclass
class FileCheck:
    key: str
    file: str
    path: Path
    state: FileState
    detail: str = ""
    needed: bool = True
    """False for a missing alternative whose ``one_of`` group is satisfied by another file."""


@dataclass
class VerifyReport:
    """Per-file results of :meth:`ModelStore.verify` plus a status per key."""

    checks: list[FileCheck]
    statuses: dict[str, Status]

    def status(self, key: str) -> Status:
        return self.statuses[key]

    @property
    def corrupt_keys(self) -> list[str]:
        return [k for k, s in self.statuses.items() if s == "corrupt"]

    @property
    def missing_keys(self) -> list[str]:
        return [k for k, s in self.statuses.items() if s == "missing"]

    @property
    def installed_keys(self) -> list[str]:
        return [k for k, s in self.statuses.items() if s == "installed"]

    @property
    def ok(self) -> bool:
        """Every checked key installed and intact."""
        return all(s == "installed" for s in self.statuses.values())

    def problems(self, key: str | None = None) -> list[FileCheck]:
        return [c for c in self.checks if (key is None or c.key == key) and c.needed and c.state != "ok"]


def _entry_status(entry: ModelEntry, checks: dict[str, FileCheck]) -> Status:
    if any(c.state == "corrupt" for c in checks.values()):
        return "corrupt"
    ok = all(any(checks[f].state == "ok" for f in group) for group in entry.groups())
    return "installed" if ok else "missing"


def _mark_needed(entry: ModelEntry, checks: dict[str, FileCheck]) -> None:
    for group in entry.groups():
        if len(group) > 1 and any(checks[f].state == "ok" for f in group):
            for f in group:
                if checks[f].state == "missing":
                    checks[f].needed = False


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
        if _part_offset(part):
            part.unlink()
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | nofollow, 0o644)
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # pragma: no cover - O_NOFOLLOW already refused links
        os.close(fd)
        raise ModelDownloadError(f"{part}: not a regular file; remove it and retry")
    return os.fdopen(fd, "ab" if append else "wb")


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


# ----------------------------------------------------------------------------------------- store
class ModelStore:
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
        want = entry.file_bytes.get(file)
        if want is not None and size != want:  # cheap: no hashing needed to see a truncated file
            return FileCheck(key, file, path, "corrupt", f"size {size} bytes, expected {want}")
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

    # ------------------------------------------------------------------ import
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

    # ------------------------------------------------------------------ download
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


# --------------------------------------------------------------------------------------- loading
def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    if "weights_only" in text:  # PyTorch advice to disable the safe loader: never relayed
        return type(exc).__name__
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            return any(n.endswith("/constants.pkl") or n == "constants.pkl" for n in zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _pickle_globals(path: Path) -> list[str]:
    """``module.name`` of every global a torch checkpoint's pickle references, without unpickling.

    Reads the opcodes of ``<archive>/data.pkl`` (zip format) or of the pickles of a legacy file
    with :mod:`pickletools`; nothing is imported or executed. Best effort: [] when unreadable."""
    import pickletools

    found: list[str] = []

    def scan(stream: IO[bytes]) -> None:
        strings: list[str] = []
        for op, arg, _pos in pickletools.genops(stream):
            if op.name == "GLOBAL" and isinstance(arg, str):
                found.append(arg.replace(" ", "."))
            elif op.name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE") and isinstance(arg, str):
                strings = [*strings[-1:], arg]
            elif op.name == "STACK_GLOBAL" and len(strings) == 2:
                found.append(".".join(strings))
            if op.name == "STOP":
                return

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                names = [n for n in zf.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
                for name in names[:1]:
                    with zf.open(name) as fh:
                        scan(fh)
        else:
            with open(path, "rb") as fh:
                for _ in range(4):  # legacy format: magic, protocol, sys info, then the object
                    scan(fh)
    except (ValueError, EOFError, OSError, zipfile.BadZipFile, pickle.UnpicklingError):
        pass
    return list(dict.fromkeys(found))


def _refused_types(path: Path, allowed: Iterable[str], exc: BaseException) -> list[str]:
    """The types a weights-only load refused, found in the file itself (not in torch's wording)."""
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        default = set(_get_allowed_globals())
    except Exception:  # noqa: BLE001 - private API; fall back to "torch types are torch's business"
        default = set()
    ok = set(default) | set(allowed)
    refused = [g for g in _pickle_globals(path) if g not in ok and not g.startswith("torch.")]
    if not refused:
        refused = re.findall(r"GLOBAL ([\w.]+)", str(exc))
    return refused or ["(an unlisted Python type)"]


class CheckpointRefusedError(ModelCorruptError):
    """A checkpoint holds Python objects (or code) outside its entry's allow-list; nothing ran.

    ``refused`` lists the types by name; ``manifest`` is the manifest file holding the entry."""

    def __init__(self, key: str, path: Path, refused: list[str], manifest: Path | None, allowed: list[str]) -> None:
        self.key, self.path, self.command = key, Path(path), f"inspector models download {key}"
        self.refused, self.manifest = refused, manifest
        where = f"manifest entry {key!r}" + (f" in {manifest}" if manifest else "")
        self.detail = (
            f"holds Python objects of type {', '.join(refused)}, which Inspector's weights-only loader refuses "
            f"({where} allows {', '.join(allowed) or 'no extra types'}); nothing from the file was executed"
        )
        ModelStoreError.__init__(
            self,
            f"model {key!r}: {path} {self.detail}. If the file is genuine (its sha256 matched the manifest), "
            f"report the type(s) and the entry {key!r} to the Inspector maintainers; otherwise replace it with "
            f"{fix_command(key)}.",
        )


def _load_checkpoint(entry: ModelEntry, path: Path, map_location: Any, manifest: Path | None = None) -> Any:
    key = entry.key
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device=str(map_location))
        except (SafetensorError, OSError) as exc:
            raise ModelCorruptError(key, path, f"not a readable safetensors file ({exc})") from exc

    import torch

    is_zip = zipfile.is_zipfile(path)
    torchscript = is_zip and _is_torchscript(path)
    if torchscript and entry.loader != "torchscript":
        # TorchScript holds code; only the one entry published that way may be loaded as such
        raise CheckpointRefusedError(key, path, ["TorchScript archive (code)"], manifest, entry.safe_globals)
    if torchscript:
        # OpenAI's CLIP releases are TorchScript archives: tensors + TorchScript code, no Python
        # pickle; torch.jit.load restores them without importing arbitrary Python objects. The
        # caller has checked the file's sha256 against the manifest (ModelStore.path).
        try:
            with warnings.catch_warnings():  # torch >= 2.10 flags jit as deprecated; loading still works
                warnings.simplefilter("ignore", FutureWarning)
                return dict(torch.jit.load(str(path), map_location=map_location).state_dict())
        except RuntimeError as exc:
            raise ModelCorruptError(key, path, f"not a readable TorchScript archive ({exc})") from exc
    allowed = [SAFE_GLOBALS[n] for n in entry.safe_globals]
    t0 = time.perf_counter()
    try:
        with torch.serialization.safe_globals(allowed):
            obj = torch.load(path, map_location=map_location, weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as exc:
        # torch's text changes between releases (and advises weights_only=False): never shown
        log.debug("weights-only load of %s refused: %s", path, exc)
        globals_seen = _pickle_globals(path)
        if not globals_seen and "GLOBAL" not in str(exc):
            raise ModelCorruptError(key, path, "not a readable PyTorch checkpoint (its pickle is malformed)") from exc
        raise CheckpointRefusedError(
            key, path, _refused_types(path, entry.safe_globals, exc), manifest, entry.safe_globals
        ) from None
    except (RuntimeError, EOFError, ValueError, zipfile.BadZipFile) as exc:
        raise ModelCorruptError(key, path, f"not a readable PyTorch checkpoint ({_first_line(exc)})") from exc
    log.debug("loaded %s in %.2f s", path, time.perf_counter() - t0)
    return obj
