"""open_clip wrapper: model + tokenizer, text and image encoders, preprocessing.

Dense (GEM) features live in :mod:`inspector.models.gem`; this module is the only place that
builds open_clip models and loads their weights (through the model store — never a hub).
"""

from __future__ import annotations

import hashlib
import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from inspector.imaging import resize_antialiased
from inspector.models.gem import DenseTokens, GemEncoder, resample_positional_embedding
from inspector.models.device import inference_autocast

if TYPE_CHECKING:  # pragma: no cover
    from inspector.models.store import ModelStore

log = logging.getLogger(__name__)

__all__ = ["ClipModel", "resample_positional_embedding"]

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def load_open_clip_state(model: torch.nn.Module, state: dict[str, Any], source: str = "checkpoint") -> None:
    """Load a checkpoint's state dict into an open_clip model the way ``open_clip.load_checkpoint`` does.

    The store has already read the file safely (``weights_only``, allow-list) and unwrapped it;
    this applies open_clip's own conversions in its order: third-party layouts
    (``convert_state_dict``: timm/big_vision/Apple, …), the old flat text tower into
    ``CustomTextCLIP``'s ``text.*`` (``convert_to_custom_text_state_dict``), ``logit_scale`` /
    ``logit_bias`` stored as scalars vs 1-d, ``logit_bias`` absent for SigLIP towers, HF text
    ``position_ids`` that newer transformers no longer expect, and positional tables of another
    grid or context length (``resize_pos_embed``, ``resize_text_pos_embed``). Then a strict load.
    """
    from open_clip.factory import convert_state_dict
    from open_clip.model import convert_to_custom_text_state_dict, resize_pos_embed, resize_text_pos_embed

    state = convert_state_dict(model, dict(state))
    if "positional_embedding" in state and not hasattr(model, "positional_embedding"):
        state = convert_to_custom_text_state_dict(state)
    for name in ("logit_scale", "logit_bias"):
        target = getattr(model, name, None)
        if name in state and isinstance(target, torch.Tensor) and target.ndim != state[name].ndim:
            state[name] = state[name].reshape(target.shape)
    if "logit_bias" not in state and getattr(model, "logit_bias", None) is not None and "logit_scale" in state:
        state["logit_bias"] = torch.zeros_like(state["logit_scale"])
    position_ids = "text.transformer.embeddings.position_ids"
    if position_ids in state and position_ids not in model.state_dict():  # a non-persistent buffer today
        del state[position_ids]
    resize_pos_embed(state, model)
    resize_text_pos_embed(state, model)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{source}: the checkpoint does not fit this open_clip architecture ({exc}); "
                         "check the entry's arch or re-import the file") from exc


