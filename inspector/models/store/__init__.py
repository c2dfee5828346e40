"""The model weight store: a manifest of known checkpoints and the folder that holds them.

``resources/models.yaml`` lists every checkpoint a pipeline can load (key, kind, architecture,
file names, sha256 or its published prefix, size, licence, source URL). On disk the store is::

    <model_dir>/<key>/<file>          the checkpoint files, exactly as published
    <model_dir>/installed.json        sha256 (and size, mtime, inode, ctime) of every file as installed

``installed.json`` doubles as a digest cache: a file whose size, mtime, inode and ctime match its
record, and whose record carries a valid HMAC under the station key, is not hashed again by
:meth:`ModelStore.status` or before loading; any change (or a forged or copied ``installed.json``)
means a full hash at the next check or load. Import hashes every file as it is copied and
:meth:`ModelStore.verify` with ``full=True`` always re-hashes. Hashing streams in 1 MiB chunks, so
multi-GB files never sit in memory.

Import and download stop at the manifest's size (and an archive member's header size) instead of
writing whatever arrives, check free space first, and write through exclusively created temporary
files in the target folder (:mod:`inspector.files`), so a planted symlink is never followed.

Errors say what to do: :class:`ModelMissingError` and :class:`ModelCorruptError` name the key, the
expected path and the command that fixes it (``inspector models download <key>`` or
``inspector models import <bundle>``).

Loading never unpickles arbitrary Python: ``torch.load(weights_only=True)`` (plus, per entry, a
short allow-list of named plain types, ``safe_globals``), safetensors, or — only for the entry whose
manifest says ``loader: torchscript`` (OpenAI's CLIP archive), after its sha256 is checked —
``torch.jit.load``. A refused type raises :class:`CheckpointRefusedError`, which names the type and
the manifest entry, whatever PyTorch's own wording.

The package splits along those jobs — :mod:`~.errors`, :mod:`~.manifest`, :mod:`~.verify` (hashing
and reports), :mod:`~.bundle` (offline import), :mod:`~.download`, :mod:`~.checkpoint` (loading) and
:mod:`~.model_store` (the :class:`ModelStore` itself) — and re-exports the API here, so
``from inspector.models.store import X`` is the one import to use.
"""

from __future__ import annotations

import logging

from inspector.files import file_sha256 as sha256_of
from inspector.models.store.checkpoint import CheckpointRefusedError
from inspector.models.store.errors import (
    BundleRejectedError,
    ManifestError,
    ModelCorruptError,
    ModelDownloadError,
    ModelMissingError,
    ModelStoreError,
    UnknownModelError,
    fix_command,
)
from inspector.models.store.manifest import (
    CHUNK,
    KINDS,
    RECORDS_FILE,
    SAFE_GLOBALS,
    WEIGHT_SUFFIXES,
    ModelEntry,
    default_manifest_path,
    load_manifest,
    packaged_file,
)
from inspector.models.store.model_store import ModelStore
from inspector.models.store.verify import (
    FileCheck,
    FileState,
    Status,
    VerifyReport,
    git_blob_sha1_of,
)
from inspector.progress import Progress

log = logging.getLogger(__name__)  # the one logger every store module writes to

__all__ = [
    "BundleRejectedError",
    "CHUNK",
    "CheckpointRefusedError",
    "FileCheck",
    "FileState",
    "KINDS",
    "ManifestError",
    "ModelCorruptError",
    "ModelDownloadError",
    "ModelEntry",
    "ModelMissingError",
    "ModelStore",
    "ModelStoreError",
    "Progress",
    "RECORDS_FILE",
    "SAFE_GLOBALS",
    "Status",
    "UnknownModelError",
    "VerifyReport",
    "WEIGHT_SUFFIXES",
    "default_manifest_path",
    "fix_command",
    "git_blob_sha1_of",
    "load_manifest",
    "packaged_file",
    "sha256_of",
]
