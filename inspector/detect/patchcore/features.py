"""Locally aware patch features (PatchCore §3.1), pure torch functions.

Frame: a feature map ``(B, C, h, w)`` of stride ``s`` covers the network input; cell (i, j)
describes the input pixels around ``((j + 0.5)·s, (i + 0.5)·s)``. Every map handed on is on the
grid of the finest layer used.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from inspector.detect.colour import to_lab

LAB_SCALE = (100.0, 128.0, 128.0)  # CIE L*a*b* ranges: L* 0..100, a*/b* about ±128


def aggregate(feature: torch.Tensor, p: int) -> torch.Tensor:
    """Average each cell over its p×p neighbourhood, same grid (PatchCore eq. 3, adaptive average pooling).

    Border cells average only the cells that exist (``count_include_pad=False``)."""
    if p <= 1:
        return feature
    return F.avg_pool2d(feature, kernel_size=p, stride=1, padding=p // 2, count_include_pad=False)


def embed(features: list[torch.Tensor], p: int, layer_l2: bool = False) -> torch.Tensor:
    """Aggregate every layer, bring coarser layers to the finest grid (bilinear), concatenate channels.

    Returns ``(B, ΣC, h0, w0)`` on the grid of ``features[0]`` (PatchCore eq. 3 + the layer union of §3.1).
    ``layer_l2``: divide each layer's cell vector by its L2 norm first, so every layer weighs the
    same in the distance and contrast (lighting) changes of the part scale no feature.
    """
    if not features:
        raise ValueError("embed needs at least one feature map")
    size = features[0].shape[-2:]
    out = []
    for f in features:
        a = aggregate(f.float(), p)
        if layer_l2:
            a = a / a.norm(dim=1, keepdim=True).clamp_min(1e-6)
        if a.shape[-2:] != size:
            a = F.interpolate(a, size=size, mode="bilinear", align_corners=False)
        out.append(a)
    return torch.cat(out, dim=1)


def to_patches(grid: torch.Tensor) -> torch.Tensor:
    """``(B, D, h, w)`` → ``(B·h·w, D)``, rows in (b, i, j) order."""
    b, d, h, w = grid.shape
    return grid.permute(0, 2, 3, 1).reshape(b * h * w, d).contiguous()


def colour_grid(images: list[np.ndarray], size: tuple[int, int], p: int) -> torch.Tensor:
    """Mean CIE L*a*b* colour of each cell, ``(B, 3, h, w)``, each channel divided by its range.

    ImageNet features normalised per layer keep texture and shape but little of a patch's
    absolute brightness and colour, so a flat stain can match a clean patch. The colour of the
    cell (area-averaged to the grid, then the same p×p aggregation as eq. 3) is appended to the
    patch feature, weighted by the profile's ``colour_weight``. ``images`` are RGB uint8 at input size."""
    h, w = size
    out = []
    for im in images:
        lab = to_lab(im.astype(np.float32) / 255.0)
        lab = cv2.resize(lab, (w, h), interpolation=cv2.INTER_AREA)
        out.append(torch.from_numpy(np.ascontiguousarray(lab)).permute(2, 0, 1))
    grid = torch.stack(out) / torch.tensor(LAB_SCALE).view(1, 3, 1, 1)
    return aggregate(grid, p)
