"""Append-only inspection records an auditor can trust (Qt-free, torch-free).

Every operator decision, every correction of one, and every part the station could not decide
(``no_read``, ``skipped``, ``not_decided``) is one :class:`InspectionRecord`. Storage sits behind
the small :class:`RecordStore` protocol; :class:`SqliteRecordStore` is the default (one file, WAL
journal, ``synchronous=FULL``). UPDATE and DELETE are refused by triggers.

**Keyed hash chain.** Each row stores ``prev_hash`` (the previous row's ``row_hash``, 64 zeros for
the first) and ``row_hash = HMAC-SHA256(station key, prev_hash + "\\n" + canonical JSON of the
row's fields)`` (:func:`chain_hash`, a pure function any store can use). Without the station key
(:mod:`inspector.keys`) nobody can rewrite a row and recompute the chain. Rows written before
schema 2 keep their unkeyed sha256 chain; ``meta.keyed_from`` says where keying starts.

**Checkpoints.** After every append the store appends a signed ``(count, head, time)`` line to
``<db>.checkpoints`` (fsynced). Deleting the newest rows, or putting back an older copy of the
database, leaves checkpoints that no longer match; :meth:`SqliteRecordStore.verify` reports
exactly which rows are missing or changed. Every CSV export carries the same signed checkpoint
as its last line, and ``records verify --checkpoints FILE`` checks against it.

**Write-ahead journal.** :class:`RecordKeeper` (what the station uses) writes every record to a
:class:`RecordJournal` (one signed JSON line, fsynced; by default ``<db>.journal``, configurable
to a second disk) *before* the database, and only then reports it saved. The journal is replayed
into the database at start (deduplicated by ``uid``). When neither the journal nor the database
can take a write, :meth:`RecordKeeper.save` raises :class:`RecordsUnavailable`: the station stops
accepting decisions; nothing is held only in memory.

**Read-only opening.** ``SqliteRecordStore(path, read_only=True)`` (``records verify|list|export``)
opens with ``mode=ro`` and never creates or alters a file; a ``chmod 444`` copy or WORM media works.
A file without the schema is "not an Inspector records database".

**Backups.** Copy with :meth:`SqliteRecordStore.backup` (``inspector records backup DEST``, the
SQLite online-backup API) or ``sqlite3 records.sqlite "VACUUM INTO 'dest.sqlite'"``; never copy
the ``.sqlite`` file alone while the station runs (its newest rows may still be in ``-wal``).
Keep the ``.checkpoints`` file and the station key with the copy.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import hmac
import io
import json
import logging
import os
import sqlite3
import stat
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TextIO
from urllib.parse import quote

from .files import atomic_write
from .keys import existing_station_key, key_id, key_path, station_key

log = logging.getLogger(__name__)

GENESIS_HASH = "0" * 64
SCHEMA_VERSION = 2
VERDICTS = ("PASS", "FAIL")
PART_OUTCOME_KINDS = ("no_read", "skipped", "not_decided")
KINDS = ("decision", "correction", *PART_OUTCOME_KINDS)
ROLES = ("operator", "engineer", "admin")
CHECKPOINTS_SUFFIX = ".checkpoints"
JOURNAL_SUFFIX = ".journal"
CSV_CHECKPOINT_MARK = "#checkpoint"


class RecordStoreError(RuntimeError):
    """The record store cannot be opened or written; the message says which file and what to do."""


class NotARecordsDatabase(RecordStoreError):
    """The file exists but holds no Inspector records schema."""


class RecordsUnavailable(RecordStoreError):
    """Neither the journal nor the database could take a write: the decision was NOT accepted."""


class RecordImportError(RecordStoreError):
    """An import file is invalid; nothing was imported (the message names the line)."""


def utc_now_iso() -> str:
    """Current UTC time as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (sorts as text)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def local_time(ts: str) -> str:
    """A record timestamp (UTC text) as local ``YYYY-MM-DD HH:MM:SS``; anything else unchanged."""
    try:
        moment = datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).astimezone()
    except ValueError:
        return ts
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def to_utc_iso(moment: datetime) -> str:
    """A datetime (naive = local time) as the records' UTC text format."""
    if moment.tzinfo is None:
        moment = moment.astimezone()
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class InspectionRecord:
    """One row: what was inspected, what the station proposed, what the operator decided."""

    station_id: str
    operator_id: str
    profile_name: str
    profile_version: int
    profile_hash: str
    pipeline: str
    auto_verdict: str | None
    operator_verdict: str | None
    image_score: float | None = None
    image_path: str | None = None
    image_sha256: str | None = None
    model_keys: list[str] = field(default_factory=list)
    reason: str | None = None
    note: str = ""
    duration_s: float = 0.0  # inspection (pipeline) time
    decision_s: float = 0.0  # time from showing the result to the operator's decision
    kind: str = "decision"
    corrects_uid: str | None = None
    source_id: str | None = None
    overlay_path: str | None = None
    archive_path: str | None = None
    timestamp: str = field(default_factory=utc_now_iso)
    uid: str = field(default_factory=lambda: uuid.uuid4().hex)
    # schema 2
    role: str | None = None  # operator | engineer | admin (operator_id is the user name)
    detector_state_sha256: str | None = None  # hash of the cached bank/state the detector used
    imported: bool = False  # brought in by `records import`; orig_* hold its chain at the origin
    orig_station_id: str | None = None
    orig_id: int | None = None
    orig_prev_hash: str | None = None
    orig_row_hash: str | None = None
    # assigned by the store
    id: int | None = None
    prev_hash: str = ""
    row_hash: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        for name in ("auto_verdict", "operator_verdict"):
            v = getattr(self, name)
            if v is not None and v not in VERDICTS:
                raise ValueError(f"{name} must be PASS, FAIL or None, got {v!r}")
        if self.role is not None and self.role not in ROLES:
            raise ValueError(f"role must be one of {ROLES} or None, got {self.role!r}")
        if self.kind == "decision" and self.operator_verdict is None:
            raise ValueError("a decision needs an operator_verdict")
        if self.kind == "correction" and not self.corrects_uid:
            raise ValueError("a correction must name the decision it corrects (corrects_uid)")
        if self.kind in PART_OUTCOME_KINDS:
            if self.operator_verdict is not None:
                raise ValueError(f"a {self.kind} row has no operator_verdict (got {self.operator_verdict!r})")
            if not (self.reason or "").strip():
                raise ValueError(f"a {self.kind} row needs a reason (why the part was not decided)")
        if self.image_score is not None:
            self.image_score = float(self.image_score)
        self.profile_version = int(self.profile_version)
        self.duration_s = float(self.duration_s)
        self.decision_s = float(self.decision_s)
        self.model_keys = [str(k) for k in self.model_keys]
        self.imported = bool(self.imported)
        if self.orig_id is not None:
            self.orig_id = int(self.orig_id)
        if self.imported and not (self.orig_row_hash and self.orig_prev_hash and self.orig_station_id):
            raise ValueError("an imported row must carry its original chain (orig_station_id, "
                             "orig_prev_hash, orig_row_hash)")

    @property
    def agrees(self) -> bool | None:
        """Did the operator confirm the automatic verdict (None for other kinds)."""
        if self.kind != "decision" or self.auto_verdict is None:
            return None
        return self.auto_verdict == self.operator_verdict

    def content(self) -> dict[str, Any]:
        """The hashed fields (everything except ``prev_hash`` and ``row_hash``).

        Built field by field rather than with ``dataclasses.asdict`` (whose deep copy was 60 % of
        ``verify``); every value is a str/int/float/bool/None except ``model_keys``, copied."""
        d = {name: getattr(self, name) for name in _CONTENT_NAMES}
        d["model_keys"] = list(self.model_keys)
        return d

    def to_json(self) -> dict[str, Any]:
        """Every field, JSON-ready (what ``records export --format jsonl`` writes per line)."""
        d = self.content()
        d["prev_hash"], d["row_hash"] = self.prev_hash, self.row_hash
        return d

    def to_row(self) -> dict[str, Any]:
        d = self.to_json()
        d["model_keys"] = json.dumps(self.model_keys)
        d["imported"] = int(self.imported)
        return d

    @classmethod
    def from_row(cls, row: sqlite3.Row | dict[str, Any]) -> InspectionRecord:
        d = dict(row)
        mk = d.get("model_keys")
        d["model_keys"] = json.loads(mk or "[]") if not isinstance(mk, list) else mk
        if d.get("imported") is None:
            d["imported"] = False
        if not d.keys() <= _FIELD_NAMES:
            d = {k: v for k, v in d.items() if k in _FIELD_NAMES}
        return cls(**d)


