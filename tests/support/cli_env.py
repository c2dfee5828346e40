"""A per-test settings environment for tests that run ``inspector`` subcommands in-process.

Import the fixture into a test module (``from tests.support.cli_env import cli_settings_env``);
being autouse, it then applies to every test of that module.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def cli_settings_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A private INSPECTOR_HOME and settings file under ``tmp_path``, and the CPU device."""
    monkeypatch.setenv("INSPECTOR_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("INSPECTOR_CONFIG", str(tmp_path / "home" / "settings.yaml"))
    monkeypatch.setenv("INSPECTOR_DEVICE", "cpu")
