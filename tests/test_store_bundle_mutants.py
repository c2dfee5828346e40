"""Known-answer tests of :mod:`inspector.models.store.bundle`: which members a folder / zip / tar
bundle yields, how they are matched to manifest entries, progress fractions, read sizes and caps,
and every message (``CHUNK`` shrunk to 16 bytes so that files take several reads)."""

from __future__ import annotations

import errno
import hashlib
import io
import logging
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from inspector.models.store import bundle as bundle_mod
from inspector.models.store import download as download_mod
from inspector.models.store import BundleRejectedError, ModelCorruptError, ModelStore, ModelStoreError
from tests.support.checks import exact, pattern_bytes, sha256_hex
from tests.support.fake_models import git_blob_id

STORE_LOG = "inspector.models.store"


A, X, Y, G = pattern_bytes("a", 25), pattern_bytes("x", 40), pattern_bytes("y", 30), pattern_bytes("g", 20)
W1, W2 = pattern_bytes("1", 10), pattern_bytes("2", 12)


def _entry(files: dict[str, dict]) -> dict:
    return {"kind": "sam", "arch": "t", "licence": "test", "size_mb": 0.0001, "files": files}


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModelStore:
    monkeypatch.setattr(bundle_mod, "CHUNK", 16)
    models = {
        "one": _entry({"a.pth": {"sha256": sha256_hex(A), "bytes": len(A)}}),
        "two": _entry({"x.bin": {"sha256": sha256_hex(X), "bytes": len(X)}, "y.bin": {"sha256": sha256_hex(Y)}}),
        "gitk": _entry({"g.pth": {"git_blob_sha1": git_blob_id(G)}}),
        "dup1": _entry({"w.pth": {"sha256": sha256_hex(W1)}}),
        "dup2": _entry({"w.pth": {"sha256": sha256_hex(W2)}}),
    }
    (tmp_path / "m").mkdir()
    manifest = tmp_path / "m" / "models.yaml"
    manifest.write_text(yaml.safe_dump({"models": models}, sort_keys=False), encoding="utf-8")
    return ModelStore(tmp_path / "store" / "models", manifest)


