"""The shift report written at logout: a CSV of the counters, and the HTML page the UI prints to PDF."""

from __future__ import annotations

import csv
import html
import io
import re
from pathlib import Path

from inspector.files import atomic_write
from inspector.station.session import ShiftSummary


def summary_rows(s: ShiftSummary) -> list[tuple[str, str]]:
    yield_text = f"{s.yield_pct:.1f}" if s.yield_pct is not None else ""
    rows = [
        ("station", s.station_id), ("user", s.user), ("role", s.role),
        ("started_utc", s.started), ("ended_utc", s.ended or ""),
        ("inspected", str(s.inspected)), ("decided", str(s.decided)), ("pass", str(s.passed)),
        ("fail", str(s.failed)), ("overrides", str(s.overrides)), ("corrections", str(s.corrections)),
        ("no_read", str(s.no_read)), ("skipped", str(s.skipped)), ("not_decided", str(s.not_decided)),
        ("yield_pct", yield_text),
    ]
    rows += [(f"fail_reason:{reason}", str(n)) for reason, n in sorted(s.fail_reasons.items())]
    return rows


def _cell(text: str) -> str:
    """Neutralise spreadsheet formulas (a user name or reason starting with = + - @)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def report_csv(s: ShiftSummary) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["metric", "value"])
    for k, v in summary_rows(s):
        w.writerow([_cell(k), _cell(v)])
    return out.getvalue()


def report_html(s: ShiftSummary) -> str:
    """A printable page: the counters, then the last results."""
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td><b>{html.escape(v)}</b></td></tr>" for k, v in summary_rows(s))
    recent = "".join(f"<tr><td>{html.escape(n)}</td><td>{html.escape(v)}</td></tr>" for n, v in s.recent)
    return (f"<h2>Shift report — station {html.escape(s.station_id)}</h2>"
            f"<p>{html.escape(s.user)} ({html.escape(s.role)}), {html.escape(s.started)} – "
            f"{html.escape(s.ended or 'now')} (UTC)</p>"
            f"<table border='1' cellspacing='0' cellpadding='4'>{rows}</table>"
            f"<h3>Last results</h3><table border='1' cellspacing='0' cellpadding='4'>{recent}</table>")


def report_stem(s: ShiftSummary) -> str:
    stamp = re.sub(r"[^0-9T]", "", (s.ended or s.started))[:15]
    user = re.sub(r"[^A-Za-z0-9_.-]", "_", s.user) or "nobody"
    return f"shift-{s.station_id}-{user}-{stamp}"


def write_report_csv(s: ShiftSummary, folder: str | Path) -> Path:
    path = Path(folder) / f"{report_stem(s)}.csv"
    atomic_write(path, report_csv(s))
    return path
