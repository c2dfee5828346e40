"""Reference shots are copied into the profile folder under content-hash names."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from inspector.imaging import read_image, write_png
from inspector.profile import ProductProfile, load_profile, save_profile
from inspector.profile_refs import (
    HASH_CHARS,
    ReferenceShotError,
    add_reference_folder,
    add_reference_image,
    add_reference_shots,
    remove_reference_shots,
)


def _image(seed: int, size: int = 24) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


@pytest.fixture
def profile(tmp_path: Path) -> ProductProfile:
    prof = ProductProfile(name="widget", object="widget")
    save_profile(prof, tmp_path / "profiles" / "widget")
    return prof


@pytest.fixture
def shots(tmp_path: Path) -> list[Path]:
    src = tmp_path / "camera"
    return [write_png(src / f"shot_{i}.png", _image(i)) for i in range(3)]


def test_copies_under_name_and_hash(profile: ProductProfile, shots: list[Path]) -> None:
    rels = add_reference_shots(profile, shots)
    assert len(rels) == 3
    assert profile.reference_shots == rels
    for i, (src, rel) in enumerate(zip(shots, rels)):
        digest = hashlib.sha256(src.read_bytes()).hexdigest()
        assert rel == f"references/shot_{i}_{digest[:HASH_CHARS]}.png"  # where it came from, and unique
        copied = profile.folder / rel
        assert copied.read_bytes() == src.read_bytes()


def test_same_content_is_stored_once(profile: ProductProfile, shots: list[Path], tmp_path: Path) -> None:
    twin = tmp_path / "elsewhere" / "renamed.PNG"
    twin.parent.mkdir()
    shutil.copy(shots[0], twin)
    rels = add_reference_shots(profile, [shots[0], twin, shots[0]])
    assert rels == add_reference_shots(profile, [twin])  # idempotent
    assert len(rels) == 1
    assert profile.reference_shots == rels
    assert len(list((profile.folder / "references").iterdir())) == 1


def test_profile_folder_is_portable(profile: ProductProfile, shots: list[Path], tmp_path: Path) -> None:
    add_reference_shots(profile, shots)
    save_profile(profile)
    moved = tmp_path / "usb_stick" / "widget"
    shutil.copytree(profile.folder, moved)
    shutil.rmtree(tmp_path / "camera")
    shutil.rmtree(profile.folder)
    loaded = load_profile(moved)  # check_files=True: every reference must exist inside the folder
    assert [p.parent for p in loaded.reference_paths()] == [moved.resolve() / "references"] * 3
    np.testing.assert_array_equal(read_image(loaded.reference_paths()[1]), _image(1))


def test_bad_file_refuses_batch_and_copies_nothing(profile: ProductProfile, shots: list[Path], tmp_path: Path) -> None:
    broken = tmp_path / "camera" / "broken.png"
    broken.write_bytes(shots[0].read_bytes()[:40])  # truncated PNG
    with pytest.raises(ReferenceShotError, match="broken.png: truncated PNG"):
        add_reference_shots(profile, [shots[0], broken])
    assert profile.reference_shots == []
    assert not (profile.folder / "references").exists() or not any((profile.folder / "references").iterdir())


def test_errors_list_keeps_good_files(profile: ProductProfile, shots: list[Path], tmp_path: Path) -> None:
    notes = tmp_path / "camera" / "notes.txt"
    notes.write_text("not an image")
    errors: list[str] = []
    rels = add_reference_folder(profile, tmp_path / "camera", errors=errors)
    assert len(rels) == 3  # the text file is not even listed as an image
    (tmp_path / "camera" / "empty.jpg").write_bytes(b"")
    errors = []
    rels = add_reference_shots(profile, [*shots, tmp_path / "camera" / "empty.jpg", notes], errors=errors)
    assert len(rels) == 3
    assert len(errors) == 2
    assert "empty.jpg: empty file" in errors[0]
    assert "notes.txt: not an image file" in errors[1]


def test_folder_without_images(profile: ProductProfile, tmp_path: Path) -> None:
    (tmp_path / "nothing").mkdir()
    with pytest.raises(ReferenceShotError, match="no images"):
        add_reference_folder(profile, tmp_path / "nothing")


def test_add_current_image_and_remove_keeps_file(profile: ProductProfile) -> None:
    img = _image(7)
    rel = add_reference_image(profile, img)
    assert rel.startswith("references/") and rel.endswith(".png")
    np.testing.assert_array_equal(read_image(profile.folder / rel), img)
    assert add_reference_image(profile, img) == rel
    assert profile.reference_shots == [rel]
    assert sorted(p.name for p in (profile.folder / "references").iterdir()) == [Path(rel).name]
    assert remove_reference_shots(profile, [rel]) == [rel]
    assert profile.reference_shots == []
    assert (profile.folder / rel).is_file()


def test_unsaved_profile_is_refused(shots: list[Path]) -> None:
    with pytest.raises(ReferenceShotError, match="save the profile"):
        add_reference_shots(ProductProfile(name="draft"), shots)


def test_odd_names_are_cleaned_and_content_keeps_its_first_name(profile: ProductProfile, tmp_path: Path) -> None:
    odd = write_png(tmp_path / "cam" / "Line 3 – good (ok)#1.png", _image(7))
    digest = hashlib.sha256(odd.read_bytes()).hexdigest()[:HASH_CHARS]
    (rel,) = add_reference_shots(profile, [odd])
    assert rel == f"references/Line_3_good_ok_1_{digest}.png"
    twin = tmp_path / "other" / "again.png"
    twin.parent.mkdir()
    shutil.copy(odd, twin)
    assert add_reference_shots(profile, [twin]) == [rel]
    frame = add_reference_image(profile, _image(8), stem="station_frame")
    assert frame.startswith("references/station_frame_") and frame.endswith(".png")
