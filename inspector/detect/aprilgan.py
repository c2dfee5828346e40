"""APRIL-GAN CLIP anomaly map: per-layer linear adapters on a CLIP ViT's intermediate tokens.

The second :class:`~inspector.detect.clip_maps.ClipMapProvider` of the CLIP→SAM cascade (the
paper's own map; ``shared/methods/clipsam.md``). With the published ViT-L-14-336 adapters:

* the image is squash-resized to 518² (patch grid 37², positional table resampled 24² → 37²);
* the residual-stream tokens after blocks 6/12/18/24 (CLS dropped) go through their adapter
  (Linear 1024 → 768) and are L2-normalised;
* per layer l: logits_l = 100 · f_l · [t_normal, t_anom]ᵀ → 2×37×37, bilinear
  (align_corners=True) to 518², softmax over the two, anomalous channel;
* map = (1/L) Σ_l softmax_l[anom]  — the published sum over 4 layers divided by 4, so the map is
  in [0, 1] as :class:`ClipMap` requires (same ranking as the sum);
* image score = softmax(100 · normalize(CLS_proj) · [t_normal, t_anom]ᵀ)[anom].

Text: every state word (7 normal, 5 anomalous, or the profile's ``prompts.normal_states`` /
``anomalous_states``) with the object name, in each of 35 templates; each prompt embedding is
normalised, a state set's embeddings are averaged and the mean re-normalised. The two text
vectors depend on the prompts and the CLIP only and are cached on disk.

The published adapters were trained on one dataset's test masks (MVTec-AD or VisA): never
evaluate them on the dataset they were trained on.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import numpy as np
import torch

from inspector.detect.clip_maps import ClipMap
from inspector.detect.maps import resize_map
from inspector.models.adapters import (
    AdapterError,
    AprilGanAdapter,
    intermediate_tokens,
    vit_depth,
    vit_width,
)
from inspector.models.clip import ClipModel, resample_positional_embedding
from inspector.models.device import inference_autocast

if TYPE_CHECKING:  # pragma: no cover
    from inspector.cache import ArrayCache
    from inspector.detect.base import Progress
    from inspector.models.hub import ModelHub
    from inspector.profile import ProductProfile

log = logging.getLogger(__name__)

DEFAULT_ADAPTER_KEY = "aprilgan_vitl14_336"

# APRIL-GAN's state words ({object} = the profile's object name) and its 35 prompt templates.
NORMAL_STATES = (
    "{object}", "flawless {object}", "perfect {object}", "unblemished {object}",
    "{object} without flaw", "{object} without defect", "{object} without damage",
)
ANOMALOUS_STATES = ("damaged {object}", "broken {object}", "{object} with flaw", "{object} with defect",
                    "{object} with damage")
TEMPLATES = (
    "a bad photo of a {}.", "a low resolution photo of the {}.", "a bad photo of the {}.",
    "a cropped photo of the {}.", "a bright photo of a {}.", "a dark photo of the {}.",
    "a photo of my {}.", "a photo of the cool {}.", "a close-up photo of a {}.",
    "a black and white photo of the {}.", "a bright photo of the {}.", "a cropped photo of a {}.",
    "a jpeg corrupted photo of a {}.", "a blurry photo of the {}.", "a photo of the {}.",
    "a good photo of the {}.", "a photo of one {}.", "a close-up photo of the {}.", "a photo of a {}.",
    "a low resolution photo of a {}.", "a photo of a large {}.", "a blurry photo of a {}.",
    "a jpeg corrupted photo of the {}.", "a good photo of a {}.", "a photo of the small {}.",
    "a photo of the large {}.", "a black and white photo of a {}.", "a dark photo of a {}.",
    "a photo of a cool {}.", "a photo of a small {}.", "there is a {} in the scene.",
    "there is the {} in the scene.", "this is a {} in the scene.", "this is the {} in the scene.",
    "this is one {} in the scene.",
)
LOGIT_SCALE = 100.0


def state_prompts(states: list[str] | tuple[str, ...], profile: ProductProfile) -> list[str]:
    """Every template filled with every state word (object name substituted)."""
    return [template.format(profile.fill(state)) for state in states for template in TEMPLATES]


def ensemble_text(embeddings: torch.Tensor) -> torch.Tensor:
    """Mean of L2-normalised prompt embeddings, re-normalised (one text vector per state set)."""
    mean = torch.nn.functional.normalize(embeddings.float(), dim=-1).mean(dim=0)
    return torch.nn.functional.normalize(mean, dim=-1)


def layer_anomaly_maps(tokens: list[torch.Tensor], text: torch.Tensor, grid_hw: tuple[int, int],
                       size: int) -> torch.Tensor:
    """Per-layer anomalous probability maps L×B×size×size from adapted patch tokens (B×h·w×D)."""
    out = []
    h, w = grid_hw
    for tok in tokens:
        f = torch.nn.functional.normalize(tok.float(), dim=-1)
        logits = LOGIT_SCALE * f @ text.T  # B×hw×2
        logits = logits.permute(0, 2, 1).reshape(logits.shape[0], 2, h, w)
        logits = torch.nn.functional.interpolate(logits, size=(size, size), mode="bilinear", align_corners=True)
        out.append(torch.softmax(logits, dim=1)[:, 1])
    return torch.stack(out)


class AprilGanMap:
    """CLIP map provider ``aprilgan`` (see the module docstring)."""

    name = "aprilgan"

    def __init__(self, cache: ArrayCache | None = None) -> None:
        self._cache = cache
        self.clip: ClipModel | None = None
        self.adapter: AprilGanAdapter | None = None
        self.text: torch.Tensor | None = None  # 2×D: normal, anomalous
        self.layers: tuple[int, ...] = ()
        self.input_size = 518
        self.grid: tuple[int, int] = (0, 0)
        self._positional: torch.Tensor | None = None

    # ----------------------------------------------------------------- per profile
    def prepare(self, profile: ProductProfile, hub: ModelHub, progress: Progress | None = None) -> None:
        report = progress or (lambda f, m: None)
        adapter_key = profile.models.adapter or DEFAULT_ADAPTER_KEY
        report(0.0, f"loading adapters {adapter_key}")
        adapter: AprilGanAdapter = hub.get("adapter", adapter_key)
        clip_key = adapter.clip_key or profile.models.clip
        report(0.1, f"loading CLIP {clip_key}")
        clip: ClipModel = hub.get("clip", clip_key)
        visual = clip.model.visual
        adapter.check_clip(vit_width(visual), clip.embed_dim, f"CLIP {clip_key!r}")
        try:
            self.layers = adapter.layers_for(vit_depth(visual))
        except AdapterError as exc:
            raise AdapterError(f"{exc} (CLIP {clip_key!r})") from None
        patch = clip.patch_size
        requested = profile.clipsam.aprilgan_image_size
        g = max(1, round(requested / patch))
        self.grid = (g, g)
        self.input_size = g * patch  # a whole number of patches (518 = 37·14 for ViT-L-14)
        self._positional = resample_positional_embedding(visual.positional_embedding.detach(), self.grid)
        self.clip, self.adapter = clip, adapter
        report(0.2, "encoding state prompts")
        self.text = self._text_features(profile)
        report(1.0, "APRIL-GAN map ready")
        log.info("APRIL-GAN map: CLIP %s, adapters %s on blocks %s, input %d (grid %d²)",
                 clip_key, adapter_key, self.layers, self.input_size, g)

    def _text_features(self, profile: ProductProfile) -> torch.Tensor:
        from inspector.cache import ArrayCache, cache_key

        assert self.clip is not None
        normal = state_prompts(list(profile.prompts.normal_states or NORMAL_STATES), profile)
        anomalous = state_prompts(list(profile.prompts.anomalous_states or ANOMALOUS_STATES), profile)
        key = cache_key("aprilgan-text-v1", self.clip.fingerprint, normal, anomalous)
        cache = self._cache if self._cache is not None else ArrayCache()

        def compute() -> dict[str, np.ndarray]:
            t0 = time.perf_counter()
            vecs = [ensemble_text(self.clip.encode_text(p)) for p in (normal, anomalous)]  # type: ignore[union-attr]
            log.info("encoded %d APRIL-GAN prompts in %.1fs", len(normal) + len(anomalous), time.perf_counter() - t0)
            return {"text": torch.stack(vecs).cpu().numpy()}

        arrays = cache.get_or_compute("aprilgan_text", key, compute)
        return torch.as_tensor(arrays["text"], dtype=torch.float32, device=self.clip.device)

    # ----------------------------------------------------------------- per image
    def __call__(self, image: np.ndarray) -> ClipMap:
        if self.clip is None or self.adapter is None or self.text is None:
            raise RuntimeError("AprilGanMap.prepare(profile, hub) must run before maps are computed")
        t0 = time.perf_counter()
        clip, adapter = self.clip, self.adapter
        x = clip.preprocess(image, self.input_size)
        with inference_autocast(clip.device, clip.dtype):
            tokens, pooled = intermediate_tokens(clip.model.visual, x, self.layers, self._positional)
            adapted = adapter.project([t[:, 1:, :] for t in tokens])
        with torch.inference_mode():
            per_layer = layer_anomaly_maps(adapted, self.text, self.grid, self.input_size)
            amap = per_layer.mean(dim=0)[0].cpu().numpy()
            cls = torch.nn.functional.normalize(pooled.float(), dim=-1)
            score = torch.softmax(LOGIT_SCALE * cls @ self.text.T, dim=-1)[0, 1].item()
        clip.image_calls += 1
        amap = np.clip(resize_map(amap, image.shape[:2]), 0.0, 1.0)
        return ClipMap(anomaly_map=amap, image_score=float(score), timings={"clip_map": time.perf_counter() - t0})
