"""Plant-wide inspection records in PostgreSQL (psycopg 3): every station's decisions in one database.

Same semantics as :class:`inspector.records.SqliteRecordStore`:

- **append-only, enforced by the database.** Stations log in with a role that holds only
  ``SELECT, INSERT`` (no UPDATE, DELETE or TRUNCATE); triggers refuse UPDATE, DELETE and
  TRUNCATE for every role, the table owner's included.
- **one keyed hash chain per station.** ``id`` is the row's position in its station's chain
  (1, 2, ...); ``prev_hash``/``row_hash`` are :func:`inspector.records.chain_hash` under that
  station's key, exactly as in its local SQLite file. A ``BEFORE INSERT`` trigger (``SECURITY
  DEFINER``) refuses a row that does not continue its station's chain and keeps the head of
  every chain in ``chain_heads`` (which the station role can only read), so removing the
  newest rows of a chain is detected. ``seq`` orders all stations' rows as they arrived.
- **dedup by uid.** Appending a record whose uid is already stored returns the stored row and
  writes nothing, so a journal replayed after a lost answer never duplicates a part.

Store-and-forward is :class:`inspector.records.RecordKeeper` over this store with a local
journal (:func:`keeper_for_settings`): while the server is unreachable :meth:`append` raises
:class:`~inspector.records.RecordStoreError` quickly, the decision stays in the fsynced journal
(``keeper.pending``, the backlog the status bar shows) and is written, in order, once the
server answers again. The store reconnects by itself.

``inspector records init-postgres URL`` runs :func:`init_schema` (schema, triggers, roles).
``records import FILE --db URL`` appends one station's export to that station's chain
(:func:`import_jsonl`); ``records backup DEST --db URL`` writes a consistent ``pg_dump`` of the
records schema (:func:`dump_schema`; restore with ``pg_restore``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from inspector.keys import existing_station_key, key_id, station_key
from inspector.records import (
    GENESIS_HASH,
    Checkpoint,
    CheckpointFile,
    InspectionRecord,
    RecordJournal,
    RecordKeeper,
    RecordQuery,
    RecordImportError,
    RecordStoreError,
    VerifyResult,
    plan_import,
    read_checkpoints,
    read_import_file,
    row_hash,
    to_utc_iso,
)

log = logging.getLogger(__name__)

SCHEMA = "inspector"
WRITER_ROLE = "inspector_writer"  # group role of the stations: SELECT + INSERT only
READER_ROLE = "inspector_reader"  # group role of QA / reports: SELECT only
PG_SCHEMA_VERSION = 1
URL_PREFIXES = ("postgresql://", "postgres://")


def is_postgres_url(location: object) -> bool:
    return isinstance(location, str) and location.startswith(URL_PREFIXES)


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError as exc:  # the optional 'plant' extra
        raise RecordStoreError("PostgreSQL records need psycopg: install Inspector with the 'plant' extra "
                               "(pip install 'inspector[plant]')") from exc
    return psycopg


def redact(url: str) -> str:
    """The URL without its password (for messages and ``location``)."""
    try:
        from psycopg.conninfo import conninfo_to_dict

        d = conninfo_to_dict(url)
    except Exception:  # noqa: BLE001 - a malformed URL is reported by connect()
        return url.split("@")[-1]
    host, port, db, user = d.get("host", ""), d.get("port", ""), d.get("dbname", ""), d.get("user", "")
    return f"postgresql://{user + '@' if user else ''}{host}{':' + str(port) if port else ''}/{db}"


def _pg_type(annotation: str) -> str:
    base = str(annotation).split("|")[0].strip()
    return {"int": "BIGINT", "float": "DOUBLE PRECISION", "bool": "BOOLEAN"}.get(base, "TEXT")


_FIELDS = [f for f in dataclasses.fields(InspectionRecord)]
_COLUMNS = [(f.name, _pg_type(str(f.type))) for f in _FIELDS]
_NAMES = [name for name, _ in _COLUMNS]


def schema_sql() -> str:
    """Idempotent DDL: tables, append-only triggers, the chain trigger, the two group roles."""
    cols = ",\n  ".join(f"{name} {typ}{' NOT NULL' if name in ('station_id', 'id', 'uid', 'row_hash', 'prev_hash') else ''}"
                        for name, typ in _COLUMNS)
    s = SCHEMA
    return f"""
