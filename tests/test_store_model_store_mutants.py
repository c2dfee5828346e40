"""Known-answer tests of the store on disk (``inspector/models/store/model_store.py``).

``installed.json`` is compared byte for byte with a record built here (sha256 by hashlib, the MAC
by hmac under a station key the test writes), the errors an IT admin reads are compared in full
(which key, which file, which folder, which command), and hashing is counted to check the digest
cache. Stores live under ``tmp_path`` with the tiny manifest of ``tests/support/fake_models.py``
or a one-entry manifest written by the test. Written for the mutation run of bench/mutation.md.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import json
import logging
import os
import re
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
import torch
import yaml

from inspector.models.store import (
    FileCheck,
    ModelCorruptError,
    ModelMissingError,
    ModelStore,
    UnknownModelError,
    default_manifest_path,
)
from inspector.models.store import model_store as ms
from tests.support.checks import torch_bytes
from tests.support.fake_models import FakeModels, install_all, make_fake_models
from tests.test_store import fake, store  # noqa: F401  (fixtures)

KEY = bytes(range(100, 132))
LOGGER = "inspector.models.store"


def fix(key: str) -> str:
    return (f"`inspector models download {key}`, or on a station without internet "
            "`inspector models import <bundle folder or archive>`")


@pytest.fixture(autouse=True)
def key_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "station.key"
    path.write_text(KEY.hex() + "\n", encoding="ascii")
    monkeypatch.setenv("INSPECTOR_KEY_FILE", str(path))
    return path




@pytest.fixture
def warnings_log(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger=LOGGER)
    monkeypatch.setattr(logging.getLogger(LOGGER), "disabled", False)
    return caplog


def _messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == level]


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every file the store hashes in full, in order."""
    calls: list[Path] = []
    real = ms.sha256_of
    monkeypatch.setattr(ms, "sha256_of", lambda p, cb=None: calls.append(Path(p)) or real(p, cb))
    return calls


def _mac(rel: str, rec: dict) -> str:
    blob = json.dumps([rel, rec["sha256"], rec["size"], rec["mtime_ns"], rec["ino"], rec["ctime_ns"], rec["source"]],
                      separators=(",", ":"))
    return hmac.new(KEY, b"inspector-installed-v2\0" + blob.encode(), hashlib.sha256).hexdigest()


def _one(tmp_path: Path, files: dict[str, bytes | None], digests: bool = True, install: bool = True,
         **entry: object) -> ModelStore:
    """A store with one entry ``thing`` holding ``files`` (None: listed, not written)."""
    specs = {n: ({"sha256": hashlib.sha256(d).hexdigest(), "bytes": len(d)} if digests and d else {})
             for n, d in files.items()}
    manifest = {"models": {"thing": {"kind": "sam", "arch": "x", "licence": "MIT", "size_mb": 1, **entry,
                                     "files": specs}}}
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "one.yaml"
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    root = tmp_path / "one_store"
    if install:
        (root / "thing").mkdir(parents=True, exist_ok=True)
        for n, d in files.items():
            if d is not None:
                (root / "thing" / n).write_bytes(d)
    return ModelStore(root, path)


