"""Shared test fixtures. Sections, in order — add new shared fixtures to the matching one:

1. Session environment: offline switches for the model libraries, offscreen Qt.
2. Isolation: every test sees a private ``INSPECTOR_HOME`` (never the developer's real store).
3. Offline guard (autouse): sockets may only reach loopback; any other attempt fails the test,
   even when a library swallows the error.
4. Small shared fixtures: ``tmp_settings``, ``rng``, ``clip`` (a module's tiny real open_clip model).

UI fixtures live in ``tests/ui/conftest.py``.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

# ------------------------------------------------------------------ 1. session environment
_SESSION_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "QT_QPA_PLATFORM": "offscreen",
}


def pytest_configure(config: pytest.Config) -> None:
    for name, value in _SESSION_ENV.items():
        os.environ.setdefault(name, value)


# ------------------------------------------------------------------ 2. isolation
@pytest.fixture(autouse=True, scope="session")
def _isolated_inspector_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Point every ``INSPECTOR_*`` location at a session temp folder (tests never touch ~)."""
    home = tmp_path_factory.mktemp("inspector_home")
    with pytest.MonkeyPatch.context() as mp:
        for name in [n for n in os.environ if n.startswith("INSPECTOR_")]:
            mp.delenv(name)
        mp.setenv("INSPECTOR_HOME", str(home))
        mp.setenv("INSPECTOR_CONFIG", str(home / "config" / "settings.yaml"))
        yield home


# ------------------------------------------------------------------ 3. offline guard
_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}
_BIND_ANY = {"", "0.0.0.0", "::"}


class NetworkBlockedError(ConnectionRefusedError):
    """Raised instead of reaching a non-loopback address from a test."""


def is_loopback(host: Any) -> bool:
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if not isinstance(host, str):
        return False
    host = host.strip("[]").split("%")[0].lower()
    if host in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class NetworkGuard:
    """Records and refuses every attempt to leave the machine. ``attempts`` lists them."""

    def __init__(self) -> None:
        self.attempts: list[str] = []

    def check(self, what: str, host: Any, port: Any = None) -> None:
        if is_loopback(host):
            return
        self.attempts.append(f"{what} {host}:{port}")
        raise NetworkBlockedError(
            f"test tried to reach {host}:{port} ({what}); tests run offline — serve files from 127.0.0.1"
        )

    def install(self, mp: pytest.MonkeyPatch) -> None:
        guard = self
        real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
        real_sendto = socket.socket.sendto
        real_getaddrinfo, real_gethostbyname = socket.getaddrinfo, socket.gethostbyname
        real_gethostbyname_ex = socket.gethostbyname_ex
        inet = (socket.AF_INET, socket.AF_INET6)

        def connect(sock: socket.socket, address: Any) -> Any:
            if sock.family in inet:
                guard.check("connect", address[0], address[1])
            return real_connect(sock, address)

        def connect_ex(sock: socket.socket, address: Any) -> Any:
            if sock.family in inet:
                guard.check("connect", address[0], address[1])
            return real_connect_ex(sock, address)

        def sendto(sock: socket.socket, data: Any, *args: Any) -> Any:
            address = args[-1]
            if sock.family in inet and isinstance(address, tuple):
                guard.check("sendto", address[0], address[1])
            return real_sendto(sock, data, *args)

        def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
            if host is not None and host not in _BIND_ANY:
                guard.check("resolve", host, port)
            return real_getaddrinfo(host, port, *args, **kwargs)

        def gethostbyname(host: str) -> str:
            guard.check("resolve", host)
            return real_gethostbyname(host)

        def gethostbyname_ex(host: str) -> Any:
            guard.check("resolve", host)
            return real_gethostbyname_ex(host)

        mp.setattr(socket.socket, "connect", connect)
        mp.setattr(socket.socket, "connect_ex", connect_ex)
        mp.setattr(socket.socket, "sendto", sendto)
        mp.setattr(socket, "getaddrinfo", getaddrinfo)
        mp.setattr(socket, "gethostbyname", gethostbyname)
        mp.setattr(socket, "gethostbyname_ex", gethostbyname_ex)


@pytest.fixture(autouse=True)
def network_guard() -> Iterator[NetworkGuard]:
    """Autouse: the test may only talk to loopback. Request it by name to inspect ``attempts``
    (clear them after asserting a deliberate attempt, or the test fails at teardown)."""
    guard = NetworkGuard()
    with pytest.MonkeyPatch.context() as mp:
        guard.install(mp)
        yield guard
    if guard.attempts:
        pytest.fail(f"test tried to use the network: {guard.attempts}")


# ------------------------------------------------------------------ 4. small shared fixtures
@pytest.fixture
def tmp_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """``Settings`` whose home, model store and settings file all live under ``tmp_path``."""
    from inspector.settings import Settings

    home = tmp_path / "inspector_home"
    monkeypatch.setenv("INSPECTOR_HOME", str(home))
    monkeypatch.setenv("INSPECTOR_MODEL_DIR", str(home / "models"))
    monkeypatch.setenv("INSPECTOR_CONFIG", str(tmp_path / "config" / "settings.yaml"))
    return Settings.load()


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator: tests that draw random data stay deterministic."""
    return np.random.default_rng(0)


@pytest.fixture(scope="module")
def clip():
    """The tiny real open_clip ViT (``tests.support.tiny_models.tiny_clip``), one per test module;
    a module that needs another seed defines its own ``clip``."""
    from tests.support.tiny_models import tiny_clip

    return tiny_clip()
