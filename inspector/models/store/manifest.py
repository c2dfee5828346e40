"""The manifest of known checkpoints (``resources/models.yaml``): entries, files, digests, where packaged."""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from inspector.models.store.errors import ManifestError

KINDS = ("clip", "sam", "grounding", "backbone", "adapter")
RECORDS_FILE = "installed.json"
CHUNK = 1 << 20
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")

# Python types a checkpoint may contain besides tensors/containers, by the name the manifest uses.
# Only these can be allow-listed; the manifest cannot name arbitrary importable objects.
SAFE_GLOBALS: dict[str, Any] = {"argparse.Namespace": argparse.Namespace}


def default_manifest_path() -> Path:
    from inspector.settings import resources_dir

    return resources_dir() / "models.yaml"


# -------------------------------------------------------------------------------------- manifest
_HEX = re.compile(r"^[0-9a-f]+$")
_KEY = re.compile(r"^[a-z0-9][a-z0-9_]*$")


class _FileSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    sha256: str | None = None
    git_blob_sha1: str | None = None
    size_bytes: int | None = Field(None, alias="bytes", gt=0)
    url: str | None = None
    one_of: str | None = None
    package: str | None = None  # "module:relative/path" of a file shipped inside a PyPI package

    @field_validator("package")
    @classmethod
    def _package(cls, v: str | None) -> str | None:
        if v is None:
            return v
        module, _, rel = v.partition(":")
        if not module.isidentifier() or not rel or rel.startswith("/") or ".." in rel.split("/"):
            raise ValueError(f"must be 'module:relative/path' inside the package, got {v!r}")
        return v

    @field_validator("sha256")
    @classmethod
    def _sha256(cls, v: str | None) -> str | None:
        if v is None:
            return v
        v = v.strip().lower()
        if not _HEX.match(v) or not 6 <= len(v) <= 64:
            raise ValueError(f"must be 6-64 hex digits (a sha256 or its published prefix), got {v!r}")
        return v

    @field_validator("git_blob_sha1")
    @classmethod
    def _git(cls, v: str | None) -> str | None:
        if v is None:
            return v
        v = v.strip().lower()
        if not _HEX.match(v) or len(v) != 40:
            raise ValueError(f"must be 40 hex digits, got {v!r}")
        return v

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and urllib.parse.urlsplit(v).scheme not in ("http", "https"):
            raise ValueError(f"must be an http(s) URL, got {v!r}")
        return v


class _EntrySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["clip", "sam", "grounding", "backbone", "adapter"]
    arch: str
    tag: str = ""
    description: str = ""
    licence: str
    homepage: str = ""
    size_mb: float = Field(gt=0)
    requires: list[str] = Field(default_factory=list)
    state_key: str | None = None
    drop_keys: list[str] = Field(default_factory=list)
    safe_globals: list[str] = Field(default_factory=list)
    options: dict[str, Any] = Field(default_factory=dict)
    default_file: str | None = None
    loader: Literal["state_dict", "torchscript"] = "state_dict"
    files: dict[str, _FileSpec] = Field(min_length=1)

    @field_validator("files")
    @classmethod
    def _names(cls, v: dict[str, _FileSpec]) -> dict[str, _FileSpec]:
        for name in v:
            if not name or "/" in name or "\\" in name or name in (".", "..") or name.startswith("."):
                raise ValueError(f"file name {name!r} must be a plain file name")
        return v

    @field_validator("safe_globals")
    @classmethod
    def _globals(cls, v: list[str]) -> list[str]:
        unknown = [n for n in v if n not in SAFE_GLOBALS]
        if unknown:
            raise ValueError(f"{unknown} not allowed; known: {sorted(SAFE_GLOBALS)}")
        return v


class _ManifestSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: int = 1
    models: dict[str, _EntrySpec]


