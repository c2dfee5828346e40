"""Offline bundle: manifest/checksum logic, tampered or incomplete bundles, and an end-to-end
build + offline install + self-check of a small bundle."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGING = REPO / "packaging"
sys.path.insert(0, str(PACKAGING))
import bundle_manifest as bm  # noqa: E402


def make_bundle(root: Path) -> Path:
    (root / "wheelhouse").mkdir(parents=True)
    (root / "wheelhouse" / "inspector-0.1.0-py3-none-any.whl").write_bytes(b"PK\x03\x04 fake wheel")
    (root / "models" / "sam_vit_b").mkdir(parents=True)
    (root / "models" / "sam_vit_b" / "sam_vit_b_01ec64.pth").write_bytes(os.urandom(4096))
    for name in ("install.sh", "uninstall.sh", "bundle_manifest.py", "constraints.txt"):
        (root / name).write_text("# part\n")
    bm.write_manifest(root, inspector_version="0.1.0", python="3.11", platform="linux_x86_64")
    return root


def test_manifest_lists_every_file_with_sha256(tmp_path: Path) -> None:
    root = make_bundle(tmp_path / "b")
    manifest = json.loads((root / bm.MANIFEST_NAME).read_text())
    assert set(manifest["files"]) == {
        "wheelhouse/inspector-0.1.0-py3-none-any.whl", "models/sam_vit_b/sam_vit_b_01ec64.pth",
        "install.sh", "uninstall.sh", "bundle_manifest.py", "constraints.txt",
    }
    f = root / "models/sam_vit_b/sam_vit_b_01ec64.pth"
    assert manifest["files"]["models/sam_vit_b/sam_vit_b_01ec64.pth"] == {
        "sha256": bm.sha256_file(f), "size": f.stat().st_size}
    report = bm.verify_bundle(root)
    assert report.ok, report.summary()
    assert report.checked == 6


def test_tampered_file_is_named(tmp_path: Path) -> None:
    root = make_bundle(tmp_path / "b")
    f = root / "models/sam_vit_b/sam_vit_b_01ec64.pth"
    data = bytearray(f.read_bytes())
    data[100] ^= 0xFF  # same size, different content
    f.write_bytes(bytes(data))
    report = bm.verify_bundle(root)
    assert not report.ok
    assert any("sam_vit_b_01ec64.pth: sha256 mismatch" in p for p in report.problems)
    assert bm.verify_bundle(root, full=False).ok  # --quick checks sizes only


def test_incomplete_bundle(tmp_path: Path) -> None:
    root = make_bundle(tmp_path / "b")
    (root / "install.sh").unlink()
    w = root / "wheelhouse" / "inspector-0.1.0-py3-none-any.whl"
    w.write_bytes(w.read_bytes()[:5])
    (root / "wheelhouse" / "extra.whl").write_bytes(b"x")
    problems = "\n".join(bm.verify_bundle(root).problems)
    assert "install.sh: listed in the manifest but missing" in problems
    assert "required part 'install.sh' missing" in problems
    assert "inspector-0.1.0-py3-none-any.whl: size 5 !=" in problems
    assert "wheelhouse/extra.whl: not listed in the manifest" in problems


def test_missing_or_corrupt_manifest(tmp_path: Path) -> None:
    root = make_bundle(tmp_path / "b")
    (root / bm.MANIFEST_NAME).write_text("{not json")
    assert "unreadable" in bm.verify_bundle(root).problems[0]
    (root / bm.MANIFEST_NAME).unlink()
    assert "MANIFEST.json missing" in bm.verify_bundle(root).problems[0]
    out = subprocess.run([sys.executable, str(PACKAGING / "verify_bundle"), str(root)], capture_output=True, text=True)
    assert out.returncode == 1 and "FAILED" in out.stdout


@pytest.mark.slow
def test_small_bundle_builds_installs_offline_and_self_checks(tmp_path: Path) -> None:
    """Build a bundle holding the project wheel (no weights), install it with pip --no-index into a
    fresh environment, run the self-check (headless demo line) and the uninstaller.

    The heavy binary dependencies (torch & co., ~5 GB) are not copied into this small bundle: the
    fresh environment is pre-provisioned with them through a .pth file pointing at the test
    environment's site-packages, so pip --no-index only has to install Inspector itself from the
    bundle. The full-size build is the documented manual command in packaging/README.md."""
    out = tmp_path / "bundle"
    build = subprocess.run(
        [sys.executable, str(PACKAGING / "build_bundle"), "--out", str(out), "--no-weights", "--project-only"],
        capture_output=True, text=True, timeout=600,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    summary = json.loads(build.stdout)
    assert summary["with_weights"] is False
    assert bm.verify_bundle(out).ok
    assert list((out / "wheelhouse").glob("inspector-*.whl"))

    prefix, home, fake_home = tmp_path / "app", tmp_path / "data", tmp_path / "home"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(prefix / "venv")], check=True)
    # pip for the new environment: reuse this interpreter's pip through the same .pth mechanism
    site = next((prefix / "venv" / "lib").glob("python3.*/site-packages"))
    (site / "provisioned.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # the install itself must not need any index: pip is pinned offline
    inst_env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_CONFIG_FILE": os.devnull, "HOME": str(fake_home),
                "XDG_DATA_HOME": str(fake_home / ".local/share"), "XDG_CONFIG_HOME": str(fake_home / ".config"), "INSPECTOR_HOME": str(home)}
    inst_env.pop("INSPECTOR_CONFIG", None)
    res = subprocess.run(["bash", str(out / "install.sh"), "--prefix", str(prefix), "--home", str(home),
                          "--python", sys.executable],
                         capture_output=True, text=True, env=inst_env, timeout=900, cwd=tmp_path)
    log = res.stdout + res.stderr
    assert res.returncode == 0, log[-4000:]
    assert "RESULT: PASS" in res.stdout
    installed = subprocess.run([str(prefix / "venv/bin/python"), "-c",
                                "import inspector, pathlib; print(pathlib.Path(inspector.__file__).parent)"],
                               capture_output=True, text=True, check=True, cwd=tmp_path).stdout.strip()
    assert installed.startswith(str(prefix)), "Inspector must come from the bundle's wheel, not the checkout"
    assert (Path(installed) / "_resources").is_dir() and (Path(installed) / "_profiles").is_dir()
    assert (fake_home / ".local/bin/inspector-station").is_file()
    assert (fake_home / ".local/share/applications/inspector.desktop").is_file()
    assert (home / "profiles").is_dir()

    # records survive an uninstall
    (home / "records").mkdir(exist_ok=True)
    (home / "records" / "keep.sqlite").write_bytes(b"evidence")
    un = subprocess.run(["bash", str(out / "uninstall.sh"), "--prefix", str(prefix), "--home", str(home)],
                        capture_output=True, text=True, env=inst_env)
    assert un.returncode == 0, un.stderr
    assert not (prefix / "venv").exists()
    assert (home / "records" / "keep.sqlite").read_bytes() == b"evidence"
    assert not (fake_home / ".local/bin/inspector-station").exists()
    shutil.rmtree(out)
