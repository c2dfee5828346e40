"""Known-answer tests of the store's hashing and verify reports (``inspector/models/store/verify.py``).

Digests and record MACs are recomputed here with hashlib / hmac under a station key written by the
test; mismatch texts (what an operator reads in ``inspector models verify``) are compared in full.
Written for the mutation run of bench/mutation.md.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from inspector.models.store import FileCheck, ModelEntry, VerifyReport, git_blob_sha1_of
from inspector.models.store import verify as verify_mod

KEY = bytes(range(32))
SIG = (11, 22, 33, 44)


@pytest.fixture
def key_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "keys" / "station.key"
    path.parent.mkdir()
    path.write_text(KEY.hex() + "\n", encoding="ascii")
    monkeypatch.setenv("INSPECTOR_KEY_FILE", str(path))
    return path


def _mac(blob: str) -> str:
    return hmac.new(KEY, b"inspector-installed-v2\0" + blob.encode(), hashlib.sha256).hexdigest()


def _entry(**fields: object) -> ModelEntry:
    base: dict[str, object] = dict(key="k", kind="sam", arch="a", files=["f.bin"], sha256={}, size_mb=1.0,
                                   licence="MIT", urls={})
    base.update(fields)
    return ModelEntry(**base)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------- hashing
@pytest.mark.parametrize("size", [0, 5, (1 << 20) + 3])
def test_git_blob_sha1_streams_header_and_content(tmp_path: Path, size: int) -> None:
    data = bytes((i * 7) % 251 for i in range(size))
    p = tmp_path / "f.bin"
    p.write_bytes(data)
    assert git_blob_sha1_of(p) == hashlib.sha1(b"blob " + str(size).encode() + b"\x00" + data).hexdigest()


def test_git_blob_sha1_reads_in_1_mib_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Multi-GB checkpoints never sit in memory: every read asks for at most 1 MiB."""
    import builtins

    data = b"z" * ((3 << 20) + 1)
    p = tmp_path / "big.bin"
    p.write_bytes(data)
    sizes: list[object] = []
    real_open = builtins.open

    class Spy:
        def __init__(self, fh: object) -> None:
            self.fh = fh

        def __enter__(self) -> "Spy":
            return self

        def __exit__(self, *exc: object) -> None:
            self.fh.close()  # type: ignore[attr-defined]

        def read(self, n: object = -1) -> bytes:
            sizes.append(n)
            return self.fh.read(n)  # type: ignore[attr-defined]

    monkeypatch.setattr(verify_mod, "open", lambda *a, **k: Spy(real_open(*a, **k)), raising=False)
    assert git_blob_sha1_of(p) == hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    assert sizes == [1 << 20] * 5  # four chunks with data (the last one byte), then the empty read


def test_git_blob_sha1_of_known_files(tmp_path: Path) -> None:
    p = tmp_path / "e"
    p.write_bytes(b"")
    assert git_blob_sha1_of(p) == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"  # `git hash-object` of an empty file
    p.write_bytes(b"hello\n")
    assert git_blob_sha1_of(p) == "ce013625030ba8dba906f756967f9e9ca394464a"


def test_signature_is_size_mtime_inode_ctime() -> None:
    st = SimpleNamespace(st_size=1, st_mtime_ns=2, st_ino=3, st_ctime_ns=4, st_atime_ns=5, st_dev=6, st_mode=7)
    assert verify_mod._signature(st) == (1, 2, 3, 4)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------- record MAC
def test_record_mac_is_hmac_of_compact_json(key_file: Path) -> None:
    rec = {"sha256": "ab" * 32, "size": 5, "mtime_ns": 6, "ino": 7, "ctime_ns": 8, "source": "import: x",
           "recorded": "2026-01-01T00:00:00+00:00", "mac": "ignored"}
    blob = '["alpha/a.pth","' + "ab" * 32 + '",5,6,7,8,"import: x"]'
    assert verify_mod._record_mac("alpha/a.pth", rec) == _mac(blob)
    # missing fields are null; "recorded" and "mac" are not covered
    assert verify_mod._record_mac("k/f", {"sha256": "x"}) == _mac('["k/f","x",null,null,null,null,null]')
    assert verify_mod._record_mac("k/f", {"sha256": "é"}) == _mac('["k/f","\\u00e9",null,null,null,null,null]')


def test_record_mac_without_a_station_key_is_none_and_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="inspector.models.store")
    monkeypatch.setattr(logging.getLogger("inspector.models.store"), "disabled", False)
    bad = tmp_path / "bad.key"
    bad.write_text("not hex\n")
    monkeypatch.setenv("INSPECTOR_KEY_FILE", str(bad))
    assert verify_mod._record_mac("k/f", {"sha256": "x"}) is None
    msgs = [r.getMessage() for r in caplog.records if r.name == "inspector.models.store"]
    assert len(msgs) == 1
    assert msgs[0].startswith(f"station key unavailable ({bad}: station key unreadable or malformed (")
    assert msgs[0].endswith("); weight digests are not cached")
    assert caplog.records[-1].levelno == logging.WARNING
    # an OSError (the key folder cannot be created: a file is in the way) is caught too
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    monkeypatch.setenv("INSPECTOR_KEY_FILE", str(blocker / "station.key"))
    assert verify_mod._record_mac("k/f", {"sha256": "x"}) is None
    assert len(caplog.records) == 2 and caplog.records[-1].getMessage().endswith("weight digests are not cached")


