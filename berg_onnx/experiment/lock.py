"""One writing run per experiment store: an advisory lock file beside the store.

``experiment.zarr`` is guarded by ``.experiment.zarr.lock`` in the same folder
(beside rather than inside, so that zarr and xarray, which list the store's
folder, never meet a file that is not theirs). The run that creates, checks or
resumes a store holds it until the run ends; the processes that only write
chunks for that run (Ray actors) do not take it.

- The lock is an ``flock`` on that file, which the operating system drops when
  its holder dies, however it dies (SIGKILL, power loss of a client): a dead
  holder never blocks the store. The file holds the holder's pid, host, start
  time and command, so that a second run says who holds the store.
- A lock file left by a killed run (no process holds its ``flock``) is taken
  over; the run says whose it was ("stale").
- The holder removes the file when it ends. A run that opened the file just
  before it was removed checks, once it holds the ``flock``, that the path still
  names the file it locked, and starts again if not; so two runs never both
  hold the lock.
- Without ``fcntl`` (Windows) the file is created exclusively and a holder whose
  pid is gone on this host is stale.

Stores given as URLs (``s3://...``) are not locked: object stores offer no
such lock, so one writer at a time is then the caller's to ensure.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from berg_onnx.errors import ExperimentError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

#: Seconds between two tries while waiting for another run's lock.
POLL_SECONDS = 0.5


def lock_path(store: str | os.PathLike[str]) -> Path:
    """``dir/experiment.zarr`` -> ``dir/.experiment.zarr.lock``, links resolved (one lock
    however the store's path is spelled)."""
    p = Path(os.path.realpath(store))
    return p.with_name(f".{p.name}.lock")


def _record() -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv)[:300],
    }


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def describe_holder(holder: dict[str, Any]) -> str:
    if not holder:
        return "a run that has not written its details yet"
    return (
        f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, "
        f"started {holder.get('started', '?')}"
    )


def _alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError, OverflowError):
        return True
    return True


@dataclass
class StoreLock:
    """A held lock; ``stale`` is the record of a dead holder it took over, if any."""

    path: Path
    fd: int | None
    stale: dict[str, Any] | None = None

    @classmethod
    def acquire(cls, store: str | os.PathLike[str], wait: bool = False) -> StoreLock:
        """The lock of ``store``; ExperimentError naming the holder if another run has it
        (``wait=True``: wait until it is free instead)."""
        path = lock_path(store)
        if not path.parent.is_dir():
            raise ExperimentError(f"the folder of {store} does not exist: {path.parent}")
        said = False
        while True:
            lock = cls._try(path)
            if lock is not None:
                return lock
            if wait and not said:
                print(
                    f"berg-onnx: {store} is being written by another run "
                    f"({describe_holder(_read(path))}): waiting for it to end",
                    file=sys.stderr,
                    flush=True,
                )
                said = True
            if not wait:
                holder = _read(path)
                if holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
                    raise ExperimentError(
                        f"{store} is open for writing in this process already (an "
                        "ExperimentStore from create_or_open not closed yet): close() it first"
                    )
                raise ExperimentError(
                    f"{store} is being written by another run ({describe_holder(holder)}; "
                    f"lock file {path}): wait for it to end, run with --wait (wait=True) to "
                    "start when it does, or write another store"
                )
            time.sleep(POLL_SECONDS)

    @classmethod
    def _try(cls, path: Path) -> StoreLock | None:
        if fcntl is None:  # pragma: no cover - Windows
            return cls._try_exclusive(path)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise ExperimentError(f"cannot create the lock file {path}: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # removed by its last holder after we opened it: try again
            os.close(fd)
            return cls._try(path)
        previous = _read(path)
        stale = previous if previous and previous.get("pid") != os.getpid() else None
        body = json.dumps(_record()).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, body, 0)
        return cls(path, fd, stale)

    @classmethod
    def _try_exclusive(cls, path: Path) -> StoreLock | None:  # pragma: no cover - Windows
        body = json.dumps(_record()).encode()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder = _read(path)
            if holder.get("host") == socket.gethostname() and not _alive(holder.get("pid")):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                lock = cls._try_exclusive(path)
                if lock is not None:
                    lock.stale = holder
                return lock
            return None
        os.write(fd, body)
        os.close(fd)
        return cls(path, None)

    def release(self) -> None:
        """Remove the lock file, then let go (safe to call twice)."""
        if self.path is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        if self.fd is not None:
            os.close(self.fd)
        self.fd = None
        self.path = None  # type: ignore[assignment]
