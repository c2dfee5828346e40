"""One finder and one reader of ground-truth masks, shared by the station and the evaluation."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from inspector.evaluate.datasets import Sample
from inspector.evaluate.runner import _mask_at
from inspector.ground_truth import find_mask, mvtec_mask_path, read_mask
from inspector.imaging import write_png
from inspector.sources import read_ground_truth


def _line(tmp_path: Path, mask: np.ndarray, mask_name: str) -> tuple[Path, Path]:
    image = write_png(tmp_path / "cat" / "test" / "scratch" / "000.png", np.zeros((40, 40, 3), np.uint8))
    gt = tmp_path / "cat" / "ground_truth" / "scratch" / mask_name
    gt.parent.mkdir(parents=True)
    ok, enc = cv2.imencode(gt.suffix, mask)
    assert ok
    gt.write_bytes(enc.tobytes())
    return image, gt


def test_the_station_finds_masks_of_every_image_type(tmp_path: Path) -> None:
    mask = np.zeros((40, 40), np.uint8)
    mask[5:10, 5:10] = 255
    image, gt = _line(tmp_path, mask, "000_mask.bmp")  # the station used to look for .png only
    assert mvtec_mask_path(image) == gt
    station = read_ground_truth(image, (40, 40))
    assert station is not None and int(station.sum()) == 25


def test_mask_first_then_plain_stem_any_case(tmp_path: Path) -> None:
    for name in ("a.PNG", "a_mask.tif"):
        (tmp_path / name).write_bytes(b"x")
    assert find_mask(tmp_path, "a") == tmp_path / "a_mask.tif"
    assert find_mask(tmp_path, "b") is None


def test_station_and_evaluation_read_a_visa_mask_alike(tmp_path: Path) -> None:
    """A VisA mask holds label 1 for the defect: non-zero is anomalous for every reader."""
    mask = np.zeros((40, 40), np.uint8)
    mask[8:24, 16:32] = 1  # the station's old ">127" rule saw no defect here
    image, gt = _line(tmp_path, mask, "000.png")
    station = read_ground_truth(image, (20, 20))
    evaluation = _mask_at(Sample(image, 1, "scratch", gt), 20)
    assert station is not None and evaluation is not None
    assert np.array_equal(station, evaluation)
    expected = np.zeros((20, 20), bool)
    expected[4:12, 8:16] = True  # area-averaged 2x: exact for an even-aligned square
    assert np.array_equal(station, expected)
    assert np.array_equal(read_mask(gt), mask > 0)
