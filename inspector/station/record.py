"""The one place where the station builds an :class:`~inspector.records.InspectionRecord`.

Every row the shift writes (decision, correction, NO-READ, SKIPPED, NOT DECIDED) comes from
:func:`build_record`, so the part's identity (path, hash, profile, pipeline, models) and who
stood at the station (user and role) are filled the same way for every kind.
"""

from __future__ import annotations

from dataclasses import dataclass

from inspector.records import InspectionRecord, utc_now_iso
from inspector.station.result import StationResult, part_path
from inspector.users import User


@dataclass(frozen=True)
class ProfileStamp:
    """The profile a part was (or would have been) inspected with, for rows without an inspection."""

    name: str = ""
    version: int = 0
    hash: str = ""
    pipeline: str = ""


def build_record(
    *,
    station_id: str,
    user: User,
    res: StationResult | None,
    kind: str,
    profile: ProfileStamp,
    verdict: str | None = None,
    reason: str | None = None,
    note: str = "",
    decision_s: float = 0.0,
    corrects: InspectionRecord | None = None,
    timestamp: str | None = None,
) -> InspectionRecord:
    """A record of ``kind`` for the part ``res`` (``corrects``: the row a correction voids)."""
    ins = res.inspection if res is not None else None
    frame = res.frame if res is not None else None
    if corrects is not None and res is None:
        image_path, image_sha, source_id = corrects.image_path, corrects.image_sha256, corrects.source_id
    else:
        image_path = ins.image_path if ins is not None and ins.image_path else (part_path(frame) if frame else None)
        image_sha = ins.image_sha256 if ins is not None else None
        source_id = frame.source_id if frame is not None else None
    if ins is not None:
        stamp = (ins.profile_name, ins.profile_version, ins.profile_hash, ins.pipeline)
        model_keys, score, auto, duration = list(ins.model_keys), ins.image_score, ins.verdict, ins.seconds
    elif corrects is not None:
        stamp = (corrects.profile_name, corrects.profile_version, corrects.profile_hash, corrects.pipeline)
        model_keys, score, auto, duration = list(corrects.model_keys), corrects.image_score, corrects.auto_verdict, 0.0
    else:
        stamp = (profile.name, profile.version, profile.hash, profile.pipeline)
        model_keys, score, auto, duration = [], None, None, 0.0
    return InspectionRecord(
        station_id=station_id, operator_id=user.name, role=user.role,
        profile_name=stamp[0], profile_version=stamp[1], profile_hash=stamp[2], pipeline=stamp[3],
        model_keys=model_keys, image_path=image_path, image_sha256=image_sha, image_score=score,
        auto_verdict=auto, operator_verdict=verdict, reason=reason, note=note, duration_s=duration,
        decision_s=decision_s, kind=kind, corrects_uid=corrects.uid if corrects is not None else None,
        source_id=source_id, timestamp=timestamp or utc_now_iso(),
        # the cached detector state (memory bank) behind the verdict (issue 16 item 15)
        detector_state_sha256=(ins.detector_state_sha256 if ins is not None
                               else corrects.detector_state_sha256 if corrects is not None else None),
    )
