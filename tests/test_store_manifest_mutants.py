"""Known-answer tests of the model manifest (``inspector/models/store/manifest.py``).

Every error is compared in full: IT admins fix ``models.yaml`` from these lines, so each names the
file, the field path and what is wrong. Entries are compared as whole ``ModelEntry`` values
written out by hand. Written for the mutation run of bench/mutation.md.
"""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

import pytest
import yaml

from inspector.models.store import ManifestError, ModelEntry, default_manifest_path, load_manifest, packaged_file
from inspector.settings import resources_dir

BASE = {"kind": "sam", "arch": "x", "licence": "MIT", "size_mb": 1, "files": {"a.pth": {}}}


def _write(tmp_path: Path, models: object, text: str | None = None) -> Path:
    path = tmp_path / "models.yaml"
    path.write_text(text if text is not None else yaml.safe_dump({"models": models}, sort_keys=False), encoding="utf-8")
    return path


def _error(path: Path) -> str:
    with pytest.raises(ManifestError) as err:
        load_manifest(path)
    return str(err.value)


def _entry(**fields: object) -> dict[str, object]:
    return {**BASE, **fields}


def _file_error(tmp_path: Path, **spec: object) -> str:
    return _error(_write(tmp_path, {"a": _entry(files={"a.pth": spec})}))


def test_default_manifest_is_models_yaml_in_the_resources() -> None:
    assert default_manifest_path() == resources_dir() / "models.yaml"
    assert default_manifest_path().name == "models.yaml" and default_manifest_path().is_file()


def test_a_full_entry_is_read_field_by_field(tmp_path: Path) -> None:
    models = {
        "full_one": {
            "kind": "grounding", "arch": "Arch-1", "tag": "t1", "description": "d1", "licence": "BSD",
            "homepage": "https://example.org/h", "size_mb": 2.5, "requires": ["plain"], "state_key": "model",
            "drop_keys": ["epoch", "optim"], "safe_globals": ["argparse.Namespace"], "options": {"q": True, "n": 3},
            "default_file": "w.bin", "loader": "torchscript",
            "files": {
                "cfg.json": {"sha256": " ABCDEF12 ", "bytes": 10, "url": "https://example.org/cfg.json"},
                "w.bin": {"git_blob_sha1": "A" * 40, "one_of": "weights", "url": "http://example.org/w.bin"},
                "w.safetensors": {"one_of": "weights", "package": "pkg_sub:data/w.safetensors"},
                "extra.txt": {"bytes": 7},
                "alt2.bin": {"one_of": "other"},
            },
        },
        "plain": {"kind": "clip", "arch": "A", "licence": "MIT", "size_mb": 0.5, "files": {"p.pt": {}}},
    }
    entries = load_manifest(_write(tmp_path, models))
    assert list(entries) == ["full_one", "plain"]
    assert entries["full_one"] == ModelEntry(
        key="full_one", kind="grounding", arch="Arch-1",
        files=["cfg.json", "w.bin", "w.safetensors", "extra.txt", "alt2.bin"],
        sha256={"cfg.json": "abcdef12"}, size_mb=2.5, licence="BSD",
        urls={"cfg.json": "https://example.org/cfg.json", "w.bin": "http://example.org/w.bin"},
        tag="t1", description="d1", homepage="https://example.org/h",
        file_bytes={"cfg.json": 10, "extra.txt": 7}, git_blob_sha1={"w.bin": "a" * 40},
        one_of={"weights": ["w.bin", "w.safetensors"], "other": ["alt2.bin"]},
        requires=["plain"], state_key="model", drop_keys=["epoch", "optim"], safe_globals=["argparse.Namespace"],
        options={"q": True, "n": 3}, default_file="w.bin", loader="torchscript",
        packaged={"w.safetensors": "pkg_sub:data/w.safetensors"},
    )
    assert entries["plain"] == ModelEntry(
        key="plain", kind="clip", arch="A", files=["p.pt"], sha256={}, size_mb=0.5, licence="MIT", urls={},
    )
    plain = entries["plain"]
    assert (plain.tag, plain.description, plain.homepage, plain.state_key, plain.default_file, plain.loader) == (
        "", "", "", None, None, "state_dict")
    assert (plain.requires, plain.drop_keys, plain.safe_globals, plain.options, plain.packaged, plain.one_of) == (
        [], [], [], {}, {}, {})


