"""The station hands every saved record to the plant outputs (``Session(on_saved=...)``), without Qt.

Real inspections (the weight-free plate profile of ``test_station_session``), a real SQLite store and,
for the end-to-end case, a real dispatcher posting to a real ``http.server`` on 127.0.0.1.
"""

from __future__ import annotations

import logging
from pathlib import Path

from inspector.outputs import OutputsConfig, build_dispatcher
from inspector.records import InspectionRecord, RecordKeeper, SqliteRecordStore
from inspector.station import ProfileStamp, Session
from tests.support.servers import free_port
from tests.test_outputs_webhook import Receiver
from tests.test_station_session import ANN, feed_folder, inspector, line  # noqa: F401 - fixtures


def _session(tmp_path: Path, inspector, on_saved) -> Session:  # noqa: F811 - the fixture's value
    s = Session(RecordKeeper(SqliteRecordStore(tmp_path / "records.sqlite")), "st-1", tmp_path / "archive",
                archive_images=False, on_saved=on_saved)
    p = inspector.profile
    s.set_profile(ProfileStamp(p.name, p.version, p.content_hash(), p.pipeline), p.decision.image_threshold, 1,
                  list(p.reason_codes))
    return s


def test_every_saved_record_reaches_the_hook_in_order(tmp_path, inspector, line) -> None:  # noqa: F811
    seen: list[InspectionRecord] = []
    s = _session(tmp_path, inspector, seen.append)
    try:
        s.login(ANN)
        feed_folder(s, inspector, line)  # 3_corrupt.png is written at once as no_read
        s.settle(auto_skip=True)
        s.decide("PASS")
        s.decide("FAIL", "spot")
        s.correct()  # voids the FAIL: a correction row
        s.stop("the source stopped")
        stored = s.keeper.store.query()
    finally:
        s.close()
    assert [r.uid for r in seen] == [r.uid for r in s.records]  # each save, once, in save order
    assert sorted(r.uid for r in seen) == sorted(r.uid for r in stored)
    kinds = [r.kind for r in seen]
    assert kinds[:4] == ["no_read", "decision", "decision", "correction"]
    assert set(kinds[4:]) <= {"not_decided", "skipped"} and len(kinds) == len(stored)


def test_a_failing_hook_does_not_lose_or_fail_the_decision(tmp_path, inspector, line, caplog) -> None:  # noqa: F811
    calls: list[str] = []

    def broken(rec: InspectionRecord) -> None:
        calls.append(rec.uid)
        raise OSError("output disk full")

    s = _session(tmp_path, inspector, broken)
    try:
        s.login(ANN)
        feed_folder(s, inspector, line)
        s.settle(auto_skip=True)
        seen: list[logging.LogRecord] = []
        handler = logging.Handler(logging.ERROR)
        handler.emit = seen.append  # type: ignore[method-assign]
        logger = logging.getLogger("inspector.station.session")
        logger.addHandler(handler)  # on the logger itself: other tests may turn propagation off
        old_level, logger.disabled = logger.level, False
        logger.setLevel(logging.ERROR)
        try:
            saved = s.decide("PASS")
        finally:
            logger.removeHandler(handler)
            logger.setLevel(old_level)
        assert saved is not None and saved.ok and saved.record.operator_verdict == "PASS"
        assert any(r.exc_info and "output disk full" in str(r.exc_info[1]) and saved.record.uid in r.getMessage()
                   for r in seen)
        assert saved.record.uid in calls  # it was handed over, and its failure only logged
        assert [r.uid for r in s.keeper.store.query() if r.kind == "decision"] == [saved.record.uid]
        assert s.summary().passed == 1
    finally:
        s.close()


def test_decisions_reach_a_real_webhook_as_ok_ng_no_read(tmp_path, inspector, line) -> None:  # noqa: F811
    port = free_port()
    receiver = Receiver(port)
    cfg = OutputsConfig.parse({"queue_dir": str(tmp_path / "q"), "retry_initial_s": 0.05, "retry_max_s": 0.2,
                               "webhook": {"url": f"http://127.0.0.1:{port}/parts", "timeout_s": 2}})
    disp = build_dispatcher(cfg, "st-1")
    s = _session(tmp_path, inspector, disp.publish_record)
    try:
        s.login(ANN)
        feed_folder(s, inspector, line)
        s.settle(auto_skip=True)
        ok = s.decide("PASS")
        ng = s.decide("FAIL", "spot")
        assert disp.drain(10.0)
        no_read = next(r for r in s.records if r.kind == "no_read")
        got = {b["uid"]: b for b in receiver.bodies}
        assert [b["uid"] for b in receiver.bodies] == [no_read.uid, ok.record.uid, ng.record.uid]
        assert receiver.keys == [no_read.uid, ok.record.uid, ng.record.uid]  # Idempotency-Key = record uid
        assert (got[no_read.uid]["result"], got[ok.record.uid]["result"], got[ng.record.uid]["result"]) == \
            ("NO-READ", "OK", "NG")
        assert got[ng.record.uid]["reason"] == "spot" and got[ok.record.uid]["station_id"] == "st-1"
    finally:
        s.close()
        disp.close()
        receiver.close()

