"""Lazy ``"module:Attribute"`` registries, so optional heavy libraries load only when used."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any


def resolve(registry: Mapping[str, str], name: str, what: str) -> Any:
    """Import and return the attribute that ``registry[name]`` ("pkg.module:Attr") points to.

    An unknown name raises ``ValueError`` naming ``what`` and the known names."""
    try:
        target = registry[name]
    except KeyError:
        raise ValueError(f"unknown {what} {name!r}; choose one of {', '.join(sorted(registry))}") from None
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)
