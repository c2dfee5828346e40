"""Stamped steel washer seen from above, with pose and lighting jitter: scratch, crack, rust, chip."""

from __future__ import annotations

import copy

import cv2
import numpy as np

from inspector.demo.common import SIZE, SUPERSAMPLE, _blend, _blob, _coverage, _curve, _mask, _noise, _pts


# --------------------------------------------------------------------------- washer
_R_OUT, _R_IN = 86.0, 36.0


def _washer_pose(rng: np.random.Generator) -> tuple[float, float, float, float]:
    cx, cy = SIZE / 2 + rng.uniform(-8, 8, 2)
    rot = np.deg2rad(rng.uniform(-15, 15))
    light = np.deg2rad(-135 + rng.uniform(-20, 20))
    return float(cx), float(cy), float(rot), float(light)


def _stamp_mask(rot: float, cx: float, cy: float) -> np.ndarray:
    """Embossed marking 'M12 A2' on the ring (object frame rotated by ``rot``) as coverage."""
    ss = SUPERSAMPLE
    canvas = np.zeros((SIZE * ss, SIZE * ss), np.uint8)
    mid = (_R_OUT + _R_IN) / 2
    for text, base_deg in (("M12", -90.0), ("A2", 90.0)):
        for i, ch in enumerate(text):
            a = np.deg2rad(base_deg + (i - (len(text) - 1) / 2) * 11.0) + rot
            x, y = cx + mid * np.cos(a), cy + mid * np.sin(a)
            tile = np.zeros((32 * ss, 32 * ss), np.uint8)
            (tw, th), _ = cv2.getTextSize(ch, cv2.FONT_HERSHEY_SIMPLEX, 0.5 * ss, int(1.5 * ss))
            org = ((tile.shape[1] - tw) // 2, (tile.shape[0] + th) // 2)
            cv2.putText(tile, ch, org, cv2.FONT_HERSHEY_SIMPLEX, 0.5 * ss, 255, int(1.5 * ss), cv2.LINE_AA)
            m = cv2.getRotationMatrix2D((tile.shape[1] / 2, tile.shape[0] / 2), -np.rad2deg(a) - 90, 1.0)
            tile = cv2.warpAffine(tile, m, tile.shape[::-1])
            x0, y0 = int(x * ss - tile.shape[1] / 2), int(y * ss - tile.shape[0] / 2)
            sub = canvas[y0:y0 + tile.shape[0], x0:x0 + tile.shape[1]]
            np.maximum(sub, tile[: sub.shape[0], : sub.shape[1]], out=sub)
    return cv2.resize(canvas, (SIZE, SIZE), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def _render_washer(rng: np.random.Generator, pose: tuple[float, float, float, float],
                   chip: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Washer image (float RGB) and its metal coverage; ``chip`` removes metal (coverage map)."""
    cx, cy, rot, light = pose
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    dx, dy = xx - cx, yy - cy
    r = np.sqrt(dx * dx + dy * dy)
    th = np.arctan2(dy, dx)
    metal = np.clip(_R_OUT - r + 0.5, 0, 1) * np.clip(r - _R_IN + 0.5, 0, 1)
    full = metal
    if chip is not None:
        metal = metal * (1 - chip)
    # conveyor belt: dark rubber with fine grain
    bg = 62 + 5 * _noise(rng, SIZE, 3) + 3 * _noise(rng, SIZE, 40)
    img = np.repeat(bg[..., None], 3, axis=2) * np.array([1.0, 1.0, 1.04], np.float32)
    shadow = cv2.GaussianBlur(full, (0, 0), 4)  # cast by the intact ring (keeps the mask exact)
    shadow = np.roll(shadow, (4, 4), axis=(0, 1))
    img = img * (1 - 0.45 * shadow[..., None])
    # steel: lathe rings (fast in r), brushing streaks (fast in theta), bevels lit from ``light``
    phase = rng.uniform(0, 2 * np.pi)
    rings = 0.01 * np.sin(r * 1.3 + phase) + 0.006 * np.sin(r * 3.1 + 2 * phase)
    raw = np.tile(rng.standard_normal((1, 720)).astype(np.float32), (1, 3))
    streak = cv2.GaussianBlur(raw, (0, 0), sigmaX=2.5)[:, 720:1440]  # circular smoothing
    streak /= streak.std() + 1e-6
    idx = (((th - rot) % (2 * np.pi)) / (2 * np.pi) * 720).astype(np.int64) % 720
    streaks = 0.012 * streak[0, idx]
    outer_bevel = np.clip((r - (_R_OUT - 5)) / 5, 0, 1)
    inner_bevel = np.clip(((_R_IN + 4) - r) / 4, 0, 1)
    facing = np.cos(th - light)
    shade = 0.72 + 0.1 * np.cos(th - light - np.pi) * (r / _R_OUT)  # broad reflection gradient
    shade = shade + 0.25 * facing * outer_bevel - 0.25 * facing * inner_bevel + rings + streaks
    shade += 0.035 * _noise(rng, SIZE, 24)
    stamp = _stamp_mask(rot, cx, cy)
    gy, gx = np.gradient(cv2.GaussianBlur(stamp, (3, 3), 0.7))
    shade = shade + 1.6 * (gx * np.cos(light) + gy * np.sin(light)) - 0.06 * stamp
    steel = np.array([176, 178, 184], np.float32)
    img = img * (1 - metal[..., None]) + (shade[..., None] * steel) * metal[..., None]
    return img, metal


def washer_image(rng: np.random.Generator, kind: str | None
                  ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    pose = _washer_pose(rng)
    cx, cy, rot, light = pose
    if kind is None:
        img, _ = _render_washer(rng, pose)
        return img, None, img

    def on_ring(rmin: float, rmax: float) -> tuple[float, float, float]:
        a = rng.uniform(0, 2 * np.pi)
        rr = rng.uniform(rmin, rmax)
        return cx + rr * np.cos(a), cy + rr * np.sin(a), a

    if kind == "chip":
        x, y, a = on_ring(_R_OUT + 2, _R_OUT + 4)
        poly = _blob(rng, (x, y), rng.uniform(8, 13), rough=0.5)
        chip = _coverage(lambda cv, s: cv2.fillPoly(cv, [_pts(poly, s)], 255, cv2.LINE_AA))
        clean, full = _render_washer(copy.deepcopy(rng), pose)  # same draws, intact ring
        img, metal = _render_washer(rng, pose, chip)
        removed = np.clip(full - metal, 0, 1)
        return img, _mask(removed), clean
    img, metal = _render_washer(rng, pose)
    clean = img
    if kind == "scratch":
        x, y, a = on_ring(_R_IN + 10, _R_OUT - 12)
        line = _curve(rng, (x, y), a + np.pi / 2 + rng.normal(0, 0.6), rng.uniform(18, 40), bend=0.6)
        w = rng.uniform(1.8, 2.6)
        cov = _coverage(lambda cv, s: cv2.polylines(cv, [_pts(line, s)], False, 255, int(w * s), cv2.LINE_AA))
        cov = cov * metal
        tone = rng.choice([1.35, 0.55])
        img = img * (1 + (tone - 1) * 0.85 * cov)[..., None]
        return img, _mask(cov), clean
    if kind == "crack":
        edge = rng.choice([_R_IN, _R_OUT])
        a = rng.uniform(0, 2 * np.pi)
        x, y = cx + edge * np.cos(a), cy + edge * np.sin(a)
        direction = a if edge == _R_IN else a + np.pi
        line = _curve(rng, (x, y), direction + rng.normal(0, 0.2), rng.uniform(16, 30), bend=0.4, jag=0.9, n=14)
        cov = _coverage(lambda cv, s: cv2.polylines(cv, [_pts(line, s)], False, 255, int(2.0 * s), cv2.LINE_AA))
        cov = cov * metal
        img = _blend(img, cov * 0.85, (35, 33, 32))
        return img, _mask(cov), clean
    if kind == "rust":
        x, y, _ = on_ring(_R_IN + 8, _R_OUT - 8)
        poly = _blob(rng, (x, y), rng.uniform(6, 11), rough=0.6)
        cov = _coverage(lambda cv, s: cv2.fillPoly(cv, [_pts(poly, s)], 255, cv2.LINE_AA))
        cov = cv2.GaussianBlur(cov, (3, 3), 0.8) * metal
        mottled = 0.8 + 0.25 * _noise(rng, SIZE, 3)
        rust = np.array([150, 82, 40], np.float32) * mottled[..., None]
        img = img * (1 - 0.85 * cov[..., None]) + rust * 0.85 * cov[..., None]
        return img, _mask(cov), clean
    raise ValueError(f"unknown washer defect {kind!r}")
