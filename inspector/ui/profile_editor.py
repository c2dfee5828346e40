"""Profile editor: create, duplicate and edit a product profile, with a live preview.

Every field is validated as it is typed by building the candidate YAML mapping and running
:func:`inspector.profile.profile_from_dict` — the very check ``inspector profile validate`` runs —
so the messages are the same; each message is shown under the field it names. Saving goes through
:func:`inspector.profile.save_profile` with ``bump=True`` (the previous file stays readable as
``profile.v<N>.yaml``).

The live preview re-runs only what a change affects (table in :mod:`inspector.ui.preview`); all
model work is a worker job, the UI thread never runs a model.
"""

from __future__ import annotations

import copy
import getpass
import logging
import re
import shutil
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from inspector.profile import (
    PIPELINES,
    PROFILE_FILE,
    ProductProfile,
    ProfileError,
    list_profiles,
    load_profile,
    new_profile,
    profile_from_dict,
    save_profile,
)
from inspector.settings import Settings
from inspector.ui.engineer_jobs import JobClient
from inspector.ui.preview import PreviewEngine, PreviewResult, reads_field, sections_used
from inspector.ui.preview_panel import PreviewPanel
from inspector.ui.reference_shots import ReferenceShotsWidget

log = logging.getLogger(__name__)

PREVIEW_DELAY_MS = 250
"""Typing pauses this long before the preview re-runs."""
CPU_SLOW_SCALE = 896
"""FADE at this scale takes about a minute per image on a 2-core CPU."""
ERROR_STYLE = "color: #c0392b"
ALWAYS_SHOWN = ("name", "object", "pipeline", "description", "author", "decision", "reason_codes")
"""Fields shown whatever the pipeline; the rest are hidden where the pipeline never reads them."""

# (group title, field paths); parameter sections are appended per pipeline
GROUPS: list[tuple[str, list[str]]] = [
    ("Product", ["name", "object", "pipeline", "description", "author"]),
    ("Language prompts", ["prompts.class_agnostic", "prompts.class_specific",
                          "prompts.normal_states", "prompts.anomalous_states"]),
    ("Property prompts", ["properties.min_iou_with_object", "properties.max_area_ratio",
                          "properties.object_count", "properties.top_k", "properties.saliency_neighbors"]),
    ("Image", ["image_scales"]),
    ("Decision", ["decision.image_threshold", "decision.pixel_threshold",
                  "decision.min_defect_area_px", "reason_codes"]),
    ("Models", ["models.clip", "models.sam", "models.grounding", "models.backbone", "models.adapter"]),
]
HINTS = {
    "prompts.class_agnostic": "one prompt per line; {object} becomes the object name",
    "prompts.class_specific": "one defect phrase per line",
    "prompts.normal_states": "one state word per line",
    "prompts.anomalous_states": "one state word per line",
    "image_scales": "pixels, comma separated (e.g. 240, 448, 896)",
    "decision.pixel_threshold": "empty: same as the image threshold",
    "patchcore.local_radius": "empty: auto (1 cell when aligned, 3 otherwise)",
    "reason_codes": "one reason per line",
}


def _field_info(path: str) -> Any:
    """The pydantic FieldInfo of a dotted path below ProductProfile."""
    model: type[BaseModel] = ProductProfile
    parts = path.split(".")
    for part in parts[:-1]:
        model = model.model_fields[part].annotation  # type: ignore[assignment]
    return model.model_fields[parts[-1]]


def _unwrap_optional(ann: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(ann)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(ann)) == 2:
            return args[0], True
    return ann, False


def _set_in(data: dict, path: str, value: Any) -> None:
    parts = path.split(".")
    for part in parts[:-1]:
        data = data.setdefault(part, {})
    data[parts[-1]] = value


