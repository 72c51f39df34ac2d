"""A real local Ray cluster for the ray engine's tests, one per session.

Ray 2.60 listens on every interface and rewrites ``--node-ip-address=127.0.0.1``
to the host's address, so the cluster may only run where loopback is the sole
interface: a private network namespace, which tests/run.sh's "ray" stage makes
with ``unshare -n`` (as root). Elsewhere the cluster tests are skipped, or fail
where $BERG_RAY_TESTS_REQUIRED=1 (the ray stage sets it, so that a broken
namespace cannot pass as skips).

The head runs ``ray start --head --block`` in a session of its own; every Ray
process of the cluster (GCS, raylet, workers, actors) inherits that session id,
so teardown ends exactly those processes. Token auth is off
(RAY_AUTH_MODE=disabled) and HOME and --temp-dir point into the test's
temporary folder, so nothing is written outside it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._support.raycluster import Cluster, free_port, kill_session, only_loopback

ray = pytest.importorskip("ray")
pytest.importorskip("zarr")

#: Seconds any one test of this folder may take (SIGALRM fails it, teardown still runs).
TEST_TIMEOUT = 240
REQUIRED = os.environ.get("BERG_RAY_TESTS_REQUIRED") == "1"
RAY_BIN = str(Path(sys.executable).with_name("ray"))


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory) -> Iterator[Cluster]:
    if not only_loopback():
        message = (
            "the Ray cluster runs only in a private network namespace (loopback only): "
            "run `unshare -n bash -c 'ip link set lo up; pytest tests/ray'` as root, "
            "as tests/run.sh's ray stage does"
        )
        if REQUIRED:
            pytest.fail(message)
        pytest.skip(message)
    base = tmp_path_factory.mktemp("ray")
    env = dict(
        os.environ,
        RAY_AUTH_MODE="disabled",
        HOME=str(base / "home"),
        RAY_TMPDIR=str(base / "tmp"),
        RAY_USAGE_STATS_ENABLED="0",
    )
    env.pop("RAY_ADDRESS", None)
    (base / "home").mkdir()
    (base / "tmp").mkdir()
    port = free_port()
    head = subprocess.Popen(
        [
            RAY_BIN,
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={port}",
            f"--temp-dir={base / 'tmp'}",
            "--num-cpus=2",
            "--include-dashboard=false",
            "--disable-usage-stats",
        ],
        env=env,
        start_new_session=True,
        stdout=open(base / "head.log", "w"),  # noqa: SIM115 - closed with the process
        stderr=subprocess.STDOUT,
    )
    cluster = Cluster(address=f"127.0.0.1:{port}", sid=head.pid, env=env)
    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "HOME", "RAY_TMPDIR", "RAY_ADDRESS")}
    os.environ.update({k: env[k] for k in ("RAY_AUTH_MODE", "HOME", "RAY_TMPDIR")})
    os.environ.pop("RAY_ADDRESS", None)
    try:
        _wait_until_up(cluster, head, base / "head.log")
        yield cluster
    finally:
        if ray.is_initialized():
            ray.shutdown()
        kill_session(cluster.sid)
        head.wait(timeout=30)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _wait_until_up(cluster: Cluster, head: subprocess.Popen, log: Path) -> None:
    """Until a driver can connect (start-up takes ~7-20 s on a busy 2-core machine)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if head.poll() is not None:
            pytest.fail(f"ray start exited with {head.returncode}:\n{log.read_text()[-3000:]}")
        try:
            ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
        except ConnectionError:
            time.sleep(1)
            continue
        ray.shutdown()
        return
    pytest.fail(f"the Ray head did not come up in 120 s:\n{log.read_text()[-3000:]}")


class _TestTimeout(Exception):
    pass


@pytest.fixture(autouse=True)
def time_bound():
    """Fail a test that runs past TEST_TIMEOUT (the fixtures' teardown still stops Ray)."""

    def expire(signum, frame):
        raise _TestTimeout(f"test ran past {TEST_TIMEOUT} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(TEST_TIMEOUT)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
