"""Webhook output against a real ``http.server`` on 127.0.0.1 (down, 503, 400, back up)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from inspector.outputs import OutputsConfig, PartResult, build_dispatcher
from inspector.outputs.dispatcher import OutputError, OutputRejected
from inspector.outputs.webhook import WebhookSink
from tests.support.servers import free_port


class Receiver:
    """A real HTTP server; ``status`` is what it answers next (a list is consumed one per request)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.bodies: list[dict] = []
        self.keys: list[str] = []
        self.status: list[int] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server API)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                code = outer.status.pop(0) if outer.status else 200
                if code == 200:
                    outer.bodies.append(json.loads(body))
                    outer.keys.append(self.headers["Idempotency-Key"])
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def receiver(port: int) -> Iterator[Receiver]:
    r = Receiver(port)
    yield r
    r.close()


def _result(i: int) -> PartResult:
    return PartResult(uid=f"u{i:03d}", station_id="st1", timestamp=f"2026-01-01T00:00:{i:02d}.000000Z", kind="decision",
                      result="OK" if i % 3 else "NG", profile_name="demo_pcb", profile_version=2, image_score=i / 10)


def test_sink_posts_json_with_idempotency_key(receiver: Receiver, port: int) -> None:
    sink = WebhookSink(f"http://127.0.0.1:{port}/parts", headers={"X-Line": "L4"})
    sink.send("u001", _result(1).to_json())
    assert receiver.bodies == [_result(1).to_json()] and receiver.keys == ["u001"]
    receiver.status = [503]
    with pytest.raises(OutputError, match="HTTP 503") as exc:
        sink.send("u002", _result(2).to_json())
    assert not isinstance(exc.value, OutputRejected)  # 5xx is retried
    receiver.status = [400]
    with pytest.raises(OutputRejected, match="HTTP 400"):
        sink.send("u003", _result(3).to_json())


def test_down_receiver_does_not_block_and_backlog_drains_when_it_returns(tmp_path: Path, port: int) -> None:
    cfg = OutputsConfig.parse({"queue_dir": str(tmp_path / "q"), "retry_initial_s": 0.05, "retry_max_s": 0.2,
                               "webhook": {"url": f"http://127.0.0.1:{port}/parts", "timeout_s": 1, "queue_max": 100}})
    disp = build_dispatcher(cfg, "st1")
    t0 = time.perf_counter()
    for i in range(30):
        disp.publish(_result(i))
    assert time.perf_counter() - t0 < 0.5  # nothing listens on the port: publish still returns at once
    time.sleep(0.3)
    assert disp.backlog() == {"webhook": 30}
    assert "Connection refused" in (disp.status()[0].last_error or "")
    receiver = Receiver(port)
    receiver.status = [503, 503]  # comes back sick first: retried, not skipped
    try:
        assert disp.drain(10.0)
        assert [b["uid"] for b in receiver.bodies] == [f"u{i:03d}" for i in range(30)]  # all, in order, once
        assert receiver.keys == [f"u{i:03d}" for i in range(30)]
        assert disp.status()[0].delivered == 30 and disp.status()[0].connected
    finally:
        disp.close()
        receiver.close()


def test_queued_parts_survive_a_station_restart(tmp_path: Path, port: int) -> None:
    cfg = OutputsConfig.parse({"queue_dir": str(tmp_path / "q"), "retry_initial_s": 0.05,
                               "webhook": {"url": f"http://127.0.0.1:{port}/parts", "timeout_s": 1}})
    first = build_dispatcher(cfg, "st1")
    for i in range(5):
        first.publish(_result(i))
    first.close()  # the station stops with 5 parts not delivered
    receiver = Receiver(port)
    second = build_dispatcher(cfg, "st1")
    try:
        assert second.drain(10.0)
        assert [b["uid"] for b in receiver.bodies] == [f"u{i:03d}" for i in range(5)]
    finally:
        second.close()
        receiver.close()
