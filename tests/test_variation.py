"""The weight-free ``variation`` pipeline: scoring math on known inputs, alignment, caching, behaviour.

Images are small (the detector works at 96-128 px here) so the whole file runs in seconds.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from inspector.detect import create_detector
from inspector.detect.variation import VariationDetector, VariationError, describe
from inspector.detect.variation import detector as variation_detector
from inspector.detect.registration import align_image, estimate_pose
from inspector.detect.variation.calibration import positional_scale, reference_threshold, seam_confidence
from inspector.detect.colour import structure_share, to_lab
from inspector.detect.variation.features import match_photometry, scale_groups, to_working
from inspector.detect.variation.memory import global_nn_distance, greedy_coreset, local_nn_distance, residual_whitener
from inspector.imaging import read_image, write_png
from inspector.profile import ProductProfile, load_profile, save_profile

SIZE = 128


# ----------------------------------------------------------------------------- synthetic products
def _noise(rng: np.random.Generator, size: int, cell: float, amp: float) -> np.ndarray:
    n = int(np.ceil(size / cell)) + 2
    g = cv2.resize(rng.standard_normal((n, n)).astype(np.float32), (int(n * cell), int(n * cell)),
                   interpolation=cv2.INTER_CUBIC)[:size, :size]
    return amp * g


def part(seed: int, dx: float = 0.0, dy: float = 0.0, angle: float = 0.0, gain: float = 1.0) -> np.ndarray:
    """A small 'object': a grey plate with a dark hole, a bar and a marker, on a textured background."""
    rng = np.random.default_rng(seed)
    img = np.full((SIZE, SIZE, 3), 70, np.float32) + _noise(rng, SIZE, 3, 3)[..., None]
    canvas = np.zeros((SIZE, SIZE, 3), np.uint8)
    cv2.rectangle(canvas, (24, 24), (104, 104), (170, 172, 176), -1, cv2.LINE_AA)
    cv2.circle(canvas, (50, 50), 10, (40, 40, 45), -1, cv2.LINE_AA)
    cv2.rectangle(canvas, (62, 70), (96, 80), (90, 120, 160), -1, cv2.LINE_AA)
    cv2.putText(canvas, "A7", (30, 96), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (230, 230, 230), 1, cv2.LINE_AA)
    mask = (canvas.sum(2) > 0)[..., None]
    img = np.where(mask, canvas.astype(np.float32) + _noise(rng, SIZE, 6, 2)[..., None], img)
    m = cv2.getRotationMatrix2D((SIZE / 2, SIZE / 2), angle, 1.0)
    m[:, 2] += (dx, dy)
    img = cv2.warpAffine(img, m, (SIZE, SIZE), borderMode=cv2.BORDER_REFLECT)
    return np.clip(img * gain + rng.normal(0, 1.5, img.shape), 0, 255).astype(np.uint8)


def weave(seed: int, phase: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """A plain-weave texture with a random phase."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    u, v = (xx + phase[0]) / 6.0, (yy + phase[1]) / 6.0
    warp = 0.5 + 0.5 * np.cos(2 * np.pi * u) * np.sign(np.sin(np.pi * v))
    weft = 0.5 + 0.5 * np.cos(2 * np.pi * v) * np.sign(np.sin(np.pi * u + np.pi / 2))
    lum = 120 + 50 * np.maximum(warp, weft) + rng.normal(0, 3, (SIZE, SIZE))
    return np.clip(np.stack([lum, lum * 0.92, lum * 0.8], -1), 0, 255).astype(np.uint8)


def paste_blob(img: np.ndarray, centre: tuple[int, int], radius: int, colour=(30, 25, 20)) -> tuple[np.ndarray, np.ndarray]:
    out = img.copy()
    cv2.circle(out, centre, radius, colour, -1, cv2.LINE_AA)
    mask = np.zeros(img.shape[:2], np.uint8)
    cv2.circle(mask, centre, radius, 1, -1)
    return out, mask.astype(bool)


def make_profile(folder: Path, shots: list[np.ndarray], **variation) -> ProductProfile:
    refs = []
    for i, img in enumerate(shots):
        write_png(folder / "references" / f"{i:03d}.png", img)
        refs.append(f"references/{i:03d}.png")
    params = {"working_size": SIZE, **variation}
    save_profile(ProductProfile(name="t", pipeline="variation", reference_shots=refs, variation=params), folder)
    return load_profile(folder)