def test_entry_properties_url_multi_file_groups_and_digests(tmp_path: Path) -> None:
    models = {
        "multi": _entry(files={
            "a.json": {"sha256": "abcdef"},
            "b.bin": {"one_of": "w", "url": "https://x.org/b"},
            "c.bin": {"one_of": "w", "git_blob_sha1": "0" * 40, "url": "https://x.org/c"},
            "d.txt": {},
            "e.bin": {"one_of": "v"},
            "f.bin": {"one_of": "v"},
        }),
        "single": _entry(files={"s.pth": {"url": "https://x.org/s"}}),
        "nourl": _entry(),
    }
    e = load_manifest(_write(tmp_path, models))
    multi, single, nourl = e["multi"], e["single"], e["nourl"]
    assert multi.url == "https://x.org/b" and single.url == "https://x.org/s" and nourl.url is None
    assert multi.multi_file is True and single.multi_file is False and nourl.multi_file is False
    assert multi.groups() == [["a.json"], ["b.bin", "c.bin"], ["d.txt"], ["e.bin", "f.bin"]]
    assert single.groups() == [["s.pth"]]
    assert [multi.has_digest(f) for f in multi.files] == [True, False, True, False, False, False]
    two = load_manifest(_write(tmp_path, {"two": _entry(files={"x.pt": {}, "y.pt": {}})}))["two"]
    assert two.multi_file is True and two.groups() == [["x.pt"], ["y.pt"]]


def test_groups_follow_manifest_order_when_an_alternative_comes_first() -> None:
    entry = ModelEntry(key="k", kind="sam", arch="a", files=["w2", "cfg", "w1"], sha256={}, size_mb=1,
                       licence="MIT", urls={}, one_of={"w": ["w1", "w2"]})
    assert entry.groups() == [["w1", "w2"], ["cfg"]]


@pytest.mark.parametrize(
    "spec, field, message",
    [
        ({"package": "1bad:x.bin"}, "package", "must be 'module:relative/path' inside the package, got '1bad:x.bin'"),
        ({"package": "pkg:"}, "package", "must be 'module:relative/path' inside the package, got 'pkg:'"),
        ({"package": "pkg"}, "package", "must be 'module:relative/path' inside the package, got 'pkg'"),
        ({"package": "pkg:/abs.bin"}, "package", "must be 'module:relative/path' inside the package, got 'pkg:/abs.bin'"),
        ({"package": "pkg:a/../b.bin"}, "package",
         "must be 'module:relative/path' inside the package, got 'pkg:a/../b.bin'"),
        ({"package": "pkg:../b.bin"}, "package", "must be 'module:relative/path' inside the package, got 'pkg:../b.bin'"),
        ({"sha256": "abcde"}, "sha256", "must be 6-64 hex digits (a sha256 or its published prefix), got 'abcde'"),
        ({"sha256": "a" * 65}, "sha256", f"must be 6-64 hex digits (a sha256 or its published prefix), got '{'a' * 65}'"),
        ({"sha256": "abcdeg"}, "sha256", "must be 6-64 hex digits (a sha256 or its published prefix), got 'abcdeg'"),
        ({"git_blob_sha1": "a" * 39}, "git_blob_sha1", f"must be 40 hex digits, got '{'a' * 39}'"),
        ({"git_blob_sha1": "a" * 41}, "git_blob_sha1", f"must be 40 hex digits, got '{'a' * 41}'"),
        ({"git_blob_sha1": "g" * 40}, "git_blob_sha1", f"must be 40 hex digits, got '{'g' * 40}'"),
        ({"url": "ftp://x.org/y"}, "url", "must be an http(s) URL, got 'ftp://x.org/y'"),
        ({"url": "x.org/y"}, "url", "must be an http(s) URL, got 'x.org/y'"),
        ({"bytes": 0}, "bytes", "Input should be greater than 0"),
        ({"colour": "red"}, "colour", "Extra inputs are not permitted"),
    ],
)
def test_file_field_errors_name_file_field_and_value(tmp_path: Path, spec: dict, field: str, message: str) -> None:
    path = _write(tmp_path, {"a": _entry(files={"a.pth": spec})})
    assert _error(path) == f"{path}: models.a.files.a.pth.{field}: {message}"


@pytest.mark.parametrize(
    "spec, stored",
    [
        ({"package": "pkg_2:dir/w.bin"}, ("packaged", "pkg_2:dir/w.bin")),
        ({"package": "pkg:a:b.bin"}, ("packaged", "pkg:a:b.bin")),  # only the first ':' splits
        ({"package": "pkg:a/..b/c..d.bin"}, ("packaged", "pkg:a/..b/c..d.bin")),  # '..' only as a whole part
        ({"sha256": "ABCDEF"}, ("sha256", "abcdef")),
        ({"sha256": "\tabcdef\n"}, ("sha256", "abcdef")),
        ({"sha256": "A" * 64}, ("sha256", "a" * 64)),
        ({"git_blob_sha1": " " + "F" * 40 + " "}, ("git_blob_sha1", "f" * 40)),
        ({"url": "http://x.org/y"}, ("urls", "http://x.org/y")),
        ({"url": "https://x.org/y"}, ("urls", "https://x.org/y")),
    ],
)
def test_valid_file_fields_are_normalised(tmp_path: Path, spec: dict, stored: tuple[str, str]) -> None:
    entry = load_manifest(_write(tmp_path, {"a": _entry(files={"a.pth": spec})}))["a"]
    attr, value = stored
    assert getattr(entry, attr) == {"a.pth": value}


