"""Known-answer tests of :mod:`inspector.models.store.errors`: every message and attribute."""

from __future__ import annotations

from pathlib import Path

import pytest

from inspector.models.store.errors import (
    BundleRejectedError,
    ModelCorruptError,
    ModelMissingError,
    ModelStoreError,
    UnknownModelError,
    fix_command,
)

FIX = ("`inspector models download sam_vit_b`, or on a station without internet "
       "`inspector models import <bundle folder or archive>`")


def test_fix_command() -> None:
    assert fix_command("sam_vit_b") == FIX


def test_missing_with_and_without_detail() -> None:
    e = ModelMissingError("sam_vit_b", "/m/sam_vit_b/sam.pth")  # type: ignore[arg-type]
    assert (e.key, e.path, e.command) == ("sam_vit_b", Path("/m/sam_vit_b/sam.pth"), "inspector models download sam_vit_b")
    assert isinstance(e.path, Path)
    assert str(e) == f"model 'sam_vit_b' is not installed (expected /m/sam_vit_b/sam.pth). Install it with {FIX}."
    e = ModelMissingError("sam_vit_b", Path("/m/x"), "no weights file")
    assert str(e) == f"model 'sam_vit_b' is not installed: no weights file (expected /m/x). Install it with {FIX}."
    assert isinstance(e, ModelStoreError) and isinstance(e, RuntimeError)


def test_corrupt() -> None:
    e = ModelCorruptError("sam_vit_b", "/m/s.pth", "size 3 bytes, expected 4")  # type: ignore[arg-type]
    assert (e.key, e.path, e.command, e.detail) == (
        "sam_vit_b", Path("/m/s.pth"), "inspector models download sam_vit_b", "size 3 bytes, expected 4")
    assert isinstance(e.path, Path)
    assert str(e) == f"model 'sam_vit_b': /m/s.pth is corrupt: size 3 bytes, expected 4. Replace it with {FIX}."


def test_bundle_rejected() -> None:
    e = BundleRejectedError("/b.zip", ["one", "two"], ["x.bin: bad", "y.bin: worse"])  # type: ignore[arg-type]
    assert (e.key, e.path, e.command) == ("", Path("/b.zip"), "inspector models import")
    assert isinstance(e.path, Path)
    assert e.imported == ["one", "two"] and e.failures == ["x.bin: bad", "y.bin: worse"]
    assert e.detail == "imported one, two; 2 file(s) rejected:\n  x.bin: bad\n  y.bin: worse"
    assert str(e) == "/b.zip: imported one, two; 2 file(s) rejected:\n  x.bin: bad\n  y.bin: worse"
    assert e.args == (str(e),)
    e = BundleRejectedError(Path("/b"), [], ["a: no"])
    assert e.detail == "nothing imported; 1 file(s) rejected:\n  a: no" and str(e) == "/b: " + e.detail
    assert isinstance(e, ModelCorruptError)


def test_unknown_key_reads_as_its_message() -> None:
    e = UnknownModelError("unknown model key 'x'; known keys: a, b")
    assert str(e) == "unknown model key 'x'; known keys: a, b"  # not KeyError's quoted repr
    assert str(UnknownModelError()) == ""
    assert str(UnknownModelError("first", "second")) == "first"
    with pytest.raises(KeyError):
        raise UnknownModelError("k")
