"""The model store: manifest, status/verify, import, download (loopback server), safe loading."""

from __future__ import annotations

import logging

import argparse
import hashlib
import io
import json
import os
import tarfile
import urllib.request
import zipfile
from pathlib import Path

import pytest
import torch
import yaml

from inspector.models import store as store_mod
from inspector.models.store import bundle as bundle_mod
from inspector.models.store import checkpoint as checkpoint_mod
from inspector.models.store import model_store as model_store_mod
from inspector.models.store import (
    BundleRejectedError,
    ManifestError,
    ModelCorruptError,
    ModelDownloadError,
    ModelMissingError,
    ModelStore,
    UnknownModelError,
    load_manifest,
)
from inspector.profile import ModelChoice
from tests.support.fake_models import (
    ADAPTER_STATE,
    ALPHA_STATE,
    BETA_STATE,
    DET_STATE,
    FakeModels,
    install_all,
    make_fake_models,
)
from tests.support.http_files import FileServer

BRIEF_KEYS = {
    "clip_vit_b16_plus_240", "clip_vit_l14_336", "sam_vit_b", "sam_vit_l", "sam_vit_h",
    "groundingdino_swint_ogc", "bert_base_uncased", "wide_resnet50_2", "aprilgan_vitl14_336",
}


@pytest.fixture
def fake(tmp_path: Path) -> FakeModels:
    return make_fake_models(tmp_path / "manifest")


@pytest.fixture
def store(tmp_path: Path, fake: FakeModels) -> ModelStore:
    return ModelStore(tmp_path / "models", manifest_path=fake.manifest)


# ------------------------------------------------------------------------------ real manifest
def test_packaged_manifest_lists_every_checkpoint_the_pipelines_use(tmp_path: Path) -> None:
    s = ModelStore(tmp_path)
    keys = {e.key for e in s.entries()}
    assert BRIEF_KEYS <= keys
    defaults = ModelChoice()
    assert {defaults.clip, defaults.sam, defaults.grounding, defaults.backbone} <= keys
    for e in s.entries():
        assert e.kind in store_mod.KINDS and e.arch and e.licence and e.size_mb > 0
        for f in e.files:
            assert e.has_digest(f), f"{e.key}/{f} has no digest"
            assert f in e.urls or f in e.packaged, f"{e.key}/{f} has no source URL"
        assert all(r in keys for r in e.requires)


def test_packaged_manifest_facts(tmp_path: Path) -> None:
    s = ModelStore(tmp_path)
    clip = s.entry("clip_vit_b16_plus_240")
    assert clip.files == ["vit_b_16_plus_240-laion400m_e31-8fb26589.pt"]
    assert clip.sha256[clip.files[0]] == "8fb26589" and clip.arch == "ViT-B-16-plus-240"
    for key, name in [("sam_vit_b", "sam_vit_b_01ec64.pth"), ("sam_vit_l", "sam_vit_l_0b3195.pth"),
                      ("sam_vit_h", "sam_vit_h_4b8939.pth")]:
        e = s.entry(key)
        assert e.files == [name] and len(e.sha256[name]) == 64 and e.arch == key[4:]
    bert = s.entry("bert_base_uncased")
    assert {"config.json", "vocab.txt", "tokenizer_config.json"} <= set(bert.files)
    assert ["model.safetensors", "pytorch_model.bin"] in bert.groups()
    assert "bert_base_uncased" in s.entry("groundingdino_swint_ogc").requires
    adapter = s.entry("aprilgan_vitl14_336")
    assert adapter.kind == "adapter" and adapter.state_key == "trainable_linearlayer"
    assert s.entry("clip_vit_l14_336").options["quick_gelu"] is True


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda m: m["models"]["alpha"].update(kind="laser"), "models.alpha.kind"),
        (lambda m: m["models"]["alpha"]["files"]["alpha.pth"].update(sha256="xyz123"), "hex digits"),
        (lambda m: m["models"]["alpha"].update(requires=["nope"]), "unknown keys ['nope']"),
        (lambda m: m["models"]["alpha"]["files"].update({"../evil.pth": {}}), "plain file name"),
        (lambda m: m["models"]["alpha"].update(colour="red"), "models.alpha.colour"),
        (lambda m: m["models"]["alpha"].update(safe_globals=["os.system"]), "not allowed"),
        (lambda m: m["models"]["alpha"]["files"]["alpha.pth"].update(url="ftp://x/y"), "http(s) URL"),
    ],
)
def test_manifest_errors_name_file_and_field(fake: FakeModels, mutate, message: str) -> None:
    data = yaml.safe_load(fake.manifest.read_text())
    mutate(data)
    fake.manifest.write_text(yaml.safe_dump(data))
    with pytest.raises(ManifestError) as err:
        load_manifest(fake.manifest)
    assert str(fake.manifest) in str(err.value) and message in str(err.value)


