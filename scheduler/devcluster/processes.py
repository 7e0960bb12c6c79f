"""Child processes of the dev cluster: start detached, wait until ready, stop cleanly.

Processes run in their own session so that `gpufair dev-cluster up` can exit and leave
them running; `down` finds them again by pid and checks the pid still runs the same
binary before signalling it (a pid may have been reused since).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

STOP_GRACE_S = 10.0
_PR_SET_PDEATHSIG = 1


class ProcessFailed(RuntimeError):
    """A control-plane process exited or did not become ready; the message holds its log tail."""


def free_port() -> int:
    """One free TCP port on 127.0.0.1 (for a service a test starts)."""
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """`n` distinct free TCP ports on 127.0.0.1 (held together while chosen, so no repeats)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class Proc:
    """One running control-plane process; `popen` is set only in the process that started it."""

    name: str
    argv: list[str]
    log: Path
    pid: int = 0
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)

    def to_state(self) -> dict[str, object]:
        return {"name": self.name, "argv": self.argv, "log": str(self.log), "pid": self.pid}

    @classmethod
    def from_state(cls, data: dict[str, object]) -> Proc:
        argv = data["argv"]
        assert isinstance(argv, list)
        return cls(str(data["name"]), [str(a) for a in argv], Path(str(data["log"])), int(str(data["pid"])))

    def running(self) -> bool:
        """Whether this process (the same binary, not a zombie) is still alive."""
        if self.popen is not None:
            return self.popen.poll() is None
        if self.pid <= 0:
            return False
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
            cmdline = Path(f"/proc/{self.pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        if stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X"):
            return False
        return bool(cmdline) and cmdline[0].decode(errors="replace") == self.argv[0]

    def fail(self, problem: str) -> ProcessFailed:
        return ProcessFailed(
            f"{self.name} {problem}; last lines of {self.log} "
            f"(GPUFAIR_KEEP_DEV_CLUSTER=1 keeps the whole state directory):\n{log_tail(self.log)}"
        )


def _die_with_parent() -> None:
    """In the child before exec: ask Linux to SIGTERM it when its parent dies, so a killed
    test run does not leave etcd and the API server holding ports."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def spawn(
    name: str, argv: list[str], log: Path, env: dict[str, str] | None = None, *, detached: bool = False
) -> Proc:
    """Start `argv` in a new session with its output appended to `log`. Unless `detached`,
    the process is terminated when the Python process that started it exits."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(f"--- {time.strftime('%H:%M:%S')} starting {' '.join(argv)}\n".encode())
        out.flush()
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
            preexec_fn=None if detached or sys.platform != "linux" else _die_with_parent,
        )
    return Proc(name, argv, log, popen.pid, popen)


def wait_until(proc: Proc, ready: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll `ready` until it holds; fail early, with the log, if the process dies."""
    deadline = time.monotonic() + timeout_s
    delay = 0.05
    while True:
        if not proc.running():
            raise proc.fail(f"exited before {what}")
        with contextlib.suppress(Exception):
            if ready():
                return
        if time.monotonic() > deadline:
            raise proc.fail(f"did not become ready ({what}) within {timeout_s:g}s")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


def stop(proc: Proc, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM, then SIGKILL after `grace_s`; reaps the child when we started it."""
    if not proc.running():
        if proc.popen is not None:
            proc.popen.wait()
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while proc.running() and time.monotonic() < deadline:
        time.sleep(0.05)
    if proc.running():
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        end = time.monotonic() + 5
        while proc.running() and time.monotonic() < end:
            time.sleep(0.05)
    if proc.popen is not None:
        proc.popen.wait(timeout=5)
