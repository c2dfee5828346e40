"""FADE: few-/zero-shot anomaly detection from CLIP with language and vision guidance.

Li et al., BMVC 2024 (``shared/papers/fade_*.txt``; facts in ``shared/methods/fade.md``).
Per scale s of the profile (squash-resized s×s input, one GEM forward each):

* language AS — GEM patches vs the segmentation text means (eq. 1 per patch) → s/16 × s/16 map;
* vision AS — 0-shot: GEM patches vs the image's own GEM patches, 0.5(1 − cos) to the 2nd
  nearest neighbour; k-shot: CLIP patches vs the reference shots' CLIP patches at that scale,
  0.5(1 − cos) to the nearest neighbour (sec. 3.3);
* language AC — CLIP CLS at ``fade.classification_scale`` vs the object-name ensemble (eq. 1).

Scale maps are resized (bilinear) to the largest grid and averaged; language and vision are
fused with the table in :class:`inspector.params.fade.FadeParams`; map and score are clipped
to [0, 1] and the map is upsampled to the image. One engine (:class:`FadeEngine`) serves both
:class:`FadeDetector` and the CLIP→SAM cascade's :class:`FadeLanguageMap`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from inspector.cache import ArrayCache, cache_key
from inspector.detect.base import Detection, Detector, Progress, StageTimer
from inspector.detect.clip_maps import ClipMap
from inspector.detect.maps import fuse_maps, regions_from_map, resize_map
from inspector.detect.prompts import PromptSet, classification_prompts, encoder_texts, segmentation_prompts
from inspector.imaging import file_sha256, read_image

if TYPE_CHECKING:  # pragma: no cover
    from inspector.models.clip import ClipModel
    from inspector.models.hub import ModelHub
    from inspector.params.fade import FadeParams
    from inspector.profile import ProductProfile

log = logging.getLogger(__name__)

SCALE_PRESETS: dict[str, list[int]] = {"fast": [240, 448], "full": [240, 448, 896]}
"""Image-scale presets offered by the profile editor and the CLI (``fast`` suits a CPU)."""

CPU_SECONDS_AT_896 = 60.0
"""Measured order of magnitude: one 896 px GEM pass of ViT-B/16+ on 2 CPU cores, fp32."""

_TEXT_NS = "fade_text"
_BANK_NS = "fade_bank"
_CACHE_VERSION = 1


# ---------------------------------------------------------------------------------- pure math
def text_anomaly_probability(
    features: torch.Tensor, normal_mean: torch.Tensor, anomalous_mean: torch.Tensor, temperature: float
) -> torch.Tensor:
    """p = softmax([⟨f, t̄_n⟩, ⟨f, t̄_a⟩] / T)[anomalous] for unit features (…×D) (eq. 1)."""
    f = features.float()
    logits = torch.stack([f @ normal_mean.float(), f @ anomalous_mean.float()], dim=-1) / temperature
    return logits.softmax(dim=-1)[..., 1]


def knn_distance(queries: torch.Tensor, bank: torch.Tensor, rank: int = 1, chunk: int = 1024) -> torch.Tensor:
    """0.5·(1 − cos) from each unit query (N×D) to its ``rank``-th nearest bank row (M×D) (sec. 3.3).

    ``rank=2`` with the query's own patches as bank skips the patch itself (0-shot). Query rows are
    processed ``chunk`` at a time, so at most chunk × M similarities are held at once.
    """
    if bank.shape[0] < rank:
        raise ValueError(f"memory bank has {bank.shape[0]} rows; need at least {rank}")
    bank = bank.float()
    out = torch.empty(queries.shape[0], dtype=torch.float32, device=queries.device)
    for i in range(0, queries.shape[0], chunk):
        sim = queries[i : i + chunk].float() @ bank.T
        out[i : i + chunk] = 0.5 * (1.0 - sim.topk(rank, dim=1).values[:, rank - 1])
    return out.clamp_(0.0, 1.0)


def fuse_scales(maps: list[np.ndarray]) -> np.ndarray:
    """Per-scale maps resized (bilinear) to the largest grid and averaged with equal weights (sec. 3.2)."""
    target = max((m.shape for m in maps), key=lambda s: s[0] * s[1])
    return fuse_maps([resize_map(m, target) for m in maps])


def fuse_guidance(
    language: np.ndarray | None,
    vision: np.ndarray | None,
    p_ac: float | None,
    few_shot: bool,
    params: FadeParams,
) -> tuple[np.ndarray, float]:
    """FADE's fusion table (sec. 3.4, supplementary) → (map, image score), both clipped to [0, 1].

    0-shot: map = w0·L + (1 − w0)·g0·V, score = p_AC.
    k-shot: map = wk·L + (1 − wk)·gk·V, score = (p_AC + max(gk·V)) / 2.
    With one guidance switched off the other one is used alone.
    """
    if language is None and vision is None:
        raise ValueError("FADE needs language or vision guidance; both are off")
    if few_shot:
        weight, gain = params.few_shot_language_weight, params.few_shot_vision_gain
    else:
        weight, gain = params.zero_shot_language_weight, params.zero_shot_vision_gain
    if vision is None:
        amap, score = language, p_ac
    elif language is None:
        amap, score = gain * vision, float(np.max(gain * vision))
    else:
        amap = weight * language + (1.0 - weight) * (gain * vision)
        score = (p_ac + float(np.max(gain * vision))) / 2.0 if few_shot else p_ac
    assert amap is not None and score is not None
    return np.clip(amap, 0.0, 1.0).astype(np.float32), float(np.clip(score, 0.0, 1.0))


def estimated_cpu_seconds(scales: list[int]) -> float:
    """Rough CPU (2 cores, fp32) seconds per image for ViT-B/16+ at these scales (~cubic in size)."""
    return sum(CPU_SECONDS_AT_896 * (s / 896.0) ** 3 for s in scales)


def cpu_cost_warning(profile: ProductProfile, device: torch.device | str) -> str | None:
    """A warning when the profile's scales go beyond the fast preset on a CPU, else None."""
    if torch.device(device).type != "cpu":
        return None
    fast_max = max(SCALE_PRESETS["fast"])
    big = [s for s in profile.image_scales if s > fast_max]
    if not big:
        return None
    secs = estimated_cpu_seconds(profile.image_scales)
    return (
        f"profile {profile.name!r}: image scale {', '.join(str(s) for s in big)} runs on the CPU "
        f"(about {secs:.0f} s per image on 2 cores, several GB of memory); use the 'fast' preset "
        f"{SCALE_PRESETS['fast']} or a CUDA GPU for live inspection"
    )


