"""The one on-disk cache for per-profile derived arrays (text means, memory banks, statistics).

Entries are ``.npz`` files named by a sha256 of their key parts (model key, prompt content hash,
reference image hashes, parameters …), written atomically so a crash never leaves a half file.
A corrupt entry is discarded and recomputed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def cache_key(*parts: Any) -> str:
    """Stable sha256 of JSON-serialisable key parts."""
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


class ArrayCache:
    """``namespace/key.npz`` files under ``root`` (default: ``Settings.cache_dir``)."""

    def __init__(self, root: str | Path | None = None) -> None:
        if root is None:
            from inspector.settings import Settings

            root = Settings.load().cache_dir
        self.root = Path(root)
        self.hits = 0
        self.misses = 0

    def path(self, namespace: str, key: str) -> Path:
        return self.root / namespace / f"{key}.npz"

    def load(self, namespace: str, key: str) -> dict[str, np.ndarray] | None:
        p = self.path(namespace, key)
        if not p.is_file():
            return None
        try:
            with np.load(p, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            log.warning("discarding corrupt cache entry %s (%s)", p, exc)
            p.unlink(missing_ok=True)
            return None

    def save(self, namespace: str, key: str, arrays: Mapping[str, np.ndarray]) -> Path | None:
        """Write atomically; a full or read-only disk only costs a recompute later (logged)."""
        p = self.path(namespace, key)
        tmp = p.with_name(p.name + ".tmp")
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as fh:
                np.savez(fh, **{k: np.asarray(v) for k, v in arrays.items()})
            os.replace(tmp, p)
        except OSError as exc:
            log.warning("could not write cache entry %s (%s); continuing without cache", p, exc)
            tmp.unlink(missing_ok=True)
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
