"""The store's errors: each names the key, the file and the command that fixes it."""

from __future__ import annotations

from pathlib import Path


def fix_command(key: str) -> str:
    return (
        f"`inspector models download {key}`, or on a station without internet "
        "`inspector models import <bundle folder or archive>`"
    )


# ---------------------------------------------------------------------------------------- errors
class ModelStoreError(RuntimeError):
    """Base class of the store's errors."""


class ModelMissingError(ModelStoreError):
    """A checkpoint is not installed. ``key``, ``path`` and ``command`` say which, where and how."""

    def __init__(self, key: str, path: Path, detail: str = "") -> None:
        self.key, self.path, self.command = key, Path(path), f"inspector models download {key}"
        what = f": {detail}" if detail else ""
        super().__init__(
            f"model {key!r} is not installed{what} (expected {path}). Install it with {fix_command(key)}."
        )


class ModelCorruptError(ModelStoreError):
    """A checkpoint's size or checksum does not match the manifest, or it cannot be read."""

    def __init__(self, key: str, path: Path, detail: str) -> None:
        self.key, self.path, self.command = key, Path(path), f"inspector models download {key}"
        self.detail = detail
        super().__init__(f"model {key!r}: {path} is corrupt: {detail}. Replace it with {fix_command(key)}.")


class BundleRejectedError(ModelCorruptError):
    """Some files of an import bundle failed verification (the good ones were installed)."""

    def __init__(self, src: Path, imported: list[str], failures: list[str]) -> None:
        self.key, self.path, self.command = "", Path(src), "inspector models import"
        self.imported, self.failures = imported, failures
        done = f"imported {', '.join(imported)}; " if imported else "nothing imported; "
        self.detail = f"{done}{len(failures)} file(s) rejected:\n  " + "\n  ".join(failures)
        ModelStoreError.__init__(self, f"{src}: {self.detail}")


class ModelDownloadError(ModelStoreError):
    """A download could not start or was interrupted (a partial file may be kept for resuming)."""


class UnknownModelError(ModelStoreError, KeyError):
    """A key that the manifest does not list; the message lists the known keys."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ManifestError(ModelStoreError):
    """``models.yaml`` is unreadable or invalid; the message names the file and the field."""
