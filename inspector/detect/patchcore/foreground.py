"""The object's extent in the references: what is *not* the background the part lies on.

Pure numpy/OpenCV on RGB uint8 images already in one frame (the first reference's, after
alignment). The background is read as what the image border shows: each pixel's L*a*b*
distance to the border's median colour is split in two by Otsu's threshold (Otsu 1979), and
the split is trusted only when it shows one part lying whole on a background: Otsu's
separability η = σ²_between / σ²_total (Otsu 1979, his criterion η) reaches ``min_separability``,
the object is one piece (its largest connected component holds ``ONE_PIECE`` of it), it does not
touch the image border, and it covers a sensible share of the frame. A part that fills or
leaves the frame (a ball screw, a board, a web) has no such split, and nothing is masked:
measured on the shared sets, only the demo washer qualifies (boards: traces run off the edge and
fall in many pieces; textures and the ball screw: η 0.69–0.75).
"""

from __future__ import annotations

import cv2
import numpy as np

from inspector.detect.colour import to_lab

BORDER_SHARE = 0.03  # width of the frame read as background, as a share of the image side
MIN_OBJECT_SHARE = 0.02  # an "object" smaller than this share of the frame is noise, not a part
MAX_OBJECT_SHARE = 0.9  # an "object" larger than this leaves no background worth masking
ONE_PIECE = 0.9  # share of the object in its largest connected component
MAX_BORDER_TOUCH = 0.005  # share of the border frame's pixels the object may cover (a part seen whole)


def border_contrast(rgb: np.ndarray) -> np.ndarray:
    """Each pixel's L*a*b* distance (ΔE 1976) to the median colour of the image's outer frame, float32 H×W."""
    lab = to_lab(cv2.GaussianBlur(rgb, (0, 0), 2.0).astype(np.float32) / 255.0)
    frame = np.stack([border_frame(lab[..., c]) for c in range(3)], axis=1)
    return np.linalg.norm(lab - np.median(frame, axis=0), axis=2).astype(np.float32)


def otsu_split(values: np.ndarray) -> tuple[float, float]:
    """Otsu's threshold of ``values`` (OpenCV's, on the values scaled to 0–255) and its separability
    η = σ²_B / σ²_T in [0, 1], from the raw values of the two classes. Constant input: (that value, 0)."""
    v = np.asarray(values, np.float64).ravel()
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        return lo, 0.0
    levels = np.round((v - lo) / (hi - lo) * 255.0).astype(np.uint8)
    level, _ = cv2.threshold(levels.reshape(1, -1), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    upper = levels > level
    threshold = lo + (level + 0.5) / 255.0 * (hi - lo)  # between the last lower and the first upper level
    w1 = float(upper.mean())
    if w1 in (0.0, 1.0):
        return threshold, 0.0
    between = w1 * (1.0 - w1) * (float(v[upper].mean()) - float(v[~upper].mean())) ** 2
    return threshold, between / float(v.var())


def border_frame(mask: np.ndarray) -> np.ndarray:
    """The values of the image's outer frame (``BORDER_SHARE`` of the side wide), flattened."""
    h, w = mask.shape[:2]
    b = max(2, int(round(BORDER_SHARE * min(h, w))))
    return np.concatenate([mask[:b].ravel(), mask[-b:].ravel(), mask[b:-b, :b].ravel(), mask[b:-b, -b:].ravel()])


def is_whole_part(obj: np.ndarray) -> bool:
    """One piece, clear of the border, neither a speck nor the whole frame (bool H×W object pixels)."""
    share = float(obj.mean())
    if not MIN_OBJECT_SHARE <= share <= MAX_OBJECT_SHARE:
        return False
    if float(border_frame(obj).mean()) > MAX_BORDER_TOUCH:
        return False
    _, _, stats, _ = cv2.connectedComponentsWithStats(obj.astype(np.uint8), connectivity=8)
    return float(stats[1:, cv2.CC_STAT_AREA].max()) >= ONE_PIECE * float(obj.sum())


def object_mask(images: list[np.ndarray], min_separability: float, margin_px: int) -> np.ndarray | None:
    """Where the part can be, as a bool H×W mask (the union over the references, grown by
    ``margin_px`` so that a chipped or bent outline still counts), or ``None`` when any
    reference's background does not separate cleanly from its object."""
    union: np.ndarray | None = None
    for rgb in images:
        contrast = border_contrast(rgb)
        threshold, eta = otsu_split(contrast)
        obj = contrast > threshold
        if eta < min_separability or not is_whole_part(obj):
            return None
        union = obj if union is None else union | obj
    if union is None:
        return None
    if margin_px > 0:
        k = 2 * margin_px + 1
        union = cv2.dilate(union.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))) > 0
    return union