# ---------------------------------------------------------------------------------- construction
def test_root_manifest_and_repr(tmp_path: Path, fake: FakeModels, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    s = ModelStore("~/weights", str(fake.manifest))
    assert s.root == tmp_path / "home" / "weights" and s.manifest_path == fake.manifest
    assert isinstance(s.manifest_path, Path)
    assert repr(s) == f"ModelStore({str(tmp_path / 'home' / 'weights')!r}, 5 entries)"
    assert s._seen == {}
    packaged = ModelStore(tmp_path / "x")
    assert packaged.manifest_path == default_manifest_path()
    assert repr(packaged) == f"ModelStore({str(tmp_path / 'x')!r}, {len(packaged.entries())} entries)"


def test_from_settings(tmp_settings, tmp_path: Path) -> None:
    tmp_settings.model_dir = tmp_path / "elsewhere"
    s = ModelStore.from_settings(tmp_settings)
    assert s.root == tmp_path / "elsewhere" and s.manifest_path == default_manifest_path()
    assert ModelStore.from_settings().root == Path(os.environ["INSPECTOR_MODEL_DIR"])


def test_entries_and_unknown_key(store: ModelStore, fake: FakeModels) -> None:
    assert [e.key for e in store.entries()] == ["alpha", "beta", "textenc", "detector", "adapter"]
    assert store.entry("beta").key == "beta"
    with pytest.raises(UnknownModelError) as err:
        store.entry("gamma")
    assert str(err.value) == (
        f"unknown model key 'gamma'; known keys: alpha, beta, textenc, detector, adapter (see {fake.manifest})")
    assert err.value.__cause__ is None and err.value.__suppress_context__ is True


def test_with_requirements_is_transitive_and_stable(tmp_path: Path) -> None:
    base = {"kind": "sam", "arch": "x", "licence": "MIT", "size_mb": 1, "files": {"f.pt": {}}}
    models = {"a": {**base, "requires": ["b"]}, "b": {**base, "requires": ["c"]}, "c": base,
              "d": {**base, "requires": ["a", "c"]}, "e": {**base, "requires": ["e", "d"]}}
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump({"models": models}, sort_keys=False))
    s = ModelStore(tmp_path / "s", path)
    assert s.with_requirements(["d"]) == ["d", "a", "b", "c"]
    assert s.with_requirements(["c", "a", "c"]) == ["c", "a", "b"]
    assert s.with_requirements(iter(["e"])) == ["e", "d", "a", "b", "c"]
    assert s.with_requirements([]) == []
    with pytest.raises(UnknownModelError, match="^unknown model key 'zz'; known keys: a, b, c, d, e "):
        s.with_requirements(["a", "zz"])


def test_file_path_names_the_files(store: ModelStore) -> None:
    assert store.file_path("alpha", "alpha.pth") == store.root / "alpha" / "alpha.pth"
    with pytest.raises(ValueError) as err:
        store.file_path("alpha", "x.pth")
    assert str(err.value) == "model 'alpha' has no file 'x.pth'; its files: alpha.pth"
    with pytest.raises(ValueError) as err:
        store.file_path("textenc", "vocab")
    assert str(err.value) == (
        "model 'textenc' has no file 'vocab'; its files: config.json, vocab.txt, model.safetensors, pytorch_model.bin")


# ---------------------------------------------------------------------------------- packaged files
@pytest.fixture
def shipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[ModelStore, Path, bytes]:
    site = tmp_path / "site"
    (site / "msstorepkg" / "data").mkdir(parents=True)
    (site / "msstorepkg" / "__init__.py").write_text("")
    data = b"shipped weights\n"
    (site / "msstorepkg" / "data" / "w.bin").write_bytes(data)
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    manifest = {"models": {"pk": {"kind": "backbone", "arch": "x", "licence": "MIT", "size_mb": 1, "files": {
        "w.bin": {"sha256": hashlib.sha256(data).hexdigest(), "package": "msstorepkg:data/w.bin"},
        "extra.bin": {"package": "msstorepkg:data/absent.bin"},
        "plain.bin": {}}}}}
    path = tmp_path / "pk.yaml"
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    yield ModelStore(tmp_path / "deep" / "er" / "store", path), site / "msstorepkg" / "data" / "w.bin", data
    sys.modules.pop("msstorepkg", None)


def test_packaged_files_are_used_and_recorded_as_shipped(shipped: tuple[ModelStore, Path, bytes]) -> None:
    s, where, data = shipped
    assert s.file_path("pk", "w.bin") == where
    assert s.file_path("pk", "extra.bin") == s.root / "pk" / "extra.bin"  # the package lacks it
    assert s.file_path("pk", "plain.bin") == s.root / "pk" / "plain.bin"
    assert s.is_packaged("pk") is True and s.is_packaged("pk", "w.bin") is True
    assert s.is_packaged("pk", "extra.bin") is False and s.is_packaged("pk", "plain.bin") is False
    assert not s.root.exists()
    assert s.check_file("pk", "w.bin") == FileCheck("pk", "w.bin", where, "ok", "verified")
    rec = s.records()["pk/w.bin"]  # the store folder (and its parents) was created for the record
    assert rec["source"] == "shipped with the package" and rec["sha256"] == hashlib.sha256(data).hexdigest()
    (s.root / "pk").mkdir()
    (s.root / "pk" / "plain.bin").write_bytes(b"p")
    s.check_file("pk", "plain.bin")
    assert s.records()["pk/plain.bin"]["source"] == "found in the store"
    (s.root / "pk" / "extra.bin").write_bytes(b"e")  # packaged entry, but the package lacks it: the store's copy
    assert s.check_file("pk", "extra.bin").path == s.root / "pk" / "extra.bin"
    assert s.records()["pk/extra.bin"]["source"] == "found in the store"


