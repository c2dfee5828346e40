"""Reference shots of the edited profile: thumbnails, add (current image, files, folder), remove,
and the rebuild of the profile's memory bank / statistics in the worker with a progress bar.

Files are copied into the profile folder by :mod:`inspector.profile_refs` (content-hash names);
the widget only edits the list and reports it with :attr:`ReferenceShotsWidget.shots_changed`.
Copying, decoding and the rebuild all run as worker jobs, so big images never freeze the UI.

:meth:`ReferenceShotsWidget.add_image` (the station's "+ Reference shot") stages a frame in the
shown profile; the files it *created* are removed again when the profile is shown anew without
them (Revert, or another profile opened without saving), so a discarded shot leaves nothing on disk.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon, QImage, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from inspector.imaging import IMAGE_EXTENSIONS, ImageReadError, read_image
from inspector.profile import ProductProfile
from inspector.profile_refs import (
    ReferenceShotError,
    add_reference_folder,
    add_reference_image,
    add_reference_shots,
    remove_reference_shots,
)
from inspector.ui.engineer_jobs import JobClient, JobFeedback
from inspector.ui.preview import PreviewEngine

log = logging.getLogger(__name__)

THUMB_PX = 96


def rgb_to_qimage(rgb: np.ndarray) -> QImage:
    """A deep-copied QImage of an RGB uint8 array."""
    rgb = np.ascontiguousarray(rgb)
    h, w = rgb.shape[:2]
    return QImage(rgb.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()


def thumbnail(path: Path, size: int = THUMB_PX) -> np.ndarray:
    img = read_image(path, max_side=4 * size)
    scale = size / max(img.shape[:2])
    return cv2.resize(img, (max(1, round(img.shape[1] * scale)), max(1, round(img.shape[0] * scale))),
                      interpolation=cv2.INTER_AREA)


def _copy(profile: ProductProfile) -> ProductProfile:
    return profile.model_copy(deep=True).with_folder(profile.folder)


class ReferenceShotsWidget(QWidget):
    """Thumbnails of ``profile.reference_shots`` with add/remove and the bank rebuild."""

    shots_changed = Signal(list)
    rebuilt = Signal(str)  # the effect the rebuild applied (see inspector.ui.preview)

    def __init__(self, jobs: JobClient, engine: PreviewEngine,
                 current_image: Callable[[], str | None] | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.jobs = jobs
        self.engine = engine
        self.current_image = current_image or (lambda: None)
        self.profile: ProductProfile | None = None
        self._created: list[Path] = []  # files add_image wrote that no saved profile uses yet

        self.list = QListWidget()
        self.list.setViewMode(QListWidget.ViewMode.IconMode)
        self.list.setIconSize(QSize(THUMB_PX, THUMB_PX))
        self.list.setResizeMode(QListWidget.ResizeMode.Adjust)
        self.list.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.list.setMinimumHeight(THUMB_PX + 40)

        self.add_current_button = QPushButton("Add current image")
        self.add_files_button = QPushButton("Add files…")
        self.add_folder_button = QPushButton("Add folder…")
        self.remove_button = QPushButton("Remove")
        self.rebuild_button = QPushButton("Rebuild")
        self.rebuild_button.setToolTip("Recompute the profile's reference memory bank / statistics")
        self.add_current_button.clicked.connect(self._add_current)
        self.add_files_button.clicked.connect(self._add_files_dialog)
        self.add_folder_button.clicked.connect(self._add_folder_dialog)
        self.remove_button.clicked.connect(self.remove_selected)
        self.rebuild_button.clicked.connect(lambda: self.rebuild())

        self.feedback = JobFeedback(text_visible=False)
        self.progress = self.feedback.progress
        self.status = self.feedback.status
        self.refused = QLabel("")  # files the last add refused, kept until the next add
        self.refused.setWordWrap(True)
        self.refused.setStyleSheet("color: #c0392b")
        self.refused.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.refused.hide()

        buttons = QHBoxLayout()
        for b in (self.add_current_button, self.add_files_button, self.add_folder_button,
                  self.remove_button, self.rebuild_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.list, 1)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.refused)
        self.jobs.busy_changed.connect(self._on_busy)
        self._update_buttons()

    # ------------------------------------------------------------------ profile
    def set_profile(self, profile: ProductProfile | None) -> None:
        """Show the shots of ``profile`` (a saved profile: it has a folder).

        Files staged by :meth:`add_image` that ``profile`` does not use are deleted (the edit that
        added them was reverted or discarded)."""
        self._discard_created(profile)
        self.profile = _copy(profile) if profile is not None else None
        self._refresh()

    def _discard_created(self, profile: ProductProfile | None) -> None:
        keep = set()
        if profile is not None and profile.folder is not None:
            keep = {(Path(profile.folder) / rel).resolve() for rel in profile.reference_shots}
        for path in self._created:
            if path.resolve() not in keep:
                try:
                    path.unlink(missing_ok=True)
                    log.info("staged reference shot %s removed (not saved)", path)
                except OSError as exc:
                    log.warning("could not remove the unsaved reference shot %s: %s", path, exc)
        self._created = []

    def add_image(self, image: np.ndarray) -> str | None:
        """Stage a decoded RGB image as a new reference shot of the shown profile (saved with the profile)."""
        if self.profile is None or self.profile.folder is None:
            self.status.setText("open a profile first")
            return None
        draft = _copy(self.profile)
        before = set(draft.reference_shots)
        existing = {p.name for p in (Path(draft.folder) / "references").glob("*")} if draft.folder else set()
        try:
            rel = add_reference_image(draft, image)
        except (ReferenceShotError, OSError) as exc:
            self.status.setText(str(exc))
            return None
        path = Path(draft.folder) / rel  # type: ignore[arg-type]
        if path.name not in existing:
            self._created.append(path)
        if rel in before:
            self.status.setText(f"{rel} is already a reference shot")
        else:
            self.status.setText(f"reference shot {rel} added (save the profile to keep it)")
        self.set_shots(list(draft.reference_shots))
        return rel

    def reset_status(self) -> None:
        """Clear the previous profile's messages (shot counts, refused files)."""
        self.status.setText("")
        self.refused.hide()

    def _start_dir(self) -> str:
        return str(self.profile.folder) if self.profile is not None and self.profile.folder else ""

    def shots(self) -> list[str]:
        return list(self.profile.reference_shots) if self.profile else []

    def _refresh(self) -> None:
        self.list.clear()
        self._update_buttons()
        if self.profile is None or self.profile.folder is None:
            return
        folder = self.profile.folder
        for rel in self.profile.reference_shots:
            stem = Path(rel).stem
            item = QListWidgetItem((stem.rsplit("_", 1)[0] if "_" in stem else stem)[:14])  # name without the hash
            item.setData(Qt.ItemDataRole.UserRole, rel)
            item.setToolTip(rel)
            self.list.addItem(item)
        rels = list(self.profile.reference_shots)

        def job(_hub: Any, progress: Callable[[float, str], None], cancelled: Callable[[], bool]) -> list:
            out = []
            for i, rel in enumerate(rels):
                if cancelled():
                    break
                try:
                    out.append((rel, thumbnail(folder / rel)))
                except ImageReadError as exc:
                    out.append((rel, str(exc)))
                progress((i + 1) / max(len(rels), 1), rel)
            return out

        if rels:
            self.jobs.submit("thumbnails", job, done=self._on_thumbnails)

    def _on_thumbnails(self, result: list) -> None:
        items = {self.list.item(i).data(Qt.ItemDataRole.UserRole): self.list.item(i) for i in range(self.list.count())}
        for rel, thumb in result:
            item = items.get(rel)
            if item is None:
                continue
            if isinstance(thumb, str):
                item.setToolTip(thumb)
                item.setText("missing")
            else:
                item.setIcon(QIcon(QPixmap.fromImage(rgb_to_qimage(thumb))))

    def _update_buttons(self) -> None:
        has = self.profile is not None and self.profile.folder is not None
        adding = self.jobs.is_busy("add")
        for b in (self.add_current_button, self.add_files_button, self.add_folder_button, self.remove_button):
            b.setEnabled(has and not adding)
        self.rebuild_button.setEnabled(has and not self.jobs.is_busy("rebuild"))

    def _on_busy(self, name: str, _busy: bool) -> None:
        if name in ("add", "rebuild"):
            self._update_buttons()

    # ------------------------------------------------------------------ add / remove
    def add_files(self, paths: list[str | Path]) -> None:
        """Copy image files into the profile (in the worker); bad files are listed, good ones kept."""
        self._add(lambda prof, progress, errors: add_reference_shots(prof, [Path(p) for p in paths], progress, errors))

    def add_folder(self, folder: str | Path) -> None:
        self._add(lambda prof, progress, errors: add_reference_folder(prof, folder, progress, errors))

    def _add(self, action: Callable[[ProductProfile, Any, list[str]], list[str]]) -> None:
        if self.profile is None:
            return
        prof = _copy(self.profile)

        def job(_hub: Any, progress: Callable[[float, str], None], _cancelled: Callable[[], bool]) -> tuple:
            errors: list[str] = []
            added = action(prof, progress, errors)
            return list(prof.reference_shots), added, errors

        self.refused.clear()
        self.refused.hide()
        self.feedback.start("copying reference shots…")
        self.jobs.submit("add", job, done=self._on_added,
                         failed=self.feedback.on_failed, progress=self.feedback.on_progress)

    def _on_added(self, result: tuple) -> None:
        shots, added, errors = result
        self.progress.hide()
        self.status.setText(f"{len(added)} reference shot(s) added")
        self.refused.setText(f"{len(errors)} file(s) refused:\n" + "\n".join(errors) if errors else "")
        self.refused.setVisible(bool(errors))
        if shots != self.shots():
            self.set_shots(shots)

    def remove_selected(self) -> None:
        if self.profile is None:
            return
        rels = [it.data(Qt.ItemDataRole.UserRole) for it in self.list.selectedItems()]
        if not rels:
            return
        prof = _copy(self.profile)
        remove_reference_shots(prof, rels)
        self.status.setText(f"{len(rels)} reference shot(s) removed from the profile (files kept for older versions)")
        self.set_shots(list(prof.reference_shots))

    def set_shots(self, shots: list[str]) -> None:
        assert self.profile is not None
        self.profile.reference_shots = shots
        self._refresh()
        self.shots_changed.emit(list(shots))

    def _add_current(self) -> None:
        path = self.current_image()
        if not path:
            self.status.setText("no current image: pick a sample image in the preview first")
            return
        self.add_files([path])

    def _add_files_dialog(self) -> None:
        pattern = " ".join(f"*{e}" for e in IMAGE_EXTENSIONS)
        paths, _ = QFileDialog.getOpenFileNames(self, "Reference shots", self._start_dir(), f"Images ({pattern})")
        if paths:
            self.add_files(paths)

    def _add_folder_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder of good images", self._start_dir())
        if folder:
            self.add_folder(folder)

    # ------------------------------------------------------------------ rebuild
    def rebuild(self, profile: ProductProfile | None = None) -> None:
        """Prepare ``profile`` (default: the shown one) in the worker: builds the bank / statistics."""
        prof = _copy(profile or self.profile) if (profile or self.profile) else None
        if prof is None:
            return
        engine = self.engine

        def job(hub: Any, progress: Callable[[float, str], None], _cancelled: Callable[[], bool]) -> str:
            return engine.update(prof, hub, progress)

        self.feedback.start(f"building reference bank from {len(prof.reference_shots)} shot(s)…")
        self.jobs.submit("rebuild", job, done=self._on_rebuilt,
                         failed=self.feedback.on_failed, progress=self.feedback.on_progress)

    def _on_rebuilt(self, effect: str) -> None:
        if self.jobs.is_busy("rebuild"):
            return
        self.progress.hide()
        n = len(self.shots())
        self.status.setText(f"reference bank ready ({n} shot{'s' if n != 1 else ''})"
                            if effect in ("prepare", "pipeline") else "reference bank up to date")
        self.rebuilt.emit(effect)
