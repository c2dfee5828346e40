"""The line's own benchmark: operator decisions (records + archived images) as an MVTec-layout set.

Each decided part becomes one test image. The image-level label is the operator's decision as it
stands after any correction: PASS (accepted) → ``test/good``; FAIL (rejected) → ``test/<reason>``
(the reason code, ``unspecified`` without one). A defect mask painted for a rejected part (brush
or SAM click, :mod:`inspector.ui.labelling`) is written as ``ground_truth/<reason>/<stem>_mask.png``;
rejected parts without a mask count for the image metrics only (the evaluation says so). The
result loads with :func:`inspector.evaluate.datasets.load_dataset` like MVTec-AD itself::

    <root>/<category>/test/good/<uid>.png
    <root>/<category>/test/<reason>/<uid>.png
    <root>/<category>/ground_truth/<reason>/<uid>_mask.png
    <root>/<category>/train/good/<uid>.png        (the first ``train_good`` accepted parts)
    <root>/<category>/labels.csv                  (uid, label, defect, record fields, source image)

Qt-free: the Records tab's labelling dialog and scripts call the same functions.
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from inspector.files import atomic_copy
from inspector.imaging import ImageReadError, is_image_file, read_image, write_png
from inspector.records import InspectionRecord

log = logging.getLogger(__name__)

GOOD = "good"
UNSPECIFIED = "unspecified"
LABELS_FILE = "labels.csv"


class LabelledSetError(ValueError):
    """The set cannot be written (nothing usable, or the target is not empty); says what to do."""


@dataclass
class LabelledPart:
    """One decided part: where its image is and what the operator said about it."""

    uid: str
    image: Path
    label: int  # 1 = rejected (defective), 0 = accepted (good)
    defect: str  # the reason code for a reject, "good" for an accept
    profile_name: str = ""
    profile_version: int = 0
    timestamp: str = ""
    auto_verdict: str | None = None
    image_score: float | None = None

    @property
    def stem(self) -> str:
        return _safe(self.uid)


@dataclass
class LabelledSet:
    """What :func:`export_mvtec` wrote."""

    root: Path  # the category folder: pass it to load_dataset / the evaluation view
    n_good: int
    n_defective: int
    n_masks: int
    n_train: int
    skipped: list[str] = field(default_factory=list)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "unnamed"


def _resolve(path: str | None, archive_dir: Path | None) -> Path | None:
    if not path:
        return None
    p = Path(path)
    if not p.is_absolute() and archive_dir is not None:
        p = archive_dir / p
    return p


def current_decisions(records: Iterable[InspectionRecord]) -> list[InspectionRecord]:
    """Decisions with their latest correction applied (a correction replaces verdict and reason)."""
    rows = sorted(records, key=lambda r: (r.timestamp, r.id or 0))
    decisions: dict[str, InspectionRecord] = {}
    order: list[str] = []
    for r in rows:
        if r.kind == "decision":
            if r.uid not in decisions:
                order.append(r.uid)
            decisions[r.uid] = r
        elif r.kind == "correction" and r.corrects_uid in decisions:
            base = decisions[r.corrects_uid]
            fixed = InspectionRecord(**{**base.content(), "operator_verdict": r.operator_verdict,
                                        "reason": r.reason, "note": r.note or base.note})
            fixed.id = base.id
            decisions[r.corrects_uid] = fixed
    return [decisions[u] for u in order]


def parts_from_records(records: Iterable[InspectionRecord], archive_dir: str | Path | None = None,
                       ) -> tuple[list[LabelledPart], list[str]]:
    """The labelled parts of ``records`` and one message per decision that cannot be used.

    The archived copy of the image (``archive_path``) is preferred; the original ``image_path``
    is used when it still exists. Camera frames without an archive copy are skipped."""
    arch = Path(archive_dir) if archive_dir is not None else None
    parts: list[LabelledPart] = []
    skipped: list[str] = []
    for r in current_decisions(records):
        candidates = [_resolve(r.archive_path, arch), _resolve(r.image_path, None)]
        image = next((p for p in candidates if p is not None and p.is_file() and is_image_file(p)), None)
        if image is None:
            skipped.append(f"record {r.id or r.uid}: no image kept (archive {r.archive_path or 'off'}, "
                           f"source {r.image_path or 'camera frame'}); turn on image archiving to label parts")
            continue
        rejected = r.operator_verdict == "FAIL"
        defect = _safe(r.reason) if rejected and r.reason else (UNSPECIFIED if rejected else GOOD)
        if rejected and defect == GOOD:
            defect = "good_reason"  # a reason code literally named "good" must not land among the good parts
        parts.append(LabelledPart(uid=r.uid, image=image, label=int(rejected), defect=defect,
                                  profile_name=r.profile_name, profile_version=r.profile_version,
                                  timestamp=r.timestamp, auto_verdict=r.auto_verdict, image_score=r.image_score))
    return parts, skipped


def _write_image(src: Path, dest: Path) -> None:
    """PNG files are copied byte for byte; other formats are decoded once and written as PNG."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if src.suffix.lower() == ".png":
        atomic_copy(src, dest, fsync=False)
    else:
        write_png(dest, read_image(src, max_side=None))