def test_is_packaged_defaults_to_the_first_file(tmp_path: Path, shipped: tuple[ModelStore, Path, bytes]) -> None:
    s, _, _ = shipped
    manifest = yaml.safe_load(s.manifest_path.read_text())
    files = manifest["models"]["pk"]["files"]
    manifest["models"]["pk"]["files"] = {"plain.bin": files["plain.bin"], "w.bin": files["w.bin"]}
    s.manifest_path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    s2 = ModelStore(s.root, s.manifest_path)
    assert s2.is_packaged("pk") is False and s2.is_packaged("pk", "w.bin") is True


# ---------------------------------------------------------------------------------- installed.json
def test_records_of_missing_unreadable_and_odd_files(store: ModelStore, warnings_log: pytest.LogCaptureFixture) -> None:
    assert store.records_path == store.root / "installed.json"
    assert store.records() == {}
    store.root.mkdir()
    store.records_path.write_text("{broken", encoding="utf-8")
    with pytest.raises(ValueError) as raw:
        json.loads("{broken")
    assert store.records() == {}
    assert _messages(warnings_log, logging.WARNING) == [
        f"{store.records_path}: unreadable ({raw.value}); digests will be recomputed"]
    for text in ("[1, 2]", '{"files": [1]}', '{"format": 2}', '"files"'):
        store.records_path.write_text(text, encoding="utf-8")
        assert store.records() == {}
    store.records_path.write_text('{"files": {"a/b": {"sha256": "x"}}}', encoding="utf-8")
    assert store.records() == {"a/b": {"sha256": "x"}}
    store.records_path.write_bytes('{"files": {"a/ü": {}}}'.encode())
    assert store.records() == {"a/ü": {}}
    store.records_path.unlink()
    store.records_path.mkdir()
    assert store.records() == {}
    assert len(_messages(warnings_log, logging.WARNING)) == 2
    assert _messages(warnings_log, logging.WARNING)[1].startswith(f"{store.records_path}: unreadable ([Errno 21] ")


def test_installed_json_is_the_signed_record(store: ModelStore, fake: FakeModels) -> None:
    install_all(fake, store.root)
    before = datetime.now(timezone.utc).replace(microsecond=0)
    assert store.status("alpha") == "installed"
    after = datetime.now(timezone.utc)
    p = store.root / "alpha" / "alpha.pth"
    st = p.stat()
    data = fake.content("alpha", "alpha.pth")
    text = store.records_path.read_text(encoding="utf-8")
    recorded = json.loads(text)["files"]["alpha/alpha.pth"]["recorded"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", recorded)
    assert before <= datetime.fromisoformat(recorded) <= after
    rec = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "mtime_ns": st.st_mtime_ns,
           "ino": st.st_ino, "ctime_ns": st.st_ctime_ns, "source": "found in the store", "recorded": recorded}
    rec["mac"] = _mac("alpha/alpha.pth", rec)
    assert text == json.dumps({"format": 2, "files": {"alpha/alpha.pth": rec}}, indent=1, sort_keys=True)
    assert store._seen == {"alpha/alpha.pth": (len(data), st.st_mtime_ns, st.st_ino, st.st_ctime_ns, rec["sha256"])}
    # a second file is added next to the first, the first kept as it was
    store.status("beta")
    files = json.loads(store.records_path.read_text())["files"]
    assert sorted(files) == ["alpha/alpha.pth", "beta/beta-prefix.pt"] and files["alpha/alpha.pth"] == rec


def test_the_source_of_a_record_is_kept_on_rehash(store: ModelStore, fake: FakeModels) -> None:
    install_all(fake, store.root)
    p = store.root / "alpha" / "alpha.pth"
    sha = hashlib.sha256(fake.content("alpha", "alpha.pth")).hexdigest()
    store._record("alpha", "alpha.pth", p, sha, "import: /media/usb")
    assert store.records()["alpha/alpha.pth"]["source"] == "import: /media/usb"
    assert store.verify("alpha", full=True).ok
    rec = store.records()["alpha/alpha.pth"]
    assert rec["source"] == "import: /media/usb" and rec["mac"] == _mac("alpha/alpha.pth", rec)
    store._record("alpha", "alpha.pth", p, sha, "download: http://mirror/alpha.pth")
    assert store.records()["alpha/alpha.pth"]["source"] == "download: http://mirror/alpha.pth"