def _get_in(data: dict, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(data, dict):
            return None
        data = data.get(part)  # type: ignore[assignment]
    return data


def _pretty(path: str) -> str:
    return path.rsplit(".", 1)[-1].replace("_", " ")


@dataclass
class FieldEditor:
    """One editable field: its widget, getter/setter of the YAML value, and its error label."""

    path: str
    widget: QWidget
    error: QLabel
    get: Callable[[], Any]
    set: Callable[[Any], None]


def _error_label(lines: int = 1) -> QLabel:
    """A red message line whose space stays reserved when hidden, so the form never moves under the
    pointer; long text is cut at the edge and shown whole in the tooltip."""
    label = QLabel("")
    label.setStyleSheet(ERROR_STYLE)
    label.setWordWrap(lines > 1)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    policy = label.sizePolicy()
    policy.setHorizontalPolicy(QSizePolicy.Policy.Ignored)
    policy.setRetainSizeWhenHidden(True)
    label.setSizePolicy(policy)
    label.setFixedHeight(lines * label.fontMetrics().lineSpacing() + 2)
    label.hide()
    return label


def _show_error(label: QLabel, text: str) -> None:
    label.setText(text)
    label.setToolTip(text)
    label.setVisible(bool(text))


def ask_change_note(parent: QWidget, title: str) -> str | None:
    """Modal prompt for the change note of a new version; None when cancelled."""
    note, ok = QInputDialog.getMultiLineText(parent, "Save new version",
                                             f"{title}\nWhat changed, and why? (kept with the version)")
    return note.strip() if ok else None


def _plain_location(sub: str) -> str:
    """``1`` -> ``entry 2``; ``0.1`` -> ``entry 1, value 2`` (list positions are 0-based in the validator)."""
    parts = sub.split(".")
    if all(p.isdigit() for p in parts):
        names = ["entry", "value", "item"]
        return ", ".join(f"{names[min(i, 2)]} {int(p) + 1}" for i, p in enumerate(parts))
    return sub


def _lines(text: str) -> list[str]:
    return [s.strip() for s in text.splitlines() if s.strip()]


def _scalar(text: str, optional: bool) -> Any:
    text = text.strip()
    if not text:
        return None if optional else ""
    return text  # pydantic parses numbers from strings exactly as from YAML numbers


def _int_list(text: str) -> list[Any]:
    out: list[Any] = []
    for tok in re.split(r"[,\s]+", text.strip()):
        if tok:
            out.append(int(tok) if re.fullmatch(r"[+-]?\d+", tok) else tok)
    return out


class ProfileEditor(QWidget):
    """Form for every profile field + preview pane + reference shots."""

    profile_saved = Signal(str)  # folder of the saved profile
    profile_loaded = Signal(str)
    candidate_changed = Signal(object)  # the valid candidate ProductProfile, or None when invalid

    def __init__(self, worker: Any, settings: Settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.worker = worker
        self.settings = settings
        self.jobs = JobClient(worker, "editor", self)
        self.engine = PreviewEngine()
        self.profile: ProductProfile | None = None  # as saved on disk
        self._base: dict[str, Any] = {}
        self._roi: list[tuple[float, float]] | None = None
        self._refs: list[str] = []
        self._candidate: ProductProfile | None = None
        self._loading = False
        self._preview_pending = False
        self.device_type: str | None = None
        self.fields: dict[str, FieldEditor] = {}
        self._section_boxes: dict[str, QGroupBox] = {}
        self._rows: dict[str, tuple[QGroupBox, QFormLayout, QWidget]] = {}
        self.note_prompt: Callable[[QWidget, str], str | None] = ask_change_note
        """Asks for the change note at Save (None = cancel); tests replace it."""

        # ---- top bar
        self.profile_combo = QComboBox()
        self.profile_combo.setMinimumContentsLength(16)
        self.profile_combo.activated.connect(self._on_profile_picked)
        self.new_button = QPushButton("New…")
        self.duplicate_button = QPushButton("Duplicate…")
        self.revert_button = QPushButton("Revert")
        self.save_button = QPushButton("Save…")
        self.save_button.setToolTip("Save as a new version with a change note; the previous one stays as "
                                    "profile.v<N>.yaml")
        self.history_button = QPushButton("History…")
        self.history_button.setToolTip("Versions with author, date and note; compare any two; roll back")
        self.history_button.clicked.connect(self.open_history)
        self.new_button.clicked.connect(self._new_dialog)
        self.duplicate_button.clicked.connect(self._duplicate_dialog)
        self.revert_button.clicked.connect(self.revert)
        self.save_button.clicked.connect(self._save_clicked)
        self.version_label = QLabel("")
        self.dirty_label = QLabel("")
        self.general_error = _error_label()
        self.cpu_warning = QLabel(
            f"⚠ The {CPU_SLOW_SCALE} px scale runs on the CPU here: about one minute per image on 2 cores. "
            "Drop it from the image scales or use a CUDA device."
        )
        self.cpu_warning.setWordWrap(True)
        self.cpu_warning.setStyleSheet("color: #b9770e")
        self.cpu_warning.hide()

        top = QHBoxLayout()
        top.addWidget(QLabel("Profile"))
        top.addWidget(self.profile_combo, 1)
        for w in (self.version_label, self.dirty_label, self.new_button, self.duplicate_button,
                  self.history_button, self.revert_button, self.save_button):
            top.addWidget(w)

        # ---- form
        form_host = QWidget()
        form_layout = QVBoxLayout(form_host)
        for title, paths in GROUPS:
            box = self._group(title, paths)
            form_layout.addWidget(box)
            if title == "Image":
                box.layout().addRow(self.cpu_warning)
        for section in PIPELINES:
            params_model = ProductProfile.model_fields[section].annotation
            paths = [f"{section}.{name}" for name in params_model.model_fields]  # type: ignore[union-attr]
            box = self._group(f"{section} parameters", paths)
            self._section_boxes[section] = box
            form_layout.addWidget(box)
        form_layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(form_host)
        scroll.setMinimumWidth(380)

        # ---- preview + references
        self.preview = PreviewPanel()
        self.preview.sample_changed.connect(lambda _p: self.request_preview(0))
        self.preview.roi_changed.connect(self._on_roi_changed)
        self.references = ReferenceShotsWidget(self.jobs, self.engine, self.preview.sample_path)
        self.references.shots_changed.connect(self._on_refs_changed)
        refs_box = QGroupBox("Reference shots")
        QVBoxLayout(refs_box).addWidget(self.references)
        right = QSplitter(Qt.Orientation.Vertical)
        right.addWidget(self.preview)
        right.addWidget(refs_box)
        right.setStretchFactor(0, 3)
        right.setStretchFactor(1, 1)

        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(scroll)
        split.addWidget(right)
        split.setStretchFactor(1, 1)

        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.general_error)
        layout.addWidget(split, 1)

        self._preview_timer = QTimer(self)
        self._preview_timer.setSingleShot(True)
        self._preview_timer.timeout.connect(self._run_preview)

        self.refresh_profiles()
        self._query_device()
        self._set_enabled(False)

    # ------------------------------------------------------------------ form building
    def _group(self, title: str, paths: list[str]) -> QGroupBox:
        box = QGroupBox(title)
        form = QFormLayout(box)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        for path in paths:
            fe = self._make_field(path)
            self.fields[path] = fe
            cell = QWidget()
            v = QVBoxLayout(cell)
            v.setContentsMargins(0, 0, 0, 0)
            v.setSpacing(1)
            v.addWidget(fe.widget)
            v.addWidget(fe.error)
            form.addRow(_pretty(path), cell)
            self._rows[path] = (box, form, cell)
        return box

    def _make_field(self, path: str) -> FieldEditor:
        info = _field_info(path)
        ann, optional = _unwrap_optional(info.annotation)
        origin = typing.get_origin(ann)
        error = _error_label()
        tip = HINTS.get(path) or info.description or ""

        if origin is typing.Literal:
            combo = QComboBox()
            for option in typing.get_args(ann):
                combo.addItem(str(option), option)
            combo.currentIndexChanged.connect(self._on_edit)
            return FieldEditor(path, combo, error, lambda: combo.currentData(),
                               lambda v: combo.setCurrentIndex(max(combo.findData(v), 0)))
        if ann is bool:
            check = QCheckBox()
            check.toggled.connect(self._on_edit)
            return FieldEditor(path, check, error, check.isChecked, lambda v: check.setChecked(bool(v)))
        if origin is list and typing.get_args(ann) == (str,):
            text = QPlainTextEdit()
            text.setFixedHeight(76)
            text.setToolTip(tip)
            text.setPlaceholderText(tip)
            text.textChanged.connect(self._on_edit)
            if not optional:
                return FieldEditor(path, text, error, lambda: _lines(text.toPlainText()),
                                   lambda v: text.setPlainText("\n".join(v or [])))
            override = QCheckBox("override the built-in words")
            override.toggled.connect(text.setEnabled)
            override.toggled.connect(self._on_edit)
            host = QWidget()
            hv = QVBoxLayout(host)
            hv.setContentsMargins(0, 0, 0, 0)
            hv.addWidget(override)
            hv.addWidget(text)
            host.override = override  # type: ignore[attr-defined]
            host.text = text  # type: ignore[attr-defined]

            def set_opt(v: list[str] | None) -> None:
                override.setChecked(v is not None)
                text.setEnabled(v is not None)
                text.setPlainText("\n".join(v or []))

            return FieldEditor(path, host, error,
                               lambda: _lines(text.toPlainText()) if override.isChecked() else None, set_opt)
        edit = QLineEdit()
        edit.setToolTip(tip)
        edit.setPlaceholderText(HINTS.get(path, ""))
        edit.textChanged.connect(self._on_edit)
        if origin is list:  # image_scales
            return FieldEditor(path, edit, error, lambda: _int_list(edit.text()),
                               lambda v: edit.setText(", ".join(str(x) for x in (v or []))))
        if path == "name":
            return FieldEditor(path, edit, error, lambda: edit.text(), lambda v: edit.setText(str(v)))
        return FieldEditor(path, edit, error, lambda: _scalar(edit.text(), optional),
                           lambda v: edit.setText("" if v is None else str(v)))

    # ------------------------------------------------------------------ profiles on disk
    def profiles_dir(self) -> Path:
        return Path(self.settings.default_profiles_dir())

    def refresh_profiles(self, select: str | Path | None = None) -> None:
        current = str(select) if select is not None else (str(self.profile.folder) if self.profile else None)
        self.profile_combo.blockSignals(True)
        self.profile_combo.clear()
        for folder in list_profiles(self.profiles_dir()):
            self.profile_combo.addItem(folder.name, str(folder.resolve()))
        if self.profile is not None and self.profile_combo.findData(str(self.profile.folder)) < 0:
            self.profile_combo.addItem(self.profile.name, str(self.profile.folder))
        if current:
            idx = self.profile_combo.findData(str(Path(current).resolve()))
            self.profile_combo.setCurrentIndex(idx)
        else:
            self.profile_combo.setCurrentIndex(-1)
        self.profile_combo.blockSignals(False)

    def _on_profile_picked(self, index: int) -> None:
        folder = self.profile_combo.itemData(index)
        if not folder or (self.profile and str(self.profile.folder) == folder):
            return
        if self.is_dirty():
            answer = QMessageBox.question(self, "Unsaved changes",
                                          f"Discard the unsaved changes to {self.profile.name}?")  # type: ignore[union-attr]
            if answer != QMessageBox.StandardButton.Yes:
                self.refresh_profiles()
                return
        self.load(folder)

    def load(self, folder: str | Path) -> ProductProfile | None:
        """Load a profile folder into the form (reference files need not exist yet)."""
        try:
            profile = load_profile(folder, check_files=False)
        except ProfileError as exc:
            self._show_general_error(str(exc))
            return None
        self._adopt(profile)
        self.refresh_profiles(profile.folder)
        self.profile_loaded.emit(str(profile.folder))
        return profile

    def _adopt(self, profile: ProductProfile) -> None:
        switched = self.profile is None or self.profile.folder != profile.folder
        self.profile = profile
        self._base = profile.to_yaml_dict()
        self._loading = True
        if switched:  # another product: its samples, shot counts and dialogs start afresh
            self.preview.clear_samples()
            self.preview.start_dir = str(profile.folder) if profile.folder else ""
            self.references.reset_status()
            self.general_error.hide()
        try:
            for path, fe in self.fields.items():
                fe.set(_get_in(self._base, path))
            self._roi = [tuple(p) for p in profile.roi] if profile.roi else None  # type: ignore[misc]
            self.preview.set_roi(self._roi)
            self._refs = list(profile.reference_shots)
            self.references.set_profile(profile)
        finally:
            self._loading = False
        self.fields["name"].widget.setReadOnly(True)  # type: ignore[attr-defined]
        self.fields["name"].widget.setToolTip("use Duplicate… to save under another name")
        self.version_label.setText(f"v{profile.version}")
        self._set_enabled(True)
        self._revalidate()
        self.request_preview(0)

    def new_profile(self, name: str, object_name: str, pipeline: str = "variation") -> ProductProfile | None:
        """Create ``<profiles dir>/<name>/`` with defaults and open it."""
        try:
            path = new_profile(name, object_name, pipeline, self.profiles_dir())
        except ProfileError as exc:
            self._show_general_error(str(exc))
            return None
        return self.load(path.parent)

    def duplicate(self, new_name: str) -> ProductProfile | None:
        """Copy the profile folder (reference shots included) under a new name, as version 1."""
        if self.profile is None or self.profile.folder is None:
            return None
        source = self._candidate or self.profile
        target = self.profiles_dir() / new_name
        try:
            if (target / PROFILE_FILE).exists():
                raise ProfileError(f"{target / PROFILE_FILE} already exists; pick another name")
            data = source.to_yaml_dict()
            data.update(name=new_name, version=1,
                        change_note=f"duplicated from {self.profile.name} v{self.profile.version}")
            dup = profile_from_dict(data, f"{new_name}/{PROFILE_FILE}")
            shutil.copytree(self.profile.folder, target, dirs_exist_ok=False,
                            ignore=shutil.ignore_patterns("profile.yaml", "profile.v*.yaml", "*.tmp"))
            save_profile(dup, target)
        except (ProfileError, OSError) as exc:
            self._show_general_error(str(exc))
            return None
        return self.load(target)

    def _new_dialog(self) -> None:
        name, ok = QInputDialog.getText(self, "New profile", "Profile name (letters, digits, _ - .):")
        if not ok or not name:
            return
        obj, ok = QInputDialog.getText(self, "New profile", "Object name used in prompts (e.g. bottle):")
        if not ok or not obj:
            return
        default = PIPELINES.index(ProductProfile.model_fields["pipeline"].default)
        pipeline, ok = QInputDialog.getItem(self, "New profile", "Pipeline:", list(PIPELINES), default, False)
        if ok:
            self.new_profile(name.strip(), obj.strip(), pipeline)

    def _duplicate_dialog(self) -> None:
        if self.profile is None:
            return
        name, ok = QInputDialog.getText(self, "Duplicate profile", "New profile name:",
                                        text=f"{self.profile.name}_copy")
        if ok and name:
            self.duplicate(name.strip())

    # ------------------------------------------------------------------ validation
    def candidate_dict(self) -> dict[str, Any]:
        data = copy.deepcopy(self._base)
        for path, fe in self.fields.items():
            _set_in(data, path, fe.get())
        data["roi"] = [list(p) for p in self._roi] if self._roi else None
        data["reference_shots"] = list(self._refs)
        return data

    def source_name(self) -> str:
        folder = self.profile.folder if self.profile else None
        return f"{folder.name if folder else '<new>'}/{PROFILE_FILE}"

    def _build(self) -> tuple[ProductProfile | None, str]:
        """(candidate profile, "") or (None, the validation messages)."""
        if self.profile is None:
            return None, ""
        try:
            return profile_from_dict(self.candidate_dict(), self.source_name(), self.profile.folder), ""
        except ProfileError as exc:
            return None, str(exc)

    def validate(self) -> ProductProfile | None:
        """The candidate profile, or None with each error shown next to its field."""
        for fe in self.fields.values():
            fe.error.hide()
        self.preview.set_roi_error("")
        self.general_error.hide()
        candidate, errors = self._build()
        if errors:
            self._show_errors(errors)
        return candidate

    def _show_errors(self, text: str) -> None:
        general: list[str] = []
        per_field: dict[str, list[str]] = {}
        for line in text.splitlines():
            parts = line.split(": ", 2)
            if len(parts) < 3:
                general.append(line)
                continue
            loc, msg = parts[1], parts[2]
            target = self.field_for(loc)
            if target is None:
                general.append(f"{loc}: {msg}")
            else:
                sub = _plain_location(loc[len(target) + 1:])
                per_field.setdefault(target, []).append(msg if loc == target else f"{sub}: {msg}")
        for path, msgs in per_field.items():
            if path == "roi":
                self.preview.set_roi_error("ROI: " + "; ".join(msgs))
            else:
                _show_error(self.fields[path].error, "; ".join(msgs))
        if general:
            self._show_general_error("\n".join(general))

    def field_for(self, loc: str) -> str | None:
        """The editor field an error location belongs to (longest matching path)."""
        candidates = [p for p in [*self.fields, "roi"] if loc == p or loc.startswith(p + ".")]
        return max(candidates, key=len) if candidates else None

    def field_error(self, path: str) -> str:
        if path == "roi":
            return self.preview.roi_error.text() if not self.preview.roi_error.isHidden() else ""
        fe = self.fields[path]
        return fe.error.text() if not fe.error.isHidden() else ""

    def _show_general_error(self, text: str) -> None:
        _show_error(self.general_error, text)

    def is_dirty(self) -> bool:
        """True when the form differs from the saved profile (an invalid form always differs)."""
        if self.profile is None:
            return False
        candidate, _ = self._build()
        return candidate is None or candidate.to_yaml_dict() != self._base

    def _revalidate(self) -> None:
        self._candidate = self.validate()
        dirty = self.profile is not None and (
            self._candidate is None or self._candidate.to_yaml_dict() != self._base)
        self.dirty_label.setText("● unsaved" if dirty else "")
        self.history_button.setEnabled(self.profile is not None and self.profile.folder is not None)
        self.save_button.setEnabled(self._candidate is not None and dirty)
        self.revert_button.setEnabled(dirty)
        self._update_sections()
        self._update_cpu_warning()
        self.candidate_changed.emit(self._candidate)

    def _on_edit(self, *_args: Any) -> None:
        if self._loading:
            return
        self._revalidate()
        if self._candidate is not None:
            self.request_preview()

    def _on_roi_changed(self, points: list[tuple[float, float]] | None) -> None:
        self._roi = points
        self._on_edit()

    def _on_refs_changed(self, shots: list[str]) -> None:
        self._refs = list(shots)
        self._revalidate()
        if self._candidate is not None:
            self.references.rebuild(self._candidate)
            self.request_preview()

    def _update_sections(self) -> None:
        """Show only what the chosen pipeline reads (the detector class says; see ui.preview)."""
        pipeline = self.fields["pipeline"].get()
        used = sections_used(pipeline)
        for section, box in self._section_boxes.items():
            box.setVisible(section in used)
        boxes: dict[QGroupBox, bool] = {}
        for path, (box, form, cell) in self._rows.items():
            head = path.split(".", 1)[0]
            if head in self._section_boxes:
                continue
            visible = head in ALWAYS_SHOWN or path in ALWAYS_SHOWN or reads_field(pipeline, path)
            form.setRowVisible(cell, visible)
            boxes[box] = boxes.get(box, False) or visible
        for box, any_visible in boxes.items():
            box.setVisible(any_visible)

    def field_shown(self, path: str) -> bool:
        """Whether a field's row (and its group) is shown for the chosen pipeline."""
        box, form, cell = self._rows[path]
        row, _role = form.getWidgetPosition(cell)
        return not box.isHidden() and form.isRowVisible(row)

    def _update_cpu_warning(self) -> None:
        pipeline = self.fields["pipeline"].get()
        scales = [s for s in self.fields["image_scales"].get() if isinstance(s, int)]
        slow = reads_field(pipeline, "image_scales") and any(s >= CPU_SLOW_SCALE for s in scales)
        self.cpu_warning.setVisible(slow and self.device_type == "cpu")

    def _set_enabled(self, on: bool) -> None:
        for w in (self.duplicate_button, self.history_button, self.preview, self.references):
            w.setEnabled(on)
        for fe in self.fields.values():
            fe.widget.setEnabled(on)
        if not on:
            self.save_button.setEnabled(False)
            self.revert_button.setEnabled(False)

    # ------------------------------------------------------------------ save
    def _save_clicked(self) -> None:
        self.save_with_prompt()

    def save_with_prompt(self, parent: QWidget | None = None) -> Path | None:
        """Ask for the change note, then save; None when cancelled or refused."""
        if self.profile is None or self.validate() is None:
            return None
        note = self.note_prompt(parent or self, f"{self.profile.name}: v{self.profile.version} → "
                                                f"v{self.profile.version + 1}")
        if note is None:
            return None
        return self.save(note)

    def save(self, note: str = "") -> Path | None:
        """Save the candidate as the next version with ``note``; refuses (and shows why) when invalid."""
        candidate = self.validate()
        if candidate is None or self.profile is None:
            return None
        if not self.is_dirty():
            return self.profile.folder / PROFILE_FILE if self.profile.folder else None
        try:
            file = save_profile(candidate, self.profile.folder, bump=True, note=note,
                                author=self.settings_author())
        except (ProfileError, OSError) as exc:
            self._show_general_error(f"not saved: {exc}")
            return None
        log.info("saved %s v%d", candidate.name, candidate.version)
        self._adopt(candidate)
        self.profile_saved.emit(str(candidate.folder))
        return file

    def rebase(self, saved: ProductProfile) -> None:
        """Take ``saved`` as the state on disk (saved elsewhere) and keep the form's unsaved edits."""
        self.profile = saved
        self._base = saved.to_yaml_dict()
        self.version_label.setText(f"v{saved.version}")
        self._revalidate()

    def revert(self) -> None:
        if self.profile is not None:
            self._adopt(self.profile)

    def settings_author(self) -> str | None:
        """Who saves: the profile's author field as typed, else the login name."""
        typed = str(self.fields["author"].get() or "").strip()
        if typed:
            return typed
        try:
            return getpass.getuser()
        except (KeyError, OSError):  # no passwd entry (containers)
            return None

    def open_history(self) -> None:
        """Versions, field-by-field diff and rollback of the open profile."""
        if self.profile is None or self.profile.folder is None:
            return
        from inspector.ui.profile_history import ProfileHistoryDialog

        dialog = ProfileHistoryDialog(self.profile.folder, self, author=self.settings_author())
        dialog.rolled_back.connect(self._on_rolled_back)
        dialog.exec()

    def _on_rolled_back(self, folder: str) -> None:
        if self.is_dirty():
            saved = load_profile(folder, check_files=False)
            self.rebase(saved)
        else:
            self.load(folder)
        self.profile_saved.emit(folder)

    def set_threshold(self, value: float) -> None:
        """Put a decision threshold into the form (e.g. from the evaluation view)."""
        self.fields["decision.image_threshold"].set(value)

    # ------------------------------------------------------------------ device
    def _query_device(self) -> None:
        def job(hub: Any, _p: Any, _c: Any) -> str:
            return str(hub.device.type)

        self.jobs.submit("device", job, done=self.set_device_type)

    def set_device_type(self, device_type: str) -> None:
        self.device_type = device_type
        self._update_cpu_warning()

    # ------------------------------------------------------------------ preview
    def request_preview(self, delay_ms: int = PREVIEW_DELAY_MS) -> None:
        if self.profile is None:
            return
        self._preview_timer.start(delay_ms)

    def _run_preview(self) -> None:
        candidate = self._candidate
        if candidate is None:
            return
        if self.jobs.is_busy("preview"):
            self._preview_pending = True
            return
        self._preview_pending = False
        path = self.preview.sample_path()
        engine = self.engine

        def job(hub: Any, progress: Any, _cancelled: Any) -> PreviewResult | str:
            effect = engine.update(candidate, hub, progress)
            return engine.run(path, effect) if path else effect

        self.preview.effect_label.setText("running…")
        self.jobs.submit("preview", job, done=self._on_preview, failed=self._on_preview_failed)

    def _on_preview(self, result: PreviewResult | str) -> None:
        if isinstance(result, PreviewResult):
            self.preview.show_result(result.image, result.inspection, result.effect, result.threshold,
                                     result.analysed)
        else:
            self.preview.show_message("pick a sample image to preview the profile")
        self._after_preview()

    def _on_preview_failed(self, msg: str) -> None:
        self.preview.show_message(msg, error=True)
        self._after_preview()

    def _after_preview(self) -> None:
        if self._preview_pending:
            self._preview_pending = False
            self._run_preview()
