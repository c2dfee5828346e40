"""Small populated circuit board (multi-part assembly): missing, bridge, scratch, contamination."""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from inspector.demo.common import SIZE, SUPERSAMPLE, _blend, _blob, _coverage, _curve, _mask, _noise, _pts


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


def pcb_image(rng: np.random.Generator, kind: str | None) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
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
