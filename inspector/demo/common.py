"""What the demo renderers share: sizes, the categories, the seeded generators and drawing helpers."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

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
    patchcore: dict[str, object]


CATEGORIES: dict[str, DemoCategory] = {
    "fabric": DemoCategory(
        "fabric", "fabric", "Woven canvas web, beige, seen from above (texture).",
        ("hole", "stain", "cut", "fiber"),
        ("hole", "stain", "cut", "foreign fiber", "other"),
        ("hole", "stain", "cut", "foreign fiber"),
        {"alignment": "none", "memory": "global", "calibration_margin": 1.5},
        {"colour_weight": 4.0, "calibration_margin": 1.12},  # stains are flat colour changes
    ),
    "washer": DemoCategory(
        "washer", "washer", "Stamped steel washer M12 on a conveyor, top light (object with pose jitter).",
        ("scratch", "crack", "rust", "chip"),
        ("scratch", "crack", "rust", "chipped edge", "other"),
        ("scratch", "crack", "rust", "chipped edge"),
        {"alignment": "rigid", "memory": "local", "max_rotation_deg": 20.0, "calibration_margin": 1.0},
        {"memory": "local", "calibration_margin": 1.0},  # auto: aligned (rigid, ±20°) and its background masked
    ),
    "pcb": DemoCategory(
        "pcb", "circuit board", "Small populated circuit board (assembly of parts).",
        ("missing", "bridge", "scratch", "contamination"),
        ("missing part", "solder bridge", "scratch", "contamination", "other"),
        ("missing component", "solder bridge", "scratch", "contamination"),
        {"alignment": "rigid", "memory": "local", "max_rotation_deg": 6.0, "calibration_margin": 1.4},
        {"memory": "local", "colour_weight": 4.0, "calibration_margin": 1.17},  # contamination is a colour change
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
