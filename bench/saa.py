"""SAA+ per-image time by stage at the real architecture sizes (random weights), CPU by default.

Not a test. Builds GroundingDINO Swin-T OGC (groundingdino-py's config) with a random BERT-base
written to a temporary folder (no download), SAM ViT-B and timm WideResNet50-2 (layers 1-3), and
runs one SAA+ profile with 5 caption entries on a 1024² image in three ways, interleaved in one run:

* ``naive``    - the reference code's loop: GroundingDINO's own forward once per caption entry and
                 once for the object name (Swin backbone, BERT and fusion transformer every call);
* ``separate`` - Inspector, one caption row per entry: backbone once per image, text side once per
                 profile, fusion transformer batched over the rows;
* ``joint``    - Inspector's default: all entries and the object name in one caption, one fusion pass.

SAM (one embedding, the same capped number of box prompts) and the saliency CNN are the same code in
all three. Cost does not depend on weight values, so random weights measure the real cost.

Stage times are process CPU seconds by default (``--clock cpu``): on cores shared with other jobs,
wall time measures the neighbours as much as the code, while CPU time of a single-threaded run
(``--threads 1``, the default here) counts only the work done. Several threads make CPU time count
OpenMP spin-waiting too; use ``--clock wall --threads N`` on a quiet machine for latency. The load
average is printed with every run.

    .venv/bin/python bench/saa.py [--images 1] [--size 1024] [--threads 1] [--modes naive,separate,joint]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

import inspector.detect.saa.detector as saa_module
from inspector.detect.base import StageTimer
from inspector.detect.saa import SaaDetector
from inspector.models.grounding import GroundingPrediction, build_grounding_dino, load_config
from inspector.models.hub import ModelHub
from inspector.profile import ProductProfile

ENTRIES = ["broken part. contamination. white broken", "crack. hole"]  # + 3 class-agnostic = 5 entries
WORDS = ["defect", "damage", "flaw", "on", "bottle", "broken", "part", "contamination", "white", "crack", "hole"]


def random_bert_folder(folder: Path) -> Path:
    """BERT-base (random weights) with a 30522-entry vocabulary holding the prompt words."""
    from transformers import BertConfig, BertModel

    if not (folder / "config.json").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        BertModel(BertConfig()).save_pretrained(folder)
        vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "?"]
        vocab += WORDS
        vocab += [f"tok{i}" for i in range(30522 - len(vocab))]
        (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
        (folder / "tokenizer_config.json").write_text('{"do_lower_case": true}', encoding="utf-8")
    return folder


class NaiveSaa(SaaDetector):
    """SAA+ with the reference code's GroundingDINO loop (one full forward per caption)."""

    def _ground(self, image: np.ndarray, timer: StageTimer) -> GroundingPrediction:
        assert self.grounding is not None and self.text is not None and self.profile is not None
        p = self.profile.saa
        logits, boxes = [], []
        with timer("grounding_naive"):
            for caption in self.text.rows:
                out = self.grounding.forward_full(image, caption, p.grounding_short_side, p.grounding_max_size)
                logits.append(out.logits[0, :, : self.text.num_tokens])
                boxes.append(out.boxes[0])
        width = max(x.shape[1] for x in logits)
        logits = [np.pad(x, ((0, 0), (0, width - x.shape[1]))) for x in logits]
        return GroundingPrediction(np.stack(logits), np.stack(boxes))


class CpuStageTimer(StageTimer):
    """StageTimer counting this process's CPU seconds instead of wall seconds."""

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t0 = time.process_time()
        try:
            yield
        finally:
            self.timings[stage] = self.timings.get(stage, 0.0) + time.process_time() - t0


def build_hub(precision: str, bert: Path) -> ModelHub:
    import timm
    from segment_anything import sam_model_registry

    torch.manual_seed(0)
    hub = ModelHub(device="cpu", precision=precision)
    hub.provide("grounding", build_grounding_dino(load_config("GroundingDINO_SwinT_OGC"), bert))
    hub.provide("sam", sam_model_registry["vit_b"]())
    hub.provide("backbone", timm.create_model("wide_resnet50_2", pretrained=False, features_only=True,
                                              out_indices=(1, 2, 3)))
    return hub


