"""What the line receives for one part: a small JSON-ready message built from a record."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

RESULTS = ("OK", "NG", "NO-READ")
_BY_VERDICT = {"PASS": "OK", "FAIL": "NG"}


@dataclass(frozen=True)
class PartResult:
    """One part's outcome as sent to MQTT / webhook (``uid`` is the record uid: receivers dedup by it)."""

    uid: str
    station_id: str
    timestamp: str
    kind: str
    result: str  # OK | NG | NO-READ, "" for a correction of an earlier part
    profile_name: str
    profile_version: int
    auto_verdict: str | None = None
    operator_verdict: str | None = None
    image_score: float | None = None
    reason: str | None = None
    corrects_uid: str | None = None
    source_id: str | None = None
    image_sha256: str | None = None

    def __post_init__(self) -> None:
        if self.result not in RESULTS and self.result != "":
            raise ValueError(f"result must be one of {RESULTS} or '', got {self.result!r}")

    @classmethod
    def from_record(cls, record: Any) -> PartResult:
        """From an :class:`inspector.records.InspectionRecord` (any kind)."""
        kind = str(record.kind)
        if kind == "no_read":
            result = "NO-READ"
        elif kind == "decision":
            result = _BY_VERDICT[record.operator_verdict]
        else:  # correction, skipped, not_decided: no OK/NG for the line
            result = ""
        return cls(
            uid=record.uid, station_id=record.station_id, timestamp=record.timestamp, kind=kind,
            result=result, profile_name=record.profile_name, profile_version=int(record.profile_version),
            auto_verdict=record.auto_verdict, operator_verdict=record.operator_verdict,
            image_score=record.image_score, reason=record.reason, corrects_uid=record.corrects_uid,
            source_id=record.source_id, image_sha256=record.image_sha256,
        )

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
