"""APRIL-GAN linear adapters and the intermediate-token forward of open_clip's vision transformer.

APRIL-GAN (Chen et al., VAND 2023) maps the residual-stream patch tokens after a few blocks of a
CLIP ViT (ViT-L-14-336: blocks 6/12/18/24, before ``ln_post``, CLS dropped) into the joint
image-text space with one ``Linear(width → embed_dim)`` per block. Its published checkpoints are
``torch.save({"trainable_linearlayer": LinearLayer.state_dict()})`` with state keys
``fc.{0..n-1}.{weight,bias}``; this module reads exactly that layout (also bare state dicts and
``module.``-prefixed ones from DataParallel training).

Which blocks the adapters belong to is not stored in the checkpoint. A model-store entry may
name them (``options: {layers: [6, 12, 18, 24]}``); otherwise they are spread evenly over the
model's depth (n adapters on a depth-D ViT → blocks D·i/n, i = 1..n), which gives 6/12/18/24 for
4 adapters on 24 blocks. An entry may also name the CLIP it was trained with (``options.clip``)
and, per file, the dataset it was trained on (``options.trained_on``) — an evaluation must never
use an adapter on the dataset it was trained on.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:  # pragma: no cover
    from inspector.models.store import ModelStore

log = logging.getLogger(__name__)

CHECKPOINT_KEY = "trainable_linearlayer"
_FC_KEY = re.compile(r"^fc\.(\d+)\.(weight|bias)$")


class AdapterError(ValueError):
    """An adapter checkpoint has the wrong layout or does not fit the CLIP it is used with."""


def adapter_state_dict(checkpoint: Mapping[str, Any], source: str = "adapter checkpoint") -> dict[str, torch.Tensor]:
    """The ``fc.{i}.{weight,bias}`` tensors of an APRIL-GAN checkpoint (unwrapped and validated)."""
    state: Any = checkpoint
    if CHECKPOINT_KEY in state:
        state = state[CHECKPOINT_KEY]
    if not isinstance(state, Mapping):
        raise AdapterError(f"{source}: {CHECKPOINT_KEY!r} is a {type(state).__name__}, expected a state dict")
    cleaned: dict[str, torch.Tensor] = {}
    for name, value in state.items():
        if not isinstance(name, str):
            raise AdapterError(f"{source}: key {name!r} is a {type(name).__name__}, expected a parameter name")
        name = name[len("module."):] if name.startswith("module.") else name
        if not _FC_KEY.match(name):
            raise AdapterError(
                f"{source}: unexpected key {name!r}; an APRIL-GAN adapter holds only fc.<i>.weight / fc.<i>.bias "
                f"(optionally under {CHECKPOINT_KEY!r})"
            )
        if not isinstance(value, torch.Tensor):
            raise AdapterError(f"{source}: {name} is a {type(value).__name__}, expected a tensor")
        cleaned[name] = value
    if not cleaned:
        raise AdapterError(f"{source}: no fc.<i>.weight tensors found; is this an APRIL-GAN adapter checkpoint?")
    count = 1 + max(int(_FC_KEY.match(k).group(1)) for k in cleaned)  # type: ignore[union-attr]
    for i in range(count):
        for part in ("weight", "bias"):
            if f"fc.{i}.{part}" not in cleaned:
                raise AdapterError(f"{source}: fc.{i}.{part} missing (found {count} adapters, "
                                   f"they must be fc.0..fc.{count - 1})")
    shapes = {tuple(cleaned[f"fc.{i}.weight"].shape) for i in range(count)}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise AdapterError(f"{source}: adapter weights must all be 2-D of one shape, got {sorted(shapes)}")
    out_dim = next(iter(shapes))[0]
    for i in range(count):
        bias_shape = tuple(cleaned[f"fc.{i}.bias"].shape)
        if bias_shape != (out_dim,):
            raise AdapterError(f"{source}: fc.{i}.bias has shape {bias_shape}, expected ({out_dim},)")
    return cleaned


def evenly_spaced_layers(depth: int, count: int) -> tuple[int, ...]:
    """1-based block indices D·i/n, i = 1..n (6/12/18/24 for 4 adapters on 24 blocks)."""
    if not 1 <= count <= depth:
        raise AdapterError(f"{count} adapters do not fit a ViT of {depth} blocks")
    return tuple(depth * (i + 1) // count for i in range(count))


class AprilGanAdapter:
    """The per-layer linear adapters on one device, plus what the store says about their CLIP."""

    def __init__(
        self,
        state: Mapping[str, torch.Tensor],
        device: torch.device,
        dtype: torch.dtype,
        key: str = "*",
        layers: Sequence[int] | None = None,
        clip_key: str | None = None,
    ) -> None:
        state = adapter_state_dict(state, f"adapter {key!r}")
        self.count = len(state) // 2
        self.out_features, self.in_features = (int(v) for v in state["fc.0.weight"].shape)
        self.fc = torch.nn.ModuleList(
            torch.nn.Linear(self.in_features, self.out_features) for _ in range(self.count)
        )
        self.fc.load_state_dict({k[len("fc."):]: v.float() for k, v in state.items()}, strict=True)
        self.fc.to(device).eval()
        self.device = device
        self.dtype = dtype
        self.key = key
        self.layers = tuple(int(v) for v in layers) if layers is not None else None
        if self.layers is not None and len(self.layers) != self.count:
            raise AdapterError(f"adapter {key!r}: {self.count} adapters but {len(self.layers)} layers {self.layers}")
        self.clip_key = clip_key
        self.trained_on: str | None = None  # dataset the adapters were trained on (store option)

    def __repr__(self) -> str:
        return (f"AprilGanAdapter(key={self.key!r}, {self.count}×Linear({self.in_features}→{self.out_features}), "
                f"layers={self.layers})")

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_module(
        cls, module: torch.nn.Module | Mapping[str, Any], device: torch.device, dtype: torch.dtype, key: str = "*"
    ) -> AprilGanAdapter:
        """From an APRIL-GAN ``LinearLayer``-like module (``.fc`` list), its state dict or checkpoint dict."""
        state = module.state_dict() if isinstance(module, torch.nn.Module) else module
        return cls(state, device, dtype, key)

    @classmethod
    def from_store(cls, store: ModelStore, key: str, device: torch.device, dtype: torch.dtype) -> AprilGanAdapter:
        """Load from the model store. ``key`` may name one file of the entry: ``"<key>:<file>"``
        (the published entry holds an adapter trained on MVTec-AD and one trained on VisA)."""
        base, _, file = key.partition(":")
        entry = store.entry(base)
        options = dict(getattr(entry, "options", None) or {})
        file = file or store.weights_file(base)
        checkpoint = store.load_state_dict(base, file)
        state = adapter_state_dict(checkpoint, f"model store entry {base!r} file {file!r}")
        adapter = cls(state, device, dtype, key, layers=options.get("layers"), clip_key=options.get("clip"))
        adapter.trained_on = dict(options.get("trained_on") or {}).get(file)
        if adapter.trained_on:
            log.info("adapter %s/%s was trained on %s: never evaluate it there", base, file, adapter.trained_on)
        return adapter

    # ----------------------------------------------------------------- use
    def layers_for(self, depth: int) -> tuple[int, ...]:
        """1-based ViT blocks whose outputs the adapters take, checked against the model's depth."""
        layers = self.layers or evenly_spaced_layers(depth, self.count)
        if any(not 1 <= v <= depth for v in layers):
            raise AdapterError(f"adapter {self.key!r}: layers {layers} outside the CLIP's 1..{depth} blocks")
        return layers

    def check_clip(self, width: int, embed_dim: int, clip_name: str = "the CLIP") -> None:
        """Raise a clear error when the adapters were trained for a CLIP of other widths."""
        if (self.in_features, self.out_features) != (width, embed_dim):
            raise AdapterError(
                f"adapter {self.key!r} maps {self.in_features}→{self.out_features} but {clip_name} has vision width "
                f"{width} and embedding size {embed_dim}; use the CLIP it was trained with "
                "(ViT-L-14-336 for the published APRIL-GAN adapters: profile models.clip)"
            )

    def project(self, tokens: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Adapter i applied to token set i (B×L×width → B×L×embed_dim)."""
        if len(tokens) != self.count:
            raise AdapterError(f"adapter {self.key!r} expects {self.count} token sets, got {len(tokens)}")
        return [fc(t) for fc, t in zip(self.fc, tokens)]


def vit_depth(visual: torch.nn.Module) -> int:
    return len(visual.transformer.resblocks)


def vit_width(visual: torch.nn.Module) -> int:
    return int(visual.transformer.width)


def intermediate_tokens(
    visual: torch.nn.Module, x: torch.Tensor, layers: Sequence[int], positional: torch.Tensor | None = None
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Residual-stream tokens after the given 1-based blocks, and the projected pooled embedding.

    ``visual`` is open_clip's ``VisionTransformer``; ``x`` a preprocessed B×3×S×S batch whose patch
    grid may differ from the model's native one, in which case ``positional`` must be the table
    resampled to that grid (:func:`inspector.models.clip.resample_positional_embedding`).
    Returns ([B×(1+h·w)×width per layer, CLS first], B×embed_dim pooled-and-projected image
    embedding, unnormalised). Mirrors ``VisionTransformer.forward`` of open_clip 3.x.
    """
    wanted = sorted(set(int(v) for v in layers))
    x = visual.conv1(x)
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
    cls = visual.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1)
    pos = visual.positional_embedding if positional is None else positional
    if pos.shape[0] != x.shape[1]:
        raise ValueError(f"positional table has {pos.shape[0]} rows but the input gives {x.shape[1]} tokens; "
                         "resample it to the patch grid")
    x = x + pos.to(x.dtype)
    x = visual.patch_dropout(x)
    x = visual.ln_pre(x)
    transformer = visual.transformer
    batch_first = getattr(transformer, "batch_first", True)
    if not batch_first:
        x = x.transpose(0, 1)
    captured: dict[int, torch.Tensor] = {}
    for i, block in enumerate(transformer.resblocks, start=1):
        x = block(x)
        if i in wanted:
            captured[i] = x if batch_first else x.transpose(0, 1)
    if not batch_first:
        x = x.transpose(0, 1)
    pooled, _ = visual._pool(x)
    if visual.proj is not None:
        pooled = pooled @ visual.proj
    return [captured[int(v)] for v in layers], pooled