def make_profile(mode: str) -> ProductProfile:
    return ProductProfile(
        name="bench_bottle", pipeline="saa", object="bottle",
        prompts={"class_specific": ENTRIES},
        properties={"max_area_ratio": 0.3, "top_k": 5},
        saa={"variant": "saa+", "caption_mode": "separate" if mode in ("naive", "separate") else "joint"},
    )


def run(args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clock == "cpu":
        saa_module.StageTimer = CpuStageTimer  # type: ignore[misc]  # this process only
    bert = random_bert_folder(Path(args.work) / "bert_base_random")
    hub = build_hub(args.precision, bert)
    detectors = {}
    for mode in args.modes:
        det = NaiveSaa() if mode == "naive" else SaaDetector()
        det.prepare(make_profile(mode), hub)
        detectors[mode] = det
    rng = np.random.default_rng(0)
    images = [(rng.random((args.size, args.size, 3)) * 255).astype(np.uint8) for _ in range(args.images)]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {hub.describe()}, stages in "
          f"{args.clock} seconds, "
          f"image {args.size}², entries {len(detectors[args.modes[0]].entries)} + object", flush=True)
    if args.warmup:
        t = time.perf_counter()
        detectors[args.modes[-1]].detect(images[0])
        print(f"warm-up ({args.modes[-1]}): {time.perf_counter() - t:.1f} s", flush=True)
    results: dict[str, list[dict]] = {m: [] for m in args.modes}
    for i, image in enumerate(images):
        for mode, det in detectors.items():
            load0 = os.getloadavg()[0]
            cpu0, t0 = time.process_time(), time.perf_counter()
            out = det.detect(image)
            wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            row = {"image": i, "wall_s": wall, "cpu_s": cpu, "load_avg": load0,
                   "stages": {k: v for k, v in out.timings.items() if k not in ("analyse", "finish")},
                   "boxes": len(out.extras["candidates"])}
            results[mode].append(row)
            print(f"image {i} {mode:9s} wall {wall:7.1f} s  cpu {cpu:7.1f} s  load {load0:5.1f}  "
                  + "  ".join(f"{k} {v:.2f}" for k, v in row["stages"].items()), flush=True)
    summary = {}
    for mode, rows in results.items():
        stages: dict[str, float] = {}
        for r in rows:
            for k, v in r["stages"].items():
                stages[k] = stages.get(k, 0.0) + v / len(rows)
        summary[mode] = {"wall_s": float(np.mean([r["wall_s"] for r in rows])),
                         "cpu_s": float(np.mean([r["cpu_s"] for r in rows])), "stages": stages}
    if "naive" in summary:
        for mode in summary:
            summary[mode]["ratio_to_naive"] = summary[mode]["wall_s"] / summary["naive"]["wall_s"]
            summary[mode]["cpu_ratio_to_naive"] = summary[mode]["cpu_s"] / summary["naive"]["cpu_s"]
    print("\nmode       wall s   cpu s   ratio(wall)  ratio(cpu)")
    for mode, s in summary.items():
        print(f"{mode:9s} {s['wall_s']:7.1f} {s['cpu_s']:7.1f}   {s.get('ratio_to_naive', float('nan')):9.3f}"
              f"   {s.get('cpu_ratio_to_naive', float('nan')):9.3f}")
    return {"summary": summary, "runs": results, "size": args.size, "precision": args.precision,
            "threads": torch.get_num_threads(), "clock": args.clock}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="SAA+ stage timing: reference-style loop vs Inspector")
    parser.add_argument("--images", type=int, default=1)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--modes", type=lambda s: s.split(","), default=["naive", "separate", "joint"])
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "auto"])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--clock", default="cpu", choices=["cpu", "wall"], help="what the stage times count")
    parser.add_argument("--no-warmup", dest="warmup", action="store_false")
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "inspector_bench_saa"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    out = run(args)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
