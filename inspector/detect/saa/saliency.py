"""SAA+ anomaly saliency (paper eq. 5) from CNN features, vectorised, on torch tensors.

Features: the backbone's stages (WideResNet50-2 layers 1-3 by default) resampled bilinearly to the
first stage's grid, concatenated per position and L2-normalised. Saliency of a position is the mean
cosine distance to its N nearest neighbours among the image's other positions:

    s_ij = 1/N * sum_{f in N_p(f_ij)} (1 - <f_ij, f>)                        (eq. 5)

With ReLU features (non-negative) the cosine lies in [0, 1], so s lies in [0, 1].

Reference-code departures (following the paper): the reference averages 0.5 (1 - cos) over the 400
*farthest* positions; here it is 1 - cos over the N *nearest* (the paper's N_p), the position
itself excluded. For multi-instance products (object count > 1) the reference compares each
instance's pixels with the other instances' pixels (1-NN) in per-pixel Python loops; here the same
comparison is one matrix product per instance, in row chunks that bound memory.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

_CHUNK_ELEMENTS = 1 << 24  # rows x keys per similarity block (64 MiB in fp32)


def grid_positions(h: int, w: int, device: torch.device | None = None) -> torch.Tensor:
    """All (row, col) positions of an h×w grid, row-major: (h*w)×2 long."""
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    return torch.stack([ys.reshape(-1), xs.reshape(-1)], 1)


def pixel_features(feats: Sequence[torch.Tensor], positions: torch.Tensor | None = None) -> torch.Tensor:
    """P×C L2-normalised features at ``positions`` (row, col) of the first map's grid (all by default).

    Deeper maps are sampled bilinearly at the grid positions (the same values as upsampling them to
    the first map's size with ``align_corners=False`` and reading those positions).
    """
    first = feats[0]
    if first.ndim != 4 or first.shape[0] != 1:
        raise ValueError(f"expected 1×C×h×w feature maps, got {tuple(first.shape)}")
    h, w = int(first.shape[2]), int(first.shape[3])
    if positions is None:
        positions = grid_positions(h, w, first.device)
    pos = positions.to(first.device).float()
    # normalised coordinates of grid cell centres in [-1, 1] (x first for grid_sample)
    gx = (pos[:, 1] + 0.5) / w * 2 - 1
    gy = (pos[:, 0] + 0.5) / h * 2 - 1
    grid = torch.stack([gx, gy], 1).view(1, 1, -1, 2)
    parts = []
    for f in feats:
        f = f.float()
        if f.shape[2] == h and f.shape[3] == w:
            parts.append(f[0][:, positions[:, 0].to(f.device), positions[:, 1].to(f.device)].T)
        else:
            sampled = F.grid_sample(f, grid.to(f.dtype), mode="bilinear", padding_mode="border", align_corners=False)
            parts.append(sampled[0, :, 0, :].T)
    return F.normalize(torch.cat(parts, 1), dim=1)


def self_saliency(features: torch.Tensor, n_neighbors: int) -> torch.Tensor:
    """Eq. 5: mean (1 - cos) to the N nearest other positions, for every row of P×C features."""
    p = int(features.shape[0])
    if p < 2:
        return torch.zeros(p, device=features.device)
    n = max(1, min(int(n_neighbors), p - 1))
    out = torch.empty(p, device=features.device)
    rows = max(1, _CHUNK_ELEMENTS // p)
    for start in range(0, p, rows):
        sims = features[start : start + rows] @ features.T
        top = sims.topk(n + 1, dim=1).values  # the position itself is among the n+1 most similar
        out[start : start + rows] = 1.0 - (top.sum(1) - top[:, 0]) / n
    return out


def instance_saliency(features: torch.Tensor, instance_masks: torch.Tensor) -> torch.Tensor:
    """Multi-instance saliency on a grid: each instance's positions against the other instances'.

    ``features`` C×h×w (L2-normalised per position), ``instance_masks`` n×h×w bool. A position of
    instance i scores 1 - max cos to the positions of the other instances (their union minus
    instance i, so duplicates of instance i do not match it); positions outside every instance
    score 0; where instances overlap the maximum is kept. Returns h×w.
    """
    c, h, w = features.shape
    flat = features.reshape(c, -1).T  # P×C
    masks = instance_masks.reshape(instance_masks.shape[0], -1).bool()
    out = torch.zeros(h * w, device=features.device)
    for i in range(masks.shape[0]):
        own = masks[i]
        others = masks[torch.arange(masks.shape[0], device=masks.device) != i].any(0) & ~own
        if not own.any() or not others.any():
            continue
        q_idx = own.nonzero().squeeze(1)
        keys = flat[others]
        rows = max(1, _CHUNK_ELEMENTS // keys.shape[0])
        for start in range(0, q_idx.numel(), rows):
            idx = q_idx[start : start + rows]
            best = (flat[idx] @ keys.T).max(1).values
            out[idx] = torch.maximum(out[idx], 1.0 - best)
    return out.view(h, w)
