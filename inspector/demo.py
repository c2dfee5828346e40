"""The demo product line: a synthetic, deterministic data set in MVTec-AD layout.

Three categories, each rendered procedurally at 256×256 so that a fresh install has something
real to inspect before any weight is installed:

=========  ====================================  ============================================
category   product                               defect types
=========  ====================================  ============================================
fabric     woven canvas (texture)                hole, stain, cut, fiber
washer     stamped steel washer seen from above  scratch, crack, rust, chip
           (pose and lighting jitter)
pcb        small populated circuit board         missing, bridge, scratch, contamination
           (multi-part assembly)
=========  ====================================  ============================================

Layout (as MVTec-AD)::

    <root>/<cat>/train/good/000.png
    <root>/<cat>/test/good/000.png
    <root>/<cat>/test/<defect>/000.png
    <root>/<cat>/ground_truth/<defect>/000_mask.png   (0 / 255)

Every image has its own random generator seeded from ``(seed, category, split, index)``, so any
image can be regenerated alone and the output is byte-identical across runs. Masks are exact:
each defect is drawn through a coverage map (anti-aliased at 4× resolution) and the mask is the
set of pixels the defect covers by at least :data:`MASK_COVERAGE`.

:func:`generate_demo_line` writes a line; :func:`demo_line_dir` returns the default one
(generated on first use, regenerated when :data:`GENERATOR_VERSION` changes);
:func:`write_demo_profiles` writes the ``product_profiles/demo_<cat>`` folders.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from inspector.imaging import write_png

log = logging.getLogger(__name__)

GENERATOR_VERSION = 2
SIZE = 256
SUPERSAMPLE = 4
MASK_COVERAGE = 0.3
MARKER_FILE = "demo_line.json"
DEFAULT_COUNTS = {"train": 10, "test_good": 8, "per_defect": 5}
REFERENCE_SHOTS = 4


@dataclass(frozen=True)
class DemoCategory:
    name: str
    object: str
    description: str
    defects: tuple[str, ...]
    reasons: tuple[str, ...]
    prompts: tuple[str, ...]
    variation: dict[str, object]


CATEGORIES: dict[str, DemoCategory] = {
    "fabric": DemoCategory(
        "fabric", "fabric", "Woven canvas web, beige, seen from above (texture).",
        ("hole", "stain", "cut", "fiber"),
        ("hole", "stain", "cut", "foreign fiber", "other"),
        ("hole", "stain", "cut", "foreign fiber"),
        {"alignment": "none", "memory": "global", "calibration_margin": 1.5},
    ),
    "washer": DemoCategory(
        "washer", "washer", "Stamped steel washer M12 on a conveyor, top light (object with pose jitter).",
        ("scratch", "crack", "rust", "chip"),
        ("scratch", "crack", "rust", "chipped edge", "other"),
        ("scratch", "crack", "rust", "chipped edge"),
        {"alignment": "rigid", "memory": "local", "max_rotation_deg": 20.0, "calibration_margin": 1.0},
    ),
    "pcb": DemoCategory(
        "pcb", "circuit board", "Small populated circuit board (assembly of parts).",
        ("missing", "bridge", "scratch", "contamination"),
        ("missing part", "solder bridge", "scratch", "contamination", "other"),
        ("missing component", "solder bridge", "scratch", "contamination"),
        {"alignment": "rigid", "memory": "local", "max_rotation_deg": 6.0, "calibration_margin": 1.4},
    ),
}


# --------------------------------------------------------------------------- small helpers
def _rng(seed: int, category: str, split: str, index: int) -> np.random.Generator:
    cat = sorted(CATEGORIES).index(category) if category in CATEGORIES else 99
    split_id = {"train": 0, "test_good": 1}.get(split, 2 + sum(map(ord, split)))
    return np.random.default_rng([seed, cat, split_id, index])


def _coverage(draw: Callable[[np.ndarray, float], None], size: int = SIZE, ss: int = SUPERSAMPLE) -> np.ndarray:
    """Float coverage in [0, 1] of shapes drawn (value 255) by ``draw(canvas, scale)`` at ``ss``× size."""
    canvas = np.zeros((size * ss, size * ss), np.uint8)
    draw(canvas, float(ss))
    return cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def _pts(points: np.ndarray, scale: float) -> np.ndarray:
    return np.round(np.asarray(points, np.float64) * scale).astype(np.int32).reshape(-1, 1, 2)


def _noise(rng: np.random.Generator, size: int, cell: float) -> np.ndarray:
    """Smooth value noise, zero mean / unit std, features about ``cell`` px."""
    n = max(2, int(math.ceil(size / cell)) + 2)
    grid = rng.standard_normal((n, n)).astype(np.float32)
    big = cv2.resize(grid, (int(n * cell), int(n * cell)), interpolation=cv2.INTER_CUBIC)
    out = big[:size, :size]
    return (out - out.mean()) / (out.std() + 1e-6)


def _blob(rng: np.random.Generator, center: tuple[float, float], radius: float, rough: float = 0.25,
          n: int = 48) -> np.ndarray:
    """Irregular closed polygon around ``center`` (x, y) with mean radius ``radius``."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    r = np.ones(n)
    for k in (2, 3, 5):
        r += rough / k * rng.standard_normal() * np.cos(k * t + rng.uniform(0, 2 * np.pi))
    r *= radius * rng.uniform(0.85, 1.15)
    aspect = rng.uniform(0.65, 1.0)
    rot = rng.uniform(0, np.pi)
    x, y = r * np.cos(t), r * np.sin(t) * aspect
    xr = x * np.cos(rot) - y * np.sin(rot)
    yr = x * np.sin(rot) + y * np.cos(rot)
    return np.stack([center[0] + xr, center[1] + yr], axis=1)


