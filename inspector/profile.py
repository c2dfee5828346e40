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
import logging
import math
import re
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from inspector.files import atomic_write
from inspector.imaging import DEFAULT_MAX_SIDE
from inspector.params import PIPELINE_PARAMS, ClipSamParams, FadeParams, PatchCoreParams, SaaParams, VariationParams

PROFILE_FILE = "profile.yaml"
PIPELINES: tuple[str, ...] = tuple(PIPELINE_PARAMS)  # the default (patchcore) first
Pipeline = Literal[PIPELINES]  # type: ignore[valid-type]  # the same names, for validation
log = logging.getLogger(__name__)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

DEFAULT_CLASS_AGNOSTIC = ["defect on {object}", "damage on {object}", "flaw on {object}"]
DEFAULT_REASON_CODES = ["scratch", "crack", "stain", "missing part", "deformation", "other"]
MAX_NESTING = 8
"""Deepest YAML nesting a profile may have (the schema itself nests 3 levels)."""
MAX_IMAGE_PIXELS = DEFAULT_MAX_SIDE * DEFAULT_MAX_SIDE
"""Images are read at most ``imaging.DEFAULT_MAX_SIDE`` px on a side: no region is larger."""
SUSPICIOUS_AREA_PX = 100_000
"""A minimum defect area above this is legal but hides all but huge defects: a warning."""
THRESHOLD_WARN_LOW, THRESHOLD_WARN_HIGH = 0.02, 0.98
"""Image thresholds outside this band are legal but fail (or pass) nearly every part: a warning."""


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

    min_iou_with_object: float = Field(0.0, description="theta of the location prompt (0 = off); saa.location_rule says how it is read (default: fraction of a region inside the object)")
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


def _too_large(v: float) -> str:
    return (f"must be at most {MAX_IMAGE_PIXELS} px (images are read at most "
            f"{DEFAULT_MAX_SIDE}x{DEFAULT_MAX_SIDE}; a larger minimum "
            f"passes every part), got {v:g}")


class DecisionRule(_Section):
    """PASS/FAIL rule: FAIL when the image score reaches the threshold and a region is large enough."""

    image_threshold: float = Field(0.5, description="FAIL when the image score (0..1) reaches this")
    pixel_threshold: float | None = Field(None, description="map level for regions; default = image_threshold")
    min_defect_area_px: int = Field(0, description="a FAIL needs a region of at least this many pixels")

    @field_validator("image_threshold", "pixel_threshold")
    @classmethod
    def _threshold(cls, v: float | None) -> float | None:
        # every pipeline scores in [0, 1]: above 1 nothing FAILs, below 0 everything does
        if v is not None and not (math.isfinite(v) and 0.0 <= v <= 1.0):
            raise ValueError(f"must be a number in [0, 1] (scores are 0..1), got {v:g}")
        return v

    @field_validator("min_defect_area_px", mode="before")
    @classmethod
    def _area_range(cls, v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"must be a whole number of pixels, got {v:g}")
        if isinstance(v, float) and v > MAX_IMAGE_PIXELS:  # before pydantic's "exceeded maximum size"
            raise ValueError(_too_large(v))
        return v

    @field_validator("min_defect_area_px")
    @classmethod
    def _area(cls, v: int) -> int:
        if v < 0:
            raise ValueError(f"must be >= 0, got {v}")
        if v > MAX_IMAGE_PIXELS:
            raise ValueError(_too_large(v))
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
    change_note: str = Field("", description="what changed in this version and why (asked at save)")
    saved_at: str = Field("", description="when this version was saved (ISO 8601, set by save_profile)")
    pipeline: Pipeline = PIPELINES[0]
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
    patchcore: PatchCoreParams = Field(default_factory=PatchCoreParams)

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
            if not p.strip():
                raise ValueError("reference shot paths must not be empty")
            if any(ord(c) < 32 for c in p):
                raise ValueError(f"reference shot {p!r} contains a control character (e.g. a NUL byte); "
                                 "use a plain file name")
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


# pydantic error type -> the sentence an engineer reads (the input is appended as ", got ...")
_PLAIN_MESSAGES = {
    "int_parsing": "must be a whole number",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "int_parsing_size": "is far too large",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "finite_number": "must be a finite number",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "string_type": "must be text",
    "list_type": "must be a list",
    "tuple_type": "must be a list",
    "dict_type": "must be a mapping of fields",
    "model_type": "must be a mapping of fields",
    "model_attributes_type": "must be a mapping of fields",
    "missing": "required field missing; add it",
    "too_short": "has too few entries",
    "too_long": "has too many entries",
}


_BOUND_MESSAGES = {
    "greater_than": "must be greater than",
    "greater_than_equal": "must be at least",
    "less_than": "must be less than",
    "less_than_equal": "must be at most",
}


