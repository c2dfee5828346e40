"""``inspector eval``'s pixel-metric resolution: each pipeline's published protocol unless --eval-size."""

from __future__ import annotations

import json

import pytest

from inspector.cli import main
from inspector.detect import registered_detector
from inspector.detect.base import Detector
from inspector.detect.clipsam import ClipSamDetector
from inspector.detect.fade import FadeDetector
from inspector.detect.saa import SaaDetector
from tests.support.cli_env import cli_settings_env  # noqa: F401 - autouse fixture
from tests.support.diff_detector import RefDiffDetector
from tests.support.tiny_datasets import make_mvtec


def test_each_seed_pipeline_declares_its_published_size():
    # shared/methods/evaluation.md: FADE 448², SAA+ 400², APRIL-GAN (the cascade's map) 518²
    assert FadeDetector.default_eval_size == 448
    assert SaaDetector.default_eval_size == 400
    assert ClipSamDetector.default_eval_size == 518
    assert Detector.default_eval_size == 256


class _Declares40(RefDiffDetector):
    default_eval_size = 40


@pytest.mark.parametrize(("given", "used"), [(None, 40), ("24", 24)])
def test_eval_uses_the_detector_default_unless_given(tmp_path, given, used):
    cat = make_mvtec(tmp_path / "data", n_train=2, n_good=1, n_defect=1)
    with registered_detector("declares40", _Declares40) as name:
        args = ["eval", "--dataset", str(cat), "--pipeline", name, "--shots", "1", "--out", str(tmp_path / "run")]
        if given:
            args += ["--eval-size", given]
        rc = main(args)
    assert rc == 0
    assert json.loads((tmp_path / "run" / "run.json").read_text())["eval_size"] == used
