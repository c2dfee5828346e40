"""The evaluation runner and ``inspector eval`` end to end on tiny generated datasets."""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from inspector.cli import main
from inspector.evaluate import evaluate, load_dataset
from inspector.evaluate.report import format_table
from inspector.imaging import read_image
from inspector.inspection import Inspector
from inspector.models.hub import ModelHub
from inspector.profile import ProductProfile, save_profile
from tests.support.cli_env import cli_settings_env  # noqa: F401 - autouse fixture
from tests.support.diff_detector import refdiff, refdiff_as_variation  # noqa: F401 - fixtures
from tests.support.tiny_datasets import make_folder, make_mvtec, make_visa

TOP_KEYS = {
    "image_auroc", "image_aupr", "image_f1max", "pixel_auroc", "pixel_ap", "pixel_f1max", "pixel_aupro",
    "n_images", "n_anomalous", "seconds", "per_defect",
}
HAS_VARIATION = importlib.util.find_spec("inspector.detect.variation") is not None


def _profile_with_refs(folder: Path, refs: list[Path], pipeline: str = "variation", threshold: float = 0.2) -> Path:
    (folder / "references").mkdir(parents=True)
    rel = []
    for i, src in enumerate(refs):
        (folder / "references" / f"r{i}.png").write_bytes(src.read_bytes())
        rel.append(f"references/r{i}.png")
    prof = ProductProfile(name="widget", object="widget", pipeline=pipeline, reference_shots=rel)
    prof.decision.image_threshold = threshold
    save_profile(prof, folder)
    return folder