CREATE SCHEMA IF NOT EXISTS {s};
REVOKE ALL ON SCHEMA {s} FROM PUBLIC;
CREATE TABLE IF NOT EXISTS {s}.meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO {s}.meta(key, value) VALUES ('schema', '{PG_SCHEMA_VERSION}') ON CONFLICT (key) DO NOTHING;
CREATE TABLE IF NOT EXISTS {s}.inspections (
  seq BIGSERIAL PRIMARY KEY,
  {cols},
  CONSTRAINT inspections_uid UNIQUE (uid),
  CONSTRAINT inspections_station_id UNIQUE (station_id, id)
);
CREATE INDEX IF NOT EXISTS inspections_ts ON {s}.inspections (timestamp);
CREATE TABLE IF NOT EXISTS {s}.chain_heads (station_id TEXT PRIMARY KEY, count BIGINT NOT NULL, head TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS {s}.stations (station_id TEXT PRIMARY KEY, key_id TEXT NOT NULL,
  first_seen TIMESTAMPTZ NOT NULL DEFAULT now());

CREATE OR REPLACE FUNCTION {s}.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'inspection records are append-only: % on %.% refused', TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME;
END $$;

CREATE OR REPLACE FUNCTION {s}.chain_append() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = {s}, pg_temp AS $$
DECLARE h {s}.chain_heads%ROWTYPE;
BEGIN
  SELECT * INTO h FROM {s}.chain_heads WHERE station_id = NEW.station_id FOR UPDATE;
  IF NOT FOUND THEN
    IF NEW.id <> 1 OR NEW.prev_hash <> repeat('0', 64) THEN
      RAISE EXCEPTION 'station %: the first row of a chain must be id 1 after the genesis hash (got id %)',
        NEW.station_id, NEW.id;
    END IF;
    INSERT INTO {s}.chain_heads(station_id, count, head) VALUES (NEW.station_id, NEW.id, NEW.row_hash);
  ELSE
    IF NEW.id <> h.count + 1 OR NEW.prev_hash <> h.head THEN
      RAISE EXCEPTION 'station %: row % does not continue the chain after row % (two writers with one station id?)',
        NEW.station_id, NEW.id, h.count;
    END IF;
    UPDATE {s}.chain_heads SET count = NEW.id, head = NEW.row_hash WHERE station_id = NEW.station_id;
  END IF;
  RETURN NEW;
END $$;

DROP TRIGGER IF EXISTS inspections_chain ON {s}.inspections;
CREATE TRIGGER inspections_chain BEFORE INSERT ON {s}.inspections FOR EACH ROW EXECUTE FUNCTION {s}.chain_append();
DROP TRIGGER IF EXISTS inspections_no_change ON {s}.inspections;
CREATE TRIGGER inspections_no_change BEFORE UPDATE OR DELETE ON {s}.inspections
  FOR EACH ROW EXECUTE FUNCTION {s}.refuse_change();
DROP TRIGGER IF EXISTS inspections_no_truncate ON {s}.inspections;
CREATE TRIGGER inspections_no_truncate BEFORE TRUNCATE ON {s}.inspections
  FOR EACH STATEMENT EXECUTE FUNCTION {s}.refuse_change();
DROP TRIGGER IF EXISTS stations_no_change ON {s}.stations;
CREATE TRIGGER stations_no_change BEFORE UPDATE OR DELETE ON {s}.stations
  FOR EACH ROW EXECUTE FUNCTION {s}.refuse_change();
DROP TRIGGER IF EXISTS stations_no_truncate ON {s}.stations;
CREATE TRIGGER stations_no_truncate BEFORE TRUNCATE ON {s}.stations
  FOR EACH STATEMENT EXECUTE FUNCTION {s}.refuse_change();

DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{WRITER_ROLE}') THEN CREATE ROLE {WRITER_ROLE} NOLOGIN; END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{READER_ROLE}') THEN CREATE ROLE {READER_ROLE} NOLOGIN; END IF;
END $$;
REVOKE ALL ON ALL TABLES IN SCHEMA {s} FROM {WRITER_ROLE}, {READER_ROLE};
GRANT USAGE ON SCHEMA {s} TO {WRITER_ROLE}, {READER_ROLE};
GRANT SELECT, INSERT ON {s}.inspections, {s}.stations TO {WRITER_ROLE};
GRANT SELECT ON {s}.chain_heads, {s}.meta TO {WRITER_ROLE};
GRANT USAGE ON SEQUENCE {s}.inspections_seq_seq TO {WRITER_ROLE};
GRANT SELECT ON {s}.inspections, {s}.stations, {s}.chain_heads, {s}.meta TO {READER_ROLE};
GRANT SELECT ON SEQUENCE {s}.inspections_seq_seq TO {READER_ROLE};
"""


@dataclasses.dataclass(frozen=True)
class InitResult:
    location: str
    station_url: str | None
    reader_url: str | None


def _login_url(admin_url: str, user: str, password: str) -> str:
    from psycopg.conninfo import conninfo_to_dict

    d = conninfo_to_dict(admin_url)
    host, port, db = d.get("host", "127.0.0.1"), d.get("port", "5432"), d.get("dbname", "postgres")
    return f"postgresql://{user}:{password}@{host}:{port}/{db}"


def init_schema(admin_url: str, station_user: str | None = "inspector_station", station_password: str | None = None,
                reader_user: str | None = "inspector_qa", reader_password: str | None = None) -> InitResult:
    """Create (or update) the schema, triggers and roles; create the login roles stations and QA use.

    ``admin_url`` must be a role that may create schemas and roles (the database owner with
    CREATEROLE, or a superuser). A login role that exists keeps its password unless one is given.
    Returns the URLs to give the stations (INSERT + SELECT) and QA (SELECT only).
    """
    psycopg = _psycopg()
    from psycopg import sql

    out: dict[str, str | None] = {"station": None, "reader": None}
    try:
        with psycopg.connect(admin_url, connect_timeout=10, autocommit=True) as con:
            con.execute(schema_sql())
            for kind, user, password, group in (("station", station_user, station_password, WRITER_ROLE),
                                                ("reader", reader_user, reader_password, READER_ROLE)):
                if not user:
                    continue
                exists = con.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,)).fetchone() is not None
                if not exists:
                    password = password or secrets.token_urlsafe(18)
                    con.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(user),
                                                                                 sql.Literal(password)))
                elif password:
                    con.execute(sql.SQL("ALTER ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(user),
                                                                                sql.Literal(password)))
                con.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), sql.Identifier(user)))
                out[kind] = _login_url(admin_url, user, password) if password else None
    except psycopg.Error as exc:
        raise RecordStoreError(f"{redact(admin_url)}: cannot create the records schema ({exc}); the URL's role "
                               "must be allowed to create schemas and roles (the database owner with "
                               "CREATEROLE, or a superuser)") from exc
    return InitResult(redact(admin_url), out["station"], out["reader"])


class PostgresRecordStore:
    """:class:`inspector.records.RecordStore` on PostgreSQL (thread-safe: one connection, serialised).

    ``key`` keys the chain of the rows this station appends (default: the station key);
    ``station_id`` names the station it belongs to (for :meth:`verify` and :meth:`head`).
    ``keys`` maps other station ids to their keys, for :meth:`verify` (an auditor's view).
    ``checkpoints``: optional local file where every append also signs a checkpoint of this
    station's chain (as the SQLite store does beside its file).
    The connection is opened lazily and re-opened after the server went away; after a failed
    connect, calls fail at once for ``retry_connect_s`` (so a dead server costs the station one
    ``connect_timeout_s`` wait per ``retry_connect_s``, not one per decision).
    """

    def __init__(self, url: str, *, key: bytes | None = None, keys: Mapping[str, bytes] | None = None,
                 read_only: bool = False, connect_timeout_s: float = 3.0,
                 checkpoints: str | Path | None = None, station_id: str | None = None,
                 retry_connect_s: float = 2.0) -> None:
        if not is_postgres_url(url):
            raise RecordStoreError(f"{url!r} is not a postgresql:// URL")
        self._psycopg = _psycopg()
        self.url = url
        self.location = redact(url)
        self.read_only = read_only
        self.station_id = station_id
        self._key = key
        self._keys = dict(keys or {})
        self._timeout = max(1, int(round(connect_timeout_s)))
        self._lock = threading.RLock()
        self._con: Any = None
        self.retry_connect_s = retry_connect_s
        self._down_until = 0.0
        self._down_reason = ""
        self._known_stations: set[str] = set()
        self._checkpoints = CheckpointFile(Path(checkpoints)) if checkpoints else None

    # ------------------------------------------------------------------ connection
    def _connect(self) -> Any:
        if self._con is not None and not self._con.closed and not self._con.broken:
            return self._con
        now = time.monotonic()
        if now < self._down_until:  # do not make every decision wait for a server that just failed
            raise RecordStoreError(f"{self._down_reason} (next attempt in {self._down_until - now:.1f} s)")
        from psycopg.rows import dict_row

        try:
            self._con = self._psycopg.connect(self.url, connect_timeout=self._timeout, row_factory=dict_row,
                                              application_name="inspector")
        except self._psycopg.Error as exc:
            self._con = None
            self._down_reason = self._explain(exc, "connect")
            self._down_until = time.monotonic() + self.retry_connect_s
            raise RecordStoreError(self._down_reason) from exc
        self._down_until = 0.0
        return self._con

    def _drop(self) -> None:
        if self._con is not None:
            try:
                self._con.close()
            except self._psycopg.Error:
                pass
        self._con = None

    def _explain(self, exc: BaseException, action: str) -> str:
        errors = self._psycopg.errors
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, errors.UndefinedTable | errors.InvalidSchemaName):
            hint = "the records schema is missing: run `inspector records init-postgres ADMIN_URL` once"
        elif isinstance(exc, errors.InsufficientPrivilege):
            hint = "the URL's role lacks the privilege (stations use the role init-postgres created)"
        elif isinstance(exc, errors.RaiseException):
            hint = "the database refused the row"
        elif isinstance(exc, self._psycopg.OperationalError):
            hint = "the server is unreachable; the station keeps deciding and sends the journal when it returns"
        else:
            hint = "check the server and the records URL"
        return f"records database {self.location}: cannot {action} ({text}); {hint}"

    def _run(self, action: str, fn: Any) -> Any:
        """Run ``fn(con)`` in a transaction; connection failures drop the connection for a reconnect."""
        with self._lock:
            con = self._connect()
            try:
                with con.transaction():
                    return fn(con)
            except self._psycopg.Error as exc:
                if con.broken or isinstance(exc, self._psycopg.OperationalError):
                    self._drop()
                raise RecordStoreError(self._explain(exc, action)) from exc

    # ------------------------------------------------------------------ keys
    def _key_for(self, station: str, create: bool) -> bytes | None:
        """The key that chains rows this store appends (one station writes its own rows)."""
        if station in self._keys:
            return self._keys[station]
        if self._key is None and create:
            self._key = station_key()
        return self._key

    def _verify_key(self, station: str) -> bytes | None:
        """The key to check ``station``'s chain with: ``keys[station]``, else ``key`` when it is that
        station's (``station_id``), else none (links and heads are still checked)."""
        if station in self._keys:
            return self._keys[station]
        if self.station_id is not None and station == self.station_id:
            if self._key is None:
                self._key = existing_station_key() if self.read_only else station_key()
            return self._key
        return None

    # ------------------------------------------------------------------ writing
    def append(self, record: InspectionRecord) -> InspectionRecord:
        """Commit one record (or return the stored one if its uid is there already)."""
        return self.append_many([record])[0]

    def append_many(self, records: Sequence[InspectionRecord]) -> list[InspectionRecord]:
        """Commit records in one transaction (all or none), each continuing its station's chain."""
        if self.read_only:
            raise RecordStoreError(f"records database {self.location} is open read-only")
        if not records:
            return []
        placeholders = ", ".join(["%s"] * len(_NAMES))
        insert = f"INSERT INTO {SCHEMA}.inspections ({', '.join(_NAMES)}) VALUES ({placeholders})"

        def work(con: Any) -> list[InspectionRecord]:
            out: list[InspectionRecord] = []
            heads: dict[str, tuple[int, str]] = {}
            for station in sorted({r.station_id for r in records}):  # fixed lock order: no deadlock
                con.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"inspector:{station}",))
            for record in records:
                existing = con.execute(f"SELECT * FROM {SCHEMA}.inspections WHERE uid = %s", (record.uid,)).fetchone()
                if existing is not None:
                    out.append(self._from_row(existing))
                    continue
                station = record.station_id
                key = self._key_for(station, create=True)
                assert key is not None
                if station not in heads:
                    row = con.execute(f"SELECT count, head FROM {SCHEMA}.chain_heads WHERE station_id = %s",
                                      (station,)).fetchone()
                    heads[station] = (int(row["count"]), str(row["head"])) if row else (0, GENESIS_HASH)
                    if station not in self._known_stations:
                        con.execute(f"INSERT INTO {SCHEMA}.stations(station_id, key_id) VALUES (%s, %s) "
                                    "ON CONFLICT (station_id) DO NOTHING", (station, key_id(key)))
                count, prev = heads[station]
                stored = dataclasses.replace(record)
                stored.id, stored.prev_hash = count + 1, prev
                stored.row_hash = row_hash(prev, stored, key)
                con.execute(insert, self._to_values(stored))
                heads[station] = (count + 1, stored.row_hash)
                out.append(stored)
            return out

        out = self._run("save the decision", work)
        self._known_stations.update(r.station_id for r in out)
        mine = [r for r in out if self.station_id is None or r.station_id == self.station_id]
        if self._checkpoints is not None and mine:
            last = mine[-1]
            key = self._key_for(last.station_id, create=True)
            assert key is not None
            try:
                self._checkpoints.append(Checkpoint.make(int(last.id or 0), last.row_hash, key))
            except OSError as exc:
                log.error("%s: cannot write the checkpoint (%s); the row is saved", self._checkpoints.path, exc)
        for record, stored in zip(records, out, strict=True):
            record.id, record.prev_hash, record.row_hash = stored.id, stored.prev_hash, stored.row_hash
        return out

    @staticmethod
    def _to_values(rec: InspectionRecord) -> tuple[Any, ...]:
        row = rec.to_row()
        row["imported"] = bool(rec.imported)
        return tuple(row[name] for name in _NAMES)

    @staticmethod
    def _from_row(row: Mapping[str, Any]) -> InspectionRecord:
        d = {k: v for k, v in row.items() if k != "seq"}
        return InspectionRecord.from_row(d)

    # ------------------------------------------------------------------ reading
    def query(self, q: RecordQuery | None = None) -> list[InspectionRecord]:
        return list(self.iter_query(q))

    def iter_query(self, q: RecordQuery | None = None) -> Iterator[InspectionRecord]:
        q = q or RecordQuery()
        where: list[str] = []
        args: list[Any] = []
        if q.since is not None:
            where.append("timestamp >= %s")
            args.append(to_utc_iso(q.since) if isinstance(q.since, datetime) else q.since)
        if q.until is not None:
            where.append("timestamp < %s")
            args.append(to_utc_iso(q.until) if isinstance(q.until, datetime) else q.until)
        for col, val in (("profile_name", q.profile), ("operator_id", q.operator), ("station_id", q.station),
                         ("operator_verdict", q.verdict), ("auto_verdict", q.auto_verdict), ("kind", q.kind)):
            if val:
                where.append(f"{col} = %s")
                args.append(val)
        sql = f"SELECT * FROM {SCHEMA}.inspections"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq DESC" if q.newest_first else " ORDER BY seq"
        if q.limit:
            sql += f" LIMIT {int(q.limit)}"
        rows = self._run("read", lambda con: con.execute(sql, args).fetchall())
        for r in rows:
            yield self._from_row(r)

    def get(self, uid: str) -> InspectionRecord | None:
        row = self._run("read", lambda con: con.execute(f"SELECT * FROM {SCHEMA}.inspections WHERE uid = %s",
                                                         (uid,)).fetchone())
        return self._from_row(row) if row else None

    def has_uid(self, uid: str) -> bool:
        return self._run("read", lambda con: con.execute(f"SELECT 1 FROM {SCHEMA}.inspections WHERE uid = %s",
                                                          (uid,)).fetchone()) is not None

    def distinct(self, column: str) -> list[str]:
        allowed = {"profile_name", "operator_id", "station_id", "pipeline", "reason", "role"}
        if column not in allowed:
            raise ValueError(f"column must be one of {sorted(allowed)}")
        rows = self._run("read", lambda con: con.execute(
            f"SELECT DISTINCT {column} AS v FROM {SCHEMA}.inspections WHERE {column} IS NOT NULL ORDER BY 1").fetchall())
        return [r["v"] for r in rows]

    def count(self, station: str | None = None) -> int:
        if station is None:
            row = self._run("read", lambda con: con.execute(f"SELECT COUNT(*) AS n FROM {SCHEMA}.inspections").fetchone())
        else:
            row = self._run("read", lambda con: con.execute(
                f"SELECT COUNT(*) AS n FROM {SCHEMA}.inspections WHERE station_id = %s", (station,)).fetchone())
        return int(row["n"])

    def head(self, station: str | None = None) -> Checkpoint | None:
        """A signed checkpoint of one station's chain head (this store's key's station when only one
        station wrote here, else ``station``); None when it cannot be signed or is ambiguous."""
        heads = self._run("read", lambda con: con.execute(f"SELECT * FROM {SCHEMA}.chain_heads").fetchall())
        chosen = [h for h in heads if station is None or h["station_id"] == station]
        if len(chosen) != 1:
            return None
        key = self._verify_key(chosen[0]["station_id"])
        if key is None:
            return None
        return Checkpoint.make(int(chosen[0]["count"]), str(chosen[0]["head"]), key)

    def verify(self, extra_checkpoints: Iterable[str | Path] = (), station: str | None = None) -> VerifyResult:
        """Check every station's chain: ids, links and ``chain_heads``; the keyed hashes wherever the
        station's key is known (this store's key for ``station``, or ``keys``); signed checkpoints."""
        problems: list[str] = []
        bad: int | None = None

        def read(con: Any) -> tuple[list[dict], dict[str, dict], dict[str, str]]:
            rows = con.execute(f"SELECT * FROM {SCHEMA}.inspections "
                               + ("WHERE station_id = %s " if station else "")
                               + "ORDER BY station_id, id", (station,) if station else ()).fetchall()
            heads = {h["station_id"]: h for h in con.execute(f"SELECT * FROM {SCHEMA}.chain_heads").fetchall()}
            ids = {s["station_id"]: s["key_id"] for s in con.execute(f"SELECT * FROM {SCHEMA}.stations").fetchall()}
            return rows, heads, ids

        rows, heads, key_ids = self._run("read", read)
        by_station: dict[str, list[InspectionRecord]] = {}
        for r in rows:
            by_station.setdefault(r["station_id"], []).append(self._from_row(r))
        unkeyed: list[str] = []
        own_cps: list[Checkpoint] = []
        sources = [Path(p) for p in extra_checkpoints]
        if self._checkpoints is not None and self._checkpoints.path.is_file():
            sources.insert(0, self._checkpoints.path)
        for src in sources:
            cps, probs = read_checkpoints(src)
            problems += probs
            own_cps += cps
        n_cp = 0
        names = set(by_station) | set(heads)
        for st in sorted(names if station is None else names & {station}):
            recs = by_station.get(st, [])
            key = self._verify_key(st)
            if key is not None and key_ids.get(st) and key_ids[st] != key_id(key):
                problems.append(f"station {st}: chain keyed with station key {key_ids[st]}, but the key given is "
                                f"{key_id(key)}; pass the right key file")
                key = None
            if key is None:
                unkeyed.append(st)
            prev, expected = GENESIS_HASH, 1
            for rec in recs:
                rid = int(rec.id or 0)
                if rid != expected:
                    problems.append(f"station {st}: row ids {expected}..{rid - 1} are missing (deleted)")
                    bad = bad or expected
                    expected = rid
                if rec.prev_hash != prev:
                    problems.append(f"station {st}: row {rid}: previous-hash link broken")
                    bad = bad or rid
                if key is not None and row_hash(rec.prev_hash, rec, key) != rec.row_hash:
                    problems.append(f"station {st}: row {rid}: content does not match its keyed hash (altered)")
                    bad = bad or rid
                prev, expected = rec.row_hash, expected + 1
            h = heads.get(st)
            last = expected - 1
            if h is None and recs:
                problems.append(f"station {st}: no chain head recorded for {last} rows")
            elif h is not None and (int(h["count"]) != last or h["head"] != prev):
                problems.append(f"station {st}: the recorded chain head is row {h['count']}, the table ends at row "
                                f"{last} (newest rows deleted, or rows inserted around the trigger)")
                bad = bad or last + 1
            if key is not None:
                tips = {int(r.id or 0): r.row_hash for r in recs}
                for cp in own_cps:
                    if not cp.valid(key):
                        continue
                    n_cp += 1
                    if cp.count > last:
                        problems.append(f"station {st}: rows {last + 1}..{cp.count} missing: the signed checkpoint "
                                        f"of {cp.time} records {cp.count} rows")
                    elif tips.get(cp.count) != cp.head:
                        problems.append(f"station {st}: row {cp.count} differs from the signed checkpoint of {cp.time}")
        n = len(rows)
        if problems:
            return VerifyResult(False, n, "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more problems"
                                                                     if len(problems) > 5 else ""), bad, problems, n_cp)
        stations = len(by_station)
        note = (f"; keyed hashes not checked for {', '.join(unkeyed)} (no key for that station: pass its key file)"
                if unkeyed else "")
        return VerifyResult(True, n, f"{n} rows from {stations} station(s), every chain linked and matching its "
                            f"recorded head, {n_cp} signed checkpoints match" + note, None, [], n_cp)

    def station_key_id(self, station: str) -> str | None:
        """The fingerprint of the key ``station``'s chain here is keyed with (None: no row yet)."""
        row = self._run("read", lambda con: con.execute(f"SELECT key_id FROM {SCHEMA}.stations WHERE station_id = %s",
                                                         (station,)).fetchone())
        return str(row["key_id"]) if row else None

    def backup(self, dest: str | Path) -> Path:
        """A consistent copy of the records schema: :func:`dump_schema` of this store's URL."""
        return dump_schema(self.url, dest)

    def close(self) -> None:
        with self._lock:
            self._drop()
            if self._checkpoints is not None:
                self._checkpoints.close()


