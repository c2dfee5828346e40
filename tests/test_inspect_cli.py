"""``inspector inspect`` end to end: outputs per image, bad inputs, collisions, usage errors."""

from __future__ import annotations

import csv
import errno
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from inspector.cli import main
from inspector.commands import inspect as inspect_cmd
from inspector.files import file_sha256
from inspector.imaging import read_image, write_png
from inspector.profile import ProductProfile, save_profile
from tests.support.cli_env import cli_settings_env  # noqa: F401 - autouse fixture
from tests.support.diff_detector import refdiff  # noqa: F401 - fixture
from tests.support.tiny_datasets import defect_image, good_image

HAS_VARIATION = importlib.util.find_spec("inspector.detect.variation") is not None


@pytest.fixture
def scene(tmp_path: Path) -> dict[str, Path]:
    """A profile with 3 good references, and images: two good, one with a bright square."""
    rng = np.random.default_rng(0)
    prof = tmp_path / "prof"
    rel = []
    for i in range(3):
        write_png(prof / "references" / f"r{i}.png", good_image(rng))
        rel.append(f"references/r{i}.png")
    p = ProductProfile(name="widget", object="widget", pipeline="variation", reference_shots=rel)
    p.decision.image_threshold = 0.3
    p.variation.working_size = 64
    save_profile(p, prof)
    imgs = tmp_path / "imgs"
    write_png(imgs / "good_a.png", good_image(rng))
    write_png(imgs / "good_b.png", good_image(rng))
    bad, mask = defect_image(rng, "bright")
    write_png(imgs / "bad.png", bad)
    np.save(tmp_path / "bad_mask.npy", mask > 0)
    return {"profile": prof, "images": imgs, "mask": tmp_path / "bad_mask.npy", "root": tmp_path}


def _run(*argv: str) -> int:
    return main(["inspect", *argv])


