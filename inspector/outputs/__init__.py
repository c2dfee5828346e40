"""Results to the line: MQTT, HTTP webhook and an OPC UA handshake server (Qt-free).

Every part result goes to a :class:`~inspector.outputs.dispatcher.Dispatcher`, which hands it
to one *lane* per configured output. A lane owns a bounded queue (on disk, so a restart or a
``kill -9`` loses nothing queued) and a thread that sends the queue head, in order, retrying
with capped exponential backoff while the output is down. :meth:`Dispatcher.publish` only
appends to those queues: an output that is down never blocks the operator. The backlog of
every lane is visible (:meth:`Dispatcher.backlog`) and bounded (``queue_max``; overflow drops
the oldest entries, counts them in ``dropped`` and logs it) and drains when the output returns.

The protocol engines are maintained libraries: paho-mqtt (MQTT 3.1.1, QoS 1), urllib
(HTTP), asyncua (OPC UA). They are the optional ``plant`` extra, imported only when an
output of that kind is built.
"""

from inspector.outputs.config import OutputConfigError, OutputsConfig, build_dispatcher, build_opcua
from inspector.outputs.dispatcher import Dispatcher, Lane, LaneStatus, OutputError, OutputRejected, Sink
from inspector.outputs.queues import DiskQueue, QueueItem
from inspector.outputs.result import RESULTS, PartResult

__all__ = [
    "RESULTS", "DiskQueue", "Dispatcher", "Lane", "LaneStatus", "OutputConfigError", "OutputError",
    "OutputRejected", "OutputsConfig", "PartResult", "QueueItem", "Sink", "build_dispatcher", "build_opcua",
]
