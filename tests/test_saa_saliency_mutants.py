"""SAA+ saliency (``inspector/detect/saa/saliency.py``): known answers for what mutmut found untested.

Expected values are worked out by hand or by naive float64 loops here (a bilinear resample written
out, eq. 5 as a sorted list, the instance comparison as a double loop). The chunked paths are run
with a tiny ``_CHUNK_ELEMENTS`` so that every row block is exercised on a 12-position image.
"""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest
import torch

from inspector.detect.saa import saliency
from inspector.detect.saa.saliency import instance_saliency, pixel_features, self_saliency


def _naive_bilinear(m: np.ndarray, h: int, w: int) -> np.ndarray:
    """C×H×W → C×h×w, bilinear with half-pixel centres (align_corners=False), edges clamped, float64."""
    c, hh, ww = m.shape
    out = np.zeros((c, h, w))
    for i in range(h):
        sy = min(max((i + 0.5) * hh / h - 0.5, 0.0), hh - 1)
        y0 = int(math.floor(sy))
        y1 = min(y0 + 1, hh - 1)
        fy = sy - y0
        for j in range(w):
            sx = min(max((j + 0.5) * ww / w - 0.5, 0.0), ww - 1)
            x0 = int(math.floor(sx))
            x1 = min(x0 + 1, ww - 1)
            fx = sx - x0
            out[:, i, j] = ((1 - fy) * ((1 - fx) * m[:, y0, x0] + fx * m[:, y0, x1])
                            + fy * ((1 - fx) * m[:, y1, x0] + fx * m[:, y1, x1]))
    return out


def _naive_pixel_features(maps: list[np.ndarray]) -> np.ndarray:
    h, w = maps[0].shape[1:]
    cat = np.concatenate([m if m.shape[1:] == (h, w) else _naive_bilinear(m, h, w) for m in maps], 0)
    flat = cat.reshape(cat.shape[0], -1).T
    return flat / np.linalg.norm(flat, axis=1, keepdims=True)


@pytest.mark.parametrize("first, others", [
    ((6, 6), [(6, 3), (3, 6), (3, 3)]),   # square first map: one side of a deeper map equals both h and w
    ((4, 6), [(4, 3), (2, 6), (4, 6)]),   # same height only, same width only, same size
])
def test_pixel_features_with_deeper_maps_sharing_one_side(first, others):
    rng = np.random.default_rng(sum(first))
    maps = [rng.random((c, *hw)) for c, hw in zip([3, 2, 4, 2], [first, *others])]
    got = pixel_features([torch.tensor(m[None], dtype=torch.float64) for m in maps])  # float64 in: float32 out
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), _naive_pixel_features(maps), atol=2e-6)
    pos = torch.tensor([[first[0] - 1, 0], [0, first[1] - 1], [1, 2]])
    want = _naive_pixel_features(maps)[(pos[:, 0] * first[1] + pos[:, 1]).numpy()]
    np.testing.assert_allclose(pixel_features([torch.tensor(m[None]) for m in maps], pos).numpy(), want, atol=2e-6)


def test_pixel_features_resample_without_a_warning():
    rng = np.random.default_rng(1)
    maps = [torch.tensor(rng.random((1, 2, 4, 4))), torch.tensor(rng.random((1, 2, 2, 2)))]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. grid_sample's "default align_corners changed" warning
        pixel_features(maps)


@pytest.mark.parametrize("shape", [(2, 3, 4, 4), (3, 4, 4), (1, 1, 3, 4, 4)])
def test_pixel_features_refuse_what_is_not_one_feature_map(shape):
    with pytest.raises(ValueError, match=r"expected 1×C×h×w feature maps, got " + re.escape(str(shape))):
        pixel_features([torch.zeros(shape)])


def test_self_saliency_of_tiny_images_by_hand():
    assert self_saliency(torch.zeros(0, 3), 5).shape == (0,)
    np.testing.assert_array_equal(self_saliency(torch.tensor([[1.0, 0.0]]), 5).numpy(), [0.0])
    # two positions: each one's only neighbour is the other, s = 1 - cos 60° = 0.5
    two = torch.tensor([[1.0, 0.0], [0.5, math.sqrt(3) / 2]])
    np.testing.assert_allclose(self_saliency(two, 5).numpy(), [0.5, 0.5], atol=1e-6)
    # N = 0 is read as N = 1: the distance to the nearest other position
    three = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    np.testing.assert_allclose(self_saliency(three, 0).numpy(), [0.2, 0.2, 0.4], atol=1e-6)


def _naive_self_saliency(f: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros(len(f))
    for i in range(len(f)):
        d = sorted(1.0 - float(f[i] @ f[j]) for j in range(len(f)) if j != i)
        out[i] = np.mean(d[:n])
    return out


@pytest.mark.parametrize("chunk", [12, 30, 60])  # 1, 2 and 5 rows per block of a 12-position image
def test_self_saliency_in_row_blocks(monkeypatch, chunk):
    monkeypatch.setattr(saliency, "_CHUNK_ELEMENTS", chunk)
    rng = np.random.default_rng(chunk)
    f = np.abs(rng.normal(size=(12, 4)))
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    got = self_saliency(torch.tensor(f, dtype=torch.float32), 3).numpy()
    np.testing.assert_allclose(got, _naive_self_saliency(f, 3), atol=1e-5)


def _naive_instance_saliency(feats: np.ndarray, masks: np.ndarray) -> np.ndarray:
    n = len(masks)
    want = np.zeros(feats.shape[1:])
    for i in range(n):
        others = masks[[k for k in range(n) if k != i]].any(0) & ~masks[i]
        if not others.any():
            continue
        for y, x in zip(*np.nonzero(masks[i])):
            best = max(float(feats[:, y, x] @ feats[:, yy, xx]) for yy, xx in zip(*np.nonzero(others)))
            want[y, x] = max(want[y, x], 1.0 - best)
    return want


@pytest.mark.parametrize("chunk", [1, 4, 1 << 24])
def test_instance_saliency_with_an_empty_instance_overlaps_and_row_blocks(monkeypatch, chunk):
    """2 instances plus an empty one first, on a 3×5 grid (n ≠ h); instances 1 and 2 overlap."""
    monkeypatch.setattr(saliency, "_CHUNK_ELEMENTS", chunk)
    rng = np.random.default_rng(7)
    c, h, w = 4, 3, 5
    feats = np.abs(rng.normal(size=(c, h, w)))
    feats /= np.linalg.norm(feats, axis=0, keepdims=True)
    masks = np.zeros((3, h, w), bool)  # masks[0] stays empty
    masks[1, :, :3] = True
    masks[2, :2, 2:] = True  # overlaps instance 1 in column 2
    got = instance_saliency(torch.tensor(feats, dtype=torch.float32), torch.tensor(masks)).numpy()
    want = _naive_instance_saliency(feats, masks)
    assert want[1, 0] > 0 and want[0, 4] > 0 and want[2, 4] == 0  # both instances score; outside is 0
    np.testing.assert_allclose(got, want, atol=1e-5)
    two = instance_saliency(torch.tensor(feats, dtype=torch.float32), torch.tensor(masks[1:])).numpy()
    np.testing.assert_allclose(two, _naive_instance_saliency(feats, masks[1:]), atol=1e-5)
