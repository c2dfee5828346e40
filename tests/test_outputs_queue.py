"""Bounded on-disk output queue and the lane/dispatcher over it (a real in-process sink, no network)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from inspector.outputs import DiskQueue, Dispatcher, Lane, OutputError, OutputRejected, OutputsConfig, PartResult
from inspector.outputs.config import OutputConfigError
from inspector.records import InspectionRecord


def _rec(i: int, verdict: str = "PASS") -> InspectionRecord:
    return InspectionRecord(station_id="st1", operator_id="op", profile_name="demo_fabric", profile_version=3,
                            profile_hash="h", pipeline="variation", auto_verdict="PASS", operator_verdict=verdict,
                            image_score=0.1 * i, uid=f"uid{i:04d}")


def test_queue_is_fifo_persistent_and_bounded(tmp_path: Path) -> None:
    q = DiskQueue(tmp_path / "q", max_items=3)
    for i in range(5):
        q.put(f"k{i}", {"i": i})
    assert len(q) == 3 and q.dropped == 2
    head = q.peek()
    assert head is not None and head.key == "k2" and head.payload == {"i": 2}  # the two oldest went
    q.ack(head)
    again = DiskQueue(tmp_path / "q", max_items=3)  # a restart sees what was left, in order
    keys = []
    while (item := again.peek()) is not None:
        keys.append(item.key)
        again.ack(item)
    assert keys == ["k3", "k4"]
    again.put("k5", {"i": 5})  # numbering continues after the last file, so order survives restarts
    assert again.peek().key == "k5"


def test_unreadable_entry_is_set_aside_not_lost(tmp_path: Path) -> None:
    q = DiskQueue(tmp_path / "q")
    bad = q.put("k0", {"i": 0})
    q.put("k1", {"i": 1})
    (tmp_path / "q" / bad.name).write_text("{not json", encoding="utf-8")
    assert q.peek().key == "k1"
    assert (tmp_path / "q" / "rejected" / bad.name).read_text() == "{not json"


class FlakySink:
    """A real in-process receiver that is down until ``up`` is set; can refuse given keys."""

    name = "flaky"

    def __init__(self) -> None:
        self.up = threading.Event()
        self.got: list[str] = []
        self.refuse: set[str] = set()
        self.attempts = 0

    @property
    def connected(self) -> bool:
        return self.up.is_set()

    def send(self, key: str, payload: dict[str, Any]) -> None:
        self.attempts += 1
        if not self.up.is_set():
            raise OutputError("receiver down")
        if key in self.refuse:
            raise OutputRejected(f"refused {key}")
        self.got.append(payload["uid"])

    def close(self) -> None:
        pass


def test_dispatcher_never_blocks_and_drains_in_order(tmp_path: Path) -> None:
    sink = FlakySink()
    lane = Lane(sink, DiskQueue(tmp_path / "lane"), retry_initial_s=0.02, retry_max_s=0.05)
    disp = Dispatcher([lane])
    t0 = time.perf_counter()
    for i in range(50):
        disp.publish_record(_rec(i))
    elapsed = time.perf_counter() - t0
    assert elapsed < 1.0  # 50 parts queued while the output is down: no waiting on it
    time.sleep(0.1)
    assert disp.backlog() == {"flaky": 50} and disp.backlog_total == 50
    st = disp.status()[0]
    assert st.connected is False and st.last_error == "receiver down" and st.delivered == 0
    assert sink.attempts >= 2  # it kept retrying
    sink.refuse.add("uid0007")
    sink.up.set()
    assert disp.drain(10.0)
    assert sink.got == [f"uid{i:04d}" for i in range(50) if i != 7]
    st = disp.status()[0]
    assert (st.delivered, st.rejected, st.backlog, st.last_error) == (49, 1, 0, None)  # cleared by the next success
    assert len(list((tmp_path / "lane" / "rejected").iterdir())) == 1
    disp.close()


def test_backoff_doubles_up_to_the_cap(tmp_path: Path) -> None:
    sink = FlakySink()
    times: list[float] = []
    real_send = sink.send

    def timed(key: str, payload: dict[str, Any]) -> None:
        times.append(time.monotonic())
        real_send(key, payload)

    sink.send = timed  # type: ignore[method-assign]
    lane = Lane(sink, DiskQueue(tmp_path / "lane"), retry_initial_s=0.05, retry_max_s=0.2)
    lane.put("k", _rec(1).__dict__ | {"uid": "k"})
    time.sleep(1.0)
    lane.close()
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert len(gaps) >= 4
    assert gaps[0] == pytest.approx(0.05, abs=0.04) and gaps[1] == pytest.approx(0.1, abs=0.05)
    assert all(g == pytest.approx(0.2, abs=0.08) for g in gaps[3:])  # capped


def test_part_result_maps_verdicts_and_no_read() -> None:
    assert PartResult.from_record(_rec(1, "PASS")).result == "OK"
    assert PartResult.from_record(_rec(2, "FAIL")).result == "NG"
    nr = _rec(3)
    nr.kind, nr.operator_verdict, nr.reason = "no_read", None, "camera timeout"
    assert PartResult.from_record(nr).result == "NO-READ"
    with pytest.raises(ValueError, match="result must be one of"):
        PartResult(uid="u", station_id="s", timestamp="t", kind="decision", result="MAYBE", profile_name="p",
                   profile_version=1)


def test_outputs_config_errors_name_the_field(tmp_path: Path) -> None:
    cfg = OutputsConfig.parse({"mqtt": {"port": 1884}, "webhook": {"url": "http://127.0.0.1:9/x"}})
    assert cfg.mqtt.port == 1884 and cfg.mqtt.qos == 1 and cfg.webhook.timeout_s == 5.0 and cfg.opcua is None
    with pytest.raises(OutputConfigError, match=r"settings.yaml: outputs\.mqtt\.port: "):
        OutputsConfig.parse({"mqtt": {"port": 0}}, tmp_path / "settings.yaml")
    with pytest.raises(OutputConfigError, match=r"outputs\.webhook\.url: "):
        OutputsConfig.parse({"webhook": {"url": "ftp://x"}}, "settings.yaml")
    with pytest.raises(OutputConfigError, match=r"outputs\.mqtt\.hots: Extra inputs"):
        OutputsConfig.parse({"mqtt": {"hots": "x"}}, "settings.yaml")


def test_outputs_section_of_the_settings_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from inspector.settings import Settings

    cfg_file = tmp_path / "settings.yaml"
    cfg_file.write_text("outputs:\n  queue_dir: /var/tmp/q\n  mqtt: {host: broker.local, port: 8883}\n"
                        "  opcua: {recipes: [demo_fabric, demo_pcb]}\n", encoding="utf-8")
    s = Settings.load(cfg_file)
    cfg = OutputsConfig.parse(s.outputs, cfg_file)
    assert (cfg.mqtt.host, cfg.mqtt.port, cfg.queue_root()) == ("broker.local", 8883, Path("/var/tmp/q"))
    assert cfg.opcua.recipes == ["demo_fabric", "demo_pcb"] and cfg.webhook is None
    assert Settings.load(tmp_path / "none.yaml").outputs == {}
    assert OutputsConfig.parse({}).queue_root().name == "outputs"
