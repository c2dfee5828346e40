"""``inspector inspect``: run a product profile over images and write one result set per image.

For every input image ``DIR/<stem>.json`` (image path, sha256, profile name/version/hash, pipeline,
image score, verdict, regions, timings per stage), ``DIR/<stem>_heatmap.png`` (jet colormap of the
anomaly map on the profile's 0..1 scale) and ``DIR/<stem>_overlay.png`` (heatmap blended on the image,
region contours and boxes), plus ``DIR/inspect_summary.csv`` (one row per input: path, output stem,
verdict, score, error). Two inputs with the same file name get distinct stems (``<folder>_<name>``,
then numbered), never overwriting each other or an input file. Exit codes: 0 all inspected, 1 some
inputs failed (each reported on stderr and in its JSON ``error`` field), 2 usage errors (bad
profile, missing weights, unwritable output folder).

The helpers it shares with ``inspector eval`` (hub, profile and output-folder checks) live in
:mod:`inspector.commands.common`.
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import logging
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inspector.commands.common import (
    EXIT_FAILED_INPUTS,
    EXIT_OK,
    UsageError,
    add_device_arguments,
    ensure_writable_dir,
    load_profile_arg,
    make_hub,
    model_errors,
    prepare_inspector,
)

if TYPE_CHECKING:  # pragma: no cover
    from inspector.inspection import Inspector

log = logging.getLogger(__name__)

SUMMARY_FILE = "inspect_summary.csv"
_GLOB_CHARS = set("*?[")


# ----------------------------------------------------------------------------------- inputs
def _identity(p: Path) -> Path:
    """The resolved path used to spot duplicates; a path that cannot be resolved (a symlink loop)
    stands for itself, so that the reader reports it as a per-file error instead of the batch failing."""
    try:
        return p.resolve()
    except (OSError, RuntimeError):  # RuntimeError: "Symlink loop" (Python < 3.13)
        return p.absolute()


def collect_inputs(items: Iterable[str], recursive: bool = False) -> tuple[list[Path], list[str]]:
    """Expand files, folders and glob patterns; returns (unique image paths in order, unmatched items)."""
    from inspector.imaging import is_image_file, list_images

    found: list[Path] = []
    unmatched: list[str] = []
    seen: set[Path] = set()

    def add(p: Path) -> None:
        key = _identity(p)
        if key not in seen:
            seen.add(key)
            found.append(p)

    for item in items:
        p = Path(item).expanduser()
        if p.is_dir():
            images = list_images(p, recursive=recursive)
            if not images:
                unmatched.append(f"{item} (folder without images)")
            for q in images:
                add(q)
        elif p.exists() or p.is_symlink():
            add(p)  # an explicit file is tried even with an odd extension; the reader says what is wrong
        elif _GLOB_CHARS & set(item):
            matches = sorted(Path(m) for m in glob.glob(os.path.expanduser(item), recursive=True))
            images = [m for m in matches if m.is_file() and is_image_file(m)]
            if not images:
                unmatched.append(f"{item} (pattern matches no image)")
            for q in images:
                add(q)
        else:
            add(p)  # a named file that is missing: the reader reports it in its JSON
    return found, unmatched


def output_stems(paths: list[Path], out_dir: Path) -> list[str]:
    """A distinct output stem per input.

    A file name that occurs once keeps its stem; names shared by several inputs (``a/x.png``,
    ``b/x.png``) are prefixed with their folder name (``a_x``, ``b_x``), then numbered (``_2``…) if
    still equal. Comparison ignores case (case-insensitive file systems), and a stem is skipped
    when one of its output files would be an input image (``--out`` pointing at an input folder).
    """
    inputs = {_identity(p) for p in paths}
    counts: dict[str, int] = {}
    for p in paths:
        counts[p.stem.lower()] = counts.get(p.stem.lower(), 0) + 1
    used: set[str] = set()
    stems: list[str] = []
    for p in paths:
        base = p.stem or "image"
        if counts[p.stem.lower()] > 1 and p.parent.name:
            base = f"{p.parent.name}_{base}"
        stem, k = base, 2
        while stem.lower() in used or any(_identity(out_dir / f) in inputs for f in output_names(stem).values()):
            stem, k = f"{base}_{k}", k + 1
        used.add(stem.lower())
        stems.append(stem)
    return stems


def output_names(stem: str) -> dict[str, str]:
    return {"json": f"{stem}.json", "heatmap": f"{stem}_heatmap.png", "overlay": f"{stem}_overlay.png"}


# ----------------------------------------------------------------------------------- command
def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "inspect",
        help="inspect images with a product profile; writes JSON, heatmap and overlay per image",
        description="Run a product profile's pipeline over images (files, folders, glob patterns) and "
        "write DIR/<stem>.json, DIR/<stem>_heatmap.png and DIR/<stem>_overlay.png for each. Exit 1 when "
        "some inputs failed, 2 on a broken profile, missing weights or an unwritable output folder.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
    p.add_argument("--profile", required=True, help="profile folder, its profile.yaml, or a profile name")
    p.add_argument("--pipeline", default=None, help="override the profile's pipeline (patchcore, variation, fade, saa, clipsam)")
    add_device_arguments(p)
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    p.add_argument("--recursive", action="store_true", help="also take images from sub-folders of INPUT folders")
    p.set_defaults(func=run)


def _error_doc(path: Path, inspector: Inspector, error: str) -> dict[str, Any]:
    from inspector.files import file_sha256

    try:
        sha = file_sha256(path)
    except OSError:
        sha = None
    prof = inspector.profile
    return {
        "image_path": str(path.absolute()),
        "image_sha256": sha,
        "profile": {"name": prof.name, "version": prof.version, "hash": prof.content_hash()},
        "pipeline": inspector.pipeline,
        "image_score": None,
        "verdict": None,
        "regions": [],
        "error": error,
    }


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    from inspector.files import atomic_write

    atomic_write(path, json.dumps(doc, indent=2) + "\n", fsync=False)


def inspect_one(inspector: Inspector, path: Path, out_dir: Path, stem: str) -> dict[str, Any]:
    """Inspect one image and write its three files; returns the JSON document.

    Raises :class:`~inspector.imaging.ImageReadError` for an unreadable image (nothing but the
    error JSON is then written by the caller) and ``OSError`` when the outputs cannot be written.
    """
    from inspector.imaging import read_image_hashed, write_png
    from inspector.overlay import colorize_map, heat_vmax, render_overlay

    image, sha = read_image_hashed(path)  # the sha256 of exactly the bytes inspected
    ins = inspector.inspect(image, image_path=path.absolute(), image_sha256=sha)
    names = output_names(stem)
    amap = ins.detection.anomaly_map
    vmax = heat_vmax(inspector.profile.decision.image_threshold)
    write_png(out_dir / names["heatmap"], colorize_map(amap, 0.0, vmax))
    write_png(out_dir / names["overlay"], render_overlay(image, amap, ins.regions, vmax=vmax))
    doc = ins.to_json()
    doc["image_size"] = [int(image.shape[1]), int(image.shape[0])]
    doc["outputs"] = {"heatmap": names["heatmap"], "overlay": names["overlay"]}
    doc["error"] = None
    _write_json(out_dir / names["json"], doc)
    return doc


def _write_summary(path: Path, rows: list[list[str]]) -> None:
    import io

    from inspector.files import atomic_write

    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow(["image_path", "stem", "verdict", "image_score", "regions", "error"])
    w.writerows(rows)
    atomic_write(path, buf.getvalue())


def _write_failure(path: Path, out_dir: Path, exc: OSError) -> str:
    return (
        f"cannot write results for {path} to {exc.filename or out_dir}: {exc.strerror or exc}; "
        "free disk space or choose another --out (results written so far are complete)"
    )


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from inspector.imaging import ImageReadError

    profile = load_profile_arg(args.profile)
    paths, unmatched = collect_inputs(args.inputs, args.recursive)
    for item in unmatched:
        print(f"error: {item}", file=sys.stderr)
    if not paths:
        raise UsageError("no input images: " + "; ".join(unmatched))
    out_dir = ensure_writable_dir(Path(args.out))
    hub = make_hub(args)
    inspector = prepare_inspector(profile, hub, args.pipeline)

    stems = output_stems(paths, out_dir)
    counts = {"PASS": 0, "FAIL": 0, "error": 0}
    rows: list[list[str]] = []
    with tqdm(total=len(paths), unit="img", file=sys.stderr, desc="inspect", disable=None) as bar:
        for path, stem in zip(paths, stems):
            error: str | None = None
            try:
                doc = inspect_one(inspector, path, out_dir, stem)
            except ImageReadError as exc:
                error = str(exc)
            except model_errors() as exc:
                raise UsageError(str(exc)) from exc
            except OSError as exc:
                raise UsageError(_write_failure(path, out_dir, exc)) from exc
            except Exception as exc:  # noqa: BLE001 - one bad image must not stop the batch
                log.debug("inspecting %s failed", path, exc_info=True)
                error = f"{path}: inspection failed: {type(exc).__name__}: {exc}"
            if error is None:
                counts[doc["verdict"]] += 1
                tqdm.write(f"{doc['verdict']}  {doc['image_score']:.4f}  {path}", file=sys.stdout)
                rows.append([str(path.absolute()), stem, doc["verdict"], f"{doc['image_score']:.6g}",
                             str(len(doc["regions"])), ""])
            else:
                rows.append([str(path.absolute()), stem, "", "", "", error])
                counts["error"] += 1
                tqdm.write(f"error: {error}", file=sys.stderr)
                try:
                    _write_json(out_dir / output_names(stem)["json"], _error_doc(path, inspector, error))
                except OSError as exc:
                    raise UsageError(_write_failure(path, out_dir, exc)) from exc
            bar.update()
    try:
        _write_summary(out_dir / SUMMARY_FILE, rows)
    except OSError as exc:
        raise UsageError(_write_failure(Path(SUMMARY_FILE), out_dir, exc)) from exc

    failed = counts["error"] + len(unmatched)
    print(
        f"inspected {len(paths)} images: {counts['PASS']} PASS, {counts['FAIL']} FAIL, "
        f"{counts['error']} failed; results in {out_dir}"
    )
    return EXIT_FAILED_INPUTS if failed else EXIT_OK