# ---------------------------------------------------------------------------------- state
@dataclass
class TextMeans:
    """Mean normalised text embeddings of one ensemble (not re-normalised, fade.md)."""

    normal: torch.Tensor
    anomalous: torch.Tensor
    count: tuple[int, int]


@dataclass
class FadeAnalysis:
    """Threshold-independent result of :meth:`FadeEngine.analyse` for one image."""

    image_hw: tuple[int, int]
    few_shot: bool
    language: dict[int, np.ndarray] = field(default_factory=dict)  # scale -> grid map
    vision: dict[int, np.ndarray] = field(default_factory=dict)  # scale -> grid map
    p_ac: float | None = None
    timings: dict[str, float] = field(default_factory=dict)


class FadeEngine:
    """Everything FADE computes: prepared once per profile, then ``analyse`` + ``fuse`` per image."""

    def __init__(self, use_language: bool = True, use_vision: bool = True, cache: ArrayCache | None = None) -> None:
        self.use_language = use_language
        self.use_vision = use_vision
        self._cache = cache
        self.profile: ProductProfile | None = None
        self.clip: ClipModel | None = None
        self.scales: list[int] = []
        self.few_shot = False
        self.text_cls: TextMeans | None = None
        self.text_seg: TextMeans | None = None
        self.banks: dict[int, torch.Tensor] = {}

    @property
    def cache(self) -> ArrayCache:
        if self._cache is None:
            self._cache = ArrayCache()
        return self._cache

    # ------------------------------------------------------------------ prepare
    def prepare(self, profile: ProductProfile, hub: ModelHub, progress: Progress | None = None) -> None:
        report = progress or (lambda _f, _m: None)
        params = profile.fade
        if not (self.use_language or self.use_vision):
            raise ValueError(f"profile {profile.name!r}: fade.use_language and fade.use_vision are both off")
        report(0.0, "loading CLIP")
        clip = hub.get("clip", profile.models.clip)
        patch = clip.patch_size
        bad = [s for s in [*profile.image_scales, params.classification_scale] if s % patch]
        if bad:
            raise ValueError(
                f"profile {profile.name!r}: image_scales / fade.classification_scale {bad} are not multiples of "
                f"the CLIP patch size {patch}; use e.g. {SCALE_PRESETS['full']}"
            )
        warning = cpu_cost_warning(profile, clip.device)
        if warning:
            log.warning(warning)
        self.profile, self.clip = profile, clip
        self.scales = list(profile.image_scales)
        self.few_shot = bool(profile.reference_shots)
        self.text_cls = self.text_seg = None
        self.banks = {}
        if self.use_language:
            report(0.05, "encoding classification prompts")
            self.text_cls = self._text_means(classification_prompts(profile), params.text_template)
            report(0.2, "encoding segmentation prompts")
            self.text_seg = self._text_means(segmentation_prompts(profile), params.text_template)
        if self.use_vision and self.few_shot:
            self._prepare_banks(profile, lambda f, m: report(0.4 + 0.6 * f, m))
        report(1.0, "FADE ready")

    def _text_means(self, prompts: PromptSet, template: str) -> TextMeans:
        clip = self.clip
        assert clip is not None
        key = cache_key("fade-text", _CACHE_VERSION, clip.fingerprint, str(clip.dtype), template, prompts.content_hash())

        def compute() -> dict[str, np.ndarray]:
            log.info("encoding %d prompts with %s", len(prompts), clip.key)
            normal = clip.encode_text(encoder_texts(prompts.normal, template)).mean(dim=0)
            anomalous = clip.encode_text(encoder_texts(prompts.anomalous, template)).mean(dim=0)
            return {"normal": normal.cpu().numpy(), "anomalous": anomalous.cpu().numpy(),
                    "count": np.array([len(prompts.normal), len(prompts.anomalous)])}

        arrays = self.cache.get_or_compute(_TEXT_NS, key, compute)
        to_dev = lambda a: torch.as_tensor(a, dtype=torch.float32, device=clip.device)  # noqa: E731
        return TextMeans(to_dev(arrays["normal"]), to_dev(arrays["anomalous"]),
                         (int(arrays["count"][0]), int(arrays["count"][1])))

    def _prepare_banks(self, profile: ProductProfile, report: Progress) -> None:
        clip = self.clip
        assert clip is not None
        paths = profile.reference_paths()
        hashes = []
        for p in paths:
            try:
                hashes.append(file_sha256(p))
            except OSError as exc:
                raise FileNotFoundError(
                    f"profile {profile.name!r}: reference shot {p} cannot be read ({exc}); "
                    "add the image or remove it from reference_shots"
                ) from exc
        images: list[np.ndarray] | None = None
        for si, scale in enumerate(self.scales):
            key = cache_key("fade-bank", _CACHE_VERSION, clip.fingerprint, str(clip.dtype), scale, hashes)

            def compute(scale: int = scale, si: int = si) -> dict[str, np.ndarray]:
                nonlocal images
                if images is None:
                    images = [read_image(p) for p in paths]
                rows = []
                for k, img in enumerate(images):
                    report((si + k / len(images)) / len(self.scales), f"reference {k + 1}/{len(images)} at {scale}px")
                    rows.append(clip.encode_dense(clip.preprocess(img, scale)).clip_patches[0].cpu().numpy())
                return {"bank": np.concatenate(rows).astype(np.float32)}

            bank = self.cache.get_or_compute(_BANK_NS, key, compute)["bank"]
            self.banks[scale] = torch.as_tensor(bank, device=clip.device)
        report(1.0, f"{len(paths)} reference shots ready")

    # ------------------------------------------------------------------ per image
    def analyse(self, image: np.ndarray) -> FadeAnalysis:
        if self.clip is None or self.profile is None:
            raise RuntimeError("FADE is not prepared; call prepare(profile, hub) first")
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"FADE expects an RGB uint8 HxWx3 image, got {image.dtype} {image.shape}")
        clip, params = self.clip, self.profile.fade
        timer = StageTimer()
        out = FadeAnalysis(image_hw=(int(image.shape[0]), int(image.shape[1])), few_shot=self.few_shot)
        cls: torch.Tensor | None = None
        for scale in self.scales:
            with timer(f"gem_{scale}"):
                tokens = clip.encode_dense(clip.preprocess(image, scale))
            grid = tokens.grid
            if scale == params.classification_scale:
                cls = tokens.cls[0]
            if self.use_language:
                assert self.text_seg is not None
                with timer("language"):
                    p = text_anomaly_probability(tokens.gem_patches[0], self.text_seg.normal,
                                                 self.text_seg.anomalous, params.temperature)
                    out.language[scale] = p.reshape(grid).cpu().numpy()
            if self.use_vision:
                with timer("vision"):
                    if self.few_shot:
                        v = knn_distance(tokens.clip_patches[0], self.banks[scale], rank=1, chunk=params.knn_chunk)
                    else:
                        g = tokens.gem_patches[0]
                        v = knn_distance(g, g, rank=2, chunk=params.knn_chunk)
                    out.vision[scale] = v.reshape(grid).cpu().numpy()
        if self.use_language:
            assert self.text_cls is not None
            with timer("classification"):
                if cls is None:  # its own pass; the dense path resamples the positional table to any size
                    cls = clip.encode_dense(clip.preprocess(image, params.classification_scale)).cls[0]
                out.p_ac = float(text_anomaly_probability(cls, self.text_cls.normal, self.text_cls.anomalous,
                                                          params.temperature))
        out.timings = timer.timings
        return out

    def fuse(self, analysis: FadeAnalysis, params: FadeParams) -> tuple[np.ndarray, float]:
        """Fused map on the largest patch grid and the image score (cheap)."""
        language = fuse_scales(list(analysis.language.values())) if analysis.language else None
        vision = fuse_scales(list(analysis.vision.values())) if analysis.vision else None
        return fuse_guidance(language, vision, analysis.p_ac, analysis.few_shot, params)


