"""Loading a checkpoint without unpickling arbitrary Python (weights-only, safetensors, TorchScript by manifest)."""

from __future__ import annotations

import logging
import pickle
import re
import time
import warnings
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from inspector.models.store.errors import ModelCorruptError, ModelStoreError, fix_command
from inspector.models.store.manifest import ModelEntry, SAFE_GLOBALS

log = logging.getLogger("inspector.models.store")  # one logger for the whole store


# --------------------------------------------------------------------------------------- loading
def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    if "weights_only" in text:  # PyTorch advice to disable the safe loader: never relayed
        return type(exc).__name__
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            return any(n.endswith("/constants.pkl") or n == "constants.pkl" for n in zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _pickle_globals(path: Path) -> list[str]:
    """``module.name`` of every global a torch checkpoint's pickle references, without unpickling.

    Reads the opcodes of ``<archive>/data.pkl`` (zip format) or of the pickles of a legacy file
    with :mod:`pickletools`; nothing is imported or executed. Best effort: [] when unreadable."""
    import pickletools

    found: list[str] = []

    def scan(stream: IO[bytes]) -> None:
        strings: list[str] = []
        for op, arg, _pos in pickletools.genops(stream):
            if op.name == "GLOBAL" and isinstance(arg, str):
                found.append(arg.replace(" ", "."))
            elif op.name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE") and isinstance(arg, str):
                strings = [*strings[-1:], arg]
            elif op.name == "STACK_GLOBAL" and len(strings) == 2:
                found.append(".".join(strings))
            if op.name == "STOP":
                return

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                names = [n for n in zf.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
                for name in names[:1]:
                    with zf.open(name) as fh:
                        scan(fh)
        else:
            with open(path, "rb") as fh:
                for _ in range(4):  # legacy format: magic, protocol, sys info, then the object
                    scan(fh)
    except (ValueError, EOFError, OSError, zipfile.BadZipFile, pickle.UnpicklingError):
        pass
    return list(dict.fromkeys(found))


def _refused_types(path: Path, allowed: Iterable[str], exc: BaseException) -> list[str]:
    """The types a weights-only load refused, found in the file itself (not in torch's wording)."""
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        default = set(_get_allowed_globals())
    except Exception:  # noqa: BLE001 - private API; fall back to "torch types are torch's business"
        default = set()
    ok = set(default) | set(allowed)
    refused = [g for g in _pickle_globals(path) if g not in ok and not g.startswith("torch.")]
    if not refused:
        refused = re.findall(r"GLOBAL ([\w.]+)", str(exc))
    return refused or ["(an unlisted Python type)"]


class CheckpointRefusedError(ModelCorruptError):
    """A checkpoint holds Python objects (or code) outside its entry's allow-list; nothing ran.

    ``refused`` lists the types by name; ``manifest`` is the manifest file holding the entry."""

    def __init__(self, key: str, path: Path, refused: list[str], manifest: Path | None, allowed: list[str]) -> None:
        self.key, self.path, self.command = key, Path(path), f"inspector models download {key}"
        self.refused, self.manifest = refused, manifest
        where = f"manifest entry {key!r}" + (f" in {manifest}" if manifest else "")
        self.detail = (
            f"holds Python objects of type {', '.join(refused)}, which Inspector's weights-only loader refuses "
            f"({where} allows {', '.join(allowed) or 'no extra types'}); nothing from the file was executed"
        )
        ModelStoreError.__init__(
            self,
            f"model {key!r}: {path} {self.detail}. If the file is genuine (its sha256 matched the manifest), "
            f"report the type(s) and the entry {key!r} to the Inspector maintainers; otherwise replace it with "
            f"{fix_command(key)}.",
        )


def _load_checkpoint(entry: ModelEntry, path: Path, map_location: Any, manifest: Path | None = None) -> Any:
    key = entry.key
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device=str(map_location))
        except (SafetensorError, OSError) as exc:
            raise ModelCorruptError(key, path, f"not a readable safetensors file ({exc})") from exc

    import torch

    is_zip = zipfile.is_zipfile(path)
    torchscript = is_zip and _is_torchscript(path)
    if torchscript and entry.loader != "torchscript":
        # TorchScript holds code; only the one entry published that way may be loaded as such
        raise CheckpointRefusedError(key, path, ["TorchScript archive (code)"], manifest, entry.safe_globals)
    if torchscript:
        # OpenAI's CLIP releases are TorchScript archives: tensors + TorchScript code, no Python
        # pickle; torch.jit.load restores them without importing arbitrary Python objects. The
        # caller has checked the file's sha256 against the manifest (ModelStore.path).
        try:
            with warnings.catch_warnings():  # torch >= 2.10 flags jit as deprecated; loading still works
                warnings.simplefilter("ignore", FutureWarning)
                return dict(torch.jit.load(str(path), map_location=map_location).state_dict())
        except RuntimeError as exc:
            raise ModelCorruptError(key, path, f"not a readable TorchScript archive ({exc})") from exc
    allowed = [SAFE_GLOBALS[n] for n in entry.safe_globals]
    t0 = time.perf_counter()
    try:
        with torch.serialization.safe_globals(allowed):
            obj = torch.load(path, map_location=map_location, weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as exc:
        # torch's text changes between releases (and advises weights_only=False): never shown
        log.debug("weights-only load of %s refused: %s", path, exc)
        globals_seen = _pickle_globals(path)
        if not globals_seen and "GLOBAL" not in str(exc):
            raise ModelCorruptError(key, path, "not a readable PyTorch checkpoint (its pickle is malformed)") from exc
        raise CheckpointRefusedError(
            key, path, _refused_types(path, entry.safe_globals, exc), manifest, entry.safe_globals
        ) from None
    except (RuntimeError, EOFError, ValueError, zipfile.BadZipFile) as exc:
        raise ModelCorruptError(key, path, f"not a readable PyTorch checkpoint ({_first_line(exc)})") from exc
    log.debug("loaded %s in %.2f s", path, time.perf_counter() - t0)
    return obj
