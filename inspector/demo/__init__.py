"""The demo product line: a synthetic, deterministic data set in MVTec-AD layout.

Three categories, each rendered procedurally at 256×256 so that a fresh install has something
real to inspect before any weight is installed:

=========  ====================================  ============================================
category   product                               defect types
=========  ====================================  ============================================
fabric     woven canvas (texture)                hole, stain, cut, fiber
washer     stamped steel washer seen from above  scratch, crack, rust, chip
           (pose and lighting jitter)
pcb        small populated circuit board         missing, bridge, scratch, contamination
           (multi-part assembly)
=========  ====================================  ============================================

Layout (as MVTec-AD)::

    <root>/<cat>/train/good/000.png
    <root>/<cat>/test/good/000.png
    <root>/<cat>/test/<defect>/000.png
    <root>/<cat>/ground_truth/<defect>/000_mask.png   (0 / 255)

Every image has its own random generator seeded from ``(seed, category, split, index)``, so any
image can be regenerated alone and the output is byte-identical across runs. Masks are exact:
each defect is drawn through a coverage map (anti-aliased at 4× resolution) and the mask is the
set of pixels the defect covers by at least :data:`MASK_COVERAGE`.

:func:`generate_demo_line` writes a line; :func:`demo_line_dir` returns the default one
(generated on first use, regenerated when :data:`GENERATOR_VERSION` changes);
:func:`write_demo_profiles` writes the ``product_profiles/demo_<cat>`` folders.

One module per product renders it (:mod:`~.fabric`, :mod:`~.washer`, :mod:`~.pcb`; shared helpers in
:mod:`~.common`); this package writes the line and its profiles.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
from pathlib import Path

import numpy as np

from inspector.demo.common import (
    CATEGORIES,
    DEFAULT_COUNTS,
    GENERATOR_VERSION,
    MARKER_FILE,
    REFERENCE_SHOTS,
    SIZE,
    DemoCategory,
    _finish,
    _rng,
)
from inspector.demo.fabric import fabric_defect, render_fabric
from inspector.demo.pcb import pcb_image
from inspector.demo.washer import washer_image
from inspector.imaging import write_png

log = logging.getLogger(__name__)

__all__ = [
    "CATEGORIES", "DEFAULT_COUNTS", "GENERATOR_VERSION", "MARKER_FILE", "REFERENCE_SHOTS", "SIZE", "DemoCategory",
    "default_demo_root", "demo_line_dir", "generate_demo_line", "is_current", "render_pair", "render_sample",
    "write_demo_profiles",
]


# --------------------------------------------------------------------------- public API
def render_pair(category: str, kind: str | None, rng: np.random.Generator, with_clean: bool = True
                ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(image, mask, clean): ``clean`` is the same part under the same light without the defect."""
    if category == "fabric":
        clean = img = render_fabric(rng)
        mask = None
        if kind is not None:
            img, mask = fabric_defect(img, rng, kind)
    elif category == "washer":
        img, mask, clean = washer_image(rng, kind)
    elif category == "pcb":
        img, mask, clean = pcb_image(rng, kind)
    else:
        raise ValueError(f"unknown demo category {category!r}; choose one of {', '.join(CATEGORIES)}")
    lighting = copy.deepcopy(rng) if with_clean else None
    out = _finish(img, rng)
    return out, mask, (_finish(clean, lighting) if lighting is not None else None)


