"""Cache soak: many processes download the same model into one empty cache at once.

Eight processes start ``BERG()`` downloads of the same model (lateral: graph,
metadata and manifest) from the loopback Hub server into one empty cache,
while a ninth, which started first and holds the download, is SIGKILLed in
the middle of the 11 MB graph, once every worker has asked for that file (the
server is throttled so that "the middle" lasts). Afterwards every process that
finished must report the same,
manifest-verified files, nothing partial may be left in the cache, and a new
process must encode from that cache with HF_HUB_OFFLINE=1, matching the local
export bit for bit. Runs without torch (the repo is seeded on the server
directly), so the torch-free CI stage runs it too.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from berg_onnx import BERG
from berg_onnx.source.manifest import Manifest
from tests._support.hubserver import HubServer, client_env

REPO_ID = "berg-soak/fmri-nsd-fwrf-onnx"
MODEL = "fmri-nsd-fwrf"
ROI = "lateral"
WORKERS = 8

CHILD = """
import json, sys
from berg_onnx import BERG
from berg_onnx.utils.fileio import sha256_file
repo, commit, cache, endpoint = sys.argv[1:5]
b = BERG(repo_id=repo, revision=commit, cache_dir=cache, endpoint=endpoint)
model = b.get_encoding_model("fmri-nsd-fwrf", 1, {"roi": "lateral"}, device="cpu")
meta = b.get_model_metadata("fmri-nsd-fwrf", 1, "lateral")
entry = b.store.manifest().get("fmri-nsd-fwrf", 1, "lateral")
files = {f.name: sha256_file(b.store.fetch(f)) for f in (entry.onnx, entry.metadata)}
print(json.dumps({"files": files, "nv": model.n_voxels, "ncsnr": len(meta["fmri"]["ncsnr"])}))
"""

ENCODE = """
import sys
import numpy as np
from berg_onnx import BERG
repo, commit, cache, endpoint, stim, out = sys.argv[1:7]
b = BERG(repo_id=repo, revision=commit, cache_dir=cache, endpoint=endpoint)
model = b.get_encoding_model("fmri-nsd-fwrf", 1, {"roi": "lateral"}, device="cpu")
np.save(out, b.encode(model, np.load(stim), show_progress=False))
"""


def _seed(server: HubServer, export_dir: Path) -> str:
    """The test export's files for lateral (+ manifest) committed to REPO_ID; the commit."""
    entry = Manifest.load(export_dir / "manifest.json").get(MODEL, 1, ROI)
    names = ["manifest.json", entry.onnx.name, entry.metadata.name]
    server.create_repo(REPO_ID)
    return server.commit(REPO_ID, {n: (export_dir / n).read_bytes() for n in names})


def _partial_blobs(cache: Path) -> list[Path]:
    return [p for p in cache.rglob("*.incomplete") if p.is_file()]


def test_eight_concurrent_downloads_and_a_killed_one_share_one_good_cache(
    export_dir, artifacts_dir, tmp_path
):
    cache = tmp_path / "cache"
    photos = np.load(artifacts_dir / "reference" / "photos_256_uint8.npy")[:3]
    with HubServer() as server:
        commit = _seed(server, export_dir)
        server.throttle_bytes_per_s = 384 << 10  # until the kill: the 11 MB graph takes ~30 s
        env = client_env(server.endpoint, tmp_path / "home")
        env["HF_HUB_DOWNLOAD_TIMEOUT"] = "30"
        args = [REPO_ID, commit, str(cache), server.endpoint]

        def start() -> subprocess.Popen:
            return subprocess.Popen(
                [sys.executable, "-c", CHILD, *args],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )

        victim = start()
        onnx_path = Manifest.load(export_dir / "manifest.json").get(MODEL, 1, ROI).onnx.name

        def requests(method: str) -> int:
            return sum(r.method == method and onnx_path in r.path for r in server.request_log)

        def wait_for(condition, what: str, seconds: float) -> None:
            end = time.monotonic() + seconds
            while not condition():
                assert victim.poll() is None, f"the victim ended before {what}"
                assert time.monotonic() < end, f"timed out waiting until {what}"
                time.sleep(0.05)

        wait_for(lambda: requests("GET") >= 1, "it started downloading the graph", 60)
        workers = [start() for _ in range(WORKERS)]
        # every worker has asked for the graph and now waits for the victim's download (which
        # may or may not have flushed its first 10 MiB chunk: huggingface_hub writes in those)
        wait_for(lambda: requests("HEAD") >= 1 + WORKERS, "all workers asked for the graph", 90)
        assert requests("GET") == 1, "a worker downloaded while the victim held the file lock"
        os.kill(victim.pid, signal.SIGKILL)
        server.throttle_bytes_per_s = 4 << 20  # the workers' own downloads may go faster
        victim.communicate(timeout=30)
        assert victim.returncode == -signal.SIGKILL
        results = []
        for w in workers:
            out, err = w.communicate(timeout=240)
            assert w.returncode == 0, err[-3000:]
            results.append(json.loads(out.strip().splitlines()[-1]))

    entry = Manifest.load(export_dir / "manifest.json").get(MODEL, 1, ROI)
    expected = {entry.onnx.name: entry.onnx.sha256, entry.metadata.name: entry.metadata.sha256}
    for r in results:
        assert r == {"files": expected, "nv": entry.nv, "ncsnr": entry.nv}
    # huggingface_hub names each process's partial file <blob>.<random>.incomplete, so the
    # killed process's partial stays behind as an orphan; it must be its only one, and the
    # finished blob of the same file must sit beside it, complete
    orphans = _partial_blobs(cache)
    assert len(orphans) <= 1, orphans
    for orphan in orphans:
        blob = orphan.with_name(orphan.name.split(".")[0])
        assert blob.is_file() and blob.name == entry.onnx.sha256
        assert blob.stat().st_size == entry.onnx.size
    snapshots = [p for p in cache.rglob("*") if p.is_file() and "snapshots" in p.parts]
    assert {p.name for p in snapshots} == {"manifest.json", *expected}
    for p in snapshots:
        if p.name in expected:
            assert getattr(entry, "onnx" if p.suffix == ".onnx" else "metadata").problem(p) is None

    # the server is gone: a new process encodes from that cache, offline
    stim, out = tmp_path / "stim.npy", tmp_path / "out.npy"
    np.save(stim, photos)
    offline = dict(env, HF_HUB_OFFLINE="1")
    run = subprocess.run(
        [sys.executable, "-c", ENCODE, *args, str(stim), str(out)],
        env=offline,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    local = BERG(berg_dir=export_dir)
    want = local.encode(
        local.get_encoding_model(MODEL, 1, {"roi": ROI}), photos, show_progress=False
    )
    np.testing.assert_array_equal(np.load(out), want)


@pytest.fixture(autouse=True)
def _no_stray_children():
    yield
    # every Popen above is waited for; a failure mid-test must not leave downloads running
    for child in _children():
        child.kill()


def _children():
    try:
        import psutil
    except ImportError:
        return []
    return psutil.Process().children(recursive=True)
