"""Dataset layouts on tiny generated folders: MVTec-AD, VisA, plain folders, and their errors."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from inspector.evaluate.datasets import DatasetError, detect_layout, load_dataset
from inspector.evaluate.runner import _mask_at
from inspector.imaging import write_png
from tests.support.tiny_datasets import make_folder, make_mvtec, make_visa


def test_mvtec_layout(tmp_path: Path) -> None:
    cat = make_mvtec(tmp_path, n_train=4, n_good=3, n_defect=2)
    assert detect_layout(cat) == "mvtec"
    ds = load_dataset(cat)
    assert (ds.layout, ds.category) == ("mvtec", "widget")
    assert len(ds.samples) == 7 and ds.n_anomalous == 4
    assert ds.defects() == ["bright", "dark"]
    assert len(ds.train_good) == 4 and all(p.parent.name == "good" for p in ds.train_good)
    for s in ds.samples:
        if s.label:
            assert s.mask_path == cat / "ground_truth" / s.defect / f"{s.path.stem}_mask.png"
        else:
            assert s.defect == "good" and s.mask_path is None


def test_mvtec_missing_mask_is_image_only(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cat = make_mvtec(tmp_path, n_defect=1, defects=("bright",))
    (cat / "ground_truth" / "bright" / "000_mask.png").unlink()
    with caplog.at_level(logging.WARNING):
        ds = load_dataset(cat, "mvtec")
    bad = [s for s in ds.samples if s.label]
    assert bad[0].mask_path is None
    assert "no mask" in caplog.text


def test_mvtec_wrong_layout_says_what_was_expected_and_found(tmp_path: Path) -> None:
    (tmp_path / "cat" / "images").mkdir(parents=True)
    with pytest.raises(DatasetError) as err:
        load_dataset(tmp_path / "cat", "mvtec")
    assert "expected test/" in str(err.value) and "images/" in str(err.value)
    with pytest.raises(DatasetError) as err:
        load_dataset(tmp_path / "cat")
    assert "cannot tell the dataset layout" in str(err.value) and "Found: images/" in str(err.value)
    with pytest.raises(DatasetError, match="not found"):
        load_dataset(tmp_path / "nope")
    with pytest.raises(DatasetError, match="unknown dataset layout"):
        load_dataset(tmp_path / "cat", "coco")


def test_visa_layout(tmp_path: Path) -> None:
    cat = make_visa(tmp_path, n_train=3, n_good=2, n_bad=3)
    assert detect_layout(cat) == "visa"
    ds = load_dataset(cat)
    assert ds.layout == "visa" and ds.category == "candle"
    assert len(ds.train_good) == 3 and len(ds.samples) == 5 and ds.n_anomalous == 3
    assert ds.defects() == ["bright spot", "dark spot"]  # from image_anno.csv
    bad = [s for s in ds.samples if s.label]
    assert all(s.mask_path is not None and s.mask_path.is_file() for s in bad)
    # VisA masks hold 1 or 2, not 255: non-zero must count as anomalous
    mask = _mask_at(bad[1], 64)
    assert mask is not None and mask.sum() == (64 // 5) ** 2
    assert _mask_at(next(s for s in ds.samples if not s.label), 32).sum() == 0


def test_visa_without_image_anno_uses_one_defect_type(tmp_path: Path) -> None:
    cat = make_visa(tmp_path, with_anno=False)
    assert load_dataset(cat, "visa").defects() == ["anomaly"]


def test_visa_errors(tmp_path: Path) -> None:
    cat = make_visa(tmp_path)
    split = tmp_path / "split_csv" / "1cls.csv"
    text = split.read_text()
    split.write_text(text.replace("candle,", "bottle,"))
    with pytest.raises(DatasetError, match="no rows for object 'candle'.*bottle"):
        load_dataset(cat, "visa")
    split.write_text("object,split,image\n")
    with pytest.raises(DatasetError, match="expected columns object,split,label,image,mask"):
        load_dataset(cat, "visa")
    split.write_text(text)
    (cat / "Data" / "Images" / "Anomaly" / "000.png").unlink()
    with pytest.raises(DatasetError, match="missing under"):
        load_dataset(cat, "visa")
    split.unlink()
    with pytest.raises(DatasetError, match=r"split_csv/1cls\.csv"):
        load_dataset(cat, "visa")


def test_folder_layout_with_masks_and_subfolders(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "parts", n_good=3, n_bad=2, masks="_mask")
    rng = np.random.default_rng(0)
    write_png(root / "bad" / "crack" / "c0.png", rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
    write_png(root / "masks" / "crack" / "c0.png", np.full((16, 16), 255, np.uint8))  # same-stem mask
    ds = load_dataset(root)
    assert ds.layout == "folder" and len(ds.samples) == 6 and ds.n_anomalous == 3
    assert ds.defects() == ["bad", "crack"]
    by_name = {s.path.name: s for s in ds.samples}
    assert by_name["b0.png"].mask_path == root / "masks" / "b0_mask.png"
    assert by_name["c0.png"].mask_path == root / "masks" / "crack" / "c0.png"
    assert ds.train_good == []


def test_folder_layout_errors(tmp_path: Path) -> None:
    (tmp_path / "x" / "images").mkdir(parents=True)
    with pytest.raises(DatasetError, match="expects good/ and bad/"):
        load_dataset(tmp_path / "x", "folder")
    (tmp_path / "y" / "good").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no test images"):
        load_dataset(tmp_path / "y")


def test_shots_are_seeded_and_come_from_train(tmp_path: Path) -> None:
    ds = load_dataset(make_mvtec(tmp_path, n_train=6))
    a, rest = ds.draw_shots(3, seed=1)
    b, _ = ds.draw_shots(3, seed=1)
    c, _ = ds.draw_shots(3, seed=2)
    assert a == b and a != c and len(set(a)) == 3
    assert set(a) <= set(ds.train_good) and rest is ds
    with pytest.raises(DatasetError, match="only 6 good images"):
        ds.draw_shots(7)


def test_folder_shots_leave_the_test_set(tmp_path: Path) -> None:
    ds = load_dataset(make_folder(tmp_path / "f", n_good=4, n_bad=2))
    shots, rest = ds.draw_shots(2, seed=0)
    assert len(rest.samples) == 4 and not set(shots) & {s.path for s in rest.samples}
    assert len(ds.samples) == 6  # the original is untouched
    with_refs = load_dataset(make_folder(tmp_path / "g", n_good=2, n_bad=1, reference=3))
    shots, rest = with_refs.draw_shots(3)
    assert all(p.parent.name == "reference" for p in shots) and len(rest.samples) == 3
