"""Registration of an image to the first reference shot: phase correlation, rotation search, ECC.

Shared by the methods that compare a part with its references at the same place (``variation``'s
variation model, ``patchcore``'s positional memory).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

ALIGN_SIZE = 128  # px side of the images used for registration

ROTATION_STEP_DEG = 2.0

ECC_STARTS = 3  # rigid alignment refines this many distinct angles of the search


def align_image(rgb01: np.ndarray) -> np.ndarray:
    """Standardised edge strength at ALIGN_SIZE²: what registration matches (robust to lighting)."""
    grey = cv2.cvtColor(rgb01, cv2.COLOR_RGB2GRAY)
    grey = cv2.resize(grey, (ALIGN_SIZE, ALIGN_SIZE), interpolation=cv2.INTER_AREA)
    grey = cv2.GaussianBlur(grey, (0, 0), 1.0)
    edges = cv2.magnitude(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1))
    return ((edges - edges.mean()) / (edges.std() + 1e-6)).astype(np.float32)


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    return float((a * b).sum() / (np.sqrt((a * a).sum() * (b * b).sum()) + 1e-12))


def _rotation(angle_deg: float, centre: float) -> np.ndarray:
    return cv2.getRotationMatrix2D((centre, centre), angle_deg, 1.0).astype(np.float64)


def _compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """2x3 affine of ``outer ∘ inner``."""
    a = np.vstack([outer, [0, 0, 1]])
    b = np.vstack([inner, [0, 0, 1]])
    return (a @ b)[:2]


def _ecc(fixed: np.ndarray, moving: np.ndarray, init: np.ndarray, iterations: int) -> tuple[float, np.ndarray] | None:
    """ECC (Euclidean) refinement of ``init`` (moving -> fixed); None when it does not converge."""
    try:
        cc, warp = cv2.findTransformECC(
            fixed, moving, cv2.invertAffineTransform(init).astype(np.float32), cv2.MOTION_EUCLIDEAN,
            (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, iterations, 1e-4), None, 1,
        )
    except cv2.error:
        return None
    refined = cv2.invertAffineTransform(warp).astype(np.float64)
    if np.abs(refined[:, 2] - init[:, 2]).max() > fixed.shape[0] / 8:  # ran away
        return None
    return float(cc), refined


def estimate_pose(moving: np.ndarray, fixed: np.ndarray, mode: str, max_rotation_deg: float) -> np.ndarray:
    """2x3 affine taking ``moving`` pixel coordinates to ``fixed`` ones (both ALIGN_SIZE² edge images).

    translation: phase correlation. rigid: at half resolution every angle in ± ``max_rotation_deg``
    (2° steps) is tried with phase correlation, ECC (Euclidean) refines the best few distinct angles,
    the best match is refined once more at full resolution.
    """
    if mode == "none":
        return np.array([[1.0, 0, 0], [0, 1.0, 0]])
    if mode != "rigid" or max_rotation_deg <= 0:
        window = cv2.createHanningWindow(fixed.shape[::-1], cv2.CV_32F)
        # phaseCorrelate gives the shift of `fixed` relative to `moving`; OpenCV 5 applies the window in place
        (dx, dy), _ = cv2.phaseCorrelate(moving.copy(), fixed.copy(), window)
        m = np.array([[1.0, 0, dx], [0, 1.0, dy]])
        if mode == "rigid":
            found = _ecc(fixed, moving, m, 30)
            m = found[1] if found is not None else m
        return m
    small_f, small_m = cv2.pyrDown(fixed), cv2.pyrDown(moving)
    size = small_f.shape[::-1]
    window = cv2.createHanningWindow(size, cv2.CV_32F)
    centre = (small_f.shape[0] - 1) / 2.0
    n = int(math.floor(max_rotation_deg / ROTATION_STEP_DEG))
    candidates: list[tuple[float, float, np.ndarray]] = []
    for ang in (k * ROTATION_STEP_DEG for k in range(-n, n + 1)):
        rot = _rotation(ang, centre)
        rotated = small_m if ang == 0 else cv2.warpAffine(small_m, rot, size, borderMode=cv2.BORDER_REFLECT)
        (dx, dy), peak = cv2.phaseCorrelate(rotated.copy(), small_f.copy(), window)
        candidates.append((peak, ang, _compose(np.array([[1.0, 0, dx], [0, 1.0, dy]]), rot)))
    candidates.sort(key=lambda c: -c[0])
    starts: list[tuple[float, float, np.ndarray]] = []
    for cand in candidates:
        if all(abs(cand[1] - st[1]) >= 2 * ROTATION_STEP_DEG for st in starts):
            starts.append(cand)
        if len(starts) == ECC_STARTS:
            break
    best_cc, m = -2.0, candidates[0][2]
    for _, _, init in starts:
        start_cc = _ncc(cv2.warpAffine(small_m, init, size, borderMode=cv2.BORDER_REFLECT), small_f)
        if start_cc > best_cc:
            best_cc, m = start_cc, init
        found = _ecc(small_f, small_m, init, 30)
        if found is not None and found[0] > best_cc:
            best_cc, m = found
    m = scale_pose(m, 2.0)
    found = _ecc(fixed, moving, m, 20)
    return found[1] if found is not None else m


def scale_pose(m: np.ndarray, factor: float) -> np.ndarray:
    """The same motion expressed in pixel coordinates scaled by ``factor``."""
    out = m.copy()
    out[:, 2] *= factor
    return out
