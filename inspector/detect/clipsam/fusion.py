"""SAM evidence, mask merging and the fused map F = eps A + (1 - eps) g E (see the package docstring)."""

from __future__ import annotations

import numpy as np
import torch

from inspector.detect.ppg import PointPrompts, mask_box


def sam_evidence(amap: np.ndarray, logits: torch.Tensor, sets: list[PointPrompts]) -> tuple[np.ndarray, np.ndarray,
                                                                                        np.ndarray]:
    """E = max_r σ(ℓ_r) · c_r with c_r = mean A inside mask r (package docstring); also the final
    masks (B×H×W bool) and the c_r."""
    prob = torch.sigmoid(logits).cpu().numpy().astype(np.float32)  # B×H×W
    masks = prob > 0.5  # SAM's mask_threshold 0 on the logits
    conf = np.zeros(len(sets), dtype=np.float32)
    for i, s in enumerate(sets):
        inside = amap[masks[i]]
        if inside.size == 0:
            x0, y0, x1, y1 = s.box
            inside = amap[y0 : y1 + 1, x0 : x1 + 1]
        conf[i] = float(inside.mean())
    evidence = (prob * conf[:, None, None]).max(axis=0)
    return evidence.astype(np.float32), masks, conf


def merge_overlapping(masks: np.ndarray) -> list[np.ndarray]:
    """Non-empty masks, those that share a pixel (transitively) OR-ed together; input order kept."""
    items = [m for m in masks if m.any()]
    boxes = [mask_box(m) for m in items]
    parent = list(range(len(items)))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for i in range(len(items)):
        for j in range(i + 1, len(items)):
            (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = boxes[i], boxes[j]  # type: ignore[misc]
            x0, y0, x1, y1 = max(ax0, bx0), max(ay0, by0), min(ax1, bx1), min(ay1, by1)
            if x0 > x1 or y0 > y1:
                continue
            if (items[i][y0 : y1 + 1, x0 : x1 + 1] & items[j][y0 : y1 + 1, x0 : x1 + 1]).any():
                parent[root(j)] = root(i)
    groups: dict[int, np.ndarray] = {}
    for i, m in enumerate(items):
        r = root(i)
        groups[r] = m.copy() if r not in groups else groups[r] | m
    return list(groups.values())


def fuse(amap: np.ndarray, evidence: np.ndarray | None, gate: bool, outside_weight: float) -> np.ndarray:
    """F = ε·A + (1 − ε)·g·E (package docstring)."""
    eps = float(outside_weight)
    fused = eps * np.asarray(amap, dtype=np.float32)
    if gate and evidence is not None:
        fused = fused + (1.0 - eps) * evidence
    return np.clip(fused, 0.0, 1.0).astype(np.float32)