def _tree_hash(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        h.update(str(p.relative_to(folder)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def test_runner_metrics_progress_cancel_and_maps(tmp_path: Path, refdiff: str) -> None:
    cat = make_mvtec(tmp_path / "data", n_train=3, n_good=3, n_defect=2)
    ds = load_dataset(cat)
    prof_dir = _profile_with_refs(tmp_path / "prof", ds.train_good)
    from inspector.profile import load_profile

    inspector = Inspector(load_profile(prof_dir), ModelHub(device="cpu"), pipeline=refdiff)
    seen: list[float] = []
    result = evaluate(inspector, ds, eval_size=32, progress=lambda f, m: seen.append(f),
                      save_maps_dir=tmp_path / "maps")
    # the squares differ from the references by > 100 grey levels, the noise by a few
    m = result.metrics
    assert m["image_auroc"] == 1.0 and m["pixel_auroc"] > 0.97 and m["pixel_aupro"] > 0.9
    assert m["n_images"] == 7 and m["n_anomalous"] == 4 and set(m["per_defect"]) == {"bright", "dark"}
    assert seen == sorted(seen) and seen[-1] == pytest.approx(1.0)
    assert {r.verdict for r in result.records if r.label} == {"FAIL"}
    assert {r.verdict for r in result.records if not r.label} == {"PASS"}
    saved = sorted((tmp_path / "maps").rglob("*.npy"))
    assert len(saved) == 7 and {p.parent.name for p in saved} == {"good", "bright", "dark"}
    arr = np.load(saved[0])
    assert arr.dtype == np.float32 and arr.shape == (32, 32)
    assert "I-AUROC" in format_table(result) and "average precision" in format_table(result)

    calls = iter(range(100))
    partial = evaluate(inspector, ds, eval_size=32, cancel=lambda: next(calls) >= 3)
    assert partial.cancelled and len(partial.records) == 3 and partial.metrics["n_images"] == 3


def test_eval_cli_pipeline_with_shots(tmp_path: Path, refdiff: str, capsys: pytest.CaptureFixture[str]) -> None:
    cat = make_mvtec(tmp_path / "data", n_train=5)
    out = tmp_path / "out"
    rc = main(["eval", "--dataset", str(cat), "--pipeline", refdiff, "--shots", "2", "--seed", "3",
               "--eval-size", "32", "--save-maps", "--out", str(out)])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == TOP_KEYS
    assert metrics["image_auroc"] == 1.0 and metrics["n_images"] == 7 and metrics["n_anomalous"] == 4
    assert set(metrics["per_defect"]) == {"bright", "dark"}
    assert set(metrics["per_defect"]["dark"]) == TOP_KEYS - {"seconds", "per_defect"}
    with open(out / "scores.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 7 and all(r["map"].startswith("maps/") and (out / r["map"]).is_file() for r in rows)
    png = read_image(out / "curves.png")
    assert png.shape[0] > 200 and png.shape[1] > 600
    run = json.loads((out / "run.json").read_text())
    assert run["seed"] == 3 and len(run["shots"]) == 2 and run["pipeline"] == refdiff
    assert all("train/good" in s for s in run["shots"])
    assert not list(out.glob(".profile-*"))  # the temporary profile folder is gone
    text = capsys.readouterr().out
    assert "I-AUROC" in text and "bright" in text
    # the drawn shots are the dataset's seeded draw (determinism itself: test_datasets)
    assert run["shots"] == [str(p) for p in load_dataset(cat).draw_shots(2, seed=3)[0]]


def test_eval_cli_profile_with_shots_leaves_profile_untouched(tmp_path: Path, refdiff_as_variation: str) -> None:
    # the profile names pipeline 'variation', which is the test detector in this test
    cat = make_mvtec(tmp_path / "data", n_train=4)
    ds = load_dataset(cat)
    prof = _profile_with_refs(tmp_path / "prof", ds.train_good[:1])
    before = _tree_hash(prof)
    rc = main(["eval", "--dataset", str(cat), "--profile", str(prof), "--shots", "3", "--eval-size", "32",
               "--out", str(tmp_path / "out")])
    assert rc == 0
    assert _tree_hash(prof) == before
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["profile"]["name"] == "widget" and len(run["shots"]) == 3 and run["seed"] == 0


def test_eval_cli_corrupt_image_and_folder_layout(tmp_path: Path, refdiff: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    root = make_folder(tmp_path / "parts", n_good=5, n_bad=2, masks=None)
    (root / "bad" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    out = tmp_path / "out"
    rc = main(["eval", "--dataset", str(root), "--pipeline", refdiff, "--shots", "2", "--eval-size", "32",
               "--out", str(out)])
    assert rc == 1
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_images"] == 5 and metrics["n_anomalous"] == 2  # 3 good left after 2 shots
    assert metrics["image_auroc"] == 1.0
    assert metrics["pixel_auroc"] is None  # no masks: pixel metrics undefined, written as null
    with open(out / "scores.csv", newline="") as fh:
        rows = {Path(r["path"]).name: r for r in csv.DictReader(fh)}
    assert "truncated PNG" in rows["broken.png"]["error"] and rows["broken.png"]["score"] == ""
    assert "broken.png" in capsys.readouterr().err


def test_eval_cli_usage_errors(tmp_path: Path, refdiff: str, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "weird" / "pics").mkdir(parents=True)
    assert main(["eval", "--dataset", str(tmp_path / "weird"), "--pipeline", refdiff, "--out", str(tmp_path / "o")]) == 2
    assert "cannot tell the dataset layout" in capsys.readouterr().err
    cat = make_mvtec(tmp_path / "data", n_train=2)
    assert main(["eval", "--dataset", str(cat), "--pipeline", "nosuch", "--out", str(tmp_path / "o")]) == 2
    assert "unknown pipeline 'nosuch'" in capsys.readouterr().err
    assert main(["eval", "--dataset", str(cat), "--pipeline", refdiff, "--shots", "9", "--out", str(tmp_path / "o")]) == 2
    assert "only 2 good images" in capsys.readouterr().err
    # zero-shot with a pipeline that needs references: the detector's message, exit 2
    assert main(["eval", "--dataset", str(cat), "--pipeline", refdiff, "--out", str(tmp_path / "o")]) == 2
    assert "needs at least one reference shot" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["eval", "--dataset", str(cat), "--pipeline", refdiff, "--shots", "1",
                 "--out", str(blocker / "sub")]) == 2
    assert "cannot write to output folder" in capsys.readouterr().err


@pytest.mark.skipif(not HAS_VARIATION, reason="inspector.detect.variation not written yet")
def test_eval_cli_real_variation_pipeline(tmp_path: Path) -> None:
    """The real weight-free pipeline through ``inspector eval --profile --shots`` (small working size)."""
    cat = make_mvtec(tmp_path / "data", n_train=4, n_good=3, n_defect=2)
    prof = _profile_with_refs(tmp_path / "prof", load_dataset(cat).train_good[:1], threshold=0.5)
    from inspector.profile import load_profile

    p = load_profile(prof)
    p.variation.working_size = 64
    save_profile(p, prof)
    out = tmp_path / "out"
    rc = main(["eval", "--dataset", str(cat), "--profile", str(prof), "--shots", "3", "--eval-size", "64",
               "--out", str(out)])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == TOP_KEYS and metrics["n_images"] == 7
    # large flat squares on a flat part: any reference method must rank them first
    assert metrics["image_auroc"] >= 0.9 and metrics["pixel_auroc"] >= 0.75  # well above chance (0.5)
    assert json.loads((out / "run.json").read_text())["pipeline"] == "variation"


@pytest.mark.skipif(not HAS_VARIATION, reason="inspector.detect.variation not written yet")
def test_evaluate_a_profile_on_visa(tmp_path: Path) -> None:
    """The GUI's call: a ProductProfile (not an Inspector) and a dataset path; VisA masks hold 1/2."""
    from inspector.profile import load_profile

    cat = make_visa(tmp_path / "visa", n_train=3, n_good=3, n_bad=3)
    ds = load_dataset(cat)
    prof = _profile_with_refs(tmp_path / "prof", ds.train_good, threshold=0.5)
    p = load_profile(prof)
    p.variation.working_size = 64
    result = evaluate(p, cat, eval_size=32, hub=ModelHub(device="cpu"))
    m = result.metrics
    assert m["n_images"] == 6 and m["n_anomalous"] == 3
    assert set(m["per_defect"]) == {"bright spot", "dark spot"}
    assert all(r.has_mask for r in result.records)
    assert m["image_auroc"] >= 0.9 and m["pixel_auroc"] >= 0.75
