"""What the operator is looking at, and what the worker should inspect next (Qt-free).

Three modes:

* ``folder`` — a fixed list (keys are folder indices). The item under review and the next
  ``lookahead`` undecided items are requested, so image N+1 is inspected while the operator
  looks at image N; never more than ``lookahead + 1`` requests are in flight.
* ``stream`` — a hot folder: results arrive in file order (keys are arrival numbers); the
  operator reviews them in that order; when waiting at the end, a new arrival becomes current.
* ``live`` — a camera: the newest result is shown unless the view is held (``hold``); a FAIL
  holds the view by itself when ``hold_on_fail`` so the operator can decide on it.
"""

from __future__ import annotations

from typing import Any, Literal

Mode = Literal["folder", "stream", "live"]


class Review:
    def __init__(self, mode: Mode, total: int = 0, lookahead: int = 1, hold_on_fail: bool = True) -> None:
        self.mode: Mode = mode
        self.lookahead = max(0, lookahead)
        self.hold_on_fail = hold_on_fail
        self.results: dict[int, Any] = {}
        self.order: list[int] = list(range(total)) if mode == "folder" else []
        self.requested: set[int] = set()
        self.decided: dict[int, str] = {}  # key -> record uid
        self.skipped: set[int] = set()  # undecided keys the operator moved past with next/previous
        self.pos = 0
        self.hold = False
        self.live_key: int | None = None

    # ------------------------------------------------------------------ queries
    @property
    def total(self) -> int:
        return len(self.order)

    def current_key(self) -> int | None:
        if self.mode == "live":
            return self.live_key
        return self.order[self.pos] if 0 <= self.pos < len(self.order) else None

    def current(self) -> Any | None:
        key = self.current_key()
        return None if key is None else self.results.get(key)

    def at_end(self) -> bool:
        return self.mode != "live" and self.pos >= len(self.order)

    def in_flight(self) -> int:
        return len(self.requested - set(self.results))

    def wanted(self) -> list[int]:
        """Folder keys to request now (current first), respecting the in-flight bound."""
        if self.mode != "folder":
            return []
        budget = self.lookahead + 1 - self.in_flight()
        cur = self.current_key()
        window = [k for k in self.order[self.pos :] if k not in self.decided or k == cur][: self.lookahead + 1]
        out = [k for k in window if k not in self.requested][: max(budget, 0)]
        self.requested.update(out)
        return out

    def done_count(self) -> int:
        return len(self.results)

    # ------------------------------------------------------------------ updates
    def add(self, key: int, result: Any, is_fail: bool = False) -> bool:
        """Store a result; True when it is (now) the one under review."""
        self.results[key] = result
        if self.mode == "stream":
            if key not in self.order:
                self.order.append(key)
            return self.current_key() == key
        if self.mode == "live":
            if self.hold:
                self.results.pop(key, None)
                return False
            if self.live_key is not None and self.live_key not in self.decided:
                self.results.pop(self.live_key, None)  # only what is shown or decided is kept
            self.live_key = key
            if is_fail and self.hold_on_fail:
                self.hold = True
            return True
        return self.current_key() == key

    def mark_decided(self, key: int, uid: str) -> None:
        self.decided[key] = uid
        self.skipped.discard(key)

    def undecide(self, key: int) -> None:
        self.decided.pop(key, None)

    def advance(self) -> bool:
        """Move to the next undecided item (live: release the hold). True if moved."""
        if self.mode == "live":
            self.hold = False
            return True
        start = self.pos
        self.pos += 1
        while self.pos < len(self.order) and self.order[self.pos] in self.decided:
            self.pos += 1
        return self.pos != start

    def step(self, delta: int) -> bool:
        """Move by ``delta`` items (decided or not) within bounds. True if moved.

        An undecided part with a result that the operator steps away from is remembered as
        *skipped* (until it is decided)."""
        if self.mode == "live" or not self.order:
            return False
        new = min(max(self.pos + delta, 0), len(self.order) - 1)
        moved = new != self.pos
        left = self.current_key()
        if moved and left is not None and left not in self.decided and left in self.results:
            self.skipped.add(left)
        self.pos = new
        return moved

    def seek_key(self, key: int) -> bool:
        if self.mode == "live":
            if key in self.results:
                self.live_key = key
                self.hold = True
                return True
            return False
        if key in self.order:
            self.pos = self.order.index(key)
            return True
        return False

    def forget_results(self) -> None:
        """Drop results (profile changed) so that they are requested again.

        A hot-folder stream keeps its results: its files were handed over once and are not read
        again; each result names the profile that produced it.
        """
        if self.mode == "stream":
            return
        self.results.clear()
        self.requested.clear()
        if self.mode == "live":
            self.live_key = None
            self.hold = False
