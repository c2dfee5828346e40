"""``inspector demo``: the synthetic demo product line, in the station or headless.

``inspector demo`` generates the demo line on first use (see :mod:`inspector.demo`) and opens the
station on one category (``--category``, default ``pcb``) with its ``demo_<cat>`` profile. Without
a display (no ``DISPLAY``/``WAYLAND_DISPLAY`` and ``QT_QPA_PLATFORM`` unset) or without the station
module it says so and runs headless instead.

``inspector demo --headless`` runs every test image of every category through
:meth:`inspector.inspection.Inspector.inspect` and prints the PASS/FAIL confusion against the
ground truth per category. ``inspector demo --write-profiles [DIR]`` (re)writes the
``demo_<cat>`` profile folders (default: the packaged ``product_profiles``) and exits.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

from inspector.commands.common import EXIT_FAILED_INPUTS, EXIT_OK, UsageError, has_display

SMALL_COUNTS = {"n_train": 4, "n_test_good": 2, "n_per_defect": 1}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="open the station on the synthetic demo line (generated on first use)",
        description="Generate the synthetic demo product line (fabric, washer, pcb) if missing and inspect it.",
    )
    p.add_argument("--headless", action="store_true",
                   help="no window: inspect every test image and print PASS/FAIL against the ground truth")
    p.add_argument("--category", default="pcb", help="category the station opens (fabric, washer, pcb)")
    p.add_argument("--categories", nargs="+", default=None, help="headless: categories to run (default: all)")
    p.add_argument("--root", type=Path, default=None, help="demo line folder (default: next to the cache)")
    p.add_argument("--seed", type=int, default=0, help="generator seed (default 0, the packaged profiles' line)")
    p.add_argument("--small", action="store_true", help="generate a small line (1 image per defect type)")
    p.add_argument("--regenerate", action="store_true", help="write the line again even if it is current")
    p.add_argument("--profiles", type=Path, default=None,
                   help="folder holding the demo_<cat> profiles (default: the packaged product_profiles)")
    p.add_argument("--write-profiles", nargs="?", const="", default=None, metavar="DIR",
                   help="(re)write the demo_<cat> profile folders into DIR (default: packaged product_profiles)")
    p.set_defaults(func=run)


def _line(args: argparse.Namespace) -> Path:
    from inspector import demo

    counts = SMALL_COUNTS if args.small else {}
    root = args.root if args.root is not None else demo.default_demo_root()
    if args.regenerate or not demo.is_current(root, args.seed, **counts):
        print(f"generating the demo line in {root} ...", file=sys.stderr)
        try:
            demo.generate_demo_line(root, args.seed, **counts)
        except OSError as exc:
            raise UsageError(f"cannot write the demo line to {root}: {exc}; pass --root DIR") from exc
    return Path(root)


def _profiles_dir(args: argparse.Namespace, line: Path) -> Path:
    """The folder with demo_<cat> profiles: --profiles, the packaged ones, else written next to the line."""
    from inspector import demo
    from inspector.settings import packaged_profiles_dir

    if args.profiles is not None:
        return args.profiles
    packaged = packaged_profiles_dir()
    if all((packaged / f"demo_{c}" / "profile.yaml").is_file() for c in demo.CATEGORIES):
        return packaged
    target = line / "profiles"
    if not all((target / f"demo_{c}" / "profile.yaml").is_file() for c in demo.CATEGORIES):
        demo.write_demo_profiles(target)
    return target


def _write_profiles(args: argparse.Namespace) -> int:
    from inspector import demo
    from inspector.settings import packaged_profiles_dir

    dest = Path(args.write_profiles) if args.write_profiles else packaged_profiles_dir()
    try:
        written = demo.write_demo_profiles(dest)
    except OSError as exc:
        raise UsageError(f"cannot write demo profiles to {dest}: {exc}") from exc
    for path in written:
        print(path)
    return EXIT_OK


def run_headless(line: Path, profiles: Path, categories: list[str]) -> int:
    """Inspect every test image; print a PASS/FAIL × good/defect table per category. 0 unless an image failed."""
    from inspector.imaging import ImageReadError, list_images, read_image
    from inspector.inspection import Inspector
    from inspector.models.hub import ModelHub
    from inspector.profile import ProfileError, load_profile

    hub = ModelHub(device="cpu", precision="fp32")  # the demo pipeline needs no network
    failures = 0
    print(f"{'category':10s} {'truth':7s} {'PASS':>5s} {'FAIL':>5s}   accuracy   ms/image")
    for cat in categories:
        try:
            profile = load_profile(profiles / f"demo_{cat}")
        except ProfileError as exc:
            raise UsageError(str(exc)) from exc
        inspector = Inspector(profile, hub)
        inspector.prepare()
        table = {"good": {"PASS": 0, "FAIL": 0}, "defect": {"PASS": 0, "FAIL": 0}}
        seconds = []
        for sub in sorted(p for p in (line / cat / "test").iterdir() if p.is_dir()):
            truth = "good" if sub.name == "good" else "defect"
            for path in list_images(sub):
                try:
                    image = read_image(path)
                except ImageReadError as exc:
                    print(f"error: {exc}", file=sys.stderr)
                    failures += 1
                    continue
                t0 = time.perf_counter()
                verdict = inspector.inspect(image, image_path=path).verdict
                seconds.append(time.perf_counter() - t0)
                table[truth][verdict] += 1
        total = sum(sum(row.values()) for row in table.values())
        right = table["good"]["PASS"] + table["defect"]["FAIL"]
        ms = 1000 * sum(seconds) / max(len(seconds), 1)
        for truth, row in table.items():
            tail = f"   {right}/{total} = {right / max(total, 1):.0%}   {ms:6.0f}" if truth == "good" else ""
            print(f"{cat:10s} {truth:7s} {row['PASS']:5d} {row['FAIL']:5d}{tail}")
    return EXIT_FAILED_INPUTS if failures else EXIT_OK


def run(args: argparse.Namespace) -> int:
    from inspector import demo

    if args.write_profiles is not None:
        return _write_profiles(args)
    cats = args.categories or list(demo.CATEGORIES)
    unknown = [c for c in [*cats, args.category] if c not in demo.CATEGORIES]
    if unknown:
        raise UsageError(f"unknown demo category {unknown[0]!r}; choose from {', '.join(demo.CATEGORIES)}")
    line = _line(args)
    profiles = _profiles_dir(args, line)
    if not args.headless:
        if not has_display():
            print("no display (DISPLAY/WAYLAND_DISPLAY unset, QT_QPA_PLATFORM unset); running headless",
                  file=sys.stderr)
        else:
            try:  # dynamic: the command line never imports Qt itself
                app = importlib.import_module("inspector.ui.app")
            except ImportError as exc:
                print(f"the station is not available ({exc}); running headless", file=sys.stderr)
            else:
                return int(app.run_station(profile=profiles / f"demo_{args.category}",
                                           source=line / args.category / "test"))
    return run_headless(line, profiles, cats)
