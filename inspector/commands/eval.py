"""``inspector eval``: measure a profile or a pipeline on a labelled dataset category.

Writes ``DIR/metrics.json`` (image AUROC/AUPR/F1-max, pixel AUROC/AP/F1-max/AUPRO, counts, seconds,
``per_defect`` rows), ``DIR/scores.csv`` (one row per test image), ``DIR/curves.png`` and
``DIR/run.json`` (what was run: dataset, profile, pipeline, seed, reference shots, definitions), and
with ``--save-maps`` every anomaly map at the evaluation resolution as
``DIR/maps/<defect>/<stem>.npy``; with ``--report`` one self-contained ``DIR/report.html`` (curves,
metrics, per-defect table, confusion counts at the profile's threshold, escapes and false rejects
with their overlays). The metrics table goes to stdout.

With ``--shots K`` the K reference shots are drawn (seeded) from the dataset's good training
images and copied into a temporary profile folder inside DIR (removed afterwards); the user's
profile is never modified. Exit codes: 0 ok, 1 some test images could not be read, 2 usage errors.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

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
    from inspector.profile import ProductProfile


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a profile or pipeline on a labelled dataset (MVTec-AD, VisA, plain folders)",
        description="Evaluate on one dataset category and write metrics.json, scores.csv, curves.png "
        "and run.json to --out. Metrics follow the MVTec protocol (AUPRO to FPR 0.3; AUPR = average precision).",
    )
    p.add_argument("--dataset", required=True, type=Path, metavar="ROOT/CATEGORY", help="one category folder")
    p.add_argument("--layout", default="auto", choices=("auto", "mvtec", "visa", "folder"),
                   help="dataset layout (default: guessed from the folder)")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--profile", help="profile folder, its profile.yaml, or a profile name")
    who.add_argument("--pipeline", help="evaluate a pipeline with a default profile (patchcore, variation, fade, saa, clipsam)")
    p.add_argument("--object", default=None, help="object name for --pipeline prompts (default: the category name)")
    p.add_argument("--shots", type=int, default=None, metavar="K",
                   help="draw K reference shots from the dataset's good training images (0: none, the "
                        "pipeline's 0-shot mode, also for a profile that has shots)")
    p.add_argument("--seed", type=int, default=0, help="seed of the reference-shot draw (default 0)")
    p.add_argument("--eval-size", type=int, default=None, metavar="PX",
                   help="square resolution of pixel metrics and saved maps (default: the pipeline's published "
                        "protocol, e.g. FADE 448, SAA 400, CLIP-SAM 518; others 256)")
    add_device_arguments(p)
    p.add_argument("--save-maps", action="store_true", help="save each anomaly map as DIR/maps/<defect>/<stem>.npy")
    p.add_argument("--report", action="store_true",
                   help="also write DIR/report.html: curves, metrics, per-defect table, confusion counts at the "
                   "profile's threshold, escapes and false rejects with overlays (one self-contained file)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    p.set_defaults(func=run)


def _profile_name(category: str) -> str:
    return ("eval-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", category))[:64]


def _copy_shots(shots: list[Path], folder: Path) -> list[str]:
    """Copy shots into ``folder/references`` with collision-free names; returns profile-relative paths."""
    refs = folder / "references"
    refs.mkdir(parents=True, exist_ok=True)
    rel: list[str] = []
    for i, src in enumerate(shots):
        name = f"shot_{i:02d}_{src.name}"
        shutil.copy2(src, refs / name)
        rel.append(f"references/{name}")
    return rel


def build_profile(args: argparse.Namespace, category: str, shots: list[Path] | None, tmp: Path) -> ProductProfile:
    """The profile to evaluate: the user's (a copy with the drawn shots) or a default one for --pipeline.

    Only ``tmp`` is written; the user's profile folder is read, never changed.
    """
    from inspector.profile import PIPELINES, ProductProfile, ProfileError, load_profile, save_profile

    try:
        if args.profile:
            base = load_profile_arg(args.profile)
            if shots is None:
                return base
            prof = base.model_copy(deep=True)
            prof.reference_shots = _copy_shots(shots, tmp)
        else:
            fields = {"pipeline": args.pipeline} if args.pipeline in PIPELINES else {}
            prof = ProductProfile(
                name=_profile_name(category),
                object=args.object or category.replace("_", " "),
                reference_shots=_copy_shots(shots, tmp) if shots else [],
                description=f"temporary profile of `inspector eval` on {category}",
                **fields,
            )
        save_profile(prof, tmp)
        return load_profile(tmp)
    except ProfileError as exc:
        raise UsageError(str(exc)) from exc
    except ValueError as exc:  # pydantic validation of --object
        raise UsageError(f"--object {args.object!r}: {exc}") from exc


def _progress_bar(total: int):  # noqa: ANN202 - tqdm type
    from tqdm import tqdm

    from inspector.evaluate.runner import PREPARE_SHARE

    bar = tqdm(total=total, unit="img", file=sys.stderr, desc="eval", disable=None)

    def progress(fraction: float, _message: str) -> None:
        done = round((fraction - PREPARE_SHARE) / (1 - PREPARE_SHARE) * total)
        if done > bar.n:
            bar.update(done - bar.n)

    return bar, progress


def run(args: argparse.Namespace) -> int:
    from inspector import __version__
    from inspector.evaluate.datasets import DatasetError, load_dataset
    from inspector.evaluate.metrics import AUPR_DEFINITION, DEFAULT_MAX_FPR
    from inspector.evaluate.report import format_table, write_json, write_report
    from inspector.evaluate.runner import EvalError, evaluate

    if args.object and not args.pipeline:
        raise UsageError("--object applies only with --pipeline (a profile names its own object)")
    if args.pipeline is not None:
        from inspector.detect import available_pipelines

        if args.pipeline not in available_pipelines():
            raise UsageError(f"unknown pipeline {args.pipeline!r}; choose one of {', '.join(available_pipelines())}")
    if args.eval_size is not None and args.eval_size < 8:
        raise UsageError(f"--eval-size must be at least 8 px, got {args.eval_size}")
    try:
        dataset = load_dataset(args.dataset, args.layout)
        if args.shots is None:  # the profile's own shots
            shots, test_set = None, dataset
        elif args.shots == 0:  # no reference shots, whatever the profile has: the pipeline's 0-shot mode
            shots, test_set = [], dataset
        else:
            shots, test_set = dataset.draw_shots(args.shots, args.seed)
    except DatasetError as exc:
        raise UsageError(str(exc)) from exc
    out = ensure_writable_dir(Path(args.out))
    print(test_set.summary(), file=sys.stderr)

    tmp = Path(tempfile.mkdtemp(prefix=".profile-", dir=out))
    try:
        profile = build_profile(args, dataset.category, shots, tmp)
        hub = make_hub(args)
        started = time.time()
        t0 = time.perf_counter()
        inspector = prepare_inspector(profile, hub, args.pipeline)
        prepare_seconds = time.perf_counter() - t0
        eval_size = args.eval_size or int(inspector.detector.default_eval_size)
        bar, progress = _progress_bar(len(test_set.samples))
        try:
            with bar:
                result = evaluate(
                    inspector, test_set, eval_size=eval_size, progress=progress,
                    save_maps_dir=out / "maps" if args.save_maps else None,
                )
        except EvalError as exc:
            raise UsageError(str(exc)) from exc
        except model_errors() as exc:
            raise UsageError(str(exc)) from exc
        run_doc = {
            "inspector_version": __version__,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
            "dataset": {"root": str(dataset.root), "category": dataset.category, "layout": dataset.layout,
                        "n_test_images": len(test_set.samples)},
            "profile": {"name": profile.name, "version": profile.version, "hash": profile.content_hash(),
                        "source": str(args.profile) if args.profile else None},
            "pipeline": inspector.pipeline,
            "shots": None if shots is None else [str(p) for p in shots],
            "seed": args.seed if shots is not None else None,
            "device": str(hub.device),
            "dtype": str(hub.dtype).replace("torch.", ""),
            "eval_size": result.eval_size,
            "aupro_max_fpr": DEFAULT_MAX_FPR,
            "image_aupr_definition": AUPR_DEFINITION,
            "n_failed": len(result.failed),
            "cancelled": result.cancelled,
            "prepare_seconds": round(prepare_seconds, 3),
            "evaluate_seconds": round(result.seconds, 3),
            "seconds_per_image": round(result.seconds / max(len(result.scored), 1), 4),
        }
        try:
            write_report(result, out)
            write_json(run_doc, out / "run.json")
            if getattr(args, "report", False):
                from inspector.evaluate.report import write_html_report

                write_html_report(result, out / "report.html", inspector=inspector, profile_version=profile.version)
        except OSError as exc:
            raise UsageError(f"cannot write the report to {exc.filename or out}: {exc.strerror or exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(format_table(result))
    print(f"results in {out}")
    for rec in result.failed:
        print(f"error: {rec.error}", file=sys.stderr)
    return EXIT_FAILED_INPUTS if result.failed else EXIT_OK
