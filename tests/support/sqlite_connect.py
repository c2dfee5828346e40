"""A ``connect`` factory for :class:`inspector.records.SqliteRecordStore` that keeps its connection.

SQLite holds some faults per connection: ``PRAGMA query_only`` (the database refuses writes, as a
read-only file does), ``max_page_count`` (no room to grow: "database or disk is full"). A test that
wants the store to meet them needs the store's own connection, which it gets by opening it:

    kept = KeptConnection()
    store = SqliteRecordStore(path, connect=kept)
    kept.con.execute("PRAGMA query_only=ON")
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any


class KeptConnection:
    """Opens one connection with :func:`sqlite3.connect` and keeps it as :attr:`con`.

    ``setup`` statements run on the new connection before the store gets it (a connection whose
    settings differ from SQLite's defaults, which the store must override)."""

    def __init__(self, setup: Sequence[str] = ()) -> None:
        self.setup = tuple(setup)
        self._opened: sqlite3.Connection | None = None
        self.database: Any = None
        self.kwargs: dict[str, Any] = {}

    def __call__(self, database: Any, **kwargs: Any) -> sqlite3.Connection:
        if self._opened is not None:
            raise AssertionError(f"KeptConnection is for one store; it already opened {self.database!r}")
        self.database, self.kwargs = database, kwargs
        self._opened = sqlite3.connect(database, **kwargs)
        for sql in self.setup:
            self._opened.execute(sql)
        return self._opened

    @property
    def con(self) -> sqlite3.Connection:
        if self._opened is None:
            raise AssertionError("the store never called its connect factory")
        return self._opened