def test_inspect_writes_json_heatmap_and_overlay(scene: dict[str, Path], refdiff: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    name = refdiff
    out = scene["root"] / "out"
    assert _run("--profile", str(scene["profile"]), "--pipeline", name, str(scene["images"]), "--out", str(out)) == 0
    docs = {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}
    assert set(docs) == {"good_a", "good_b", "bad"}
    bad = docs["bad"]
    assert bad["verdict"] == "FAIL" and bad["error"] is None and bad["pipeline"] == name
    assert bad["image_sha256"] == file_sha256(scene["images"] / "bad.png")
    assert bad["image_path"] == str(scene["images"] / "bad.png")
    assert bad["profile"]["name"] == "widget" and bad["profile"]["version"] == 1
    assert bad["image_score"] > 0.4 and set(bad["timings"]) >= {"analyse", "finish"}
    assert bad["image_size"] == [64, 64]
    # the biggest region is the pasted square
    ys, xs = np.nonzero(np.load(scene["mask"]))
    x0, y0, x1, y1 = bad["regions"][0]["box"]
    assert abs(x0 - xs.min()) <= 3 and abs(y0 - ys.min()) <= 3 and abs(x1 - xs.max() - 1) <= 3
    assert {"box", "score", "label", "area_px"} <= set(bad["regions"][0])
    assert docs["good_a"]["verdict"] == "PASS" and docs["good_b"]["verdict"] == "PASS"
    for stem in docs:
        heat = read_image(out / f"{stem}_heatmap.png")
        over = read_image(out / f"{stem}_overlay.png")
        assert heat.shape == over.shape == (64, 64, 3)
    # the overlay shows something where the defect is: red contour / heat differs from the plain image
    over = read_image(out / "bad_overlay.png").astype(int)
    plain = read_image(scene["images"] / "bad.png").astype(int)
    assert np.abs(over - plain).max() > 50
    stdout = capsys.readouterr().out
    assert "FAIL" in stdout and "2 PASS, 1 FAIL, 0 failed" in stdout


def test_corrupt_input_is_reported_and_the_rest_still_run(scene: dict[str, Path], refdiff: str,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    name = refdiff
    (scene["images"] / "zz_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 64)  # truncated JPEG
    out = scene["root"] / "out"
    rc = _run("--profile", str(scene["profile"]), "--pipeline", name, str(scene["images"]),
              str(scene["root"] / "missing.png"), "--out", str(out))
    assert rc == 1
    broken = json.loads((out / "zz_broken.json").read_text())
    assert "truncated JPEG" in broken["error"] and broken["verdict"] is None
    assert broken["image_sha256"] == file_sha256(scene["images"] / "zz_broken.jpg")
    missing = json.loads((out / "missing.json").read_text())
    with open(out / "inspect_summary.csv", newline="") as fh:
        rows = {r["stem"]: r for r in csv.DictReader(fh)}
    assert "truncated JPEG" in rows["zz_broken"]["error"] and rows["bad"]["verdict"] == "FAIL"
    assert "file not found" in missing["error"]
    assert not (out / "zz_broken_overlay.png").exists()
    for stem in ("good_a", "good_b", "bad"):
        assert json.loads((out / f"{stem}.json").read_text())["error"] is None
        assert (out / f"{stem}_overlay.png").is_file()
    err = capsys.readouterr().err
    assert "zz_broken.jpg" in err and "missing.png" in err


def test_same_file_name_in_two_folders_does_not_overwrite(scene: dict[str, Path], refdiff: str) -> None:
    name = refdiff
    rng = np.random.default_rng(1)
    a, b = scene["root"] / "a", scene["root"] / "b"
    write_png(a / "x.png", good_image(rng))
    write_png(b / "x.png", defect_image(rng, "dark")[0])
    out = scene["root"] / "out"
    assert _run("--profile", str(scene["profile"]), "--pipeline", name, str(a / "x.png"), str(b / "*.png"),
                str(b / "x.png"), "--out", str(out)) == 0
    docs = {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}
    assert set(docs) == {"a_x", "b_x"}  # b/x.png given twice is inspected once
    assert docs["a_x"]["image_path"] == str(a / "x.png") and docs["a_x"]["verdict"] == "PASS"
    assert docs["b_x"]["image_path"] == str(b / "x.png") and docs["b_x"]["verdict"] == "FAIL"
    with open(out / "inspect_summary.csv", newline="") as fh:
        rows = {r["stem"]: r for r in csv.DictReader(fh)}
    assert rows["b_x"]["verdict"] == "FAIL" and rows["a_x"]["image_path"] == str(a / "x.png")


def test_output_stems_never_hit_an_input(tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    paths = [folder / "p.png", folder / "p_overlay.png", tmp_path / "other" / "p.png"]
    stems = inspect_cmd.output_stems(paths, folder)  # --out is the input folder
    # the two p.png get their folder as prefix
    assert stems == ["imgs_p", "p_overlay", "other_p"]
    # q's overlay would be written over the input q_overlay.png: q is numbered instead
    assert inspect_cmd.output_stems([folder / "q.png", folder / "q_overlay.png"], folder) == ["q_2", "q_overlay"]
    for stem in stems:
        for f in inspect_cmd.output_names(stem).values():
            assert folder / f not in paths


def test_usage_errors_exit_2(scene: dict[str, Path], refdiff: str,
                             capsys: pytest.CaptureFixture[str]) -> None:
    name = refdiff
    out = str(scene["root"] / "out")
    imgs = str(scene["images"])
    # broken profile
    broken = scene["root"] / "broken"
    broken.mkdir()
    (broken / "profile.yaml").write_text("name: w\nproperties:\n  max_area_ratio: 3\n")
    assert _run("--profile", str(broken), imgs, "--out", out) == 2
    assert "properties.max_area_ratio: must be in (0, 1], got 3" in capsys.readouterr().err
    # unknown pipeline
    assert _run("--profile", str(scene["profile"]), "--pipeline", "nosuch", imgs, "--out", out) == 2
    assert "unknown pipeline 'nosuch'" in capsys.readouterr().err
    # nothing to inspect
    assert _run("--profile", str(scene["profile"]), str(scene["root"] / "*.tif"), "--out", out) == 2
    assert "no input images" in capsys.readouterr().err
    # output folder cannot be created (its parent is a file)
    blocker = scene["root"] / "blocker"
    blocker.write_text("x")
    assert _run("--profile", str(scene["profile"]), "--pipeline", name, imgs, "--out", str(blocker / "o")) == 2
    assert "cannot write to output folder" in capsys.readouterr().err


def test_missing_weights_exit_2(scene: dict[str, Path], refdiff: str, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    """A detector whose weights are not installed: the store's message, exit 2, nothing written."""
    from inspector.models.store import ModelMissingError

    name = refdiff
    from tests.support import diff_detector

    def no_weights(self, profile, hub, progress=None):  # noqa: ANN001
        raise ModelMissingError("clip_vit_b16_plus_240", Path("/models/clip_vit_b16_plus_240/w.pt"))

    monkeypatch.setattr(diff_detector.RefDiffDetector, "prepare", no_weights)
    out = scene["root"] / "out"
    assert _run("--profile", str(scene["profile"]), "--pipeline", name, str(scene["images"]), "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert "'clip_vit_b16_plus_240' is not installed" in err and "Traceback" not in err
    assert not list(out.glob("*.json"))


def test_disk_full_is_a_clear_error(scene: dict[str, Path], refdiff: str, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    name = refdiff
    out = scene["root"] / "out"

    def full(path, rgb):  # noqa: ANN001
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr("inspector.imaging.write_png", full)
    assert _run("--profile", str(scene["profile"]), "--pipeline", name, str(scene["images"]), "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "choose another --out" in err


@pytest.mark.skipif(not HAS_VARIATION, reason="inspector.detect.variation not written yet")
def test_inspect_with_the_real_variation_pipeline(scene: dict[str, Path]) -> None:
    out = scene["root"] / "out"
    assert _run("--profile", str(scene["profile"]), str(scene["images"] / "*.png"), "--out", str(out)) == 0
    docs = {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}
    assert set(docs) == {"good_a", "good_b", "bad"}
    assert all(d["pipeline"] == "variation" and d["error"] is None for d in docs.values())
    assert docs["bad"]["image_score"] > max(docs["good_a"]["image_score"], docs["good_b"]["image_score"])
    assert docs["bad"]["verdict"] == "FAIL"
    assert (out / "bad_overlay.png").is_file() and (out / "bad_heatmap.png").is_file()


# ------------------------------------------------------------------------------ issue 16 items 8, 9
def _run_with_deadline(argv: list[str], seconds: float) -> int:
    """Run the CLI in a thread; fail (instead of hanging the suite) if it does not return in time."""
    import threading

    result: list[object] = []

    def go() -> None:
        try:
            result.append(_run(*argv))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            result.append(exc)

    t = threading.Thread(target=go, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"inspect did not return within {seconds} s"
    assert isinstance(result[0], int), result[0]
    return result[0]


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="needs mkfifo")
def test_fifo_input_is_a_per_file_error_not_a_hang(scene: dict[str, Path], refdiff: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    import os

    name = refdiff
    fifo = scene["root"] / "x.png"
    os.mkfifo(fifo)
    out = scene["root"] / "out"
    rc = _run_with_deadline(["--profile", str(scene["profile"]), "--pipeline", name, str(fifo),
                             str(scene["images"] / "bad.png"), "--out", str(out)], 60)
    assert rc == 1
    doc = json.loads((out / "x.json").read_text())
    assert doc["error"] and "FIFO" in doc["error"] and doc["image_sha256"] is None
    assert json.loads((out / "bad.json").read_text())["verdict"] == "FAIL"  # the rest still ran
    assert "FIFO" in capsys.readouterr().err


def test_symlink_loop_input_is_a_per_file_error(scene: dict[str, Path], refdiff: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    name = refdiff
    loop = scene["root"] / "loop.png"
    loop.symlink_to(loop.name)
    out = scene["root"] / "out"
    rc = _run("--profile", str(scene["profile"]), "--pipeline", name, str(loop), str(scene["images"]),
              "--out", str(out))
    assert rc == 1
    doc = json.loads((out / "loop.json").read_text())
    assert "symbolic link loop" in doc["error"]
    assert {p.stem for p in out.glob("*.json")} == {"loop", "good_a", "good_b", "bad"}
    with open(out / "inspect_summary.csv", newline="") as fh:
        rows = {Path(r["image_path"]).name: r for r in csv.DictReader(fh)}
    assert rows["loop.png"]["error"] and rows["bad.png"]["verdict"] == "FAIL"


def test_symlink_loop_in_a_glob_or_folder_is_skipped_not_fatal(scene: dict[str, Path]) -> None:
    loop = scene["images"] / "zz.png"
    loop.symlink_to(loop.name)
    paths, unmatched = inspect_cmd.collect_inputs([str(scene["images"]), str(scene["images"] / "*.png")])
    assert sorted(p.name for p in paths) == ["bad.png", "good_a.png", "good_b.png"] and unmatched == []
    assert inspect_cmd.output_stems([loop], scene["root"] / "out") == ["zz"]