def _location(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def _format_error(source: str, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = _location(err["loc"])
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        kind = err["type"]
        if kind == "extra_forbidden":
            msg = "unknown key (check the spelling; see `inspector profile new` for the fields)"
        elif kind == "literal_error" and err["loc"] and err["loc"][0] == "pipeline":
            msg = f"unknown pipeline {err.get('input')!r}; choose one of {', '.join(PIPELINES)}"
        elif kind in _BOUND_MESSAGES and err.get("ctx"):
            bound = next(iter(err["ctx"].values()))
            msg = f"{_BOUND_MESSAGES[kind]} {bound}, got {err.get('input')!r}"
        elif kind == "literal_error" and err.get("ctx"):
            msg = f"must be one of {err['ctx']['expected']}, got {err.get('input')!r}"
        elif kind in _PLAIN_MESSAGES:
            msg = _PLAIN_MESSAGES[kind]
            if "input" in err and not isinstance(err["input"], (dict, list)) and kind != "missing":
                msg = f"{msg}, got {err['input']!r}"
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
    if "\x00" in str(path):
        raise ProfileError(f"{str(path)!r}: the path contains a NUL byte; pass a plain folder or file name")
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


def _scan_structure(text: str, source: str) -> None:
    """Refuse duplicate mapping keys and too-deep nesting, each with its field path.

    Walks the parser's event stream (iterative), so a hostile file nested thousands of levels
    deep is reported instead of exhausting the recursion limit of the recursive YAML composer."""
    # frames: [kind, path, seen keys {key: line}, expecting_key, current key, next index]
    stack: list[list[Any]] = []
    node_events = (yaml.ScalarEvent, yaml.MappingStartEvent, yaml.SequenceStartEvent, yaml.AliasEvent)
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            stack.pop()
            continue
        if not isinstance(event, node_events):
            continue
        path: list[str] = []
        if stack:
            top = stack[-1]
            if top[0] == "map" and top[3]:
                if not isinstance(event, yaml.ScalarEvent):
                    where = _location(tuple(top[1]))
                    raise ProfileError(f"{source}: {where}: keys must be plain words, not lists or mappings")
                key, line = event.value, event.start_mark.line + 1
                if key in top[2]:
                    where = _location((*top[1], key))
                    raise ProfileError(f"{source}: {where}: duplicate key {key!r} (line {line}; first given on "
                                       f"line {top[2][key]}); keep one of them")
                top[2][key], top[3], top[4] = line, False, key
                continue
            if top[0] == "map":
                path, top[3] = [*top[1], top[4]], True
            else:
                path, top[5] = [*top[1], str(top[5])], top[5] + 1
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            if len(stack) >= MAX_NESTING:
                raise ProfileError(f"{source}: {_location(tuple(path))}: nested more than {MAX_NESTING} levels "
                                   "deep; a profile nests at most 3 (section, field, list)")
            kind = "map" if isinstance(event, yaml.MappingStartEvent) else "seq"
            stack.append([kind, path, {}, True, None, 0])


def parse_profile_text(text: str, source: str) -> Any:
    """``yaml.safe_load`` of a profile file, refusing duplicate keys and absurd nesting."""
    try:
        _scan_structure(text, source)
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ProfileError(f"{source}: not valid YAML: {exc}") from exc
    except RecursionError as exc:  # pragma: no cover - the scan bounds nesting first
        raise ProfileError(f"{source}: nested too deeply") from exc


def _read_profile_file(file: Path) -> tuple[str, Any]:
    source = _source_name(file)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(f"{source}: cannot read ({exc})") from exc
    return source, parse_profile_text(text, source)


def _reference_problems(profile: ProductProfile, folder: Path, decode: bool) -> list[str]:
    """One ``field.path: reason`` per reference shot that is outside, missing or (``decode``) unreadable."""
    from inspector.imaging import ImageReadError, decode_image

    problems = []
    for i, rel in enumerate(profile.reference_shots):
        target = (folder / rel).resolve()
        if folder not in target.parents:
            problems.append(f"reference_shots.{i}: {rel!r} escapes the profile folder")
        elif not target.is_file():
            problems.append(f"reference_shots.{i}: file {rel!r} not found in {folder}; add the image or remove the entry")
        elif decode:
            try:
                data = target.read_bytes()
                if not data:
                    raise ImageReadError(f"{rel}: empty file (0 bytes)")
                decode_image(data, rel)
            except (ImageReadError, OSError) as exc:
                problems.append(f"reference_shots.{i}: {rel!r} is not a readable image ({exc}); "
                                "replace it with a good shot or remove the entry")
    return problems


def load_profile(path: str | Path, check_files: bool = True) -> ProductProfile:
    """Load and validate a profile; with ``check_files`` every reference shot must exist."""
    file = resolve_profile_path(path)
    source, data = _read_profile_file(file)
    profile = profile_from_dict(data, source, file.parent.resolve())
    if check_files:
        problems = _reference_problems(profile, file.parent.resolve(), decode=False)
        if problems:
            raise ProfileError(f"{source}: {problems[0]}")
    return profile


# ------------------------------------------------------------------------------ deep validation
@dataclass(frozen=True)
class Problem:
    """One finding of :func:`check_profile`: ``path`` is the dotted field, ``severity`` error|warning."""

    path: str
    message: str
    severity: Literal["error", "warning"] = "error"

    def format(self, source: str) -> str:
        return f"{source}: {self.path}: {self.message}"


def _params_class(pipeline: str) -> Any:
    return ProductProfile.model_fields[pipeline].annotation


def min_reference_shots(pipeline: str) -> int:
    """How many reference shots a pipeline needs (declared by its parameter model; 0 = works zero-shot)."""
    return int(getattr(_params_class(pipeline), "min_reference_shots", 0))


def model_fields_read(pipeline: str, required_models: Callable[[ProductProfile], Iterable[tuple[str, str]]]
                      ) -> tuple[str, ...]:
    """The ``models.<kind>`` fields a pipeline reads, found by asking its detector.

    ``required_models`` is the detector class's ``required_models(profile)``; it is called on a
    probe profile whose every model key is a unique sentinel, and the kinds whose sentinel comes
    back are the fields it reads (a detector that takes its model from its own parameters, such
    as a backbone choice, reads none)."""
    kinds = list(ModelChoice.model_fields)
    probe = ProductProfile(name="probe", pipeline=pipeline)  # type: ignore[arg-type]
    probe.models = ModelChoice(**{k: f"\x00probe-{k}" for k in kinds})
    returned = {str(key).split(":", 1)[0] for _kind, key in required_models(probe)}
    return tuple(k for k in kinds if f"\x00probe-{k}" in returned)


def check_profile(
    profile: ProductProfile,
    *,
    known_models: Mapping[str, str] | None = None,
    required_kinds: Iterable[str] | Callable[[], Iterable[str] | None] | None = None,
    decode_references: bool = True,
) -> list[Problem]:
    """What ``profile validate`` adds to the schema: can this profile actually run?

    ``known_models`` maps model-store keys to their kind (from the store manifest);
    ``required_kinds`` are the ``models.<kind>`` fields the pipeline loads, or a callable giving
    them, called only when a model key is unknown (asking a detector may import torch).
    Errors: unreadable or missing reference shots, too few shots for the pipeline, model keys the
    store does not know or of the wrong kind. Warnings: legal values that nearly disable inspection.
    """
    problems: list[Problem] = []
    if profile.folder is not None:
        for line in _reference_problems(profile, Path(profile.folder), decode_references):
            path, msg = line.split(": ", 1)
            problems.append(Problem(path, msg))
    need = min_reference_shots(profile.pipeline)
    if len(profile.reference_shots) < need:
        problems.append(Problem("reference_shots", f"the {profile.pipeline} pipeline needs at least {need} "
                                f"reference shot(s), got {len(profile.reference_shots)}; add good images "
                                "(4 recommended)"))
    if known_models is not None:
        required: set[str] | None = None

        def is_required(kind: str) -> bool:
            nonlocal required
            if required is None:
                kinds = required_kinds() if callable(required_kinds) else required_kinds
                required = set(kinds) if kinds is not None else set(ModelChoice.model_fields)
            return kind in required

        for kind, key in profile.models.model_dump().items():
            if not key:
                continue
            base = str(key).split(":", 1)[0]
            if base not in known_models:
                same = sorted(k for k, v in known_models.items() if v == kind)
                hint = f"; known {kind} models: {', '.join(same)}" if same else ""
                # a key the pipeline does not load cannot fail a run, but is still a typo
                sev: Literal["error", "warning"] = "error" if required_kinds is None or is_required(kind) else "warning"
                problems.append(Problem(f"models.{kind}", f"unknown model key {key!r}{hint}", sev))
            elif known_models[base] != kind:
                problems.append(Problem(f"models.{kind}", f"{base!r} is a {known_models[base]} model, "
                                        f"not a {kind} model"))
    rule = profile.decision
    t = rule.image_threshold
    if t <= THRESHOLD_WARN_LOW:
        problems.append(Problem("decision.image_threshold", f"{t:g} fails almost every part", "warning"))
    elif t >= THRESHOLD_WARN_HIGH:
        problems.append(Problem("decision.image_threshold", f"{t:g} passes almost every part "
                                "(only near-saturated scores fail)", "warning"))
    if rule.pixel_threshold is not None and rule.pixel_threshold > t:
        problems.append(Problem("decision.pixel_threshold", f"{rule.pixel_threshold:g} is above the image "
                                f"threshold {t:g}: a failing part may show no region", "warning"))
    if rule.min_defect_area_px > SUSPICIOUS_AREA_PX:
        problems.append(Problem("decision.min_defect_area_px", f"{rule.min_defect_area_px} px hides every "
                                "defect smaller than that; typical values are 0-1000", "warning"))
    return problems


def save_profile(profile: ProductProfile, folder: str | Path | None = None, bump: bool = False,
                 note: str | None = None, author: str | None = None) -> Path:
    """Write ``profile.yaml`` atomically and stamp ``saved_at``.

    With ``bump`` the old file is kept as ``profile.v<N>.yaml`` and the profile becomes version
    N + 1; its ``change_note`` is ``note`` (a new version never inherits the previous note).
    ``author`` (when given) records who saved it."""
    target_dir = Path(folder) if folder is not None else profile.folder
    if target_dir is None:
        raise ProfileError(f"profile {profile.name!r}: no folder to save into")
    target_dir.mkdir(parents=True, exist_ok=True)
    file = target_dir / PROFILE_FILE
    if bump and file.is_file():
        old = load_profile(file, check_files=False)
        shutil.copy2(file, target_dir / f"profile.v{old.version}.yaml")
        profile.version = max(profile.version, old.version) + 1
        profile.change_note = ""
    if note is not None:
        profile.change_note = note.strip()
    if author is not None and author.strip():
        profile.author = author.strip()
    profile.saved_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    atomic_write(file, yaml.safe_dump(profile.to_yaml_dict(), sort_keys=False, allow_unicode=True))
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


@dataclass(frozen=True)
class ProfileVersion:
    """One kept version of a profile: what the history view lists."""

    version: int
    author: str
    saved_at: str
    note: str
    file: Path
    current: bool


def profile_history(folder: str | Path) -> list[ProfileVersion]:
    """Every kept version of the profile in ``folder``, newest first (unreadable old files are skipped)."""
    folder = Path(folder)
    current = load_profile(folder, check_files=False)
    out = [ProfileVersion(current.version, current.author, current.saved_at, current.change_note,
                          folder / PROFILE_FILE, True)]
    for file in folder.glob("profile.v*.yaml"):
        m = re.fullmatch(r"profile\.v(\d+)\.yaml", file.name)
        if not m or int(m.group(1)) == current.version:
            continue
        try:
            old = load_profile(file, check_files=False)
        except ProfileError as exc:
            log.warning("history of %s: %s", folder.name, exc)
            continue
        out.append(ProfileVersion(old.version, old.author, old.saved_at, old.change_note, file, False))
    return sorted(out, key=lambda v: v.version, reverse=True)


@dataclass(frozen=True)
class FieldChange:
    """One field that differs between two versions (``None`` where a side lacks it)."""

    path: str
    old: Any
    new: Any


_BOOKKEEPING = ("version", "saved_at", "change_note")


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts to ``{"a.b": value}``; lists stay whole (a list is one field)."""
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: data}


def diff_profiles(old: ProductProfile, new: ProductProfile, bookkeeping: bool = False) -> list[FieldChange]:
    """Field-by-field differences (dotted paths, lists compared whole), in schema order.

    ``version``, ``saved_at`` and ``change_note`` differ between any two versions and are left out
    unless ``bookkeeping``."""
    a, b = flatten(old.to_yaml_dict()), flatten(new.to_yaml_dict())
    keys = list(a) + [k for k in b if k not in a]
    return [FieldChange(k, a.get(k), b.get(k)) for k in keys
            if a.get(k) != b.get(k) and (bookkeeping or k not in _BOOKKEEPING)]


def rollback_profile(folder: str | Path, version: int, note: str = "", author: str | None = None) -> ProductProfile:
    """Make the content of ``version`` current again as a *new* version (history is never rewritten).

    The reference shots that version lists must still exist (they are never deleted)."""
    folder = Path(folder).resolve()
    current = load_profile(folder, check_files=False)
    if version == current.version:
        raise ProfileError(f"{folder.name}: v{version} is already the current version")
    target = load_profile_version(folder, version)
    restored = profile_from_dict(target.to_yaml_dict(), f"{folder.name}/profile.v{version}.yaml", folder)
    restored.version = current.version
    problems = _reference_problems(restored, folder, decode=False)
    if problems:
        raise ProfileError(f"{folder.name}: cannot roll back to v{version}: {problems[0]}")
    text = f"rollback to v{version}" + (f": {note.strip()}" if note.strip() else "")
    save_profile(restored, folder, bump=True, note=text, author=author)
    return restored


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
