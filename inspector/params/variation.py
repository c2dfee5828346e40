"""Weight-free reference pipeline tunables. Owned by ``inspector/detect/variation.py``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from inspector.params.base import Params


class VariationParams(Params):
    min_reference_shots = 1
    working_size: int = Field(256, ge=32, le=2048, description="images are resized to this square side")
    smoothing_sigma: float = Field(4.0, ge=0, description="Gaussian blur of the final map (px at working size)")
    alignment: Literal["auto", "none", "translation", "rigid"] = Field(
        "auto",
        description="register each image to the first reference shot: none (textures), translation, "
        "rigid (rotation + translation); auto picks none for textures and rigid for objects",
    )
    memory: Literal["auto", "local", "global"] = Field(
        "auto",
        description="local: compare each patch with the references' patches at the same place (± search "
        "radius) - objects and assemblies; global: with every reference patch - textures; auto follows "
        "the alignment choice",
    )
    max_rotation_deg: float = Field(20.0, ge=0, le=180, description="rigid alignment searches ± this angle")
    pyramid_levels: int = Field(2, ge=1, le=5, description="scales of the filter bank (each half the last)")
    feature_stride: int = Field(4, ge=1, le=16, description="px at working size between patch descriptors")
    search_radius: int = Field(1, ge=0, le=8, description="local memory: patches searched around the same place")
    coreset_ratio: float = Field(
        0.1, gt=0, le=1, description="global memory: fraction of reference patches kept (greedy coreset)"
    )
    max_memory: int = Field(2048, ge=16, description="global memory: at most this many patches (search time)")
    global_dims: int = Field(
        32, ge=0, le=256, description="global memory: descriptor dimensions kept (principal directions; 0 = all)"
    )
    photometric: bool = Field(True, description="match each image's brightness/contrast to the references")
    whitening: float = Field(
        0.9, ge=0, le=1,
        description="weight of the metric learned from how the references differ from each other "
        "(0 = plain standardised distance, 1 = full Mahalanobis on leave-one-out residuals)",
    )
    variation_model: bool = Field(
        True, description="local memory: score each place relative to how much the references vary there"
    )
    variation_sigma: float = Field(8.0, gt=0, description="smoothing of the per-place spread (px at working size)")
    border_margin: float = Field(
        8.0, ge=0,
        description="px near the edge of what an aligned image shows whose scores are faded out (the filter "
        "bank there also sees filled-in reference content)",
    )
    scale_fusion: Literal["joint", "mean", "max"] = Field(
        "joint",
        description="score each pyramid level on its own and fuse the normalised maps by mean or max; "
        "joint: one descriptor for all levels",
    )
    texture_threshold: float = Field(
        0.15, ge=0, le=1,
        description="auto: the references count as a texture when their coarse layout explains less than "
        "this share of the brightness variance",
    )
    calibration_margin: float = Field(
        1.3, gt=0,
        description="the map reaches 0.5 at this multiple of the worst leave-one-out reference score",
    )