def test_records_without_a_station_key_have_no_mac(
    store: ModelStore, fake: FakeModels, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hashed: list[Path]
) -> None:
    install_all(fake, store.root)
    bad = tmp_path / "bad.key"
    bad.write_text("zz\n")
    monkeypatch.setenv("INSPECTOR_KEY_FILE", str(bad))
    assert store.status("alpha") == "installed"
    rec = store.records()["alpha/alpha.pth"]
    assert sorted(rec) == ["ctime_ns", "ino", "mtime_ns", "recorded", "sha256", "size", "source"]
    assert ModelStore(store.root, store.manifest_path).status("alpha") == "installed"
    assert len(hashed) == 2  # an unsigned record is never trusted


def test_records_lock_file_and_flock(store: ModelStore, fake: FakeModels, monkeypatch: pytest.MonkeyPatch) -> None:
    import fcntl

    install_all(fake, store.root)
    calls: list[int] = []
    real = fcntl.flock
    monkeypatch.setattr(fcntl, "flock", lambda fh, op: calls.append(op) or real(fh, op))
    old = os.umask(0o022)
    try:
        store.status("alpha")
    finally:
        os.umask(old)
    lock = store.root / ".installed.lock"
    assert lock.is_file() and not lock.is_symlink() and (lock.stat().st_mode & 0o7777) == 0o644
    assert calls == [fcntl.LOCK_EX, fcntl.LOCK_UN]
    assert store.records_path.is_file()


def test_records_lock_never_follows_a_symlink(
    store: ModelStore, fake: FakeModels, tmp_path: Path, warnings_log: pytest.LogCaptureFixture, hashed: list[Path]
) -> None:
    install_all(fake, store.root)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (store.root / ".installed.lock").symlink_to(victim)
    assert store.status("alpha") == "installed"
    assert victim.read_text() == "precious" and not store.records_path.exists()
    [msg] = _messages(warnings_log, logging.WARNING)
    assert re.fullmatch(re.escape(f"{store.records_path}: cannot record the digest of alpha/alpha.pth (") +
                        r"\[Errno 40\] Too many levels of symbolic links: .*\)", msg)
    assert store.status("alpha") == "installed" and len(hashed) == 1  # remembered in this process


# ---------------------------------------------------------------------------------- the digest cache
def test_memo_record_and_full_hashing(store: ModelStore, fake: FakeModels, hashed: list[Path]) -> None:
    install_all(fake, store.root)
    p = store.root / "alpha" / "alpha.pth"
    assert store.status("alpha") == "installed" and hashed == [p]
    store.records_path.unlink()
    assert store.status("alpha") == "installed" and hashed == [p]  # remembered in this process
    fresh = ModelStore(store.root, store.manifest_path)
    assert fresh.status("alpha") == "installed" and len(hashed) == 2  # no record, nothing remembered
    other = ModelStore(store.root, store.manifest_path)
    assert other.status("alpha") == "installed" and len(hashed) == 2  # the signed record stands in
    st = p.stat()
    sha = hashlib.sha256(fake.content("alpha", "alpha.pth")).hexdigest()
    assert other._seen == {"alpha/alpha.pth": (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns, sha)}
    store.records_path.unlink()
    assert other.status("alpha") == "installed" and len(hashed) == 2  # remembered from the record
    assert other.verify("alpha", full=False).ok and len(hashed) == 2
    assert other.check_file("alpha", "alpha.pth").state == "ok" and len(hashed) == 2  # check_file: cached too
    install_all(fake, store.root)
    assert other.status("textenc") == "installed" and other.status("beta") == "installed"
    n = len(hashed)
    assert other.path("textenc") == store.root / "textenc" and other.path("beta") == store.root / "beta" / "beta-prefix.pt"
    assert len(hashed) == n  # path() of a checked folder or file hashes nothing again
    assert other.verify("alpha").ok and len(hashed) == n + 1  # verify re-hashes by default
    assert other.check_file("alpha", "alpha.pth", full=True).state == "ok" and len(hashed) == n + 2


