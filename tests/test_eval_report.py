"""The HTML evaluation report: one self-contained file, end to end through `inspector eval --report`."""

from __future__ import annotations

import base64
import csv
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from inspector.cli import main
from inspector.evaluate.report import confusion_at, html_report, per_defect_counts, wrong_decisions
from inspector.evaluate.runner import EvalResult, ImageRecord
from inspector.imaging import write_png
from inspector.profile import ProductProfile, save_profile
from tests.support.cli_env import cli_settings_env  # noqa: F401 - autouse fixture
from tests.support.diff_detector import refdiff, refdiff_as_variation  # noqa: F401 - fixtures
from tests.support.tiny_datasets import make_mvtec

THRESHOLD = 0.03  # low: the textured good parts differ from the references by more, and FAIL
DATA_URI = re.compile(r"src='data:image/(png|jpeg);base64,([A-Za-z0-9+/=]+)'")


def _decoded_images(text: str) -> list[np.ndarray]:
    out = []
    for _kind, b64 in DATA_URI.findall(text):
        img = cv2.imdecode(np.frombuffer(base64.b64decode(b64), np.uint8), cv2.IMREAD_COLOR)
        assert img is not None and img.size
        out.append(img)
    return out


def test_eval_cli_writes_the_html_report(tmp_path: Path, refdiff_as_variation: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    # the profile names pipeline 'variation', which is the test detector in this test
    cat = make_mvtec(tmp_path / "data", n_train=3, n_good=4, n_defect=3)
    prof = ProductProfile(name="widget", object="widget", pipeline="variation")
    prof.decision.image_threshold = THRESHOLD
    save_profile(prof, tmp_path / "prof")
    out = tmp_path / "out"
    rc = main(["eval", "--dataset", str(cat), "--profile", str(tmp_path / "prof"), "--shots", "2",
               "--eval-size", "32", "--report", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    text = (out / "report.html").read_text(encoding="utf-8")
    assert "<script" not in text.lower() and "http" not in text  # self-contained, nothing fetched

    rows = list(csv.DictReader((out / "scores.csv").open()))
    scores = np.array([float(r["score"]) for r in rows])
    labels = np.array([int(r["label"]) for r in rows])
    c = confusion_at(scores, labels, THRESHOLD)  # the profile's threshold
    assert c.false_rejects > 0  # so the gallery has something to show
    assert f"threshold <b>{THRESHOLD:g}</b>" in text and "Evaluation of widget v1" in text
    def plural(n: int, word: str) -> str:
        return f"{n} {word}" + ("" if n == 1 else "s")

    assert f"defective ({c.n_defective})</th><td>{c.caught}</td><td class='bad'>{plural(c.escapes, 'escape')}" in text
    assert (f"good ({c.n_good})</th><td class='warn'>{plural(c.false_rejects, 'false reject')}</td>"
            f"<td>{c.passed}") in text
    for defect in ("bright", "dark", "good"):
        assert f"<td class='l'>{defect}</td>" in text
    figures = text.count("<figure>")
    assert figures == c.escapes + c.false_rejects
    images = _decoded_images(text)
    assert len(images) == 1 + 2 * figures  # the curves, then image + overlay per wrong decision


@pytest.fixture
def handmade(tmp_path: Path) -> EvalResult:
    """Six scored images with known scores; maps saved so the gallery can draw overlays."""
    rng = np.random.default_rng(0)
    recs = []
    spec = [("good", 0, 0.10), ("good", 0, 0.70), ("good", 0, 0.90), ("scratch", 1, 0.95),
            ("scratch", 1, 0.30), ("dent<script>", 1, 0.55)]
    for i, (defect, label, score) in enumerate(spec):
        path = write_png(tmp_path / "imgs" / f"{i}_<b>.png", rng.integers(0, 255, (40, 60, 3), dtype=np.uint8))
        amap = np.zeros((32, 32), np.float32)
        amap[8:16, 8:16] = score
        np.save(tmp_path / f"m{i}.npy", amap)
        recs.append(ImageRecord(path=path, label=label, defect=defect, score=score,
                                verdict="FAIL" if score >= 0.6 else "PASS", map_file=tmp_path / f"m{i}.npy"))
    return EvalResult(records=recs, metrics={"image_auroc": 0.5, "n_images": 6, "n_anomalous": 3, "per_defect": {}},
                      eval_size=32, seconds=1.0, dataset=str(tmp_path), category="widget", pipeline="variation",
                      profile_name="widget", threshold=0.6)


def test_gallery_holds_the_wrong_decisions_worst_first(handmade: EvalResult) -> None:
    wrong = wrong_decisions(handmade, 0.6)
    assert [(r.score, kind) for r, kind in wrong] == [
        (0.30, "escape"), (0.55, "escape"), (0.90, "false reject"), (0.70, "false reject")]
    assert [(r.score, k) for r, k in wrong_decisions(handmade, 0.6, limit=1)] == [(0.30, "escape"),
                                                                                   (0.90, "false reject")]
    counts = per_defect_counts(handmade, 0.6)
    assert (counts["scratch"].caught, counts["scratch"].escapes) == (1, 1)
    assert (counts["good"].false_rejects, counts["good"].passed) == (2, 1)


def test_report_at_a_chosen_threshold_escapes_text_and_draws_overlays(handmade: EvalResult) -> None:
    text = html_report(handmade, threshold=0.6, profile_version=7)
    assert "Evaluation of widget v7" in text
    assert "dent&lt;script&gt;" in text and "<script>" not in text  # names from disk are escaped
    assert "1_&lt;b&gt;.png" in text
    assert text.count("<figure>") == 4 and "(no map kept" not in text
    images = _decoded_images(text)
    assert len(images) == 1 + 8
    overlay = images[2]  # escape 0.30: its saved map is drawn as a heatmap over the image
    assert overlay.shape[:2] == (40, 60)
    text_low = html_report(handmade, threshold=0.2)
    assert text_low.count("<figure>") == 2  # the good parts at 0.7 and 0.9 reach 0.2; no escape
    with pytest.raises(ValueError, match="finite"):
        html_report(handmade, threshold=float("nan"))
