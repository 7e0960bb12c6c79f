"""Pytest fixtures that start real PostgreSQL and Prometheus servers on loopback.

Both come from Debian packages (`postgresql`, `prometheus`); a missing binary is an
error that says which package to install, never a skip. Servers listen on free ports
in temp dirs and are stopped when their fixture ends.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from scheduler.devcluster.processes import free_port

STARTUP_TIMEOUT_S = 60.0


def require_binary(name: str, candidates: list[str], package: str) -> str:
    """The first existing binary among `candidates` or on PATH; else a clear error."""
    for c in candidates:
        if os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    found = shutil.which(name)
    if found:
        return found
    raise RuntimeError(
        f"{name} not found (looked in {candidates} and PATH); install it: apt-get install {package}"
    )


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


# ---------------------------------------------------------------- PostgreSQL


def postgres_bindir() -> Path:
    """The newest `/usr/lib/postgresql/*/bin` (Debian layout), or $GPUFAIR_PG_BINDIR."""
    env = os.environ.get("GPUFAIR_PG_BINDIR")
    dirs = (
        [env] if env else sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(d.split("/")[-2]))
    )
    for d in reversed(dirs):
        if d and os.path.isfile(os.path.join(d, "initdb")):
            return Path(d)
    raise RuntimeError(
        "PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin; "
        "install them (apt-get install postgresql) or set GPUFAIR_PG_BINDIR"
    )


@dataclass
class PostgresServer:
    """A running PostgreSQL; `new_database()` gives each test a database of its own."""

    port: int
    user: str
    proc: subprocess.Popen
    root: Path
    _count: int = 0

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{database}"

    def new_database(self, prefix: str = "t") -> str:
        import psycopg

        self._count += 1
        name = f"{prefix}_{os.getpid()}_{self._count}"
        with psycopg.connect(
            host="127.0.0.1", port=self.port, user=self.user, dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def _as_user(user: str | None) -> dict:
    """Popen arguments that run the child directly as `user` (signals then reach it, not a wrapper)."""
    if not user:
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": [], "cwd": "/"}


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the session (trust auth on 127.0.0.1, fsync off for speed).

    PostgreSQL refuses to run as root, so as root (CI, this machine) it runs as the
    `postgres` user (or `nobody`) in a temp dir that user owns.
    """
    bindir = postgres_bindir()
    os_user = None
    if os.geteuid() == 0:
        for candidate in ("postgres", "nobody"):
            try:
                pwd.getpwnam(candidate)
            except KeyError:
                continue
            os_user = candidate
            break
        else:
            raise RuntimeError("running as root and no 'postgres' or 'nobody' user to run PostgreSQL as")
    root = Path(tempfile.mkdtemp(prefix="gpufair-pg-"))
    data, sockets = root / "data", root / "sock"
    sockets.mkdir()
    if os_user:
        entry = pwd.getpwnam(os_user)
        for path in (root, sockets):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    db_user = "gpufair"
    init = subprocess.run(
        [
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            db_user,
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ],
        capture_output=True,
        text=True,
        check=False,
        **_as_user(os_user),
    )
    if init.returncode != 0:
        raise RuntimeError(f"initdb failed ({init.returncode}): {init.stderr[-2000:]}")
    port = free_port()
    log = open(root / "postgres.log", "w")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen(
        [
            str(bindir / "postgres"),
            "-D",
            str(data),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-k",
            str(sockets),
            "-c",
            "fsync=off",
            "-c",
            "max_connections=200",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        **_as_user(os_user),
    )
    server = PostgresServer(port, db_user, proc, root)
    try:
        _wait_for_postgres(server, root / "postgres.log")
        yield server
    finally:
        _stop(proc, signal.SIGINT)  # fast shutdown
        log.close()
        shutil.rmtree(root, ignore_errors=True)


def _wait_for_postgres(server: PostgresServer, log: Path) -> None:
    import psycopg

    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        if server.proc.poll() is not None:
            raise RuntimeError(f"postgres exited ({server.proc.returncode}): {log.read_text()[-2000:]}")
        try:
            with psycopg.connect(host="127.0.0.1", port=server.port, user=server.user, dbname="postgres"):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"postgres did not accept connections: {log.read_text()[-2000:]}"
                ) from None
            time.sleep(0.1)


@pytest.fixture
def postgres_url(postgres: PostgresServer) -> str:
    """A fresh, empty database on the session's server."""
    return postgres.new_database()


# ---------------------------------------------------------------- Prometheus


@dataclass
class Prometheus:
    """A running Prometheus and a small client for its HTTP API."""

    url: str
    proc: subprocess.Popen
    root: Path
    extra: dict[str, Any] = field(default_factory=dict)

    def api(self, path: str, **params: Any) -> Any:
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=30) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as exc:
            body = json.load(exc)
            raise AssertionError(f"Prometheus refused {params}: {body.get('error')}") from exc
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        """The instant vector (or scalar as a one-element list) of `expr`."""
        data = self.api("query", query=expr, time=at)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def wait_for(self, expr: str, timeout: float = 30.0, at: float | None = None) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expr, at)
            if result or time.monotonic() > deadline:
                return result
            time.sleep(0.5)


def start_prometheus(root: Path, config: dict, extra_args: tuple[str, ...] = ()) -> Prometheus:
    binary = require_binary("prometheus", ["/usr/bin/prometheus"], "prometheus")
    root.mkdir(parents=True, exist_ok=True)
    (root / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = open(root / "prometheus.log", "w")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={root / 'prometheus.yml'}",
            f"--storage.tsdb.path={root / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=100y",
            *extra_args,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    prom = Prometheus(f"http://127.0.0.1:{port}", proc, root)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            raise RuntimeError(
                f"prometheus exited ({proc.returncode}): {(root / 'prometheus.log').read_text()[-3000:]}"
            )
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{prom.url}/-/ready", timeout=2) as resp:
            if resp.status == 200:
                return prom
        if time.monotonic() > deadline:
            _stop(proc)
            raise RuntimeError(f"prometheus not ready: {(root / 'prometheus.log').read_text()[-3000:]}")
        time.sleep(0.2)


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator:
    """A factory: `prometheus(config, extra_args)` starts one; all are stopped at teardown."""
    started: list[Prometheus] = []

    def start(config: dict, extra_args: tuple[str, ...] = (), name: str = "prom") -> Prometheus:
        prom = start_prometheus(tmp_path / f"{name}-{len(started)}", config, extra_args)
        started.append(prom)
        return prom

    try:
        yield start
    finally:
        for prom in started:
            _stop(prom.proc)


def promtool() -> str:
    return require_binary("promtool", ["/usr/bin/promtool"], "prometheus")
