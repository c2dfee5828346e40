"""Append-only inspection records with a tamper-evident hash chain (Qt-free, torch-free).

Every operator decision (and every correction of one) is one :class:`InspectionRecord`. Storage
sits behind the small :class:`RecordStore` protocol; :class:`SqliteRecordStore` is the default
(one file, WAL journal, ``synchronous=FULL``): :meth:`SqliteRecordStore.append` returns only
after the row is committed to disk, so a decision the station shows as *saved* survives a power
cut or ``kill -9``. UPDATE and DELETE are refused by triggers.

Hash chain: each row stores ``prev_hash`` (the previous row's ``row_hash``, 64 zeros for the
first) and ``row_hash = sha256(prev_hash + "\\n" + canonical JSON of the row's fields)``; the
``meta`` table keeps the head hash and row count, so removing the newest rows is detected too.
:meth:`SqliteRecordStore.verify` (``inspector records verify``) recomputes the chain.

Corrections: an operator's *undo* is a new row with ``kind="correction"`` whose
``corrects_uid`` names the decision it voids; nothing is ever deleted. :func:`effective`
gives the decisions that still stand.

:class:`RecordKeeper` is what the station uses: a failed write (disk full, read-only file)
keeps the record in memory, reports the reason, and is retried in order; nothing is dropped.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import logging
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TextIO

log = logging.getLogger(__name__)

GENESIS_HASH = "0" * 64
SCHEMA_VERSION = 1
VERDICTS = ("PASS", "FAIL")
KINDS = ("decision", "correction")


class RecordStoreError(RuntimeError):
    """The record store cannot be opened or written; the message says which file and what to do."""


def utc_now_iso() -> str:
    """Current UTC time as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (sorts as text)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


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
        if self.kind == "decision" and self.operator_verdict is None:
            raise ValueError("a decision needs an operator_verdict")
        if self.kind == "correction" and not self.corrects_uid:
            raise ValueError("a correction must name the decision it corrects (corrects_uid)")
        if self.image_score is not None:
            self.image_score = float(self.image_score)
        self.profile_version = int(self.profile_version)
        self.duration_s = float(self.duration_s)
        self.decision_s = float(self.decision_s)
        self.model_keys = [str(k) for k in self.model_keys]

    @property
    def agrees(self) -> bool | None:
        """Did the operator confirm the automatic verdict (None for corrections)."""
        if self.kind != "decision" or self.auto_verdict is None:
            return None
        return self.auto_verdict == self.operator_verdict

    def content(self) -> dict[str, Any]:
        """The hashed fields (everything except ``prev_hash`` and ``row_hash``)."""
        d = dataclasses.asdict(self)
        d.pop("prev_hash")
        d.pop("row_hash")
        return d

    def to_row(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["model_keys"] = json.dumps(self.model_keys)
        return d

    @classmethod
    def from_row(cls, row: sqlite3.Row | dict[str, Any]) -> InspectionRecord:
        d = dict(row)
        d["model_keys"] = json.loads(d.get("model_keys") or "[]")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


RECORD_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(InspectionRecord))
CSV_FIELDS: tuple[str, ...] = (
    "id", "timestamp", "station_id", "operator_id", "kind", "profile_name", "profile_version",
    "profile_hash", "pipeline", "model_keys", "image_path", "image_sha256", "image_score",
    "auto_verdict", "operator_verdict", "reason", "note", "duration_s", "decision_s",
    "corrects_uid", "uid", "source_id", "overlay_path", "archive_path", "prev_hash", "row_hash",
)


