"""Station bootstrap: ``run_station(profile=..., source=...)`` opens the main window and runs Qt.

``inspector gui`` and ``inspector demo`` reach this module through ``importlib`` so that the
command line never imports Qt.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from inspector.outputs.dispatcher import Dispatcher
    from inspector.outputs.station_link import OpcUaLink
    from inspector.records import RecordKeeper
    from inspector.settings import Settings

log = logging.getLogger(__name__)


def build_keeper(settings: Settings) -> RecordKeeper:
    """The station's record keeper: journal first, then the database (retried when down).

    ``settings.records_url`` (a ``postgresql://`` URL) selects the plant's PostgreSQL server,
    otherwise the SQLite file at ``settings.records_path``."""
    from inspector.records import RecordKeeper

    if settings.records_url:
        from inspector.records_pg import keeper_for_settings

        return keeper_for_settings(settings)
    return RecordKeeper.for_settings(settings)


def build_outputs(settings: Settings) -> Dispatcher | None:
    """The dispatcher for the ``outputs:`` section (MQTT, webhook), or None when none is configured.

    Raises :class:`~inspector.outputs.config.OutputConfigError` naming the bad field."""
    if not settings.outputs:
        return None
    from inspector.outputs.config import OutputsConfig, build_dispatcher

    return build_dispatcher(OutputsConfig.parse(settings.outputs), settings.station_id)


def build_opcua_link(settings: Settings) -> OpcUaLink | None:
    """The PLC link of ``outputs.opcua`` (not started: the window starts it), or None when not configured.

    Raises :class:`~inspector.outputs.config.OutputConfigError` naming the bad field (a recipe that
    is not a profile of this station, a missing ``asyncua``)."""
    if not settings.outputs:
        return None
    from inspector.outputs.config import OutputConfigError, OutputsConfig, resolve_recipes
    from inspector.settings import config_path

    config = OutputsConfig.parse(settings.outputs)
    if config.opcua is None:
        return None
    recipes = resolve_recipes(config.opcua, settings.default_profiles_dir())
    try:
        from inspector.outputs.station_link import OpcUaLink
    except ImportError as exc:
        raise OutputConfigError(f"{config_path()}: outputs.opcua: the OPC UA engine is not installed ({exc}); "
                                "install the 'plant' extra (pip install 'inspector[plant]')") from exc
    return OpcUaLink(config.opcua, recipes)


def run_station(profile: str | Path | None = None, source: str | Path | None = None,
                source_kind: str | None = None) -> int:
    """Open the operator station; optionally load ``profile`` and start ``source`` once it is ready.

    ``source`` is a folder (reviewed image by image), a video file, a camera index or a URL;
    ``source_kind`` (``folder``, ``hot``, ``camera``, ``video``, ``genicam``) overrides the guess.
    Returns the Qt exit code (0 on a normal close), 2 when the settings cannot be read.
    """
    from PySide6.QtCore import QCoreApplication
    from PySide6.QtWidgets import QApplication

    from inspector.outputs.config import OutputConfigError
    from inspector.records import RecordStoreError
    from inspector.settings import Settings, SettingsError
    from inspector.station import Session
    from inspector.ui.main_window import MainWindow, guess_source_kind
    from inspector.users import UserStore

    try:
        settings = Settings.load()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    QCoreApplication.setOrganizationName("Inspector")
    QCoreApplication.setApplicationName("Station")
    app = QApplication.instance() or QApplication([sys.argv[0] if sys.argv else "inspector"])
    try:
        keeper = build_keeper(settings)
        opcua = build_opcua_link(settings)  # validated first: nothing is started before the settings are good
        dispatcher = build_outputs(settings)
    except (RecordStoreError, OutputConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    session = Session(keeper, settings.station_id, settings.archive_dir, settings.archive_images,
                      on_saved=dispatcher.publish_record if dispatcher is not None else None)
    window = MainWindow(settings, store=keeper.store, session=session, users=UserStore(),
                        dispatcher=dispatcher, opcua=opcua)  # the view takes its model; it stops the outputs at close
    window.show()
    if source is not None:
        kind = source_kind or guess_source_kind(source)
        window.set_source(kind, str(source))
        if profile is None and kind in ("camera", "video", "genicam"):
            window.start_source(kind, str(source))
        else:
            window._pending_source = (kind, str(source))  # started when the profile is ready
    if profile is not None:
        window.load_profile(str(profile))
    elif not window.restore_last_profile():
        window.view.set_message("Pick a product profile (top left) and a source to start.")
    return int(app.exec())
