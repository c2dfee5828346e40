"""Station settings: defaults, file, environment overrides, errors, round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from inspector.settings import (
    Settings,
    SettingsError,
    config_path,
    inspector_home,
    packaged_profiles_dir,
    resources_dir,
)


def test_defaults_live_under_inspector_home(tmp_settings: Settings, tmp_path: Path) -> None:
    home = tmp_path / "inspector_home"
    assert inspector_home() == home
    assert tmp_settings.model_dir == home / "models"
    assert tmp_settings.cache_dir == home / "cache"
    assert tmp_settings.records_path == home / "records" / "records.sqlite"
    assert tmp_settings.device == "auto" and tmp_settings.precision == "auto"


def test_xdg_locations_when_no_inspector_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INSPECTOR_HOME")
    monkeypatch.delenv("INSPECTOR_CONFIG")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    assert inspector_home() == tmp_path / "data" / "inspector"
    assert config_path() == tmp_path / "cfg" / "inspector" / "settings.yaml"


def test_file_values_and_env_override(tmp_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = config_path()
    cfg.parent.mkdir(parents=True)
    cfg.write_text(yaml.safe_dump({"device": "cpu", "station_id": "line-3", "archive_images": False,
                                   "model_dir": str(tmp_path / "from_file")}))
    monkeypatch.delenv("INSPECTOR_MODEL_DIR")
    s = Settings.load()
    assert (s.device, s.station_id, s.archive_images) == ("cpu", "line-3", False)
    assert s.model_dir == tmp_path / "from_file"
    monkeypatch.setenv("INSPECTOR_MODEL_DIR", str(tmp_path / "from_env"))
    monkeypatch.setenv("INSPECTOR_PRECISION", "bf16")
    s = Settings.load()
    assert s.model_dir == tmp_path / "from_env" and s.precision == "bf16"


@pytest.mark.parametrize(
    "content, message",
    [
        ("device: [cpu\n", "not valid YAML"),
        ("- just\n- a list\n", "expected a mapping"),
        ("precision: fp8\n", "precision"),
        ("colour: blue\n", "colour"),
        ("archive_images: maybe\n", "archive_images"),
    ],
)
def test_bad_settings_file_names_file_and_field(tmp_settings: Settings, content: str, message: str) -> None:
    cfg = config_path()
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(content)
    with pytest.raises(SettingsError) as err:
        Settings.load()
    assert str(cfg) in str(err.value) and message in str(err.value)


def test_bad_environment_value(tmp_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INSPECTOR_PRECISION", "half")
    with pytest.raises(SettingsError, match="precision"):
        Settings.load()


def test_save_and_load_round_trip(tmp_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = tmp_settings.model_copy(update={"device": "cpu", "station_id": "cell-7", "profiles_dir": tmp_path / "p"})
    path = s.save()
    assert path == config_path() and path.is_file()
    assert not list(path.parent.glob("*.tmp"))
    for name in ("INSPECTOR_MODEL_DIR", "INSPECTOR_HOME"):
        monkeypatch.delenv(name)
    loaded = Settings.load()
    assert loaded == s


def test_profiles_dir_resolution(tmp_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert tmp_settings.default_profiles_dir() == packaged_profiles_dir()
    (tmp_path / "product_profiles").mkdir()
    assert tmp_settings.default_profiles_dir() == tmp_path / "product_profiles"
    explicit = tmp_settings.model_copy(update={"profiles_dir": tmp_path / "mine"})
    assert explicit.default_profiles_dir() == tmp_path / "mine"


def test_resources_hold_the_model_manifest() -> None:
    assert (resources_dir() / "models.yaml").is_file()