def render_sample(category: str, kind: str | None, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
    """One RGB uint8 image of ``category``; ``kind`` None = good, else a defect type. Returns (image, mask)."""
    img, mask, _ = render_pair(category, kind, rng, with_clean=False)
    return img, mask


def generate_demo_line(
    root: str | Path,
    seed: int = 0,
    categories: tuple[str, ...] | list[str] | None = None,
    n_train: int = DEFAULT_COUNTS["train"],
    n_test_good: int = DEFAULT_COUNTS["test_good"],
    n_per_defect: int = DEFAULT_COUNTS["per_defect"],
) -> Path:
    """Write the demo line below ``root`` in MVTec-AD layout (overwriting the categories it writes)."""
    root = Path(root)
    cats = list(categories or CATEGORIES)
    for cat in cats:
        if cat not in CATEGORIES:
            raise ValueError(f"unknown demo category {cat!r}; choose one of {', '.join(CATEGORIES)}")
        spec = CATEGORIES[cat]
        base = root / cat
        if base.exists():
            shutil.rmtree(base)
        jobs: list[tuple[str, str | None, Path, int]] = []
        jobs += [("train", None, base / "train" / "good", i) for i in range(n_train)]
        jobs += [("test_good", None, base / "test" / "good", i) for i in range(n_test_good)]
        for d in spec.defects:
            jobs += [(d, d, base / "test" / d, i) for i in range(n_per_defect)]
        for split, kind, folder, i in jobs:
            img, mask = render_sample(cat, kind, _rng(seed, cat, split, i))
            write_png(folder / f"{i:03d}.png", img)
            if kind is not None:
                assert mask is not None
                write_png(base / "ground_truth" / kind / f"{i:03d}_mask.png", mask.astype(np.uint8) * 255)
    marker = {"generator_version": GENERATOR_VERSION, "seed": seed, "categories": cats,
              "counts": {"train": n_train, "test_good": n_test_good, "per_defect": n_per_defect}}
    (root / MARKER_FILE).write_text(json.dumps(marker, indent=1), encoding="utf-8")
    log.info("demo line written to %s (%s)", root, ", ".join(cats))
    return root


def default_demo_root() -> Path:
    from inspector.settings import Settings

    return Settings.load().cache_dir.parent / "demo_line"


def is_current(root: str | Path, seed: int = 0, n_train: int = DEFAULT_COUNTS["train"],
               n_test_good: int = DEFAULT_COUNTS["test_good"], n_per_defect: int = DEFAULT_COUNTS["per_defect"]) -> bool:
    """True when ``root`` holds a complete line written by this generator version, seed and counts."""
    root = Path(root)
    try:
        marker = json.loads((root / MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    counts = {"train": n_train, "test_good": n_test_good, "per_defect": n_per_defect}
    return (
        isinstance(marker, dict)
        and marker.get("generator_version") == GENERATOR_VERSION
        and marker.get("seed") == seed
        and marker.get("counts") == counts
        and set(marker.get("categories", [])) >= set(CATEGORIES)
        and all((root / c / "test").is_dir() for c in CATEGORIES)
    )


def demo_line_dir(root: str | Path | None = None, seed: int = 0) -> Path:
    """The demo line folder (default counts), generated if missing or written by another generator version."""
    root = Path(root) if root is not None else default_demo_root()
    if not is_current(root, seed):
        generate_demo_line(root, seed)
    return root


def write_demo_profiles(dest: str | Path, line_root: str | Path | None = None, seed: int = 0) -> list[Path]:
    """Write ``dest/demo_<cat>/profile.yaml`` + ``references/`` (the line's first 4 train/good shots).

    The shots are copied from ``line_root`` when it has them, else rendered directly (byte-identical
    to ``<line>/<cat>/train/good/00N.png`` of the same seed), so no line has to exist.
    """
    from inspector.profile import ProductProfile, save_profile

    written = []
    for cat, spec in CATEGORIES.items():
        folder = Path(dest) / f"demo_{cat}"
        refs_dir = folder / "references"
        if refs_dir.exists():
            shutil.rmtree(refs_dir)
        refs_dir.mkdir(parents=True)
        shots = []
        for i in range(REFERENCE_SHOTS):
            src = Path(line_root) / cat / "train" / "good" / f"{i:03d}.png" if line_root is not None else None
            if src is not None and src.is_file():
                shutil.copyfile(src, refs_dir / src.name)
            else:
                img, _ = render_sample(cat, None, _rng(seed, cat, "train", i))
                write_png(refs_dir / f"{i:03d}.png", img)
            shots.append(f"references/{i:03d}.png")
        profile = ProductProfile(
            name=f"demo_{cat}",
            description=f"Demo line: {spec.description} Generated by inspector.demo (v{GENERATOR_VERSION}).",
            author="inspector demo generator",
            pipeline="patchcore",
            object=spec.object,
            reference_shots=shots,
            reason_codes=list(spec.reasons),
            patchcore=dict(spec.patchcore),  # type: ignore[arg-type]
            variation=dict(spec.variation),  # type: ignore[arg-type]  (selectable: pipeline: variation)
        )
        profile.prompts.class_specific = list(spec.prompts)
        written.append(save_profile(profile, folder))
    return written
