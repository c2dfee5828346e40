"""``inspector models list|verify|import|download`` through the real argument parser."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inspector.cli import EXIT_FAILED_INPUTS, EXIT_OK, EXIT_USAGE, main
from tests.support.fake_models import FakeModels, install_all, make_fake_models
from tests.support.http_files import FileServer


@pytest.fixture
def fake(tmp_path: Path) -> FakeModels:
    return make_fake_models(tmp_path / "manifest")


@pytest.fixture
def models(tmp_path: Path, fake: FakeModels):
    """Run ``inspector models --model-dir … --manifest … ARGS``."""
    root = tmp_path / "models"

    def run(*args: str) -> int:
        return main(["models", "--model-dir", str(root), "--manifest", str(fake.manifest), *args])

    run.root = root  # type: ignore[attr-defined]
    return run


def test_list_packaged_manifest_on_empty_store(tmp_settings, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "list"]) == EXIT_OK
    out = capsys.readouterr().out
    assert str(tmp_settings.model_dir) in out
    for key in ("clip_vit_b16_plus_240", "sam_vit_h", "bert_base_uncased", "aprilgan_vitl14_336"):
        line = next(ln for ln in out.splitlines() if ln.startswith(key + " "))
        assert "missing" in line
    assert "Apache-2.0" in out and "2.6 GB" in out  # licence and approximate size of SAM ViT-H


def test_list_json_reports_status(models, fake: FakeModels, capsys: pytest.CaptureFixture[str]) -> None:
    install_all(fake, models.root)
    (models.root / "beta" / "beta-prefix.pt").write_bytes(b"tampered")
    assert models("list", "--json") == EXIT_OK
    data = json.loads(capsys.readouterr().out)
    status = {m["key"]: m["status"] for m in data["models"]}
    assert status == {"alpha": "installed", "beta": "corrupt", "textenc": "installed",
                      "detector": "installed", "adapter": "installed"}
    assert data["model_dir"] == str(models.root)


def test_verify_exit_codes(models, fake: FakeModels, capsys: pytest.CaptureFixture[str]) -> None:
    assert models("verify") == EXIT_OK  # empty store: nothing required, nothing corrupt
    assert models("verify", "alpha") == EXIT_FAILED_INPUTS  # required but missing
    assert "MISSING alpha" in capsys.readouterr().out
    install_all(fake, models.root)
    assert models("verify", "alpha", "detector") == EXIT_OK
    (models.root / "textenc" / "vocab.txt").write_bytes(b"[PAD]\n")
    assert models("verify", "detector") == EXIT_FAILED_INPUTS  # its required text encoder is corrupt
    out = capsys.readouterr().out
    assert "CORRUPT textenc" in out and "vocab.txt" in out and "expected" in out
    assert models("verify") == EXIT_FAILED_INPUTS  # corrupt anywhere fails a full check
    assert models("verify", "gamma") == EXIT_USAGE
    assert "unknown model key 'gamma'" in capsys.readouterr().err


def test_verify_packaged_manifest_finds_truncated_sam(tmp_settings, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_settings.model_dir / "sam_vit_b" / "sam_vit_b_01ec64.pth"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"\0" * 1024)  # an aborted copy
    assert main(["models", "verify", "--quick"]) == EXIT_FAILED_INPUTS
    out = capsys.readouterr().out
    assert "CORRUPT sam_vit_b" in out and "size 1024 bytes, expected 375042383" in out


def test_verify_profile_requirements(tmp_path: Path, models, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("inspector.detect.variation")
    from inspector.detect import detector_class
    from inspector.profile import new_profile

    folder = new_profile("widget", "widget", "variation", tmp_path / "profiles").parent
    needed = detector_class("variation").requires
    assert needed == ()  # the weight-free pipeline: nothing to install
    assert main(["models", "--model-dir", str(models.root), "verify", "--profile", str(folder)]) == EXIT_OK


def test_import_and_list(models, fake: FakeModels, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = fake.bundle(tmp_path / "usb", flat=True, keys={"alpha", "adapter"})
    assert models("import", str(bundle)) == EXIT_OK
    out = capsys.readouterr().out
    assert "installed alpha" in out and "installed adapter" in out
    assert models("verify", "alpha", "adapter") == EXIT_OK


def test_import_failures(models, fake: FakeModels, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert models("import", str(tmp_path / "nowhere")) == EXIT_USAGE
    assert "no such folder" in capsys.readouterr().err
    bad = fake.bundle(tmp_path / "bad", keys={"alpha"}, corrupt={("alpha", "alpha.pth")})
    assert models("import", str(bad)) == EXIT_FAILED_INPUTS
    err = capsys.readouterr().err
    assert "alpha/alpha.pth" in err and "rejected" in err
    assert not (models.root / "alpha" / "alpha.pth").exists()


def test_download_from_loopback_mirror(models, fake: FakeModels, capsys: pytest.CaptureFixture[str]) -> None:
    with FileServer(files=fake.served()) as srv:
        assert models("download", "detector", "--base-url", srv.url) == EXIT_OK
        out = capsys.readouterr().out
        assert "installed detector" in out and "installed textenc" in out
        srv.files["/alpha/alpha.pth"] = b"not the published file"
        assert models("download", "alpha", "--base-url", srv.url) == EXIT_FAILED_INPUTS
        assert "alpha" in capsys.readouterr().err
        assert models("download", "gamma", "--base-url", srv.url) == EXIT_USAGE


def test_models_needs_an_action() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["models"])
    assert exc.value.code == EXIT_USAGE
