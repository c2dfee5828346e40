"""Real PostgreSQL and Mosquitto servers on 127.0.0.1 for tests and bench/plant.py (no mocks).

Binaries come from the Debian packages ``postgresql`` and ``mosquitto`` (``.ci/run`` installs
them). Each server runs from a private temp folder on a free port and is stopped afterwards.
PostgreSQL refuses to run as root: under root the cluster is created and run as the
``postgres`` system user (``runuser``).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

_SBIN = ("/usr/sbin", "/usr/local/sbin", "/usr/local/bin", "/usr/bin")


def require(binary_found: bool, what: str) -> object:
    """A pytest mark: skip when ``what`` is not installed, except under ``INSPECTOR_REQUIRE_SERVERS=1``
    (``.ci/run`` sets it after installing the packages), where the tests run and fail loudly."""
    import pytest

    must_run = binary_found or os.environ.get("INSPECTOR_REQUIRE_SERVERS") == "1"
    return pytest.mark.skipif(not must_run, reason=f"{what} not installed (Debian package; .ci/run installs it)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


def mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or shutil.which("mosquitto", path=os.pathsep.join(_SBIN))


def pg_bindir() -> Path | None:
    for cand in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True):
        if (Path(cand) / "initdb").is_file():
            return Path(cand)
    found = shutil.which("initdb")
    return Path(found).resolve().parent if found else None


class Mosquitto:
    """``mosquitto -c <tmp>/mosquitto.conf`` on 127.0.0.1:``port``; :meth:`stop` / :meth:`start` keep the port."""

    def __init__(self, folder: Path, port: int | None = None, persistence: bool = False,
                 extra: tuple[str, ...] = ()) -> None:
        binary = mosquitto_binary()
        if binary is None:
            raise FileNotFoundError("mosquitto not installed (Debian: apt-get install mosquitto)")
        self.binary = binary
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.conf = self.folder / "mosquitto.conf"
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true", f"persistence {str(persistence).lower()}"]
        if persistence:  # sessions and queued QoS 1 messages survive a broker restart
            lines += [f"persistence_location {self.folder}/", "autosave_interval 1"]
        lines += extra
        if os.geteuid() == 0:
            lines.append("user root")
        self.conf.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Mosquitto:
        log = open(self.folder / "mosquitto.log", "ab")
        self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=log, stderr=log)
        wait_port(self.port)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


class Postgres:
    """A throw-away cluster (``initdb``) on 127.0.0.1:``port`` with superuser ``postgres`` (trust auth)."""

    def __init__(self, folder: Path, port: int | None = None, fsync: bool = False, options: str = "") -> None:
        bindir = pg_bindir()
        if bindir is None:
            raise FileNotFoundError("PostgreSQL server not installed (Debian: apt-get install postgresql)")
        self.bindir = bindir
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.data = self.folder / "data"
        self.sockets = self.folder / "sockets"
        self.port = port or free_port()
        self.options = options  # extra postgres -c settings
        self.fsync = fsync  # tests: off (speed); bench/plant.py: on (the figures a plant would see)
        self._as_user: list[str] = []
        self._own_folder: Path | None = None
        if os.geteuid() == 0:
            # postgres refuses root: run the cluster as the postgres system user, from a folder of its own
            # in /tmp (pytest resets /tmp/pytest-of-root to 0700 whenever another session starts)
            self._as_user = ["runuser", "-u", "postgres", "--"]
            self._own_folder = Path(tempfile.mkdtemp(prefix="inspector-pg-"))
            shutil.chown(self._own_folder, "postgres", "postgres")
            self.data = self._own_folder / "data"
            self.sockets = self._own_folder
        self.sockets.mkdir(exist_ok=True)

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self._as_user, *args], check=check, capture_output=True, text=True)

    def init(self) -> Postgres:
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "-N",
                  "-E", "UTF8", "--locale=C")
        return self

    def start(self) -> Postgres:
        opts = (f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 "
                f"-c fsync={'on' if self.fsync else 'off'} -c synchronous_commit={'on' if self.fsync else 'off'} "
                "-c max_connections=200 -c shared_buffers=64MB " + self.options)
        res = self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
                        "-o", opts, "-w", "-t", "60", "start", check=False)
        if res.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.is_file() else ""
            raise RuntimeError(f"pg_ctl start failed: {res.stderr}\n{log}")
        return self

    @property
    def log(self) -> Path:
        return (self._own_folder or self.folder) / "server.log"

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def remove(self) -> None:
        """Stop the server and delete its files."""
        self.stop("immediate")
        shutil.rmtree(self._own_folder or self.data, ignore_errors=True)

    def url(self, user: str = "postgres", password: str | None = None, dbname: str = "postgres") -> str:
        auth = user if password is None else f"{user}:{password}"
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{dbname}"
