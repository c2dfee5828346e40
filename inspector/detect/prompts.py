"""FADE's text prompt ensembles, assembled from data in ``resources/prompts/``.

* classification (language AC): the WinCLIP compositional ensemble with the profile's object
  name — states × templates (7 × 22 = 154 normal, 4 × 22 = 88 anomalous by default);
* segmentation (language AS): the same ensemble with the class-agnostic object word
  ("object"), plus the built-in object-agnostic industrial descriptions
  (``industrial.yaml``), plus the profile's class-specific phrases on the anomalous side.

Profiles may replace the state words (``prompts.normal_states`` / ``prompts.anomalous_states``).
A state holding ``{object}`` or ``{c}`` is filled with the object word; a bare word is an
adjective put in front of it ("scratched" → "scratched bottle").

Every prompt reaches the text encoder as ``fade.text_template`` around it ("a photo of a {}."),
see :func:`encoder_texts`. GroundingDINO captions (SAA) are built separately in ``saa``.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:  # pragma: no cover
    from inspector.profile import ProductProfile

WINCLIP_FILE = "winclip.yaml"
INDUSTRIAL_FILE = "industrial.yaml"


class PromptLibraryError(ValueError):
    """A prompt data file is missing or malformed; the message names the file and the field."""


@dataclass(frozen=True)
class PromptSet:
    """Normal and anomalous text prompts of one ensemble (order kept; duplicates act as weights).

    SAM point prompts are :class:`inspector.detect.ppg.PointPrompts`."""

    normal: tuple[str, ...]
    anomalous: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.normal or not self.anomalous:
            raise PromptLibraryError(
                f"a prompt ensemble needs prompts on both sides (normal: {len(self.normal)}, "
                f"anomalous: {len(self.anomalous)})"
            )

    def content_hash(self) -> str:
        blob = json.dumps([self.normal, self.anomalous], ensure_ascii=False, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()

    def __len__(self) -> int:
        return len(self.normal) + len(self.anomalous)


@dataclass(frozen=True)
class PromptLibrary:
    """The built-in prompt data (WinCLIP states and templates, industrial descriptions)."""

    normal_states: tuple[str, ...]
    anomalous_states: tuple[str, ...]
    templates: tuple[str, ...]
    segmentation_object: str
    industrial_normal: tuple[str, ...]
    industrial_anomalous: tuple[str, ...]


# ---------------------------------------------------------------------------------- loading
def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PromptLibraryError(f"{path}: prompt file not found; reinstall Inspector or restore the file") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise PromptLibraryError(f"{path}: cannot read prompt file ({exc})") from exc
    if not isinstance(data, dict):
        raise PromptLibraryError(f"{path}: expected a mapping at the top level")
    return data


def _strings(data: dict[str, Any], field: str, source: Path, placeholder: str | None = None) -> tuple[str, ...]:
    value = data.get(field)
    if not isinstance(value, list) or not value or not all(isinstance(s, str) and s.strip() for s in value):
        raise PromptLibraryError(f"{source}: {field}: must be a non-empty list of non-empty strings")
    if placeholder is not None:
        bad = [s for s in value if placeholder not in s]
        if bad:
            raise PromptLibraryError(f"{source}: {field}: entries must contain {placeholder!r}, e.g. not {bad[0]!r}")
    return tuple(s.strip() for s in value)


def compose_descriptions(frames: tuple[str, ...], surfaces: tuple[str, ...], items: tuple[str, ...],
                         per_item: int) -> list[str]:
    """Item i with frame (i + j) mod F and surface (5i + 3j) mod S, j < per_item (distinct per item)."""
    n_f, n_s = len(frames), len(surfaces)
    out = []
    for i, item in enumerate(items):
        for j in range(per_item):
            frame = frames[(i + j) % n_f]
            out.append(frame.format(surface=surfaces[(5 * i + 3 * j) % n_s], item=item))
    return out


def _industrial_side(data: dict[str, Any], side: str, surfaces: tuple[str, ...], source: Path) -> tuple[str, ...]:
    section = data.get(side)
    if not isinstance(section, dict):
        raise PromptLibraryError(f"{source}: {side}: missing section (needs frames, items, phrases, per_item)")
    frames = _strings(section, "frames", source / side)
    for f in frames:
        if "{surface}" not in f or "{item}" not in f:
            raise PromptLibraryError(f"{source}: {side}.frames: {f!r} must contain both {{surface}} and {{item}}")
    items = _strings(section, "items", source / side)
    phrases = _strings(section, "phrases", source / side)
    per_item = section.get("per_item", 1)
    if not isinstance(per_item, int) or not 1 <= per_item <= len(frames):
        raise PromptLibraryError(f"{source}: {side}.per_item: must be an integer in [1, {len(frames)}], got {per_item!r}")
    return tuple(phrases) + tuple(compose_descriptions(frames, surfaces, items, per_item))


@functools.lru_cache(maxsize=4)
def _load_cached(folder: str, stamp: tuple[float, float]) -> PromptLibrary:
    root = Path(folder)
    wpath, ipath = root / WINCLIP_FILE, root / INDUSTRIAL_FILE
    w = _read_yaml(wpath)
    ind = _read_yaml(ipath)
    surfaces = _strings(ind, "surfaces", ipath)
    obj = w.get("segmentation_object", "object")
    if not isinstance(obj, str) or not obj.strip():
        raise PromptLibraryError(f"{wpath}: segmentation_object: must be a non-empty string")
    return PromptLibrary(
        normal_states=_strings(w, "normal_states", wpath, "{c}"),
        anomalous_states=_strings(w, "anomalous_states", wpath, "{c}"),
        templates=_strings(w, "templates", wpath, "{}"),
        segmentation_object=obj.strip(),
        industrial_normal=_industrial_side(ind, "normal", surfaces, ipath),
        industrial_anomalous=_industrial_side(ind, "anomalous", surfaces, ipath),
    )


def prompts_dir() -> Path:
    from inspector.settings import resources_dir

    return resources_dir() / "prompts"


def load_library(folder: str | Path | None = None) -> PromptLibrary:
    """Read and validate the prompt data (cached until the files change)."""
    root = Path(folder) if folder is not None else prompts_dir()
    stamp = tuple((root / f).stat().st_mtime if (root / f).exists() else -1.0 for f in (WINCLIP_FILE, INDUSTRIAL_FILE))
    return _load_cached(str(root), stamp)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------- assembly
def fill_state(state: str, obj: str) -> str:
    """A state phrase for one object: ``{c}``/``{object}`` filled, a bare word used as adjective."""
    if "{c}" in state or "{object}" in state:
        return state.replace("{c}", obj).replace("{object}", obj)
    return f"{state} {obj}"


def winclip_prompts(obj: str, states: tuple[str, ...] | list[str], templates: tuple[str, ...]) -> list[str]:
    """WinCLIP compositional prompts: every state (filled with ``obj``) in every template."""
    return [t.format(fill_state(s, obj)) for s in states for t in templates]


def class_specific_phrases(profile: ProductProfile) -> list[str]:
    """The profile's class-specific defect phrases ('. ' separates phrases), object filled in."""
    out: list[str] = []
    for entry in profile.prompts.class_specific:
        for phrase in profile.fill(entry).split("."):
            if phrase.strip():
                out.append(phrase.strip())
    return out