class ClipModel:
    """A loaded open_clip ``CLIP`` on one device, with its tokenizer."""

    def __init__(
        self,
        model: torch.nn.Module,
        device: torch.device,
        dtype: torch.dtype,
        key: str,
        tokenizer: Any = None,
        mean: tuple[float, float, float] = OPENAI_MEAN,
        std: tuple[float, float, float] = OPENAI_STD,
    ) -> None:
        import open_clip

        self.model = model.to(device).eval()
        self.device = device
        self.dtype = dtype
        self.key = key
        self.tokenizer = tokenizer or open_clip.tokenizer.SimpleTokenizer(context_length=int(model.context_length))
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1)
        size = model.visual.image_size
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.patch_size = int(model.visual.patch_size[0] if isinstance(model.visual.patch_size, (tuple, list))
                              else model.visual.patch_size)
        self.text_calls = 0  # counted by tests: cached prompts must not be re-encoded
        self.image_calls = 0  # image forwards (CLS or dense)
        self._gem: GemEncoder | None = None
        self._fingerprint: str | None = None

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_module(cls, module: torch.nn.Module, device: torch.device, dtype: torch.dtype, key: str = "*") -> ClipModel:
        return cls(module, device, dtype, key)

    @classmethod
    def from_store(cls, store: ModelStore, key: str, device: torch.device, dtype: torch.dtype) -> ClipModel:
        import open_clip

        entry = store.entry(key)
        options = dict(getattr(entry, "options", None) or {})
        raw = store.load_state_dict(key)  # first: a missing file fails before the ViT is built
        # the weights' own settings (open_clip's pretrained table for arch + tag: SigLIP's 0.5 mean,
        # OpenAI's QuickGELU) outrank the architecture's; the entry's options outrank both
        tagged = open_clip.get_pretrained_cfg(entry.arch, entry.tag) if entry.tag else {}
        quick = options.get("quick_gelu", tagged.get("quick_gelu", False))
        model = open_clip.create_model(entry.arch, pretrained=None, force_quick_gelu=bool(quick))
        load_open_clip_state(model, raw, f"model store entry {key!r}")
        tokenizer = open_clip.get_tokenizer(entry.arch)
        cfg = {**(getattr(model.visual, "preprocess_cfg", {}) or {}), **tagged}
        return cls(model, device, dtype, key, tokenizer,
                   tuple(cfg.get("mean", OPENAI_MEAN)), tuple(cfg.get("std", OPENAI_STD)))

    # ----------------------------------------------------------------- inputs
    def preprocess(self, images: list[np.ndarray] | np.ndarray, size: int) -> torch.Tensor:
        """Squash-resize RGB uint8 images to size×size and normalise: B×3×S×S.

        Antialiased bicubic (PIL, as the reference's torchvision ``Resize((s, s), BICUBIC)``), no crop.
        """
        if isinstance(images, np.ndarray) and images.ndim == 3:
            images = [images]
        batch = np.stack([resize_antialiased(im, (size, size), "bicubic") for im in images])
        x = torch.as_tensor(batch, device=self.device).permute(0, 3, 1, 2).float().div_(255.0)
        return (x - self.mean) / self.std

    # ----------------------------------------------------------------- encoders
    def encode_text(self, prompts: list[str], batch_size: int = 256) -> torch.Tensor:
        """L2-normalised text embeddings (N×D, float32, on the model's device)."""
        outs = []
        for i in range(0, len(prompts), batch_size):
            tokens = self.tokenizer(prompts[i : i + batch_size]).to(self.device)
            with inference_autocast(self.device, self.dtype):
                emb = self.model.encode_text(tokens)
            outs.append(torch.nn.functional.normalize(emb.float(), dim=-1))
            self.text_calls += 1
        return torch.cat(outs) if outs else torch.empty(0, self.embed_dim, device=self.device)

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised image (CLS) embeddings for a preprocessed batch (B×D, float32)."""
        with inference_autocast(self.device, self.dtype):
            emb = self.model.encode_image(x)
        self.image_calls += 1
        return torch.nn.functional.normalize(emb.float(), dim=-1)

    @property
    def embed_dim(self) -> int:
        return int(self.model.text_projection.shape[1]) if hasattr(self.model, "text_projection") else 0

    # ----------------------------------------------------------------- dense (GEM) features
    @property
    def gem(self) -> GemEncoder:
        """The GEM encoder over this model's vision tower (built once)."""
        if self._gem is None:
            self._gem = GemEncoder(self.model.visual)
        return self._gem

    def encode_dense(self, x: torch.Tensor) -> DenseTokens:
        """GEM and CLIP tokens (CLS + patches, projected, normalised) of a preprocessed batch."""
        with inference_autocast(self.device, self.dtype):
            out = self.gem(x)
        self.image_calls += 1
        return out

    @property
    def fingerprint(self) -> str:
        """Key + a hash of the projection weights: tells two models apart in cache keys even
        when they were injected under the same key (tests, tools)."""
        if self._fingerprint is None:
            h = hashlib.sha256(self.key.encode())
            for name in ("text_projection", "visual.proj", "visual.positional_embedding"):
                obj: Any = self.model
                for part in name.split("."):
                    obj = getattr(obj, part, None)
                if isinstance(obj, torch.Tensor):
                    h.update(obj.detach().float().cpu().numpy().tobytes())
            self._fingerprint = f"{self.key}:{h.hexdigest()[:16]}"
        return self._fingerprint