@pytest.mark.parametrize("name", ["", "a/b.pth", "a\\b.pth", ".", "..", ".hidden.pth"])
def test_file_names_must_be_plain(tmp_path: Path, name: str) -> None:
    path = _write(tmp_path, {"a": _entry(files={"ok.pth": {}, name: {}})})
    assert _error(path) == f"{path}: models.a.files: file name {name!r} must be a plain file name"


def test_file_names_with_inner_dots_are_plain(tmp_path: Path) -> None:
    entry = load_manifest(_write(tmp_path, {"a": _entry(files={"a..b.pth": {}, "x.y": {}})}))["a"]
    assert entry.files == ["a..b.pth", "x.y"]


def test_unknown_safe_globals_list_the_known_ones(tmp_path: Path) -> None:
    path = _write(tmp_path, {"a": _entry(safe_globals=["argparse.Namespace", "os.system", "builtins.eval"])})
    assert _error(path) == (
        f"{path}: models.a.safe_globals: ['os.system', 'builtins.eval'] not allowed; known: ['argparse.Namespace']"
    )


@pytest.mark.parametrize(
    "fields, loc, message",
    [
        ({"kind": "laser", "arch": 3}, "kind", "Input should be 'clip', 'sam', 'grounding', 'backbone' or 'adapter'"),
        ({"size_mb": 0}, "size_mb", "Input should be greater than 0"),
        ({"files": {}}, "files", "Dictionary should have at least 1 item after validation, not 0"),
        ({"loader": "pickle"}, "loader", "Input should be 'state_dict' or 'torchscript'"),
        ({"colour": "red"}, "colour", "Extra inputs are not permitted"),
    ],
)
def test_entry_field_errors(tmp_path: Path, fields: dict, loc: str, message: str) -> None:
    path = _write(tmp_path, {"a": _entry(**fields)})
    assert _error(path) == f"{path}: models.a.{loc}: {message}"


def test_first_of_several_errors_is_reported(tmp_path: Path) -> None:
    path = _write(tmp_path, {"a": _entry(kind="laser"), "b": _entry(size_mb=-1)})
    assert _error(path) == (
        f"{path}: models.a.kind: Input should be 'clip', 'sam', 'grounding', 'backbone' or 'adapter'"
    )


def test_top_level_errors(tmp_path: Path) -> None:
    path = _write(tmp_path, None, text=yaml.safe_dump({"models": {"a": BASE}, "version": 2}))
    assert _error(path) == f"{path}: version: Extra inputs are not permitted"
    path = _write(tmp_path, None, text="format: 1\n")
    assert _error(path) == f"{path}: models: Field required"
    for text in ("- a\n- b\n", "", "just text\n"):
        path = _write(tmp_path, None, text=text)
        assert _error(path) == f"{path}: expected a mapping with a 'models' section"


def test_unreadable_and_invalid_yaml(tmp_path: Path) -> None:
    missing = tmp_path / "absent.yaml"
    assert _error(missing) == f"{missing}: cannot read the model manifest (No such file or directory)"
    folder = tmp_path / "dir.yaml"
    folder.mkdir()
    assert _error(folder) == f"{folder}: cannot read the model manifest (Is a directory)"
    text = "models: [unclosed\n"
    path = _write(tmp_path, None, text=text)
    with pytest.raises(yaml.YAMLError) as yerr:
        yaml.safe_load(text)
    assert _error(path) == f"{path}: not valid YAML: {yerr.value}"


def test_not_utf8_manifest_is_reported_as_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "models.yaml"
    path.write_bytes(b"models:\n  a: \xff\xfe\n")
    with pytest.raises(UnicodeDecodeError):
        path.read_text(encoding="utf-8")
    with pytest.raises(UnicodeDecodeError):  # not a ManifestError: the read is strict UTF-8
        load_manifest(path)
    path.write_text(yaml.safe_dump({"models": {"a": _entry(description="Prüfstand 検査")}}, allow_unicode=True),
                    encoding="utf-8")
    assert load_manifest(path)["a"].description == "Prüfstand 検査"


