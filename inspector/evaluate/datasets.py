"""Labelled dataset layouts: MVTec-AD, VisA and plain folders.

Each loader returns a :class:`Dataset`: the test samples (image path, label, defect type, mask path
or ``None``) and the good reference images a few-shot draw may use. Layout facts are in
``shared/methods/evaluation.md``:

* ``mvtec``  — ``<cat>/train/good``, ``<cat>/test/{good,<defect>}``,
  ``<cat>/ground_truth/<defect>/<stem>_mask.png``.
* ``visa``   — ``<cat>/Data/Images/{Normal,Anomaly}``, ``<cat>/Data/Masks/Anomaly`` and the split file
  ``split_csv/1cls.csv`` (columns ``object,split,label,image,mask``, paths relative to the VisA root) in
  the category's parent folder (or in the category folder). Defect types come from
  ``<cat>/image_anno.csv`` when present, else every anomaly is ``anomaly``. Non-zero mask = anomalous.
* ``folder`` — ``good/`` and ``bad/`` (images directly, or in ``bad/<defect>/`` subfolders), optional
  ``masks/`` holding ``<stem>_mask.png`` or ``<stem>.png`` (also ``masks/<defect>/...``), optional
  ``reference/`` (or ``train/good/``, ``train/``) with good images for few-shot draws. Without one,
  shots are drawn from ``good/`` and removed from the test set (see :meth:`Dataset.draw_shots`).
"""

from __future__ import annotations

import csv
import logging
import random
from dataclasses import dataclass, field, replace
from pathlib import Path

from inspector.ground_truth import find_mask
from inspector.imaging import is_image_file, list_images

log = logging.getLogger(__name__)

LAYOUTS = ("mvtec", "visa", "folder")
GOOD = "good"
VISA_SPLIT = Path("split_csv") / "1cls.csv"
_FOLDER_REFERENCE_DIRS = ("reference", "references", "train/good", "train")


class DatasetError(ValueError):
    """The folder does not match the expected layout; the message says what was expected and found."""


@dataclass(frozen=True)
class Sample:
    """One test image. ``label`` is 0 (good) or 1 (anomalous); ``defect`` is ``good`` for good images."""

    path: Path
    label: int
    defect: str
    mask_path: Path | None = None


@dataclass
class Dataset:
    """One category of a labelled dataset."""

    root: Path
    category: str
    layout: str
    samples: list[Sample]
    train_good: list[Path] = field(default_factory=list)

    @property
    def n_anomalous(self) -> int:
        return sum(s.label for s in self.samples)

    def defects(self) -> list[str]:
        """Defect types present (``good`` excluded), sorted."""
        return sorted({s.defect for s in self.samples if s.label})

    def reference_pool(self) -> list[Path]:
        """Good images few-shot references are drawn from (train/good, else the test good images)."""
        if self.train_good:
            return list(self.train_good)
        return [s.path for s in self.samples if s.label == 0]

    def draw_shots(self, k: int, seed: int = 0) -> tuple[list[Path], Dataset]:
        """Draw ``k`` reference shots (seeded). Returns the shots and the dataset to test on.

        Shots come from the training good images; a layout without any (plain folders) lends them
        from the test good images, which are then removed from the returned dataset so that no
        reference shot is also scored.
        """
        pool = sorted(self.reference_pool())
        if k < 1:
            raise DatasetError(f"--shots must be >= 1, got {k}")
        if k > len(pool):
            raise DatasetError(
                f"{self.root}: asked for {k} reference shots but only {len(pool)} good images are available "
                "for drawing; lower --shots or add good images"
            )
        shots = random.Random(seed).sample(pool, k)
        if self.train_good:
            return shots, self
        taken = set(shots)
        rest = [s for s in self.samples if s.path not in taken]
        if not any(s.label == 0 for s in rest):
            log.warning("%s: every good image became a reference shot; no good image is left to test", self.root)
        return shots, replace(self, samples=rest)

    def summary(self) -> str:
        n_good = len(self.samples) - self.n_anomalous
        return (
            f"{self.layout} {self.category}: {len(self.samples)} test images ({n_good} good, {self.n_anomalous} "
            f"anomalous in {len(self.defects())} defect types), {len(self.train_good)} train/good"
        )