@pytest.fixture()
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("INSPECTOR_HOME", str(home))
    monkeypatch.delenv("INSPECTOR_CACHE_DIR", raising=False)
    return home


@pytest.fixture()
def object_detector(tmp_path: Path, cache_home: Path) -> VariationDetector:
    shots = [part(1), part(2, 3, -2, 2.0), part(3, -2, 3, -2.5, 1.05), part(4, 1, 1, 1.0, 0.95)]
    det = VariationDetector()
    det.prepare(make_profile(tmp_path / "obj", shots, alignment="rigid", memory="local", max_rotation_deg=6), None)
    return det


# ----------------------------------------------------------------------------- math on known inputs
def test_local_nn_distance_finds_the_shifted_match() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(5, 12, 12)).astype(np.float32)
    query = np.roll(ref, 1, axis=2)  # the same pattern one cell to the right
    dist = local_nn_distance(query, ref[None], radius=1)
    assert np.allclose(dist[:, 1:], 0, atol=1e-5)  # interior matches exactly within the radius
    far = local_nn_distance(query, ref[None], radius=0)
    assert far[:, 1:].mean() > 1.0  # without search it does not


def test_local_nn_distance_value_and_validity() -> None:
    bank = np.zeros((2, 3, 4, 4), np.float32)
    bank[1] += 2.0
    query = np.ones((3, 4, 4), np.float32)
    assert np.allclose(local_nn_distance(query, bank, 0), np.sqrt(3.0))  # |1-0| or |1-2| in 3 dims
    valid = np.zeros((2, 4, 4), bool)
    valid[1, :2] = True
    dist = local_nn_distance(query, bank, 0, valid)
    assert np.allclose(dist[:2], np.sqrt(3.0)) and np.isnan(dist[2:]).all()  # no valid reference -> NaN


def test_global_nn_distance_known_points() -> None:
    bank = np.array([[0, 0], [10, 0], [0, 10]], np.float32)
    query = np.array([[1, 0], [9, 1], [3, 4], [0, 10]], np.float32)
    assert np.allclose(global_nn_distance(query, bank, chunk=2), [1.0, np.sqrt(2), 5.0, 0.0], atol=1e-4)


