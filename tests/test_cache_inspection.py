"""Issue 16 item 15 end to end: an edited variation bank cannot flip a verdict, and every
inspection carries the hash of the detector state it used."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from inspector.imaging import write_png
from inspector.inspection import Inspector
from inspector.models.hub import ModelHub
from inspector.profile import ProductProfile, load_profile, save_profile
from tests.support.tiny_datasets import defect_image, good_image


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[ProductProfile, np.ndarray, Path]:
    cache_dir = tmp_path / "cache"
    monkeypatch.setenv("INSPECTOR_CACHE_DIR", str(cache_dir))
    rng = np.random.default_rng(3)
    prof_dir = tmp_path / "prof"
    rel = []
    for i in range(3):
        write_png(prof_dir / "references" / f"r{i}.png", good_image(rng))
        rel.append(f"references/r{i}.png")
    p = ProductProfile(name="widget", object="widget", pipeline="variation", reference_shots=rel)
    p.decision.image_threshold = 0.3
    p.variation.working_size = 64
    save_profile(p, prof_dir)
    bad, _ = defect_image(rng, "bright")
    return load_profile(prof_dir), bad, cache_dir


def _inspect(profile: ProductProfile, image: np.ndarray):  # type: ignore[no-untyped-def]
    ins = Inspector(profile, ModelHub(device="cpu", precision="fp32"))
    ins.prepare()
    return ins, ins.inspect(image)


def test_edited_bank_is_refused_and_the_record_names_the_state(
    setup: tuple[ProductProfile, np.ndarray, Path], caplog: pytest.LogCaptureFixture
) -> None:
    profile, bad, cache_dir = setup
    ins1, first = _inspect(profile, bad)
    assert first.verdict == "FAIL"
    state = first.detector_state_sha256
    assert state is not None and len(state) == 64 and first.to_json()["detector_state_sha256"] == state
    assert not ins1.detector.cache_hit
    ins_again, again = _inspect(profile, bad)  # loaded from the signed entry: same state, same hash
    assert ins_again.detector.cache_hit and again.detector_state_sha256 == state

    entries = list((cache_dir / "variation").glob("*.npz"))
    assert len(entries) == 1
    with np.load(entries[0], allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    banks = [k for k in data if k.startswith("bank_")]
    # the attack of the issue: make the memory contain the defect so nothing looks anomalous
    for k in banks:
        data[k] = np.zeros_like(data[k])
    with open(entries[0], "wb") as fh:
        np.savez(fh, **data)

    with caplog.at_level(logging.WARNING, logger="inspector.cache"):
        ins2, second = _inspect(profile, bad)
    assert "refusing cache entry" in caplog.text
    assert not ins2.detector.cache_hit  # recomputed from the reference shots
    assert second.verdict == "FAIL" and second.image_score == pytest.approx(first.image_score)
    # the record names the recomputed bank (not the edited one); recomputing may differ from the
    # first build in the last float bit (OpenCV), so the hash is compared with the reused entry below
    assert second.detector_state_sha256 is not None

    ins3, third = _inspect(profile, bad)  # the recomputed entry is signed and used again
    assert ins3.detector.cache_hit and third.detector_state_sha256 == second.detector_state_sha256
    assert third.verdict == "FAIL"


def test_state_hash_changes_with_the_references(setup: tuple[ProductProfile, np.ndarray, Path]) -> None:
    profile, bad, _ = setup
    _, first = _inspect(profile, bad)
    fewer = profile.model_copy(deep=True)
    fewer.reference_shots = fewer.reference_shots[:2]
    _, other = _inspect(fewer, bad)
    assert other.detector_state_sha256 not in (None, first.detector_state_sha256)


def test_station_record_stores_the_detector_state_hash(setup: tuple[ProductProfile, np.ndarray, Path]) -> None:
    from inspector.sources import Frame
    from inspector.station.record import ProfileStamp, build_record
    from inspector.station.result import StationResult
    from inspector.users import User

    profile, bad, _ = setup
    _, ins = _inspect(profile, bad)
    res = StationResult(frame=Frame(bad, "test", 0.0, Path("part.png")), key=1, generation=1, inspection=ins)
    user = User("ann", "operator")
    rec = build_record(station_id="s1", user=user, res=res, kind="decision", profile=ProfileStamp(),
                       verdict="FAIL")
    assert rec.detector_state_sha256 == ins.detector_state_sha256 is not None
    corr = build_record(station_id="s1", user=user, res=None, kind="correction", profile=ProfileStamp(),
                        verdict="PASS", corrects=rec)
    assert corr.detector_state_sha256 == rec.detector_state_sha256
