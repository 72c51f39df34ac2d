"""Helpers for the Ray cluster the tests start (see conftest.py): its processes, by session."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path


def only_loopback() -> bool:
    """Whether this process sits in a network namespace whose one interface is loopback."""
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Cluster:
    address: str  # HOST:PORT for --ray-address / ray.init(address=...)
    sid: int  # session id shared by every process of the cluster
    env: dict[str, str]  # environment for drivers (auth off, HOME and RAY_TMPDIR private)

    def processes(self, marker: str = "") -> list[int]:
        """PIDs of the cluster's processes whose title contains ``marker``."""
        return pids_in_session(self.sid, marker)


def pids_in_session(sid: int, marker: str = "") -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            if os.getsid(pid) != sid:
                continue
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue  # exited, not yet reaped by an init that may never reap it
            title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ProcessLookupError):
            continue
        if marker in title:
            found.append(pid)
    return found


def kill_session(sid: int, timeout: float = 20) -> None:
    """SIGKILL every process of session ``sid`` (one we created) and wait until none is left."""
    deadline = time.monotonic() + timeout
    while (pids := pids_in_session(sid)) and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