def test_greedy_coreset_covers_every_cluster() -> None:
    rng = np.random.default_rng(1)
    centres = np.array([[0, 0, 0], [50, 0, 0], [0, 50, 0], [0, 0, 50]], np.float32)
    x = np.concatenate([c + rng.normal(0, 0.5, (200, 3)) for c in centres]).astype(np.float32)
    chosen = greedy_coreset(x, 4, proj_dims=8)
    assert sorted(set(chosen // 200)) == [0, 1, 2, 3]


def test_residual_whitener_makes_the_normal_spread_isotropic() -> None:
    rng = np.random.default_rng(2)
    a = np.array([[3.0, 0.0], [1.0, 0.2]])
    r = rng.normal(size=(20000, 2)) @ a.T
    w = residual_whitener(r, shrinkage=0.0)
    cov = (r @ w.T).T @ (r @ w.T) / len(r)
    assert np.allclose(cov, np.eye(2), atol=0.05)


def test_positional_scale_and_threshold() -> None:
    maps = np.ones((3, 32, 32), np.float32)
    maps[:, 10:14, 10:14] = 5.0  # a place where good parts vary a lot
    scale = positional_scale(maps, np.ones_like(maps), sigma=1.0)
    assert scale[12, 12] > 3 * scale[28, 28]
    assert np.isclose(scale[28, 28], np.sqrt(2.0), atol=0.05)  # sqrt(1² + floor²), floor = median = 1
    t = reference_threshold(maps, np.ones_like(maps), sigma=0.0, margin=1.5)
    assert np.isclose(t, 7.5)
    t_weighted = reference_threshold(maps, np.zeros_like(maps), sigma=0.0, margin=1.5)
    assert t_weighted == pytest.approx(1.5e-6)  # no evidence at all: the tiny floor, never a division by 0


def test_seam_confidence_ramps_towards_what_is_not_shown() -> None:
    assert np.all(seam_confidence(np.ones((16, 16), np.float32), 4.0) == 1.0)
    cover = np.ones((16, 32), np.float32)
    cover[:, :8] = 0
    conf = seam_confidence(cover, 4.0)
    assert conf[5, 0] == 0 and conf[5, 31] == 1 and 0 < conf[5, 9] < 1


def test_match_photometry_removes_gain_and_offset() -> None:
    lab = to_lab(to_working(part(1), SIZE))
    mean = lab.reshape(-1, 3).mean(0)
    std = np.array([lab[..., c].std() for c in range(3)])
    brighter = to_lab(to_working(part(1, gain=1.15), SIZE))
    fixed = match_photometry(brighter, mean, std)
    assert np.abs(fixed[..., 0] - lab[..., 0]).mean() < 0.35 * np.abs(brighter[..., 0] - lab[..., 0]).mean()


@pytest.mark.parametrize("dx, dy, angle", [(5.0, -3.0, 0.0), (-4.0, 2.0, 4.0)])
def test_estimate_pose_recovers_a_known_motion(dx: float, dy: float, angle: float) -> None:
    fixed = to_working(part(1), SIZE)
    moving = to_working(part(1, dx, dy, angle), SIZE)
    m = estimate_pose(align_image(moving), align_image(fixed), "rigid", 10.0)
    # the point at the image centre moved by (dx, dy); the pose must take it back
    scale = SIZE / 128
    centre = np.array([SIZE / 2 + dx, SIZE / 2 + dy, 1.0]) / np.array([scale, scale, 1])
    back = (m @ centre) * scale
    assert np.allclose(back, [SIZE / 2, SIZE / 2], atol=1.0)
    assert np.degrees(np.arctan2(m[1, 0], m[0, 0])) == pytest.approx(angle, abs=0.7)  # undoes the rotation


def test_scale_groups_follow_the_filter_bank_layout() -> None:
    assert scale_groups(36, True).tolist() == [0] * 9 + [1] * 9 + [0] * 9 + [1] * 9
    assert not scale_groups(36, False).any()
    assert not scale_groups(12, True).any()  # not the filter bank's layout: one group


def test_structure_share_tells_texture_from_object() -> None:
    assert structure_share(to_lab(to_working(weave(0), SIZE))) < 0.15
    assert structure_share(to_lab(to_working(part(0), SIZE))) > 0.3


# ----------------------------------------------------------------------------- detector behaviour
def test_identical_and_shifted_good_parts_pass(object_detector: VariationDetector) -> None:
    det = object_detector
    same = det.detect(part(1))
    assert same.image_score < 0.5
    moved = det.detect(part(7, 4, -3, 3.0, 1.08))  # new part, shifted, rotated, brighter
    assert moved.image_score < 0.5
    assert same.anomaly_map.shape == (SIZE, SIZE) and 0 <= same.anomaly_map.min() <= same.anomaly_map.max() <= 1


def test_pasted_defect_is_localised(object_detector: VariationDetector) -> None:
    bad, mask = paste_blob(part(8, -3, 2, -2.0), (82, 40), 5)
    det = object_detector.detect(bad)
    assert det.image_score >= 0.5
    assert det.regions and det.regions[0].mask[mask].mean() > 0.9  # the top region covers the blob ...
    assert det.regions[0].area_px < 25 * mask.sum()  # ... and not the whole part (128 px images, sigma 4)
    assert all(r.mask[mask].sum() == 0 for r in det.regions[1:])  # the rest are elsewhere (if any)
    good = object_detector.detect(part(8, -3, 2, -2.0))
    assert det.anomaly_map[mask].mean() > 3 * good.anomaly_map[mask].mean()


def test_missing_feature_is_anomalous(object_detector: VariationDetector) -> None:
    """A part whose marker bar is missing (a local, 'logical' anomaly the local memory must see)."""
    img = part(9, 2, 1, 1.0)
    hole = np.zeros(img.shape[:2], np.uint8)
    cv2.rectangle(hole, (62 + 2, 70 + 1), (96 + 2, 80 + 1), 1, -1)
    plate = np.median(img[30:40, 70:100].reshape(-1, 3), axis=0)
    img[hole.astype(bool)] = plate.astype(np.uint8)
    det = object_detector.detect(img)
    assert det.image_score >= 0.5


@pytest.mark.parametrize("fusion", ["mean", "max"])
def test_per_scale_fusion_finds_the_defect(tmp_path: Path, cache_home: Path, fusion: str) -> None:
    shots = [part(1), part(2, 3, -2, 2.0), part(3, -2, 3, -2.5, 1.05)]
    det = VariationDetector()
    det.prepare(make_profile(tmp_path / fusion, shots, alignment="rigid", memory="local", max_rotation_deg=6,
                             scale_fusion=fusion), None)
    assert det.scales == 2 and describe(det)["scales"] == 2
    bad, mask = paste_blob(part(8, -3, 2, -2.0), (82, 40), 5)
    found = det.detect(bad)
    assert det.detect(part(8, -3, 2, -2.0)).image_score < 0.5 <= found.image_score
    assert found.regions[0].mask[mask].mean() > 0.9


def test_texture_memory_finds_a_stain(tmp_path: Path, cache_home: Path) -> None:
    shots = [weave(i, (i * 2.3, i * 1.7)) for i in range(3)]
    det = VariationDetector()
    det.prepare(make_profile(tmp_path / "tex", shots), None)  # auto: texture -> global memory, no alignment
    assert (det.mode, det.alignment) == ("global", "none")
    good = det.detect(weave(11, (3.1, 4.2)))
    bad, mask = paste_blob(weave(11, (3.1, 4.2)), (40, 90), 7, (90, 60, 40))
    found = det.detect(bad)
    assert good.image_score < 0.5 <= found.image_score
    assert found.regions and found.regions[0].mask[mask].mean() > 0.9
    assert found.regions[0].area_px < 25 * mask.sum()


def test_auto_mode_picks_local_memory_for_objects(tmp_path: Path, cache_home: Path) -> None:
    det = VariationDetector()
    det.prepare(make_profile(tmp_path / "auto", [part(1), part(2, 2, 2)], max_rotation_deg=4), None)
    assert (det.mode, det.alignment) == ("local", "rigid")


def test_single_reference_shot_works(tmp_path: Path, cache_home: Path) -> None:
    det = VariationDetector()
    det.prepare(make_profile(tmp_path / "one", [part(1)], alignment="translation", memory="local"), None)
    assert det.detect(part(1)).image_score < 0.5
    bad, _ = paste_blob(part(1), (82, 40), 6)
    assert det.detect(bad).image_score >= 0.5


# ----------------------------------------------------------------------------- caching, retune, errors
def test_second_prepare_uses_the_cache(tmp_path: Path, cache_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    profile = make_profile(tmp_path / "c", [part(1), part(2, 2, 1)], alignment="translation", memory="local")
    entries = cache_home / "cache" / "variation"
    first = VariationDetector()
    first.prepare(profile, None)
    assert not first.cache_hit
    assert len(list(entries.glob("*.npz"))) == 1
    decoded: list[Path] = []  # a cached prepare hashes the shots but never decodes them again
    monkeypatch.setattr(variation_detector, "read_image", lambda path: decoded.append(path) or read_image(path))
    second = VariationDetector()
    second.prepare(profile, None)
    assert decoded == []
    assert second.cache_hit and second.threshold == pytest.approx(first.threshold)
    img = part(5, 1, 1)
    assert np.array_equal(first.detect(img).anomaly_map, second.detect(img).anomaly_map)
    profile.variation.smoothing_sigma = 2.0  # finish-only: still the same cache entry
    third = VariationDetector()
    third.prepare(profile, None)
    assert third.cache_hit and len(list(entries.glob("*.npz"))) == 1
    profile.variation.search_radius = 2  # shapes the memory: a new entry
    fourth = VariationDetector()
    fourth.prepare(profile, None)
    assert not fourth.cache_hit and len(list(entries.glob("*.npz"))) == 2
    assert decoded == profile.reference_paths()  # ... and this one decoded every shot


def test_cache_key_follows_the_reference_pixels(tmp_path: Path, cache_home: Path) -> None:
    folder = tmp_path / "k"
    profile = make_profile(folder, [part(1), part(2)], alignment="translation", memory="local")
    VariationDetector().prepare(profile, None)
    write_png(folder / "references" / "001.png", part(3))  # same file name, new content
    det = VariationDetector()
    det.prepare(load_profile(folder), None)
    assert not det.cache_hit


def test_retune_changes_only_the_scale(object_detector: VariationDetector) -> None:
    det = object_detector
    img = part(8, -3, 2, -2.0)
    analysis = det.analyse(img)
    before = det.finish(analysis, img).image_score
    profile = det.profile.model_copy(deep=True).with_folder(det.profile.folder)
    profile.variation.calibration_margin = det.profile.variation.calibration_margin * 2
    det.retune(profile)
    after = det.finish(analysis, img).image_score
    assert after == pytest.approx(before / 2, rel=1e-4)
    bad = profile.model_copy(deep=True).with_folder(profile.folder)
    bad.variation.search_radius = 3
    with pytest.raises(ValueError, match="prepare"):
        det.retune(bad)


def test_errors_name_the_problem(tmp_path: Path, cache_home: Path) -> None:
    empty = make_profile(tmp_path / "e", [])
    with pytest.raises(VariationError, match="reference shot"):
        VariationDetector().prepare(empty, None)
    broken = make_profile(tmp_path / "b", [part(1)])
    (tmp_path / "b" / "references" / "000.png").write_bytes(b"not an image")
    with pytest.raises(VariationError, match="000.png"):
        VariationDetector().prepare(broken, None)
    with pytest.raises(RuntimeError, match="prepare"):
        VariationDetector().analyse(part(1))


def test_registry_and_inspector_run_it(tmp_path: Path, cache_home: Path) -> None:
    from inspector.inspection import Inspector
    from inspector.models.hub import ModelHub

    assert isinstance(create_detector("variation"), VariationDetector)
    profile = make_profile(tmp_path / "i", [part(1), part(2, 1, 1)], alignment="translation", memory="local")
    inspector = Inspector(profile, ModelHub(device="cpu", precision="fp32"))
    bad, _ = paste_blob(part(4), (82, 40), 6)
    assert inspector.inspect(part(4)).verdict == "PASS"
    result = inspector.inspect(bad)
    assert result.verdict == "FAIL" and result.regions
    assert {"align", "features", "search"} <= set(result.detection.timings)


# ----------------------------------------------------------------------------- the bench's naive baseline
def _bench_variation():
    """``bench/variation.py`` as a module (the baseline lives there, not in the product detector)."""
    import importlib.util
    import sys

    path = Path(__file__).resolve().parent.parent / "bench" / "variation.py"
    spec = importlib.util.spec_from_file_location("bench_variation", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_bench_baseline_descriptor_known_values() -> None:
    bench = _bench_variation()
    lab = np.zeros((32, 32, 3), np.float32)
    lab[..., 1], lab[..., 2] = 10.0, -5.0
    lab[..., 0] = 20.0 + 0.5 * np.arange(32, dtype=np.float32)[None, :]  # L rises 0.5 per px to the right
    f = bench.baseline_features(lab, 2, 8)
    assert f.shape == (8, 4, 4)  # (L, a, b, |grad L|) per level on the 8-px cells
    assert np.allclose(f[0, :, 1], 20.0 + 0.5 * 11.5)  # cell mean of L over columns 8..15
    assert np.allclose(f[1], 10.0) and np.allclose(f[2], -5.0)
    assert np.allclose(f[3, 1:3, 1:3], 0.5, atol=1e-5)  # interior cells: the slope (Sobel/8)


def test_bench_baseline_runs_the_naive_method_apart_from_the_product(tmp_path: Path, cache_home: Path) -> None:
    bench = _bench_variation()
    profile = make_profile(tmp_path / "b", [part(1), part(2, 3, -2, 2.0), part(3, -2, 3, -2.5, 1.05)],
                           alignment="rigid", memory="local", max_rotation_deg=6, scale_fusion="mean")
    product = VariationDetector()
    product.prepare(profile, None)
    base = bench.BaselineDetector()
    base.prepare(profile, None)
    assert not base.cache_hit  # its references are cached apart from the product's
    assert (product.mode, product.alignment, product.scales) == ("local", "rigid", 2)
    assert (base.mode, base.alignment, base.scales) == ("global", "none", 1)
    assert profile.variation.alignment == "rigid" and profile.variation.photometric  # the caller's profile untouched
    img = part(5, 1, 1)
    assert not np.array_equal(product.detect(img).anomaly_map, base.detect(img).anomaly_map)
    again = bench.BaselineDetector()
    again.prepare(profile, None)
    assert again.cache_hit and np.array_equal(base.detect(img).anomaly_map, again.detect(img).anomaly_map)
