"""Working image, photometric matching and the multi-scale filter bank (pure functions; L*a*b*: detect/colour.py)."""

from __future__ import annotations

import cv2
import numpy as np


def to_working(image: np.ndarray, size: int) -> np.ndarray:
    """RGB uint8 → float32 RGB in [0, 1] at ``size``×``size`` (area filter when shrinking)."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB image HxWx3, got shape {image.shape}")
    h, w = image.shape[:2]
    interp = cv2.INTER_AREA if h > size and w > size else cv2.INTER_LINEAR
    img = image if (h, w) == (size, size) else cv2.resize(image, (size, size), interpolation=interp)
    return img.astype(np.float32) / 255.0


def match_photometry(lab: np.ndarray, ref_mean: np.ndarray, ref_std: np.ndarray) -> np.ndarray:
    """Gain/offset of L and offset of a, b so the image's statistics match the references'."""
    out = lab.copy()
    mean = lab.reshape(-1, 3).mean(0)
    std_l = float(lab[..., 0].std())
    gain = float(ref_std[0]) / max(std_l, 1e-3)
    gain = min(max(gain, 0.5), 2.0)  # a real change of contrast is an anomaly, not lighting
    out[..., 0] = (lab[..., 0] - mean[0]) * gain + ref_mean[0]
    out[..., 1:] += ref_mean[1:] - mean[1:]
    return out


def filter_bank(lab: np.ndarray, levels: int, stride: int) -> np.ndarray:
    """Multi-scale colour/gradient responses averaged over ``stride``-px cells: (D, H/stride, W/stride).

    Per pyramid level: smoothed L, a, b; signed and absolute first derivatives of L; the absolute
    Laplacian of L (blobs, thin lines); the chroma gradient magnitude (colour edges).
    """
    h, w = lab.shape[:2]
    out_hw = (max(1, h // stride), max(1, w // stride))
    feats: list[np.ndarray] = []
    cur = np.ascontiguousarray(lab, dtype=np.float32)
    for _ in range(levels):
        sm = cv2.GaussianBlur(cur, (0, 0), 1.0)
        lum = sm[..., 0]
        gx = cv2.Sobel(lum, cv2.CV_32F, 1, 0, ksize=3) * 0.125
        gy = cv2.Sobel(lum, cv2.CV_32F, 0, 1, ksize=3) * 0.125
        lap = cv2.Laplacian(lum, cv2.CV_32F, ksize=3) * 0.25
        ca = cv2.Sobel(sm[..., 1], cv2.CV_32F, 1, 0, ksize=3) ** 2 + cv2.Sobel(sm[..., 1], cv2.CV_32F, 0, 1, ksize=3) ** 2
        cb = cv2.Sobel(sm[..., 2], cv2.CV_32F, 1, 0, ksize=3) ** 2 + cv2.Sobel(sm[..., 2], cv2.CV_32F, 0, 1, ksize=3) ** 2
        chroma = np.sqrt(ca + cb) * 0.125
        maps = [sm[..., 0], sm[..., 1], sm[..., 2], gx, gy, np.abs(gx), np.abs(gy), np.abs(lap), chroma]
        lh, lw = cur.shape[:2]
        interp = cv2.INTER_AREA if lh >= out_hw[0] else cv2.INTER_LINEAR
        stack = np.stack(maps, axis=-1)
        feats.append(cv2.resize(stack, (out_hw[1], out_hw[0]), interpolation=interp).reshape(out_hw[0], out_hw[1], -1))
        if min(lh, lw) < 8:
            break
        cur = cv2.pyrDown(cur)
    grid = np.concatenate(feats, axis=-1)
    # local neighbourhood aggregation (PatchCore eq. 2 with a 3x3 box): shift-tolerant context
    context = cv2.blur(grid, (3, 3), borderType=cv2.BORDER_REFLECT)
    return np.ascontiguousarray(np.concatenate([grid, context], axis=-1).transpose(2, 0, 1))


def scale_groups(dims: int, separate: bool, per_level: int = 9) -> np.ndarray:
    """Scale index of each descriptor dimension in :func:`filter_bank`'s layout ([grid L0..Ln, context L0..Ln]).

    With ``separate`` each pyramid level (its cell and context responses) is scored on its own and
    the per-scale maps are fused; otherwise all dimensions form one descriptor.
    """
    if not separate or dims % (2 * per_level):
        return np.zeros(dims, np.int64)
    levels = dims // (2 * per_level)
    per = np.repeat(np.arange(levels), per_level)
    return np.concatenate([per, per]).astype(np.int64)
