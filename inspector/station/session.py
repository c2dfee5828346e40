"""The shift at one station, without Qt: the part under review, decisions and corrections, every
part accounted for, the archive and the counters. The operator window is a view of it.

Every part that reaches the station ends the shift with one standing row:

* a **decision** (PASS/FAIL by the operator, possibly after corrections);
* **no_read** — the file could not be read or the pipeline failed on it (written at once, with the reason);
* **skipped** — the operator moved past it with next/previous and never decided it;
* **not_decided** — it was inspected (or on screen) when the source stopped, the source changed,
  the operator logged out or the station closed.

"Reached the station" means: a result (inspection or error) came back for it. A folder's files
that were never read are reported as *not reached* by :meth:`Session.run_counts`, not recorded.
A live camera shows the newest frame: only the frame on screen counts as a part.

Corrections: :meth:`Session.correct` voids any standing row of this shift with a
``correction`` row that names it (``corrects_uid``); the part is then back for review.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from inspector.archive import ArchivePlan, plan_archive, write_archive
from inspector.overlay import heat_vmax, render_overlay
from inspector.records import (
    InspectionRecord,
    RecordKeeper,
    RecordQuery,
    RecordStoreError,
    accounted,
    utc_now_iso,
)
from inspector.sources import Frame
from inspector.station.record import ProfileStamp, build_record
from inspector.station.result import StationResult, part_name
from inspector.station.review import Review
from inspector.users import User

log = logging.getLogger(__name__)

OUTCOME_KINDS = ("no_read", "skipped", "not_decided")
RECENT = 20  # results kept for the operator screen's strip
Intake = Literal["ignored", "stale", "current", "queued", "no_read"]


@dataclass
class Saved:
    """What happened to a row the session wrote: stored in the database, or only in the journal."""

    record: InspectionRecord
    stored: InspectionRecord | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.stored is not None


@dataclass
class ShiftSummary:
    """The operator screen's counters (and the shift report)."""

    user: str
    role: str
    station_id: str
    started: str
    ended: str | None = None
    inspected: int = 0
    passed: int = 0
    failed: int = 0
    overrides: int = 0
    corrections: int = 0
    no_read: int = 0
    skipped: int = 0
    not_decided: int = 0
    fail_reasons: dict[str, int] = field(default_factory=dict)
    recent: list[tuple[str, str]] = field(default_factory=list)  # (part name, PASS/FAIL/NO-READ/...), newest last

    @property
    def decided(self) -> int:
        return self.passed + self.failed

    @property
    def yield_pct(self) -> float | None:
        """PASS share of the decided parts, in percent (None before the first decision)."""
        return 100.0 * self.passed / self.decided if self.decided else None


@dataclass
class RunCounts:
    """The end screen of one source run: what became of each part."""

    total: int
    reached: int
    decided: int
    passed: int
    failed: int
    no_read: int
    skipped: int
    open: int  # reached, not decided, not a NO-READ (they become SKIPPED / NOT DECIDED when the run ends)

    @property
    def not_reached(self) -> int:
        return max(self.total - self.reached, 0)


@dataclass
class _Decided:
    key: int
    run: int
    record: InspectionRecord
    result: StationResult | None