_FIELD_NAMES = frozenset(f.name for f in dataclasses.fields(InspectionRecord))
_CONTENT_NAMES: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(InspectionRecord) if f.name not in ("prev_hash", "row_hash"))
RECORD_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(InspectionRecord))
#: the hashed fields of a schema-1 row (its unkeyed sha256 chain covers exactly these)
V1_CONTENT_FIELDS: tuple[str, ...] = (
    "station_id", "operator_id", "profile_name", "profile_version", "profile_hash", "pipeline",
    "auto_verdict", "operator_verdict", "image_score", "image_path", "image_sha256", "model_keys",
    "reason", "note", "duration_s", "decision_s", "kind", "corrects_uid", "source_id",
    "overlay_path", "archive_path", "timestamp", "uid", "id",
)
CSV_FIELDS: tuple[str, ...] = (
    "id", "timestamp", "station_id", "operator_id", "role", "kind", "profile_name", "profile_version",
    "profile_hash", "pipeline", "model_keys", "detector_state_sha256", "image_path", "image_sha256",
    "image_score", "auto_verdict", "operator_verdict", "reason", "note", "duration_s", "decision_s",
    "corrects_uid", "uid", "source_id", "overlay_path", "archive_path", "imported", "orig_station_id",
    "orig_id", "orig_prev_hash", "orig_row_hash", "prev_hash", "row_hash",
)


# --------------------------------------------------------------------------- the chain
def canonical_json(content: dict[str, Any]) -> bytes:
    """The bytes every chain hash and signature is computed over (sorted keys, ASCII, no spaces)."""
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def chain_hash(key: bytes | None, prev_hash: str, content: dict[str, Any]) -> str:
    """One link of a records chain: HMAC-SHA256 under ``key`` of ``prev_hash`` and the content.

    Pure (no I/O): the SQLite store and any other store (PostgreSQL, per station) key their
    chain with it. ``key=None`` gives the schema-1 unkeyed sha256, only for verifying old rows.
    """
    blob = prev_hash.encode("ascii") + b"\n" + canonical_json(content)
    if key is None:
        return hashlib.sha256(blob).hexdigest()
    return hmac.new(key, blob, hashlib.sha256).hexdigest()


def row_hash(prev_hash: str, record: InspectionRecord, key: bytes | None) -> str:
    """The chain hash of ``record`` after ``prev_hash`` (``key=None``: schema-1 rows only)."""
    if key is None:
        full = record.content()
        return chain_hash(None, prev_hash, {k: full[k] for k in V1_CONTENT_FIELDS})
    return chain_hash(key, prev_hash, record.content())


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement "this chain had ``count`` rows ending in ``head`` at ``time``"."""

    count: int
    head: str
    time: str
    mac: str

    @staticmethod
    def _payload(count: int, head: str, time: str) -> bytes:
        return canonical_json({"count": int(count), "head": head, "time": time})

    @classmethod
    def make(cls, count: int, head: str, key: bytes, time: str | None = None) -> Checkpoint:
        t = time or utc_now_iso()
        return cls(int(count), head, t, hmac.new(key, cls._payload(count, head, t), hashlib.sha256).hexdigest())

    def valid(self, key: bytes) -> bool:
        good = hmac.new(key, self._payload(self.count, self.head, self.time), hashlib.sha256).hexdigest()
        return hmac.compare_digest(good, self.mac)

    def to_json(self) -> str:
        return json.dumps({"count": self.count, "head": self.head, "time": self.time, "mac": self.mac},
                          sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Checkpoint:
        d = json.loads(text)
        if not isinstance(d, dict):
            raise ValueError("not a JSON object")
        return cls(int(d["count"]), str(d["head"]), str(d["time"]), str(d["mac"]))

    def csv_cells(self) -> list[str]:
        return [CSV_CHECKPOINT_MARK, f"count={self.count}", f"head={self.head}", f"time={self.time}",
                f"mac={self.mac}"]

    @classmethod
    def from_csv_cells(cls, cells: Sequence[str]) -> Checkpoint:
        kv = dict(c.split("=", 1) for c in cells[1:] if "=" in c)
        return cls(int(kv["count"]), kv["head"], kv["time"], kv["mac"])


def checkpoints_path(db_path: str | Path) -> Path:
    p = Path(db_path)
    return p.with_name(p.name + CHECKPOINTS_SUFFIX)


def default_journal_path(db_path: str | Path) -> Path:
    p = Path(db_path)
    return p.with_name(p.name + JOURNAL_SUFFIX)


def read_checkpoints(path: str | Path) -> tuple[list[Checkpoint], list[str]]:
    """Checkpoints from a sidecar file or from the last line(s) of a CSV export.

    Returns ``(checkpoints, problems)``; a torn final line (a crash mid-write) is ignored, any
    other unreadable line is a problem.
    """
    p = Path(path)
    text = p.read_text(encoding="utf-8", errors="replace")
    cps: list[Checkpoint] = []
    problems: list[str] = []
    if p.suffix.lower() == ".csv":
        for cells in csv.reader(io.StringIO(text)):
            if cells and cells[0] == CSV_CHECKPOINT_MARK:
                try:
                    cps.append(Checkpoint.from_csv_cells(cells))
                except (KeyError, ValueError) as exc:
                    problems.append(f"{p}: unreadable checkpoint row ({exc})")
        if not cps:
            problems.append(f"{p}: this CSV export carries no checkpoint")
        return cps, problems
    lines = text.split("\n")
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            cps.append(Checkpoint.from_json(line))
        except (KeyError, ValueError, TypeError) as exc:
            # a line torn by a crash mid-write; it cannot hide anything (only signed lines count)
            log.warning("%s line %d: ignoring an unreadable checkpoint line (%s)", p, no, exc)
    return cps, problems


# --------------------------------------------------------------------------- private files
def ensure_private_dir(folder: Path) -> None:
    """Create ``folder`` (and missing parents) with mode 0700, whatever the umask."""
    missing: list[Path] = []
    p = folder
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    for m in missing:
        with contextlib.suppress(OSError):
            os.chmod(m, 0o700)


def _open_private_append(path: Path) -> int:
    """An O_APPEND descriptor on ``path``, created 0600 (folder 0700) if missing; never a symlink."""
    ensure_private_dir(path.parent)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    created = not path.exists()
    fd = os.open(path, flags, 0o600)
    if created:
        with contextlib.suppress(OSError):
            os.fchmod(fd, 0o600)
        _fsync_dir(path.parent)
    elif not _ends_with_newline(path):
        os.write(fd, b"\n")  # end a line torn by a crash, so the next line stays readable
    return fd


def _ends_with_newline(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            if fh.seek(0, os.SEEK_END) == 0:
                return True
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) == b"\n"
    except OSError:
        return True


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def _append_line(fd: int, line: str) -> None:
    data = line.encode("utf-8") + b"\n"
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]
    os.fsync(fd)


class CheckpointFile:
    """The append-only, fsynced sidecar of signed checkpoints beside a database."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def append(self, cp: Checkpoint) -> None:
        if self._fd is None:
            self._fd = _open_private_append(self.path)
        _append_line(self._fd, cp.to_json())

    def last(self) -> Checkpoint | None:
        """The newest checkpoint (read from the file's tail; a torn last line is skipped)."""
        try:
            with open(self.path, "rb") as fh:
                size = fh.seek(0, os.SEEK_END)
                fh.seek(max(0, size - 16384))
                tail = fh.read().split(b"\n")
        except OSError:
            return None
        for line in reversed(tail[1:] if len(tail) > 1 and size > 16384 else tail):
            if line.strip():
                with contextlib.suppress(KeyError, ValueError, TypeError):
                    return Checkpoint.from_json(line.decode("utf-8", "replace"))
        return None

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