@dataclass
class ModelEntry:
    """One checkpoint (single file) or checkpoint folder (several files) the store knows."""

    key: str
    kind: str
    arch: str
    files: list[str]
    sha256: dict[str, str]
    """file -> full sha256 or its published prefix (files without one are checked otherwise)."""
    size_mb: float
    licence: str
    urls: dict[str, str]
    tag: str = ""
    description: str = ""
    homepage: str = ""
    file_bytes: dict[str, int] = field(default_factory=dict)
    git_blob_sha1: dict[str, str] = field(default_factory=dict)
    one_of: dict[str, list[str]] = field(default_factory=dict)
    """group name -> alternative files (any one is enough; the first is the one downloaded)."""
    requires: list[str] = field(default_factory=list)
    state_key: str | None = None
    drop_keys: list[str] = field(default_factory=list)
    safe_globals: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    default_file: str | None = None
    loader: str = "state_dict"
    """``torchscript`` only for the entry whose published file is a TorchScript archive."""
    packaged: dict[str, str] = field(default_factory=dict)
    """file -> "module:relative/path": shipped inside an installed Python package (a PyPI wheel)."""

    @property
    def url(self) -> str | None:
        """The first file's source URL (the entry's main source)."""
        return next(iter(self.urls.values()), None)

    @property
    def multi_file(self) -> bool:
        return len(self.files) > 1

    def groups(self) -> list[list[str]]:
        """What must be present: each plain file on its own, each ``one_of`` group as a whole."""
        seen: set[str] = set()
        out: list[list[str]] = []
        for f in self.files:
            if f in seen:
                continue
            group = next((g for g in self.one_of.values() if f in g), [f])
            seen.update(group)
            out.append(group)
        return out

    def has_digest(self, file: str) -> bool:
        return file in self.sha256 or file in self.git_blob_sha1


def load_manifest(path: str | os.PathLike[str]) -> dict[str, ModelEntry]:
    """Read and validate a manifest; errors name the file and the field path."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read the model manifest ({exc.strerror or exc})") from exc
    except yaml.YAMLError as exc:
        raise ManifestError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: expected a mapping with a 'models' section")
    try:
        spec = _ManifestSpec.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise ManifestError(f"{path}: {loc}: {err['msg'].removeprefix('Value error, ')}") from exc
    entries: dict[str, ModelEntry] = {}
    for key, e in spec.models.items():
        if not _KEY.match(key):
            raise ManifestError(f"{path}: models.{key}: keys are lower-case letters, digits and '_'")
        groups: dict[str, list[str]] = {}
        for name, f in e.files.items():
            if f.one_of:
                groups.setdefault(f.one_of, []).append(name)
        if e.default_file is not None and e.default_file not in e.files:
            raise ManifestError(f"{path}: models.{key}.default_file: {e.default_file!r} is not one of its files")
        entries[key] = ModelEntry(
            key=key,
            kind=e.kind,
            arch=e.arch,
            files=list(e.files),
            sha256={n: f.sha256 for n, f in e.files.items() if f.sha256},
            size_mb=e.size_mb,
            licence=e.licence,
            urls={n: f.url for n, f in e.files.items() if f.url},
            tag=e.tag,
            description=e.description,
            homepage=e.homepage,
            file_bytes={n: f.size_bytes for n, f in e.files.items() if f.size_bytes},
            git_blob_sha1={n: f.git_blob_sha1 for n, f in e.files.items() if f.git_blob_sha1},
            one_of=groups,
            requires=list(e.requires),
            state_key=e.state_key,
            drop_keys=list(e.drop_keys),
            safe_globals=list(e.safe_globals),
            options=dict(e.options),
            default_file=e.default_file,
            loader=e.loader,
            packaged={n: f.package for n, f in e.files.items() if f.package},
        )
    for key, entry in entries.items():
        missing = [r for r in entry.requires if r not in entries]
        if missing:
            raise ManifestError(f"{path}: models.{key}.requires: unknown keys {missing}")
    return entries


def packaged_file(spec: str) -> Path | None:
    """The path of ``"module:relative/path"`` inside an installed package, without importing it.

    None when the package is not installed or does not hold the file."""
    module, _, rel = spec.partition(":")
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    locations = list(found.submodule_search_locations or []) if found is not None else []
    for base in locations:
        candidate = Path(base) / rel
        if candidate.is_file():
            return candidate
    return None