def _curve(rng: np.random.Generator, start: tuple[float, float], angle: float, length: float,
           bend: float = 0.3, jag: float = 0.0, n: int = 24) -> np.ndarray:
    """Polyline from ``start`` in direction ``angle`` (rad) with gentle bend and optional jaggedness."""
    s = np.linspace(0, length, n)
    a = angle + bend * (s / length - 0.5) * rng.standard_normal()
    dx, dy = np.cos(a), np.sin(a)
    x = start[0] + np.cumsum(np.r_[0, np.diff(s)] * dx)
    y = start[1] + np.cumsum(np.r_[0, np.diff(s)] * dy)
    if jag > 0:
        off = rng.standard_normal(n) * jag
        off[0] = 0
        x, y = x - off * dy, y + off * dx
    return np.stack([x, y], axis=1)


def _blend(img: np.ndarray, alpha: np.ndarray, color: np.ndarray | tuple[float, ...]) -> np.ndarray:
    """``img`` with ``color`` laid over it at opacity ``alpha`` (work limited to where alpha > 0)."""
    rows, cols = np.flatnonzero(alpha.any(1)), np.flatnonzero(alpha.any(0))
    out = np.array(img, dtype=np.result_type(img, np.float32), copy=True)
    if rows.size == 0:
        return out
    sl = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    a = alpha[sl][..., None]
    out[sl] = out[sl] * (1 - a) + np.asarray(color, np.float32)[..., :] * a if np.ndim(color) <= 1 \
        else out[sl] * (1 - a) + np.asarray(color, np.float32)[sl] * a
    return out


