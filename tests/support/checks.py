"""Small helpers the known-answer / mutation tests share."""

from __future__ import annotations

import hashlib
import io
import re

import torch


def exact(msg: str) -> str:
    """A ``pytest.raises(match=)`` pattern that matches exactly ``msg`` (escaped, anchored)."""
    return f"^{re.escape(msg)}$"


def torch_bytes(obj: object, **kw: object) -> bytes:
    """``torch.save`` of ``obj`` into memory (``kw``: torch.save's options)."""
    buf = io.BytesIO()
    torch.save(obj, buf, **kw)  # type: ignore[arg-type]
    return buf.getvalue()


def pattern_bytes(tag: str, n: int) -> bytes:
    """``n`` bytes of ``tag`` repeated: file contents whose every offset is known."""
    return (tag.encode() * n)[:n]


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