def _rec(**extra: object) -> dict[str, object]:
    rec: dict[str, object] = {"sha256": "ab" * 32, "size": 11, "mtime_ns": 22, "ino": 33, "ctime_ns": 44,
                              "source": "s"}
    rec.update(extra)
    rec.setdefault("mac", _mac(
        '["k/f",' + ",".join(_json(rec[f]) for f in ("sha256", "size", "mtime_ns", "ino", "ctime_ns", "source")) + "]"
    ))
    return rec


def _json(v: object) -> str:
    return f'"{v}"' if isinstance(v, str) else str(v)


def test_record_is_trusted_only_when_signed_and_matching(key_file: Path) -> None:
    good = _rec()
    assert verify_mod._record_trusted("k/f", good, SIG) is True
    assert verify_mod._record_trusted("k/g", good, SIG) is False  # the MAC covers the file's name
    for i in range(4):  # each part of the signature matters
        sig = tuple(v + 1 if j == i else v for j, v in enumerate(SIG))
        assert verify_mod._record_trusted("k/f", good, sig) is False  # type: ignore[arg-type]
    assert verify_mod._record_trusted("k/f", {**good, "mac": "0" * 64}, SIG) is False
    assert verify_mod._record_trusted("k/f", {**good, "source": "other"}, SIG) is False
    assert verify_mod._record_trusted("k/f", None, SIG) is False
    assert verify_mod._record_trusted("k/f", [good], SIG) is False  # type: ignore[arg-type]
    no_mac = dict(good)
    del no_mac["mac"]
    assert verify_mod._record_trusted("k/f", no_mac, SIG) is False
    assert verify_mod._record_trusted("k/f", {**good, "mac": 5}, SIG) is False
    assert verify_mod._record_trusted("k/f", _rec(sha256=5), SIG) is False  # signed, but not a digest string


