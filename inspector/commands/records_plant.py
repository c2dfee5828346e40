"""``inspector records init-postgres`` and ``inspector records report``, and ``--db URL`` for the other actions.

Registered by :mod:`inspector.commands.records` (its ``register`` calls :func:`register_plant`).
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path
from typing import Any

import yaml

from inspector.commands.common import EXIT_OK, UsageError
from inspector.records import RecordStore, RecordStoreError
from inspector.records_pg import PostgresRecordStore, import_jsonl, init_schema, is_postgres_url, redact
from inspector.records_report import DEFAULT_SHIFTS, GROUPS, parse_shifts, report, write_report_csv, write_table
from inspector.settings import Settings


def db_location(text: str) -> Path | str:
    """``--db`` value: a SQLite file path, or a ``postgresql://`` URL kept as text."""
    return text if is_postgres_url(text) else Path(text)


def plant_location(args: argparse.Namespace) -> str | None:
    """The PostgreSQL URL the command should read (``--db URL``, else ``records_url`` when no --db)."""
    db = getattr(args, "db", None)
    if db is not None:
        return db if is_postgres_url(db) else None
    url = Settings.load().records_url
    return url if is_postgres_url(url) else None


def open_plant_read_only(url: str, key: bytes | None = None) -> PostgresRecordStore:
    try:
        return PostgresRecordStore(url, key=key, read_only=True, station_id=Settings.load().station_id)
    except RecordStoreError as exc:
        raise UsageError(str(exc)) from exc


def import_into_plant(url: str, path: Path, key: bytes) -> int:
    """``records import FILE --db postgresql://...``: one station's export into its chain on the server."""
    try:
        n, dup = import_jsonl(url, path, key)
    except RecordStoreError as exc:
        raise UsageError(str(exc)) from exc
    print(f"imported {n} records into {redact(url)} (marked imported, original chain kept)"
          + (f"; {dup} already there, skipped" if dup else ""))
    return EXIT_OK


def register_plant(rsub: Any, add_filters: Any, open_store: Any, make_query: Any) -> None:
    """Add the plant actions; ``open_store(args)`` / ``make_query(args)`` are the records command's own."""
    ip = rsub.add_parser("init-postgres", help="create the plant records schema, triggers and roles in PostgreSQL")
    ip.add_argument("url", help="postgresql://ADMIN@HOST:PORT/DB (a role that may create schemas and roles)")
    ip.add_argument("--station-user", default="inspector_station", help="login role for stations (INSERT + SELECT)")
    ip.add_argument("--station-password", default=None, help="its password (default: generated, printed once)")
    ip.add_argument("--reader-user", default="inspector_qa", help="login role for QA reports (SELECT only)")
    ip.add_argument("--reader-password", default=None)
    ip.set_defaults(func=_init_postgres)

    rp = rsub.add_parser("report", help="yield, FAIL rate, overrides and NO-READs per line/profile/shift")
    add_filters(rp)
    rp.add_argument("--by", default="line,profile,shift",
                    help=f"comma list of {', '.join(GROUPS)} (default line,profile,shift)")
    rp.add_argument("--lines", type=Path, default=None,
                    help="YAML mapping line -> [station ids] (default: each station is its own line)")
    rp.add_argument("--shifts", default=",".join(t.strftime("%H:%M") for t in DEFAULT_SHIFTS),
                    help="local shift start times (default 06:00,14:00,22:00)")
    rp.add_argument("--format", choices=("table", "csv"), default="table")
    rp.set_defaults(func=functools.partial(_report, open_store=open_store, make_query=make_query))


def _init_postgres(args: argparse.Namespace) -> int:
    if not is_postgres_url(args.url):
        raise UsageError(f"{args.url!r}: expected a postgresql://USER@HOST:PORT/DB URL")
    try:
        res = init_schema(args.url, args.station_user, args.station_password, args.reader_user, args.reader_password)
    except RecordStoreError as exc:
        raise UsageError(str(exc)) from exc
    print(f"records schema ready in {res.location}")
    for what, url, user in (("stations (records_url)", res.station_url, args.station_user),
                            ("QA reports", res.reader_url, args.reader_user)):
        if url:
            print(f"  {what}: {url}")
        elif user:
            print(f"  {what}: role {user} exists; its password is unchanged")
    return EXIT_OK


def _read_lines(path: Path | None) -> dict[str, str]:
    if path is None:
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"{path}: cannot read the line mapping ({exc})") from exc
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a mapping line -> [station ids], got {type(data).__name__}")
    out: dict[str, str] = {}
    for line, stations in data.items():
        if not isinstance(stations, list) or not all(isinstance(s, str) for s in stations):
            raise UsageError(f"{path}: {line}: expected a list of station ids")
        for s in stations:
            if s in out:
                raise UsageError(f"{path}: station {s} is on two lines ({out[s]} and {line})")
            out[s] = str(line)
    return out


def _report(args: argparse.Namespace, open_store: Any, make_query: Any) -> int:
    by = [b.strip() for b in args.by.split(",") if b.strip()]
    try:
        shifts = parse_shifts(args.shifts)
        if any(b not in GROUPS for b in by) or not by:
            raise ValueError(f"--by takes a comma list of {', '.join(GROUPS)} (got {args.by!r})")
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    lines = _read_lines(args.lines)
    store: RecordStore = open_store(args)
    try:
        rows = report(store.query(make_query(args)), by, lines, shifts)
    except RecordStoreError as exc:
        raise UsageError(str(exc)) from exc
    finally:
        store.close()
    if args.format == "csv":
        write_report_csv(rows, by, sys.stdout)
    else:
        write_table(rows, by, sys.stdout)
    return EXIT_OK