def test_a_changed_file_is_hashed_again(store: ModelStore, fake: FakeModels, hashed: list[Path]) -> None:
    install_all(fake, store.root)
    p = store.root / "alpha" / "alpha.pth"
    assert store.status("alpha") == "installed"
    st = p.stat()
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # same content, another mtime
    assert store.status("alpha") == "installed" and len(hashed) == 2
    fresh = ModelStore(store.root, store.manifest_path)
    assert fresh.status("alpha") == "installed" and len(hashed) == 2  # re-recorded after the change


def test_hashing_progress_and_log(tmp_path: Path, warnings_log: pytest.LogCaptureFixture) -> None:
    big = bytes(range(256)) * (10 * 1024)  # 2.5 MiB: three 1 MiB chunks
    s = _one(tmp_path, {"big.bin": big, "one.bin": b"1", "empty.bin": None, "half.bin": b"h" * 1_500_000},
             digests=False)
    (s.root / "thing" / "empty.bin").write_bytes(b"")
    seen: list[tuple[float, str]] = []
    check = s.check_file("thing", "big.bin", progress=lambda f, m: seen.append((f, m)))
    assert check == FileCheck("thing", "big.bin", s.root / "thing" / "big.bin", "ok",
                              "present (no published digest to check)")
    assert seen == [(0.4, "verifying thing/big.bin"), (0.8, "verifying thing/big.bin"), (1.0, "verifying thing/big.bin")]
    seen.clear()
    s.check_file("thing", "one.bin", progress=lambda f, m: seen.append((f, m)))
    assert seen == [(1.0, "verifying thing/one.bin")]
    seen.clear()
    assert s.check_file("thing", "empty.bin", progress=lambda f, m: seen.append((f, m))).detail == "empty file"
    assert seen == []
    assert _messages(warnings_log, logging.INFO) == [
        f"hashing {s.root / 'thing' / 'big.bin'} (3 MB)", f"hashing {s.root / 'thing' / 'one.bin'} (0 MB)",
        f"hashing {s.root / 'thing' / 'empty.bin'} (0 MB)"]
    s.check_file("thing", "half.bin")
    assert _messages(warnings_log, logging.INFO)[-1] == f"hashing {s.root / 'thing' / 'half.bin'} (2 MB)"  # 1.5 MB


# ---------------------------------------------------------------------------------- checks
def test_check_file_states_and_details(store: ModelStore, fake: FakeModels, hashed: list[Path]) -> None:
    root = store.root
    assert store.check_file("alpha", "alpha.pth") == FileCheck(
        "alpha", "alpha.pth", root / "alpha" / "alpha.pth", "missing", "not installed")
    (root / "alpha" / "alpha.pth").mkdir(parents=True)
    assert store.check_file("alpha", "alpha.pth") == FileCheck(
        "alpha", "alpha.pth", root / "alpha" / "alpha.pth", "corrupt", "is not a regular file")
    (root / "alpha" / "alpha.pth").rmdir()
    install_all(fake, root)
    n = len(fake.content("alpha", "alpha.pth"))
    (root / "alpha" / "alpha.pth").write_bytes(fake.content("alpha", "alpha.pth")[:-1])
    assert store.check_file("alpha", "alpha.pth") == FileCheck(
        "alpha", "alpha.pth", root / "alpha" / "alpha.pth", "corrupt", f"size {n - 1} bytes, expected {n} (incomplete copy or download?)")
    assert hashed == []  # no hashing for a wrong size
    assert store.check_file("alpha", "alpha.pth", full=True).detail == f"size {n - 1} bytes, expected {n} (incomplete copy or download?)"
    (root / "alpha" / "alpha.pth").write_bytes(fake.content("alpha", "alpha.pth"))
    assert store.check_file("alpha", "alpha.pth") == FileCheck(
        "alpha", "alpha.pth", root / "alpha" / "alpha.pth", "ok", "verified")
    bad = b"x" * len(fake.content("beta", "beta-prefix.pt"))
    (root / "beta" / "beta-prefix.pt").write_bytes(bad)
    want = hashlib.sha256(fake.content("beta", "beta-prefix.pt")).hexdigest()[:8]
    got = hashlib.sha256(bad).hexdigest()
    assert store.check_file("beta", "beta-prefix.pt") == FileCheck(
        "beta", "beta-prefix.pt", root / "beta" / "beta-prefix.pt", "corrupt",
        f"sha256 {got[:12]}… does not match the published sha256 prefix {want}")
    assert store.check_file("adapter", "adapter_b.pth") == FileCheck(
        "adapter", "adapter_b.pth", root / "adapter" / "adapter_b.pth", "ok", "verified")  # git blob id only


