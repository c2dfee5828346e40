"""Profile lifecycle: versions with author, date and change note; field diffs; rollback as a new version."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from inspector.imaging import write_png
from inspector.profile import (
    FieldChange,
    ProductProfile,
    ProfileError,
    diff_profiles,
    load_profile,
    load_profile_version,
    profile_history,
    rollback_profile,
    save_profile,
)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """v1 (two shots) -> v2 (threshold, note) -> v3 (object, a third shot, note)."""
    folder = tmp_path / "gear"
    for i in range(3):
        write_png(folder / "references" / f"r{i}.png", np.full((8, 8, 3), 40 * i, np.uint8))
    p = ProductProfile(name="gear", object="gear", reference_shots=["references/r0.png", "references/r1.png"])
    save_profile(p, folder, note="first version", author="ana")
    p = load_profile(folder)
    p.decision.image_threshold = 0.62
    save_profile(p, bump=True, note="fewer false rejects on shift B", author="ben")
    p = load_profile(folder)
    p.object = "spur gear"
    p.reference_shots = [*p.reference_shots, "references/r2.png"]
    save_profile(p, bump=True, note="new supplier", author="ana")
    return folder


def test_history_lists_every_version_with_author_date_and_note(folder: Path) -> None:
    history = profile_history(folder)
    assert [(v.version, v.author, v.note, v.current) for v in history] == [
        (3, "ana", "new supplier", True),
        (2, "ben", "fewer false rejects on shift B", False),
        (1, "ana", "first version", False),
    ]
    assert all(v.saved_at.endswith("+00:00") and v.saved_at[:4].isdigit() for v in history)
    assert history[2].file == folder / "profile.v1.yaml"


def test_a_new_version_does_not_inherit_the_previous_note(folder: Path) -> None:
    p = load_profile(folder)
    p.description = "x"
    save_profile(p, bump=True)
    assert load_profile(folder).change_note == ""


def test_field_by_field_diff(folder: Path) -> None:
    v1, v3 = load_profile_version(folder, 1), load_profile_version(folder, 3)
    changes = diff_profiles(v1, v3)
    assert changes == [
        FieldChange("object", "gear", "spur gear"),
        FieldChange("reference_shots", ["references/r0.png", "references/r1.png"],
                    ["references/r0.png", "references/r1.png", "references/r2.png"]),
        FieldChange("decision.image_threshold", 0.5, 0.62),
    ]
    assert diff_profiles(v3, v3) == []
    paths = {c.path for c in diff_profiles(v1, v3, bookkeeping=True)}
    assert {"version", "change_note"} <= paths


def test_rollback_creates_a_new_version(folder: Path) -> None:
    before = {f.name: f.read_text() for f in folder.glob("profile*.yaml")}
    restored = rollback_profile(folder, 1, "supplier change reverted", author="cy")
    assert restored.version == 4
    current = load_profile(folder)
    assert (current.version, current.author) == (4, "cy")
    assert current.change_note == "rollback to v1: supplier change reverted"
    assert diff_profiles(load_profile_version(folder, 1), current) == [FieldChange("author", "ana", "cy")]  # v1 as v4
    for name, text in before.items():  # history is never rewritten
        if name != "profile.yaml":
            assert (folder / name).read_text() == text
    assert yaml.safe_load((folder / "profile.v3.yaml").read_text())["object"] == "spur gear"
    assert [v.version for v in profile_history(folder)] == [4, 3, 2, 1]


def test_rollback_refusals(folder: Path) -> None:
    with pytest.raises(ProfileError, match="v3 is already the current version"):
        rollback_profile(folder, 3)
    with pytest.raises(ProfileError, match="version 9 not kept"):
        rollback_profile(folder, 9)
    (folder / "references" / "r1.png").unlink()
    with pytest.raises(ProfileError, match=r"cannot roll back to v1: reference_shots.1: file 'references/r1.png'"):
        rollback_profile(folder, 1)
    assert load_profile(folder, check_files=False).version == 3  # nothing written