# --------------------------------------------------------------------------- queries
@dataclass
class RecordQuery:
    """Filters for :meth:`RecordStore.query`; ``since``/``until`` are UTC ISO strings or datetimes."""

    since: str | datetime | None = None
    until: str | datetime | None = None
    profile: str | None = None
    operator: str | None = None
    station: str | None = None
    verdict: str | None = None  # operator verdict
    auto_verdict: str | None = None
    kind: str | None = None
    limit: int | None = None
    newest_first: bool = False


@dataclass
class VerifyResult:
    ok: bool
    rows: int
    message: str
    bad_id: int | None = None
    problems: list[str] = field(default_factory=list)
    checkpoints: int = 0


class RecordStore(Protocol):
    """What callers need from a record store (SQLite now; a plant-wide PostgreSQL later)."""

    location: str

    def append(self, record: InspectionRecord) -> InspectionRecord: ...

    def query(self, q: RecordQuery | None = None) -> list[InspectionRecord]: ...

    def distinct(self, column: str) -> list[str]: ...

    def has_uid(self, uid: str) -> bool: ...

    def verify(self) -> VerifyResult: ...

    def close(self) -> None: ...


def _sql_type(annotation: str) -> str:
    base = str(annotation).split("|")[0].strip()
    return {"int": "INTEGER", "float": "REAL", "bool": "INTEGER"}.get(base, "TEXT")


def _columns() -> list[tuple[str, str]]:
    return [(f.name, _sql_type(str(f.type))) for f in dataclasses.fields(InspectionRecord) if f.name != "id"]


def _schema() -> str:
    cols = ["id INTEGER PRIMARY KEY"] + [f"{name} {sqltype}" for name, sqltype in _columns()]
    return (
        "CREATE TABLE IF NOT EXISTS inspections (" + ", ".join(cols) + ");\n"
        "CREATE UNIQUE INDEX IF NOT EXISTS inspections_uid ON inspections(uid);\n"
        "CREATE INDEX IF NOT EXISTS inspections_ts ON inspections(timestamp);\n"
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);\n"
        "CREATE TRIGGER IF NOT EXISTS inspections_no_update BEFORE UPDATE ON inspections "
        "BEGIN SELECT RAISE(ABORT, 'inspection records are append-only'); END;\n"
        "CREATE TRIGGER IF NOT EXISTS inspections_no_delete BEFORE DELETE ON inspections "
        "BEGIN SELECT RAISE(ABORT, 'inspection records are append-only'); END;\n"
    )


def _explain(path: Path, exc: BaseException, action: str) -> str:
    text = str(exc)
    low = text.lower()
    if "readonly" in low or "read-only" in low or "permission" in low:
        hint = "the file or its folder is read-only; fix the permissions or set records_path in the settings"
    elif "full" in low or "no space" in low:
        hint = "the disk is full; free space or move records_path to another disk"
    elif "not a database" in low or "malformed" in low or "corrupt" in low:
        hint = "the file is not a valid records database; restore it from backup or point records_path elsewhere"
    elif "locked" in low or "busy" in low:
        hint = "another program holds the database; close it and retry"
    else:
        hint = "check the disk and the records_path setting"
    return f"records database {path}: cannot {action} ({text}); {hint}"


def _is_wal_file(path: Path) -> bool:
    """Does the SQLite header say WAL mode (read/write versions 2)?"""
    try:
        with open(path, "rb") as fh:
            head = fh.read(20)
    except OSError:
        return False
    return len(head) >= 20 and head[:16] == b"SQLite format 3\x00" and head[18] == 2


ConnectFactory = Callable[..., sqlite3.Connection]
"""What :class:`SqliteRecordStore` opens its connection with: called like :func:`sqlite3.connect`."""


def _connect_read_only(path: Path, timeout_s: float, connect: ConnectFactory = sqlite3.connect) -> sqlite3.Connection:
    """``mode=ro``; a WAL database with no ``-wal`` beside it (a closed copy, WORM media) is read
    ``immutable`` so that not even the ``-shm`` index is created."""
    uri = "file:" + quote(str(path.resolve())) + "?mode=ro"
    wal = path.with_name(path.name + "-wal")
    if _is_wal_file(path) and not wal.exists():
        uri += "&immutable=1"
    return connect(uri, uri=True, timeout=timeout_s, isolation_level=None, check_same_thread=False)


