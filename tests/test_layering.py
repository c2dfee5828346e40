"""The layering in ``.importlinter`` (ARCHITECTURE.md) holds: imports only point down."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _loggers_kept() -> Iterator[None]:
    """import-linter's CLI configures logging with ``dictConfig``, which disables every logger that
    exists at that moment (``disable_existing_loggers``): later tests that read the project's log
    lines would see none. Put every logger back as it was."""
    loggers = [lg for lg in logging.root.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
    disabled = {id(lg): lg.disabled for lg in loggers}
    yield
    for lg in loggers:
        lg.disabled = disabled[id(lg)]


def test_import_contracts_hold(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from importlinter.cli import lint_imports

    code = lint_imports(config_filename=str(ROOT / ".importlinter"), cache_dir=str(tmp_path), no_logo=True)
    out = capsys.readouterr().out
    assert code == 0, f"import contracts broken:\n{out}"
    assert "Contracts: " in out and " broken" in out and "0 broken" in out


def test_contracts_cover_every_layer() -> None:
    text = (ROOT / ".importlinter").read_text()
    for module in ("inspector.ui", "inspector.detect", "inspector.models", "inspector.profile",
                   "inspector.imaging", "inspector.settings", "PySide6", "torch"):
        assert module in text


def test_linter_sees_real_imports(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A contract we know is false (the models command uses the store) must be reported broken."""
    from importlinter.cli import lint_imports

    cfg = tmp_path / "probe.ini"
    cfg.write_text(
        "[importlinter]\nroot_package = inspector\n\n"
        "[importlinter:contract:probe]\nname = probe\ntype = forbidden\n"
        "source_modules =\n    inspector.commands.models\nforbidden_modules =\n    inspector.models.store\n"
    )
    assert lint_imports(config_filename=str(cfg), cache_dir=str(tmp_path / "cache"), no_logo=True) == 1
    assert "BROKEN" in capsys.readouterr().out
