"""What every subcommand shares: exit codes, :class:`UsageError` and the hub/profile/output helpers.

:mod:`inspector.cli` loads the subcommands by name; they import what they share from here, never
back from the CLI root. Exit codes: 0 ok, 1 some inputs failed, 2 usage error (bad arguments,
broken profile, missing weights).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from inspector.inspection import Inspector
    from inspector.models.hub import ModelHub
    from inspector.profile import ProductProfile

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED_INPUTS, EXIT_USAGE = 0, 1, 2

PRECISIONS = ("auto", "fp32", "fp16", "bf16")


class UsageError(Exception):
    """Raised by commands for problems the user must fix (message is shown as-is, exit 2)."""


def has_display() -> bool:
    """True when Qt can open windows (a display, or an explicit QT_QPA_PLATFORM such as offscreen)."""
    if os.environ.get("QT_QPA_PLATFORM"):
        return True
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


# --------------------------------------------------------------------------------- shared helpers
def model_errors() -> tuple[type[BaseException], ...]:
    """The model store's "missing / corrupt weights" exceptions."""
    from inspector.models.store import ModelStoreError

    return (ModelStoreError,)


def add_device_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default: from settings)")
    p.add_argument("--precision", default=None, choices=PRECISIONS, help="compute precision (default: from settings)")


def make_hub(args: argparse.Namespace) -> ModelHub:
    """A model hub on the requested device/precision (settings fill what is not given)."""
    from inspector.models.hub import ModelHub
    from inspector.settings import Settings, SettingsError

    try:
        settings = Settings.load()
    except SettingsError as exc:
        raise UsageError(str(exc)) from exc
    device = args.device or settings.device
    precision = args.precision or settings.precision
    try:
        return ModelHub(device=device, precision=precision)
    except (RuntimeError, ValueError) as exc:
        raise UsageError(f"--device {device} --precision {precision}: {exc}") from exc


def load_profile_arg(path: str | Path) -> ProductProfile:
    from inspector.profile import ProfileError, load_profile

    try:
        return load_profile(path)
    except ProfileError as exc:
        raise UsageError(str(exc)) from exc


def prepare_inspector(profile: ProductProfile, hub: ModelHub, pipeline: str | None = None) -> Inspector:
    """Build and prepare an :class:`Inspector`; every failure becomes a :class:`UsageError` (exit 2)."""
    from inspector.inspection import Inspector

    name = pipeline or profile.pipeline
    try:
        inspector = Inspector(profile, hub, pipeline)
    except ImportError as exc:
        raise UsageError(f"pipeline {name!r} is not available in this installation ({exc})") from exc
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    try:
        inspector.check_weights()  # before any network is built
        inspector.prepare()
    except model_errors() as exc:
        raise UsageError(f"{exc}") from exc
    except Exception as exc:  # noqa: BLE001 - anything here is a profile/installation problem to report
        log.debug("prepare failed", exc_info=True)
        raise UsageError(f"cannot prepare pipeline {name!r} for profile {profile.name!r}: {exc}") from exc
    return inspector


def ensure_writable_dir(folder: Path) -> Path:
    """Create ``folder`` and prove it is writable, or raise a :class:`UsageError` saying why."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".inspector-write-test-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise UsageError(
            f"cannot write to output folder {folder}: {exc.strerror or exc}; choose another --out or fix its permissions"
        ) from exc
    return folder
