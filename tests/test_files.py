"""The one atomic write: every writer that replaced a file by hand now goes through
:mod:`inspector.files`, whose temporary file is created exclusively and never follows a link."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from inspector.archive import ArchivePlan, write_archive
from inspector.files import NotRegularFileError, atomic_copy, atomic_write
from inspector.outputs.queues import DiskQueue
from inspector.profile import PROFILE_FILE, load_profile, new_profile, save_profile


def test_atomic_copy_is_byte_for_byte_and_keeps_times_on_request(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    data = os.urandom(3 << 20)  # more than one copy chunk
    src.write_bytes(data)
    os.utime(src, ns=(1_600_000_000_000_000_000, 1_600_000_000_123_456_789))
    kept = atomic_copy(src, tmp_path / "out" / "kept.bin", keep_times=True)
    plain = atomic_copy(src, tmp_path / "out" / "plain.bin")
    assert kept.read_bytes() == data and plain.read_bytes() == data
    assert kept.stat().st_mtime_ns == 1_600_000_000_123_456_789
    assert plain.stat().st_mtime_ns != 1_600_000_000_123_456_789
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["kept.bin", "plain.bin"]  # no temporary left


def test_atomic_copy_refuses_a_fifo_and_leaves_the_target(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    dest = atomic_write(tmp_path / "dest.bin", b"old")
    with pytest.raises(NotRegularFileError):
        atomic_copy(fifo, dest)
    assert dest.read_bytes() == b"old"


def _plant(victim: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(victim)


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    v = tmp_path / "victim.txt"
    v.write_text("precious")
    return v


def test_save_profile_never_follows_a_link_at_the_old_temporary_name(tmp_path: Path, victim: Path) -> None:
    folder = tmp_path / "bottle"
    new_profile("bottle", "bottle", "variation", tmp_path)
    profile = load_profile(folder, check_files=False)
    profile.object = "glass bottle"
    _plant(victim, folder / "profile.yaml.tmp")  # the name save_profile wrote through before
    save_profile(profile, folder)
    assert victim.read_text() == "precious"
    assert yaml.safe_load((folder / PROFILE_FILE).read_text())["object"] == "glass bottle"


def test_archive_copy_never_follows_a_link_at_the_old_temporary_name(tmp_path: Path, victim: Path) -> None:
    src = tmp_path / "part.png"
    src.write_bytes(b"\x89PNG not decoded, copied")
    plan = ArchivePlan(tmp_path / "archive" / "u_overlay.png", tmp_path / "archive" / "u_part.png")
    _plant(victim, tmp_path / "archive" / "u_part.png.tmp")
    write_archive(plan, np.zeros((4, 4, 3), np.uint8), None, src)
    assert victim.read_text() == "precious"
    assert plan.image is not None and plan.image.read_bytes() == src.read_bytes()


def test_output_queue_never_follows_a_link_at_the_old_temporary_name(tmp_path: Path, victim: Path) -> None:
    queue = DiskQueue(tmp_path / "q")
    _plant(victim, tmp_path / "q" / f"{0:016d}.json.tmp")
    item = queue.put("k", {"v": 1})
    assert victim.read_text() == "precious"
    again = DiskQueue(tmp_path / "q").peek()
    assert again is not None and (again.key, again.payload) == (item.key, {"v": 1})
