"""Known answers for patchcore's part mask and registration, and the detector using both.

Expected values come from independent computations: Otsu's criterion by brute force over raw
values, scikit-image's Lab conversion, analytic discs, and poses the test applies itself.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.color

from inspector.detect.patchcore import PatchCoreDetector
from inspector.detect.patchcore.detector import describe, from_frame, image_pose, to_frame
from inspector.detect.patchcore.foreground import border_contrast, is_whole_part, object_mask, otsu_split
from inspector.detect.registration import align_image
from inspector.imaging import write_png
from inspector.models.hub import ModelHub
from inspector.profile import ProductProfile

SIZE = 160


def brute_force_otsu(v: np.ndarray) -> tuple[set[float], float]:
    """Every split of the sorted distinct values; the best one's lower class and η from raw values."""
    v = np.asarray(v, np.float64).ravel()
    best, lower = -1.0, set()
    for t in np.unique(v)[:-1]:
        a, b = v[v <= t], v[v > t]
        between = a.size * b.size / v.size ** 2 * (a.mean() - b.mean()) ** 2
        if between > best:
            best, lower = between, set(np.unique(a).tolist())
    return lower, best / v.var()


def test_otsu_split_matches_brute_force_on_raw_values() -> None:
    rng = np.random.default_rng(0)
    v = np.concatenate([rng.integers(10, 21, 300), rng.integers(80, 91, 100)]).astype(float)
    t, eta = otsu_split(v)
    lower, want_eta = brute_force_otsu(v)
    assert set(np.unique(v[v <= t]).tolist()) == lower  # the same two classes
    assert eta == pytest.approx(want_eta, abs=2e-3)  # histogram bins vs raw values
    # overlapping classes separate worse
    w = np.concatenate([rng.normal(0, 1, 500), rng.normal(1.5, 1, 500)])
    _, eta_w = otsu_split(w)
    _, want_w = brute_force_otsu(np.round(w, 2))
    assert eta_w == pytest.approx(want_w, abs=0.02) and eta_w < 0.8 < eta
    assert otsu_split(np.full(10, 3.0)) == (3.0, 0.0)


def test_border_contrast_is_delta_e_to_the_border_colour() -> None:
    img = np.full((64, 64, 3), (40, 60, 90), np.uint8)
    img[20:44, 20:44] = (200, 180, 60)
    got = border_contrast(img)
    lab = skimage.color.rgb2lab(np.array([[(40, 60, 90), (200, 180, 60)]], np.uint8))[0]
    assert got[32, 32] == pytest.approx(float(np.linalg.norm(lab[1] - lab[0])), rel=0.01)
    assert got[2, 2] == pytest.approx(0.0, abs=0.05)


