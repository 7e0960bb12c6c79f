"""Pytest fixtures: a real Mosquitto broker on loopback, TLS with client certificates and an ACL.

The broker is the Debian `mosquitto` binary (`MOSQUITTO` env var overrides the path). Certificates
come from the `openssl` command line: one CA, a server certificate for 127.0.0.1, and one client
certificate per identity (the node name, or the scheduler's `gpufair:scheduler`), whose CN becomes
the MQTT username (`use_identity_as_username`). The ACL lets a node write only under its own
`gpufair/nodes/<node>/` and the scheduler read all of `gpufair/nodes/#`. Nothing is anonymous.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from scheduler.devcluster.processes import free_port

SCHEDULER_IDENTITY = "gpufair:scheduler"
TEST_NODES = ("gpu-a", "gpu-b")
PASSWORD_USER = "gpu-pw"
PASSWORD = "s3cret-for-tests"
PRODUCTION_ACL = Path(__file__).resolve().parents[1] / "deploy" / "mosquitto" / "acl"


def _need(binary: str, env: str) -> str:
    path = (
        os.environ.get(env)
        or shutil.which(binary)
        or (f"/usr/sbin/{binary}" if binary == "mosquitto" else "")
    )
    if not path or not Path(path).exists():
        raise RuntimeError(
            f"{binary} not found; install the Debian package ({'mosquitto' if 'mosq' in binary else binary}) "
            f"or point {env} at the binary"
        )
    return path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run([_need("openssl", "OPENSSL"), *args], cwd=cwd, check=True, capture_output=True)


def make_pki(directory: Path, identities: tuple[str, ...]) -> dict[str, tuple[Path, Path]]:
    """Create ca.crt, server.{crt,key} and <identity>.{crt,key}; returns identity -> (cert, key)."""
    directory.mkdir(parents=True, exist_ok=True)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl(
        "req",
        "-x509",
        *ec,
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=gpufair-test-ca",
        cwd=directory,
    )
    (directory / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    out: dict[str, tuple[Path, Path]] = {}
    for name, cn, ext in [("server", "localhost", ("-extfile", "server.ext"))] + [
        (f"client-{i}", ident, ()) for i, ident in enumerate(identities)
    ]:
        _openssl(
            "req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=directory
        )
        _openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.crt",
            "-days",
            "2",
            *ext,
            cwd=directory,
        )
        if name != "server":
            out[cn] = (directory / f"{name}.crt", directory / f"{name}.key")
    return out


@dataclass
class Broker:
    """A running Mosquitto with its PKI; `restart()` keeps the port and forgets retained messages."""

    directory: Path
    port: int
    password_port: int
    ca: Path
    certs: dict[str, tuple[Path, Path]]
    binary: str
    process: subprocess.Popen | None = None
    restarts: int = 0
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.directory / "mosquitto.log"

    @property
    def conf(self) -> Path:
        return self.directory / "mosquitto.conf"

    def cert(self, identity: str) -> tuple[Path, Path]:
        return self.certs[identity]

    def start(self) -> None:
        with open(self.log, "ab") as log:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(
                [self.binary, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=log
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"mosquitto exited with {self.process.returncode}: {self.log.read_text()[-2000:]}"
                )
            try:
                with (
                    socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
                    socket.create_connection(("127.0.0.1", self.password_port), timeout=0.2),
                ):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port}: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self, down_s: float = 0.0) -> None:
        self.stop()
        if down_s:
            time.sleep(down_s)
        self.start()
        self.restarts += 1


def write_broker_config(directory: Path, port: int, password_port: int) -> None:
    """The test twin of deploy/mosquitto: its ACL file, loopback listeners, no persistence."""
    acl = directory / "acl"
    acl.write_text(PRODUCTION_ACL.read_text())  # the very ACL the Helm chart ships
    passwords = directory / "passwords"
    passwords.write_text("")
    subprocess.run(
        [_need("mosquitto_passwd", "MOSQUITTO_PASSWD"), "-b", str(passwords), PASSWORD_USER, PASSWORD],
        check=True,
        capture_output=True,
    )
    os.chmod(passwords, 0o600)
    (directory / "mosquitto.conf").write_text(
        f"""per_listener_settings true
persistence false
log_dest file {directory / "mosquitto.log"}
log_type error
log_type warning
log_type notice
log_type information
log_type subscribe
user {getpass.getuser()}

listener {port} 127.0.0.1
allow_anonymous false
cafile {directory / "ca.crt"}
certfile {directory / "server.crt"}
keyfile {directory / "server.key"}
require_certificate true
use_identity_as_username true
acl_file {acl}

listener {password_port} 127.0.0.1
allow_anonymous false
cafile {directory / "ca.crt"}
certfile {directory / "server.crt"}
keyfile {directory / "server.key"}
require_certificate false
password_file {passwords}
acl_file {acl}
"""
    )


@pytest.fixture
def mqtt_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A fresh broker per test (tests restart and stop it), with certificates for TEST_NODES and the
    scheduler. Fails with a clear message when mosquitto or openssl is missing."""
    binary = _need("mosquitto", "MOSQUITTO")
    directory = tmp_path_factory.mktemp("mosquitto")
    certs = make_pki(directory, (*TEST_NODES, SCHEDULER_IDENTITY))
    port, password_port = free_port(), free_port()
    write_broker_config(directory, port, password_port)
    broker = Broker(directory, port, password_port, directory / "ca.crt", certs, binary)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
