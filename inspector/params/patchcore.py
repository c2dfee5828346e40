"""PatchCore-class few-shot pipeline tunables. Owned by ``inspector/detect/patchcore/``.

The defaults serve textures and objects alike (they are what ``inspector eval --pipeline
patchcore`` runs without a profile); measured figures are in the README and ``bench/real.py``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from inspector.params.base import Params


class PatchCoreParams(Params):
    backbone: Literal["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "wide_resnet50_2"] = Field(
        "efficientnet_lite0",
        description="model-store key of the ImageNet CNN whose mid-level features describe each patch "
        "(lite0 ships with Inspector; lite1/lite2 with the `backbones` extra; wide_resnet50_2, PatchCore's own "
        "backbone, once a site has installed its weights (`inspector models import` from the offline bundle, or "
        "`inspector models download wide_resnet50_2`), with "
        "layers [2, 3] as in the paper)",
    )
    layers: list[int] = Field(
        [1, 2], min_length=1, max_length=3,
        description="backbone stages whose features are concatenated (1: stride 4, 2: stride 8, 3: stride 16); "
        "PatchCore uses two mid-level stages; strides 4+8 (default) measured better on small defects than 8+16",
    )
    input_size: int = Field(
        320, ge=64, le=1024, multiple_of=16,
        description="px: the image (or each tile) is resized to this square side before the backbone",
    )
    patch_neighbourhood: int = Field(
        3, ge=1, le=7, description="PatchCore's p: features are averaged over a p×p neighbourhood (odd)",
    )
    feature_norm: Literal["layer_l2", "none"] = Field(
        "layer_l2",
        description="layer_l2: each stage's aggregated feature is scaled to unit length before concatenation "
        "(every stage weighs the same; measured: ball-screw pixel AP 0.30 -> 0.69); none: raw features (PatchCore)",
    )
    colour_weight: float = Field(
        2.0, ge=0, le=16,
        description="weight of each patch's mean L*a*b* colour appended to its features (0 = off); ImageNet "
        "features normalised per layer miss flat stains and discolouration (measured on the demo fabric: "
        "image AUROC 0.938 at 0, 0.981 at 2, 1.0 at 4; ball screw unchanged)",
    )
    augment: Literal["auto", "none", "flips", "rot90", "dihedral"] = Field(
        "auto",
        description="copies of each reference shot added to the memory: flips (h, v), rot90 (0/90/180/270°), "
        "dihedral (all 8); none for fixed assemblies; auto: dihedral for textures, none for objects",
    )
    texture_threshold: float = Field(
        0.12, ge=0, le=1,
        description="auto augment: the references count as a texture when their coarse layout explains less "
        "than this share of the brightness variance",
    )
    memory: Literal["auto", "global", "local"] = Field(
        "auto",
        description="global: every test patch takes its nearest reference patch anywhere (PatchCore; textures, "
        "loose parts); local: only reference patches within local_radius cells of the same place (fixed "
        "assemblies: a missing part is found); auto: global for textures; for objects local when one whole part "
        "lies on a clean background (it is then aligned) or the shots agree in place (see local_agreement), "
        "global otherwise",
    )
    local_agreement: float = Field(
        1.09, ge=1, le=10,
        description="memory auto, objects: the shots agree in place when, leave-one-out, their patches' 99th-"
        "percentile distance to the same place of the other shots (local_radius) is at most this multiple of "
        "that to anywhere in them; else global memory (measured, demo pcb 1.03 / 1.07 / 1.15 at 8 / 4 / 2 "
        "shots, ball screw 1.10 / 1.13 / 1.67, DeepPCB boards at 4 shots 2.2-4.8); a single shot cannot "
        "show it: global",
    )
    pose_jitter_deg: float = Field(
        0.0, ge=0, le=90,
        description="local memory: each reference is also stored turned by up to ± this many degrees about the "
        "image centre, for parts that lie with some rotation (measured on the demo washer, 4 shots, ±20°: "
        "image AUROC 0.875 -> 0.963); 0 = off",
    )
    pose_jitter_steps: int = Field(2, ge=1, le=8, description="local memory: turned copies per side of pose_jitter_deg")
    alignment: Literal["auto", "none", "translation", "rigid"] = Field(
        "auto",
        description="local memory: every image and reference is first registered to the first reference "
        "(phase correlation, rotation search, ECC; the map is drawn back in the image's own frame); "
        "auto: rigid when every reference shows one whole part on a clean background (see background), else "
        "none (measured, 4 shots: demo washer image AUROC 0.875 -> 0.938 at local_radius 1; the ball screw, "
        "whose periodic thread misleads registration, 0.806 -> 0.768)",
    )
    max_rotation_deg: float = Field(20.0, ge=0, le=180, description="rigid alignment searches ± this angle")
    background: Literal["auto", "keep", "mask"] = Field(
        "auto",
        description="local memory: mask (score only where the references show the part, grown by "
        "background_margin_px) or keep the background; auto masks when every reference shows one whole part on "
        "a background that separates cleanly (Otsu separability >= background_separability) and keeps it "
        "otherwise (boards, webs, parts that fill the frame); defects off the part are then not reported "
        "(measured on the demo washer with rigid alignment: image AUROC 0.938 -> 1.0)",
    )
    background_separability: float = Field(
        0.8, ge=0, le=1, description="background auto: Otsu's η the part/background split must reach",
    )
    background_margin_px: int = Field(
        12, ge=0, le=256, description="px at input size by which the part's mask is grown (chipped outlines count)",
    )
    local_radius: int | None = Field(
        None, ge=0, le=16,
        description="local memory: cells (of the feature grid) searched around the same place; empty (auto): 1 "
        "when the images are aligned, 3 otherwise (measured on the demo washer, aligned: image AUROC 1.0 at 1, "
        "0.981 at 3)",
    )

    max_bank: int = Field(
        16384, ge=256, le=1_000_000,
        description="memory-bank patches kept; a larger bank is thinned by greedy coreset subsampling",
    )
    coreset_dims: int = Field(32, ge=8, le=512, description="random-projection dimensions for the coreset selection")
    coreset_rounds: int = Field(
        256, ge=1, le=65536,
        description="coreset: greedy selection in this many rounds (each takes max_bank/rounds farthest patches; "
        "exact greedy when rounds >= max_bank); fewer rounds prepare faster",
    )
    coreset_candidates: int = Field(
        4, ge=1, le=64, description="coreset: choose among this many times max_bank patches drawn at random "
        "(bounds prepare time for large banks)",
    )
    coreset_part_size: int = Field(
        8192, ge=256, le=1_000_000,
        description="coreset: the candidates are split at random into parts of at most this many patches, each "
        "giving its share of the bank (a composable coreset; the cost falls with the number of parts; measured "
        "on 65k fabric patches: parts of 8192 keep the covering radius within 2 % of one greedy pass, 9x faster)",
    )
    search: Literal["ivf", "exact"] = Field(
        "ivf",
        description="global memory search: ivf visits only the ivf_probes k-means lists nearest to each patch "
        "(measured 3-6x faster on a 16k bank; a missed neighbour can only raise a score); exact: every bank patch",
    )
    ivf_list_size: int = Field(128, ge=16, le=65536, description="ivf: bank patches per k-means list (about)")
    ivf_probes: int = Field(
        8, ge=1, le=4096, description="ivf: lists searched per test patch (more: slower, closer to exact)",
    )
    reweight_neighbours: int = Field(
        3, ge=0, le=32, description="PatchCore's b: neighbours of the nearest memory patch used to reweight "
        "the image score (0 = off)",
    )
    smoothing_sigma: float = Field(4.0, ge=0, le=32, description="Gaussian blur of the map (px at input size)")
    image_score: Literal["max", "top_mean"] = Field(
        "max", description="max: the map's maximum (PatchCore); top_mean: mean of its top_fraction highest cells",
    )
    top_fraction: float = Field(0.01, gt=0, le=0.5, description="top_mean: share of map cells averaged")
    calibration_margin: float = Field(
        1.25, gt=0, le=10,
        description="the map reaches 0.5 at this multiple of the leave-one-out reference score (calibration_statistic)",
    )
    calibration_statistic: Literal["median", "worst"] = Field(
        "median",
        description="which leave-one-out score of the reference shots sets the scale: median (one unusual shot "
        "does not lift the cut; measured on the demo washer: worst 1.06 vs median 0.75, good parts 0.61-0.69) "
        "or worst (no reference would FAIL)",
    )
    zero_shot_ratio: float = Field(
        2.5, gt=1, le=50,
        description="0-shot (no reference shots): the map reaches 0.5 where a patch is this many times "
        "farther from the rest of its own image than the image's median patch",
    )
    zero_shot_exclusion_px: int = Field(
        24, ge=0, le=256,
        description="0-shot: patches closer than this (px at input size) are not compared, so a defect "
        "cannot vouch for itself; defects larger than this score lower",
    )
    tiling: Literal["auto", "off", "on"] = Field(
        "auto",
        description="tiled inference at native resolution: auto tiles images whose long side exceeds "
        "tile_size × tile_trigger",
    )
    tile_size: int = Field(512, ge=64, le=4096, description="px of the original image per tile")
    tile_overlap: float = Field(0.25, ge=0, lt=0.9, description="share of a tile overlapping its neighbour")
    tile_trigger: float = Field(3.0, ge=1, le=64, description="auto tiling: long side / tile_size above this tiles")
    tile_batch: int = Field(4, ge=1, le=64, description="tiles per backbone call (bounds memory)")

    @model_validator(mode="after")
    def _check(self) -> PatchCoreParams:
        if self.patch_neighbourhood % 2 == 0:
            raise ValueError(f"patch_neighbourhood must be odd, got {self.patch_neighbourhood}")
        if sorted(set(self.layers)) != self.layers or not all(1 <= i <= 3 for i in self.layers):
            raise ValueError(f"layers must be increasing stage numbers among 1, 2, 3, got {self.layers}")
        return self

    def radius(self, aligned: bool) -> int:
        """The positional search radius in cells (``local_radius``, or its automatic value)."""
        if self.local_radius is not None:
            return self.local_radius
        return 1 if aligned else 3

    @property
    def feature_stride(self) -> int:
        """Stride (px at input size) of the patch grid: that of the first (finest) layer."""
        return 2 ** (self.layers[0] + 1)
