"""ClipSamDetector (prepare / retune / analyse / finish): known answers for what mutmut found untested.

The detector only wires the cascade's parts together, so its tests plant what each step is given
and check what comes out against answers written down by hand: ``finish`` on a hand-built analysis
(masks, SAM evidence, prompt sets and image score chosen here; the fused map re-derived in float64,
the merged regions' boxes and areas counted by hand), the progress a provider reports rescaled into
the first 80 %, the state guards, and ``analyse`` with a real tiny random-initialised SAM
(tests/support/tiny_models.py) on a planted CLIP map.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from inspector.detect.clip_maps import ClipMap
from inspector.detect.clipsam import ClipSamDetector
from inspector.detect.clipsam.cascade import CascadeResult
from inspector.detect.clipsam.detector import CASCADE_PARAMS, ClipSamAnalysis, cascade_key
from inspector.detect.ppg import PointPrompts
from inspector.models.hub import ModelHub
from inspector.profile import ProductProfile
from tests.support.tiny_models import tiny_clip, tiny_sam

HW = (32, 48)
SAM_KEY = "sam_under_test"  # provided under this key only: asking the hub for another key fails


class PlantedMap:
    """A map provider with a given map, score and timings; its ``prepare`` reports two steps."""

    name = "planted"

    def __init__(self, amap: np.ndarray, score: float, timings: dict[str, float] | None = None) -> None:
        self.amap, self.score, self.timings = amap, score, dict(timings or {})
        self.prepared_with: list[tuple[Any, Any]] = []
        self.images: list[np.ndarray] = []

    def prepare(self, profile, hub, progress=None) -> None:
        self.prepared_with.append((profile, hub))
        if progress is not None:
            progress(0.5, "half of the map")
            progress(1.0, "map ready")

    def __call__(self, image: np.ndarray) -> ClipMap:
        self.images.append(image)
        return ClipMap(self.amap.copy(), self.score, dict(self.timings))


def _profile(**clipsam: Any) -> ProductProfile:
    return ProductProfile(name="part", pipeline="clipsam", object="part", models={"sam": SAM_KEY},
                          decision={"image_threshold": 0.5}, clipsam=clipsam)


@pytest.fixture(scope="module")
def sam_module():
    return tiny_sam(2)


@pytest.fixture(scope="module")
def clip_module():
    return tiny_clip()


def _hub(sam_module, clip_module=None) -> ModelHub:
    hub = ModelHub(device="cpu", precision="fp32")
    hub.provide("sam", sam_module, key=SAM_KEY)
    if clip_module is not None:
        hub.provide("clip", clip_module)
    return hub


def _image() -> np.ndarray:
    return (np.random.default_rng(1).random((*HW, 3)) * 255).astype(np.uint8)


# ------------------------------------------------------------------------------ prepare, guards, retune
def test_prepare_rescales_the_providers_progress_and_loads_sam_under_the_profiles_key(sam_module):
    provider = PlantedMap(np.zeros(HW, np.float32), 0.9)
    det = ClipSamDetector(provider)
    seen: list[tuple[float, str]] = []
    prof = _profile()
    hub = _hub(sam_module)
    det.prepare(prof, hub, lambda f, m: seen.append((f, m)))
    assert seen == [(0.4, "half of the map"), (0.8, "map ready"), (0.8, f"loading SAM {SAM_KEY}"),
                    (1.0, "CLIP→SAM ready")]
    assert det.provider is provider and provider.prepared_with == [(prof, hub)]
    assert det.profile is prof and det.hub is hub
    assert det.sam is not None and det.sam.key == SAM_KEY and det.sam.model is sam_module
    # without a progress callback nothing is reported and nothing fails
    det2 = ClipSamDetector(PlantedMap(np.zeros(HW, np.float32), 0.9))
    det2.prepare(_profile(), _hub(sam_module))
    assert det2.sam is not None and det2.sam.key == SAM_KEY


def test_prepare_builds_the_profiles_map_provider_and_retune_refuses_a_new_one(sam_module, clip_module):
    det = ClipSamDetector()
    assert det.provider is None and det.sam is None
    det.prepare(_profile(map_provider="fade"), _hub(sam_module, clip_module))
    assert type(det.provider).__name__ == "FadeLanguageMap" and det.provider.name == "fade"
    first = det.provider
    # a cascade number may change without preparing again
    tuned = _profile(map_provider="fade", extreme_threshold=0.6)
    det.retune(tuned)
    assert det.profile is tuned and det.provider is first
    refused = r"^clipsam\.map_provider / aprilgan_image_size changed: call prepare\(\) again$"
    with pytest.raises(ValueError, match=refused):
        det.retune(_profile(map_provider="aprilgan"))
    assert det.profile is tuned  # refused: the old profile stays
    with pytest.raises(ValueError, match="call prepare"):
        det.retune(_profile(map_provider="fade", aprilgan_image_size=224))
    assert det.profile is tuned


def test_retune_with_a_given_provider_or_before_prepare_just_takes_the_profile(sam_module):
    det = ClipSamDetector(PlantedMap(np.zeros(HW, np.float32), 0.9))
    early = _profile(map_provider="aprilgan")
    det.retune(early)  # nothing prepared yet: nothing to compare with
    assert det.profile is early
    det.prepare(_profile(map_provider="fade"), _hub(sam_module))
    other = _profile(map_provider="aprilgan", aprilgan_image_size=224)
    det.retune(other)  # the given provider is not the profile's to change
    assert det.profile is other


def test_a_detector_given_only_a_profile_is_not_ready():
    det = ClipSamDetector(PlantedMap(np.zeros(HW, np.float32), 0.9))
    det.retune(_profile())  # a profile and a provider, but SAM never loaded
    with pytest.raises(RuntimeError, match="must run before images are inspected"):
        det.analyse(_image())


@pytest.mark.parametrize("missing", ["profile", "provider", "sam", "all"])
def test_analyse_and_finish_refuse_to_run_unprepared(sam_module, missing):
    det = ClipSamDetector(PlantedMap(np.zeros(HW, np.float32), 0.9))
    det.prepare(_profile(), _hub(sam_module))
    for name in (["profile", "provider", "sam"] if missing == "all" else [missing]):
        setattr(det, name, None)
    message = r"^ClipSamDetector\.prepare\(profile, hub\) must run before images are inspected$"
    with pytest.raises(RuntimeError, match=message):
        det.analyse(_image())
    with pytest.raises(RuntimeError, match="must run before"):
        det.finish(None, _image())  # type: ignore[arg-type]


def test_cascade_key_is_every_cascade_param_in_order():
    p = _profile(extreme_threshold=0.7, positive_points=2, negative_points=1, min_point_distance_px=5.0,
                 dilation_kernel=7, feature_samples=32, cascade_stages=2, multimask_output=True, mask_choice="clip",
                 min_region_px=3, max_regions=5).clipsam
    assert cascade_key(p) == (0.7, 2, 1, 5.0, 7, 32, 2, True, "clip", 3, 5)
    assert len(CASCADE_PARAMS) == 11
    assert ClipSamDetector.finish_params[-2:] == ("clipsam.outside_weight", "clipsam.gate_with_image_score")


# ------------------------------------------------------------------------------ finish on a planted analysis
def _planted_analysis(det: ClipSamDetector, score: float) -> tuple[ClipSamAnalysis, np.ndarray, np.ndarray]:
    """Three final masks (0 and 1 share the pixel (row 6, col 9); 2 lies apart; 3 is empty)."""
    rng = np.random.default_rng(7)
    amap = (0.6 * rng.random(HW)).astype(np.float32)
    evidence = (0.5 * rng.random(HW)).astype(np.float32)
    evidence[22, 35] = 0.97  # inside mask 2: its region must rank first although it comes last
    masks = np.zeros((4, *HW), bool)
    masks[0, 2:7, 3:10] = True
    masks[1, 6:9, 9:13] = True
    masks[2, 20:26, 30:41] = True
    sets = [
        PointPrompts(np.array([[5.0, 4.0], [8.0, 3.0]], np.float32), np.array([[1.0, 1.0]], np.float32),
                     (3, 2, 9, 6), 0.8),
        PointPrompts(np.array([[10.0, 7.0]], np.float32), np.zeros((0, 2), np.float32), (9, 6, 12, 8), 0.7),
        PointPrompts(np.array([[35.0, 22.0]], np.float32), np.array([[44.0, 30.0], [28.0, 18.0]], np.float32),
                     (30, 20, 40, 25), 0.95),
        PointPrompts(np.array([[1.0, 30.0]], np.float32), np.zeros((0, 2), np.float32), (0, 29, 2, 31), 0.3),
    ]
    assert det.sam is not None and det.profile is not None
    emb = det.sam.embed(_image())  # a real embedding: a re-run cascade would change the answer, not crash
    analysis = ClipSamAnalysis(
        clip=ClipMap(amap, score), embedding=emb, cascade_key=cascade_key(det.profile.clipsam), sets=sets,
        cascade=CascadeResult(logits=None, iou=np.array([0.7, 0.8, 0.6, 0.5], np.float32), boxes=None,
                              box_from_mask=None, stages=1),
        evidence=evidence, masks=masks, confidence=np.array([0.25, 0.5, 0.75, 0.125], np.float32),
        timings={"ppg": 2.0, "fusion": 99.0},
    )
    return analysis, amap, evidence


@pytest.fixture(scope="module")
def prepared_det(sam_module):
    det = ClipSamDetector(PlantedMap(np.zeros(HW, np.float32), 0.9))
    det.prepare(_profile(outside_weight=0.1), _hub(sam_module))
    return det


def test_finish_reports_each_merged_mask_with_its_box_peak_and_area(prepared_det):
    det = prepared_det
    det.retune(_profile(outside_weight=0.1))
    analysis, amap, evidence = _planted_analysis(det, score=0.5)  # exactly the threshold: the gate opens
    embeds = det.sam.encoder_calls
    out = det.finish(analysis, _image())
    want = np.clip(0.1 * amap.astype(np.float64) + 0.9 * evidence.astype(np.float64), 0.0, 1.0)
    assert out.anomaly_map.dtype == np.float32
    np.testing.assert_allclose(out.anomaly_map, want, atol=1e-6)
    assert out.image_score == 0.5 and isinstance(out.image_score, float)
    assert out.extras["gate_open"] is True
    # group 2 (rows 20-25, cols 30-40) peaks at 0.1 A + 0.9 · 0.97; masks 0 | 1 merge
    a = np.zeros(HW, bool)
    a[2:7, 3:10] = True
    a[6:9, 9:13] = True
    b = np.zeros(HW, bool)
    b[20:26, 30:41] = True
    assert [r.box for r in out.regions] == [(30, 20, 41, 26), (3, 2, 13, 9)]  # x1, y1 exclusive
    assert [r.area_px for r in out.regions] == [66, 5 * 7 + 3 * 4 - 1]
    assert out.regions[0].score == pytest.approx(0.1 * float(amap[22, 35]) + 0.9 * 0.97, abs=1e-6)
    assert out.regions[0].score == pytest.approx(float(want[b].max()), abs=1e-6)
    assert out.regions[1].score == pytest.approx(float(want[a].max()), abs=1e-6)
    assert np.array_equal(out.regions[0].mask, b) and np.array_equal(out.regions[1].mask, a)
    assert all(isinstance(r.score, float) and isinstance(r.area_px, int) for r in out.regions)
    # the extras, as given
    assert out.extras["clip_map"] is analysis.clip.anomaly_map
    assert out.extras["prompts"] == [
        {"positives": [[5.0, 4.0], [8.0, 3.0]], "negatives": [[1.0, 1.0]], "box": [3, 2, 9, 6]},
        {"positives": [[10.0, 7.0]], "negatives": [], "box": [9, 6, 12, 8]},
        {"positives": [[35.0, 22.0]], "negatives": [[44.0, 30.0], [28.0, 18.0]], "box": [30, 20, 40, 25]},
        {"positives": [[1.0, 30.0]], "negatives": [], "box": [0, 29, 2, 31]},
    ]
    assert out.extras["mask_iou"] == pytest.approx([0.7, 0.8, 0.6, 0.5])
    assert out.extras["region_confidence"] == [0.25, 0.5, 0.75, 0.125]
    # the analysis's own timings kept, fusion timed afresh; nothing re-decoded or re-embedded
    assert out.timings["ppg"] == 2.0 and 0.0 < out.timings["fusion"] < 99.0
    assert set(out.timings) == {"ppg", "fusion"}
    assert det.sam.encoder_calls == embeds and analysis.sets[0].box == (3, 2, 9, 6)


def test_finish_gate_closed_below_the_threshold_and_open_without_gating(prepared_det):
    det = prepared_det
    det.retune(_profile(outside_weight=0.1))
    analysis, amap, evidence = _planted_analysis(det, score=0.49)
    out = det.finish(analysis, _image())
    assert out.extras["gate_open"] is False and out.regions == []
    np.testing.assert_allclose(out.anomaly_map, 0.1 * amap.astype(np.float64), atol=1e-7)
    assert out.extras["mask_iou"] == pytest.approx([0.7, 0.8, 0.6, 0.5])  # still reported
    # gating off: a low image score still lets SAM's masks count
    det.retune(_profile(outside_weight=0.1, gate_with_image_score=False))
    analysis, amap, evidence = _planted_analysis(det, score=0.1)
    out = det.finish(analysis, _image())
    assert out.extras["gate_open"] is True and len(out.regions) == 2
    np.testing.assert_allclose(out.anomaly_map, np.clip(0.1 * amap + 0.9 * evidence.astype(np.float64), 0, 1),
                               atol=1e-6)
    det.retune(_profile(outside_weight=0.1))


def test_finish_without_prompt_sets_reports_empty_lists(prepared_det):
    det = prepared_det
    det.retune(_profile(outside_weight=0.25))
    analysis, amap, _ = _planted_analysis(det, score=0.9)
    analysis.sets, analysis.cascade, analysis.evidence, analysis.masks, analysis.confidence = [], None, None, None, None
    out = det.finish(analysis, _image())
    assert out.extras["gate_open"] is True and out.regions == []
    assert out.extras["prompts"] == [] and out.extras["mask_iou"] == [] and out.extras["region_confidence"] == []
    np.testing.assert_allclose(out.anomaly_map, 0.25 * amap.astype(np.float64), atol=1e-7)
    det.retune(_profile(outside_weight=0.1))


# ------------------------------------------------------------------------------ analyse with a real tiny SAM
def _blob() -> np.ndarray:
    yy, xx = np.mgrid[: HW[0], : HW[1]]
    return np.exp(-((yy - 12.0) ** 2 + (xx - 30.0) ** 2) / 18.0).astype(np.float32)


def test_analyse_times_every_stage_and_keeps_the_providers_sub_timings(sam_module):
    provider = PlantedMap(_blob(), 0.9, timings={"clip_map": 5.0, "gem": 0.25, "text": 0.5})
    det = ClipSamDetector(provider)
    shaping = dict(extreme_threshold=0.5, negative_points=1, feature_samples=16, cascade_stages=2,
                   multimask_output=True, mask_choice="clip")  # the choice reads the CLIP map
    det.prepare(_profile(**shaping), _hub(sam_module))
    before = det.sam.encoder_calls
    img = _image()
    analysis = det.analyse(img)
    assert det.sam.encoder_calls == before + 1
    assert len(provider.images) == 1 and provider.images[0] is img
    # the provider's own total ("clip_map") is not copied over the detector's measured one
    assert analysis.timings["clip_map.gem"] == 0.25 and analysis.timings["clip_map.text"] == 0.5
    assert "clip_map.clip_map" not in analysis.timings and analysis.timings["clip_map"] < 5.0
    assert {"clip_map", "sam_embed", "ppg", "cps", "evidence"} <= set(analysis.timings)
    assert all(analysis.timings[k] > 0 for k in ("clip_map", "sam_embed", "ppg", "cps", "evidence"))
    # one blob: one prompt set, its final mask and evidence kept, the B×H×W logits freed
    assert len(analysis.sets) == 1 and analysis.sets[0].box[0] <= 30 <= analysis.sets[0].box[2]
    assert analysis.cascade_key == cascade_key(det.profile.clipsam)
    assert analysis.cascade is not None and analysis.cascade.logits is None and analysis.cascade.stages == 2
    assert analysis.evidence is not None and analysis.evidence.shape == HW
    assert analysis.masks is not None and analysis.masks.shape == (1, *HW) and analysis.masks.dtype == bool
    assert analysis.confidence is not None and analysis.confidence.shape == (1,)
    # the evidence is σ(final logits) · c: its maximum is c times a probability, never above c
    assert 0.0 < float(analysis.evidence.max()) <= float(analysis.confidence[0]) + 1e-6
    # a cascade number that leaves no component: finish re-runs PPG and clears the stale cascade
    det.retune(_profile(**shaping, min_region_px=HW[0] * HW[1] + 1))
    out = det.finish(analysis, _image())
    assert analysis.sets == [] and analysis.cascade is None and analysis.evidence is None
    assert analysis.masks is None and analysis.confidence is None
    assert analysis.cascade_key == cascade_key(det.profile.clipsam)
    assert out.regions == [] and out.extras["prompts"] == [] and out.extras["mask_iou"] == []
    assert "ppg" in out.timings and "fusion" in out.timings
    assert "cps" in out.timings  # kept from analyse (no cascade ran this time)
    np.testing.assert_allclose(out.anomaly_map, 0.1 * _blob().astype(np.float64), atol=1e-7)
    assert det.sam.encoder_calls == before + 1


def test_a_map_of_the_transposed_size_is_refused_with_both_shapes(sam_module):
    det = ClipSamDetector(PlantedMap(np.zeros(HW[::-1], np.float32), 0.9))
    det.prepare(_profile(), _hub(sam_module))
    with pytest.raises(ValueError, match=r"map provider 'planted' returned a \(48, 32\) map for a \(32, 48\) image"):
        det.analyse(_image())
    assert det.sam.encoder_calls == 0  # refused before SAM runs
