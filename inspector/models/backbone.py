"""timm CNN feature extractor (``features_only``), e.g. ImageNet WideResNet50-2 layers 1-3.

The only module building timm models. Weights come from the model store (never a hub): the
entry's ``arch`` is the timm model name and ``options.out_indices`` the stages returned.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import torch

from inspector.imaging import resize_square
from inspector.models.hub import inference_autocast

if TYPE_CHECKING:  # pragma: no cover
    from inspector.models.store import ModelStore

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_OUT_INDICES = (1, 2, 3)


class BackboneModel:
    """A loaded timm ``features_only`` model on one device."""

    def __init__(self, model: torch.nn.Module, device: torch.device, dtype: torch.dtype, key: str) -> None:
        if not hasattr(model, "feature_info"):
            raise TypeError(f"backbone {key!r}: expected a timm features_only model, got {type(model).__name__}")
        self.model = model.to(device).eval()
        self.device = device
        self.dtype = dtype
        self.key = key
        cfg = getattr(model, "pretrained_cfg", None) or {}
        mean, std = cfg.get("mean", IMAGENET_MEAN), cfg.get("std", IMAGENET_STD)
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1)
        self.calls = 0

    @property
    def channels(self) -> list[int]:
        return list(self.model.feature_info.channels())

    @property
    def reductions(self) -> list[int]:
        return list(self.model.feature_info.reduction())

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_module(cls, module: torch.nn.Module, device: torch.device, dtype: torch.dtype,
                    key: str = "*") -> BackboneModel:
        return cls(module, device, dtype, key)

    @classmethod
    def from_store(cls, store: ModelStore, key: str, device: torch.device, dtype: torch.dtype) -> BackboneModel:
        import timm

        entry = store.entry(key)
        options = dict(getattr(entry, "options", None) or {})
        out_indices = tuple(int(i) for i in options.get("out_indices", DEFAULT_OUT_INDICES))
        try:
            model = timm.create_model(entry.arch, pretrained=False, features_only=True, out_indices=out_indices)
        except RuntimeError as exc:  # timm: unknown model name
            raise ValueError(f"model store entry {key!r}: timm has no model {entry.arch!r} ({exc})") from exc
        state = store.load_state_dict(key)
        result = model.load_state_dict(state, strict=False)
        # a classification checkpoint carries the stages after the last feature level and the head
        present = {k.split(".")[0] for k in model.state_dict()}
        unexpected = [k for k in result.unexpected_keys if k.split(".")[0] in present]
        if result.missing_keys or unexpected:
            raise ValueError(
                f"model store entry {key!r}: checkpoint does not fit timm {entry.arch!r} "
                f"(missing {result.missing_keys[:3]}, unexpected {unexpected[:3]}); re-import the file"
            )
        return cls(model, device, dtype, key)

    # ----------------------------------------------------------------- forward
    def preprocess(self, image: np.ndarray, size: int) -> torch.Tensor:
        """Squash an RGB uint8 image to size×size (bicubic) and normalise: 1×3×S×S."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"backbone expects RGB uint8 HxWx3, got {image.dtype} {image.shape}")
        x = torch.as_tensor(resize_square(image, size), device=self.device).permute(2, 0, 1)[None].float().div_(255.0)
        return (x - self.mean) / self.std

    def features(self, image: np.ndarray, size: int) -> list[torch.Tensor]:
        """Feature maps (float32, 1×C×h×w each) of the image squashed to ``size``²."""
        x = self.preprocess(image, size)
        with inference_autocast(self.device, self.dtype):
            feats = self.model(x)
        self.calls += 1
        return [f.float() for f in feats]
