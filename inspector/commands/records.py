"""``inspector records list|export|verify|import``: the inspection records from the command line."""

from __future__ import annotations

import argparse
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from inspector.cli import EXIT_FAILED_INPUTS, EXIT_OK, UsageError
from inspector.records import (
    RecordQuery,
    RecordStoreError,
    SqliteRecordStore,
    counts,
    export_csv,
    import_jsonl,
    to_utc_iso,
    write_csv,
)
from inspector.settings import Settings

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
    p.add_argument("--db", type=Path, default=None, help="records database (default: records_path from settings)")
    p.add_argument("--since", help="from this moment (2024-05-01, 2024-05-01T06:00, today, 7d, 12h)")
    p.add_argument("--until", help="before this moment (same forms as --since)")
    p.add_argument("--profile", help="only this profile name")
    p.add_argument("--operator", help="only this operator id")
    p.add_argument("--station", help="only this station id")
    p.add_argument("--verdict", choices=("PASS", "FAIL"), help="only this operator verdict")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("records", help="list, export and verify inspection records")
    rsub = p.add_subparsers(dest="records_command", metavar="ACTION", required=True)

    ls = rsub.add_parser("list", help="print records as a table")
    _add_filters(ls)
    ls.add_argument("--limit", type=int, default=50, help="newest N rows (0 = all; default 50)")
    ls.set_defaults(func=_list)

    ex = rsub.add_parser("export", help="write records as CSV")
    _add_filters(ex)
    ex.add_argument("--out", required=True, help="CSV file to write ('-' for standard output)")
    ex.set_defaults(func=_export)

    ve = rsub.add_parser("verify", help="check the database and its tamper-evident hash chain")
    ve.add_argument("--db", type=Path, default=None)
    ve.set_defaults(func=_verify)

    im = rsub.add_parser("import", help="append records saved aside as JSON lines by the station")
    im.add_argument("file", type=Path)
    im.add_argument("--db", type=Path, default=None)
    im.set_defaults(func=_import)


def _open(args: argparse.Namespace, must_exist: bool = True) -> SqliteRecordStore:
    path = args.db or Settings.load().records_path
    if must_exist and not Path(path).is_file():
        raise UsageError(f"records database {path} does not exist yet (no decision recorded); pass --db")
    try:
        return SqliteRecordStore(path)
    except RecordStoreError as exc:
        raise UsageError(str(exc)) from exc


def _query(args: argparse.Namespace, limit: int | None = None, newest_first: bool = False) -> RecordQuery:
    return RecordQuery(
        since=parse_when(args.since) if args.since else None,
        until=parse_when(args.until) if args.until else None,
        profile=args.profile, operator=args.operator, station=args.station, verdict=args.verdict,
        limit=limit, newest_first=newest_first,
    )


def _local(ts: str) -> str:
    try:
        moment = datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).astimezone()
    except ValueError:
        return ts
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _list(args: argparse.Namespace) -> int:
    store = _open(args)
    try:
        rows = store.query(_query(args, limit=args.limit or None, newest_first=True))[::-1]
    finally:
        store.close()
    header = f"{'id':>5}  {'time (local)':19}  {'operator':10} {'profile':18} {'score':>6} {'auto':4}  {'oper':10} reason / image"
    print(header)
    for r in rows:
        score = f"{r.image_score:.3f}" if r.image_score is not None else "-"
        oper = r.operator_verdict or "-"
        if r.kind == "correction":
            oper = "UNDO"
        detail = r.reason or ""
        image = Path(r.image_path).name if r.image_path else (r.source_id or "")
        print(f"{r.id:>5}  {_local(r.timestamp):19}  {r.operator_id[:10]:10} {r.profile_name[:18]:18} "
              f"{score:>6} {(r.auto_verdict or '-'):4}  {oper:10} {detail} {image}".rstrip())
    c = counts(rows)
    print(f"{len(rows)} rows: {c.decisions} standing decisions ({c.passed} PASS, {c.failed} FAIL, "
          f"{c.overrides} overriding the station), {c.corrections} corrections")
    return EXIT_OK


def _export(args: argparse.Namespace) -> int:
    store = _open(args)
    try:
        rows = store.query(_query(args))
    finally:
        store.close()
    if args.out == "-":
        write_csv(rows, sys.stdout)
        return EXIT_OK
    n = export_csv(rows, args.out)
    print(f"wrote {n} records to {args.out}", file=sys.stderr)
    return EXIT_OK


def _verify(args: argparse.Namespace) -> int:
    store = _open(args)
    try:
        result = store.verify()
    finally:
        store.close()
    if result.ok:
        print(f"OK {store.location}: {result.message}")
        return EXIT_OK
    print(f"BROKEN {store.location}: {result.message}", file=sys.stderr)
    return EXIT_FAILED_INPUTS


def _import(args: argparse.Namespace) -> int:
    if not args.file.is_file():
        raise UsageError(f"{args.file}: file not found")
    store = _open(args, must_exist=False)
    try:
        n = import_jsonl(store, args.file)
    except RecordStoreError as exc:
        raise UsageError(str(exc)) from exc
    except (ValueError, TypeError, KeyError) as exc:
        raise UsageError(f"{args.file}: not a records dump ({exc})") from exc
    finally:
        store.close()
    print(f"imported {n} records into {store.location}")
    return EXIT_OK