def _states(profile: ProductProfile, library: PromptLibrary) -> tuple[tuple[str, ...], tuple[str, ...]]:
    normal = profile.prompts.normal_states
    anomalous = profile.prompts.anomalous_states
    return (tuple(normal) if normal else library.normal_states,
            tuple(anomalous) if anomalous else library.anomalous_states)


def classification_prompts(profile: ProductProfile, library: PromptLibrary | None = None) -> PromptSet:
    """Language-AC ensemble: WinCLIP states × templates with the profile's object name."""
    library = library or load_library()
    normal, anomalous = _states(profile, library)
    return PromptSet(
        normal=tuple(winclip_prompts(profile.object, normal, library.templates)),
        anomalous=tuple(winclip_prompts(profile.object, anomalous, library.templates)),
    )


def segmentation_prompts(profile: ProductProfile, library: PromptLibrary | None = None) -> PromptSet:
    """Language-AS ensemble: class-agnostic WinCLIP + industrial descriptions + class-specific phrases."""
    library = library or load_library()
    normal_states, anomalous_states = _states(profile, library)
    obj = library.segmentation_object
    normal = winclip_prompts(obj, normal_states, library.templates)
    anomalous = winclip_prompts(obj, anomalous_states, library.templates)
    if profile.fade.industrial_prompts:
        normal += library.industrial_normal
        anomalous += library.industrial_anomalous
    anomalous += class_specific_phrases(profile)
    return PromptSet(normal=tuple(normal), anomalous=tuple(anomalous))


def encoder_texts(prompts: tuple[str, ...] | list[str], template: str = "a photo of a {}.") -> list[str]:
    """What the text encoder sees: ``template`` around each prompt (its own final full stop dropped)."""
    return [template.format(p.strip().rstrip(".").strip()) for p in prompts]
