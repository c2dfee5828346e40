"""The shift as a Qt-free model: the part under review, decide / correct, every part accounted
for (decision, NO-READ, SKIPPED, NOT DECIDED), counters, archive, reference matching, reports.

The operator window (:mod:`inspector.ui.main_window`) is a view of a :class:`Session`.
"""

from inspector.station.record import ProfileStamp, build_record
from inspector.station.result import StationResult, part_name, part_path
from inspector.station.review import Review
from inspector.station.session import RunCounts, Saved, Session, ShiftSummary, describe_decision

__all__ = ["ProfileStamp", "Review", "RunCounts", "Saved", "Session", "ShiftSummary", "StationResult",
           "build_record", "describe_decision", "part_name", "part_path"]
