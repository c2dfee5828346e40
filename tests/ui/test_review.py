"""Review bookkeeping: lookahead requests, skipping decided items, stream order, live hold."""

from __future__ import annotations

from inspector.station.review import Review


def test_folder_lookahead_bounds_requests_and_skips_decided() -> None:
    r = Review("folder", total=5, lookahead=1)
    assert r.wanted() == [0, 1]  # the current image and the next one
    assert r.wanted() == []  # both in flight: nothing more
    assert r.add(0, "res0") is True
    assert r.wanted() == []  # 1 still in flight; window is [0, 1]
    r.mark_decided(0, "uid0")
    r.advance()
    assert r.current_key() == 1 and r.current() is None
    assert r.wanted() == [2]
    r.add(1, "res1")
    r.add(2, "res2")
    r.mark_decided(2, "uid2")  # decided out of order (e.g. after stepping ahead)
    r.mark_decided(1, "uid1")
    r.advance()
    assert r.current_key() == 3  # 2 was already decided
    assert r.wanted() == [3, 4]
    r.step(-2)
    assert r.current_key() == 1 and r.current() == "res1"
    r.forget_results()
    assert r.current() is None and 1 in r.wanted()  # a decided current item is still re-requested


def test_stream_reviews_in_arrival_order() -> None:
    r = Review("stream")
    assert r.at_end() and r.current() is None
    assert r.add(7, "a") is True  # operator was waiting: the new arrival is current
    assert r.add(8, "b") is False
    r.mark_decided(7, "u")
    r.advance()
    assert r.current() == "b"
    r.advance()
    assert r.at_end()
    assert r.add(9, "c") is True
    r.forget_results()  # a new profile: hot-folder files are not read again, so results stay
    assert r.current() == "c"


def test_live_latest_wins_and_holds_on_fail() -> None:
    r = Review("live", hold_on_fail=True)
    assert r.add(1, "ok1") and r.add(2, "ok2")
    assert r.current() == "ok2" and 1 not in r.results  # only what is shown is kept
    assert r.add(3, "fail", is_fail=True) and r.hold
    assert r.add(4, "ok4") is False and r.current() == "fail"  # held until decided
    r.mark_decided(3, "u")
    r.advance()
    assert not r.hold and r.add(5, "ok5") and r.current() == "ok5"
    assert 3 in r.results  # the decided frame is kept (undo can bring it back)


def test_stepping_past_an_undecided_result_marks_it_skipped_until_decided() -> None:
    r = Review("folder", total=3, lookahead=2)
    r.add(0, "res0")
    r.add(1, "res1")
    assert r.step(1) and r.skipped == {0}  # left 0 undecided
    assert r.step(1) and r.skipped == {0, 1}
    r.step(-2)
    r.mark_decided(0, "u0")
    assert r.skipped == {1}  # a decision clears the skip
    r2 = Review("folder", total=2)
    assert r2.step(1) and r2.skipped == set()  # nothing was shown yet (no result): not a skip