def import_jsonl(url: str, path: str | Path, key: bytes) -> tuple[int, int]:
    """Append the rows of a ``records export --format jsonl`` file to PostgreSQL; (appended, already there).

    The whole file is checked first (every row's keyed hash under ``key``, the links), then the new
    rows are appended in one transaction, marked imported with their original chain kept, exactly
    as into a SQLite file. On the server they continue *their station's* chain, keyed with
    ``key``: so the file must hold one station's rows, and ``key`` must be the key that station's
    chain on the server already uses (when it has one). Raises :class:`RecordImportError` otherwise,
    naming what to do; nothing is imported then."""
    rows = read_import_file(path, key)
    stations = sorted({r.station_id for r in rows})
    if len(stations) != 1:
        raise RecordImportError(f"{path}: rows of {len(stations)} stations ({', '.join(stations)}); on a PostgreSQL "
                                "server each station's rows continue that station's own chain, so import one "
                                "station's export at a time (`records export --station ID --format jsonl`), each "
                                "with --key of that station; nothing imported")
    station = stations[0]
    store = PostgresRecordStore(url, keys={station: key}, station_id=station)
    try:
        known = store.station_key_id(station)
        if known is not None and known != key_id(key):
            raise RecordImportError(f"{path}: the chain of station {station} on {store.location} is keyed with key "
                                    f"{known}, the file with key {key_id(key)}: pass --key with station {station}'s "
                                    "key file; nothing imported")
        plan = plan_import(store, rows)
        store.append_many(plan.records)
    finally:
        store.close()
    return len(plan.records), plan.duplicates