def test_record_is_not_trusted_without_a_station_key(
    key_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = _rec()
    assert verify_mod._record_trusted("k/f", good, SIG) is True
    bad = tmp_path / "bad.key"
    bad.write_text("zz\n")
    monkeypatch.setenv("INSPECTOR_KEY_FILE", str(bad))
    assert verify_mod._record_trusted("k/f", good, SIG) is False


# ---------------------------------------------------------------------------------------- wording
@pytest.mark.parametrize(
    "digest, short",
    [("a" * 13, "a" * 12 + "…"), ("0123456789abcdef", "0123456789ab…"), ("a" * 12, "a" * 12), ("abc", "abc"),
     ("", "?"), (None, "?")],
)
def test_short_digest(digest: str | None, short: str) -> None:
    assert verify_mod._short(digest) == short


def test_mismatch_size_and_empty(tmp_path: Path) -> None:
    e = _entry(file_bytes={"f.bin": 10}, sha256={"f.bin": "00" * 32})
    assert verify_mod._mismatch(e, "f.bin", 9, "ff" * 32, None) == "size 9 bytes, expected 10 (incomplete copy or download?)"
    assert verify_mod._mismatch(e, "f.bin", 11, None, None) == "size 11 bytes, expected 10 (incomplete copy or download?)"
    assert verify_mod._mismatch(e, "other", 0, None, None) == "empty file"
    assert verify_mod._mismatch(_entry(), "f.bin", 0, "x", None) == "empty file"
    assert verify_mod._mismatch(_entry(), "f.bin", 1, "x", None) is None  # nothing published: nothing to compare
    assert verify_mod._mismatch(e, "f.bin", 10, "00" * 32, None) is None


def test_mismatch_sha256_full_and_prefix() -> None:
    full = "0123456789abcdef" * 4
    e = _entry(files=["f.bin", "g.bin"], sha256={"f.bin": full, "g.bin": "0123456789abc"})
    got = "fedcba9876543210" * 4
    assert verify_mod._mismatch(e, "f.bin", 5, got, None) == (
        "sha256 fedcba987654… does not match the published sha256 0123456789ab…")
    assert verify_mod._mismatch(e, "g.bin", 5, got, None) == (
        "sha256 fedcba987654… does not match the published sha256 prefix 0123456789ab…")
    assert verify_mod._mismatch(e, "g.bin", 5, "0123456789abc" + "0" * 51, None) is None  # the prefix matches
    assert verify_mod._mismatch(e, "f.bin", 5, full, None) is None
    assert verify_mod._mismatch(e, "f.bin", 5, None, None) is None  # not hashed (streamed elsewhere)
    e63 = _entry(sha256={"f.bin": full[:63]})
    assert verify_mod._mismatch(e63, "f.bin", 5, got, None) == (
        "sha256 fedcba987654… does not match the published sha256 prefix 0123456789ab…")


def test_mismatch_git_blob_id(tmp_path: Path) -> None:
    data = b"adapter weights\n"
    p = tmp_path / "f.bin"
    p.write_bytes(data)
    right = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    wrong = "1234567890abcdef1234567890abcdef12345678"
    e = _entry(git_blob_sha1={"f.bin": right})
    assert verify_mod._mismatch(e, "f.bin", len(data), None, p) is None  # hashed from the file
    assert verify_mod._mismatch(e, "f.bin", len(data), None, tmp_path / "absent", git_sha1=right) is None  # given
    bad = _entry(git_blob_sha1={"f.bin": wrong})
    assert verify_mod._mismatch(bad, "f.bin", len(data), None, p) == (
        f"git blob id {right[:12]}… does not match the published 1234567890ab…")
    assert verify_mod._mismatch(bad, "f.bin", len(data), None, tmp_path / "absent", git_sha1=right) == (
        f"git blob id {right[:12]}… does not match the published 1234567890ab…")
    assert verify_mod._mismatch(bad, "f.bin", len(data), None, None) == (
        "git blob id ? does not match the published 1234567890ab…")  # nothing to hash
    assert verify_mod._mismatch(e, "f.bin", len(data), None, None, git_sha1=wrong) == (
        f"git blob id 1234567890ab… does not match the published {right[:12]}…")
    # the sha256 is checked before the git id
    both = _entry(sha256={"f.bin": "00" * 32}, git_blob_sha1={"f.bin": wrong})
    assert verify_mod._mismatch(both, "f.bin", len(data), "11" * 32, p) == (
        "sha256 111111111111… does not match the published sha256 000000000000…")


# ---------------------------------------------------------------------------------------- reports
def _check(key: str, file: str, state: str, needed: bool = True) -> FileCheck:
    return FileCheck(key, file, Path("/s") / key / file, state, f"{state} detail", needed)  # type: ignore[arg-type]


def test_verify_report_keys_ok_and_problems() -> None:
    checks = [_check("a", "x", "ok"), _check("b", "y", "corrupt"), _check("c", "z", "missing"),
              _check("c", "w", "missing", needed=False), _check("d", "v", "corrupt"), _check("e", "u", "missing")]
    report = VerifyReport(checks, {"a": "installed", "b": "corrupt", "c": "missing", "d": "corrupt", "e": "missing"})
    assert report.status("b") == "corrupt" and report.status("a") == "installed"
    assert report.corrupt_keys == ["b", "d"] and report.missing_keys == ["c", "e"]
    assert report.ok is False
    assert report.problems() == [checks[1], checks[2], checks[4], checks[5]]
    assert report.problems("c") == [checks[2]] and report.problems("a") == []
    fine = VerifyReport([checks[0]], {"a": "installed", "f": "installed"})
    assert fine.ok is True and fine.corrupt_keys == [] and fine.missing_keys == [] and fine.problems() == []
    assert VerifyReport([], {}).ok is True
    with pytest.raises(KeyError):
        report.status("zz")


def test_file_check_defaults() -> None:
    c = FileCheck("k", "f", Path("/p"), "ok")
    assert (c.detail, c.needed) == ("", True)


def _groups_entry() -> ModelEntry:
    return _entry(files=["cfg", "w1", "w2", "t1", "t2", "t3"], one_of={"w": ["w1", "w2"], "t": ["t1", "t2", "t3"]})


def _checks(states: str) -> dict[str, FileCheck]:
    names = ["cfg", "w1", "w2", "t1", "t2", "t3"]
    full = {"o": "ok", "m": "missing", "c": "corrupt"}
    return {n: _check("k", n, full[s]) for n, s in zip(names, states, strict=True)}


@pytest.mark.parametrize(
    "states, status, unneeded",
    [
        ("oomoom", "installed", {"w2", "t3"}),
        ("ommmmo", "missing", {"t1", "t2"}),
        ("oooooo", "installed", set()),
        ("mooomm", "missing", {"t2", "t3"}),
        ("oomooo", "installed", {"w2"}),
        ("oommmm", "missing", {"w2"}),
        ("omoomm", "installed", {"w1", "t2", "t3"}),
        ("oommmo", "installed", {"w2", "t1", "t2"}),
        ("oomcom", "corrupt", {"w2", "t3"}),
        ("cooooo", "corrupt", set()),
        ("mmmmmm", "missing", set()),
    ],
)
def test_entry_status_and_unneeded_alternatives(states: str, status: str, unneeded: set[str]) -> None:
    entry = _groups_entry()
    checks = _checks(states)
    assert verify_mod._entry_status(entry, checks) == status
    verify_mod._mark_needed(entry, checks)
    assert {n for n, c in checks.items() if c.needed is False} == unneeded
    assert {n for n, c in checks.items() if c.needed is True} == set(checks) - unneeded


def test_a_missing_plain_file_stays_needed() -> None:
    entry = _entry(files=["a", "b"])
    checks = {"a": _check("k", "a", "ok"), "b": _check("k", "b", "missing")}
    assert verify_mod._entry_status(entry, checks) == "missing"
    verify_mod._mark_needed(entry, checks)
    assert checks["b"].needed is True and checks["a"].needed is True