def _folder(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


NESTED = {"one/a.pth": A, "two/x.bin": X, "two/y.bin": Y}


# ------------------------------------------------------------------------------ members
@pytest.mark.parametrize(("name", "skip"), [
    ("", True), (".", True), ("__MACOSX/one/a.pth", True), ("b/__MACOSX/a.pth", True), ("one/._a.pth", True),
    ("._a.pth", True), (".DS_Store", True), ("one/.DS_Store", True),
    ("one/a.pth", False), ("a._pth", False), ("x.DS_Store", False), ("__MACOSX.pth", False), ("_a.pth", False),
])
def test_skip_member(name: str, skip: bool) -> None:
    assert bundle_mod._skip_member(name) is skip


JUNK = {"__MACOSX/one/a.pth": b"mac", "one/._a.pth": b"fork", ".DS_Store": b"ds", "deep/er/z.txt": b"zz"}


def _members(src: Path) -> list[tuple[str, int, bytes, Path | None]]:
    with bundle_mod._bundle(src) as members:
        out = []
        for m in members:
            with m.open() as fh:
                out.append((m.name, m.size, fh.read(), m.local))
        return out


def test_folder_members_sorted_relative_without_junk(tmp_path: Path) -> None:
    src = _folder(tmp_path / "b", {**NESTED, **JUNK})
    (src / "emptydir").mkdir()
    assert _members(src) == [("deep/er/z.txt", 2, b"zz", src / "deep/er/z.txt"),
                             ("one/a.pth", 25, A, src / "one/a.pth"),
                             ("two/x.bin", 40, X, src / "two/x.bin"),
                             ("two/y.bin", 30, Y, src / "two/y.bin")]


def test_zip_members_in_archive_order_without_dirs_or_junk(tmp_path: Path) -> None:
    src = tmp_path / "b.zip"
    with zipfile.ZipFile(src, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("two/", b"")
        for name, data in [("two/y.bin", Y), *JUNK.items(), ("one/a.pth", A)]:
            zf.writestr(name, data)
    assert _members(src) == [("two/y.bin", 30, Y, None), ("deep/er/z.txt", 2, b"zz", None),
                             ("one/a.pth", 25, A, None)]


@pytest.mark.parametrize("mode", ["w", "w:gz"])
def test_tar_members_regular_files_only(tmp_path: Path, mode: str) -> None:
    src = tmp_path / ("b.tar" if mode == "w" else "b.tar.gz")
    with tarfile.open(src, mode) as tf:
        d = tarfile.TarInfo("two")
        d.type = tarfile.DIRTYPE
        tf.addfile(d)
        link = tarfile.TarInfo("two/link.bin")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(link)
        for name, data in [("two/x.bin", X), *JUNK.items(), ("one/a.pth", A)]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    assert _members(src) == [("two/x.bin", 40, X, None), ("deep/er/z.txt", 2, b"zz", None),
                             ("one/a.pth", 25, A, None)]


def test_not_a_bundle(tmp_path: Path, store: ModelStore) -> None:
    src = tmp_path / "file.bin"
    src.write_bytes(b"neither zip nor tar" * 40)
    msg = f"{src}: not a folder, a .zip or a .tar[.gz] archive; nothing imported"
    with pytest.raises(ModelStoreError, match=exact(msg)):
        with bundle_mod._bundle(src):
            pass  # pragma: no cover
    with pytest.raises(ModelStoreError, match=exact(msg)):
        store.import_from(src)


# ------------------------------------------------------------------------------ import_from
def test_nested_folder_import_progress_records_and_logs(store: ModelStore, tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    src = _folder(tmp_path / "bundle", NESTED)
    seen: list[tuple[float, str]] = []
    with caplog.at_level(logging.INFO, logger=STORE_LOG):
        assert store.import_from(src, progress=lambda f, m: seen.append((f, m))) == ["one", "two"]
    la, lx, ly = "importing one/a.pth", "importing two/x.bin", "importing two/y.bin"
    want = [(16 / 95, la), (25 / 95, la), (41 / 95, lx), (57 / 95, lx), (65 / 95, lx),
            (81 / 95, ly), (1.0, ly), (1.0, "import finished")]
    assert [m for _, m in seen] == [m for _, m in want]
    assert [f for f, _ in seen] == pytest.approx([f for f, _ in want], abs=1e-12)
    for rel, data in NESTED.items():
        assert (store.root / rel).read_bytes() == data
        rec = store.records()[rel]
        assert rec["sha256"] == sha256_hex(data) and rec["source"] == f"import:{src}"
    msgs = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == STORE_LOG]
    assert msgs == [(logging.INFO, f"installed {rel} from import:{src}") for rel in NESTED]
    assert sorted(p.name for p in store.root.rglob("*") if p.is_file()) == [".installed.lock", "a.pth", "installed.json", "x.bin", "y.bin"]


def test_import_without_progress_and_from_a_home_path(store: ModelStore, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    _folder(tmp_path / "bundle", {"one/a.pth": A})
    assert store.import_from("~/bundle") == ["one"]
    assert store.records()["one/a.pth"]["source"] == f"import:{tmp_path / 'bundle'}"


def test_missing_source_and_nothing_known(store: ModelStore, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=exact(f"{tmp_path / 'absent'}: no such folder or archive")):
        store.import_from(tmp_path / "absent")
    src = _folder(tmp_path / "junk", {"notes.txt": b"x", "one/b.pth": b"y"})
    msg = (f"{src}: no known model file found (expected <key>/<file> or the files' own names, "
           "e.g. one/a.pth); see `inspector models list`")
    with pytest.raises(ModelStoreError, match=exact(msg)):
        store.import_from(src)


def test_flat_names_ambiguous_names_and_unknown_files(store: ModelStore, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    src = _folder(tmp_path / "flat", {"a.pth": A, "w.pth": W1, "README.txt": b"r", "sub/g.pth": G})
    with caplog.at_level(logging.INFO, logger=STORE_LOG):
        assert store.import_from(src) == ["one", "gitk"]
    msgs = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == STORE_LOG]
    assert msgs[:3] == [(logging.INFO, "import: ignoring README.txt (not a known model file)"),
                        (logging.WARNING, "w.pth: several models have a file called w.pth; put it in a <key>/ folder"),
                        (logging.INFO, f"installed one/a.pth from import:{src}")]
    assert not (store.root / "dup1").exists() and not (store.root / "dup2").exists()
    assert (store.root / "gitk" / "g.pth").read_bytes() == G


def test_key_folders_decide_and_beat_flat_copies(store: ModelStore, tmp_path: Path) -> None:
    # exact <key>/<file> entries win over a flat copy of the same file, which is never opened
    src = _folder(tmp_path / "b", {"a.pth": b"z" * 25, "one/a.pth": A, "dup1/w.pth": W1, "x/dup2/w.pth": W2,
                                   "two/a.pth": b"q" * 25})
    seen: list[str] = []
    assert store.import_from(src, progress=lambda f, m: seen.append(m)) == ["dup1", "one"] + ["dup2"]
    assert (store.root / "one" / "a.pth").read_bytes() == A
    assert (store.root / "dup1" / "w.pth").read_bytes() == W1 and (store.root / "dup2" / "w.pth").read_bytes() == W2
    assert not (store.root / "two").exists()
    assert seen == ["importing dup1/w.pth", "importing one/a.pth", "importing one/a.pth", "importing dup2/w.pth",
                    "import finished"]


def test_a_file_in_another_keys_folder_goes_to_its_owner(store: ModelStore, tmp_path: Path) -> None:
    src = _folder(tmp_path / "b", {"two/a.pth": A, "two/x.bin": X})
    assert store.import_from(src) == ["one", "two"]
    assert (store.root / "one" / "a.pth").read_bytes() == A and not (store.root / "two" / "a.pth").exists()


def test_the_first_exact_copy_wins(store: ModelStore, tmp_path: Path) -> None:
    src = _folder(tmp_path / "b", {"a/one/a.pth": A, "b/one/a.pth": b"z" * 25})
    assert store.import_from(src) == ["one"]
    assert (store.root / "one" / "a.pth").read_bytes() == A


def test_zip_plan_follows_archive_order(store: ModelStore, tmp_path: Path) -> None:
    src = tmp_path / "b.zip"
    with zipfile.ZipFile(src, "w") as zf:
        for name, data in [("two/y.bin", Y), ("a.pth", A), ("two/x.bin", X)]:
            zf.writestr(name, data)
    seen: list[tuple[float, str]] = []
    assert store.import_from(src, progress=lambda f, m: seen.append((f, m))) == ["two", "one"]
    assert [m for _, m in seen] == ["importing two/y.bin"] * 2 + ["importing one/a.pth"] * 2 + \
        ["importing two/x.bin"] * 3 + ["import finished"]
    assert [f for f, _ in seen] == pytest.approx([16 / 95, 30 / 95, 46 / 95, 55 / 95, 71 / 95, 87 / 95, 1.0, 1.0])


def test_rejected_files_are_listed_after_the_good_ones_are_in(store: ModelStore, tmp_path: Path) -> None:
    bad_x = b"z" * 40
    src = _folder(tmp_path / "b", {"one/a.pth": A, "two/x.bin": bad_x, "two/y.bin": Y, "gitk/g.pth": b"h" * 20})
    seen: list[float] = []
    with pytest.raises(BundleRejectedError) as err:
        store.import_from(src, progress=lambda f, m: seen.append(f))
    gh = hashlib.sha1(b"blob 20\0" + b"h" * 20).hexdigest()
    failures = [f"gitk/g.pth: git blob id {gh[:12]}… does not match the published {git_blob_id(G)[:12]}…",
                f"two/x.bin: sha256 {sha256_hex(bad_x)[:12]}… does not match the published sha256 {sha256_hex(X)[:12]}…"]
    assert err.value.failures == failures and err.value.imported == ["one", "two"]
    assert str(err.value) == f"{src}: imported one, two; 2 file(s) rejected:\n  " + "\n  ".join(failures)
    assert seen[-1] == 1.0 and seen[-2] == pytest.approx(1.0)  # y.bin, the last member, ends at 115/115
    assert not (store.root / "two" / "x.bin").exists() and not (store.root / "gitk" / "g.pth").exists()
    assert (store.root / "two" / "y.bin").read_bytes() == Y and (store.root / "one" / "a.pth").read_bytes() == A
    assert not list(store.root.rglob(".*.tmp"))


def test_git_blob_entries_are_verified_while_copying(store: ModelStore, tmp_path: Path) -> None:
    src = _folder(tmp_path / "b", {"gitk/g.pth": G})
    assert store.import_from(src) == ["gitk"]
    assert store.records()["gitk/g.pth"]["sha256"] == sha256_hex(G)
    assert store.status("gitk") == "installed"


# ------------------------------------------------------------------------------ _install_member
class _Stream(io.RawIOBase):
    def __init__(self, data: bytes, reads: list[int]) -> None:
        self.data, self.reads, self.pos = data, reads, 0

    def read(self, n: int = -1) -> bytes:  # type: ignore[override]
        self.reads.append(n)
        out = self.data[self.pos:self.pos + n]
        self.pos += len(out)
        return out


def _member(name: str, size: int, data: bytes, reads: list[int]) -> bundle_mod._Member:
    return bundle_mod._Member(name, size, lambda: _Stream(data, reads))


def test_reads_ask_for_at_most_one_byte_past_the_limit(store: ModelStore, monkeypatch: pytest.MonkeyPatch) -> None:
    space: list[tuple[Path, int]] = []
    monkeypatch.setattr(download_mod, "ensure_free_space", lambda p, n: space.append((Path(p), n)))
    reads: list[int] = []
    steps: list[int] = []
    store._install_member(store.entry("one"), "a.pth", _member("z/a.pth", 25, A, reads), "src:1", steps.append)
    assert reads == [16, 10, 1] and steps == [16, 25]
    assert space == [(store.root / "one" / "a.pth", 25)]
    assert store.records()["one/a.pth"]["source"] == "src:1"
    reads.clear()
    store._install_member(store.entry("two"), "y.bin", _member("y.bin", 30, Y, reads), "s", lambda n: None)
    assert reads == [16, 15, 1] and space[-1] == (store.root / "two" / "y.bin", 30)


def test_a_header_size_other_than_the_manifests_copies_nothing(store: ModelStore) -> None:
    opened: list[int] = []
    member = bundle_mod._Member("in/a.pth", 26, lambda: opened.append(1) or io.BytesIO(A + b"!"))
    with pytest.raises(ModelCorruptError) as err:
        store._install_member(store.entry("one"), "a.pth", member, "s", lambda n: None)
    assert err.value.path == Path("in/a.pth") and err.value.key == "one"
    assert err.value.detail == "size 26 bytes, expected 25; nothing was copied"
    assert opened == [] and not (store.root / "one" / "a.pth").exists()


def test_a_stream_longer_than_its_header_stops_at_the_limit(store: ModelStore) -> None:
    reads: list[int] = []
    with pytest.raises(ModelCorruptError) as err:
        store._install_member(store.entry("two"), "y.bin", _member("b/y.bin", 30, Y + b"0123456789", reads), "s",
                              lambda n: None)
    assert err.value.path == Path("b/y.bin") and err.value.key == "two"
    assert err.value.detail == "more than the 30 bytes expected; copying stopped there and nothing was installed"
    assert reads == [16, 15]
    assert not (store.root / "two" / "y.bin").exists() and not list(store.root.rglob(".*.tmp"))


def test_a_stream_shorter_than_its_header_is_a_mismatch(store: ModelStore) -> None:
    with pytest.raises(ModelCorruptError) as err:
        store._install_member(store.entry("one"), "a.pth", _member("a.pth", 25, A[:20], []), "s", lambda n: None)
    assert err.value.path == Path("a.pth") and err.value.key == "one"
    assert err.value.detail == "size 20 bytes, expected 25 (incomplete copy or download?)"


def test_the_store_onto_itself_is_verified_in_place(store: ModelStore, tmp_path: Path) -> None:
    _folder(store.root, {"one/a.pth": A, "two/x.bin": X, "two/y.bin": b"w" * 30, "gitk/g.pth": G})
    seen: list[tuple[float, str]] = []
    with pytest.raises(BundleRejectedError) as err:
        store.import_from(store.root, progress=lambda f, m: seen.append((f, m)))
    assert err.value.failures == [
        f"two/y.bin: sha256 {sha256_hex(b'w' * 30)[:12]}… does not match the published sha256 {sha256_hex(Y)[:12]}…"]
    assert err.value.imported == ["gitk", "one", "two"]
    assert (store.root / "two" / "y.bin").read_bytes() == b"w" * 30  # verified, not removed
    for rel, data in (("one/a.pth", A), ("gitk/g.pth", G)):
        assert store.records()[rel]["source"] == f"import:{store.root}"
        assert store.records()[rel]["sha256"] == sha256_hex(data)
    assert "two/y.bin" not in store.records()
    assert seen == [(20 / 115, "importing gitk/g.pth"), (45 / 115, "importing one/a.pth"),
                    (85 / 115, "importing two/x.bin"), (1.0, "importing two/y.bin"), (1.0, "import finished")]


def test_a_corrupt_file_verified_in_place_names_its_key(store: ModelStore) -> None:
    dest = _folder(store.root, {"one/a.pth": b"z" * 25}) / "one" / "a.pth"
    member = bundle_mod._Member("one/a.pth", 25, lambda: open(dest, "rb"), dest)
    with pytest.raises(ModelCorruptError) as err:
        store._install_member(store.entry("one"), "a.pth", member, "s", lambda n: None)
    assert err.value.key == "one" and err.value.path == dest
    assert err.value.detail == f"sha256 {sha256_hex(b'z' * 25)[:12]}… does not match the published sha256 {sha256_hex(A)[:12]}…"
    assert dest.read_bytes() == b"z" * 25


def test_disk_errors_while_copying(store: ModelStore, monkeypatch: pytest.MonkeyPatch) -> None:
    import contextlib

    failure: list[OSError] = []

    @contextlib.contextmanager
    def writer(path: Any, **kw: Any):
        class W:
            def write(self, data: bytes) -> int:
                raise failure[0]
        yield W()

    monkeypatch.setattr(bundle_mod, "atomic_writer", writer)
    dest = store.root / "one" / "a.pth"
    failure.append(OSError(errno.ENOSPC, "No space left on device"))
    msg = (f"{dest}: no space left on the disk holding {dest.parent} (No space left on device); "
           "free space there (or point the setting at another disk) and retry")
    with pytest.raises(ModelStoreError, match=exact(msg)) as err:
        store._install_member(store.entry("one"), "a.pth", _member("a.pth", 25, A, []), "s", lambda n: None)
    assert type(err.value) is ModelStoreError and err.value.__cause__ is failure[0]
    failure[0] = OSError(errno.EIO, "Input/output error")
    with pytest.raises(OSError) as err2:
        store._install_member(store.entry("one"), "a.pth", _member("a.pth", 25, A, []), "s", lambda n: None)
    assert err2.value is failure[0]
