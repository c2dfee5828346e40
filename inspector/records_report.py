"""Plant queries over records from either store: yield, FAIL rate, overrides and NO-READs per group.

Groups (``by``): ``line`` (a station's line from a mapping; a station with none is its own
line), ``station``, ``profile``, ``shift``, ``day``, ``operator``. A shift is named by the local
date it started on and its number: with starts ``06:00, 14:00, 22:00`` a part at 01:30 on
3 March belongs to ``2026-03-02 S3``.

Per group, over the parts that still stand (a correction voids the row it names, as everywhere):

- ``parts``: decisions + NO-READ + skipped + not decided;
- ``yield``: PASS decisions / parts;
- ``fail_rate``: FAIL decisions / decisions;
- ``overrides``: decisions where the operator changed the station's verdict (and their share of
  the decisions that had one);
- ``no_read`` (and its share of parts), ``skipped``, ``not_decided``, ``corrections``.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta, tzinfo
from typing import TextIO

from inspector.records import InspectionRecord

GROUPS = ("line", "station", "profile", "shift", "day", "operator")
DEFAULT_SHIFTS = (time(6, 0), time(14, 0), time(22, 0))


def parse_shifts(text: str) -> tuple[time, ...]:
    """``"06:00,14:00,22:00"`` -> sorted start times; raises ValueError naming the bad entry."""
    out = []
    for part in (p.strip() for p in text.split(",")):
        try:
            hh, mm = part.split(":")
            out.append(time(int(hh), int(mm)))
        except ValueError:
            raise ValueError(f"shift start {part!r} is not HH:MM (e.g. --shifts 06:00,14:00,22:00)") from None
    if not out or len(set(out)) != len(out):
        raise ValueError(f"shift starts {text!r}: give one or more distinct HH:MM times")
    return tuple(sorted(out))


def _local(ts: str, tz: tzinfo | None) -> datetime:
    moment = datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    return moment.astimezone(tz) if tz is not None else moment.astimezone()


def shift_of(ts: str, starts: Sequence[time] = DEFAULT_SHIFTS, tz: tzinfo | None = None) -> str:
    """The shift a UTC record timestamp falls in (local time, or ``tz``)."""
    local = _local(ts, tz)
    now = local.time().replace(tzinfo=None)
    for n in range(len(starts), 0, -1):
        if now >= starts[n - 1]:
            return f"{local.date().isoformat()} S{n}"
    return f"{(local.date() - timedelta(days=1)).isoformat()} S{len(starts)}"


@dataclass
class ReportRow:
    group: tuple[str, ...]
    parts: int = 0
    decisions: int = 0
    passed: int = 0
    failed: int = 0
    overrides: int = 0
    with_auto: int = 0
    no_read: int = 0
    skipped: int = 0
    not_decided: int = 0
    corrections: int = 0

    @property
    def yield_rate(self) -> float | None:
        return self.passed / self.parts if self.parts else None

    @property
    def fail_rate(self) -> float | None:
        return self.failed / self.decisions if self.decisions else None

    @property
    def override_rate(self) -> float | None:
        return self.overrides / self.with_auto if self.with_auto else None

    @property
    def no_read_rate(self) -> float | None:
        return self.no_read / self.parts if self.parts else None


def report(records: Iterable[InspectionRecord], by: Sequence[str], lines: Mapping[str, str] | None = None,
           shifts: Sequence[time] = DEFAULT_SHIFTS, tz: tzinfo | None = None) -> list[ReportRow]:
    """One row per group (sorted), plus nothing else; see the module docstring for the measures."""
    unknown = [b for b in by if b not in GROUPS]
    if unknown or not by:
        raise ValueError(f"--by takes a comma list of {', '.join(GROUPS)} (got {','.join(by) or 'nothing'})")
    lines = dict(lines or {})
    rows = list(records)
    voided = {r.corrects_uid for r in rows if r.kind == "correction"}

    def key(r: InspectionRecord) -> tuple[str, ...]:
        values = {
            "line": lambda: lines.get(r.station_id, r.station_id),
            "station": lambda: r.station_id,
            "profile": lambda: r.profile_name,
            "shift": lambda: shift_of(r.timestamp, shifts, tz),
            "day": lambda: _local(r.timestamp, tz).date().isoformat(),
            "operator": lambda: r.operator_id,
        }
        return tuple(values[b]() for b in by)

    groups: dict[tuple[str, ...], ReportRow] = {}
    for r in rows:
        g = groups.setdefault(key(r), ReportRow(key(r)))
        if r.kind == "correction":
            g.corrections += 1
            continue
        if r.uid in voided:
            continue
        g.parts += 1
        if r.kind == "decision":
            g.decisions += 1
            g.passed += r.operator_verdict == "PASS"
            g.failed += r.operator_verdict == "FAIL"
            if r.auto_verdict is not None:
                g.with_auto += 1
                g.overrides += r.auto_verdict != r.operator_verdict
        elif r.kind == "no_read":
            g.no_read += 1
        elif r.kind == "skipped":
            g.skipped += 1
        elif r.kind == "not_decided":
            g.not_decided += 1
    return [groups[k] for k in sorted(groups)]


COLUMNS = ("parts", "yield", "PASS", "FAIL", "fail_rate", "overrides", "override_rate", "NO-READ", "no_read_rate",
           "skipped", "not_decided", "corrections")


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _cells(row: ReportRow) -> list[str]:
    return [str(row.parts), _pct(row.yield_rate), str(row.passed), str(row.failed), _pct(row.fail_rate),
            str(row.overrides), _pct(row.override_rate), str(row.no_read), _pct(row.no_read_rate),
            str(row.skipped), str(row.not_decided), str(row.corrections)]


def write_table(rows: Sequence[ReportRow], by: Sequence[str], out: TextIO) -> None:
    header = [*by, *COLUMNS]
    body = [[*r.group, *_cells(r)] for r in rows]
    widths = [max(len(str(c)) for c in col) for col in zip(header, *body, strict=False)]
    for line in [header, *body]:
        out.write("  ".join(str(c).ljust(w) if i < len(by) else str(c).rjust(w)
                            for i, (c, w) in enumerate(zip(line, widths, strict=True))).rstrip() + "\n")


def write_report_csv(rows: Sequence[ReportRow], by: Sequence[str], out: TextIO) -> None:
    w = csv.writer(out)
    w.writerow([*by, *COLUMNS])
    for r in rows:
        w.writerow([*r.group, *_cells(r)])