class SqliteRecordStore:
    """SQLite implementation of :class:`RecordStore` (thread-safe; one connection, serialised).

    ``read_only=True`` opens with ``mode=ro`` and never writes, creates or migrates anything.
    ``key`` is the chain key (default: the station key; read-only opens never create one).
    ``checkpoints`` overrides the sidecar path (default ``<db>.checkpoints``).
    ``connect`` opens the store's one connection; the default is :func:`sqlite3.connect`. The store
    calls it once, as it would call ``sqlite3.connect``: the path (read-only: a ``file:`` URI with
    ``uri=True``), ``timeout``, ``isolation_level=None`` and ``check_same_thread=False``. It then sets
    its own PRAGMAs and row factory on the connection returned. Pass a factory to keep a handle on
    that connection, for example to trace it, or to make it refuse writes (``PRAGMA query_only``) or
    run out of room (``max_page_count``): SQLite keeps those per connection, so a second one cannot.
    """

    def __init__(self, path: str | Path, timeout_s: float = 10.0, *, read_only: bool = False,
                 key: bytes | None = None, checkpoints: str | Path | None = None,
                 connect: ConnectFactory = sqlite3.connect) -> None:
        self.path = Path(path).expanduser()
        self.location = str(self.path)
        self.read_only = read_only
        self._key = key
        self._lock = threading.RLock()
        self._checkpoints = CheckpointFile(Path(checkpoints) if checkpoints else checkpoints_path(self.path))
        self.checkpoint_error: str | None = None
        self._meta: dict[str, str] = {}
        self._connect = connect
        if read_only:
            self._open_read_only(timeout_s)
        else:
            self._open_for_append(timeout_s)

    # ------------------------------------------------------------------ opening
    def _open_read_only(self, timeout_s: float) -> None:
        if not self.path.is_file():
            raise RecordStoreError(f"records database {self.path} does not exist")
        try:
            self._con = _connect_read_only(self.path, timeout_s, self._connect)
            self._con.row_factory = sqlite3.Row
            self._con.execute("PRAGMA query_only=ON")
            self._check_schema()
        except NotARecordsDatabase:
            self._con.close()
            raise
        except sqlite3.Error as exc:
            raise RecordStoreError(_explain(self.path, exc, "open")) from exc

    def _check_schema(self) -> None:
        tables = {r[0] for r in self._con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "inspections" not in tables or "meta" not in tables:
            raise NotARecordsDatabase(
                f"{self.path}: not an Inspector records database (no inspections/meta tables"
                f"{self._why_no_tables(tables)}); check the path, or restore the database from backup"
            )
        self._meta = {k: v for k, v in self._con.execute("SELECT key, value FROM meta")}
        if "schema" not in self._meta:
            raise NotARecordsDatabase(f"{self.path}: not an Inspector records database (no schema version in meta)")
        try:
            version = int(self._meta["schema"])
        except ValueError:
            raise NotARecordsDatabase(f"{self.path}: schema version {self._meta['schema']!r} is not a number") from None
        if version > SCHEMA_VERSION:
            raise RecordStoreError(f"{self.path}: records schema {version} is newer than this Inspector "
                                   f"({SCHEMA_VERSION}); update Inspector")

    def _why_no_tables(self, tables: set[str]) -> str:
        if tables:
            return ""
        try:
            empty = self.path.stat().st_size == 0
        except OSError:
            empty = False
        return "; the file is empty" if empty else "; it holds no tables at all"

    def _open_for_append(self, timeout_s: float) -> None:
        try:
            new = not self.path.exists() or self.path.stat().st_size == 0
            if not self.path.exists():
                ensure_private_dir(self.path.parent)
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
                with contextlib.suppress(FileExistsError):
                    fd = os.open(self.path, flags, 0o600)
                    os.fchmod(fd, 0o600)
                    os.close(fd)
            if new and self._checkpoints.path.is_file() and self._checkpoints.last() is not None:
                last = self._checkpoints.last()
                raise RecordStoreError(
                    f"records database {self.path} is empty but {self._checkpoints.path} records "
                    f"{last.count if last else '?'} rows: the database was wiped or replaced. Restore it "
                    "from backup (or move both files aside to start a new one)"
                )
            self._con = self._connect(self.path, timeout=timeout_s, isolation_level=None, check_same_thread=False)
            self._con.row_factory = sqlite3.Row
            mode = self._con.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                log.warning("%s: WAL journal not available (got %s)", self.path, mode)
            self._con.execute("PRAGMA synchronous=FULL")
            self._con.execute("PRAGMA foreign_keys=ON")
            if new:
                self._create()
            else:
                self._check_schema()
                if int(self._meta["schema"]) < SCHEMA_VERSION:
                    self._migrate()
            self._meta = {k: v for k, v in self._con.execute("SELECT key, value FROM meta")}
            self._anchor_tail()
        except NotARecordsDatabase:
            self._con.close()
            raise
        except (sqlite3.Error, OSError) as exc:
            raise RecordStoreError(_explain(self.path, exc, "open")) from exc

    def _key_for_writing(self) -> bytes:
        if self._key is None:
            self._key = station_key()
        return self._key

    def _key_for_checking(self) -> bytes | None:
        if self._key is None:
            self._key = existing_station_key() if self.read_only else station_key()
        return self._key

    def _create(self) -> None:
        key = self._key_for_writing()
        meta = "".join(f"INSERT OR IGNORE INTO meta(key, value) VALUES ('{k}', '{v}');\n" for k, v in
                       (("schema", SCHEMA_VERSION), ("keyed_from", 1), ("key_id", key_id(key))))
        self._con.executescript("BEGIN IMMEDIATE;\n" + _schema() + meta + "COMMIT;\n")

    def _migrate(self) -> None:
        """Schema 1 → 2: add the new columns; existing rows keep their unkeyed chain."""
        key = self._key_for_writing()
        have = {r[1] for r in self._con.execute("PRAGMA table_info(inspections)")}
        self._con.execute("BEGIN IMMEDIATE")
        try:
            for name, sqltype in _columns():
                if name not in have:
                    self._con.execute(f"ALTER TABLE inspections ADD COLUMN {name} {sqltype}")
            n = int(self._con.execute("SELECT COALESCE(MAX(id), 0) FROM inspections").fetchone()[0])
            for k, v in (("schema", str(SCHEMA_VERSION)), ("keyed_from", str(n + 1)), ("key_id", key_id(key))):
                self._con.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (k, v))
            self._con.execute("COMMIT")
        except BaseException:
            if self._con.in_transaction:
                self._con.execute("ROLLBACK")
            raise
        log.warning("%s: migrated records schema 1 → %d; rows 1..%d keep their unkeyed chain, anchored by "
                    "a signed checkpoint from now on", self.path, SCHEMA_VERSION, n)

    def _anchor_tail(self) -> None:
        """Sign a checkpoint for rows written after the newest checkpoint (a crash between the
        commit and the checkpoint), after checking those rows' keyed chain."""
        head = self._con.execute("SELECT id, row_hash FROM inspections ORDER BY id DESC LIMIT 1").fetchone()
        if head is None:
            return
        last = self._checkpoints.last()
        if last is not None and last.count >= head["id"]:
            return
        key = self._key_for_writing()
        start = last.count if last is not None else 0
        prev = last.head if last is not None else GENESIS_HASH
        if last is not None and not last.valid(key):
            log.error("%s: newest checkpoint has an invalid signature; not anchoring new rows", self._checkpoints.path)
            return
        keyed_from = int(self._meta.get("keyed_from", "1"))
        rows = self._con.execute("SELECT * FROM inspections WHERE id > ? ORDER BY id", (start,))
        expected = start + 1
        for row in rows:
            rec = InspectionRecord.from_row(row)
            k = key if rec.id is not None and rec.id >= keyed_from else None
            if rec.id != expected or rec.prev_hash != prev or row_hash(prev, rec, k) != rec.row_hash:
                log.error("%s: row %s does not continue the checkpointed chain; run `inspector records verify`",
                          self.path, rec.id)
                return
            prev = rec.row_hash
            expected += 1
        self._write_checkpoint(Checkpoint.make(expected - 1, prev, key))

    def _write_checkpoint(self, cp: Checkpoint) -> None:
        try:
            self._checkpoints.append(cp)
            self.checkpoint_error = None
        except OSError as exc:
            self.checkpoint_error = f"{self._checkpoints.path}: cannot write the checkpoint ({exc})"
            log.error("%s (the row is saved; the next append signs a checkpoint covering it)", self.checkpoint_error)

    # ------------------------------------------------------------------ writing
    def append(self, record: InspectionRecord) -> InspectionRecord:
        """Commit one record durably, sign a checkpoint, and return it with the chain fields set."""
        return self.append_many([record])[0]

    def append_many(self, records: Sequence[InspectionRecord]) -> list[InspectionRecord]:
        """Commit records in one transaction (all or none); one checkpoint for the new head."""
        if self.read_only:
            raise RecordStoreError(f"records database {self.path} is open read-only")
        if not records:
            return []
        key = self._key_for_writing()
        with self._lock:
            con = self._con
            out: list[InspectionRecord] = []
            try:
                con.execute("BEGIN IMMEDIATE")
                try:
                    head = con.execute("SELECT id, row_hash FROM inspections ORDER BY id DESC LIMIT 1").fetchone()
                    next_id = (head["id"] + 1) if head else 1
                    prev = head["row_hash"] if head else GENESIS_HASH
                    for record in records:
                        stored = dataclasses.replace(record)
                        stored.id, stored.prev_hash = next_id, prev
                        stored.row_hash = row_hash(prev, stored, key)
                        row = stored.to_row()
                        names = ", ".join(row)
                        marks = ", ".join("?" for _ in row)
                        con.execute(f"INSERT INTO inspections ({names}) VALUES ({marks})", tuple(row.values()))
                        out.append(stored)
                        prev, next_id = stored.row_hash, next_id + 1
                    con.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('head', ?)", (prev,))
                    con.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('count', ?)", (str(next_id - 1),))
                    con.execute("COMMIT")
                except BaseException:
                    if con.in_transaction:
                        con.execute("ROLLBACK")
                    raise
            except sqlite3.IntegrityError as exc:
                raise RecordStoreError(_explain(self.path, exc, "save the decision (a row with this uid exists)")) from exc
            except sqlite3.Error as exc:
                raise RecordStoreError(_explain(self.path, exc, "save the decision")) from exc
            self._write_checkpoint(Checkpoint.make(out[-1].id or 0, out[-1].row_hash, key))
        for record, stored in zip(records, out, strict=True):
            record.id, record.prev_hash, record.row_hash = stored.id, stored.prev_hash, stored.row_hash
        return out

    # ------------------------------------------------------------------ reading
    def query(self, q: RecordQuery | None = None) -> list[InspectionRecord]:
        return list(self.iter_query(q))

    def iter_query(self, q: RecordQuery | None = None) -> Iterator[InspectionRecord]:
        q = q or RecordQuery()
        where, args = [], []

        def add(cond: str, value: Any) -> None:
            where.append(cond)
            args.append(value)

        if q.since is not None:
            add("timestamp >= ?", to_utc_iso(q.since) if isinstance(q.since, datetime) else q.since)
        if q.until is not None:
            add("timestamp < ?", to_utc_iso(q.until) if isinstance(q.until, datetime) else q.until)
        for col, val in (("profile_name", q.profile), ("operator_id", q.operator), ("station_id", q.station),
                         ("operator_verdict", q.verdict), ("auto_verdict", q.auto_verdict), ("kind", q.kind)):
            if val:
                add(f"{col} = ?", val)
        sql = "SELECT * FROM inspections"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC" if q.newest_first else " ORDER BY id"
        if q.limit:
            sql += f" LIMIT {int(q.limit)}"
        with self._lock:
            try:
                rows = self._con.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise RecordStoreError(_explain(self.path, exc, "read")) from exc
        for r in rows:
            yield InspectionRecord.from_row(r)

    def get(self, uid: str) -> InspectionRecord | None:
        with self._lock:
            row = self._con.execute("SELECT * FROM inspections WHERE uid = ?", (uid,)).fetchone()
        return InspectionRecord.from_row(row) if row else None

    def has_uid(self, uid: str) -> bool:
        with self._lock:
            return self._con.execute("SELECT 1 FROM inspections WHERE uid = ?", (uid,)).fetchone() is not None

    def distinct(self, column: str) -> list[str]:
        allowed = {"profile_name", "operator_id", "station_id", "pipeline", "reason", "role"}
        if column not in allowed:
            raise ValueError(f"column must be one of {sorted(allowed)}")
        with self._lock:
            rows = self._con.execute(
                f"SELECT DISTINCT {column} FROM inspections WHERE {column} IS NOT NULL ORDER BY {column}"
            ).fetchall()
        return [r[0] for r in rows]

    def count(self) -> int:
        with self._lock:
            return int(self._con.execute("SELECT COUNT(*) FROM inspections").fetchone()[0])

    def head(self) -> Checkpoint | None:
        """A freshly signed checkpoint of the current head (for exports); None if the store is empty
        or (read-only, no station key) cannot sign."""
        with self._lock:
            row = self._con.execute("SELECT id, row_hash FROM inspections ORDER BY id DESC LIMIT 1").fetchone()
        if row is None:
            return None
        key = self._key_for_checking()
        if key is None:
            return None
        return Checkpoint.make(int(row["id"]), str(row["row_hash"]), key)

    def verify(self, extra_checkpoints: Iterable[str | Path] = ()) -> VerifyResult:
        """Check integrity, the keyed chain, and every signed checkpoint; list each problem."""
        problems: list[str] = []
        bad_id: int | None = None
        extra = [Path(p) for p in extra_checkpoints]
        key = self._key_for_checking()
        with self._lock:
            try:
                check = self._con.execute("PRAGMA quick_check").fetchone()[0]
                if check != "ok":
                    return VerifyResult(False, 0, f"database damaged: {check}")
                meta = {k: v for k, v in self._con.execute("SELECT key, value FROM meta")}
                columns = {r[1] for r in self._con.execute("PRAGMA table_info(inspections)")}
                legacy_db = "imported" not in columns  # schema 1, never opened for append since
                keyed_from = (1 << 62) if legacy_db else max(1, int(meta.get("keyed_from", "1") or 1))
                n_all = int(self._con.execute("SELECT COUNT(*) FROM inspections").fetchone()[0])
                n_keyed = int(self._con.execute("SELECT COUNT(*) FROM inspections WHERE id >= ?",
                                                (keyed_from,)).fetchone()[0])
                has_sidecar = self._checkpoints.path.is_file()
                if key is None and (n_keyed or has_sidecar or extra):
                    return VerifyResult(False, 0, f"no station key at {key_path()}: the chain and checkpoints are "
                                        "keyed; pass --key with the key file of the station that wrote them")
                if n_keyed and key is not None and meta.get("key_id") and meta["key_id"] != key_id(key):
                    return VerifyResult(False, 0, f"this database was keyed with station key {meta['key_id']}, "
                                        f"but the key given is {key_id(key)}; pass --key with the right key file")
                # checkpoints: sidecar plus any extra files (exports, backups)
                sources = [self._checkpoints.path] if self._checkpoints.path.is_file() else []
                sources += extra
                by_count: dict[int, list[Checkpoint]] = {}
                n_cp = 0
                for src in sources:
                    cps, probs = read_checkpoints(src)
                    problems += probs
                    for cp in cps:
                        if key is None or not cp.valid(key):
                            problems.append(f"{src}: checkpoint for row {cp.count} at {cp.time} has an invalid "
                                            "signature (forged or edited)")
                            continue
                        by_count.setdefault(cp.count, []).append(cp)
                        n_cp += 1
                prev = GENESIS_HASH
                n = 0
                expected_id = 1
                changed: list[int] = []
                differs: list[tuple[int, str]] = []
                cur = self._con.cursor()
                cur.row_factory = None  # plain tuples: dict(sqlite3.Row) was a third of verify's time
                cur.execute("SELECT * FROM inspections ORDER BY id")
                names = [c[0] for c in cur.description]
                for values in cur:
                    rec = InspectionRecord.from_row(dict(zip(names, values)))
                    n += 1
                    rid = int(rec.id or 0)
                    if rid != expected_id:
                        problems.append(f"row id {expected_id} is missing (deleted)" if rid == expected_id + 1
                                        else f"row ids {expected_id}..{rid - 1} are missing (deleted)")
                        bad_id = bad_id or expected_id
                        expected_id = rid
                    if rec.prev_hash != prev:
                        problems.append(f"row {rid}: previous-hash link broken (a row before it was removed or altered)")
                        bad_id = bad_id or rid
                    k = key if rid >= keyed_from else None
                    if row_hash(rec.prev_hash, rec, k) != rec.row_hash:
                        changed.append(rid)
                        bad_id = bad_id or rid
                    for cp in by_count.get(rid, ()):
                        if cp.head != rec.row_hash:
                            differs.append((rid, cp.time))
                            bad_id = bad_id or rid
                            break
                    prev = rec.row_hash
                    expected_id += 1
            except sqlite3.Error as exc:
                return VerifyResult(False, 0, _explain(self.path, exc, "read"))
        for lo, hi in _ranges(changed):
            problems.append(f"row {lo}: content does not match its hash (the row was altered)" if lo == hi else
                            f"rows {lo}..{hi}: content does not match their hashes (altered, or re-hashed "
                            "without the station key)")
        times = dict(differs)
        for lo, hi in _ranges([rid for rid, _ in differs]):
            what = f"row {lo} differs" if lo == hi else f"rows {lo}..{hi} differ"
            problems.append(f"{what} from the signed checkpoint of {times[lo]}{'' if lo == hi else ' onwards'} "
                            f"(row {lo} or one before it was rewritten, or an older or other copy was restored)")
        last_id = expected_id - 1
        if by_count:
            top = max(by_count)
            if top > last_id:
                cp = by_count[top][0]
                problems.append(f"rows {last_id + 1}..{top} missing: the signed checkpoint of {cp.time} records "
                                f"{top} rows, the database ends at row {last_id} (newest rows deleted, or an "
                                "older copy restored)")
                bad_id = bad_id or last_id + 1
        if n and meta.get("head") and meta.get("head") != prev:
            problems.append("the newest rows were removed (chain head in meta does not match)")
        if n and meta.get("count") and str(last_id) != meta.get("count"):
            problems.append(f"row count {last_id} does not match the recorded {meta.get('count')}")
        if not n and meta.get("head"):
            problems.append("all rows were removed (chain head recorded but table empty)")
        if n_all and not legacy_db and not by_count:
            problems.append(f"no signed checkpoint found ({self._checkpoints.path} missing or empty): the newest "
                            "rows cannot be checked for deletion; keep the .checkpoints file with the database "
                            "or pass --checkpoints FILE")
        covered = max(by_count) if by_count else 0
        note = ""
        if covered and covered < last_id:
            note = f"; rows {covered + 1}..{last_id} are newer than the newest checkpoint"
        if problems:
            more = f"; and {len(problems) - 5} more problems" if len(problems) > 5 else ""
            return VerifyResult(False, n, "; ".join(problems[:5]) + more, bad_id, problems, n_cp)
        legacy = min(keyed_from - 1, last_id)
        legacy_note = f"; rows 1..{legacy} use the unkeyed schema-1 chain" if legacy > 0 else ""
        if legacy_db and n:
            legacy_note += (" (schema-1 database, never anchored: a rewrite with recomputed hashes cannot be "
                            "detected; open it once with this Inspector to key and checkpoint it)")
        return VerifyResult(True, n, f"{n} rows, hash chain intact, {n_cp} signed checkpoints match"
                            + legacy_note + note, None, [], n_cp)

    def writable(self) -> bool:
        """Would a write be accepted now (a rolled-back probe; a full disk may still refuse the real one)?"""
        if self.read_only:
            return False
        with self._lock:
            try:
                self._con.execute("BEGIN IMMEDIATE")
                try:
                    self._con.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('probe', '1')")
                finally:
                    self._con.execute("ROLLBACK")
                return True
            except sqlite3.Error:
                return False

    def backup(self, dest: str | Path) -> Path:
        """A consistent copy through the SQLite online-backup API (safe while the station writes),
        mode 0600, plus a copy of the checkpoints file beside it."""
        target = Path(dest).expanduser()
        if target.exists():
            raise RecordStoreError(f"{target} already exists; choose a new backup file")
        ensure_private_dir(target.parent)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        os.fchmod(fd, 0o600)
        os.close(fd)
        try:
            out = sqlite3.connect(target)
            try:
                with self._lock:
                    self._con.backup(out)
                    out.execute("PRAGMA journal_mode=DELETE")
            finally:
                out.close()
            if self._checkpoints.path.is_file():
                atomic_write(checkpoints_path(target), self._checkpoints.path.read_bytes(), mode=0o600)
        except (sqlite3.Error, OSError) as exc:
            with contextlib.suppress(OSError):
                target.unlink()
            raise RecordStoreError(_explain(target, exc, "write the backup")) from exc
        return target

    def close(self) -> None:
        with self._lock:
            self._checkpoints.close()
            with contextlib.suppress(sqlite3.Error, AttributeError):
                self._con.close()