def _finish(img: np.ndarray, rng: np.random.Generator, gain_jitter: float = 0.07,
            gradient: float = 0.06, noise: float = 2.0) -> np.ndarray:
    """Lighting jitter (gain, colour temperature, linear gradient) and sensor noise → uint8."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / (SIZE - 1) - 0.5
    gain = 1 + rng.uniform(-gain_jitter, gain_jitter)
    tint = 1 + rng.uniform(-0.025, 0.025, 3)
    grad = 1 + rng.uniform(-gradient, gradient) * xx + rng.uniform(-gradient, gradient) * yy
    out = img * gain * grad[..., None] * tint + rng.normal(0, noise, img.shape)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _mask(cov: np.ndarray) -> np.ndarray:
    return cov >= MASK_COVERAGE


# --------------------------------------------------------------------------- fabric
_FABRIC_WARP = np.array([196, 178, 142], np.float32)
_FABRIC_WEFT = np.array([182, 163, 128], np.float32)


def _render_fabric(rng: np.random.Generator) -> np.ndarray:
    period = 8.0 * rng.uniform(0.985, 1.015)
    width = 0.8
    ang = np.deg2rad(rng.uniform(-1.5, 1.5))
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) - SIZE / 2
    u = np.cos(ang) * xx + np.sin(ang) * yy
    v = -np.sin(ang) * xx + np.cos(ang) * yy
    u = u + 0.6 * _noise(rng, SIZE, 48)
    v = v + 0.6 * _noise(rng, SIZE, 48)
    u = u / period + rng.uniform(0, 2)
    v = v / period + rng.uniform(0, 2)
    k, j = np.floor(u), np.floor(v)
    fu, fv = u - k - 0.5, v - j - 0.5
    pw = np.sqrt(np.clip(1 - (2 * fu / width) ** 2, 0, 1))  # warp cross-section
    pf = np.sqrt(np.clip(1 - (2 * fv / width) ** 2, 0, 1))  # weft cross-section
    hw = np.cos(np.pi * (v - 0.5 + k))  # +1 where the warp passes over the weft
    hf = -np.cos(np.pi * (u - 0.5 + j))
    zw = np.where(pw > 0, 0.6 * hw + pw, -9)
    zf = np.where(pf > 0, 0.6 * hf + pf, -9)
    warp_vis = (zw >= zf) & (pw > 0)
    weft_vis = (zf > zw) & (pf > 0)
    n_thr = 80
    kw = rng.normal(1, 0.035, n_thr).astype(np.float32)
    kf = rng.normal(1, 0.035, n_thr).astype(np.float32)
    ki = (k.astype(np.int64) % n_thr)
    ji = (j.astype(np.int64) % n_thr)
    fib_w = cv2.GaussianBlur(rng.standard_normal((SIZE, SIZE)).astype(np.float32), (1, 9), 0, sigmaY=3)
    fib_f = cv2.GaussianBlur(rng.standard_normal((SIZE, SIZE)).astype(np.float32), (9, 1), 3)
    shade_w = (0.42 + 0.38 * pw + 0.2 * (hw + 1) / 2) * kw[ki] * (1 + 0.12 * fib_w)
    shade_f = (0.42 + 0.38 * pf + 0.2 * (hf + 1) / 2) * kf[ji] * (1 + 0.12 * fib_f)
    img = np.full((SIZE, SIZE, 3), 0.25, np.float32) * _FABRIC_WEFT
    img = np.where(warp_vis[..., None], shade_w[..., None] * _FABRIC_WARP, img)
    img = np.where(weft_vis[..., None], shade_f[..., None] * _FABRIC_WEFT, img)
    img = cv2.GaussianBlur(img, (3, 3), 0.6)
    return img * (1 + 0.03 * _noise(rng, SIZE, 64))[..., None]


def _fabric_defect(img: np.ndarray, rng: np.random.Generator, kind: str) -> tuple[np.ndarray, np.ndarray]:
    c = rng.uniform(50, SIZE - 50, 2)
    if kind == "hole":
        poly = _blob(rng, tuple(c), rng.uniform(9, 18), rough=0.35)
        cov = _coverage(lambda cv, s: cv2.fillPoly(cv, [_pts(poly, s)], 255, cv2.LINE_AA))
        backing = np.array([42, 36, 30], np.float32) * (1 + 0.15 * _noise(rng, SIZE, 6))[..., None]
        out = img * (1 - cov[..., None]) + backing * cov[..., None]
        # loose thread ends inside the hole
        ends = np.zeros((SIZE, SIZE), np.float32)
        for _ in range(rng.integers(3, 7)):
            p0 = poly[rng.integers(len(poly))]
            ang = math.atan2(c[1] - p0[1], c[0] - p0[0]) + rng.normal(0, 0.4)
            line = _curve(rng, tuple(p0), ang, rng.uniform(4, 9), bend=0.8)
            ends = np.maximum(ends, _coverage(lambda cv, s, ln=line: cv2.polylines(
                cv, [_pts(ln, s)], False, 255, max(1, int(1.3 * s)), cv2.LINE_AA)))
        out = _blend(out, ends * cov * 0.8, _FABRIC_WARP * 0.8)
        return out, _mask(cov)
    if kind == "stain":
        poly = _blob(rng, tuple(c), rng.uniform(10, 22), rough=0.45)
        cov = _coverage(lambda cv, s: cv2.fillPoly(cv, [_pts(poly, s)], 255, cv2.LINE_AA))
        cov = cv2.GaussianBlur(cov, (5, 5), 1.0)
        rim = np.clip(cov * (1 - cov) * 4, 0, 1)
        color = np.array(rng.choice([[110, 80, 50], [70, 62, 55], [125, 95, 40]]), np.float32)
        strength = rng.uniform(0.45, 0.7)
        out = img * (1 - strength * cov[..., None]) + (img / 255.0 * color) * strength * cov[..., None]
        out = out * (1 - 0.25 * rim[..., None])
        return out, _mask(cov)
    if kind == "cut":
        line = _curve(rng, tuple(c - rng.uniform(12, 30, 2)), rng.uniform(0, 2 * np.pi), rng.uniform(25, 55),
                      bend=0.2, jag=0.5)
        w = rng.uniform(2.0, 3.0)
        gap = _coverage(lambda cv, s: cv2.polylines(cv, [_pts(line, s)], False, 255, int(w * s), cv2.LINE_AA))
        fray = _coverage(lambda cv, s: cv2.polylines(cv, [_pts(line, s)], False, 255, int((w + 3) * s), cv2.LINE_AA))
        out = img * (1 + 0.18 * (fray - gap))[..., None]
        out = _blend(out, gap * 0.85, (38, 32, 26))
        return out, _mask(fray)
    if kind == "fiber":
        line = _curve(rng, tuple(c - rng.uniform(15, 35, 2)), rng.uniform(0, 2 * np.pi), rng.uniform(35, 75),
                      bend=0.9, n=40)
        wob = np.sin(np.linspace(0, rng.uniform(2, 5), len(line)) + rng.uniform(0, 6)) * rng.uniform(2, 5)
        line = line + np.stack([wob, -wob[::-1]], axis=1) * 0.6
        w = rng.uniform(1.6, 2.4)
        cov = _coverage(lambda cv, s: cv2.polylines(cv, [_pts(line, s)], False, 255, int(w * s), cv2.LINE_AA))
        color = rng.choice([[40, 40, 48], [150, 30, 35], [30, 60, 120]])
        out = _blend(img, cov * 0.9, np.array(color, np.float32))
        return out, _mask(cov)
    raise ValueError(f"unknown fabric defect {kind!r}")


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


def _washer_image(rng: np.random.Generator, kind: str | None
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


# --------------------------------------------------------------------------- pcb
# Board layout in board millimetres*10 (= px at 256 output before pose); fixed across parts.
_PCB_MASK = np.array([28, 92, 52], np.float32)
_PCB_TRACE = np.array([52, 128, 70], np.float32)
_PCB_SILK = np.array([232, 232, 222], np.float32)
_PCB_TIN = np.array([196, 196, 186], np.float32)
_PCB_COPPER = np.array([196, 122, 72], np.float32)

# (name, kind, cx, cy, w, h, angle_deg)
_PCB_PARTS: tuple[tuple[str, str, float, float, float, float, float], ...] = (
    ("U1", "ic", 112, 120, 58, 40, 0),
    ("R1", "res", 46, 52, 26, 13, 0),
    ("R2", "res", 46, 86, 26, 13, 0),
    ("R3", "res", 204, 198, 13, 26, 0),
    ("C1", "cap", 200, 46, 24, 13, 0),
    ("C2", "cap", 50, 200, 13, 24, 0),
    ("C3", "elcap", 200, 122, 46, 46, 0),
    ("D1", "led", 120, 206, 22, 13, 0),
    ("Q1", "sot", 150, 184, 16, 12, 0),
)
_PCB_TRACES = (
    [(22, 52), (33, 52)], [(59, 52), (80, 52), (93, 92)], [(59, 86), (80, 86), (86, 95)],
    [(131, 95), (160, 60), (188, 46)], [(141, 122), (177, 122)], [(212, 46), (236, 46), (236, 160)],
    [(112, 150), (112, 170), (142, 184)], [(131, 206), (150, 192)], [(50, 188), (50, 150), (86, 145)],
    [(204, 211), (204, 236), (30, 236), (30, 100), (33, 86)], [(20, 20), (236, 20), (236, 46)],
    [(158, 184), (190, 184), (204, 185)], [(109, 206), (70, 206), (50, 212)],
)
_PCB_VIAS = ((80, 52), (160, 60), (236, 160), (30, 236), (50, 150), (190, 184), (70, 206), (112, 170))


def _pcb_parts_geometry(rng: np.random.Generator) -> list[dict]:
    parts = []
    for name, kind, x, y, w, h, ang in _PCB_PARTS:
        j = rng.normal(0, 0.35, 2)  # placement tolerance of the pick-and-place
        parts.append({"name": name, "kind": kind, "x": x + j[0], "y": y + j[1], "w": w, "h": h,
                      "a": ang + rng.normal(0, 0.6)})
    return parts


def _rect(x: float, y: float, w: float, h: float, a: float) -> np.ndarray:
    return cv2.boxPoints(((x, y), (w, h), a))


def _ic_pins(p: dict) -> list[np.ndarray]:
    pins = []
    for side in (-1, 1):
        for i in range(4):
            px = p["x"] + (i - 1.5) * 12.7
            py = p["y"] + side * (p["h"] / 2 + 4)
            pins.append(_rect(px, py, 5, 10, p["a"]))
    return pins


def _sot_legs(p: dict) -> list[tuple[float, float]]:
    return [(p["x"] - 5, p["y"] + p["h"] / 2 + 2), (p["x"] + 5, p["y"] + p["h"] / 2 + 2),
            (p["x"], p["y"] - p["h"] / 2 - 2)]


def _pcb_image(rng: np.random.Generator, kind: str | None) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    # pose of the board under the camera (applied to every drawing)
    ang = rng.uniform(-2.0, 2.0)
    shift = rng.uniform(-6, 6, 2)
    m = cv2.getRotationMatrix2D((SIZE / 2, SIZE / 2), ang, 1.0)
    m[:, 2] += shift

    def tf(points: np.ndarray) -> np.ndarray:
        pts = np.asarray(points, np.float64).reshape(-1, 2)
        return pts @ m[:, :2].T + m[:, 2]

    def layer(draw: Callable[[np.ndarray, float], None]) -> np.ndarray:
        return _coverage(draw, ss=SUPERSAMPLE if defect_stage else 2)

    defect_stage = False

    def fill(polys: list[np.ndarray]) -> np.ndarray:
        return layer(lambda cv, s: cv2.fillPoly(cv, [_pts(tf(p), s) for p in polys], 255, cv2.LINE_AA))

    def lines(polys: list, width: float) -> np.ndarray:
        return layer(lambda cv, s: cv2.polylines(cv, [_pts(tf(p), s) for p in polys], False, 255,
                                                 max(1, int(width * s)), cv2.LINE_AA))

    def circles(centres, radius: float, thickness: float = -1) -> np.ndarray:
        def draw(cv: np.ndarray, s: float) -> None:
            for c in centres:
                p = _pts(tf(np.array([c])), s)[0, 0]
                cv2.circle(cv, (int(p[0]), int(p[1])), int(radius * s),
                           255, -1 if thickness < 0 else max(1, int(thickness * s)), cv2.LINE_AA)
        return layer(draw)

    parts = _pcb_parts_geometry(rng)
    missing = None
    if kind == "missing":
        missing = parts[int(rng.integers(1, len(parts)))]["name"]  # never the IC (too obvious)

    grain = 1 + 0.05 * _noise(rng, SIZE, 2) + 0.04 * _noise(rng, SIZE, 30)
    img = np.ones((SIZE, SIZE, 3), np.float32) * _PCB_MASK * grain[..., None]
    img = _blend(img, lines(list(_PCB_TRACES), 4.0), _PCB_TRACE)
    img = _blend(img, circles(_PCB_VIAS, 3.2), _PCB_TIN * 0.85)
    img = _blend(img, circles(_PCB_VIAS, 1.3), (20, 24, 20))
    img = _blend(img, circles([(14, 14), (242, 242)], 8.0), (20, 22, 20))  # mounting holes
    img = _blend(img, circles([(14, 14), (242, 242)], 8.0, 2.0), _PCB_TIN)
    # pads and silkscreen (present whether or not the part is)
    pads, silk, bodies = [], [], {}
    for p in parts:
        if p["kind"] in ("res", "cap", "led"):
            long_x = p["w"] >= p["h"]
            for sgn in (-1, 1):
                if long_x:
                    pads.append(_rect(p["x"] + sgn * (p["w"] / 2 - 2), p["y"], 7, p["h"] + 2, 0))
                else:
                    pads.append(_rect(p["x"], p["y"] + sgn * (p["h"] / 2 - 2), p["w"] + 2, 7, 0))
            silk.append(_rect(p["x"], p["y"], p["w"] + 9, p["h"] + 7, 0))
        elif p["kind"] == "ic":
            pads.extend(_rect(*cv2.minAreaRect(pin.astype(np.float32))[0], 7, 12, 0) for pin in _ic_pins(p))
            silk.append(_rect(p["x"], p["y"], p["w"] + 4, p["h"] + 30, 0))
        elif p["kind"] == "sot":
            pads.extend(_rect(*xy, 5, 6, 0) for xy in _sot_legs(p))
            silk.append(_rect(p["x"], p["y"], p["w"] + 6, p["h"] + 14, 0))
        elif p["kind"] == "elcap":
            pads.extend(_rect(p["x"] + sgn * 13, p["y"], 10, 18, 0) for sgn in (-1, 1))
            silk.append(_rect(p["x"], p["y"], p["w"] + 6, p["h"] + 6, 0))
    img = _blend(img, fill(pads), _PCB_TIN)
    img = _blend(img, layer(lambda cv, s: cv2.polylines(cv, [_pts(tf(q), s) for q in silk], True, 255,
                                                        int(1.3 * s), cv2.LINE_AA)), _PCB_SILK)

    def text(label: str, x: float, y: float, scale: float = 0.32) -> np.ndarray:
        def draw(cv: np.ndarray, s: float) -> None:
            tile = np.zeros_like(cv)
            cv2.putText(tile, label, (int(x * s), int(y * s)), cv2.FONT_HERSHEY_SIMPLEX, scale * s, 255,
                        max(1, int(1.0 * s)), cv2.LINE_AA)
            mm = m.copy()
            mm[:, 2] *= s
            cv[:] = np.maximum(cv, cv2.warpAffine(tile, mm, (cv.shape[1], cv.shape[0])))
        return layer(draw)

    for p in parts:
        img = _blend(img, text(p["name"], p["x"] - p["w"] / 2 - 4, p["y"] - p["h"] / 2 - 6), _PCB_SILK)
    # components; the one left out by a "missing" defect only adds to the mask
    missing_cov = np.zeros((SIZE, SIZE), np.float32)
    clean = img.copy()  # the same board with every part placed
    for p in parts:
        absent = p["name"] == missing
        k = p["kind"]

        def paint(base: np.ndarray, cov: np.ndarray, colour: tuple | np.ndarray, absent: bool = absent) -> np.ndarray:
            nonlocal missing_cov, clean
            clean = _blend(clean, cov, colour)
            if absent:
                missing_cov = np.maximum(missing_cov, cov)
                return base
            return _blend(base, cov, colour)

        body = _rect(p["x"], p["y"], p["w"], p["h"], p["a"])
        if k == "ic":
            for pin in _ic_pins(p):
                img = paint(img, fill([pin]), (170, 172, 168))
            img = paint(img, fill([body]), (28, 28, 32))
            img = paint(img, circles([(p["x"] - p["w"] / 2 + 6, p["y"] + p["h"] / 2 - 6)], 2.2), (70, 70, 74))
            img = paint(img, text("LM358", p["x"] - 20, p["y"] + 5, 0.42), (150, 150, 150))
        elif k in ("res", "cap", "led"):
            long_x = p["w"] >= p["h"]
            colour = {"res": (30, 30, 30), "cap": (168, 128, 82), "led": (220, 230, 215)}[k]
            img = paint(img, fill([body]), colour)
            for sgn in (-1, 1):
                if long_x:
                    cap = _rect(p["x"] + sgn * (p["w"] / 2 - 2), p["y"], 4, p["h"], p["a"])
                else:
                    cap = _rect(p["x"], p["y"] + sgn * (p["h"] / 2 - 2), p["w"], 4, p["a"])
                img = paint(img, fill([cap]), (205, 205, 200))
            if k == "res":
                img = paint(img, text("103", p["x"] - 6, p["y"] + 3, 0.24), (210, 210, 210))
            if k == "led":
                img = paint(img, circles([(p["x"], p["y"])], 2.5), (230, 60, 50))
        elif k == "sot":
            img = paint(img, fill([_rect(*xy, 3, 5, p["a"]) for xy in _sot_legs(p)]), (175, 175, 170))
            img = paint(img, fill([body]), (34, 34, 38))
        elif k == "elcap":
            r = p["w"] / 2
            img = paint(img, circles([(p["x"], p["y"])], r), (40, 40, 60))
            img = paint(img, circles([(p["x"], p["y"])], r - 3), (190, 192, 198))
            img = paint(img, lines([[(p["x"] - 10, p["y"]), (p["x"] + 10, p["y"])],
                                     [(p["x"], p["y"] - 10), (p["x"], p["y"] + 10)]], 1.6), (120, 122, 128))
            img = paint(img, layer(lambda cv, s, p=p, r=r: cv2.ellipse(
                cv, tuple(int(v) for v in _pts(tf(np.array([(p["x"], p["y"])])), s)[0, 0]),
                (int((r - 1.5) * s), int((r - 1.5) * s)), -ang, 200, 250, 255, int(3 * s), cv2.LINE_AA)),
                (200, 200, 210))
        bodies[p["name"]] = body
    grain2 = (1 + 0.02 * _noise(rng, SIZE, 8))[..., None]
    img, clean = img * grain2, clean * grain2
    if kind is None:
        return img, None, img
    defect_stage = True
    if kind == "missing":
        return img, _mask(missing_cov), clean
    if kind == "bridge":
        u1 = parts[0]
        pins = _ic_pins(u1)
        i = int(rng.integers(0, 3)) + 4 * int(rng.integers(0, 2))
        a, b = pins[i].mean(axis=0), pins[i + 1].mean(axis=0)
        mid = (a + b) / 2 + np.array([0, rng.uniform(-2, 2)])
        poly = np.concatenate([_blob(rng, tuple(mid), 6.5, rough=0.3)])
        cov = fill([poly])
        shine = np.clip(1 - np.abs(_noise(rng, SIZE, 3)) * 0.3, 0, 1)
        img = _blend(img, cov, np.array([210, 212, 208], np.float32))
        img = img * (1 + 0.12 * cov * shine)[..., None]
        return img, _mask(cov), clean
    if kind == "scratch":
        free = 1 - fill(list(bodies.values()) + [_rect(b["x"], b["y"], b["w"] + 2, b["h"] + 30, 0)
                                                  for b in parts if b["kind"] == "ic"])
        start = rng.uniform(30, 226, 2)
        line = _curve(rng, tuple(start), rng.uniform(0, 2 * np.pi), rng.uniform(25, 55), bend=0.3)
        w = rng.uniform(1.8, 2.6)
        cov = layer(lambda cv, s: cv2.polylines(cv, [_pts(line, s)], False, 255, int(w * s), cv2.LINE_AA)) * free
        img = _blend(img, cov * 0.85, _PCB_COPPER)
        return img, _mask(cov), clean
    if kind == "contamination":
        c = rng.uniform(40, 216, 2)
        if rng.random() < 0.5:  # flux residue: translucent amber
            poly = _blob(rng, tuple(c), rng.uniform(7, 13), rough=0.5)
            cov = layer(lambda cv, s: cv2.fillPoly(cv, [_pts(poly, s)], 255, cv2.LINE_AA))
            cov = cv2.GaussianBlur(cov, (3, 3), 0.8)
            img = img * (1 - 0.6 * cov[..., None]) + np.array([205, 160, 60], np.float32) * 0.6 * cov[..., None]
        else:  # dark debris particles
            cov = np.zeros((SIZE, SIZE), np.float32)
            for _ in range(int(rng.integers(3, 6))):
                q = c + rng.normal(0, 5, 2)
                poly = _blob(rng, tuple(q), rng.uniform(2.0, 3.5), rough=0.6, n=16)
                cov = np.maximum(cov, layer(lambda cv, s, pp=poly: cv2.fillPoly(cv, [_pts(pp, s)], 255, cv2.LINE_AA)))
            img = _blend(img, cov * 0.9, (45, 38, 30))
        return img, _mask(cov), clean
    raise ValueError(f"unknown pcb defect {kind!r}")


# --------------------------------------------------------------------------- public API
def render_pair(category: str, kind: str | None, rng: np.random.Generator, with_clean: bool = True
                ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(image, mask, clean): ``clean`` is the same part under the same light without the defect."""
    if category == "fabric":
        clean = img = _render_fabric(rng)
        mask = None
        if kind is not None:
            img, mask = _fabric_defect(img, rng, kind)
    elif category == "washer":
        img, mask, clean = _washer_image(rng, kind)
    elif category == "pcb":
        img, mask, clean = _pcb_image(rng, kind)
    else:
        raise ValueError(f"unknown demo category {category!r}; choose one of {', '.join(CATEGORIES)}")
    lighting = copy.deepcopy(rng) if with_clean else None
    out = _finish(img, rng)
    return out, mask, (_finish(clean, lighting) if lighting is not None else None)