def dump_schema(url: str, dest: str | Path, timeout_s: float = 3600.0) -> Path:
    """``pg_dump --format=custom --schema=inspector`` of ``url`` into the new file ``dest``.

    One snapshot of every station's rows, chain heads and key ids, with the triggers and grants
    (restore with ``pg_restore --dbname=URL DEST``; then ``records verify --db URL``). The role
    needs SELECT on the schema: the QA (read-only) or the admin URL; a station's INSERT-only
    role is refused. The password is passed to pg_dump in its environment, not on its command line.
    """
    dest = Path(dest).expanduser()
    location = redact(url)
    if dest.exists():
        raise RecordStoreError(f"{dest}: already exists; give a new file name (a backup never overwrites)")
    binary = shutil.which("pg_dump")
    if binary is None:
        raise RecordStoreError(f"{location}: pg_dump not found: install the PostgreSQL client tools (Debian: "
                               f"apt-get install postgresql-client) or back up on the server; {dest} was not written")
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(url)
    env = dict(os.environ)
    password = params.pop("password", None)
    if password:
        env["PGPASSWORD"] = str(password)
    tmp = dest.with_name(f".{dest.name}.partial")
    cmd = [binary, "--format=custom", f"--schema={SCHEMA}", f"--file={tmp}", f"--dbname={make_conninfo(**params)}"]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        tmp.unlink(missing_ok=True)
        raise RecordStoreError(f"{location}: pg_dump did not finish ({exc}); {dest} was not written") from exc
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        lines = proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"]
        why = next((line for line in lines if "error:" in line), lines[-1]).strip()
        hint = ("; the role may not read the whole schema: use the QA (read-only) URL init-postgres printed, "
                "or the admin URL" if "permission denied" in proc.stderr else "")
        raise RecordStoreError(f"{location}: pg_dump failed ({why}){hint}; {dest} was not written")
    os.replace(tmp, dest)
    return dest


def keeper_for_settings(settings: Any, url: str | None = None) -> RecordKeeper:
    """The station's store-and-forward keeper for a PostgreSQL records location.

    Decisions go to the local journal first (``settings.records_journal``, default
    ``<records_path folder>/postgres.journal``) and then to the server; while the server is
    unreachable they wait in the journal (``keeper.pending``; its length is the backlog) and are
    written in order by :meth:`RecordKeeper.retry` / :meth:`RecordKeeper.probe` or the next save.
    """
    url = url or getattr(settings, "records_url", None)
    if not is_postgres_url(url):
        raise RecordStoreError(f"records location {url!r} is not a postgresql:// URL")
    assert isinstance(url, str)
    folder = Path(settings.records_path).parent
    journal = Path(getattr(settings, "records_journal", None) or folder / "postgres.journal")
    store = PostgresRecordStore(url, checkpoints=folder / "postgres.checkpoints", station_id=settings.station_id)
    return RecordKeeper(store, journal=RecordJournal(journal))
