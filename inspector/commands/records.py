"""``inspector records list|export|verify|import|backup``: the inspection records from the command line.

``list``, ``export``, ``verify`` and ``backup`` open the database read-only (``mode=ro``): they never
create, migrate or alter a file, so an auditor's ``chmod 444`` copy or WORM media works.
With a ``postgresql://`` location (``--db URL`` or ``records_url``) ``import`` appends one station's
export to its chain on the server and ``backup`` writes a ``pg_dump`` of the records schema
(:mod:`inspector.records_pg`).
"""

from __future__ import annotations

import argparse
import re
import sys
from datetime import datetime, timedelta
from pathlib import Path

from inspector.commands.common import EXIT_FAILED_INPUTS, EXIT_OK, UsageError
from inspector.commands.records_plant import (
    db_location,
    import_into_plant,
    open_plant_read_only,
    plant_location,
    register_plant,
)
from inspector.keys import StationKeyError, existing_station_key, key_path, station_key
from inspector.records import (
    RecordQuery,
    RecordStoreError,
    SqliteRecordStore,
    counts,
    export_csv,
    export_jsonl,
    import_jsonl,
    local_time,
    to_utc_iso,
    write_csv,
    write_jsonl,
)
from inspector.settings import Settings

_MAX_PROBLEMS = 50  # verify lists at most this many problems on the terminal
_RELATIVE = re.compile(r"^(\d+)\s*([dhm])$")


def parse_when(text: str, now: datetime | None = None) -> str:
    """A moment as records' UTC text: ISO date/datetime (naive = local time), ``today``,
    ``yesterday``, or a relative ``7d`` / ``12h`` / ``30m`` before now."""
    now = now or datetime.now().astimezone()
    t = text.strip().lower()
    if t == "today":
        return to_utc_iso(now.replace(hour=0, minute=0, second=0, microsecond=0))
    if t == "yesterday":
        return to_utc_iso(now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1))
    m = _RELATIVE.match(t)
    if m:
        n, unit = int(m.group(1)), m.group(2)
        delta = {"d": timedelta(days=n), "h": timedelta(hours=n), "m": timedelta(minutes=n)}[unit]
        return to_utc_iso(now - delta)
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"cannot read the date {text!r}; use e.g. 2024-05-01, 2024-05-01T13:30, today, 7d or 12h"
        ) from None
    return to_utc_iso(moment)


def _add_filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", type=db_location, default=None, help="records database (default: records_path from settings)")
    p.add_argument("--since", help="from this moment (2024-05-01, 2024-05-01T06:00, today, 7d, 12h)")
    p.add_argument("--until", help="before this moment (same forms as --since)")
    p.add_argument("--profile", help="only this profile name")
    p.add_argument("--operator", help="only this operator id")
    p.add_argument("--station", help="only this station id")
    p.add_argument("--verdict", choices=("PASS", "FAIL"), help="only this operator verdict")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("records", help="list, export, verify, import and back up inspection records")
    rsub = p.add_subparsers(dest="records_command", metavar="ACTION", required=True)

    ls = rsub.add_parser("list", help="print records as a table (read-only)")
    _add_filters(ls)
    ls.add_argument("--limit", type=int, default=50, help="newest N rows (0 = all; default 50)")
    ls.set_defaults(func=_list)

    ex = rsub.add_parser("export", help="write records as CSV or JSON lines (read-only)")
    _add_filters(ex)
    ex.add_argument("--out", required=True, help="file to write ('-' for standard output)")
    ex.add_argument("--format", choices=("csv", "jsonl"), default=None,
                    help="csv (for spreadsheets, with the signed checkpoint as last row) or jsonl (with the "
                         "chain, for `records import`); default from the --out suffix, else csv")
    ex.set_defaults(func=_export)

    ve = rsub.add_parser("verify", help="check the database, its keyed hash chain and its signed checkpoints")
    ve.add_argument("--db", type=db_location, default=None)
    _add_key(ve)
    ve.add_argument("--checkpoints", type=Path, action="append", default=[],
                    help="also check against this checkpoints file or CSV export (repeatable)")
    ve.set_defaults(func=_verify)

    im = rsub.add_parser("import", help="append records exported with `records export --format jsonl`")
    im.add_argument("file", type=Path)
    im.add_argument("--db", type=db_location, default=None)
    _add_key(im, "key file of the station that exported the rows (default: this station's key)")
    im.set_defaults(func=_import)

    bk = rsub.add_parser("backup", help="consistent copy of the database (SQLite backup API) and its checkpoints; "
                                        "a postgresql:// location: pg_dump of the records schema")
    bk.add_argument("dest", type=Path, help="new file to write (must not exist)")
    bk.add_argument("--db", type=db_location, default=None)
    bk.set_defaults(func=_backup)
    register_plant(rsub, _add_filters, _open, _query)  # init-postgres, report


def _add_key(p: argparse.ArgumentParser, text: str | None = None) -> None:
    p.add_argument("--key", type=Path, default=None,
                   help=text or f"station key file the chain was keyed with (default: {key_path()})")


def _key(args: argparse.Namespace, create: bool) -> bytes | None:
    try:
        if args.key is not None:
            if not args.key.is_file():
                raise UsageError(f"{args.key}: key file not found")
            return station_key(args.key)
        return station_key() if create else existing_station_key()
    except StationKeyError as exc:
        raise UsageError(str(exc)) from exc


def _db_path(args: argparse.Namespace) -> Path:
    return Path(args.db or Settings.load().records_path)