def test_manifest_broken_yaml(fake: FakeModels) -> None:
    fake.manifest.write_text("models: [unclosed\n")
    with pytest.raises(ManifestError, match="not valid YAML"):
        load_manifest(fake.manifest)


def test_unknown_key_lists_known_keys(store: ModelStore) -> None:
    with pytest.raises(UnknownModelError) as err:
        store.entry("gamma")
    assert "gamma" in str(err.value) and "alpha" in str(err.value) and "textenc" in str(err.value)
    assert isinstance(err.value, KeyError)


def test_from_settings_uses_model_dir(tmp_settings) -> None:
    s = ModelStore.from_settings()
    assert s.root == tmp_settings.model_dir
    assert str(s.root).startswith(os.environ["INSPECTOR_HOME"])


# ------------------------------------------------------------------------------ missing / status
def test_missing_model_error_names_key_path_and_command(store: ModelStore) -> None:
    assert store.status("alpha") == "missing"
    with pytest.raises(ModelMissingError) as err:
        store.path("alpha")
    e = err.value
    assert e.key == "alpha" and e.path == store.root / "alpha" / "alpha.pth"
    assert "inspector models download alpha" in str(e) and "inspector models import" in str(e)
    assert str(e.path) in str(e)


def test_files_copied_by_hand_are_verified_and_recorded(store: ModelStore, fake: FakeModels) -> None:
    install_all(fake, store.root)
    assert {e.key: store.status(e.key) for e in store.entries()} == dict.fromkeys(
        ["alpha", "beta", "textenc", "detector", "adapter"], "installed"
    )
    rec = json.loads(store.records_path.read_text())["files"]
    assert rec["alpha/alpha.pth"]["sha256"] == hashlib.sha256(fake.content("alpha", "alpha.pth")).hexdigest()
    assert rec["alpha/alpha.pth"]["size"] == len(fake.content("alpha", "alpha.pth"))


