"""MQTT output against a real Mosquitto broker on 127.0.0.1 (started here, stopped, restarted)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.servers import Mosquitto, mosquitto_binary, require

pytestmark = require(mosquitto_binary() is not None, "mosquitto (package 'mosquitto')")
mqtt = pytest.importorskip("paho.mqtt.client", reason="paho-mqtt missing: install the 'plant' extra")

from inspector.outputs import OutputsConfig, PartResult, build_dispatcher  # noqa: E402


class Listener:
    """A real subscriber (paho) collecting every message on the topic filter."""

    def __init__(self, port: int, topic: str) -> None:
        self.messages: list[tuple[str, dict, bool]] = []
        self.ready = threading.Event()
        self.client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2)

        def on_connect(client, userdata, flags, reason, properties) -> None:  # noqa: ANN001
            client.subscribe(topic, qos=1)

        def on_subscribe(*args: object) -> None:
            self.ready.set()

        def on_message(client, userdata, msg) -> None:  # noqa: ANN001
            self.messages.append((msg.topic, json.loads(msg.payload), bool(msg.retain)))

        self.client.on_connect, self.client.on_subscribe, self.client.on_message = on_connect, on_subscribe, on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.ready.wait(10)

    def uids(self) -> list[str]:
        return [m[1]["uid"] for m in self.messages if m[0].endswith("/result")]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    b = Mosquitto(tmp_path / "broker").start()
    yield b
    b.stop()


def _result(i: int) -> PartResult:
    return PartResult(uid=f"u{i:03d}", station_id="st7", timestamp="2026-01-01T00:00:00.000000Z", kind="decision",
                      result="NG" if i % 4 == 0 else "OK", profile_name="demo_washer", profile_version=1, image_score=i / 100)


def _wait(cond, timeout_s: float = 15.0) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return False


def test_results_qos1_in_order_and_retained_status(tmp_path: Path, broker: Mosquitto) -> None:
    listener = Listener(broker.port, "plant/st7/#")
    cfg = OutputsConfig.parse({"queue_dir": str(tmp_path / "q"),
                               "mqtt": {"port": broker.port, "topic_prefix": "plant"}})
    disp = build_dispatcher(cfg, "st7")
    try:
        for i in range(20):
            disp.publish(_result(i))
        assert disp.drain(10.0)
        assert _wait(lambda: len(listener.uids()) == 20)
        assert listener.uids() == [f"u{i:03d}" for i in range(20)]
        first = next(m for m in listener.messages if m[0] == "plant/st7/result")
        assert first[1] == _result(0).to_json()
        late = Listener(broker.port, "plant/st7/status")  # a subscriber joining later gets the retained status
        assert _wait(lambda: bool(late.messages))
        topic, status, retained = late.messages[0]
        assert (topic, status["state"], status["station_id"], retained) == ("plant/st7/status", "online", "st7", True)
        late.close()
    finally:
        disp.close()
        listener.close()
    check = Listener(broker.port, "plant/st7/status")  # a clean stop leaves "offline" retained
    assert _wait(lambda: bool(check.messages)) and check.messages[-1][1]["state"] == "offline"
    check.close()


def test_broker_down_backlog_bounded_visible_and_drained(tmp_path: Path, broker: Mosquitto) -> None:
    cfg = OutputsConfig.parse({"queue_dir": str(tmp_path / "q"), "retry_initial_s": 0.05, "retry_max_s": 0.3,
                               "mqtt": {"port": broker.port, "ack_timeout_s": 0.5, "queue_max": 25}})
    disp = build_dispatcher(cfg, "st7")
    try:
        assert _wait(lambda: disp.status()[0].connected)
        broker.stop()
        assert _wait(lambda: not disp.status()[0].connected)
        t0 = time.perf_counter()
        for i in range(30):
            disp.publish(_result(i))
        assert time.perf_counter() - t0 < 0.5  # the operator is never held up by a dead broker
        time.sleep(0.2)
        st = disp.status()[0]
        assert (st.backlog, st.dropped) == (25, 5)  # bounded: the 5 oldest were dropped, and that is counted
        broker.start()
        listener = Listener(broker.port, "inspector/st7/result")
        assert disp.drain(20.0)
        assert _wait(lambda: len(listener.uids()) >= 25)
        assert listener.uids() == [f"u{i:03d}" for i in range(5, 30)]
        listener.close()
    finally:
        disp.close()
