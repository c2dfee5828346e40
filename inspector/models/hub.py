"""The model hub: every network is loaded once per device, lazily, and handed to whoever asks.

Kinds and their wrapper classes (each wrapper module is the only code touching its library):

=========  =============================================  ==========================================
kind       wrapper                                        raw module accepted by :meth:`provide`
=========  =============================================  ==========================================
clip       :class:`inspector.models.clip.ClipModel`       ``open_clip.model.CLIP``
sam        :class:`inspector.models.sam.SamModel`         ``segment_anything.modeling.Sam``
grounding  :class:`inspector.models.grounding.GroundingModel`  ``groundingdino ... GroundingDINO``
backbone   :class:`inspector.models.backbone.BackboneModel`    timm ``features_only`` model
adapter    :class:`inspector.models.adapters.AprilGanAdapter`  ``torch.nn.Module`` / state dict
=========  =============================================  ==========================================

Every wrapper class implements two constructors::

    from_store(store, key, device, dtype) -> wrapper      # real checkpoints from the model store
    from_module(module, device, dtype, key) -> wrapper    # an already-built module (tests, tools)

Dependency injection: ``hub.provide("clip", tiny_clip_module)`` makes every later
``hub.get("clip", <any key>)`` return a wrapper around that module, so tests and evaluations run
tiny random-initialised instances of the real architectures through the real code paths.

The device and precision rules live in :mod:`inspector.models.device` (re-exported here for
older imports): ``precision="auto"`` is fp16 on CUDA, bf16 autocast on a CPU with native bf16
(AVX512-BF16 / AMX), else fp32. Wrappers run their forwards inside :meth:`ModelHub.autocast` or
:func:`inspector.models.device.inference_autocast`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch

from inspector.models.device import cpu_supports_bf16, inference_autocast, resolve_device, resolve_precision
from inspector.registry import resolve

if TYPE_CHECKING:  # pragma: no cover
    from inspector.models.store import ModelStore

__all__ = [
    "ANY_KEY", "WRAPPERS", "ModelHub", "cpu_supports_bf16", "inference_autocast", "resolve_device",
    "resolve_precision", "wrapper_class",
]

log = logging.getLogger(__name__)

WRAPPERS: dict[str, str] = {
    "clip": "inspector.models.clip:ClipModel",
    "sam": "inspector.models.sam:SamModel",
    "grounding": "inspector.models.grounding:GroundingModel",
    "backbone": "inspector.models.backbone:BackboneModel",
    "adapter": "inspector.models.adapters:AprilGanAdapter",
}
ANY_KEY = "*"


def wrapper_class(kind: str) -> type:
    return resolve(WRAPPERS, kind, "model kind")


class ModelHub:
    """Loads each (kind, key) once and caches it; thread-safe."""

    def __init__(
        self,
        store: ModelStore | None = None,
        device: str | torch.device = "auto",
        precision: str = "auto",
    ) -> None:
        self.store = store
        self.device = resolve_device(device)
        self.dtype = resolve_precision(self.device, precision)
        self._provided: dict[tuple[str, str], Any] = {}
        self._loaded: dict[tuple[str, str], Any] = {}
        self._lock = threading.RLock()
        self.load_counts: dict[tuple[str, str], int] = {}

    def __repr__(self) -> str:
        return f"ModelHub(device={self.device}, dtype={self.dtype}, loaded={sorted(self._loaded)})"

    # ------------------------------------------------------------------ injection
    def provide(self, kind: str, module: Any, key: str = ANY_KEY) -> None:
        """Use an already-built module for ``kind`` (for ``key``, or for every key by default)."""
        wrapper_class(kind)  # validates kind
        with self._lock:
            self._provided[(kind, key)] = module
            for k in [k for k in self._loaded if k[0] == kind and (key == ANY_KEY or k[1] == key)]:
                del self._loaded[k]

    def is_provided(self, kind: str, key: str) -> bool:
        return (kind, key) in self._provided or (kind, ANY_KEY) in self._provided

    # ------------------------------------------------------------------ access
    def get(self, kind: str, key: str) -> Any:
        """The wrapper for ``kind``/``key``, loading it on first use.

        Raises :class:`inspector.models.store.ModelMissingError` when the weights are not
        installed (its message names the key, the expected path and the command that fixes it).
        """
        with self._lock:
            if (kind, key) in self._loaded:
                return self._loaded[(kind, key)]
            cls = wrapper_class(kind)
            module = self._provided.get((kind, key), self._provided.get((kind, ANY_KEY)))
            if module is not None:
                obj = cls.from_module(module, device=self.device, dtype=self.dtype, key=key)
            else:
                log.info("loading %s model %r on %s (%s)", kind, key, self.device, self.dtype)
                obj = cls.from_store(self.model_store(), key, device=self.device, dtype=self.dtype)
            self._loaded[(kind, key)] = obj
            self.load_counts[(kind, key)] = self.load_counts.get((kind, key), 0) + 1
            return obj

    def model_store(self) -> ModelStore:
        """The weight store given at construction, else the one from the settings (opened once)."""
        if self.store is None:
            from inspector.models.store import ModelStore

            self.store = ModelStore.from_settings()
        return self.store

    def loaded(self) -> list[tuple[str, str]]:
        return sorted(self._loaded)

    def release(self) -> None:
        """Drop every loaded model (e.g. on device change)."""
        with self._lock:
            self._loaded.clear()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # ------------------------------------------------------------------ precision
    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """Inference mode plus autocast to the hub's compute dtype (no-op for fp32)."""
        with inference_autocast(self.device, self.dtype):
            yield

    def describe(self) -> str:
        name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "CPU"
        return f"{name} ({str(self.dtype).replace('torch.', '')})"
