"""The array cache: atomic, HMAC-signed entries; edited entries are refused; the state hash."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from inspector.cache import (
    MAC_FIELD,
    ArrayCache,
    arrays_sha256,
    ledger_sha256,
    state_ledger,
)

KEY = b"k" * 32


@pytest.fixture
def cache(tmp_path: Path) -> ArrayCache:
    return ArrayCache(tmp_path / "cache", key=KEY)


def _arrays() -> dict[str, np.ndarray]:
    return {"bank": np.arange(12, dtype=np.float32).reshape(3, 4), "mode": np.array("global")}


def _rewrite(path: Path, **changes: np.ndarray) -> None:
    """Edit an entry the way an attacker with file access would: keep everything, change some arrays."""
    with np.load(path, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    data.update(changes)
    with open(path, "wb") as fh:
        np.savez(fh, **data)


def test_round_trip_and_signed(cache: ArrayCache) -> None:
    p = cache.save("ns", "abc", _arrays())
    assert p is not None and p == cache.path("ns", "abc")
    with np.load(p) as z:
        assert MAC_FIELD in z.files  # the MAC travels inside the entry
    got = cache.load("ns", "abc")
    assert got is not None and set(got) == {"bank", "mode"}
    np.testing.assert_array_equal(got["bank"], _arrays()["bank"])
    assert not list(p.parent.glob(".*tmp"))


def test_edited_entry_is_refused_with_a_warning_and_recomputed(
    cache: ArrayCache, caplog: pytest.LogCaptureFixture
) -> None:
    p = cache.save("ns", "abc", _arrays())
    assert p is not None
    _rewrite(p, bank=np.zeros((3, 4), np.float32))  # the bank edit that flipped FAIL to PASS
    calls = []
    with caplog.at_level(logging.WARNING, logger="inspector.cache"):
        got = cache.get_or_compute("ns", "abc", lambda: calls.append(1) or _arrays())
    assert calls == [1] and cache.refused == 1
    np.testing.assert_array_equal(got["bank"], _arrays()["bank"])
    assert "refusing cache entry" in caplog.text and str(p) in caplog.text and "MAC mismatch" in caplog.text
    assert cache.load("ns", "abc") is not None  # the recomputed entry is signed again


def test_forged_mac_without_the_key_and_unsigned_entries_are_refused(cache: ArrayCache, tmp_path: Path) -> None:
    from inspector.cache import _mac_message
    from inspector.keys import sign

    p = cache.save("ns", "abc", _arrays())
    assert p is not None
    forged = {"bank": np.ones((3, 4), np.float32), "mode": np.array("global")}
    wrong_key_mac = sign(_mac_message("ns", "abc", arrays_sha256(forged)), b"x" * 32)
    _rewrite(p, bank=forged["bank"], **{MAC_FIELD: np.array(wrong_key_mac)})
    assert cache.load("ns", "abc") is None
    # an entry written without a MAC (an older version, or by hand)
    with open(cache.path("ns", "old"), "wb") as fh:
        np.savez(fh, **_arrays())
    assert cache.load("ns", "old") is None and cache.refused == 2


def test_an_entry_moved_to_another_key_is_refused(cache: ArrayCache) -> None:
    p = cache.save("ns", "a", _arrays())
    assert p is not None
    p.rename(cache.path("ns", "b"))  # the MAC binds namespace and key, not just the content
    assert cache.load("ns", "b") is None


def test_another_stations_key_is_refused(tmp_path: Path) -> None:
    ArrayCache(tmp_path, key=KEY).save("ns", "a", _arrays())
    assert ArrayCache(tmp_path, key=b"other-station-key-000000000000000").load("ns", "a") is None
    assert ArrayCache(tmp_path, key=KEY).load("ns", "a") is None  # refused entries are deleted


def test_save_never_follows_a_planted_temporary_symlink(cache: ArrayCache, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    p = cache.path("ns", "abc")
    p.parent.mkdir(parents=True)
    (p.parent / (p.name + ".tmp")).symlink_to(victim)  # the fixed name the old code wrote through
    assert cache.save("ns", "abc", _arrays()) == p
    assert victim.read_bytes() == b"precious"
    assert cache.load("ns", "abc") is not None


def test_arrays_sha256_sees_values_dtype_and_shape() -> None:
    a = np.arange(6, dtype=np.float32)
    base = arrays_sha256({"x": a})
    assert arrays_sha256({"x": a.copy()}) == base
    assert arrays_sha256({"x": a.reshape(2, 3)}) != base
    assert arrays_sha256({"x": a.astype(np.float64)}) != base
    b = a.copy()
    b[3] += 1e-6
    assert arrays_sha256({"x": b}) != base
    assert arrays_sha256({"y": a}) != base


def test_state_ledger_records_loaded_and_computed_entries(cache: ArrayCache) -> None:
    with state_ledger() as first:
        cache.get_or_compute("ns", "a", _arrays)  # computed
        cache.get_or_compute("ns", "b", lambda: {"v": np.ones(3)})
    with state_ledger() as second:
        cache.get_or_compute("ns", "a", _arrays)  # loaded from disk
        cache.get_or_compute("ns", "b", lambda: {"v": np.ones(3)})
    assert first == second and first[("ns", "a")] == arrays_sha256(_arrays())
    assert ledger_sha256(first) == ledger_sha256(second) is not None
    with state_ledger() as third:
        cache.get_or_compute("ns", "a", _arrays)
        cache.get_or_compute("ns", "b", lambda: {"v": np.zeros(3)})  # (hit: same key)
    assert ledger_sha256(third) == ledger_sha256(first)
    with state_ledger() as other:
        cache.get_or_compute("ns", "c", lambda: {"v": np.zeros(3)})
    assert ledger_sha256(other) != ledger_sha256(first)
    assert ledger_sha256({}) is None


def test_no_ledger_outside_a_block(cache: ArrayCache) -> None:
    cache.get_or_compute("ns", "a", _arrays)  # must not fail without an open ledger


def test_unreadable_station_key_disables_the_cache_instead_of_failing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    bad = tmp_path / "station.key"
    bad.write_text("not hex\n")
    monkeypatch.setenv("INSPECTOR_KEY_FILE", str(bad))
    cache = ArrayCache(tmp_path / "cache")
    with caplog.at_level(logging.WARNING, logger="inspector.cache"):
        got = cache.get_or_compute("ns", "a", _arrays)  # computes, caches nothing, says why
    np.testing.assert_array_equal(got["bank"], _arrays()["bank"])
    assert not cache.path("ns", "a").exists() and "cache disabled" in caplog.text and str(bad) in caplog.text
