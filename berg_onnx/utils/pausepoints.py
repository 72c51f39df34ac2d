"""Named moments of a run where a test can stop the process for real.

``BERG_ONNX_PAUSE_AT=EVENT:N`` makes the process print
``berg-onnx: paused at EVENT:N (pid P)`` on stderr the N-th time it reaches
``pause_point(EVENT)``, then wait there until it is killed: a test reads that
line and sends SIGKILL (or starts a second run) at exactly that moment, with no
sleep and no guess about the machine's speed. Unset (always, outside tests), a
pause point costs one comparison.

Events (see experiment/store.py and engines/local.py): ``store-ready`` (the
store created or checked, its lock held, nothing computed), ``rows-recorded``
(a chunk's per-image records written), ``chunk-data`` (a chunk's rows written,
its completion record not yet), ``chunk-recorded`` (a chunk recorded complete).
"""

from __future__ import annotations

import os
import sys
import threading
import time

from berg_onnx.constants import ENV_PAUSE_AT

_lock = threading.Lock()
_counts: dict[str, int] = {}


def _target() -> tuple[str, int] | None:
    value = os.environ.get(ENV_PAUSE_AT, "")
    name, _, count = value.partition(":")
    if not name:
        return None
    return name, int(count or 1)


_TARGET = _target()


def pause_point(event: str) -> None:
    """Wait forever here if $BERG_ONNX_PAUSE_AT names this event and occurrence."""
    if _TARGET is None or _TARGET[0] != event:
        return
    with _lock:
        _counts[event] = _counts.get(event, 0) + 1
        hit = _counts[event] == _TARGET[1]
    if hit:
        print(f"berg-onnx: paused at {event}:{_TARGET[1]} (pid {os.getpid()})", file=sys.stderr)
        sys.stderr.flush()
        while True:
            time.sleep(3600)
