"""Woven canvas (texture): the fabric renderer and its defects (hole, stain, cut, fiber)."""

from __future__ import annotations

import math

import cv2
import numpy as np

from inspector.demo.common import SIZE, _blend, _blob, _coverage, _curve, _mask, _noise, _pts


# --------------------------------------------------------------------------- fabric
_FABRIC_WARP = np.array([196, 178, 142], np.float32)
_FABRIC_WEFT = np.array([182, 163, 128], np.float32)


def render_fabric(rng: np.random.Generator) -> np.ndarray:
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


def fabric_defect(img: np.ndarray, rng: np.random.Generator, kind: str) -> tuple[np.ndarray, np.ndarray]:
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
