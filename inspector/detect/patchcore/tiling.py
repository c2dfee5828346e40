"""Tiles over a large image and their seamless stitching (pure numpy).

Frame: tiles are ``(y0, x0, size)`` squares in original image pixels; the last tile of a row or
column is shifted back to end at the border, so every tile is full size (images smaller than a
tile get one tile, padded by the caller).
"""

from __future__ import annotations

import math

import numpy as np


def tile_starts(length: int, tile: int, overlap: float) -> list[int]:
    """Start offsets of tiles of ``tile`` px covering ``[0, length)`` with at least ``overlap`` share overlap."""
    if tile >= length:
        return [0]
    step = max(1, int(tile * (1.0 - overlap)))
    n = math.ceil((length - tile) / step) + 1
    starts = [min(i * step, length - tile) for i in range(n)]
    return sorted(set(starts))


def tile_grid(height: int, width: int, tile: int, overlap: float) -> list[tuple[int, int]]:
    """``(y0, x0)`` of every tile, row-major."""
    return [(y, x) for y in tile_starts(height, tile, overlap) for x in tile_starts(width, tile, overlap)]


def blend_window(size: int, floor: float = 1e-3) -> np.ndarray:
    """Separable weights ``(size, size)``: a raised cosine, highest at the centre, ``floor`` at the edge.

    Overlapping tiles are averaged with these weights, so each pixel is dominated by the tile
    that sees it most centrally and no seam appears where one tile ends."""
    t = (np.arange(size, dtype=np.float64) + 0.5) / size
    ramp = np.maximum(np.sin(np.pi * t), floor)
    return np.outer(ramp, ramp).astype(np.float32)


class Stitcher:
    """Accumulates tile maps into one map: ``Σ wᵢ·mᵢ / Σ wᵢ`` (memory: two float32 maps)."""

    def __init__(self, height: int, width: int) -> None:
        self.acc = np.zeros((height, width), np.float32)
        self.weight = np.zeros((height, width), np.float32)

    def add(self, y0: int, x0: int, tile_map: np.ndarray) -> None:
        h, w = tile_map.shape
        win = blend_window(h) if h == w else np.outer(blend_window(h)[:, h // 2], blend_window(w)[w // 2])
        hh, ww = min(h, self.acc.shape[0] - y0), min(w, self.acc.shape[1] - x0)
        self.acc[y0:y0 + hh, x0:x0 + ww] += (tile_map * win)[:hh, :ww]
        self.weight[y0:y0 + hh, x0:x0 + ww] += win[:hh, :ww]

    def result(self) -> np.ndarray:
        return self.acc / np.maximum(self.weight, 1e-12)