def disc(size: int, cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def test_whole_part_rules() -> None:
    assert is_whole_part(disc(100, 50, 50, 20))
    assert not is_whole_part(disc(100, 5, 50, 20))  # runs off the frame
    assert not is_whole_part(disc(100, 30, 50, 12) | disc(100, 72, 50, 12))  # two pieces of equal size
    assert not is_whole_part(disc(100, 50, 50, 1))  # a speck
    assert not is_whole_part(np.ones((100, 100), bool))  # the whole frame


def washer(size: int, cx: float, cy: float, angle: float, seed: int, chip: bool = False) -> np.ndarray:
    """A grey ring with a dark notch mark (so its turn is visible) on a dark noisy conveyor."""
    rng = np.random.default_rng(seed)
    img = np.clip(rng.normal(45, 12, (size, size, 3)), 0, 255).astype(np.uint8)
    cv2.circle(img, (int(cx), int(cy)), 52, (185, 185, 190), -1)
    cv2.circle(img, (int(cx), int(cy)), 20, (0, 0, 0), -1)
    img[disc(size, cx, cy, 20)] = np.clip(rng.normal(45, 12, (int(disc(size, cx, cy, 20).sum()), 3)), 0, 255)
    a = np.deg2rad(angle)
    for k in (0, 1):  # two marks at 0° and 150°, turned with the part
        mx, my = cx + 36 * np.cos(a + k * 2.6), cy + 36 * np.sin(a + k * 2.6)
        cv2.rectangle(img, (int(mx) - 5, int(my) - 3), (int(mx) + 5, int(my) + 3), (90, 90, 95), -1)
    if chip:  # a bite out of the outer edge, 90° from the first mark
        ex, ey = cx + 52 * np.cos(a + np.pi / 2), cy + 52 * np.sin(a + np.pi / 2)
        cv2.circle(img, (int(ex), int(ey)), 9, (45, 45, 45), -1)
    return img


def test_object_mask_is_the_part_grown_by_the_margin_or_none() -> None:
    imgs = [washer(SIZE, 80, 80, 0, s) for s in range(2)]
    mask = object_mask(imgs, 0.8, 6)
    assert mask is not None
    want = disc(SIZE, 80, 80, 52 + 6) & ~disc(SIZE, 80, 80, 20 - 6)  # the ring grown by 6 px on both sides
    assert float((mask != want).mean()) < 0.01
    stripes = np.zeros((SIZE, SIZE, 3), np.uint8)
    stripes[:, ::16] = 255  # traces running off the edge: no part lying on a background
    assert object_mask([stripes], 0.8, 6) is None


def test_to_frame_and_from_frame_invert_a_known_motion() -> None:
    rng = np.random.default_rng(1)
    master = rng.integers(0, 256, (64, 64, 3)).astype(np.uint8)
    image = np.zeros_like(master)
    image[3:, :59] = master[:61, 5:]  # the scene moved 5 px left and 3 px down
    pose = np.array([[1.0, 0, 5.0], [0, 1.0, -3.0]])  # image pixel (x, y) -> master pixel (x + 5, y - 3)
    framed = to_frame(image, pose, master)
    assert np.array_equal(framed[:61, 5:], master[:61, 5:])  # what the image shows, in place
    assert np.array_equal(framed[61:, :], master[61:, :])  # what it does not show, from the master
    amap = np.zeros((64, 64), np.float32)
    amap[30, 40] = 1.0  # a hot cell in the master frame ...
    back = from_frame(amap, pose)
    assert np.unravel_index(np.argmax(back), back.shape) == (33, 35)  # ... is at (x − 5, y + 3) in the image


def test_image_pose_recovers_a_turn_and_shift() -> None:
    master = washer(SIZE, 80, 80, 0, 0)
    moved = washer(SIZE, 86, 75, 12, 1)  # turned 12° (image y down: clockwise on screen), shifted (+6, −5)
    pose = image_pose(moved, align_image(master.astype(np.float32) / 255.0), "rigid", 20.0)
    # the moved ring's centre and its first mark must land on the master's
    centre = pose @ np.array([86, 75, 1.0])
    mark = pose @ np.array([86 + 36 * np.cos(np.deg2rad(12)), 75 + 36 * np.sin(np.deg2rad(12)), 1.0])
    assert np.abs(centre - [80, 80]).max() < 1.5
    assert np.abs(mark - [116, 80]).max() < 2.5


@pytest.fixture(scope="module")
def hub() -> ModelHub:
    return ModelHub(device="cpu", precision="fp32")


def test_detector_aligns_a_whole_part_and_ignores_its_background(tmp_path: Path, hub: ModelHub) -> None:
    poses = [(80, 80, 0), (84, 77, 8), (77, 83, -10), (82, 84, 15)]
    (tmp_path / "references").mkdir()
    names = []
    for i, (cx, cy, a) in enumerate(poses):
        write_png(tmp_path / "references" / f"{i}.png", washer(SIZE, cx, cy, a, 10 + i))
        names.append(f"references/{i}.png")
    profile = ProductProfile(name="w", object="washer", reference_shots=names, pipeline="patchcore",
                             patchcore={"input_size": SIZE, "memory": "local", "tiling": "off"}).with_folder(tmp_path)
    det = PatchCoreDetector()
    det.prepare(profile, hub)
    info = describe(det)
    assert info["alignment"] == "rigid" and info["background_masked"] and info["memory"] == "local"
    good = det.detect(washer(SIZE, 78, 82, -6, 50))
    chipped = det.detect(washer(SIZE, 83, 79, 5, 51, chip=True))
    assert chipped.image_score > 1.3 * good.image_score
    # the hottest cell of the chipped part is at its chip, drawn back in the image's own frame
    y, x = np.unravel_index(np.argmax(chipped.anomaly_map), chipped.anomaly_map.shape)
    a = np.deg2rad(5) + np.pi / 2
    assert np.hypot(x - (83 + 52 * np.cos(a)), y - (79 + 52 * np.sin(a))) < 14
    # a bright object on the conveyor, away from the part, is background: masked, not scored
    litter = washer(SIZE, 78, 82, -6, 50)
    cv2.rectangle(litter, (4, 4), (16, 16), (250, 250, 250), -1)
    assert det.detect(litter).image_score == pytest.approx(good.image_score, rel=0.1)
    assert float(det.detect(litter).anomaly_map[4:17, 4:17].max()) < 0.05
