"""Product profiles: what a product is and how to inspect it.

A profile is a folder ``product_profiles/<name>/`` holding ``profile.yaml`` and its reference
("good") shots. The YAML is read with ``yaml.safe_load`` and validated by :class:`ProductProfile`;
every error names the file, the field path and the reason, e.g.::

    bottle/profile.yaml: properties.max_area_ratio: must be in (0, 1], got 3

Saving bumps nothing by itself; :func:`save_profile` with ``bump=True`` increments the version
and keeps the previous file as ``profile.v<N>.yaml`` so records can still resolve it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from inspector.params import ClipSamParams, FadeParams, SaaParams, VariationParams

PROFILE_FILE = "profile.yaml"
PIPELINES = ("fade", "saa", "clipsam", "variation")
Pipeline = Literal["fade", "saa", "clipsam", "variation"]
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

DEFAULT_CLASS_AGNOSTIC = ["defect on {object}", "damage on {object}", "flaw on {object}"]
DEFAULT_REASON_CODES = ["scratch", "crack", "stain", "missing part", "deformation", "other"]


class ProfileError(ValueError):
    """A profile file is missing, unreadable or invalid. The message says where and why."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class LanguagePrompts(_Section):
    """Language prompts. ``{object}`` in an entry is replaced by the profile's object name."""

    class_agnostic: list[str] = Field(default_factory=lambda: list(DEFAULT_CLASS_AGNOSTIC))
    class_specific: list[str] = Field(default_factory=list, description="defect phrases; '. ' joins phrases")
    normal_states: list[str] | None = Field(None, description="overrides the built-in normal state words")
    anomalous_states: list[str] | None = Field(None, description="overrides the built-in anomalous words")

    @field_validator("class_agnostic", "class_specific", "normal_states", "anomalous_states")
    @classmethod
    def _no_blank(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        cleaned = [s.strip() for s in v]
        if any(not s for s in cleaned):
            raise ValueError("must not contain empty prompts")
        return cleaned


class PropertyPrompts(_Section):
    """SAA+ property prompts (paper sec. 3.3) and shared region limits."""

    min_iou_with_object: float = 0.0
    max_area_ratio: float = 1.0
    object_count: int = 1
    top_k: int = 5
    saliency_neighbors: int = 400

    @field_validator("min_iou_with_object")
    @classmethod
    def _iou(cls, v: float) -> float:
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"must be in [0, 1], got {v:g}")
        return v

    @field_validator("max_area_ratio")
    @classmethod
    def _area(cls, v: float) -> float:
        if not 0.0 < v <= 1.0:
            raise ValueError(f"must be in (0, 1], got {v:g}")
        return v

    @field_validator("object_count", "top_k", "saliency_neighbors")
    @classmethod
    def _positive(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"must be a positive integer, got {v}")
        return v


class DecisionRule(_Section):
    """PASS/FAIL rule: FAIL when the image score reaches the threshold and a region is large enough."""

    image_threshold: float = 0.5
    pixel_threshold: float | None = Field(None, description="map level for regions; default = image_threshold")
    min_defect_area_px: int = 0

    @field_validator("min_defect_area_px")
    @classmethod
    def _area(cls, v: int) -> int:
        if v < 0:
            raise ValueError(f"must be >= 0, got {v}")
        return v

    @property
    def region_threshold(self) -> float:
        return self.image_threshold if self.pixel_threshold is None else self.pixel_threshold


class ModelChoice(_Section):
    """Model-store keys the pipelines load (see ``resources/models.yaml``)."""

    clip: str = "clip_vit_b16_plus_240"
    sam: str = "sam_vit_b"
    grounding: str = "groundingdino_swint_ogc"
    backbone: str = "wide_resnet50_2"
    adapter: str | None = None