@pytest.mark.parametrize("exc, detail", [(PermissionError(13, "Permission denied"), "cannot read (Permission denied)"),
                                         (OSError("device gone"), "cannot read (device gone)")])
def test_unreadable_file_is_corrupt(
    store: ModelStore, fake: FakeModels, monkeypatch: pytest.MonkeyPatch, exc: OSError, detail: str
) -> None:
    install_all(fake, store.root)

    def fail(p: object, cb: object = None) -> str:
        raise exc

    monkeypatch.setattr(ms, "sha256_of", fail)
    assert store.check_file("alpha", "alpha.pth") == FileCheck(
        "alpha", "alpha.pth", store.root / "alpha" / "alpha.pth", "corrupt", detail)


def test_verify_every_entry_in_order(store: ModelStore, fake: FakeModels) -> None:
    install_all(fake, store.root)
    (store.root / "textenc" / "model.safetensors").unlink()
    (store.root / "beta" / "beta-prefix.pt").unlink()
    (store.root / "detector" / "det.pth").write_bytes(b"junk")
    report = store.verify()
    assert report.statuses == {"alpha": "installed", "beta": "missing", "textenc": "installed",
                               "detector": "corrupt", "adapter": "installed"}
    assert [(c.key, c.file, c.state, c.needed) for c in report.checks] == [
        ("alpha", "alpha.pth", "ok", True), ("beta", "beta-prefix.pt", "missing", True),
        ("textenc", "config.json", "ok", True), ("textenc", "vocab.txt", "ok", True),
        ("textenc", "model.safetensors", "missing", False), ("textenc", "pytorch_model.bin", "ok", True),
        ("detector", "det.pth", "corrupt", True), ("adapter", "adapter_a.pth", "ok", True),
        ("adapter", "adapter_b.pth", "ok", True)]
    n = len(fake.content("detector", "det.pth"))
    assert report.checks[6].detail == f"size 4 bytes, expected {n} (incomplete copy or download?)"
    assert [c.file for c in report.problems()] == ["beta-prefix.pt", "det.pth"]
    one = store.verify("textenc")
    assert one.statuses == {"textenc": "installed"} and len(one.checks) == 4
    assert store.status("beta") == "missing" and store.status("detector") == "corrupt"
    assert store.status("textenc") == "installed"


def test_verify_progress_is_shared_by_size(tmp_path: Path) -> None:
    big = bytes(range(256)) * (10 * 1024)  # 2.5 MiB: three chunks
    models = {
        "e1": {"size_mb": 1, "files": {"a.bin": b"a"}},
        "e2": {"size_mb": 2, "files": {"b.bin": big, "gone.bin": None}},
        "e3": {"size_mb": 1, "files": {"c.bin": b"c", "d.bin": b"d"}},
    }
    manifest = {"models": {k: {"kind": "sam", "arch": "x", "licence": "MIT", "size_mb": v["size_mb"],
                               "files": {n: {} for n in v["files"]}} for k, v in models.items()}}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    for k, v in models.items():
        (tmp_path / "ps" / k).mkdir(parents=True)
        for n, d in v["files"].items():
            if d is not None:
                (tmp_path / "ps" / k / n).write_bytes(d)
    s = ModelStore(tmp_path / "ps", path)
    seen: list[tuple[float, str]] = []
    report = s.verify(progress=lambda f, m: seen.append((f, m)))
    assert report.statuses == {"e1": "installed", "e2": "missing", "e3": "installed"}
    assert seen == [
        (0.25, "verifying e1/a.bin"),
        (0.25 + 0.5 * 0.4, "verifying e2/b.bin"), (0.25 + 0.5 * 0.8, "verifying e2/b.bin"),
        (0.75, "verifying e2/b.bin"),
        (1.0, "verifying e3/c.bin"), (1.0, "verifying e3/d.bin"),
        (1.0, "verified"),
    ]
    seen.clear()
    s.verify("e3", progress=lambda f, m: seen.append((f, m)))
    assert seen == [(1.0, "verifying e3/c.bin"), (1.0, "verifying e3/d.bin"), (1.0, "verified")]


