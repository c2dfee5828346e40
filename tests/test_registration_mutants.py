"""Known answers for inspector/detect/registration.py's stages: the rotation search, the start
selection, the ECC refinements and the runaway guard (the mutants listed in bench/mutation.md).

The end-to-end pose tests in test_variation / test_variation_mutants pass even when one stage is
weakened (every stage recovers from the one before), so these tests watch the stages through a
recording stand-in for the module's ``cv2`` (every call is forwarded to OpenCV unless a test
replaces it with a stub whose answer it chooses). Expected values are constructed poses, float64
re-derivations written here (OpenCV's rotation matrix, the Hanning window, the candidate poses,
the start rule) or stub answers, never the function under test.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
import pytest

from inspector.detect import registration
from tests.support.reference import reflect_conv

EPS_COUNT = cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT
ANGLES = [2.0 * k for k in range(-5, 6)]  # ±10° in 2° steps


class Cv2Recorder:
    """Stands in for ``cv2`` inside registration: records the watched calls (array arguments
    copied before the call), answers from ``stubs`` where given, else from OpenCV."""

    WATCHED = ("phaseCorrelate", "warpAffine", "findTransformECC", "createHanningWindow", "pyrDown")

    def __init__(self, **stubs: Callable[..., Any]) -> None:
        self.stubs = stubs
        self.calls: dict[str, list[dict[str, Any]]] = {name: [] for name in self.WATCHED}

    def __getattr__(self, name: str) -> Any:
        real = getattr(cv2, name)
        if name not in self.WATCHED:
            return real

        def call(*args: Any, **kwargs: Any) -> Any:
            record = {"args": [a.copy() if isinstance(a, np.ndarray) else a for a in args], "kwargs": dict(kwargs)}
            self.calls[name].append(record)
            record["out"] = self.stubs.get(name, real)(*args, **kwargs)
            return record["out"]

        return call


@pytest.fixture()
def recorder(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Cv2Recorder]:
    def install(**stubs: Callable[..., Any]) -> Cv2Recorder:
        rec = Cv2Recorder(**stubs)
        monkeypatch.setattr(registration, "cv2", rec)
        return rec

    return install


def smooth_field(seed: int, sigma: float, shape: tuple[int, int] = (128, 128)) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    field = cv2.GaussianBlur(noise, (0, 0), sigma)
    return ((field - field.mean()) / field.std()).astype(np.float32)


def rotation(angle_deg: float, cx: float, cy: float) -> np.ndarray:
    """OpenCV's rotation about (cx, cy), α = cos, β = sin: [[α, β, (1−α)cx − β cy], [−β, α, β cx + (1−α)cy]]."""
    a, b = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    return np.array([[a, b, (1 - a) * cx - b * cy], [-b, a, b * cx + (1 - a) * cy]])