# ---------------------------------------------------------------------------------- detector
class FadeDetector(Detector):
    """FADE as a station pipeline (language + vision guidance per ``profile.fade``)."""

    name = "fade"
    requires = ("clip",)
    default_eval_size = 448  # FADE's published protocol (evaluation.md)

    def __init__(self, cache: ArrayCache | None = None) -> None:
        super().__init__()
        self._cache = cache
        self.engine: FadeEngine | None = None

    def prepare(self, profile: ProductProfile, hub: ModelHub, progress: Progress | None = None) -> None:
        engine = FadeEngine(profile.fade.use_language, profile.fade.use_vision, cache=self._cache)
        engine.prepare(profile, hub, progress)
        self.engine, self.profile, self.hub = engine, profile, hub

    def analyse(self, image: np.ndarray) -> FadeAnalysis:
        if self.engine is None:
            raise RuntimeError("FadeDetector is not prepared; call prepare(profile, hub) first")
        return self.engine.analyse(image)

    def finish(self, analysis: FadeAnalysis, image: np.ndarray) -> Detection:
        assert self.engine is not None and self.profile is not None
        timer = StageTimer()
        with timer("fusion"):
            grid_map, score = self.engine.fuse(analysis, self.profile.fade)
            amap = np.clip(resize_map(grid_map, analysis.image_hw), 0.0, 1.0)
        with timer("regions"):
            decision = self.profile.decision
            regions = regions_from_map(amap, decision.region_threshold, decision.min_defect_area_px)
        extras = {"few_shot": analysis.few_shot, "p_ac": analysis.p_ac, "grid_map": grid_map,
                  "scales": sorted(set(analysis.language) | set(analysis.vision))}
        return Detection(anomaly_map=amap, image_score=score, regions=regions,
                         timings={**analysis.timings, **timer.timings}, extras=extras)

    def retune(self, profile: ProductProfile) -> None:
        self.profile = profile
        if self.engine is not None:
            self.engine.profile = profile


