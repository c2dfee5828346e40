"""Operator decisions (records + archived images) become an MVTec-layout evaluation set."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from inspector.evaluate.datasets import load_dataset
from inspector.evaluate.labelled_set import (
    LabelledSetError,
    current_decisions,
    export_mvtec,
    parts_from_records,
)
from inspector.imaging import read_image, write_png
from inspector.records import InspectionRecord


def _record(uid: str, verdict: str | None, reason: str | None = None, archive: Path | None = None,
            kind: str = "decision", corrects: str | None = None, ts: str = "2026-12-01T08:00:00.000000Z",
            image_path: str | None = None) -> InspectionRecord:
    return InspectionRecord(
        station_id="st1", operator_id="op", profile_name="plate", profile_version=3, profile_hash="h" * 64,
        pipeline="variation", auto_verdict="FAIL", operator_verdict=verdict, image_score=0.7, reason=reason,
        archive_path=str(archive) if archive else None, image_path=image_path, kind=kind, corrects_uid=corrects,
        uid=uid, timestamp=ts)


@pytest.fixture
def records(tmp_path: Path) -> list[InspectionRecord]:
    arch = tmp_path / "archive" / "2026-12-01"
    imgs = {u: write_png(arch / f"{u}_part.png", np.full((20, 30, 3), 10 * i, np.uint8))
            for i, u in enumerate(["a", "b", "c", "d", "e"])}
    return [
        _record("a", "PASS", archive=imgs["a"], ts="2026-12-01T08:00:01.000000Z"),
        _record("b", "FAIL", "scratch", archive=imgs["b"], ts="2026-12-01T08:00:02.000000Z"),
        _record("c", "FAIL", "dent", archive=imgs["c"], ts="2026-12-01T08:00:03.000000Z"),
        _record("d", "PASS", archive=imgs["d"], ts="2026-12-01T08:00:04.000000Z"),
        _record("e", "FAIL", None, archive=imgs["e"], ts="2026-12-01T08:00:05.000000Z"),
        _record("f", "FAIL", "scratch", ts="2026-12-01T08:00:06.000000Z"),  # camera frame, nothing archived
        # the operator corrected c: it was fine after all
        _record("c2", "PASS", kind="correction", corrects="c", ts="2026-12-01T08:01:00.000000Z"),
        _record("n", None, "no read", kind="no_read", ts="2026-12-01T08:02:00.000000Z"),
    ]


def test_labels_come_from_the_corrected_decision(records: list[InspectionRecord], tmp_path: Path) -> None:
    assert [(r.uid, r.operator_verdict) for r in current_decisions(records)] == [
        ("a", "PASS"), ("b", "FAIL"), ("c", "PASS"), ("d", "PASS"), ("e", "FAIL"), ("f", "FAIL")]
    parts, skipped = parts_from_records(records)
    assert [(p.uid, p.label, p.defect) for p in parts] == [
        ("a", 0, "good"), ("b", 1, "scratch"), ("c", 0, "good"), ("d", 0, "good"), ("e", 1, "unspecified")]
    assert len(skipped) == 1 and "record f" in skipped[0] and "image archiving" in skipped[0]


def test_export_loads_as_mvtec_with_masks(records: list[InspectionRecord], tmp_path: Path) -> None:
    parts, _ = parts_from_records(records)
    mask = np.zeros((20, 30), bool)
    mask[5:9, 10:20] = True
    out = export_mvtec(parts, tmp_path / "sets", "plate line", masks={"b": mask, "a": mask, "e": np.zeros((20, 30))},
                       train_good=1)
    assert out.root == tmp_path / "sets" / "plate_line"
    assert (out.n_good, out.n_defective, out.n_masks, out.n_train) == (2, 2, 1, 1)
    ds = load_dataset(out.root)
    assert ds.layout == "mvtec"
    got = sorted((s.path.name, s.label, s.defect, s.mask_path is not None) for s in ds.samples)
    assert got == [("b.png", 1, "scratch", True), ("c.png", 0, "good", False), ("d.png", 0, "good", False),
                   ("e.png", 1, "unspecified", False)]
    assert [p.name for p in ds.train_good] == ["a.png"]  # the earliest accepted part
    gt = read_image(out.root / "ground_truth" / "scratch" / "b_mask.png", max_side=None).max(axis=2) > 0
    assert np.array_equal(gt, mask)
    src = next(p for p in parts if p.uid == "b").image
    assert (out.root / "test" / "scratch" / "b.png").read_bytes() == src.read_bytes()  # byte for byte
    rows = list(csv.DictReader((out.root / "labels.csv").open()))
    assert [(r["uid"], r["split"], r["label"], r["defect"], r["mask"]) for r in rows][:2] == [
        ("a", "train", "0", "good", ""), ("b", "test", "1", "scratch", "ground_truth/scratch/b_mask.png")]
    assert rows[0]["profile"] == "plate" and rows[0]["profile_version"] == "3"

    with pytest.raises(LabelledSetError, match="already holds a labelled set"):
        export_mvtec(parts, tmp_path / "sets", "plate line")


def test_export_refusals(records: list[InspectionRecord], tmp_path: Path) -> None:
    with pytest.raises(LabelledSetError, match="no decided parts"):
        export_mvtec([], tmp_path, "x")
    parts, _ = parts_from_records(records)
    with pytest.raises(LabelledSetError, match="leaves no accepted part to test"):
        export_mvtec(parts, tmp_path, "x", train_good=3)