def _ranges(ids: Sequence[int]) -> list[tuple[int, int]]:
    """Consecutive runs of sorted ids: [1, 2, 3, 7] -> [(1, 3), (7, 7)]."""
    out: list[tuple[int, int]] = []
    for i in ids:
        if out and i == out[-1][1] + 1:
            out[-1] = (out[-1][0], i)
        else:
            out.append((i, i))
    return out


URL_STORES = {
    "postgres": "inspector.records_pg:PostgresRecordStore",
    "postgresql": "inspector.records_pg:PostgresRecordStore",
}
"""Record stores opened by URL scheme, named lazily (the plant store needs psycopg, the 'plant'
extra), so :mod:`inspector.records` never imports the modules built on it."""


def open_store(location: str | Path, read_only: bool = False) -> RecordStore:
    """Open the store at a path (SQLite) or a ``postgresql://`` URL (:mod:`inspector.records_pg`)."""
    text = str(location)
    scheme = text.split("://", 1)[0] if "://" in text else ""
    if scheme in URL_STORES:
        from inspector.registry import resolve

        return resolve(URL_STORES, scheme, "record store")(text, read_only=read_only)
    return SqliteRecordStore(text, read_only=read_only)


def open_read_only(path: str | Path, key: bytes | None = None) -> SqliteRecordStore:
    return SqliteRecordStore(path, read_only=True, key=key)