def test_installed_size_counts_the_files_present(store: ModelStore, fake: FakeModels) -> None:
    assert store.installed_size_mb("textenc") == 0.0
    install_all(fake, store.root)
    (store.root / "textenc" / "model.safetensors").unlink()
    (store.root / "textenc" / "model.safetensors").mkdir()  # a folder in the way is not counted
    want = sum(len(fake.content("textenc", f)) for f in ("config.json", "vocab.txt", "pytorch_model.bin"))
    assert store.installed_size_mb("textenc") == want / 1e6
    assert store.installed_size_mb("alpha") == len(fake.content("alpha", "alpha.pth")) / 1e6


# ---------------------------------------------------------------------------------- paths
def test_path_errors_name_key_file_and_fix(store: ModelStore, fake: FakeModels) -> None:
    root = store.root
    with pytest.raises(ModelMissingError) as miss:
        store.path("alpha")
    assert str(miss.value) == (f"model 'alpha' is not installed (expected {root / 'alpha' / 'alpha.pth'}). "
                               f"Install it with {fix('alpha')}.")
    assert miss.value.path == root / "alpha" / "alpha.pth"
    with pytest.raises(ModelMissingError) as miss:
        store.path("textenc", "vocab.txt")
    assert str(miss.value) == (f"model 'textenc' is not installed: file vocab.txt is missing "
                               f"(expected {root / 'textenc' / 'vocab.txt'}). Install it with {fix('textenc')}.")
    with pytest.raises(ModelMissingError) as miss:
        store.path("textenc")
    assert str(miss.value) == (f"model 'textenc' is not installed: missing config.json, vocab.txt, model.safetensors "
                               f"or pytorch_model.bin (expected {root / 'textenc'}). Install it with {fix('textenc')}.")
    assert miss.value.path == root / "textenc"
    (root / "textenc").mkdir(parents=True)
    (root / "textenc" / "vocab.txt").write_bytes(fake.content("textenc", "vocab.txt"))
    with pytest.raises(ModelMissingError) as miss:
        store.path("textenc")
    assert str(miss.value) == (f"model 'textenc' is not installed: missing config.json, model.safetensors or "
                               f"pytorch_model.bin (expected {root / 'textenc'}). Install it with {fix('textenc')}.")
    install_all(fake, root)
    assert store.path("alpha") == root / "alpha" / "alpha.pth"
    assert store.path("textenc") == root / "textenc"
    assert store.path("textenc", "vocab.txt") == root / "textenc" / "vocab.txt"
    (root / "alpha" / "alpha.pth").write_bytes(b"short")
    n = len(fake.content("alpha", "alpha.pth"))
    with pytest.raises(ModelCorruptError) as bad:
        store.path("alpha")
    assert str(bad.value) == (f"model 'alpha': {root / 'alpha' / 'alpha.pth'} is corrupt: size 5 bytes, expected {n} (incomplete copy or download?). "
                              f"Replace it with {fix('alpha')}.")
    (root / "textenc" / "vocab.txt").write_bytes(b"v")
    (root / "textenc" / "pytorch_model.bin").write_bytes(b"b")
    (root / "textenc" / "config.json").unlink()
    with pytest.raises(ModelCorruptError) as bad:
        store.path("textenc")
    nv = len(fake.content("textenc", "vocab.txt"))
    assert str(bad.value) == (f"model 'textenc': {root / 'textenc' / 'vocab.txt'} is corrupt: size 1 bytes, "
                              f"expected {nv} (incomplete copy or download?). Replace it with {fix('textenc')}.")
    with pytest.raises(ModelCorruptError, match=re.escape(f"{root / 'textenc' / 'vocab.txt'} is corrupt")):
        store.path("textenc", "vocab.txt")


def test_weights_file_choice(store: ModelStore, fake: FakeModels, tmp_path: Path) -> None:
    assert store.weights_file("adapter") == "adapter_a.pth"  # default_file
    assert store.weights_file("alpha") == "alpha.pth"
    assert store.weights_file("textenc") == "model.safetensors"  # nothing installed: the first alternative
    (store.root / "textenc").mkdir(parents=True)
    (store.root / "textenc" / "pytorch_model.bin").write_bytes(b"b")
    assert store.weights_file("textenc") == "pytorch_model.bin"  # the installed one
    (store.root / "textenc" / "model.safetensors").mkdir()
    assert store.weights_file("textenc") == "pytorch_model.bin"  # a folder is not an installed file
    (store.root / "textenc" / "model.safetensors").rmdir()
    (store.root / "textenc" / "model.safetensors").write_bytes(b"s")
    assert store.weights_file("textenc") == "model.safetensors"  # manifest order among installed ones
    s = _one(tmp_path, {"config.json": b"{}", "w.ckpt": b"w"}, install=False)
    assert s.weights_file("thing") == "w.ckpt"
    s = _one(tmp_path, {"a.pt": b"a", "cfg.yaml": b"c", "b.safetensors": b"b"}, install=False)
    with pytest.raises(ValueError) as err:
        s.weights_file("thing")
    assert str(err.value) == "model 'thing' holds several checkpoints (a.pt, b.safetensors); pass file="