def _open(args: argparse.Namespace, key: bytes | None = None) -> SqliteRecordStore:
    """Read-only: never creates, migrates or writes anything."""
    url = plant_location(args)  # --db postgresql://... or settings.records_url
    if url is not None:
        return open_plant_read_only(url, key)  # type: ignore[return-value]
    path = _db_path(args)
    if not path.is_file():
        raise UsageError(f"records database {path} does not exist yet (no decision recorded); pass --db")
    try:
        return SqliteRecordStore(path, read_only=True, key=key)
    except RecordStoreError as exc:
        raise UsageError(str(exc)) from exc


def _query(args: argparse.Namespace, limit: int | None = None, newest_first: bool = False) -> RecordQuery:
    return RecordQuery(
        since=parse_when(args.since) if args.since else None,
        until=parse_when(args.until) if args.until else None,
        profile=args.profile, operator=args.operator, station=args.station, verdict=args.verdict,
        limit=limit, newest_first=newest_first,
    )


def _list(args: argparse.Namespace) -> int:
    store = _open(args)
    try:
        rows = store.query(_query(args, limit=args.limit or None, newest_first=True))[::-1]
    except RecordStoreError as exc:
        raise UsageError(str(exc)) from exc
    finally:
        store.close()
    header = f"{'id':>5}  {'time (local)':19}  {'operator':10} {'profile':18} {'score':>6} {'auto':4}  {'oper':10} reason / image"
    print(header)
    for r in rows:
        score = f"{r.image_score:.3f}" if r.image_score is not None else "-"
        oper = r.operator_verdict or "-"
        if r.kind == "correction":
            oper = "UNDO"
        elif r.kind != "decision":
            oper = r.kind.upper()
        detail = r.reason or ""
        image = Path(r.image_path).name if r.image_path else (r.source_id or "")
        flag = " [imported]" if r.imported else ""
        print(f"{r.id:>5}  {local_time(r.timestamp):19}  {r.operator_id[:10]:10} {r.profile_name[:18]:18} "
              f"{score:>6} {(r.auto_verdict or '-'):4}  {oper:10} {detail} {image}{flag}".rstrip())
    c = counts(rows)
    undecided = f", {c.no_read} no-read, {c.skipped} skipped, {c.not_decided} not decided" if (
        c.no_read or c.skipped or c.not_decided) else ""
    print(f"{len(rows)} rows: {c.decisions} standing decisions ({c.passed} PASS, {c.failed} FAIL, "
          f"{c.overrides} overriding the station), {c.corrections} corrections{undecided}")
    return EXIT_OK


def _export(args: argparse.Namespace) -> int:
    fmt = args.format or ("jsonl" if str(args.out).lower().endswith((".jsonl", ".json")) else "csv")
    store = _open(args)
    try:
        rows = store.query(_query(args))
        checkpoint = store.head()
    except RecordStoreError as exc:
        raise UsageError(str(exc)) from exc
    finally:
        store.close()
    if fmt == "csv" and checkpoint is None and rows:
        print(f"warning: no station key at {key_path()}: the export carries no signed checkpoint", file=sys.stderr)
    if args.out == "-":
        if fmt == "jsonl":
            write_jsonl(rows, sys.stdout)
        else:
            write_csv(rows, sys.stdout, checkpoint)
        return EXIT_OK
    n = export_jsonl(rows, args.out) if fmt == "jsonl" else export_csv(rows, args.out, checkpoint)
    print(f"wrote {n} records to {args.out}", file=sys.stderr)
    return EXIT_OK


def _verify(args: argparse.Namespace) -> int:
    for extra in args.checkpoints:
        if not extra.is_file():
            raise UsageError(f"{extra}: checkpoints file not found")
    store = _open(args, key=_key(args, create=False))
    try:
        result = store.verify(extra_checkpoints=args.checkpoints)
    finally:
        store.close()
    if result.ok:
        print(f"OK {store.location}: {result.message}")
        return EXIT_OK
    print(f"BROKEN {store.location}: {len(result.problems) or 1} problem(s)", file=sys.stderr)
    problems = result.problems or [result.message]
    for problem in problems[:_MAX_PROBLEMS]:
        print(f"  - {problem}", file=sys.stderr)
    if len(problems) > _MAX_PROBLEMS:
        print(f"  … and {len(problems) - _MAX_PROBLEMS} more", file=sys.stderr)
    return EXIT_FAILED_INPUTS


def _import(args: argparse.Namespace) -> int:
    if not args.file.is_file():
        raise UsageError(f"{args.file}: file not found")
    key = _key(args, create=args.key is None)
    url = plant_location(args)  # --db postgresql://... or settings.records_url
    if url is not None:
        return import_into_plant(url, args.file, key)
    path = _db_path(args)
    try:
        store = SqliteRecordStore(path)
    except RecordStoreError as exc:
        raise UsageError(str(exc)) from exc
    try:
        n = import_jsonl(store, args.file, key=key)
    except RecordStoreError as exc:
        raise UsageError(str(exc)) from exc
    finally:
        store.close()
    print(f"imported {n} records into {store.location} (marked imported, original chain kept)")
    return EXIT_OK


def _backup(args: argparse.Namespace) -> int:
    store = _open(args)
    try:
        dest = store.backup(args.dest)
    except RecordStoreError as exc:
        raise UsageError(str(exc)) from exc
    finally:
        store.close()
    if plant_location(args) is not None:
        print(f"backed up {store.location} to {dest} (pg_dump custom format: restore with `pg_restore --dbname=URL "
              f"{dest}`, then `inspector records verify --db URL`); keep the stations' keys in a separate safe place")
        return EXIT_OK
    print(f"backed up {store.location} to {dest} (with its checkpoints); keep the station key "
          f"{key_path()} in a separate safe place")
    return EXIT_OK