# ----------------------------------------------------------------------------------- helpers
def _listing(folder: Path, limit: int = 12) -> str:
    try:
        names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    except OSError as exc:
        return f"(cannot list: {exc.strerror or exc})"
    if not names:
        return "(empty)"
    more = f", … ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def detect_layout(root: Path) -> str:
    """Guess the layout of a category folder; :class:`DatasetError` when none fits."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found; pass --dataset ROOT/CATEGORY")
    if (root / "test").is_dir():
        return "mvtec"
    if (root / "Data" / "Images").is_dir():
        return "visa"
    if (root / "good").is_dir() or (root / "bad").is_dir():
        return "folder"
    raise DatasetError(
        f"{root}: cannot tell the dataset layout. Expected one of: MVTec-AD (train/good, test/<type>, "
        "ground_truth/<type>), VisA (Data/Images/{Normal,Anomaly} plus split_csv/1cls.csv) or a plain "
        f"folder (good/, bad/, optional masks/). Found: {_listing(root)}"
    )


def load_dataset(root: str | Path, layout: str = "auto") -> Dataset:
    """Load one category in the given layout (``auto`` guesses it)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found; pass --dataset ROOT/CATEGORY")
    root = root.resolve()
    if layout == "auto":
        layout = detect_layout(root)
    loaders = {"mvtec": load_mvtec, "visa": load_visa, "folder": load_folder}
    if layout not in loaders:
        raise DatasetError(f"unknown dataset layout {layout!r}; choose one of auto, {', '.join(LAYOUTS)}")
    ds = loaders[layout](root)
    if not ds.samples:
        raise DatasetError(f"{root}: no test images found in the {layout} layout")
    log.info("%s", ds.summary())
    return ds


# ------------------------------------------------------------------------------------ MVTec AD
def load_mvtec(root: Path) -> Dataset:
    root = Path(root)
    test = root / "test"
    if not test.is_dir():
        raise DatasetError(
            f"{root}: not an MVTec-AD category: expected test/ with good/ and one folder per defect type "
            f"(plus train/good and ground_truth/); found: {_listing(root)}"
        )
    types = _subdirs(test)
    if not types:
        raise DatasetError(f"{test}: expected subfolders good/ and <defect type>/; found: {_listing(test)}")
    gt = root / "ground_truth"
    samples: list[Sample] = []
    missing_masks = 0
    for tdir in types:
        defect = tdir.name
        for img in list_images(tdir):
            if defect == GOOD:
                samples.append(Sample(img, 0, GOOD, None))
                continue
            mask = find_mask(gt / defect, img.stem)
            missing_masks += mask is None
            samples.append(Sample(img, 1, defect, mask))
    if missing_masks:
        log.warning(
            "%s: %d anomalous test images have no mask in ground_truth/<type>/<stem>_mask.png; "
            "they count for image metrics only", root, missing_masks,
        )
    train = root / "train" / GOOD
    train_good = list_images(train) if train.is_dir() else []
    if not train_good:
        log.warning("%s: no train/good images; few-shot references cannot be drawn", root)
    return Dataset(root=root, category=root.name, layout="mvtec", samples=samples, train_good=train_good)


# --------------------------------------------------------------------------------------- VisA
def _find_visa_split(root: Path) -> Path:
    for base in (root, root.parent):
        if (base / VISA_SPLIT).is_file():
            return base / VISA_SPLIT
    raise DatasetError(
        f"{root}: VisA layout needs the split file {VISA_SPLIT} (columns object,split,label,image,mask) in "
        f"{root.parent} or {root}; none found. Get it from the VisA release or use --layout folder"
    )