def test_weights_file_without_any_checkpoint(tmp_path: Path) -> None:
    s = _one(tmp_path, {"config.json": b"{}", "vocab.txt": b"v"}, install=False)
    with pytest.raises(ValueError, match=r"^model 'thing' lists no checkpoint file \(none ends in \.pt, \.pth, \.bin, "
                       r"\.safetensors, \.ckpt\); pass file=, or set default_file in its manifest entry$"):
        s.weights_file("thing")


# ---------------------------------------------------------------------------------- loading
def test_load_state_dict_unwraps_drops_and_strips(tmp_path: Path) -> None:
    t = torch.arange(3.0)
    cases = [
        ({"model": {"module.a": t, "module.b": t}, "epoch": 1}, {"state_key": "model"}, ["a", "b"]),
        ({"module.a": t, "b": t}, {}, ["module.a", "b"]),  # not every key has the prefix: kept
        ({"module.a": t, "module.x": t}, {"drop_keys": ["module.x"]}, ["a"]),
        ({"a": t, "x": t, "y": t}, {"drop_keys": ["x", "y"]}, ["a"]),
        ({"a": t, "model": t}, {"state_key": "weights"}, ["a", "model"]),  # no such wrapper: the dict itself
        ({0: t, "module.a": t}, {}, [0, "module.a"]),
        ({"module.": t}, {}, [""]),
    ]
    for i, (obj, entry, keys) in enumerate(cases):
        d = tmp_path / f"c{i}"
        s = _one(d, {"w.pth": torch_bytes(obj)}, **entry)
        out = s.load_state_dict("thing")
        assert list(out) == keys, (i, list(out))
        assert all(torch.equal(v, t) for v in out.values())


@pytest.mark.parametrize(
    "obj, entry, kind",
    [([torch.ones(1)], {}, "list"), ({}, {}, "dict"), ({"model": torch.ones(1)}, {"state_key": "model"}, "Tensor"),
     ({"model": {}}, {"state_key": "model"}, "dict")],
)
def test_load_state_dict_refuses_what_is_not_a_state_dict(tmp_path: Path, obj: object, entry: dict, kind: str) -> None:
    s = _one(tmp_path, {"w.pth": torch_bytes(obj)}, **entry)
    p = s.root / "thing" / "w.pth"
    with pytest.raises(ModelCorruptError) as err:
        s.load_state_dict("thing")
    assert str(err.value) == f"model 'thing': {p} is corrupt: holds a {kind}, not a state dict. Replace it with {fix('thing')}."


def test_load_state_dict_file_and_map_location(store: ModelStore, fake: FakeModels, tmp_path: Path) -> None:
    install_all(fake, store.root)
    assert torch.equal(store.load_state_dict("adapter", "adapter_b.pth")["fc.0.weight"], torch.ones(2, 2))
    assert torch.equal(store.load_state_dict("adapter")["fc.0.weight"], torch.eye(2))
    meta = store.load_state_dict("alpha", map_location="meta")
    assert {k: (v.device.type, tuple(v.shape)) for k, v in meta.items()} == {"weight": ("meta", (2, 3)),
                                                                            "bias": ("meta", (2,))}
    (store.root / "beta" / "beta-prefix.pt").unlink()
    with pytest.raises(ModelMissingError, match="^model 'beta' is not installed "):
        store.load_state_dict("beta")


def test_load_refusal_names_the_manifest(tmp_path: Path) -> None:
    import argparse

    s = _one(tmp_path, {"w.pth": torch_bytes({"w": torch.ones(1), "a": argparse.Namespace()})})
    with pytest.raises(ModelCorruptError, match=re.escape(f"(manifest entry 'thing' in {s.manifest_path} allows")):
        s.load_state_dict("thing")
