"""The one on-disk cache for per-profile derived arrays (text means, memory banks, statistics).

Entries are ``.npz`` files named by a sha256 of their key parts (model key, prompt content hash,
reference image hashes, parameters …), written atomically (:func:`inspector.files.atomic_writer`)
so a crash never leaves a half file.

A cache entry can change a verdict (an edited memory bank turns a FAIL into a PASS with the same
profile hash), so every entry carries an HMAC under the station key (:mod:`inspector.keys`) over
its namespace, its key and the sha256 of its arrays. An entry whose MAC is missing or wrong
(edited, copied from another station, or written by an older version) is refused with a warning
and recomputed; a corrupt entry is discarded and recomputed.

The arrays a detector adopts while it prepares are recorded in a :func:`state_ledger`; their
combined :func:`ledger_sha256` is the *detector state hash* that each inspection record stores,
so an auditor can tell which memory bank produced a verdict.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import logging
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from inspector.files import atomic_writer

log = logging.getLogger(__name__)

MAC_FIELD = "__inspector_mac__"
"""Name of the array (0-d unicode) that holds the entry's HMAC inside the ``.npz``."""
_MAC_CONTEXT = b"inspector-array-cache-v1"


def cache_key(*parts: Any) -> str:
    """Stable sha256 of JSON-serialisable key parts."""
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def arrays_sha256(arrays: Mapping[str, np.ndarray]) -> str:
    """sha256 over names, dtypes, shapes and bytes of ``arrays`` (independent of the file format)."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(json.dumps([name, a.dtype.str, list(a.shape)]).encode())
        h.update(b"\0")
        h.update(a.tobytes())
    return h.hexdigest()


def _mac_message(namespace: str, key: str, content_sha256: str) -> bytes:
    return b"\0".join((_MAC_CONTEXT, namespace.encode(), key.encode(), content_sha256.encode()))


# ------------------------------------------------------------------------------- state ledger
_LEDGER: contextvars.ContextVar[dict[tuple[str, str], str] | None] = contextvars.ContextVar(
    "inspector_cache_ledger", default=None
)


@contextlib.contextmanager
def state_ledger() -> Iterator[dict[tuple[str, str], str]]:
    """Record ``(namespace, key) -> arrays_sha256`` of every entry loaded or computed in the block.

    :class:`inspector.inspection.Inspector` wraps a detector's ``prepare`` in it; see
    :func:`ledger_sha256`. Nested ledgers each see what happens inside them.
    """
    parent = _LEDGER.get()
    mine: dict[tuple[str, str], str] = {}
    token = _LEDGER.set(mine)
    try:
        yield mine
    finally:
        _LEDGER.reset(token)
        if parent is not None:
            parent.update(mine)


def ledger_sha256(ledger: Mapping[tuple[str, str], str]) -> str | None:
    """One sha256 for the state a detector adopted (``None`` when it used no cached state)."""
    if not ledger:
        return None
    rows = sorted(f"{ns}/{key}={sha}" for (ns, key), sha in ledger.items())
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()


def _note(namespace: str, key: str, content_sha256: str) -> None:
    ledger = _LEDGER.get()
    if ledger is not None:
        ledger[(namespace, key)] = content_sha256


# ------------------------------------------------------------------------------- the cache
class ArrayCache:
    """``namespace/key.npz`` files under ``root`` (default: ``Settings.cache_dir``), HMAC-signed.

    ``key`` is the station key (default :func:`inspector.keys.station_key`); tests pass their own.
    """

    def __init__(self, root: str | Path | None = None, key: bytes | None = None) -> None:
        if root is None:
            from inspector.settings import Settings

            root = Settings.load().cache_dir
        self.root = Path(root)
        self._key = key
        self.hits = 0
        self.misses = 0
        self.refused = 0
        """Entries refused because their MAC was missing or wrong (edited or foreign files)."""

    def _station_key(self) -> bytes | None:
        """The key, or None (logged) when the station key file is unreadable: then nothing is cached."""
        if self._key is None:
            from inspector.keys import StationKeyError, station_key

            try:
                self._key = station_key()
            except (StationKeyError, OSError) as exc:
                log.warning("cache disabled: %s", exc)
                return None
        return self._key

    def path(self, namespace: str, key: str) -> Path:
        return self.root / namespace / f"{key}.npz"

    def load(self, namespace: str, key: str) -> dict[str, np.ndarray] | None:
        """The entry's arrays, or ``None`` when absent, corrupt or failing its MAC (then logged)."""
        from inspector.keys import verify

        p = self.path(namespace, key)
        if not p.is_file():
            return None
        try:
            with np.load(p, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            log.warning("discarding corrupt cache entry %s (%s)", p, exc)
            p.unlink(missing_ok=True)
            return None
        mac = arrays.pop(MAC_FIELD, None)
        content = arrays_sha256(arrays)
        station = self._station_key()
        if station is None:
            return None
        if mac is None or mac.shape != () or not verify(_mac_message(namespace, key, content), str(mac), station):
            self.refused += 1
            log.warning(
                "refusing cache entry %s: %s; it was edited, copied from another station or written by an "
                "older version. Recomputing it.", p, "no integrity MAC" if mac is None else "integrity MAC mismatch",
            )
            p.unlink(missing_ok=True)
            return None
        _note(namespace, key, content)
        return arrays

    def save(self, namespace: str, key: str, arrays: Mapping[str, np.ndarray]) -> Path | None:
        """Write atomically with its MAC; a full or read-only disk only costs a recompute later (logged)."""
        from inspector.keys import sign

        p = self.path(namespace, key)
        data = {k: np.asarray(v) for k, v in arrays.items()}
        if MAC_FIELD in data:
            raise ValueError(f"{MAC_FIELD!r} is reserved for the cache's integrity MAC")
        content = arrays_sha256(data)
        _note(namespace, key, content)
        station = self._station_key()
        if station is None:
            return None
        mac = sign(_mac_message(namespace, key, content), station)
        try:
            with atomic_writer(p, fsync=False) as fh:
                np.savez(fh, **data, **{MAC_FIELD: np.array(mac)})
        except OSError as exc:
            log.warning("could not write cache entry %s (%s); continuing without cache", p, exc)
            return None
        return p

    def get_or_compute(
        self, namespace: str, key: str, compute: Callable[[], Mapping[str, np.ndarray]]
    ) -> dict[str, np.ndarray]:
        found = self.load(namespace, key)
        if found is not None:
            self.hits += 1
            return found
        self.misses += 1
        arrays = {k: np.asarray(v) for k, v in compute().items()}
        self.save(namespace, key, arrays)
        return arrays