def test_manifest_is_utf8_whatever_the_locale(tmp_path: Path) -> None:
    """A station whose locale is not UTF-8 (C / ASCII here, cp1252 on Windows) reads the same manifest."""
    import os
    import subprocess

    import inspector

    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump({"models": {"a": _entry(description="Prüfstand 検査")}}, allow_unicode=True),
                    encoding="utf-8")
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0",
           "PYTHONPATH": str(Path(inspector.__file__).parents[1]), "PYTHONIOENCODING": "utf-8"}
    code = ("import locale, sys; from inspector.models.store.manifest import load_manifest; "
            "print(locale.getpreferredencoding(False)); print(load_manifest(sys.argv[1])['a'].description)")
    out = subprocess.run([sys.executable, "-c", code, str(path)], env=env, capture_output=True, text=True,
                         encoding="utf-8", timeout=60)
    assert out.returncode == 0, out.stderr
    encoding, description = out.stdout.splitlines()
    assert encoding.lower() not in ("utf-8", "utf8") and description == "Prüfstand 検査"


@pytest.mark.parametrize("key", ["Bad", "9-x", "_x", "a.b", "ä"])
def test_keys_are_lower_case_identifiers(tmp_path: Path, key: str) -> None:
    path = _write(tmp_path, {"good_1": BASE, key: BASE})
    assert _error(path) == f"{path}: models.{key}: keys are lower-case letters, digits and '_'"


def test_valid_keys(tmp_path: Path) -> None:
    assert list(load_manifest(_write(tmp_path, {"9a_b": BASE, "z": BASE}))) == ["9a_b", "z"]


def test_default_file_must_be_one_of_the_files(tmp_path: Path) -> None:
    path = _write(tmp_path, {"a": _entry(default_file="other.pth")})
    assert _error(path) == f"{path}: models.a.default_file: 'other.pth' is not one of its files"
    assert load_manifest(_write(tmp_path, {"a": _entry(default_file="a.pth")}))["a"].default_file == "a.pth"


def test_requires_must_name_entries(tmp_path: Path) -> None:
    path = _write(tmp_path, {"a": BASE, "b": _entry(requires=["a", "zz", "yy"])})
    assert _error(path) == f"{path}: models.b.requires: unknown keys ['zz', 'yy']"
    path = _write(tmp_path, {"b": _entry(requires=["a"]), "a": _entry(requires=["b"])})  # order and cycles allowed
    e = load_manifest(path)
    assert e["b"].requires == ["a"] and e["a"].requires == ["b"]


def test_str_path_is_accepted(tmp_path: Path) -> None:
    path = _write(tmp_path, {"a": BASE})
    assert list(load_manifest(str(path))) == ["a"]
    path = _write(tmp_path, {"a": _entry(kind="laser")})
    with pytest.raises(ManifestError, match="^" + re.escape(f"{path}: models.a.kind: ")):
        load_manifest(str(path))


# ---------------------------------------------------------------------------------- packaged_file
@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "site"
    pkg = root / "storepkg_mut"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / "w.bin").write_bytes(b"weights")
    (pkg / "data" / "v1:w.bin").write_bytes(b"weights")
    (pkg / "sub").mkdir()
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "s.bin").write_bytes(b"s")
    (root / "storemod_mut.py").write_text("")
    monkeypatch.syspath_prepend(str(root))
    importlib.invalidate_caches()
    yield pkg
    for name in ("storepkg_mut", "storepkg_mut.sub", "storemod_mut"):
        sys.modules.pop(name, None)


def test_packaged_file_finds_the_file_without_importing(package: Path) -> None:
    assert packaged_file("storepkg_mut:data/w.bin") == package / "data" / "w.bin"
    assert "storepkg_mut" not in sys.modules
    assert packaged_file("storepkg_mut:data/v1:w.bin") == package / "data" / "v1:w.bin"  # split at the first ':'
    assert packaged_file("storepkg_mut:data/absent.bin") is None
    assert packaged_file("storepkg_mut:data") is None  # a folder is not a file
    assert packaged_file("storemod_mut:data/w.bin") is None  # a plain module holds no files


def test_packaged_file_of_subpackage_and_absent_packages(package: Path) -> None:
    assert packaged_file("storepkg_mut.sub:s.bin") == package / "sub" / "s.bin"
    assert packaged_file("no_such_package_xyz:w.bin") is None  # find_spec -> None
    assert packaged_file("no_such_package_xyz.sub:w.bin") is None  # find_spec raises ModuleNotFoundError
    assert packaged_file(":w.bin") is None  # find_spec raises ValueError (empty name)
