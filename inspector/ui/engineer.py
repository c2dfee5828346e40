"""The "Engineer" tab of the station: tools to create and tune product profiles.

Sub-tabs: Profile (editor + live preview + reference shots), Evaluation (threshold tuning on a
labelled folder), Models (weight store and compute device). Everything that runs a model goes
through the station worker's job API (``submit_job`` / ``cancel_job`` and the ``job_*`` signals).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import Signal
from PySide6.QtWidgets import QLabel, QMessageBox, QTabWidget, QVBoxLayout, QWidget

from inspector.profile import ProfileError, load_profile
from inspector.profile_refs import ReferenceShotError, add_reference_image
from inspector.settings import Settings
from inspector.ui.evaluation_view import EvaluationView
from inspector.ui.profile_editor import ProfileEditor

log = logging.getLogger(__name__)


class EngineerPanel(QWidget):
    """Profile editor, evaluation view and model store view, wired together."""

    profile_saved = Signal(str)  # folder of a profile saved by any engineer tool
    device_changed = Signal(str)

    def __init__(self, worker: Any, settings: Settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.worker = worker
        self.settings = settings
        self.tabs = QTabWidget()
        self.editor = ProfileEditor(worker, settings)
        self.evaluation = EvaluationView(worker, settings)
        self.tabs.addTab(self.editor, "Profile")
        self.tabs.addTab(self.evaluation, "Evaluation")
        self.models: QWidget
        try:
            from inspector.ui.model_store_view import ModelStoreView

            self.models = ModelStoreView(worker, settings)
            self.models.device_changed.connect(self.device_changed)  # type: ignore[attr-defined]
        except Exception as exc:  # noqa: BLE001 - a broken store must not take the editor down
            log.exception("model store view unavailable")
            self.models = QLabel(f"Model store unavailable: {exc}")
        self.tabs.addTab(self.models, "Models")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.tabs)

        self.editor.profile_loaded.connect(self.evaluation.set_profile_folder)
        self.editor.profile_saved.connect(self.evaluation.set_profile_folder)
        self.editor.profile_saved.connect(self.profile_saved)
        self.evaluation.profile_saved.connect(self._on_threshold_saved)
        self.profile_saved.connect(self._reload_station)
        if hasattr(self.models, "refresh_needed"):
            self.profile_saved.connect(lambda _f: self.models.refresh_needed())  # type: ignore[attr-defined]

        current = worker.current_profile() if hasattr(worker, "current_profile") else None
        if current is not None and current.folder is not None:
            self.open_profile(current.folder)

    def _reload_station(self, folder: str) -> None:
        """A new version of the profile the station runs was saved: the station picks it up."""
        current = self.worker.current_profile() if hasattr(self.worker, "current_profile") else None
        if current is not None and current.folder is not None and Path(current.folder) == Path(folder):
            log.info("station profile %s saved; reloading it", current.name)
            self.worker.reload_profile()

    @property
    def has_unsaved_changes(self) -> bool:
        """True when the profile editor holds edits that are not saved."""
        return self.editor.is_dirty()

    def confirm_discard(self, parent: QWidget | None = None) -> bool:
        """Before closing: Save / Discard / Cancel when there are unsaved edits. False = do not close."""
        if not self.has_unsaved_changes:
            return True
        name = self.editor.profile.name if self.editor.profile else "the profile"
        buttons = QMessageBox.StandardButton
        answer = self.ask_unsaved(parent or self, name)
        if answer == buttons.Cancel:
            return False
        if answer == buttons.Save:
            self.tabs.setCurrentWidget(self.editor)
            return self.editor.save_with_prompt(parent or self) is not None  # invalid or note cancelled: stay
        return True  # Discard

    @staticmethod
    def ask_unsaved(parent: QWidget, name: str) -> QMessageBox.StandardButton:
        buttons = QMessageBox.StandardButton
        return QMessageBox.question(
            parent, "Unsaved profile edits",
            f"{name} has unsaved edits. Save them as a new version before closing?",
            buttons.Save | buttons.Discard | buttons.Cancel, buttons.Save)

    def open_profile(self, folder: str | Path) -> None:
        """Show a profile in the editor (e.g. the one the operator station is running)."""
        self.editor.load(folder)

    def add_current_image(self, image: np.ndarray) -> str | None:
        """Add the station's current frame to the edited profile's reference shots."""
        profile = self.editor.profile
        if profile is None:
            return None
        draft = profile.model_copy(deep=True).with_folder(profile.folder)
        draft.reference_shots = list(self.editor.references.shots())
        try:
            rel = add_reference_image(draft, image)
        except (ReferenceShotError, OSError) as exc:
            self.editor.references.status.setText(str(exc))
            return None
        self.editor.references.set_shots(list(draft.reference_shots))
        return rel

    def _on_threshold_saved(self, folder: str, threshold: float) -> None:
        """The evaluation view saved a new version: keep the editor in step without losing edits."""
        try:
            saved = load_profile(folder, check_files=False)
        except ProfileError as exc:
            log.warning("%s", exc)
            return
        if self.editor.profile is not None and str(self.editor.profile.folder) == str(saved.folder):
            if self.editor.is_dirty():
                self.editor.rebase(saved)
                self.editor.set_threshold(threshold)
            else:
                self.editor.load(folder)
        self.profile_saved.emit(folder)
