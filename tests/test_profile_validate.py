"""`inspector profile validate` refuses every profile that cannot run, one test per kind of problem.

Each finding is ``file: field.path: reason``; legal but suspicious values are warnings (exit 0).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from inspector.cli import EXIT_OK, EXIT_USAGE, main
from inspector.imaging import write_png
from inspector.profile import PROFILE_FILE, ProfileError, check_profile, load_profile, parse_profile_text
from tests.support.cli_env import cli_settings_env  # noqa: F401 - autouse fixture

SHOTS = ("references/a.png", "references/b.png")


def _profile(tmp_path: Path, **fields: object) -> dict:
    data = {"name": "gear", "object": "gear", "pipeline": "variation", "reference_shots": list(SHOTS)}
    data.update(fields)
    return data


def _write(tmp_path: Path, data: dict | str, shots: tuple[str, ...] = SHOTS) -> Path:
    folder = tmp_path / "gear"
    folder.mkdir(parents=True, exist_ok=True)
    for rel in shots:
        write_png(folder / rel, np.full((16, 16, 3), 120, np.uint8))
    text = data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False)
    (folder / PROFILE_FILE).write_text(text, encoding="utf-8")
    return folder


def _validate(folder: Path | str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["profile", "validate", str(folder)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_good_profile_is_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _validate(_write(tmp_path, _profile(tmp_path)), capsys)
    assert code == EXIT_OK, err
    assert "OK      gear v1 (variation, 2 reference shots)" in out
    assert "WARNING" not in err


def test_corrupt_reference_shot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _write(tmp_path, _profile(tmp_path))
    (folder / SHOTS[1]).write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)  # a truncated PNG
    code, out, err = _validate(folder, capsys)
    assert code == EXIT_USAGE and "OK" not in out
    assert "INVALID gear/profile.yaml: reference_shots.1: 'references/b.png' is not a readable image" in err


def test_reference_shot_that_is_not_an_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _write(tmp_path, _profile(tmp_path, reference_shots=[SHOTS[0], "references/notes.png"]))
    (folder / "references" / "notes.png").write_text("shift notes, not a picture\n")
    code, _out, err = _validate(folder, capsys)
    assert code == EXIT_USAGE
    assert "INVALID gear/profile.yaml: reference_shots.1: 'references/notes.png' is not a readable image" in err


def test_empty_reference_list_for_a_pipeline_that_needs_shots(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = _validate(_write(tmp_path, _profile(tmp_path, reference_shots=[]), shots=()), capsys)
    assert code == EXIT_USAGE
    assert ("INVALID gear/profile.yaml: reference_shots: the variation pipeline needs at least 1 reference "
            "shot(s), got 0") in err
    # a zero-shot pipeline may have none
    code, _out, err = _validate(_write(tmp_path, _profile(tmp_path, pipeline="fade", reference_shots=[]),
                                       shots=()), capsys)
    assert code == EXIT_OK, err


def test_unknown_model_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _write(tmp_path, _profile(tmp_path, pipeline="saa", models={"sam": "sam_vit_z"}))
    code, _out, err = _validate(folder, capsys)
    assert code == EXIT_USAGE
    assert "INVALID gear/profile.yaml: models.sam: unknown model key 'sam_vit_z'; known sam models: sam_vit_b" in err


def test_model_key_of_the_wrong_kind(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _write(tmp_path, _profile(tmp_path, pipeline="fade", models={"clip": "sam_vit_b"}))
    code, _out, err = _validate(folder, capsys)
    assert code == EXIT_USAGE
    assert "models.clip: 'sam_vit_b' is a sam model, not a clip model" in err


def test_unknown_key_of_a_model_the_pipeline_does_not_load_is_a_warning(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = _validate(_write(tmp_path, _profile(tmp_path, models={"grounding": "dino_typo"})), capsys)
    assert code == EXIT_OK
    assert "WARNING gear/profile.yaml: models.grounding: unknown model key 'dino_typo'" in err


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", "1.5", "-5"])
def test_image_threshold_that_disables_inspection(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  value: str) -> None:
    text = yaml.safe_dump(_profile(tmp_path), sort_keys=False) + f"decision:\n  image_threshold: {value}\n"
    code, out, err = _validate(_write(tmp_path, text), capsys)
    assert code == EXIT_USAGE and "OK" not in out
    assert "INVALID gear/profile.yaml: decision.image_threshold: must be a number in [0, 1] (scores are 0..1)" in err


def test_huge_min_defect_area(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = yaml.safe_dump(_profile(tmp_path), sort_keys=False) + "decision:\n  min_defect_area_px: 1.0e+29\n"
    code, _out, err = _validate(_write(tmp_path, text), capsys)
    assert code == EXIT_USAGE
    assert "INVALID gear/profile.yaml: decision.min_defect_area_px: must be at most 16777216 px" in err
    # written the way people type it (PyYAML reads 1e29 as text)
    text = yaml.safe_dump(_profile(tmp_path), sort_keys=False) + "decision:\n  min_defect_area_px: 1e29\n"
    code, _out, err = _validate(_write(tmp_path, text), capsys)
    assert code == EXIT_USAGE
    assert "decision.min_defect_area_px: must be a whole number, got '1e29'" in err


def test_deep_nesting_is_a_field_error_not_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    depth = 5000  # far beyond Python's recursion limit for a recursive YAML composer
    text = yaml.safe_dump(_profile(tmp_path), sort_keys=False) + "roi: " + "[" * depth + "]" * depth + "\n"
    code, _out, err = _validate(_write(tmp_path, text), capsys)
    assert code == EXIT_USAGE
    assert "INVALID gear/profile.yaml: roi.0.0.0.0.0.0.0: nested more than 8 levels deep" in err
    assert "Traceback" not in err


def test_nul_byte_in_a_reference_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = yaml.safe_dump(_profile(tmp_path, reference_shots=["references/a.png", "references/b\0.png"]))
    code, _out, err = _validate(_write(tmp_path, text), capsys)
    assert code == EXIT_USAGE
    assert "INVALID gear/profile.yaml: reference_shots: reference shot 'references/b\\x00.png' contains a " \
           "control character" in err


def test_nul_byte_in_the_profile_path_argument(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = _validate(str(tmp_path / "ge\0ar"), capsys)
    assert code == EXIT_USAGE
    assert "the path contains a NUL byte" in err


@pytest.mark.parametrize("text, where", [
    ("name: gear\nobject: gear\nname: gear2\n", "name: duplicate key 'name' (line 3; first given on line 1)"),
    ("name: gear\ndecision:\n  image_threshold: 0.5\n  min_defect_area_px: 3\n  image_threshold: 0.9\n",
     "decision.image_threshold: duplicate key 'image_threshold' (line 5; first given on line 3)"),
])
def test_duplicate_yaml_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, where: str) -> None:
    code, _out, err = _validate(_write(tmp_path, text), capsys)
    assert code == EXIT_USAGE
    assert f"INVALID gear/profile.yaml: {where}; keep one of them" in err


@pytest.mark.parametrize("decision, field, says", [
    ({"image_threshold": 0.99}, "decision.image_threshold", "passes almost every part"),
    ({"image_threshold": 0.0}, "decision.image_threshold", "fails almost every part"),
    ({"min_defect_area_px": 200_000}, "decision.min_defect_area_px", "hides every defect smaller"),
    ({"image_threshold": 0.4, "pixel_threshold": 0.7}, "decision.pixel_threshold", "above the image threshold"),
])
def test_suspicious_but_legal_values_warn(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          decision: dict, field: str, says: str) -> None:
    code, out, err = _validate(_write(tmp_path, _profile(tmp_path, decision=decision)), capsys)
    assert code == EXIT_OK and "OK      gear" in out
    assert f"WARNING gear/profile.yaml: {field}: " in err and says in err


def test_editor_and_validate_share_one_parser(tmp_path: Path) -> None:
    """Loading (what `inspect` and the station do) refuses the same files with the same text."""
    with pytest.raises(ProfileError, match=r"g/profile.yaml: a: duplicate key 'a'"):
        parse_profile_text("a: 1\na: 2\n", "g/profile.yaml")
    folder = _write(tmp_path, yaml.safe_dump(_profile(tmp_path)) + "decision: {image_threshold: .inf}\n")
    with pytest.raises(ProfileError, match=r"decision.image_threshold: must be a number in \[0, 1\]"):
        load_profile(folder)
    prof = load_profile(_write(tmp_path, _profile(tmp_path)))
    (prof.folder / SHOTS[0]).write_bytes(b"GIF89a but not really")
    errors = [p for p in check_profile(prof) if p.severity == "error"]
    assert [p.path for p in errors] == ["reference_shots.0"]
