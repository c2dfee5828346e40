"""MQTT output (paho-mqtt, MQTT 3.1.1): one JSON message per part at QoS 1, a retained station status.

Topics (``prefix`` defaults to ``inspector``):

- ``<prefix>/<station>/result`` — one message per part (:class:`~inspector.outputs.result.PartResult`
  as JSON), QoS 1, not retained; ``uid`` identifies the part (QoS 1 is at-least-once: a
  subscriber drops a repeated uid).
- ``<prefix>/<station>/status`` — retained ``{"station_id", "state": "online"|"offline", "time"}``;
  ``offline`` is the broker-sent last will when the station vanishes.

The client connects and reconnects by itself in paho's network thread. :meth:`MqttSink.send`
publishes only while connected and returns when the broker's PUBACK arrives. A message that
was sent but not acknowledged when the connection dropped is re-sent by paho after the
reconnect (same packet id, DUP flag); ``send`` then waits for *that* message instead of
publishing the part again.
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt

from inspector.outputs.dispatcher import OutputError

log = logging.getLogger(__name__)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class MqttSink:
    name = "mqtt"

    def __init__(self, station_id: str, host: str = "127.0.0.1", port: int = 1883, topic_prefix: str = "inspector",
                 qos: int = 1, keepalive_s: int = 30, username: str | None = None, password: str | None = None,
                 ack_timeout_s: float = 5.0) -> None:
        if not station_id or any(c in station_id for c in "+#/"):
            raise ValueError(f"station id {station_id!r} cannot be used in an MQTT topic (no '+', '#' or '/')")
        self.station_id = station_id
        self.host, self.port = host, int(port)
        self.qos = int(qos)
        self.ack_timeout_s = ack_timeout_s
        base = f"{topic_prefix.rstrip('/')}/{station_id}"
        self.result_topic = f"{base}/result"
        self.status_topic = f"{base}/status"
        self._inflight: dict[str, mqtt.MQTTMessageInfo] = {}
        self._connected = threading.Event()
        self._last_error: str | None = None
        self._client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
                                   client_id=f"inspector-{station_id}", protocol=mqtt.MQTTv311)
        if username:
            self._client.username_pw_set(username, password)
        self._client.will_set(self.status_topic, self._status("offline"), qos=1, retain=True)
        self._client.reconnect_delay_set(min_delay=1, max_delay=10)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.connect_async(self.host, self.port, keepalive=keepalive_s)
        self._client.loop_start()

    def _status(self, state: str) -> str:
        return json.dumps({"station_id": self.station_id, "state": state, "time": _now()}, sort_keys=True)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if getattr(reason, "is_failure", False):
            self._last_error = f"broker {self.host}:{self.port} refused the connection ({reason})"
            log.warning("mqtt: %s", self._last_error)
            return
        client.publish(self.status_topic, self._status("online"), qos=1, retain=True)
        self._connected.set()
        log.info("mqtt: connected to %s:%d", self.host, self.port)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self._connected.clear()
        log.info("mqtt: disconnected from %s:%d (%s)", self.host, self.port, reason)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def send(self, key: str, payload: dict[str, Any]) -> None:
        info = self._inflight.get(key)
        if info is None:
            if not self._connected.is_set():
                raise OutputError(self._last_error or f"broker {self.host}:{self.port} not connected")
            info = self._client.publish(self.result_topic, json.dumps(payload, sort_keys=True), qos=self.qos)
            if info.rc != mqtt.MQTT_ERR_SUCCESS and info.rc != mqtt.MQTT_ERR_NO_CONN:
                raise OutputError(f"broker {self.host}:{self.port}: publish failed ({mqtt.error_string(info.rc)})")
            self._inflight[key] = info  # queued or sent: paho delivers it, we only wait from now on
        if self.qos == 0:
            self._inflight.pop(key, None)
            return
        try:
            info.wait_for_publish(self.ack_timeout_s)
        except (RuntimeError, ValueError):
            pass  # not sent yet (connection dropped): paho re-sends it after reconnecting
        if not info.is_published():
            raise OutputError(f"broker {self.host}:{self.port}: no PUBACK for part {key} yet")
        self._inflight.pop(key, None)

    def close(self) -> None:
        try:
            if self._connected.is_set():
                self._client.publish(self.status_topic, self._status("offline"), qos=1, retain=True).wait_for_publish(2.0)
        except (RuntimeError, ValueError):
            pass
        self._client.disconnect()
        self._client.loop_stop()