def test_status_uses_recorded_digest_until_the_file_changes(
    store: ModelStore, fake: FakeModels, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_all(fake, store.root)
    assert store.status("alpha") == "installed"
    calls: list[Path] = []
    real = store_mod.sha256_of
    monkeypatch.setattr(model_store_mod, "sha256_of", lambda p, cb=None: calls.append(p) or real(p, cb))
    assert store.status("alpha") == "installed"
    assert calls == []  # cached: size and mtime unchanged
    assert store.verify("alpha", full=True).ok
    assert len(calls) == 1  # full verification always re-hashes


def test_read_only_store_hashes_once_per_process(
    store: ModelStore, fake: FakeModels, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    install_all(fake, store.root)
    # other tests may reconfigure logging (CLI runs); capture this logger explicitly
    caplog.set_level(logging.WARNING, logger=store_mod.log.name)
    monkeypatch.setattr(store_mod.log, "disabled", False)

    def refuse(*args: object) -> None:
        raise PermissionError(13, "Read-only file system")

    monkeypatch.setattr(os, "replace", refuse)
    calls: list[Path] = []
    real = store_mod.sha256_of
    monkeypatch.setattr(model_store_mod, "sha256_of", lambda p, cb=None: calls.append(p) or real(p, cb))
    assert store.status("alpha") == "installed" and store.status("alpha") == "installed"
    assert len(calls) == 1 and not store.records_path.exists()
    assert "cannot record the digest" in caplog.text


def test_same_size_corruption_is_found_by_hash(store: ModelStore, fake: FakeModels) -> None:
    install_all(fake, store.root)
    assert store.status("alpha") == "installed"
    p = store.root / "alpha" / "alpha.pth"
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    st = p.stat()
    p.write_bytes(bytes(data))
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size and mtime, but a new ctime
    assert store.status("alpha") == "corrupt"  # issue 16 item 14: the record is tied to ctime too
    report = store.verify("alpha", full=True)
    assert report.status("alpha") == "corrupt" and report.corrupt_keys == ["alpha"]
    assert "sha256" in report.problems("alpha")[0].detail
    assert store.status("alpha") == "corrupt"  # the full check refreshed the record
    with pytest.raises(ModelCorruptError) as err:
        store.path("alpha")
    assert "inspector models download alpha" in str(err.value)


def test_truncated_file_is_corrupt_without_hashing(store: ModelStore, fake: FakeModels) -> None:
    install_all(fake, store.root)
    p = store.root / "alpha" / "alpha.pth"
    p.write_bytes(p.read_bytes()[:-10])
    assert store.status("alpha") == "corrupt"
    check = store.check_file("alpha", "alpha.pth")
    assert "expected" in check.detail and str(len(fake.content("alpha", "alpha.pth"))) in check.detail


def test_prefix_digest_and_git_blob_id(store: ModelStore, fake: FakeModels) -> None:
    install_all(fake, store.root)
    assert store.status("beta") == "installed" and store.status("adapter") == "installed"
    p = store.root / "adapter" / "adapter_b.pth"
    data = bytearray(p.read_bytes())
    data[-1] ^= 0xFF
    p.write_bytes(bytes(data))
    check = store.check_file("adapter", "adapter_b.pth")
    assert check.state == "corrupt" and "git blob id" in check.detail


def test_git_blob_id_matches_git(tmp_path: Path) -> None:
    p = tmp_path / "f.txt"
    p.write_bytes(b"test content\n")
    assert store_mod.git_blob_sha1_of(p) == "d670460b4b4aece5915caf5c68d12f560a9fe3e4"  # `git hash-object`


def test_multi_file_entry_needs_one_alternative(store: ModelStore, fake: FakeModels) -> None:
    root = store.root / "textenc"
    root.mkdir(parents=True)
    for f in ("config.json", "vocab.txt"):
        (root / f).write_bytes(fake.content("textenc", f))
    assert store.status("textenc") == "missing"
    with pytest.raises(ModelMissingError, match="model.safetensors or pytorch_model.bin"):
        store.path("textenc")
    (root / "pytorch_model.bin").write_bytes(fake.content("textenc", "pytorch_model.bin"))
    assert store.status("textenc") == "installed"
    assert store.path("textenc") == root  # the folder, as transformers wants it
    report = store.verify("textenc")
    assert report.ok and report.problems() == []  # the absent alternative is not a problem
    assert store.weights_file("textenc") == "pytorch_model.bin"
    (root / "model.safetensors").write_bytes(b"garbage")
    assert store.status("textenc") == "corrupt"


# ------------------------------------------------------------------------------ import
def _archive(src: Path, dest: Path, kind: str) -> Path:
    if kind == "zip":
        with zipfile.ZipFile(dest, "w") as zf:
            for p in sorted(src.rglob("*")):
                if p.is_file():
                    zf.write(p, p.relative_to(src).as_posix())
    else:
        with tarfile.open(dest, "w:gz") as tf:
            tf.add(src, arcname="bundle")
    return dest


@pytest.mark.parametrize("layout", ["nested", "flat", "zip", "tar.gz"])
def test_import_bundle_layouts(store: ModelStore, fake: FakeModels, tmp_path: Path, layout: str) -> None:
    src = fake.bundle(tmp_path / "bundle", flat=layout == "flat", keys={"alpha", "textenc"})
    (src / "README.txt").write_text("not a model")  # unknown files are ignored
    if layout in ("zip", "tar.gz"):
        src = _archive(src, tmp_path / f"bundle.{layout}", layout)
    seen: list[float] = []
    keys = store.import_from(src, progress=lambda f, m: seen.append(f))
    assert sorted(keys) == ["alpha", "textenc"]
    assert store.status("alpha") == "installed" and store.status("textenc") == "installed"
    assert (store.root / "alpha" / "alpha.pth").read_bytes() == fake.content("alpha", "alpha.pth")
    rec = store.records()
    assert rec["textenc/vocab.txt"]["source"].startswith("import:")
    assert seen and seen[-1] == 1.0 and seen == sorted(seen)
    assert not list(store.root.rglob("*.import-tmp")) and not list(store.root.rglob(".*.tmp"))


def test_import_rejects_corrupt_files_but_keeps_good_ones(store: ModelStore, fake: FakeModels, tmp_path: Path) -> None:
    src = fake.bundle(tmp_path / "bundle", keys={"alpha", "beta"}, corrupt={("beta", "beta-prefix.pt")})
    with pytest.raises(BundleRejectedError) as err:
        store.import_from(src)
    assert "beta/beta-prefix.pt" in str(err.value) and "sha256" in str(err.value)
    assert err.value.imported == ["alpha"]
    assert store.status("alpha") == "installed"
    assert store.status("beta") == "missing"  # never installed, so it cannot be mistaken for good
    assert not list(store.root.rglob("*.import-tmp")) and not list(store.root.rglob(".*.tmp"))


def test_import_replaces_a_corrupt_installed_file(store: ModelStore, fake: FakeModels, tmp_path: Path) -> None:
    install_all(fake, store.root)
    (store.root / "alpha" / "alpha.pth").write_bytes(b"broken")
    assert store.status("alpha") == "corrupt"
    store.import_from(fake.bundle(tmp_path / "bundle", keys={"alpha"}))
    assert store.status("alpha") == "installed"


def test_import_nothing_recognised_and_missing_source(store: ModelStore, tmp_path: Path) -> None:
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("x")
    with pytest.raises(store_mod.ModelStoreError, match="no known model file"):
        store.import_from(tmp_path / "junk")
    with pytest.raises(FileNotFoundError):
        store.import_from(tmp_path / "absent")
    (tmp_path / "file.bin").write_bytes(b"not an archive")
    with pytest.raises(store_mod.ModelStoreError, match="not a folder"):
        store.import_from(tmp_path / "file.bin")


def test_import_store_folder_onto_itself(store: ModelStore, fake: FakeModels) -> None:
    install_all(fake, store.root)
    assert sorted(store.import_from(store.root)) == ["adapter", "alpha", "beta", "detector", "textenc"]
    assert store.verify().ok


# ------------------------------------------------------------------------------ loading
def test_load_state_dict_plain_and_unwrapped(store: ModelStore, fake: FakeModels) -> None:
    install_all(fake, store.root)
    sd = store.load_state_dict("alpha")
    assert set(sd) == set(ALPHA_STATE) and torch.equal(sd["weight"], ALPHA_STATE["weight"])
    beta = store.load_state_dict("beta")  # {"state_dict": {"module.proj": ...}} -> {"proj": ...}
    assert set(beta) == {"proj"} and torch.equal(beta["proj"], BETA_STATE["proj"])
    det = store.load_state_dict("detector")  # state_key "model"; "epoch" dropped with the wrapper
    assert set(det) == set(DET_STATE)
    adapter = store.load_state_dict("adapter")  # default_file adapter_a.pth
    assert torch.equal(adapter["fc.0.weight"], ADAPTER_STATE["fc.0.weight"])
    assert torch.equal(store.load_state_dict("adapter", "adapter_b.pth")["fc.0.weight"], torch.ones(2, 2))


def test_load_prefers_safetensors_alternative(store: ModelStore, fake: FakeModels) -> None:
    install_all(fake, store.root)
    sd = store.load_state_dict("textenc")
    assert torch.equal(sd["emb"], torch.ones(2, 2))  # model.safetensors (listed first), not the .bin
    (store.root / "textenc" / "model.safetensors").unlink()
    assert torch.equal(store.load_state_dict("textenc")["emb"], torch.zeros(2, 2))


class _Gadget:
    """Not a tensor: a weights-only load must refuse to build it."""

    def __init__(self) -> None:
        self.armed = True


def _manifest_for(tmp_path: Path, name: str, data: bytes, **entry: object) -> Path:
    manifest = {"models": {"thing": {"kind": "sam", "arch": "x", "licence": "MIT", "size_mb": 1, **entry,
                                     "files": {name: {"sha256": hashlib.sha256(data).hexdigest()}}}}}
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(manifest))
    (tmp_path / "store" / "thing").mkdir(parents=True)
    (tmp_path / "store" / "thing" / name).write_bytes(data)
    return path


def test_load_refuses_arbitrary_pickles(tmp_path: Path) -> None:
    buf = io.BytesIO()
    torch.save({"w": torch.ones(1), "payload": _Gadget()}, buf)
    s = ModelStore(tmp_path / "store", _manifest_for(tmp_path, "evil.pth", buf.getvalue()))
    with pytest.raises(store_mod.CheckpointRefusedError,
                       match=r"objects of type tests.test_store._Gadget, which Inspector's weights-only loader "
                             r"refuses \(manifest entry 'thing' in .*m.yaml") as err:
        s.load_state_dict("thing")
    assert err.value.refused == ["tests.test_store._Gadget"] and "weights_only" not in str(err.value)


def test_load_allows_listed_safe_globals(tmp_path: Path) -> None:
    buf = io.BytesIO()
    torch.save({"model": {"w": torch.ones(2)}, "args": argparse.Namespace(lr=0.1)}, buf)
    data = buf.getvalue()
    s = ModelStore(tmp_path / "store", _manifest_for(tmp_path, "ckpt.pth", data, state_key="model"))
    with pytest.raises(ModelCorruptError):  # not allow-listed for this entry
        s.load_state_dict("thing")
    (tmp_path / "store").rename(tmp_path / "old")
    s = ModelStore(tmp_path / "store", _manifest_for(
        tmp_path, "ckpt.pth", data, state_key="model", safe_globals=["argparse.Namespace"]))
    assert torch.equal(s.load_state_dict("thing")["w"], torch.ones(2))


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_load_torchscript_archive(tmp_path: Path) -> None:
    module = torch.jit.script(torch.nn.Linear(3, 2))
    buf = io.BytesIO()
    torch.jit.save(module, buf)
    s = ModelStore(tmp_path / "store", _manifest_for(tmp_path, "ts.pt", buf.getvalue(), drop_keys=["bias"],
                                                      loader="torchscript"))
    sd = s.load_state_dict("thing")
    assert set(sd) == {"weight"} and torch.equal(sd["weight"], module.weight.detach())


def test_load_unreadable_checkpoint_is_corrupt(tmp_path: Path) -> None:
    s = ModelStore(tmp_path / "store", _manifest_for(tmp_path, "junk.pth", b"definitely not a checkpoint"))
    with pytest.raises(ModelCorruptError, match="not a readable PyTorch checkpoint"):
        s.load_state_dict("thing")


# ------------------------------------------------------------------------------ download
@pytest.fixture
def server(fake: FakeModels):
    with FileServer(files=fake.served()) as srv:
        yield srv


def test_download_from_mirror(store: ModelStore, fake: FakeModels, server: FileServer) -> None:
    seen: list[float] = []
    keys = store.download("detector", base_url=server.url, progress=lambda f, m: seen.append(f))
    assert keys == ["detector", "textenc"]  # what the detector requires comes along
    assert store.status("detector") == "installed" and store.status("textenc") == "installed"
    paths = [r.path for r in server.requests]
    assert "/textenc/model.safetensors" in paths and "/textenc/pytorch_model.bin" not in paths
    assert seen[-1] == 1.0 and seen == sorted(seen)
    assert store.records()["detector/det.pth"]["source"] == f"download:{server.url}/detector/det.pth"
    assert store.download("detector", base_url=server.url) == []  # nothing left to fetch


def test_download_uses_manifest_urls(tmp_path: Path) -> None:
    with FileServer() as srv:
        fake = make_fake_models(tmp_path / "m", url_base=srv.url)
        srv.files.update(fake.served())
        s = ModelStore(tmp_path / "models", fake.manifest)
        assert s.download("alpha") == ["alpha"]
        assert s.status("alpha") == "installed"


def test_download_checksum_mismatch_removes_the_file(store: ModelStore, fake: FakeModels, server: FileServer) -> None:
    server.files["/alpha/alpha.pth"] = b"x" * len(fake.content("alpha", "alpha.pth"))
    with pytest.raises(ModelCorruptError) as err:
        store.download("alpha", base_url=server.url)
    assert "sha256" in str(err.value) and "removed" in str(err.value)
    assert not (store.root / "alpha" / "alpha.pth").exists()
    assert not (store.root / "alpha" / "alpha.pth.part").exists()


def test_download_resumes_a_partial_file(store: ModelStore, fake: FakeModels, server: FileServer) -> None:
    data = fake.content("alpha", "alpha.pth")
    part = store.root / "alpha" / "alpha.pth.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(data[:100])
    store.download("alpha", base_url=server.url)
    assert server.requests[-1].range == "bytes=100-"
    assert (store.root / "alpha" / "alpha.pth").read_bytes() == data
    assert not part.exists() and store.status("alpha") == "installed"


def test_interrupted_download_keeps_part_and_resumes(store: ModelStore, fake: FakeModels, server: FileServer) -> None:
    data = fake.content("alpha", "alpha.pth")
    server.cut_after = 200
    with pytest.raises(ModelDownloadError, match="run the same command again to resume"):
        store.download("alpha", base_url=server.url)
    part = store.root / "alpha" / "alpha.pth.part"
    assert part.read_bytes() == data[:200]
    assert store.status("alpha") == "missing"
    store.download("alpha", base_url=server.url)
    assert server.requests[-1].range == "bytes=200-"
    assert store.status("alpha") == "installed" and not part.exists()


def test_download_restarts_when_server_ignores_range(store: ModelStore, fake: FakeModels, server: FileServer) -> None:
    server.support_range = False
    part = store.root / "alpha" / "alpha.pth.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"stale bytes from another file")
    store.download("alpha", base_url=server.url)
    assert (store.root / "alpha" / "alpha.pth").read_bytes() == fake.content("alpha", "alpha.pth")


def test_download_complete_part_and_http_errors(store: ModelStore, fake: FakeModels, server: FileServer) -> None:
    data = fake.content("alpha", "alpha.pth")
    part = store.root / "alpha" / "alpha.pth.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(data)  # whole file already there: the server answers 416
    store.download("alpha", base_url=server.url)
    assert store.status("alpha") == "installed"
    with pytest.raises(ModelDownloadError, match="HTTP 404"):
        store.download("beta", base_url=server.url + "/nowhere")
    with pytest.raises(ModelDownloadError, match="cannot reach"):
        store.download("beta", base_url="http://127.0.0.1:9", timeout=2)


# ------------------------------------------------------------------------------ issue 16 items 10, 11, 14
def test_forged_installed_json_cannot_make_a_tampered_file_installed(store: ModelStore, fake: FakeModels) -> None:
    install_all(fake, store.root)
    assert store.status("alpha") == "installed"
    p = store.root / "alpha" / "alpha.pth"
    good = fake.content("alpha", "alpha.pth")
    p.write_bytes(b"\0" * len(good))  # tampered, same size
    st = p.stat()
    records = json.loads(store.records_path.read_text())
    rec = records["files"]["alpha/alpha.pth"]
    # the forger rewrites the record to match the tampered file (but cannot compute the station's MAC)
    rec.update(size=st.st_size, mtime_ns=st.st_mtime_ns, ino=st.st_ino, ctime_ns=st.st_ctime_ns,
               sha256=hashlib.sha256(good).hexdigest())
    store.records_path.write_text(json.dumps(records))
    fresh = ModelStore(store.root, manifest_path=fake.manifest)  # a new process: no in-memory memo
    assert fresh.status("alpha") == "corrupt"
    with pytest.raises(ModelCorruptError, match="sha256"):
        fresh.load_state_dict("alpha")


def test_record_without_ctime_or_mac_is_not_trusted(
    store: ModelStore, fake: FakeModels, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_all(fake, store.root)
    assert store.status("alpha") == "installed"
    rec = store.records()["alpha/alpha.pth"]
    assert {"ino", "ctime_ns", "mac"} <= set(rec)
    fresh = ModelStore(store.root, manifest_path=fake.manifest)
    calls: list[Path] = []
    real = store_mod.sha256_of
    monkeypatch.setattr(model_store_mod, "sha256_of", lambda p, cb=None: calls.append(Path(p)) or real(p, cb))
    assert fresh.status("alpha") == "installed" and calls == []  # signed and unchanged: no re-hash
    old_style = json.loads(store.records_path.read_text())
    for r in old_style["files"].values():  # what the old version wrote (size + mtime only)
        for k in ("ino", "ctime_ns", "mac"):
            r.pop(k, None)
    store.records_path.write_text(json.dumps(old_style))
    assert ModelStore(store.root, manifest_path=fake.manifest).status("alpha") == "installed"
    assert calls == [store.root / "alpha" / "alpha.pth"]  # hashed once, then re-recorded signed
    assert "mac" in store.records()["alpha/alpha.pth"]


def test_import_stops_at_the_manifest_size_from_the_zip_header(
    store: ModelStore, fake: FakeModels, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = tmp_path / "bomb.zip"
    with zipfile.ZipFile(big, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("alpha/alpha.pth", "w", force_zip64=True) as fh:
            for _ in range(64):
                fh.write(b"\0" * (1 << 20))  # 64 MiB of zeros, a few KB compressed
    assert big.stat().st_size < 1 << 20
    opened: list[str] = []
    real_open = zipfile.ZipFile.open
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, name, *a, **k: opened.append(str(name)) or
                        real_open(self, name, *a, **k))
    with pytest.raises(BundleRejectedError, match=r"size 67108864 bytes, expected \d+; nothing was copied"):
        store.import_from(big)
    assert opened == []  # refused from the header: not one byte decompressed
    assert not (store.root / "alpha" / "alpha.pth").exists() and not list(store.root.rglob(".*.tmp"))


def test_import_stream_is_capped_even_when_the_header_lies(store: ModelStore, fake: FakeModels) -> None:
    entry = store.entry("alpha")
    want = entry.file_bytes["alpha.pth"]
    produced = {"n": 0}

    class Endless(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, b) -> int:  # type: ignore[no-untyped-def]
            if produced["n"] >= 4 << 20:  # finite, so that a store without the cap cannot fill the disk
                return 0
            produced["n"] += len(b)
            b[:] = b"\0" * len(b)
            return len(b)

    member = bundle_mod._Member("alpha/alpha.pth", want, lambda: io.BufferedReader(Endless()))
    with pytest.raises(ModelCorruptError, match=f"more than the {want} bytes expected"):
        store._install_member(entry, "alpha.pth", member, "test", lambda n: None)
    assert produced["n"] <= want + (1 << 20) + 8192  # stopped right after the limit, not at the end
    assert not (store.root / "alpha").exists() or not any((store.root / "alpha").iterdir())


def test_import_checks_free_space_first_and_names_file_folder_and_fix(
    store: ModelStore, fake: FakeModels, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil
    from collections import namedtuple

    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: Usage(10**9, 10**9 - 1000, 1000))
    src = fake.bundle(tmp_path / "bundle", keys={"alpha"})
    with pytest.raises(store_mod.ModelStoreError) as err:
        store.import_from(src)
    msg = str(err.value)
    dest = store.root / "alpha" / "alpha.pth"
    assert str(dest) in msg and str(dest.parent) in msg and "free space there" in msg
    assert not dest.exists()


def test_import_disk_full_while_writing_names_file_folder_and_fix(
    store: ModelStore, fake: FakeModels, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import contextlib
    import errno

    @contextlib.contextmanager
    def full_disk(path, **kw):  # type: ignore[no-untyped-def]
        class W:
            def write(self, data: bytes) -> int:
                raise OSError(errno.ENOSPC, "No space left on device")
        yield W()

    monkeypatch.setattr(bundle_mod, "atomic_writer", full_disk)
    with pytest.raises(store_mod.ModelStoreError) as err:
        store.import_from(fake.bundle(tmp_path / "bundle", keys={"alpha"}))
    dest = store.root / "alpha" / "alpha.pth"
    assert str(dest) in str(err.value) and "no space left" in str(err.value) and "free space there" in str(err.value)


def test_import_never_follows_a_symlink_planted_at_the_temporary_name(
    store: ModelStore, fake: FakeModels, tmp_path: Path
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (store.root / "alpha").mkdir(parents=True)
    (store.root / "alpha" / "alpha.pth.import-tmp").symlink_to(victim)  # the old fixed temporary name
    store.import_from(fake.bundle(tmp_path / "bundle", keys={"alpha"}))
    assert victim.read_text() == "precious"
    assert store.status("alpha") == "installed"


def test_download_stops_at_the_manifest_size(store: ModelStore, fake: FakeModels, server: FileServer) -> None:
    want = len(fake.content("alpha", "alpha.pth"))
    server.files["/alpha/alpha.pth"] = b"x" * (8 << 20)  # a server sending far more than listed
    with pytest.raises(ModelCorruptError, match=rf"announces {8 << 20} bytes, the manifest lists {want}"):
        store.download("alpha", base_url=server.url)
    assert not (store.root / "alpha" / "alpha.pth.part").exists()


def test_download_without_length_is_cut_at_the_manifest_size(
    store: ModelStore, fake: FakeModels, monkeypatch: pytest.MonkeyPatch
) -> None:
    want = len(fake.content("alpha", "alpha.pth"))
    sent = {"n": 0}

    class Resp(io.RawIOBase):  # a chunked response with no Content-Length (4 MiB for a 1 KB file)
        status = 200
        headers: dict[str, str] = {}

        def readable(self) -> bool:
            return True

        def read(self, n: int = -1) -> bytes:  # type: ignore[override]
            n = 1 << 16 if n is None or n < 0 else n
            if sent["n"] >= 4 << 20:  # "endless" for this test; finite so a broken store cannot fill the disk
                return b""
            sent["n"] += n
            return b"y" * n

    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: Resp())
    with pytest.raises(ModelCorruptError, match=f"more than the {want} bytes expected"):
        store.download("alpha", base_url="http://127.0.0.1:9")
    assert sent["n"] <= want + 1
    assert not (store.root / "alpha" / "alpha.pth.part").exists()


def test_download_checks_free_space_first(
    store: ModelStore, fake: FakeModels, server: FileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil
    from collections import namedtuple

    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: Usage(10**9, 10**9 - 10, 10))
    with pytest.raises(store_mod.ModelStoreError, match=r"alpha.pth.part: needs .* MB are free .*free space there"):
        store.download("alpha", base_url=server.url)
    assert server.requests == []  # refused before any transfer


def test_download_never_follows_a_symlink_planted_at_the_part_name(
    store: ModelStore, fake: FakeModels, server: FileServer, tmp_path: Path
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (store.root / "alpha").mkdir(parents=True)
    (store.root / "alpha" / "alpha.pth.part").symlink_to(victim)
    store.download("alpha", base_url=server.url)
    assert victim.read_text() == "precious" and store.status("alpha") == "installed"
    assert server.requests[-1].range is None  # the planted link was not taken as a partial download


def test_a_link_planted_between_removing_the_part_and_creating_it_is_not_followed(
    store: ModelStore, fake: FakeModels, server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race the exclusive, no-follow create guards: someone plants a link at the part's name after the
    stale part was removed. The download fails and the link's target is untouched."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    real_unlink = Path.unlink

    def unlink_then_plant(self: Path, missing_ok: bool = False) -> None:
        real_unlink(self, missing_ok=missing_ok)
        if self.name == "alpha.pth.part":
            self.symlink_to(victim)

    monkeypatch.setattr(Path, "unlink", unlink_then_plant)
    with pytest.raises(store_mod.ModelDownloadError, match="File exists"):
        store.download("alpha", base_url=server.url)
    assert victim.read_text() == "precious"


def test_weights_only_refusal_is_the_projects_message_whatever_torch_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pickle

    buf = io.BytesIO()
    torch.save({"w": torch.ones(1), "payload": _Gadget()}, buf)
    s = ModelStore(tmp_path / "store", _manifest_for(tmp_path, "evil.pth", buf.getvalue()))

    def refuse(*a, **k):  # type: ignore[no-untyped-def]
        raise pickle.UnpicklingError(
            "Weights only load failed. Re-running `torch.load` with `weights_only` set to `False` will likely "
            "succeed, but it can result in arbitrary code execution."  # a wording with no 'GLOBAL x' in it
        )

    monkeypatch.setattr(torch, "load", refuse)
    with pytest.raises(store_mod.CheckpointRefusedError) as err:
        s.load_state_dict("thing")
    msg = str(err.value)
    assert "tests.test_store._Gadget" in msg and "manifest entry 'thing'" in msg and str(tmp_path / "m.yaml") in msg
    assert "`weights_only`" not in msg and "Re-running" not in msg and "arbitrary code" not in msg


def test_pickle_globals_are_read_without_unpickling(tmp_path: Path) -> None:
    buf = io.BytesIO()
    torch.save({"w": torch.ones(1), "args": argparse.Namespace(a=1), "g": _Gadget()}, buf)
    (tmp_path / "x.pth").write_bytes(buf.getvalue())
    found = checkpoint_mod._pickle_globals(tmp_path / "x.pth")
    assert "argparse.Namespace" in found and "tests.test_store._Gadget" in found
    assert checkpoint_mod._refused_types(tmp_path / "x.pth", ["argparse.Namespace"], Exception()) == [
        "tests.test_store._Gadget"]


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_torchscript_is_refused_for_entries_that_do_not_need_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = torch.jit.script(torch.nn.Linear(3, 2))
    buf = io.BytesIO()
    torch.jit.save(module, buf)
    s = ModelStore(tmp_path / "store", _manifest_for(tmp_path, "ts.pt", buf.getvalue()))
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: pytest.fail("TorchScript loaded for a plain entry"))
    with pytest.raises(store_mod.CheckpointRefusedError, match="TorchScript archive .*manifest entry 'thing'"):
        s.load_state_dict("thing")


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_torchscript_is_loaded_only_after_its_sha256_is_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = torch.jit.script(torch.nn.Linear(3, 2))
    buf = io.BytesIO()
    torch.jit.save(module, buf)
    data = buf.getvalue()
    s = ModelStore(tmp_path / "store", _manifest_for(tmp_path, "ts.pt", data, loader="torchscript"))
    other = torch.jit.script(torch.nn.Linear(3, 2))  # a different archive (different weights), same size?
    buf2 = io.BytesIO()
    torch.jit.save(other, buf2)
    (tmp_path / "store" / "thing" / "ts.pt").write_bytes(buf2.getvalue())
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: pytest.fail("TorchScript loaded before its sha256"))
    with pytest.raises(ModelCorruptError, match="sha256"):
        s.load_state_dict("thing")


def test_packaged_openai_clip_is_the_only_torchscript_entry(tmp_path: Path) -> None:
    s = ModelStore(tmp_path)
    assert [e.key for e in s.entries() if e.loader == "torchscript"] == ["clip_vit_l14_336"]
