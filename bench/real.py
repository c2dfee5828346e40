"""`inspector eval` figures on the real development sets and the demo line, patchcore beside variation.

    .venv/bin/python bench/real.py                              # everything (long: ~1 h on 2 busy cores)
    .venv/bin/python bench/real.py --shots 4 --sets ball_screw demo
    .venv/bin/python bench/real.py --pipelines patchcore --shots 1 2 4 8

Every figure is what ``inspector eval --pipeline P --layout mvtec --shots K --seed S`` writes to
metrics.json (the pipeline's defaults, no profile; ``--shots 0``: no reference shot, the 0-shot mode). Sets: ``ball_screw``
(``../shared/data/real/bsdata/ball_screw``; also scored with pixel metrics at 512 px, its native
long side), ``deeppcb`` (mean of its 7 boards, a stress set), ``demo`` (the three demo-line
categories, generated if missing). Prints one markdown table; ``--json`` keeps every row.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data" / "real"
KEYS = ("image_auroc", "pixel_auroc", "pixel_aupro", "pixel_ap")


def categories(name: str, demo_root: Path) -> list[Path]:
    if name == "ball_screw":
        return [SHARED / "bsdata" / "ball_screw"]
    if name == "deeppcb":
        return sorted(p for p in (SHARED / "deeppcb").iterdir() if (p / "test").is_dir())
    if name == "demo":
        from inspector.demo import demo_line_dir

        root = demo_line_dir(demo_root)
        return [root / c for c in ("fabric", "washer", "pcb")]
    raise SystemExit(f"unknown set {name!r}")


def run_eval(dataset: Path, pipeline: str, shots: int, seed: int, eval_size: int | None) -> dict:
    from inspector.cli import main as cli

    with tempfile.TemporaryDirectory(prefix="bench-real-") as out:
        argv = ["eval", "--dataset", str(dataset), "--layout", "mvtec", "--pipeline", pipeline,
                "--shots", str(shots), "--seed", str(seed), "--out", out]
        if eval_size:
            argv += ["--eval-size", str(eval_size)]
        t0 = time.perf_counter()
        rc = cli(argv)
        if rc != 0:
            raise RuntimeError(f"inspector eval failed ({rc}) on {dataset}")
        metrics = json.loads((Path(out) / "metrics.json").read_text())
        metrics["wall_s"] = time.perf_counter() - t0
        return metrics


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="*", default=["ball_screw", "deeppcb", "demo"])
    ap.add_argument("--pipelines", nargs="*", default=["patchcore", "variation"])
    ap.add_argument("--shots", nargs="*", type=int, default=[0, 1, 2, 4, 8], help="0: no reference shots (0-shot)")
    ap.add_argument("--native-shots", nargs="*", type=int, default=[1, 2, 4, 8],
                    help="shot counts at which ball_screw is also scored at 512 px, its native long side")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--demo-root", type=Path, default=Path(tempfile.gettempdir()) / "inspector-bench-demo-line")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rows = []
    print("| set | category | pipeline | shots | image AUROC | pixel AUROC | AUPRO | pixel AP | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for set_name in args.sets:
        cats = categories(set_name, args.demo_root)
        for pipeline in args.pipelines:
            for k in args.shots:
                per = []
                for cat in cats:
                    sizes = [None, 512] if set_name == "ball_screw" and k in args.native_shots else [None]
                    for size in sizes:
                        try:
                            m = run_eval(cat, pipeline, k, args.seed, size)
                        except RuntimeError:
                            if k != 0:
                                raise
                            print(f"| {set_name} | {cat.name} | {pipeline} | 0 | no 0-shot mode | | | | |", flush=True)
                            break
                        row = {"set": set_name, "category": cat.name + (f" @{size}px" if size else ""),
                               "pipeline": pipeline, "shots": k, **{key: m.get(key) for key in KEYS},
                               "wall_s": round(m["wall_s"], 1)}
                        rows.append(row)
                        if size is None:
                            per.append(row)
                        print(f"| {set_name} | {row['category']} | {pipeline} | {k} | "
                              + " | ".join(f"{row[key]:.3f}" for key in KEYS) + f" | {row['wall_s']} |", flush=True)
                if len(per) > 1:
                    mean = {key: statistics.mean(r[key] for r in per) for key in KEYS}
                    print(f"| {set_name} | **mean of {len(per)}** | {pipeline} | {k} | "
                          + " | ".join(f"{mean[key]:.3f}" for key in KEYS) + " | |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