def row_hash(prev_hash: str, record: InspectionRecord) -> str:
    """sha256 over the previous hash and the canonical JSON of the record's content."""
    blob = json.dumps(record.content(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256((prev_hash + "\n" + blob).encode("utf-8")).hexdigest()


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


class RecordStore(Protocol):
    """What callers need from a record store (SQLite now; a plant-wide PostgreSQL later)."""

    location: str

    def append(self, record: InspectionRecord) -> InspectionRecord: ...

    def query(self, q: RecordQuery | None = None) -> list[InspectionRecord]: ...

    def distinct(self, column: str) -> list[str]: ...

    def verify(self) -> VerifyResult: ...

    def close(self) -> None: ...


def _schema() -> str:
    cols = ["id INTEGER PRIMARY KEY"]
    for f in dataclasses.fields(InspectionRecord):
        if f.name == "id":
            continue
        base = str(f.type).split("|")[0].strip()
        sqltype = {"int": "INTEGER", "float": "REAL"}.get(base, "TEXT")
        cols.append(f"{f.name} {sqltype}")
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


class SqliteRecordStore:
    """SQLite implementation of :class:`RecordStore` (thread-safe; one connection, serialised)."""

    def __init__(self, path: str | Path, timeout_s: float = 10.0) -> None:
        self.path = Path(path).expanduser()
        self.location = str(self.path)
        self._lock = threading.RLock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._con = sqlite3.connect(
                self.path, timeout=timeout_s, isolation_level=None, check_same_thread=False
            )
            self._con.row_factory = sqlite3.Row
            mode = self._con.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                log.warning("%s: WAL journal not available (got %s)", self.path, mode)
            self._con.execute("PRAGMA synchronous=FULL")
            self._con.execute("PRAGMA foreign_keys=ON")
            self._con.executescript(_schema())
            self._con.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        except (sqlite3.Error, OSError) as exc:
            raise RecordStoreError(_explain(self.path, exc, "open")) from exc

    # ------------------------------------------------------------------ writing
    def append(self, record: InspectionRecord) -> InspectionRecord:
        """Commit one record durably and return it with ``id``, ``prev_hash`` and ``row_hash`` set."""
        with self._lock:
            con = self._con
            try:
                con.execute("BEGIN IMMEDIATE")
                try:
                    head = con.execute("SELECT id, row_hash FROM inspections ORDER BY id DESC LIMIT 1").fetchone()
                    stored = dataclasses.replace(record)
                    stored.id = (head["id"] + 1) if head else 1
                    stored.prev_hash = head["row_hash"] if head else GENESIS_HASH
                    stored.row_hash = row_hash(stored.prev_hash, stored)
                    row = stored.to_row()
                    names = ", ".join(row)
                    marks = ", ".join("?" for _ in row)
                    con.execute(f"INSERT INTO inspections ({names}) VALUES ({marks})", tuple(row.values()))
                    con.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('head', ?)", (stored.row_hash,))
                    con.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('count', ?)", (str(stored.id),))
                    con.execute("COMMIT")
                except BaseException:
                    if con.in_transaction:
                        con.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise RecordStoreError(_explain(self.path, exc, "save the decision")) from exc
            record.id, record.prev_hash, record.row_hash = stored.id, stored.prev_hash, stored.row_hash
            return stored

    # ------------------------------------------------------------------ reading
    def query(self, q: RecordQuery | None = None) -> list[InspectionRecord]:
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
        return [InspectionRecord.from_row(r) for r in rows]

    def get(self, uid: str) -> InspectionRecord | None:
        with self._lock:
            row = self._con.execute("SELECT * FROM inspections WHERE uid = ?", (uid,)).fetchone()
        return InspectionRecord.from_row(row) if row else None

    def distinct(self, column: str) -> list[str]:
        allowed = {"profile_name", "operator_id", "station_id", "pipeline", "reason"}
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

    def verify(self) -> VerifyResult:
        """Recompute the chain; report the first row that does not match."""
        with self._lock:
            try:
                check = self._con.execute("PRAGMA quick_check").fetchone()[0]
                if check != "ok":
                    return VerifyResult(False, 0, f"database damaged: {check}")
                cur = self._con.execute("SELECT * FROM inspections ORDER BY id")
                prev = GENESIS_HASH
                n = 0
                expected_id = 1
                for row in cur:
                    rec = InspectionRecord.from_row(row)
                    n += 1
                    if rec.id != expected_id:
                        return VerifyResult(False, n, f"row id {expected_id} is missing (next is {rec.id})",
                                            expected_id)
                    if rec.prev_hash != prev:
                        return VerifyResult(False, n, f"row {rec.id}: previous-hash link broken "
                                            "(a row before it was removed or altered)", rec.id)
                    if row_hash(prev, rec) != rec.row_hash:
                        return VerifyResult(False, n, f"row {rec.id}: content does not match its hash "
                                            "(the row was altered)", rec.id)
                    prev = rec.row_hash
                    expected_id += 1
                meta = dict(self._con.execute("SELECT key, value FROM meta").fetchall())
            except sqlite3.Error as exc:
                return VerifyResult(False, 0, _explain(self.path, exc, "read"))
        if n and meta.get("head") != prev:
            return VerifyResult(False, n, "the newest rows were removed (chain head does not match)")
        if str(n) != meta.get("count", "0") and n:
            return VerifyResult(False, n, f"row count {n} does not match the recorded {meta.get('count')}")
        if not n and meta.get("head"):
            return VerifyResult(False, 0, "all rows were removed (chain head recorded but table empty)")
        return VerifyResult(True, n, f"{n} rows, hash chain intact")

    def close(self) -> None:
        with self._lock:
            try:
                self._con.close()
            except sqlite3.Error:
                pass


def open_store(location: str | Path) -> RecordStore:
    """Open the store at a path (SQLite). ``postgresql://`` URLs are reserved for a later backend."""
    text = str(location)
    if text.startswith(("postgres://", "postgresql://")):
        raise RecordStoreError(f"{text}: PostgreSQL record stores are not available in this build")
    return SqliteRecordStore(text)


# --------------------------------------------------------------------------- helpers
def effective(records: Iterable[InspectionRecord]) -> list[InspectionRecord]:
    """Decisions that still stand (not voided by a later correction)."""
    records = list(records)
    voided = {r.corrects_uid for r in records if r.kind == "correction"}
    return [r for r in records if r.kind == "decision" and r.uid not in voided]


@dataclass
class Counts:
    decisions: int = 0
    passed: int = 0
    failed: int = 0
    overrides: int = 0
    corrections: int = 0


def counts(records: Sequence[InspectionRecord]) -> Counts:
    """Totals over the standing decisions (plus the number of corrections)."""
    live = effective(records)
    return Counts(
        decisions=len(live),
        passed=sum(r.operator_verdict == "PASS" for r in live),
        failed=sum(r.operator_verdict == "FAIL" for r in live),
        overrides=sum(r.agrees is False for r in live),
        corrections=sum(r.kind == "correction" for r in records),
    )


def _csv_value(rec: InspectionRecord, name: str) -> Any:
    v = getattr(rec, name)
    if name == "model_keys":
        return ";".join(v)
    return "" if v is None else v


def write_csv(records: Iterable[InspectionRecord], out: TextIO) -> int:
    writer = csv.writer(out)
    writer.writerow(CSV_FIELDS)
    n = 0
    for rec in records:
        writer.writerow([_csv_value(rec, f) for f in CSV_FIELDS])
        n += 1
    return n


def export_csv(records: Iterable[InspectionRecord], path: str | Path) -> int:
    """Write records as CSV (atomically: a temp file renamed into place). Returns the row count."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO(newline="")
    n = write_csv(records, buf)
    tmp = p.with_name(p.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as fh:
        fh.write(buf.getvalue())
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, p)
    return n


class RecordKeeper:
    """Saves records in order; failures keep them pending in memory and retry (never drops one).

    :meth:`save` returns the stored record, or ``None`` when it is pending (``last_error`` says
    why). Pending records are written first on the next :meth:`save` or :meth:`retry`, so the
    chain order is the order of the decisions.
    """

    def __init__(self, store: RecordStore | None, opener: Any = None) -> None:
        self.store = store
        self._opener = opener  # reopens the store if it could not be opened at start
        self.pending: list[InspectionRecord] = []
        self.last_error: str | None = None

    def _ensure_store(self) -> RecordStore:
        if self.store is None:
            if self._opener is None:
                raise RecordStoreError("no record store configured")
            self.store = self._opener()
        return self.store

    def retry(self) -> int:
        """Write as many pending records as possible; returns how many were saved."""
        saved = 0
        while self.pending:
            try:
                self._ensure_store().append(self.pending[0])
            except RecordStoreError as exc:
                self.last_error = str(exc)
                log.error("record not saved (kept pending, %d waiting): %s", len(self.pending), exc)
                return saved
            self.pending.pop(0)
            saved += 1
        self.last_error = None
        return saved

    def save(self, record: InspectionRecord) -> InspectionRecord | None:
        self.pending.append(record)
        self.retry()
        return None if any(r is record for r in self.pending) else record

    def dump_pending(self, path: str | Path) -> Path:
        """Write pending records as JSON lines (e.g. to another disk) so they can be imported later."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "a", encoding="utf-8") as fh:
            for rec in self.pending:
                fh.write(json.dumps(rec.content(), sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return p


def import_jsonl(store: RecordStore, path: str | Path) -> int:
    """Append records dumped by :meth:`RecordKeeper.dump_pending` (skips uids already stored)."""
    n = 0
    existing = {r.uid for r in store.query()}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        data = json.loads(line)
        data.pop("id", None)
        rec = InspectionRecord(**data)
        if rec.uid in existing:
            continue
        store.append(rec)
        n += 1
    return n