def _read_csv(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            lacking = [c for c in required if c not in header]
            if lacking:
                raise DatasetError(
                    f"{path}: expected columns {','.join(required)}; found {','.join(header) or '(none)'}"
                )
            return [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{path}: cannot read CSV ({exc})") from exc


def _visa_defect_types(root: Path) -> dict[str, str]:
    """image (relative to the VisA root) -> defect label, from ``<cat>/image_anno.csv`` if present."""
    anno = root / "image_anno.csv"
    if not anno.is_file():
        return {}
    try:
        rows = _read_csv(anno, ("image", "label"))
    except DatasetError as exc:
        log.warning("%s; defect types fall back to 'anomaly'", exc)
        return {}
    return {Path(r["image"]).as_posix(): r["label"] for r in rows if r.get("image")}


def load_visa(root: Path) -> Dataset:
    root = Path(root)
    if not (root / "Data" / "Images").is_dir():
        raise DatasetError(
            f"{root}: not a VisA category: expected Data/Images/{{Normal,Anomaly}} and Data/Masks/Anomaly; "
            f"found: {_listing(root)}"
        )
    split = _find_visa_split(root)
    base = split.parent.parent
    rows = _read_csv(split, ("object", "split", "label", "image", "mask"))
    mine = [r for r in rows if r["object"] == root.name]
    if not mine:
        objects = sorted({r["object"] for r in rows})
        raise DatasetError(
            f"{split}: no rows for object {root.name!r}; the file lists {', '.join(objects) or 'nothing'}"
        )
    types = _visa_defect_types(root)
    samples: list[Sample] = []
    train_good: list[Path] = []
    missing: list[str] = []
    for r in mine:
        img = base / r["image"]
        if not img.is_file():
            missing.append(r["image"])
            continue
        normal = r["label"].lower() in ("normal", "good", "0")
        if r["split"] == "train":
            if normal:
                train_good.append(img)
            continue
        if r["split"] != "test":
            raise DatasetError(f"{split}: split must be train or test, got {r['split']!r} for {r['image']}")
        if normal:
            samples.append(Sample(img, 0, GOOD, None))
            continue
        mask = base / r["mask"] if r["mask"] else None
        if mask is not None and not mask.is_file():
            missing.append(r["mask"])
            mask = None
        defect = types.get(Path(r["image"]).as_posix(), "anomaly")
        if defect.lower() in ("normal", "good", ""):
            defect = "anomaly"
        samples.append(Sample(img, 1, defect, mask))
    if missing:
        raise DatasetError(
            f"{split}: {len(missing)} listed files are missing under {base} (first: {missing[0]}); "
            "is the VisA folder complete?"
        )
    return Dataset(root=root, category=root.name, layout="visa", samples=samples, train_good=sorted(train_good))


# ---------------------------------------------------------------------------------- plain folder
def _folder_images(folder: Path) -> list[Path]:
    return list_images(folder) if folder.is_dir() else []


def load_folder(root: Path) -> Dataset:
    root = Path(root)
    good_dir, bad_dir, mask_dir = root / GOOD, root / "bad", root / "masks"
    if not good_dir.is_dir() and not bad_dir.is_dir():
        raise DatasetError(
            f"{root}: plain-folder layout expects good/ and bad/ (bad/<defect>/ allowed) and optionally "
            f"masks/ and reference/; found: {_listing(root)}"
        )
    samples = [Sample(p, 0, GOOD, None) for p in _folder_images(good_dir)]
    bad: list[tuple[Path, str]] = [(p, "bad") for p in _folder_images(bad_dir)]
    if bad_dir.is_dir():
        for sub in _subdirs(bad_dir):
            bad += [(p, sub.name) for p in list_images(sub)]
    for path, defect in bad:
        mask = None
        if mask_dir.is_dir():
            mask = (find_mask(mask_dir / defect, path.stem) if defect != "bad" else None) or find_mask(
                mask_dir, path.stem
            )
        samples.append(Sample(path, 1, defect, mask))
    if mask_dir.is_dir():
        n_masked = sum(1 for s in samples if s.mask_path is not None)
        if n_masked < len(bad):
            log.warning("%s: %d of %d bad images have no mask in masks/ (<stem>_mask.png or <stem>.png)",
                        root, len(bad) - n_masked, len(bad))
    train_good: list[Path] = []
    for rel in _FOLDER_REFERENCE_DIRS:
        folder = root / rel
        if folder.is_dir():
            train_good = [p for p in list_images(folder) if is_image_file(p)]
            if train_good:
                break
    return Dataset(root=root, category=root.name, layout="folder", samples=samples, train_good=train_good)
