"""HTTP webhook output: one JSON ``POST`` per part (stdlib ``urllib``).

Delivered = a 2xx answer. 408, 425, 429, 5xx, timeouts and refused connections are retried
by the lane (backoff, bounded disk queue); any other status is a permanent refusal and the
entry is set aside in the queue's ``rejected/`` folder. Every request carries the part's
uid in ``Idempotency-Key`` so a receiver can drop the duplicate a retry after a lost answer
may cause.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

from inspector.outputs.dispatcher import OutputError, OutputRejected

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 425, 429})


class WebhookSink:
    name = "webhook"

    def __init__(self, url: str, timeout_s: float = 5.0, headers: Mapping[str, str] | None = None) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"webhook url must start with http:// or https://, got {url!r}")
        self.url = url
        self.timeout_s = timeout_s
        self.headers = dict(headers or {})
        self._connected = False

    @property
    def connected(self) -> bool:
        return self._connected

    def send(self, key: str, payload: dict[str, Any]) -> None:
        body = json.dumps(payload, sort_keys=True).encode("utf-8")
        headers = {"Content-Type": "application/json", "Idempotency-Key": key, **self.headers}
        req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                resp.read()
        except urllib.error.HTTPError as exc:
            self._connected = True
            if exc.code in RETRY_STATUS or exc.code >= 500:
                raise OutputError(f"{self.url}: HTTP {exc.code} {exc.reason}") from exc
            raise OutputRejected(f"{self.url}: HTTP {exc.code} {exc.reason} for part {key}") from exc
        except (urllib.error.URLError, OSError) as exc:
            self._connected = False
            reason = getattr(exc, "reason", exc)
            raise OutputError(f"{self.url}: {reason}") from exc
        self._connected = True

    def close(self) -> None:
        self._connected = False
