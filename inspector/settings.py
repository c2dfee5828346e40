"""Station-wide settings: where things live on disk and how models run.

Resolution order for every field (first wins):

1. an environment variable (``INSPECTOR_<FIELD>``, e.g. ``INSPECTOR_MODEL_DIR``),
2. the settings file (``$INSPECTOR_CONFIG`` or ``~/.config/inspector/settings.yaml``),
3. the per-user default below ``$INSPECTOR_HOME`` (default ``~/.local/share/inspector``).

The GUI persists window state through ``QSettings``; this file holds what the CLI, the
worker and the installer must agree on.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .files import atomic_write

log = logging.getLogger(__name__)

Device = Literal["auto", "cpu", "cuda"] | str
Precision = Literal["auto", "fp32", "fp16", "bf16"]


def inspector_home() -> Path:
    """Root of the per-user data folder (models, records, caches)."""
    env = os.environ.get("INSPECTOR_HOME")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "inspector"


def config_path() -> Path:
    env = os.environ.get("INSPECTOR_CONFIG")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CONFIG_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".config"
    return base / "inspector" / "settings.yaml"


_REPO_ROOT = Path(__file__).resolve().parent.parent


def resources_dir() -> Path:
    """``resources/`` of a source checkout, or the copy packaged inside the wheel."""
    src = _REPO_ROOT / "resources"
    if src.is_dir():
        return src
    return Path(__file__).resolve().parent / "_resources"


def packaged_profiles_dir() -> Path:
    """``product_profiles/`` shipped with Inspector (source checkout or wheel)."""
    src = _REPO_ROOT / "product_profiles"
    if src.is_dir():
        return src
    return Path(__file__).resolve().parent / "_profiles"


class Settings(BaseModel):
    """Everything the station needs to know about its own machine."""

    model_config = ConfigDict(extra="forbid")

    model_dir: Path = Field(default_factory=lambda: inspector_home() / "models")
    cache_dir: Path = Field(default_factory=lambda: inspector_home() / "cache")
    records_path: Path = Field(default_factory=lambda: inspector_home() / "records" / "records.sqlite")
    # write-ahead journal of decisions (None = beside records_path); put it on a second disk
    records_journal: Path | None = None
    records_url: str | None = None  # postgresql://... : the plant records server (journal + store-and-forward)
    archive_dir: Path = Field(default_factory=lambda: inspector_home() / "records" / "archive")
    archive_images: bool = True
    profiles_dir: Path | None = None
    station_id: str = Field(default_factory=lambda: os.uname().nodename if hasattr(os, "uname") else "station")
    device: str = "auto"
    precision: Precision = "auto"
    outputs: dict[str, Any] = Field(default_factory=dict)  # results to the line; validated by inspector.outputs.config

    @classmethod
    def load(cls, path: Path | None = None) -> "Settings":
        """Read the settings file (if any) and apply ``INSPECTOR_*`` overrides."""
        path = path or config_path()
        data: dict[str, Any] = {}
        if path.is_file():
            try:
                loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            except yaml.YAMLError as exc:
                raise SettingsError(f"{path}: not valid YAML ({exc}); fix or delete the file") from exc
            if not isinstance(loaded, dict):
                raise SettingsError(f"{path}: expected a mapping of settings, got {type(loaded).__name__}")
            data.update(loaded)
        for name in cls.model_fields:
            env = os.environ.get(f"INSPECTOR_{name.upper()}")
            if env is not None:
                data[name] = env
        try:
            return cls(**data)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"])
            raise SettingsError(f"{path}: {field}: {err['msg']}") from exc

    def save(self, path: Path | None = None) -> Path:
        """Write the settings file atomically, mode 0600 (a folder it creates: 0700), whatever the umask."""
        path = path or config_path()
        _private_dirs(path.parent)
        data = self.model_dump(mode="json")
        atomic_write(path, yaml.safe_dump(data, sort_keys=True), mode=0o600)
        return path

    def default_profiles_dir(self) -> Path:
        """The profile folder: settings, else ``./product_profiles`` if present, else the packaged ones."""
        if self.profiles_dir is not None:
            return self.profiles_dir
        local = Path.cwd() / "product_profiles"
        if local.is_dir():
            return local
        return packaged_profiles_dir()


def _private_dirs(folder: Path) -> None:
    """Create ``folder`` and missing parents with mode 0700 (chmod after, so the umask cannot widen it)."""
    missing = []
    p = folder
    while not p.exists() and p.parent != p:
        missing.append(p)
        p = p.parent
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    for m in missing:
        try:
            os.chmod(m, 0o700)
        except OSError:
            pass


class SettingsError(ValueError):
    """The settings file or an ``INSPECTOR_*`` variable holds an invalid value."""