# --------------------------------------------------------------------------- helpers
def _voided(records: Sequence[InspectionRecord]) -> set[str | None]:
    return {r.corrects_uid for r in records if r.kind == "correction"}


def effective(records: Iterable[InspectionRecord]) -> list[InspectionRecord]:
    """Decisions that still stand (not voided by a later correction)."""
    records = list(records)
    voided = _voided(records)
    return [r for r in records if r.kind == "decision" and r.uid not in voided]


def accounted(records: Iterable[InspectionRecord]) -> list[InspectionRecord]:
    """Every standing part row: decisions plus no_read/skipped/not_decided, not voided."""
    records = list(records)
    voided = _voided(records)
    return [r for r in records if r.kind != "correction" and r.uid not in voided]


@dataclass
class Counts:
    decisions: int = 0
    passed: int = 0
    failed: int = 0
    overrides: int = 0
    corrections: int = 0
    no_read: int = 0
    skipped: int = 0
    not_decided: int = 0


def counts(records: Sequence[InspectionRecord]) -> Counts:
    """Totals over the standing decisions (plus corrections and undecided parts)."""
    live = effective(records)
    parts = accounted(records)
    return Counts(
        decisions=len(live),
        passed=sum(r.operator_verdict == "PASS" for r in live),
        failed=sum(r.operator_verdict == "FAIL" for r in live),
        overrides=sum(r.agrees is False for r in live),
        corrections=sum(r.kind == "correction" for r in records),
        no_read=sum(r.kind == "no_read" for r in parts),
        skipped=sum(r.kind == "skipped" for r in parts),
        not_decided=sum(r.kind == "not_decided" for r in parts),
    )