class ProductProfile(BaseModel):
    """One product: its description, prompts, thresholds, references and pipeline."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    name: str
    version: int = 1
    description: str = ""
    author: str = ""
    pipeline: Pipeline = "variation"
    object: str = "object"
    prompts: LanguagePrompts = Field(default_factory=LanguagePrompts)
    properties: PropertyPrompts = Field(default_factory=PropertyPrompts)
    image_scales: list[int] = Field(default_factory=lambda: [240, 448, 896])
    reference_shots: list[str] = Field(default_factory=list)
    decision: DecisionRule = Field(default_factory=DecisionRule)
    roi: list[tuple[float, float]] | None = Field(None, description="polygon in image pixels (x, y)")
    reason_codes: list[str] = Field(default_factory=lambda: list(DEFAULT_REASON_CODES))
    models: ModelChoice = Field(default_factory=ModelChoice)
    fade: FadeParams = Field(default_factory=FadeParams)
    saa: SaaParams = Field(default_factory=SaaParams)
    clipsam: ClipSamParams = Field(default_factory=ClipSamParams)
    variation: VariationParams = Field(default_factory=VariationParams)

    # Where the profile was loaded from; not part of the YAML.
    _folder: Path | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError(f"must be 1-64 letters, digits, '_', '-' or '.', got {v!r}")
        return v

    @field_validator("version")
    @classmethod
    def _version(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"must be >= 1, got {v}")
        return v

    @field_validator("object")
    @classmethod
    def _object(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v.strip()

    @field_validator("image_scales")
    @classmethod
    def _scales(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("must list at least one scale")
        bad = [s for s in v if s < 32 or s > 2048]
        if bad:
            raise ValueError(f"scales must be in [32, 2048] px, got {bad}")
        return sorted(set(v), key=v.index)

    @field_validator("reference_shots")
    @classmethod
    def _refs(cls, v: list[str]) -> list[str]:
        for p in v:
            pp = Path(p)
            if pp.is_absolute() or ".." in pp.parts:
                raise ValueError(f"reference shot {p!r} must be a path inside the profile folder")
        return v

    @field_validator("roi")
    @classmethod
    def _roi(cls, v: list[tuple[float, float]] | None) -> list[tuple[float, float]] | None:
        if v is not None and len(v) < 3:
            raise ValueError(f"a polygon needs at least 3 points, got {len(v)}")
        return v

    @field_validator("reason_codes")
    @classmethod
    def _reasons(cls, v: list[str]) -> list[str]:
        v = [s.strip() for s in v]
        if any(not s for s in v):
            raise ValueError("must not contain empty reason codes")
        if len(set(v)) != len(v):
            raise ValueError("reason codes must be unique")
        return v

    # ----------------------------------------------------------------- helpers
    @property
    def folder(self) -> Path | None:
        return self._folder

    def reference_paths(self) -> list[Path]:
        """Absolute paths of the reference shots (requires a folder)."""
        if self._folder is None:
            raise ProfileError(f"profile {self.name!r} has no folder; save it before resolving reference shots")
        return [self._folder / p for p in self.reference_shots]

    def fill(self, template: str) -> str:
        """Replace ``{object}`` in a prompt template."""
        return template.replace("{object}", self.object)

    def to_yaml_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=False)

    def content_hash(self) -> str:
        """sha256 of the canonical JSON of the profile (what records store)."""
        blob = json.dumps(self.to_yaml_dict(), sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()

    def with_folder(self, folder: Path | None) -> "ProductProfile":
        self._folder = Path(folder) if folder is not None else None
        return self


def _format_error(source: str, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see `inspector profile new` for the fields)"
        elif err["type"] == "literal_error" and err["loc"] and err["loc"][0] == "pipeline":
            msg = f"unknown pipeline {err.get('input')!r}; choose one of {', '.join(PIPELINES)}"
        elif "got" not in msg and "input" in err and not isinstance(err["input"], (dict, list)):
            msg = f"{msg}, got {err['input']!r}"
        lines.append(f"{source}: {loc}: {msg}")
    return "\n".join(lines)


def _source_name(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


def profile_from_dict(data: Any, source: str = "<profile>", folder: Path | None = None) -> ProductProfile:
    if not isinstance(data, dict):
        raise ProfileError(f"{source}: expected a mapping of profile fields, got {type(data).__name__}")
    try:
        profile = ProductProfile.model_validate(data)
    except ValidationError as exc:
        raise ProfileError(_format_error(source, exc)) from exc
    return profile.with_folder(folder)


def resolve_profile_path(path: str | Path) -> Path:
    """Accept a profile folder, its ``profile.yaml``, or a bare name under the profiles dir."""
    p = Path(path)
    if p.is_dir():
        p = p / PROFILE_FILE
    if p.is_file():
        return p
    if not p.suffix and len(p.parts) == 1:
        from inspector.settings import Settings

        candidate = Settings.load().default_profiles_dir() / str(path) / PROFILE_FILE
        if candidate.is_file():
            return candidate
    raise ProfileError(f"{path}: no {PROFILE_FILE} found; pass a profile folder, its {PROFILE_FILE}, or a name")


def load_profile(path: str | Path, check_files: bool = True) -> ProductProfile:
    """Load and validate a profile; with ``check_files`` every reference shot must exist."""
    file = resolve_profile_path(path)
    source = _source_name(file)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(f"{source}: cannot read ({exc})") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ProfileError(f"{source}: not valid YAML: {exc}") from exc
    profile = profile_from_dict(data, source, file.parent.resolve())
    if check_files:
        folder = file.parent.resolve()
        for i, rel in enumerate(profile.reference_shots):
            target = (folder / rel).resolve()
            if folder not in target.parents:
                raise ProfileError(f"{source}: reference_shots.{i}: {rel!r} escapes the profile folder")
            if not target.is_file():
                raise ProfileError(
                    f"{source}: reference_shots.{i}: file {rel!r} not found in {folder}; "
                    "add the image or remove the entry"
                )
    return profile


def save_profile(profile: ProductProfile, folder: str | Path | None = None, bump: bool = False) -> Path:
    """Write ``profile.yaml`` atomically. With ``bump`` the old file is kept as ``profile.v<N>.yaml``."""
    target_dir = Path(folder) if folder is not None else profile.folder
    if target_dir is None:
        raise ProfileError(f"profile {profile.name!r}: no folder to save into")
    target_dir.mkdir(parents=True, exist_ok=True)
    file = target_dir / PROFILE_FILE
    if bump and file.is_file():
        old = load_profile(file, check_files=False)
        shutil.copy2(file, target_dir / f"profile.v{old.version}.yaml")
        profile.version = max(profile.version, old.version) + 1
    tmp = file.with_suffix(".yaml.tmp")
    tmp.write_text(yaml.safe_dump(profile.to_yaml_dict(), sort_keys=False, allow_unicode=True), encoding="utf-8")
    os.replace(tmp, file)
    profile.with_folder(target_dir.resolve())
    return file


def load_profile_version(folder: str | Path, version: int) -> ProductProfile:
    """Load a specific saved version of a profile (current file or ``profile.v<N>.yaml``)."""
    folder = Path(folder)
    current = load_profile(folder, check_files=False)
    if current.version == version:
        return current
    old = folder / f"profile.v{version}.yaml"
    if not old.is_file():
        raise ProfileError(f"{folder.name}: version {version} not kept (have {current.version})")
    return load_profile(old, check_files=False)


def new_profile(name: str, object_name: str, pipeline: str, folder: str | Path) -> Path:
    """Create ``folder/name/profile.yaml`` with defaults; refuses to overwrite."""
    if pipeline not in PIPELINES:
        raise ProfileError(f"unknown pipeline {pipeline!r}; choose one of {', '.join(PIPELINES)}")
    target = Path(folder) / name
    if (target / PROFILE_FILE).exists():
        raise ProfileError(f"{target / PROFILE_FILE} already exists; pick another name or edit it")
    try:
        profile = ProductProfile(name=name, object=object_name, pipeline=pipeline)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ProfileError(_format_error(f"{name}/{PROFILE_FILE}", exc)) from exc
    (target / "references").mkdir(parents=True, exist_ok=True)
    return save_profile(profile, target)


def list_profiles(root: str | Path) -> list[Path]:
    """Profile folders below ``root`` (one level), sorted by name."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / PROFILE_FILE).is_file())
