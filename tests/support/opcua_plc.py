"""The PLC side of the OPC UA handshake, for tests: the station's nodes and a polling wait."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from inspector.outputs.opcua import NAMESPACE

NODES = ("Trigger", "Ack", "RecipeIndex", "Ready", "Busy", "Result", "Score", "Recipe", "Error", "PartCount")


async def station_nodes(client: Any) -> dict[str, Any]:
    """The handshake variables of the station object, by name (an open asyncua ``Client``)."""
    idx = await client.get_namespace_index(NAMESPACE)
    station = await client.nodes.objects.get_child([f"{idx}:Station"])
    return {name: await station.get_child([f"{idx}:{name}"]) for name in NODES}


async def until(nodes: dict[str, Any], name: str, value: object, timeout_s: float) -> None:
    """Poll ``nodes[name]`` every 5 ms until it reads ``value``; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while await nodes[name].read_value() != value:
        assert time.monotonic() < deadline, f"{name} never became {value}"
        await asyncio.sleep(0.005)
