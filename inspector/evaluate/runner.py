"""Run one profile's pipeline over a labelled dataset and compute the metrics (Qt-free).

Images are streamed one at a time; only the anomaly map and the ground-truth mask at the evaluation
resolution (``eval_size``², float32 / bool) are kept, so memory is bounded by
``n_images * eval_size² * 5`` bytes whatever the image size. The engineer GUI calls
:func:`evaluate` from a worker thread with ``progress`` and ``cancel`` callbacks.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inspector.detect.base import Progress
from inspector.detect.maps import resize_map
from inspector.evaluate.datasets import GOOD, Dataset, Sample, load_dataset
from inspector.evaluate.metrics import DEFAULT_MAX_FPR, METRIC_KEYS, summarise
from inspector.ground_truth import read_mask
from inspector.imaging import ImageReadError, read_image
from inspector.inspection import Inspector
from inspector.profile import ProductProfile

log = logging.getLogger(__name__)

Cancel = Callable[[], bool]
"""Returns True when the caller wants the evaluation to stop (checked before each image)."""

PREPARE_SHARE = 0.1
"""Fraction of the progress bar given to preparing the pipeline."""


class EvalError(RuntimeError):
    """The evaluation could not produce any result (e.g. every image failed)."""


@dataclass
class ImageRecord:
    """What happened to one test image."""

    path: Path
    label: int
    defect: str
    score: float | None = None
    verdict: str | None = None
    error: str | None = None
    has_mask: bool = False
    map_file: Path | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.score is not None


@dataclass
class EvalResult:
    """Per-image records and the metrics (``metrics`` has :data:`METRIC_KEYS`, counts, ``per_defect``)."""

    records: list[ImageRecord]
    metrics: dict[str, Any]
    eval_size: int
    seconds: float
    dataset: str = ""
    category: str = ""
    pipeline: str = ""
    profile_name: str = ""
    threshold: float | None = None
    cancelled: bool = False

    @property
    def scored(self) -> list[ImageRecord]:
        return [r for r in self.records if r.ok]

    @property
    def failed(self) -> list[ImageRecord]:
        return [r for r in self.records if r.error is not None]

    def scores(self) -> np.ndarray:
        return np.array([r.score for r in self.scored], dtype=np.float64)

    def labels(self) -> np.ndarray:
        return np.array([r.label for r in self.scored], dtype=np.int64)


# ------------------------------------------------------------------------------------- runner
def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "unnamed"


def _mask_at(sample: Sample, size: int) -> np.ndarray | None:
    """Ground truth at size×size (:func:`inspector.ground_truth.read_mask`); zeros for good images without one."""
    if sample.mask_path is None:
        return np.zeros((size, size), dtype=bool) if sample.label == 0 else None
    return read_mask(sample.mask_path, (size, size))


def _as_inspector(obj: Inspector | ProductProfile, hub: Any | None) -> Inspector:
    if isinstance(obj, Inspector):
        return obj
    if isinstance(obj, ProductProfile):
        if hub is None:
            from inspector.models.hub import ModelHub

            hub = ModelHub()
        return Inspector(obj, hub)
    raise TypeError(f"evaluate() needs an Inspector or a ProductProfile, got {type(obj).__name__}")


def evaluate(
    inspector_or_profile: Inspector | ProductProfile,
    dataset: Dataset | str | Path,
    eval_size: int = 256,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
    save_maps_dir: str | Path | None = None,
    *,
    hub: Any | None = None,
    max_fpr: float = DEFAULT_MAX_FPR,
) -> EvalResult:
    """Inspect every test image of ``dataset`` and compute image and pixel metrics.

    ``save_maps_dir``: write each anomaly map at the evaluation resolution as
    ``<dir>/<defect>/<stem>.npy`` (float32). Unreadable images are recorded with their error and
    left out of the metrics. With ``cancel`` returning True the run stops before the next image and
    the result (``cancelled=True``) holds what was done.
    """
    if eval_size < 8:
        raise ValueError(f"eval_size must be >= 8 px, got {eval_size}")
    t0 = time.perf_counter()
    report = progress or (lambda _f, _m: None)
    inspector = _as_inspector(inspector_or_profile, hub)
    ds = dataset if isinstance(dataset, Dataset) else load_dataset(dataset)
    maps_root = Path(save_maps_dir) if save_maps_dir is not None else None

    if not getattr(inspector, "_prepared", False):
        report(0.0, f"preparing {inspector.pipeline}")
        inspector.prepare(lambda f, m: report(PREPARE_SHARE * max(0.0, min(1.0, f)), m))

    n = len(ds.samples)
    maps = np.zeros((n, eval_size, eval_size), dtype=np.float32)
    masks = np.zeros((n, eval_size, eval_size), dtype=bool)
    pixel_ok = np.zeros(n, dtype=bool)
    scored = np.zeros(n, dtype=bool)
    records: list[ImageRecord] = []
    used_names: set[Path] = set()
    cancelled = False
    for i, sample in enumerate(ds.samples):
        if cancel is not None and cancel():
            cancelled = True
            log.info("evaluation cancelled after %d of %d images", i, n)
            break
        rec = ImageRecord(path=sample.path, label=sample.label, defect=sample.defect)
        records.append(rec)
        try:
            image = read_image(sample.path)
            ins = inspector.inspect(image, image_path=sample.path)
        except ImageReadError as exc:
            rec.error = str(exc)
            log.warning("skipping %s", exc)
        else:
            rec.score, rec.verdict = ins.image_score, ins.verdict
            maps[i] = resize_map(ins.detection.anomaly_map, (eval_size, eval_size))
            scored[i] = True
            try:
                mask = _mask_at(sample, eval_size)
            except ImageReadError as exc:
                log.warning("mask unreadable, %s counts for image metrics only: %s", sample.path.name, exc)
                mask = None
            if mask is not None:
                masks[i], pixel_ok[i], rec.has_mask = mask, True, True
            if maps_root is not None:
                rec.map_file = _save_map(maps_root, sample, maps[i], used_names)
        report(PREPARE_SHARE + (1 - PREPARE_SHARE) * (i + 1) / max(n, 1), f"{i + 1}/{n} {sample.path.name}")

    if records and not scored.any():
        first = next(r.error for r in records if r.error)
        raise EvalError(f"no test image could be inspected ({len(records)} failed); first error: {first}")
    idx = np.flatnonzero(scored)
    ok_records = [r for r in records if r.ok]
    if ok_records:
        metrics = summarise(
            np.array([r.label for r in ok_records]),
            np.array([r.score for r in ok_records]),
            [r.defect for r in ok_records],
            maps[idx], masks[idx], pixel_ok[idx], max_fpr,
        )
    else:  # cancelled before the first image
        metrics = {k: math.nan for k in METRIC_KEYS} | {"n_images": 0, "n_anomalous": 0, "per_defect": {}}
    seconds = time.perf_counter() - t0
    metrics["seconds"] = round(seconds, 3)
    return EvalResult(
        records=records,
        metrics=metrics,
        eval_size=eval_size,
        seconds=seconds,
        dataset=str(ds.root),
        category=ds.category,
        pipeline=inspector.pipeline,
        profile_name=inspector.profile.name,
        threshold=inspector.profile.decision.image_threshold,
        cancelled=cancelled,
    )


def _save_map(root: Path, sample: Sample, amap: np.ndarray, used: set[Path]) -> Path:
    folder = root / _safe_name(sample.defect if sample.label else GOOD)
    target = folder / f"{_safe_name(sample.path.stem)}.npy"
    k = 2
    while target in used:
        target = folder / f"{_safe_name(sample.path.stem)}_{k}.npy"
        k += 1
    used.add(target)
    folder.mkdir(parents=True, exist_ok=True)
    np.save(target, amap.astype(np.float32, copy=False))
    return target