# --------------------------------------------------------------------------- export
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def neutralise_cell(value: str) -> str:
    """OWASP CSV-injection defence: a cell a spreadsheet would run as a formula gets a leading ``'``."""
    if value and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def _csv_value(rec: InspectionRecord, name: str) -> Any:
    v = getattr(rec, name)
    if name == "model_keys":
        v = ";".join(v)
    if name == "imported":
        return int(v)
    if v is None:
        return ""
    return neutralise_cell(v) if isinstance(v, str) else v


def write_csv(records: Iterable[InspectionRecord], out: TextIO, checkpoint: Checkpoint | None = None) -> int:
    """CSV rows (text cells neutralised against formula injection), then the signed checkpoint row."""
    writer = csv.writer(out)
    writer.writerow(CSV_FIELDS)
    n = 0
    for rec in records:
        writer.writerow([_csv_value(rec, f) for f in CSV_FIELDS])
        n += 1
    if checkpoint is not None:
        writer.writerow(checkpoint.csv_cells())
    return n


def export_csv(records: Iterable[InspectionRecord], path: str | Path, checkpoint: Checkpoint | None = None) -> int:
    """Write records as CSV atomically (exclusive temp file renamed into place). Returns the row count."""
    buf = io.StringIO(newline="")
    n = write_csv(records, buf, checkpoint)
    atomic_write(path, buf.getvalue(), mode=0o600)
    return n


def write_jsonl(records: Iterable[InspectionRecord], out: TextIO) -> int:
    """One JSON object per record with its chain fields (what ``records import`` reads)."""
    n = 0
    for rec in records:
        out.write(json.dumps(rec.to_json(), sort_keys=True) + "\n")
        n += 1
    return n


def export_jsonl(records: Iterable[InspectionRecord], path: str | Path) -> int:
    buf = io.StringIO()
    n = write_jsonl(records, buf)
    atomic_write(path, buf.getvalue(), mode=0o600)
    return n