class FadeLanguageMap:
    """:class:`inspector.detect.clip_maps.ClipMapProvider`: FADE's language-guided GEM map.

    Language only by default (map = L_AS, score = p_AC); with ``fuse_vision=True`` and reference
    shots in the profile, the k-shot vision map is fused in with the FADE table.
    """

    name = "fade"

    def __init__(self, fuse_vision: bool = False, cache: ArrayCache | None = None) -> None:
        self.fuse_vision = fuse_vision
        self._cache = cache
        self.engine: FadeEngine | None = None
        self.profile: ProductProfile | None = None

    def prepare(self, profile: ProductProfile, hub: ModelHub, progress: Progress | None = None) -> None:
        use_vision = self.fuse_vision and bool(profile.reference_shots)
        engine = FadeEngine(use_language=True, use_vision=use_vision, cache=self._cache)
        engine.prepare(profile, hub, progress)
        self.engine, self.profile = engine, profile

    def __call__(self, image: np.ndarray) -> ClipMap:
        if self.engine is None or self.profile is None:
            raise RuntimeError("FadeLanguageMap is not prepared; call prepare(profile, hub) first")
        analysis = self.engine.analyse(image)
        timer = StageTimer()
        with timer("fusion"):
            grid_map, score = self.engine.fuse(analysis, self.profile.fade)
            amap = np.clip(resize_map(grid_map, analysis.image_hw), 0.0, 1.0)
        return ClipMap(anomaly_map=amap, image_score=score, timings={**analysis.timings, **timer.timings})