class Session:
    """One station's shift (see the module docstring). ``keeper`` stores the rows."""

    def __init__(
        self,
        keeper: RecordKeeper,
        station_id: str,
        archive_dir: str | Path,
        archive_images: bool = True,
        clock: Callable[[], float] = time.monotonic,
        on_saved: Callable[[InspectionRecord], None] | None = None,
    ) -> None:
        self.keeper = keeper
        self.on_saved = on_saved  # e.g. the plant outputs' publish_record; called after every save
        self.station_id = station_id
        self.archive_dir = Path(archive_dir)
        self.archive_images = archive_images
        self._clock = clock
        self.user: User | None = None
        self.review: Review | None = None
        self.run = 0
        self.profile = ProfileStamp()
        self.threshold = 0.5
        self.reasons: list[str] = []
        self.generation = 0
        self.records: list[InspectionRecord] = []  # what this shift wrote, in order
        self._standing: list[_Decided] = []  # rows of this shift that still stand (decisions + outcomes)
        self._outcomes: dict[int, InspectionRecord] = {}  # key -> no_read/skipped/not_decided of this run
        self._waiting: list[tuple[int, StationResult]] = []  # NO-READs that came before anyone logged in
        self._inspected: set[tuple[int, int]] = set()  # (run, key) with an inspection
        self._reached: dict[int, Frame] = {}  # key -> the part's frame without pixels (this run)
        self._shown_key: int | None = None
        self._shown_at = clock()
        self.started = utc_now_iso()
        self._archiver = ThreadPoolExecutor(max_workers=1, thread_name_prefix="archive")
        self._jobs: deque[Future[None]] = deque()

    # ================================================================== who
    def login(self, user: User) -> None:
        if self.user is not None and self.user != user:
            self.logout()
        self.user = user
        self.started = utc_now_iso()
        self.records = []
        self._standing = []
        self._inspected = {(self.run, k) for k in (self.review.results if self.review else {})
                           if self._result_ok(k)}
        waiting, self._waiting = self._waiting, []
        for key, res in waiting:
            self._no_read(key, res)

    def logout(self) -> ShiftSummary | None:
        """End the shift: the open parts are accounted, the source run ends, the summary is returned."""
        if self.user is None:
            return None
        self.stop("operator logged out")
        summary = self.summary()
        summary.ended = utc_now_iso()
        self.user = None
        return summary

    # ================================================================== profile and source
    def set_profile(self, stamp: ProfileStamp, threshold: float, generation: int,
                    reasons: list[str] | None = None) -> None:
        self.profile = stamp
        self.threshold = threshold
        self.generation = generation
        self.reasons = list(reasons or [])

    def start(self, review: Review) -> None:
        """A new source run (the previous one is closed out first)."""
        self.stop("source changed")
        self.run += 1
        self.review = review
        self._outcomes = {}
        self._reached = {}
        self._shown_key = None

    def stop(self, why: str = "source stopped") -> list[Saved]:
        """End the run: every open part gets SKIPPED or NOT DECIDED (with ``why``)."""
        saved = self.close_out(why)
        self.review = None
        self._outcomes = {}
        self._reached = {}
        self._waiting = []
        self._shown_key = None
        return saved

    # ================================================================== results
    def receive(self, res: StationResult) -> Intake:
        """Take a result from the worker. ``stale``: inspected with an older profile (request it again)."""
        review = self.review
        if review is None:
            return "ignored"
        if review.mode != "stream" and res.inspection is not None and res.generation != self.generation:
            review.requested.discard(res.key)
            return "stale"
        if review.mode == "live" and (res.inspection is None or res.error) and (review.hold or res.error):
            return "ignored"  # a camera hiccup is a message, not a part
        is_fail = res.inspection is not None and res.inspection.verdict == "FAIL"
        is_current = review.add(res.key, res, is_fail)
        f = res.frame
        self._reached[res.key] = Frame(None, f.source_id, f.timestamp, f.path, f.index, f.error)
        if res.inspection is not None and not res.error:
            self._inspected.add((self.run, res.key))
        if res.error and review.mode != "live":
            self._no_read(res.key, res)
            return "no_read"
        return "current" if is_current else "queued"

    def settle(self, auto_skip: bool) -> StationResult | None:
        """The result under review, moving past NO-READ parts when ``auto_skip``."""
        review = self.review
        if review is None:
            return None
        while True:
            res = review.current()
            key = review.current_key()
            if auto_skip and res is not None and res.error and review.mode != "live" and key not in review.decided:
                review.advance()
                continue
            return res

    def shown(self, key: int | None) -> None:
        """The view now shows part ``key`` (its decision time starts now)."""
        if key != self._shown_key:
            self._shown_key = key
            self._shown_at = self._clock()

    def decision_of(self, key: int | None) -> InspectionRecord | None:
        """The standing decision of part ``key`` in this run (None when undecided)."""
        if key is None or self.review is None or key not in self.review.decided:
            return None
        uid = self.review.decided[key]
        return next((d.record for d in reversed(self._standing) if d.record.uid == uid), None)

    def outcome_of(self, key: int | None) -> InspectionRecord | None:
        return self._outcomes.get(key) if key is not None else None

    # ================================================================== decide and correct
    def decide(self, verdict: str, reason: str | None = None, note: str = "", advance: bool = True) -> Saved | None:
        """Record the operator's verdict on the part under review (None when there is nothing to decide)."""
        review = self.review
        user = self.user
        if review is None or user is None:
            return None
        key = review.current_key()
        res = review.current()
        if key is None or res is None or res.inspection is None or key in review.decided:
            return None
        if verdict == "FAIL" and not reason and self._reasons_required():
            raise ValueError("a FAIL needs a reason: pick one of the profile's reason codes")
        rec = build_record(station_id=self.station_id, user=user, res=res, kind="decision", profile=self.profile,
                           verdict=verdict, reason=reason, note=note, decision_s=self._clock() - self._shown_at)
        plan = plan_archive(self.archive_dir, rec.uid, rec.timestamp, rec.image_path, self.archive_images)
        rec.overlay_path = str(plan.overlay)
        rec.archive_path = str(plan.image) if plan.image else None
        saved = self._save(rec)
        review.mark_decided(key, rec.uid)
        self._outcomes.pop(key, None)
        self._standing.append(_Decided(key, self.run, rec, res))
        self._archive(plan, res)
        if advance or review.mode == "live":
            review.advance()
        return saved

    def correct(self, key: int | None = None, note: str = "") -> Saved | None:
        """Void the standing decision of part ``key`` (default: the part on screen if decided, else the
        shift's last decision) with a correction row; the part is back for review when it is still
        in the current run."""
        user = self.user
        if user is None or not self._standing:
            return None
        review = self.review
        target: _Decided | None = None
        if key is None and review is not None:
            cur = review.current_key()
            if cur is not None and cur in review.decided:
                key = cur
        if key is not None:
            target = next((d for d in reversed(self._standing) if d.key == key and d.run == self.run
                           and d.record.kind == "decision"), None)
        if target is None:
            target = next((d for d in reversed(self._standing) if d.record.kind == "decision"), None)
        if target is None:
            return None
        orig = target.record
        corr = build_record(station_id=self.station_id, user=user, res=None, kind="correction",
                            profile=self.profile, reason="correction",
                            note=note or f"correction of {orig.operator_verdict} decided by {orig.operator_id} "
                                         f"at {orig.timestamp}", corrects=orig)
        saved = self._save(corr)
        self._standing.remove(target)
        if review is not None and target.run == self.run:
            review.undecide(target.key)
            if review.mode == "live" and target.result is not None:
                review.results[target.key] = target.result
            review.seek_key(target.key)
            self._shown_key = None
        return saved

    def recorded_names(self, folder: str | Path, limit: int = 50_000) -> set[str]:
        """Names of files in ``folder`` that already have a standing row at this station (decision or
        part outcome): a hot folder restarted with "inspect files already there" skips them."""
        store = self.keeper.store
        if store is None:
            return set()
        root = Path(folder).expanduser().resolve()
        rows = store.query(RecordQuery(station=self.station_id, limit=limit, newest_first=True))
        return {Path(r.image_path).name for r in accounted(rows)
                if r.image_path and Path(r.image_path).expanduser().resolve().parent == root}

    def history(self) -> list[InspectionRecord]:
        """The standing decisions of this shift, oldest first (what :meth:`correct` can void)."""
        return [d.record for d in self._standing if d.record.kind == "decision"]

    # ================================================================== accounting
    def close_out(self, why: str) -> list[Saved]:
        """Give every open part of the run a SKIPPED or NOT DECIDED row."""
        review = self.review
        user = self.user
        if review is None:
            return []
        if review.mode == "live":
            key = review.live_key
            open_keys = [key] if key is not None and review.hold and key not in review.decided else []
        else:
            open_keys = [k for k in review.order if k in self._reached and k not in review.decided
                         and k not in self._outcomes]  # a result came back (kept or forgotten)
        if not open_keys:
            return []
        if user is None:
            log.warning("%d part(s) left without a record (%s): nobody was logged in", len(open_keys), why)
            return []
        out = []
        current = review.current_key()
        for key in open_keys:
            res = review.results.get(key) or StationResult(frame=self._reached[key], key=key, generation=0)
            if key in review.skipped:
                kind, reason = "skipped", f"skipped by the operator; {why}"
            else:
                where = "on screen" if key == current else "inspected, not shown"
                kind, reason = "not_decided", f"{where} when {why}"
            rec = build_record(station_id=self.station_id, user=user, res=res, kind=kind, profile=self.profile,
                               reason=reason)
            out.append(self._save(rec))
            self._outcomes[key] = rec
            self._standing.append(_Decided(key, self.run, rec, None))
        return out

    def _no_read(self, key: int, res: StationResult) -> None:
        if key in self._outcomes:
            return
        if self.user is None:
            self._waiting.append((key, res))
            return
        rec = build_record(station_id=self.station_id, user=self.user, res=res, kind="no_read",
                           profile=self.profile, reason=res.error or "no image")
        self._save(rec)
        self._outcomes[key] = rec
        self._standing.append(_Decided(key, self.run, rec, None))

    def _reasons_required(self) -> bool:
        return bool(self.reasons)  # a profile without reason codes records a FAIL without one

    # ================================================================== counters
    def summary(self) -> ShiftSummary:
        user = self.user
        s = ShiftSummary(user=user.name if user else "", role=user.role if user else "",
                         station_id=self.station_id, started=self.started)
        s.inspected = len(self._inspected)
        s.corrections = sum(r.kind == "correction" for r in self.records)
        recent: list[tuple[str, str]] = []
        for d in self._standing:
            r = d.record
            name = Path(r.image_path).name if r.image_path else (r.source_id or "")
            if r.kind == "decision":
                if r.operator_verdict == "PASS":
                    s.passed += 1
                else:
                    s.failed += 1
                    s.fail_reasons[r.reason or "—"] = s.fail_reasons.get(r.reason or "—", 0) + 1
                s.overrides += r.auto_verdict is not None and r.auto_verdict != r.operator_verdict
                recent.append((name, str(r.operator_verdict)))
            elif r.kind == "no_read":
                s.no_read += 1
                recent.append((name, "NO-READ"))
            elif r.kind == "skipped":
                s.skipped += 1
            elif r.kind == "not_decided":
                s.not_decided += 1
        s.recent = recent[-RECENT:]
        return s

    def run_counts(self) -> RunCounts:
        review = self.review
        if review is None:
            return RunCounts(0, 0, 0, 0, 0, 0, 0, 0)
        decided = [d for d in self._standing if d.run == self.run and d.record.kind == "decision"]
        reached = len(review.results) if review.mode != "live" else len(decided)
        no_read = sum(r.kind == "no_read" for r in self._outcomes.values())
        open_ = sum(1 for k in review.results if k not in review.decided and k not in self._outcomes)
        return RunCounts(
            total=review.total if review.mode == "folder" else reached, reached=reached, decided=len(decided),
            passed=sum(d.record.operator_verdict == "PASS" for d in decided),
            failed=sum(d.record.operator_verdict == "FAIL" for d in decided),
            no_read=no_read, skipped=len(review.skipped - set(review.decided)), open=open_,
        )

    # ================================================================== storage and archive
    def _save(self, rec: InspectionRecord) -> Saved:
        try:
            stored = self.keeper.save(rec)
        except RecordStoreError as exc:  # neither the journal nor the database took it
            log.error("record %s not saved: %s", rec.uid, exc)
            raise
        self.records.append(rec)
        self._publish(rec)
        return Saved(rec, stored, None if stored is not None else self.keeper.last_error)

    def _publish(self, rec: InspectionRecord) -> None:
        """Hand a saved record to ``on_saved``; a failing output never fails the decision."""
        if self.on_saved is None:
            return
        try:
            self.on_saved(rec)
        except Exception:  # noqa: BLE001 - the record is stored; the outputs are secondary
            log.exception("publishing record %s to the outputs failed", rec.uid)

    def _archive(self, plan: ArchivePlan, res: StationResult) -> None:
        ins = res.inspection
        image = res.frame.image
        if ins is None or image is None:
            return
        vmax = heat_vmax(self.threshold)
        image_path = ins.image_path

        def job() -> None:
            try:
                overlay = render_overlay(image, ins.detection.anomaly_map, ins.regions, res.gt_mask, vmax=vmax)
                write_archive(plan, overlay, image, image_path)
            except Exception:  # noqa: BLE001 - the decision is saved; the archive is secondary
                log.exception("archiving %s failed", plan.overlay)

        self._jobs.append(self._archiver.submit(job))
        while self._jobs and self._jobs[0].done():
            self._jobs.popleft()

    def flush_archive(self, timeout_s: float = 30.0) -> None:
        """Wait until every archive write queued so far has finished."""
        self._archiver.submit(lambda: None).result(timeout=timeout_s)

    def close(self) -> None:
        self._archiver.shutdown(wait=True)

    def _result_ok(self, key: int) -> bool:
        res = self.review.results.get(key) if self.review else None
        return res is not None and res.inspection is not None and not res.error


def describe_decision(rec: InspectionRecord) -> str:
    """``FAIL (scratch) by ann (operator) at 10:31:02`` — what the operator screen shows for a decided part."""
    when = rec.timestamp[11:19] if len(rec.timestamp) >= 19 else rec.timestamp
    what = rec.operator_verdict or rec.kind.upper()
    if rec.reason and rec.operator_verdict == "FAIL":
        what += f" ({rec.reason})"
    role = f" ({rec.role})" if getattr(rec, "role", None) else ""
    return f"{what} by {rec.operator_id}{role} at {when} UTC"


__all__ = ["OUTCOME_KINDS", "RunCounts", "Saved", "Session", "ShiftSummary", "describe_decision", "part_name"]
