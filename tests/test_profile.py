"""Product profiles: validation errors say file, field and reason; save/load/versions; the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from inspector.cli import EXIT_OK, EXIT_USAGE, main
from inspector.imaging import write_png
from inspector.profile import (
    PROFILE_FILE,
    ProductProfile,
    ProfileError,
    list_profiles,
    load_profile,
    load_profile_version,
    new_profile,
    profile_from_dict,
    save_profile,
)


def _write(folder: Path, data: object, shots: tuple[str, ...] = ()) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for rel in shots:
        write_png(folder / rel, np.full((8, 8, 3), 128, np.uint8))
    text = data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False)
    (folder / PROFILE_FILE).write_text(text, encoding="utf-8")
    return folder


GOOD = {
    "name": "bottle",
    "object": "bottle",
    "pipeline": "fade",
    "author": "qa",
    "prompts": {"class_specific": ["broken large", "contamination"]},
    "properties": {"max_area_ratio": 0.3, "top_k": 3},
    "image_scales": [240, 448],
    "reference_shots": ["references/good_1.png", "references/good_2.png"],
    "decision": {"image_threshold": 0.6, "min_defect_area_px": 20},
}


def test_good_profile_loads(tmp_path: Path) -> None:
    folder = _write(tmp_path / "bottle", GOOD, shots=("references/good_1.png", "references/good_2.png"))
    p = load_profile(folder)
    assert (p.name, p.pipeline, p.version, p.object) == ("bottle", "fade", 1, "bottle")
    assert p.properties.max_area_ratio == 0.3 and p.decision.region_threshold == 0.6
    root = folder.resolve()
    assert p.reference_paths() == [root / "references/good_1.png", root / "references/good_2.png"]
    assert p.fill("scratch on {object}") == "scratch on bottle"
    assert load_profile(folder / PROFILE_FILE).content_hash() == p.content_hash()  # folder or file


def _error(tmp_path: Path, data: object, shots: tuple[str, ...] = ()) -> str:
    folder = _write(tmp_path / "bottle", data, shots)
    with pytest.raises(ProfileError) as err:
        load_profile(folder)
    return str(err.value)


def test_bad_range_message_is_exact(tmp_path: Path) -> None:
    msg = _error(tmp_path, {"name": "bottle", "properties": {"max_area_ratio": 3}})
    assert msg == "bottle/profile.yaml: properties.max_area_ratio: must be in (0, 1], got 3"


@pytest.mark.parametrize(
    "data, expected",
    [
        ({"name": "bottle", "colour": "green"}, "bottle/profile.yaml: colour: unknown key"),
        ({"name": "bottle", "prompts": {"clas_specific": ["x"]}}, "prompts.clas_specific: unknown key"),
        ({"name": "bottle", "fade": {"zero_shot_vision_gain": -1}}, "fade.zero_shot_vision_gain"),
        ({"name": "bottle", "pipeline": "magic"}, "pipeline: unknown pipeline 'magic'; choose one of patchcore, fade, saa"),
        ({"name": "bottle", "properties": {"min_iou_with_object": 1.5}}, "must be in [0, 1], got 1.5"),
        ({"name": "bottle", "properties": {"top_k": 0}}, "properties.top_k: must be a positive integer, got 0"),
        ({"name": "bottle", "image_scales": [16]}, "image_scales: scales must be in [32, 2048] px"),
        ({"name": "bad name!"}, "name: must be 1-64 letters"),
        ({"name": "bottle", "version": 0}, "version: must be >= 1, got 0"),
        ({"name": "bottle", "roi": [[0, 0], [1, 1]]}, "roi: a polygon needs at least 3 points"),
        ({"name": "bottle", "reason_codes": ["scratch", "scratch"]}, "reason codes must be unique"),
        ({"name": "bottle", "prompts": {"class_specific": ["ok", "  "]}}, "must not contain empty prompts"),
        ({"object": "bottle"}, "name: required field missing; add it"),
    ],
)
def test_each_error_kind_names_the_field(tmp_path: Path, data: dict, expected: str) -> None:
    msg = _error(tmp_path, data)
    assert msg.startswith("bottle/profile.yaml: ") and expected in msg


def test_reference_path_escaping_the_folder(tmp_path: Path) -> None:
    msg = _error(tmp_path, {"name": "bottle", "reference_shots": ["../other/good.png"]})
    assert "reference_shots" in msg and "must be a path inside the profile folder" in msg
    msg = _error(tmp_path, {"name": "bottle", "reference_shots": ["/etc/passwd"]})
    assert "must be a path inside the profile folder" in msg


def test_reference_symlink_escaping_the_folder(tmp_path: Path) -> None:
    outside = tmp_path / "outside.png"
    write_png(outside, np.zeros((4, 4, 3), np.uint8))
    folder = _write(tmp_path / "bottle", {"name": "bottle", "reference_shots": ["references/link.png"]})
    (folder / "references").mkdir()
    (folder / "references" / "link.png").symlink_to(outside)
    with pytest.raises(ProfileError, match=r"reference_shots\.0: 'references/link.png' escapes the profile folder"):
        load_profile(folder)


def test_missing_reference_file(tmp_path: Path) -> None:
    msg = _error(tmp_path, {**GOOD, "reference_shots": ["references/good_1.png", "references/gone.png"]},
                 shots=("references/good_1.png",))
    assert "reference_shots.1: file 'references/gone.png' not found" in msg and "add the image" in msg
    folder = tmp_path / "bottle"
    assert load_profile(folder, check_files=False).reference_shots[1] == "references/gone.png"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("name: bottle\nprompts: [unclosed\n", "bottle/profile.yaml: not valid YAML"),
        ("", "expected a mapping of profile fields, got NoneType"),
        ("- a\n- b\n", "expected a mapping of profile fields, got list"),
    ],
)
def test_broken_yaml(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in _error(tmp_path, text)


def test_not_a_profile(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="no profile.yaml found"):
        load_profile(tmp_path / "nothing")


def test_round_trip_save_load(tmp_path: Path) -> None:
    p = profile_from_dict(GOOD)
    p.roi = [(0.0, 0.0), (100.0, 0.0), (50.0, 80.0)]
    p.prompts.anomalous_states = ["cracked", "dented"]
    path = save_profile(p, tmp_path / "bottle")
    again = load_profile(path, check_files=False)
    assert again.to_yaml_dict() == p.to_yaml_dict()
    assert again.content_hash() == p.content_hash()
    assert not list((tmp_path / "bottle").glob("*.tmp"))
    assert yaml.safe_load(path.read_text())["roi"] == [[0.0, 0.0], [100.0, 0.0], [50.0, 80.0]]


def test_version_bump_keeps_old_file(tmp_path: Path) -> None:
    folder = tmp_path / "bottle"
    p = profile_from_dict(GOOD)
    save_profile(p, folder)
    p2 = load_profile(folder, check_files=False)
    p2.decision.image_threshold = 0.75
    save_profile(p2, folder, bump=True)
    assert p2.version == 2
    assert (folder / "profile.v1.yaml").is_file()
    assert load_profile(folder, check_files=False).version == 2
    v1 = load_profile_version(folder, 1)
    assert v1.version == 1 and v1.decision.image_threshold == 0.6
    assert load_profile_version(folder, 2).decision.image_threshold == 0.75
    with pytest.raises(ProfileError, match="version 7 not kept"):
        load_profile_version(folder, 7)
    p3 = load_profile(folder, check_files=False)
    save_profile(p3, folder, bump=True)
    assert p3.version == 3 and (folder / "profile.v2.yaml").is_file() and (folder / "profile.v1.yaml").is_file()


def test_new_profile_and_list(tmp_path: Path) -> None:
    path = new_profile("capsule", "capsule", "saa", tmp_path)
    assert path == tmp_path / "capsule" / PROFILE_FILE and (tmp_path / "capsule" / "references").is_dir()
    p = load_profile(path)
    assert (p.pipeline, p.object) == ("saa", "capsule")
    with pytest.raises(ProfileError, match="already exists"):
        new_profile("capsule", "capsule", "saa", tmp_path)
    with pytest.raises(ProfileError, match="unknown pipeline"):
        new_profile("pill", "pill", "nope", tmp_path)
    assert list_profiles(tmp_path) == [tmp_path / "capsule"]


def test_model_keys_default_to_store_entries(tmp_path: Path) -> None:
    from inspector.models.store import ModelStore

    keys = {e.key for e in ModelStore(tmp_path).entries()}
    m = ProductProfile(name="x").models
    assert {m.clip, m.sam, m.grounding, m.backbone} <= keys


# ------------------------------------------------------------------------------ CLI
def test_cli_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = _write(tmp_path / "good" / "bottle", GOOD, shots=("references/good_1.png", "references/good_2.png"))
    bad = _write(tmp_path / "bad" / "bottle", {"name": "bottle", "properties": {"max_area_ratio": 3}})
    assert main(["profile", "validate", str(good)]) == EXIT_OK
    assert "OK      bottle v1 (fade, 2 reference shots)" in capsys.readouterr().out
    assert main(["profile", "validate", str(good), str(bad)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "INVALID bottle/profile.yaml: properties.max_area_ratio: must be in (0, 1], got 3" in err


def test_cli_new_and_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profile", "new", "pcb1", "--object", "printed circuit board", "--pipeline", "fade",
                 "--dir", str(tmp_path)]) == EXIT_OK
    assert f"created {tmp_path / 'pcb1' / PROFILE_FILE}" in capsys.readouterr().out
    assert main(["profile", "new", "pcb1", "--object", "pcb", "--dir", str(tmp_path)]) == EXIT_USAGE
    assert "already exists" in capsys.readouterr().err
    assert main(["profile", "show", str(tmp_path / "pcb1")]) == EXIT_OK
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["object"] == "printed circuit board" and shown["pipeline"] == "fade"


def test_cli_new_uses_settings_profiles_dir(tmp_settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("INSPECTOR_PROFILES_DIR", str(tmp_path / "station_profiles"))
    assert main(["profile", "new", "gear", "--object", "gear"]) == EXIT_OK
    assert (tmp_path / "station_profiles" / "gear" / PROFILE_FILE).is_file()