def shifted(m: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """translate(dx, dy) ∘ m."""
    out = np.array(m, dtype=np.float64)
    out[:, 2] += (dx, dy)
    return out


def invert(m: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine, by hand in float64: [A⁻¹, −A⁻¹ t]."""
    m = np.asarray(m, dtype=np.float64)
    (a, b), (c, d) = m[:, :2]
    inv = np.array([[d, -b], [-c, a]]) / (a * d - b * c)
    return np.hstack([inv, -(inv @ m[:, 2])[:, None]])


def hanning(rows: int, cols: int) -> np.ndarray:
    """OpenCV's createHanningWindow: sqrt of the outer product of two raised cosines."""
    wr = 0.5 * (1 - np.cos(2 * np.pi * np.arange(rows) / (rows - 1)))
    wc = 0.5 * (1 - np.cos(2 * np.pi * np.arange(cols) / (cols - 1)))
    return np.sqrt(np.outer(wr, wc))


def ncc(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel())[0, 1])


def pick_starts(peaks: list[float], angles: list[float], count: int = 3, gap: float = 4.0) -> list[int]:
    """Indices of the starts: best peak first, each at least ``gap``° from those already taken."""
    order = sorted(range(len(peaks)), key=lambda i: -peaks[i])
    taken: list[int] = []
    for i in order:
        if all(abs(angles[i] - angles[j]) >= gap for j in taken):
            taken.append(i)
        if len(taken) == count:
            break
    return taken


def window_of(call: dict[str, Any]) -> Any:
    return call["args"][2] if len(call["args"]) > 2 else call["kwargs"].get("window")


def ecc_answer(cc: float, pose: np.ndarray) -> tuple[float, np.ndarray]:
    """What findTransformECC returns for a refined moving → fixed ``pose``: the inverse warp in float32."""
    return cc, invert(pose).astype(np.float32)


def assert_ecc_call(call: dict[str, Any], template: np.ndarray, image: np.ndarray, init: np.ndarray,
                    iterations: int) -> None:
    t, i, warp, motion, criteria, mask, gauss = call["args"] + [None] * (7 - len(call["args"]))
    np.testing.assert_array_equal(t, template)
    np.testing.assert_array_equal(i, image)
    assert warp.dtype == np.float32
    np.testing.assert_allclose(warp, invert(init), atol=2e-5)  # ECC takes fixed → moving
    assert motion == cv2.MOTION_EUCLIDEAN
    assert criteria == (EPS_COUNT, iterations, 1e-4)
    assert mask is None and gauss == 1


# ----------------------------------------------------------------------------- the rotation search
def test_the_search_tries_every_2deg_angle_about_the_half_resolution_centre_and_refines_its_starts(
        recorder: Callable[..., Cv2Recorder]) -> None:
    fixed = smooth_field(35, 1.5)
    fwd = shifted(rotation(5.0, 63.5, 63.5), 4.0, -3.0)  # fixed → moving, by construction
    moving = cv2.warpAffine(fixed, fwd, (128, 128), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    rec = recorder()
    m = registration.estimate_pose(moving, fixed, "rigid", 10.0)

    want = invert(fwd)
    centre = np.array([63.5, 63.5, 1.0])
    np.testing.assert_allclose(m @ centre, want @ centre, atol=0.05)
    np.testing.assert_allclose(m[:, :2], want[:, :2], atol=2e-3)

    small_f, small_m = cv2.pyrDown(fixed), cv2.pyrDown(moving)
    calls = rec.calls["phaseCorrelate"]
    assert len(calls) == len(ANGLES)
    candidates, peaks = [], []
    for ang, call in zip(ANGLES, calls, strict=True):
        rot = rotation(ang, 31.5, 31.5)  # the centre of the 64² half-resolution image
        rotated = small_m if ang == 0 else cv2.warpAffine(small_m, rot, (64, 64), borderMode=cv2.BORDER_REFLECT)
        np.testing.assert_allclose(call["args"][0], rotated, atol=1e-5)
        np.testing.assert_array_equal(call["args"][1], small_f)
        assert window_of(call) is not None
        np.testing.assert_allclose(window_of(call), hanning(64, 64), atol=1e-6)
        (dx, dy), peak = call["out"]
        candidates.append(shifted(rot, dx, dy))
        peaks.append(peak)

    starts = pick_starts(peaks, ANGLES)
    eccs = rec.calls["findTransformECC"]
    assert len(eccs) == len(starts) + 1 == 4
    best_cc, best = -2.0, candidates[0]
    for i, call in zip(starts, eccs, strict=False):
        assert_ecc_call(call, small_f, small_m, candidates[i], 30)
        start_cc = ncc(cv2.warpAffine(small_m, candidates[i], (64, 64), borderMode=cv2.BORDER_REFLECT), small_f)
        if start_cc > best_cc:
            best_cc, best = start_cc, candidates[i]
        cc, warp = call["out"]
        refined = invert(warp)
        if np.abs(refined[:, 2] - candidates[i][:, 2]).max() <= 8 and cc > best_cc:
            best_cc, best = cc, refined
    full = best.copy()
    full[:, 2] *= 2.0
    assert_ecc_call(eccs[3], fixed, moving, full, 20)
    np.testing.assert_allclose(m, invert(eccs[3]["out"][1]), atol=1e-6)


# peaks of the stubbed phase correlation per angle: sorted 4, 6, 0, −4, 8, …; the starts are 4°, 0°, −4°
PEAKS = {-10: 0.20, -8: 0.30, -6: 0.25, -4: 0.70, -2: 0.35, 0: 0.80, 2: 0.40, 4: 0.90, 6: 0.85, 8: 0.60, 10: 0.10}


def stub_search(shifts: dict[int, tuple[float, float]], answers: list[Any]) -> dict[str, Callable[..., Any]]:
    """phaseCorrelate answers (shift, PEAKS[angle]) in the search's angle order; findTransformECC
    the ``answers`` in turn (an exception instance is raised)."""
    pc_calls, ecc_calls = iter(ANGLES), iter(answers)

    def phase(*_args: Any) -> tuple[tuple[float, float], float]:
        ang = int(next(pc_calls))
        return shifts.get(ang, (0.0, 0.0)), PEAKS[ang]

    def ecc(*_args: Any) -> Any:
        answer = next(ecc_calls)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return {"phaseCorrelate": phase, "findTransformECC": ecc}


@pytest.mark.parametrize("final_converges", [True, False])
def test_the_best_ecc_of_the_distinct_starts_is_refined_at_full_resolution(
        recorder: Callable[..., Cv2Recorder], final_converges: bool) -> None:
    fixed, moving = smooth_field(40, 1.5), smooth_field(41, 1.5)  # unrelated: every start correlates ≈ 0
    shifts = {ang: (0.25 * ang, -0.125 * ang + 0.5) for ang in PEAKS}
    cand = {ang: shifted(rotation(ang, 31.5, 31.5), *shifts[ang]) for ang in PEAKS}
    r0 = shifted(cand[4], 0.5, 0.25)  # ECC from 4°: 0.95
    r1 = shifted(cand[0], -0.5, 0.75)  # ECC from 0°: 0.97, the best
    chosen = r1.copy()
    chosen[:, 2] *= 2.0
    r3 = shifted(chosen, 0.25, -0.25)
    final = ecc_answer(0.99, r3) if final_converges else cv2.error("stub: no convergence")
    rec = recorder(**stub_search(shifts, [ecc_answer(0.95, r0), ecc_answer(0.97, r1),
                                          cv2.error("stub: no convergence"), final]))
    m = registration.estimate_pose(moving, fixed, "rigid", 10.0)

    small_f, small_m = cv2.pyrDown(fixed), cv2.pyrDown(moving)
    for ang in (4, 0, -4):  # the starts' own correlations lose to ECC's answers
        assert ncc(cv2.warpAffine(small_m, cand[ang], (64, 64), borderMode=cv2.BORDER_REFLECT), small_f) < 0.5
    eccs = rec.calls["findTransformECC"]
    assert len(eccs) == 4
    for call, ang in zip(eccs, [4, 0, -4], strict=False):
        assert_ecc_call(call, small_f, small_m, cand[ang], 30)
    assert_ecc_call(eccs[3], fixed, moving, chosen, 20)
    np.testing.assert_allclose(m, r3 if final_converges else chosen, atol=1e-5)


def test_a_start_that_correlates_better_than_the_ecc_answers_is_kept(recorder: Callable[..., Cv2Recorder]) -> None:
    # the same image: the 4° start correlates highly (≈ 0.878 with reflected borders, the rule; ≈ 0.863
    # with zero borders); ECC from it answers the mid-point, so only the border decides that the start is kept
    fixed = smooth_field(42, 6.0)
    moving = fixed.copy()
    shifts = {4: (0.0, 0.0), 0: (9.0, 4.0), -4: (-7.0, 8.0)}
    cand = {ang: shifted(rotation(ang, 31.5, 31.5), *shifts.get(ang, (0.0, 0.0))) for ang in PEAKS}
    small_f, small_m = cv2.pyrDown(fixed), cv2.pyrDown(moving)

    def start_cc(ang: int, border: int) -> float:
        return ncc(cv2.warpAffine(small_m, cand[ang], (64, 64), borderMode=border), small_f)

    reflect, zero = start_cc(4, cv2.BORDER_REFLECT), start_cc(4, cv2.BORDER_CONSTANT)
    assert reflect > zero + 2e-3  # the border makes a difference here
    assert max(start_cc(a, cv2.BORDER_REFLECT) for a in (0, -4)) < min(reflect, zero) - 0.05
    mid = 0.5 * (reflect + zero)
    r0 = shifted(cand[4], 0.5, -0.5)
    rec = recorder(**stub_search(shifts, [ecc_answer(mid, r0), ecc_answer(-0.5, cand[0]), ecc_answer(-0.5, cand[-4]),
                                          cv2.error("stub: no convergence")]))
    m = registration.estimate_pose(moving, fixed, "rigid", 10.0)
    want = cand[4].copy()  # the start itself: it correlates better than ECC's answer from it
    want[:, 2] *= 2.0
    assert_ecc_call(rec.calls["findTransformECC"][3], fixed, moving, want, 20)
    np.testing.assert_allclose(m, want, atol=1e-9)


def test_a_non_square_image_is_searched_at_its_own_size() -> None:
    fixed = smooth_field(36, 1.5, (96, 128))
    fwd = shifted(rotation(4.0, 63.5, 47.5), 2.3, -1.6)
    moving = cv2.warpAffine(fixed, fwd, (128, 96), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    m = registration.estimate_pose(moving, fixed, "rigid", 10.0)
    want = invert(fwd)
    centre = np.array([63.5, 47.5, 1.0])
    np.testing.assert_allclose(m @ centre, want @ centre, atol=0.05)
    np.testing.assert_allclose(m[:, :2], want[:, :2], atol=2e-3)


@pytest.mark.parametrize("max_rotation", [1.0, 1.9])
def test_a_rotation_limit_under_one_step_still_searches_at_half_resolution(
        recorder: Callable[..., Cv2Recorder], max_rotation: float) -> None:
    fixed = smooth_field(33, 3.0)
    fwd = shifted(np.eye(2, 3), 2.3, -1.6)
    moving = cv2.warpAffine(fixed, fwd, (128, 128), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    rec = recorder()
    m = registration.estimate_pose(moving, fixed, "rigid", max_rotation)
    (only,) = rec.calls["phaseCorrelate"]  # the 0° candidate only
    np.testing.assert_array_equal(only["args"][1], cv2.pyrDown(fixed))
    np.testing.assert_allclose(m, invert(fwd), atol=0.05)


# ----------------------------------------------------------------------------- the translation path
def test_translation_is_the_windowed_phase_correlation_of_a_non_square_image(
        recorder: Callable[..., Cv2Recorder]) -> None:
    fixed = smooth_field(32, 0.7, (96, 128))
    moving = np.roll(fixed, (-3, 5), axis=(0, 1))  # moving(x, y) = fixed(x − 5, y + 3)
    rec = recorder()
    m = registration.estimate_pose(moving, fixed, "translation", 10.0)
    (call,) = rec.calls["phaseCorrelate"]
    np.testing.assert_array_equal(call["args"][0], moving)
    np.testing.assert_array_equal(call["args"][1], fixed)
    assert window_of(call) is not None
    np.testing.assert_allclose(window_of(call), hanning(96, 128), atol=1e-6)
    assert rec.calls["findTransformECC"] == []
    np.testing.assert_array_equal(m[:, :2], np.eye(2))  # translation only, whatever the rotation limit
    np.testing.assert_allclose(m[:, 2], [-5.0, 3.0], atol=0.05)


def test_translation_mode_does_not_rotate_a_rotated_part(recorder: Callable[..., Cv2Recorder]) -> None:
    fixed = smooth_field(35, 1.5)
    moving = cv2.warpAffine(fixed, rotation(6.0, 63.5, 63.5), (128, 128), borderMode=cv2.BORDER_REFLECT)
    rec = recorder()
    m = registration.estimate_pose(moving, fixed, "translation", 10.0)
    (call,) = rec.calls["phaseCorrelate"]
    (dx, dy), _ = call["out"]
    np.testing.assert_array_equal(m, [[1.0, 0.0, dx], [0.0, 1.0, dy]])


def test_rigid_without_rotation_refines_the_full_resolution_shift_with_30_ecc_iterations(
        recorder: Callable[..., Cv2Recorder]) -> None:
    fixed = smooth_field(33, 3.0)
    fwd = shifted(np.eye(2, 3), 2.3, -1.6)
    moving = cv2.warpAffine(fixed, fwd, (128, 128), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    rec = recorder()
    m = registration.estimate_pose(moving, fixed, "rigid", 0.0)
    (pc,) = rec.calls["phaseCorrelate"]
    np.testing.assert_array_equal(pc["args"][1], fixed)
    (dx, dy), _ = pc["out"]
    (ecc,) = rec.calls["findTransformECC"]
    assert_ecc_call(ecc, fixed, moving, np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]]), 30)
    np.testing.assert_allclose(m, invert(ecc["out"][1]), atol=1e-6)
    np.testing.assert_allclose(m, invert(fwd), atol=0.05)


def test_rigid_without_rotation_keeps_the_shift_when_ecc_fails(recorder: Callable[..., Cv2Recorder]) -> None:
    def fail(*_args: Any) -> Any:
        raise cv2.error("stub: no convergence")

    recorder(phaseCorrelate=lambda *_a: ((2.5, -1.25), 0.5), findTransformECC=fail)
    m = registration.estimate_pose(smooth_field(1, 2.0), smooth_field(2, 2.0), "rigid", 0.0)
    np.testing.assert_array_equal(m, [[1.0, 0.0, 2.5], [0.0, 1.0, -1.25]])


# ----------------------------------------------------------------------------- _ecc
def test_ecc_refines_a_ten_pixel_shift() -> None:
    fixed = smooth_field(40, 3.0)
    fwd = shifted(np.eye(2, 3), 10.0, -3.0)
    moving = cv2.warpAffine(fixed, fwd, (128, 128), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    found = registration._ecc(fixed, moving, shifted(invert(fwd), 0.4, -0.3), 30)
    assert found is not None
    assert found[0] == pytest.approx(1.0, abs=1e-3)
    np.testing.assert_allclose(found[1], invert(fwd), atol=0.02)


def test_ecc_correlates_the_unblurred_images() -> None:
    # a smooth part plus white noise: unblurred their correlation is ≈ 0.89; a 5-px Gaussian
    # (OpenCV's default gaussFiltSize) would remove most of the noise (≈ 0.99)
    fixed = smooth_field(40, 3.0)
    moving = (fixed + 0.5 * np.random.default_rng(41).standard_normal(fixed.shape)).astype(np.float32)
    found = registration._ecc(fixed, moving, np.eye(2, 3), 30)
    assert found is not None
    assert found[0] == pytest.approx(ncc(fixed, moving), abs=0.02)


@pytest.mark.parametrize("shape, drift, kept", [
    ((128, 128), 16.0, True),  # exactly side / 8: still kept
    ((128, 128), 16.5, False),
    ((128, 128), 15.0, True),
    ((64, 128), 12.0, False),  # the guard is rows / 8 = 8
    ((64, 128), 8.0, True),
])
def test_ecc_rejects_a_refinement_that_ran_more_than_an_eighth_of_the_side(
        recorder: Callable[..., Cv2Recorder], shape: tuple[int, int], drift: float, kept: bool) -> None:
    init = np.array([[1.0, 0.0, 3.0], [0.0, 1.0, -2.0]])
    refined = np.array([[1.0, 0.0, 3.0 + drift], [0.0, 1.0, -2.0]])
    recorder(findTransformECC=lambda *_a: ecc_answer(0.9, refined))
    found = registration._ecc(np.zeros(shape, np.float32), np.zeros(shape, np.float32), init, 30)
    if kept:
        assert found is not None
        assert found[0] == 0.9
        np.testing.assert_array_equal(found[1], refined)
    else:
        assert found is None


# ----------------------------------------------------------------------------- align_image, _ncc
def test_align_image_of_a_faint_image_divides_by_std_plus_1e6() -> None:
    size = registration.ALIGN_SIZE
    rng = np.random.default_rng(30)
    rgb = 1e-4 * cv2.GaussianBlur(rng.random((3 * size, 3 * size, 3)).astype(np.float32), (0, 0), 4.0)
    got = registration.align_image(rgb)
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    grey = (0.299 * r + 0.587 * g + 0.114 * b).reshape(size, 3, size, 3).mean((1, 3))
    t = np.arange(9) - 4.0
    gauss = np.exp(-t * t / 2.0)
    grey = reflect_conv(grey, gauss / gauss.sum(), gauss / gauss.sum())
    edges = np.hypot(reflect_conv(grey, np.array([1.0, 2.0, 1.0]), np.array([-1.0, 0.0, 1.0])),
                     reflect_conv(grey, np.array([-1.0, 0.0, 1.0]), np.array([1.0, 2.0, 1.0])))
    assert 1e-6 < edges.std() < 1e-5  # the 1e-6 is not negligible here
    want = (edges - edges.mean()) / (edges.std() + 1e-6)
    np.testing.assert_allclose(got, want, atol=2e-3)


def test_ncc_of_tiny_signals_adds_1e12_to_the_denominator() -> None:
    a = 1e-6 * np.array([1.0, -1.0, 2.0, -2.0])  # both of mean 0
    b = 1e-6 * np.array([1.0, -1.0, 1.0, -1.0])
    num = 1e-12 * (1 + 1 + 2 + 2)  # Σ a b
    den = math.sqrt(1e-12 * 10 * 1e-12 * 4) + 1e-12  # √(Σa² Σb²) + 1e-12
    assert registration._ncc(a, b) == pytest.approx(num / den, rel=1e-9)