# --------------------------------------------------------------------------- journal
class RecordJournal:
    """Write-ahead journal: one signed JSON line per record, fsynced before the record counts as saved.

    Lines are ``{"record": {...}, "mac": HMAC(station key, canonical JSON of the record)}``; an
    edited or forged line is refused at replay. A torn last line (a crash mid-write, never reported
    saved) is skipped.
    """

    def __init__(self, path: str | Path, key: bytes | None = None) -> None:
        self.path = Path(path).expanduser()
        self._key = key
        self._fd: int | None = None
        self._lock = threading.Lock()

    def _k(self) -> bytes:
        if self._key is None:
            self._key = station_key()
        return self._key

    def append(self, record: InspectionRecord) -> None:
        """Append and fsync; raises OSError when the journal's disk cannot take it."""
        content = record.content()
        mac = hmac.new(self._k(), canonical_json(content), hashlib.sha256).hexdigest()
        line = json.dumps({"record": content, "mac": mac}, sort_keys=True, ensure_ascii=True)
        with self._lock:
            if self._fd is None:
                self._fd = _open_private_append(self.path)
            try:
                _append_line(self._fd, line)
            except OSError:
                # a failed write may leave a partial line; the next start skips it as torn
                os.close(self._fd)
                self._fd = None
                raise

    def writable(self) -> bool:
        """Can the journal take a write now (open + fsync)?"""
        try:
            with self._lock:
                if self._fd is None:
                    self._fd = _open_private_append(self.path)
                os.fsync(self._fd)
            return True
        except OSError:
            return False

    def entries(self) -> tuple[list[InspectionRecord], list[str]]:
        """Records in journal order and the problems found (forged/unreadable lines)."""
        if not self.path.is_file():
            return [], []
        raw = self.path.read_bytes()
        lines = raw.split(b"\n")
        out: list[InspectionRecord] = []
        problems: list[str] = []
        for no, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
            except ValueError:
                # torn by a crash or a full disk mid-write: never fsynced whole, never shown as saved
                log.warning("%s line %d: skipping a torn line (a crash while it was written)", self.path, no)
                continue
            try:
                content = d["record"]
                if not hmac.compare_digest(
                        hmac.new(self._k(), canonical_json(content), hashlib.sha256).hexdigest(), str(d["mac"])):
                    problems.append(f"{self.path} line {no}: signature does not match (edited or forged); skipped")
                    continue
                rec = InspectionRecord.from_row(content)
                rec.id, rec.prev_hash, rec.row_hash = None, "", ""
                out.append(rec)
            except (ValueError, KeyError, TypeError) as exc:
                problems.append(f"{self.path} line {no}: not a journal entry ({exc}); skipped")
        return out, problems

    def replay_into(self, store: RecordStore) -> int:
        """Append the journaled records the store lacks (by uid), in journal order; returns how many."""
        records, problems = self.entries()
        for p in problems:
            log.error("%s", p)
        missing = [r for r in records if not store.has_uid(r.uid)]
        seen: set[str] = set()
        todo = []
        for r in missing:
            if r.uid not in seen:
                seen.add(r.uid)
                todo.append(r)
        for r in todo:
            store.append(r)
        if todo:
            log.warning("%s: replayed %d journaled records into %s", self.path, len(todo), store.location)
        return len(todo)

    def reset(self) -> None:
        """Empty the journal once everything in it is in the database (an atomic replace)."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            if self.path.exists():
                atomic_write(self.path, b"", mode=0o600)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self._fd)
                self._fd = None


class RecordKeeper:
    """What the station saves decisions through: journal first (fsync), then the database.

    :meth:`save` returns the stored record when it is in the database, or ``None`` when only the
    journal took it (it is durable: :attr:`pending` lists those, written to the database in order
    on the next :meth:`save` or :meth:`retry`; :attr:`last_error` says why). When neither can take
    it, :meth:`save` raises :class:`RecordsUnavailable` and :attr:`accepting` turns False: the
    station must stop taking decisions. Nothing is ever held only in memory.
    """

    def __init__(self, store: RecordStore | None, opener: Any = None, journal: RecordJournal | None = None) -> None:
        self.store = store
        self._opener = opener  # reopens the store if it could not be opened at start
        if journal is None and isinstance(store, SqliteRecordStore):
            journal = RecordJournal(default_journal_path(store.path))
        self.journal = journal
        self.pending: list[InspectionRecord] = []
        self.last_error: str | None = None
        self.accepting = True
        self.replayed = 0
        self._lock = threading.RLock()  # save/retry may come from the UI thread and a timer
        self._recover()

    @classmethod
    def for_settings(cls, settings: Any) -> RecordKeeper:
        """The station's keeper: ``settings.records_path`` and ``settings.records_journal``
        (None = ``<records_path>.journal``). A database that cannot be opened is retried later."""
        path = Path(settings.records_path)
        jpath = getattr(settings, "records_journal", None) or default_journal_path(path)
        opener = lambda: SqliteRecordStore(path)  # noqa: E731
        store: RecordStore | None
        try:
            store = opener()
        except RecordStoreError as exc:
            log.error("%s", exc)
            store = None
        keeper = cls(store, opener=opener, journal=RecordJournal(jpath))
        if store is None:
            keeper.last_error = f"records database {path} unavailable; decisions go to the journal {jpath}"
        return keeper

    @property
    def backlog(self) -> int:
        """Decisions in the journal not yet in the database (store-and-forward; the status bar shows it)."""
        return len(self.pending)

    def _recover(self) -> None:
        """Replay the journal: what the database lacks is written now, or kept pending (durable)."""
        if self.journal is None:
            return
        records, problems = self.journal.entries()
        for p in problems:
            log.error("%s", p)
        if not records:
            return
        try:
            store = self._ensure_store()
            todo = [r for r in records if not store.has_uid(r.uid)]
        except RecordStoreError as exc:
            self.pending = records
            self.last_error = str(exc)
            return
        unique: dict[str, InspectionRecord] = {}
        for r in todo:
            unique.setdefault(r.uid, r)
        self.pending = list(unique.values())
        self.replayed = self.retry()
        if not self.pending and not problems:
            try:
                self.journal.reset()
            except OSError as exc:
                log.warning("%s: cannot empty the replayed journal (%s)", self.journal.path, exc)

    def _ensure_store(self) -> RecordStore:
        if self.store is None:
            if self._opener is None:
                raise RecordStoreError("no record store configured")
            self.store = self._opener()
        return self.store

    def retry(self) -> int:
        """Write as many pending (journaled) records to the database as possible; returns how many."""
        with self._lock:
            return self._retry_locked()

    def _retry_locked(self) -> int:
        saved = 0
        while self.pending:
            rec = self.pending[0]
            try:
                store = self._ensure_store()
                if not store.has_uid(rec.uid):
                    store.append(rec)
            except RecordStoreError as exc:
                if str(exc) != self.last_error:  # once per distinct failure, not once per decision
                    log.error("records kept in the journal only (%d waiting for the database): %s",
                              len(self.pending), exc)
                self.last_error = str(exc)
                return saved
            self.pending.pop(0)
            saved += 1
        self.last_error = None
        return saved

    def save(self, record: InspectionRecord) -> InspectionRecord | None:
        """Journal (fsync), then database. See the class docstring for the three outcomes."""
        with self._lock:
            return self._save_locked(record)

    def _save_locked(self, record: InspectionRecord) -> InspectionRecord | None:
        journal_error: str | None = None
        if self.journal is not None:
            try:
                self.journal.append(record)
            except OSError as exc:
                journal_error = f"journal {self.journal.path}: {exc.strerror or exc}"
        else:
            journal_error = "no journal configured"
        journaled = journal_error is None
        if self.pending:
            self.retry()
        if not self.pending:
            try:
                stored = self._ensure_store().append(record)
            except RecordStoreError as exc:
                db_error = str(exc)
            else:
                self.accepting = True
                if journal_error and self.journal is not None:
                    self.last_error = f"{journal_error}; the decision is in the database only"
                    log.warning("%s", self.last_error)
                return stored
        else:
            db_error = self.last_error or "earlier decisions are still waiting for the database"
        if journaled:
            self.pending.append(record)
            self.last_error = db_error
            self.accepting = True
            return None
        self.accepting = False
        self.last_error = (f"decision NOT saved: {journal_error}; database: {db_error}. The station stops "
                           "accepting decisions until the journal or the database can be written "
                           "(free disk space, fix permissions, or set records_journal to another disk)")
        raise RecordsUnavailable(self.last_error)

    def probe(self) -> bool:
        """Can a decision be saved now? Retries pending rows; updates :attr:`accepting`."""
        with self._lock:
            return self._probe_locked()

    def _probe_locked(self) -> bool:
        self.retry()
        db_ok = not self.pending and self._store_usable()
        self.accepting = db_ok or (self.journal is not None and self.journal.writable())
        return self.accepting

    def _store_usable(self) -> bool:
        try:
            store = self._ensure_store()
        except RecordStoreError:
            return False
        writable = getattr(store, "writable", None)
        return bool(writable()) if callable(writable) else True

    def dump_pending(self, path: str | Path) -> Path:
        """Copy the pending (journal-only) records to another journal file (same signed format)."""
        aside = RecordJournal(path, key=self.journal._k() if self.journal else None)
        try:
            for rec in self.pending:
                aside.append(rec)
        finally:
            aside.close()
        return Path(path)

    def close(self) -> None:
        if self.journal is not None:
            self.journal.close()
        if self.store is not None:
            self.store.close()


# --------------------------------------------------------------------------- import
@dataclass
class ImportPlan:
    """A validated import file: the rows to append (marked imported) and those already present."""

    records: list[InspectionRecord]
    duplicates: int


def read_import_file(path: str | Path, key: bytes) -> list[InspectionRecord]:
    """Parse and check a ``records export --format jsonl`` file; raises :class:`RecordImportError`
    naming the first bad line. Every row must carry its chain (``id``, ``prev_hash``, ``row_hash``),
    whose HMAC under ``key`` (the exporting station's key) must match, and consecutive rows must link."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise RecordImportError(f"{p}: cannot read ({exc.strerror or exc})") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecordImportError(f"{p}: not UTF-8 text ({exc}); nothing imported") from exc
    out: list[InspectionRecord] = []
    last: dict[str, InspectionRecord] = {}
    for no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{p} line {no}"
        try:
            data = json.loads(line)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            unknown = set(data) - _FIELD_NAMES
            if unknown:
                raise ValueError(f"unknown fields {sorted(unknown)}")
            missing = [k for k in ("id", "prev_hash", "row_hash") if not data.get(k)]
            if missing:
                raise ValueError(f"no original chain ({', '.join(missing)} missing); only rows exported with "
                                 "`inspector records export --format jsonl` can be imported")
            rec = InspectionRecord(**data)
        except (ValueError, TypeError) as exc:
            raise RecordImportError(f"{where}: not a valid record ({exc}); nothing imported") from exc
        if row_hash(rec.prev_hash, rec, key) != rec.row_hash:
            raise RecordImportError(f"{where}: row {rec.id} does not match its keyed hash (altered, forged, or "
                                    "exported by another station: pass --key with that station's key file); "
                                    "nothing imported")
        before = last.get(rec.station_id)
        if before is not None and before.id is not None and rec.id == before.id + 1 and rec.prev_hash != before.row_hash:
            raise RecordImportError(f"{where}: row {rec.id} does not link to row {before.id} before it; nothing imported")
        last[rec.station_id] = rec
        out.append(rec)
    if not out:
        raise RecordImportError(f"{p}: no records in the file; nothing imported")
    return out


def plan_import(store: RecordStore, rows: Sequence[InspectionRecord]) -> ImportPlan:
    todo: list[InspectionRecord] = []
    dup = 0
    seen: set[str] = set()
    for r in rows:
        if r.uid in seen or store.has_uid(r.uid):
            dup += 1
            continue
        seen.add(r.uid)
        orig = dict(orig_station_id=r.orig_station_id, orig_id=r.orig_id, orig_prev_hash=r.orig_prev_hash,
                    orig_row_hash=r.orig_row_hash) if r.imported else dict(
            orig_station_id=r.station_id, orig_id=r.id, orig_prev_hash=r.prev_hash, orig_row_hash=r.row_hash)
        todo.append(dataclasses.replace(r, imported=True, id=None, prev_hash="", row_hash="", **orig))
    return ImportPlan(todo, dup)


def import_jsonl(store: SqliteRecordStore, path: str | Path, key: bytes | None = None) -> int:
    """Validate the whole file, then append every new row in one transaction (all or nothing).

    ``key`` is the exporting station's key (default: this station's). Rows already present (by
    uid) are skipped. Returns the number of rows appended.
    """
    rows = read_import_file(path, key if key is not None else station_key())
    plan = plan_import(store, rows)
    store.append_many(plan.records)
    return len(plan.records)


def file_mode(path: str | Path) -> int:
    """The permission bits of a file (for reports and tests)."""
    return stat.S_IMODE(os.stat(path).st_mode)
