"""The ``outputs:`` section of the station's settings file, validated, and the dispatcher it builds.

.. code-block:: yaml

    outputs:
      queue_dir: /var/lib/inspector/outputs   # default: <INSPECTOR_HOME>/outputs
      retry_initial_s: 0.5                    # backoff of a lane whose output is down ...
      retry_max_s: 30                         # ... doubling up to this
      mqtt: {host: 127.0.0.1, port: 1883, topic_prefix: inspector, queue_max: 10000}
      webhook: {url: "http://mes.local/parts", timeout_s: 5, queue_max: 10000}
      opcua: {endpoint: "opc.tcp://0.0.0.0:4840/inspector/", recipes: [demo_fabric, demo_washer],
              grab_timeout_s: 5, inspect_timeout_s: 120}   # recipes: profile names of the station's list
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from inspector.outputs.dispatcher import Dispatcher, Lane
from inspector.outputs.queues import DiskQueue
from inspector.settings import config_path, inspector_home


class OutputConfigError(ValueError):
    """The ``outputs:`` settings are invalid; the message names the file and field."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MqttOutput(_Section):
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    topic_prefix: str = "inspector"
    qos: Literal[0, 1, 2] = 1
    keepalive_s: int = Field(30, ge=5)
    username: str | None = None
    password: str | None = None
    ack_timeout_s: float = Field(5.0, gt=0)
    queue_max: int = Field(10_000, ge=1)


class WebhookOutput(_Section):
    url: str = Field(pattern=r"^https?://")
    timeout_s: float = Field(5.0, gt=0)
    headers: dict[str, str] = Field(default_factory=dict)
    queue_max: int = Field(10_000, ge=1)


class OpcUaOutput(_Section):
    endpoint: str = Field("opc.tcp://127.0.0.1:4840/inspector/", pattern=r"^opc\.tcp://")
    recipes: list[str] = Field(default_factory=list)  # RecipeIndex N selects recipes[N] (a profile name)
    poll_s: float = Field(0.01, gt=0, le=1.0)
    grab_timeout_s: float = Field(5.0, gt=0)  # a Trigger waits this long for a frame, then answers NO-READ
    inspect_timeout_s: float = Field(120.0, gt=0)  # ... and this long for the inspection (a recipe switch loads)


class OutputsConfig(_Section):
    queue_dir: Path | None = None
    retry_initial_s: float = Field(0.5, gt=0)
    retry_max_s: float = Field(30.0, gt=0)
    fsync: bool = False  # True: a queued message also survives a power cut (one flush per part)
    mqtt: MqttOutput | None = None
    webhook: WebhookOutput | None = None
    opcua: OpcUaOutput | None = None

    @classmethod
    def parse(cls, data: dict[str, Any] | None, source: str | Path | None = None) -> OutputsConfig:
        try:
            return cls(**(data or {}))
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in ("outputs", *err["loc"]))
            raise OutputConfigError(f"{source or config_path()}: {where}: {err['msg']}") from exc
        except TypeError as exc:
            raise OutputConfigError(f"{source or config_path()}: outputs: expected a mapping ({exc})") from exc

    def queue_root(self) -> Path:
        return self.queue_dir if self.queue_dir is not None else inspector_home() / "outputs"


def build_dispatcher(config: OutputsConfig, station_id: str) -> Dispatcher:
    """One lane per configured MQTT / webhook output (engines imported only when configured)."""
    lanes: list[Lane] = []
    root = config.queue_root()
    retry = {"retry_initial_s": config.retry_initial_s, "retry_max_s": max(config.retry_max_s, config.retry_initial_s)}
    if config.mqtt is not None:
        from inspector.outputs.mqtt import MqttSink

        m = config.mqtt
        sink = MqttSink(station_id, m.host, m.port, m.topic_prefix, m.qos, m.keepalive_s, m.username, m.password,
                        m.ack_timeout_s)
        lanes.append(Lane(sink, DiskQueue(root / "mqtt", m.queue_max, config.fsync), **retry))
    if config.webhook is not None:
        from inspector.outputs.webhook import WebhookSink

        w = config.webhook
        lanes.append(Lane(WebhookSink(w.url, w.timeout_s, w.headers), DiskQueue(root / "webhook", w.queue_max, config.fsync),
                          **retry))
    return Dispatcher(lanes)


def resolve_recipes(config: OpcUaOutput, profiles_dir: Path, source: str | Path | None = None) -> dict[str, Path]:
    """``outputs.opcua.recipes`` as {name: profile folder}, in RecipeIndex order.

    An entry is the name of a profile folder in ``profiles_dir`` (what the station's profile list
    shows) or the path of a profile folder. Raises :class:`OutputConfigError` naming the entry."""
    from inspector.profile import PROFILE_FILE, list_profiles

    where = source or config_path()
    if not config.recipes:
        raise OutputConfigError(f"{where}: outputs.opcua.recipes: list the profile names RecipeIndex 0, 1, ... select "
                                "(at least one)")
    known = {p.name: p for p in list_profiles(profiles_dir)}
    out: dict[str, Path] = {}
    for i, entry in enumerate(config.recipes):
        path = Path(entry).expanduser()
        folder = known.get(entry) or (path if (path / PROFILE_FILE).is_file() else None)
        if folder is None:
            listed = ", ".join(sorted(known)) or "none"
            raise OutputConfigError(f"{where}: outputs.opcua.recipes[{i}]: no profile {entry!r} in {profiles_dir} "
                                    f"(profiles there: {listed}); name a profile folder there or give its path")
        if folder.name in out:
            raise OutputConfigError(f"{where}: outputs.opcua.recipes[{i}]: profile {folder.name!r} is listed twice")
        out[folder.name] = folder
    return out


def build_opcua(config: OutputsConfig, handler: Any) -> Any:
    """The OPC UA handshake server for ``outputs.opcua`` (not started), or None when not configured.

    ``handler`` is a :data:`~inspector.outputs.opcua.TriggerHandler`, usually an
    :class:`~inspector.outputs.trigger.InspectOnTrigger` over the station's camera source."""
    if config.opcua is None:
        return None
    if not config.opcua.recipes:
        raise OutputConfigError(f"{config_path()}: outputs.opcua.recipes: list the profile names RecipeIndex "
                                "0, 1, ... select (at least one)")
    from inspector.outputs.opcua import OpcUaStation

    o = config.opcua
    return OpcUaStation(handler, o.recipes, endpoint=o.endpoint, poll_s=o.poll_s)