def render_sample(category: str, kind: str | None, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
    """One RGB uint8 image of ``category``; ``kind`` None = good, else a defect type. Returns (image, mask)."""
    img, mask, _ = render_pair(category, kind, rng, with_clean=False)
    return img, mask


def generate_demo_line(
    root: str | Path,
    seed: int = 0,
    categories: tuple[str, ...] | list[str] | None = None,
    n_train: int = DEFAULT_COUNTS["train"],
    n_test_good: int = DEFAULT_COUNTS["test_good"],
    n_per_defect: int = DEFAULT_COUNTS["per_defect"],
) -> Path:
    """Write the demo line below ``root`` in MVTec-AD layout (overwriting the categories it writes)."""
    root = Path(root)
    cats = list(categories or CATEGORIES)
    for cat in cats:
        if cat not in CATEGORIES:
            raise ValueError(f"unknown demo category {cat!r}; choose one of {', '.join(CATEGORIES)}")
        spec = CATEGORIES[cat]
        base = root / cat
        if base.exists():
            shutil.rmtree(base)
        jobs: list[tuple[str, str | None, Path, int]] = []
        jobs += [("train", None, base / "train" / "good", i) for i in range(n_train)]
        jobs += [("test_good", None, base / "test" / "good", i) for i in range(n_test_good)]
        for d in spec.defects:
            jobs += [(d, d, base / "test" / d, i) for i in range(n_per_defect)]
        for split, kind, folder, i in jobs:
            img, mask = render_sample(cat, kind, _rng(seed, cat, split, i))
            write_png(folder / f"{i:03d}.png", img)
            if kind is not None:
                assert mask is not None
                write_png(base / "ground_truth" / kind / f"{i:03d}_mask.png", mask.astype(np.uint8) * 255)
    marker = {"generator_version": GENERATOR_VERSION, "seed": seed, "categories": cats,
              "counts": {"train": n_train, "test_good": n_test_good, "per_defect": n_per_defect}}
    (root / MARKER_FILE).write_text(json.dumps(marker, indent=1), encoding="utf-8")
    log.info("demo line written to %s (%s)", root, ", ".join(cats))
    return root


def default_demo_root() -> Path:
    from inspector.settings import Settings

    return Settings.load().cache_dir.parent / "demo_line"


def is_current(root: str | Path, seed: int = 0, n_train: int = DEFAULT_COUNTS["train"],
               n_test_good: int = DEFAULT_COUNTS["test_good"], n_per_defect: int = DEFAULT_COUNTS["per_defect"]) -> bool:
    """True when ``root`` holds a complete line written by this generator version, seed and counts."""
    root = Path(root)
    try:
        marker = json.loads((root / MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    counts = {"train": n_train, "test_good": n_test_good, "per_defect": n_per_defect}
    return (
        isinstance(marker, dict)
        and marker.get("generator_version") == GENERATOR_VERSION
        and marker.get("seed") == seed
        and marker.get("counts") == counts
        and set(marker.get("categories", [])) >= set(CATEGORIES)
        and all((root / c / "test").is_dir() for c in CATEGORIES)
    )


def demo_line_dir(root: str | Path | None = None, seed: int = 0) -> Path:
    """The demo line folder (default counts), generated if missing or written by another generator version."""
    root = Path(root) if root is not None else default_demo_root()
    if not is_current(root, seed):
        generate_demo_line(root, seed)
    return root


def write_demo_profiles(dest: str | Path, line_root: str | Path | None = None, seed: int = 0) -> list[Path]:
    """Write ``dest/demo_<cat>/profile.yaml`` + ``references/`` (the line's first 4 train/good shots).

    The shots are copied from ``line_root`` when it has them, else rendered directly (byte-identical
    to ``<line>/<cat>/train/good/00N.png`` of the same seed), so no line has to exist.
    """
    from inspector.profile import ProductProfile, save_profile

    written = []
    for cat, spec in CATEGORIES.items():
        folder = Path(dest) / f"demo_{cat}"
        refs_dir = folder / "references"
        if refs_dir.exists():
            shutil.rmtree(refs_dir)
        refs_dir.mkdir(parents=True)
        shots = []
        for i in range(REFERENCE_SHOTS):
            src = Path(line_root) / cat / "train" / "good" / f"{i:03d}.png" if line_root is not None else None
            if src is not None and src.is_file():
                shutil.copyfile(src, refs_dir / src.name)
            else:
                img, _ = render_sample(cat, None, _rng(seed, cat, "train", i))
                write_png(refs_dir / f"{i:03d}.png", img)
            shots.append(f"references/{i:03d}.png")
        profile = ProductProfile(
            name=f"demo_{cat}",
            description=f"Demo line: {spec.description} Generated by inspector.demo (v{GENERATOR_VERSION}).",
            author="inspector demo generator",
            pipeline="variation",
            object=spec.object,
            reference_shots=shots,
            reason_codes=list(spec.reasons),
            variation=dict(spec.variation),  # type: ignore[arg-type]
        )
        profile.prompts.class_specific = list(spec.prompts)
        written.append(save_profile(profile, folder))
    return written