def export_mvtec(parts: Iterable[LabelledPart], root: str | Path, category: str,
                 masks: Mapping[str, np.ndarray] | None = None, train_good: int = 0) -> LabelledSet:
    """Write ``parts`` as ``<root>/<category>`` in MVTec-AD layout (see the module docstring).

    ``masks`` maps a part's uid to its bool defect mask at the image's resolution (masks of
    accepted parts, and empty masks, are ignored). ``train_good`` accepted parts (the earliest)
    go to ``train/good`` as the few-shot reference pool instead of ``test/good``. Refuses to
    write into a category folder that already holds a set."""
    parts = list(parts)
    masks = dict(masks or {})
    if not parts:
        raise LabelledSetError("no decided parts with a kept image to export; pick records with images "
                               "(turn on image archiving at the station)")
    target = Path(root) / _safe(category)
    if (target / "test").exists():
        raise LabelledSetError(f"{target} already holds a labelled set; choose another category name or folder")
    goods = sorted((p for p in parts if not p.label), key=lambda p: p.timestamp)
    train_uids = {p.uid for p in goods[:max(0, train_good)]}
    if goods and len(train_uids) >= len(goods):
        raise LabelledSetError(f"train_good={train_good} leaves no accepted part to test; use fewer than {len(goods)}")
    skipped: list[str] = []
    n_good = n_bad = n_masks = n_train = 0
    rows = []
    for part in parts:
        split = "train" if part.uid in train_uids else "test"
        dest = target / split / part.defect / f"{part.stem}.png"
        try:
            _write_image(part.image, dest)
        except (ImageReadError, OSError) as exc:
            skipped.append(f"{part.image}: {exc}")
            continue
        mask_rel = ""
        mask = masks.get(part.uid)
        if part.label and mask is not None and np.asarray(mask).any():
            mask_file = target / "ground_truth" / part.defect / f"{part.stem}_mask.png"
            write_png(mask_file, np.asarray(mask, dtype=bool).astype(np.uint8) * 255)
            mask_rel = mask_file.relative_to(target).as_posix()
            n_masks += 1
        if split == "train":
            n_train += 1
        elif part.label:
            n_bad += 1
        else:
            n_good += 1
        rows.append([part.uid, split, part.label, part.defect, dest.relative_to(target).as_posix(), mask_rel,
                     part.profile_name, part.profile_version, part.timestamp, part.auto_verdict or "",
                     "" if part.image_score is None else f"{part.image_score:.6g}", str(part.image)])
    with open(target / LABELS_FILE, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["uid", "split", "label", "defect", "image", "mask", "profile", "profile_version",
                    "timestamp", "auto_verdict", "image_score", "source"])
        w.writerows(rows)
    log.info("labelled set %s: %d good, %d defective (%d masks), %d train/good, %d skipped",
             target, n_good, n_bad, n_masks, n_train, len(skipped))
    return LabelledSet(target, n_good, n_bad, n_masks, n_train, skipped)
