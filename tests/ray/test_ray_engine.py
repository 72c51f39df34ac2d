"""The ray engine (berg_onnx/engines/ray.py) on a real local Ray cluster, no mocks.

Every store is compared with one written by the local engine on the same
images: same arrays (<= 1e-6), same attributes, same completion records. The
fault tests SIGKILL a real model actor mid-job, and the real driver process
mid-job, then check the finished store against the local one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from berg_onnx.engines import RayOptions, run_experiment
from berg_onnx.engines.ray import run_ray
from berg_onnx.errors import StimulusError
from berg_onnx.experiment import ExperimentStore, plan_experiment
from tests._support.raycluster import kill_session, pids_in_session

zarr = pytest.importorskip("zarr")

MODELS = ("sub-01/V1", "sub-01/FFA-1", "sub-01/lateral", "sub-02/V1")
ACTOR_TITLE = "_ModelGroup"  # in the title Ray gives the actor's process
TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def images(artifacts_dir) -> np.ndarray:
    """24 natural 256x256 images (12 photos and their mirror images), uint8 (N, 3, H, W)."""
    photos = np.load(artifacts_dir / "reference" / "photos_256_uint8.npy")
    return np.ascontiguousarray(np.concatenate([photos, photos[..., ::-1]]))


@pytest.fixture(scope="module")
def image_dir(images, tmp_path_factory) -> Path:
    """The same images as PNG files (lossless: they decode to the same pixels)."""
    folder = tmp_path_factory.mktemp("images")
    for i, img in enumerate(images):
        Image.fromarray(img.transpose(1, 2, 0)).save(folder / f"img_{i:03d}.png")
    return folder


@pytest.fixture(scope="module")
def local_store(berg, images, tmp_path_factory) -> Path:
    """The local engine's store of the grid: what every ray run must reproduce."""
    path = tmp_path_factory.mktemp("local") / "grid.zarr"
    report = run_experiment(berg, images, store=path, chunk_size=5, show_progress=False)
    assert report.complete and report.models == MODELS
    return path


def arrays(path: Path) -> dict[str, np.ndarray]:
    root = zarr.open_group(str(path), mode="r")
    return {name: root[name][:] for name in MODELS}


def assert_same_arrays(path: Path, reference: Path) -> None:
    got, want = arrays(path), arrays(reference)
    for name in MODELS:
        assert got[name].shape == want[name].shape, name
        assert not np.isnan(got[name]).any(), f"{name} has rows never written"
        assert np.abs(got[name] - want[name]).max() <= TOLERANCE, name


def test_ray_engine_equals_local_engine(ray_cluster, berg, images, local_store, tmp_path):
    path = tmp_path / "ray.zarr"
    # started by the local engine (one model), finished by the ray engine: one store, two engines
    run_experiment(berg, images, store=path, subjects=[1], rois=["V1"], chunk_size=5)
    report = run_experiment(
        berg,
        images,
        store=path,
        chunk_size=5,
        show_progress=False,
        engine=RayOptions(address=ray_cluster.address),
    )
    assert report.complete and report.models == MODELS
    assert (report.chunks_written, report.chunks_already_complete) == (3 * 5, 5)
    assert_same_arrays(path, local_store)
    ray_root, local_root = (zarr.open_group(str(p), mode="r") for p in (path, local_store))
    assert {k: v for k, v in ray_root.attrs.items() if k != "created"} == {
        k: v for k, v in local_root.attrs.items() if k != "created"
    }
    assert list(ray_root["stimuli"][:]) == list(local_root["stimuli"][:])
    for name in MODELS:
        assert dict(ray_root[name].attrs) == dict(local_root[name].attrs)
        assert ray_root[name].chunks == local_root[name].chunks
        assert ray_root[f"_done/{name}"][:].tolist() == [1] * 5
    # complete: a second run computes nothing, with either engine
    again = run_experiment(berg, images, store=path, show_progress=False, engine="ray")
    assert again.chunks_written == 0 and again.complete


def test_preprocessing_apart_and_smaller_groups(ray_cluster, berg, images, local_store, tmp_path):
    """The layout GPU nodes get (preprocessing tasks apart from the model actors), on CPU."""
    path = tmp_path / "apart.zarr"
    options = RayOptions(
        address=ray_cluster.address, actors=1, preprocess_cpus=0.5, models_per_actor=3
    )
    report = run_experiment(
        berg, images, store=path, chunk_size=6, show_progress=False, engine=options
    )
    assert report.complete and report.chunks_written == 4 * 4
    assert_same_arrays(path, local_store)


def test_cli_engine_ray_on_files_with_ray_address(ray_cluster, export_dir, image_dir, local_store):
    out = image_dir.parent / "cli.zarr"
    proc = subprocess.run(
        [sys.executable, "-m", "berg_onnx", "run", str(image_dir), "--subjects", "all"]
        + ["--rois", "all", "--out", str(out), "--berg-dir", str(export_dir)]
        + ["--chunk-size", "7", "--engine", "ray", "--ray-address", ray_cluster.address],
        env=ray_cluster.env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "complete (16 chunks written, 0 already complete" in proc.stdout
    assert_same_arrays(out, local_store)
    labels = list(zarr.open_group(str(out), mode="r")["stimuli"][:])
    assert labels == [f"img_{i:03d}.png" for i in range(24)]


def _kill_first_actor_after_progress(cluster, path: Path, killed: list[int], stop: threading.Event):
    """Once a chunk of sub-01 is recorded (and chunks remain), SIGKILL the model actor."""
    while not stop.is_set():
        try:
            done = zarr.open_group(str(path), mode="r")["_done/sub-01/V1"][:]
        except Exception:  # noqa: BLE001 - store not created yet
            done = np.zeros(1)
        if 0 < done.sum() < len(done) - 2:
            pids = cluster.processes(ACTOR_TITLE)
            if pids:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
                return
        time.sleep(0.01)


def test_sigkilled_actor_is_restarted_and_arrays_are_identical(
    ray_cluster, berg, images, local_store, tmp_path
):
    path = tmp_path / "killed.zarr"
    killed: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(
        target=_kill_first_actor_after_progress, args=(ray_cluster, path, killed, stop)
    )
    killer.start()
    try:
        report = run_experiment(
            berg,
            images,
            store=path,
            chunk_size=2,  # 12 chunks per model: the kill lands mid-job
            show_progress=False,
            engine=RayOptions(address=ray_cluster.address),
        )
    finally:
        stop.set()
        killer.join()
    assert killed, "no model actor was found to kill while the job ran"
    assert report.complete and report.chunks_written >= 4 * 12
    assert_same_arrays(path, local_store)
    assert ExperimentStore.attach(path).is_complete()


def test_an_error_in_a_task_fails_the_job_with_our_error(ray_cluster, berg, images, tmp_path):
    """Not retried (it is no lost worker), and it reaches the caller as the BERGError it was."""
    folder = tmp_path / "images"
    folder.mkdir()
    for i, img in enumerate(images[:4]):
        Image.fromarray(img.transpose(1, 2, 0)).save(folder / f"{i}.png")
    job = plan_experiment(berg, str(folder), [1], ["V1"], chunk_size=2)
    store = ExperimentStore.create_or_open(tmp_path / "bad.zarr", job)
    (folder / "3.png").write_bytes(b"not an image any more")  # after the up-front checks
    with pytest.raises(StimulusError, match="Cannot read .*3.png as an image"):
        run_ray(
            berg.store, job, store, show_progress=False, options=RayOptions(ray_cluster.address)
        )
    # the bad image's chunk is never recorded; the other may or may not have finished first
    assert 1 in store.missing_chunks(1, "V1")


def test_unreadable_files_skipped_on_ray_as_on_the_local_engine(
    ray_cluster, berg, images, tmp_path
):
    """on_error="skip": the Ray engine's preprocessing tasks record the same failed rows
    (NaN responses, the same reasons) and the same values for the others."""
    folder = tmp_path / "images"
    folder.mkdir()
    for i, img in enumerate(images[:7]):
        Image.fromarray(img.transpose(1, 2, 0)).save(folder / f"{i}.png")
    (folder / "2.png").write_bytes(b"not an image")
    (folder / "5.png").write_bytes((folder / "4.png").read_bytes()[:100])  # truncated
    kwargs = dict(subjects=[1], rois=["V1", "lateral"], chunk_size=2, on_error="skip")
    local = run_experiment(berg, folder, store=tmp_path / "l.zarr", show_progress=False, **kwargs)
    ray = run_experiment(
        berg,
        folder,
        store=tmp_path / "r.zarr",
        show_progress=False,
        engine=RayOptions(address=ray_cluster.address),
        **kwargs,
    )
    assert ray.complete and local.complete
    assert sorted(ray.failed) == sorted(local.failed)
    assert {name for name, _ in ray.failed} == {"2.png", "5.png"}
    stores = [ExperimentStore.open(tmp_path / n) for n in ("l.zarr", "r.zarr")]
    assert stores[0].failed_rows() == stores[1].failed_rows()
    labels = stores[1].labels()
    bad = np.array([x in ("2.png", "5.png") for x in labels])
    for roi in ("V1", "lateral"):
        want, got = (s.responses(1, roi)[:] for s in stores)
        assert np.isnan(got[bad]).all() and not np.isnan(got[~bad]).any()
        assert np.abs(got[~bad] - want[~bad]).max() <= TOLERANCE


def _run_cli_driver(
    cluster, export_dir: Path, stimulus: Path, out: Path, address: bool
) -> subprocess.Popen:
    """`berg-onnx run --engine ray`; with ``address``, the cluster's given as $RAY_ADDRESS."""
    command = [sys.executable, "-m", "berg_onnx", "run", str(stimulus), "--subjects", "all"]
    command += ["--rois", "all", "--out", str(out), "--berg-dir", str(export_dir), "--quiet"]
    command += ["--chunk-size", "2", "--engine", "ray"]
    env = dict(cluster.env, RAY_ADDRESS=cluster.address) if address else cluster.env
    return subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def test_resume_after_the_driver_is_killed(ray_cluster, export_dir, images, local_store, tmp_path):
    npy = tmp_path / "images.npy"
    np.save(npy, images)
    out = tmp_path / "resumed.zarr"
    driver = _run_cli_driver(ray_cluster, export_dir, npy, out, address=True)
    deadline = time.monotonic() + 150
    done = np.zeros(1)
    while time.monotonic() < deadline and driver.poll() is None:
        try:
            done = zarr.open_group(str(out), mode="r")["_done/sub-01/V1"][:]
        except Exception:  # noqa: BLE001 - store not created yet
            pass
        if done.sum() >= 1:
            break
        time.sleep(0.01)
    assert driver.poll() is None, f"the driver ended before it could be killed: {driver.stderr}"
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=30)
    kill_session(driver.pid)  # anything the driver itself started
    deadline = time.monotonic() + 60  # Ray ends the dead driver's actors: wait for that
    while ray_cluster.processes(ACTOR_TITLE) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not ray_cluster.processes(ACTOR_TITLE), "the dead driver's actors kept running"
    store = ExperimentStore.attach(out)
    missing = sum(len(store.missing_chunks(s, r)) for s, r in store.models)
    assert 0 < missing < 4 * 12, "the kill should land mid-job"

    # Resume with no address and no RAY_ADDRESS: the command starts a local Ray and stops it.
    resumed = _run_cli_driver(ray_cluster, export_dir, npy, out, address=False)
    stdout, stderr = resumed.communicate(timeout=200)
    assert resumed.returncode == 0, stderr[-3000:]
    assert f"{48 - missing} already complete" in stdout, stdout
    assert_same_arrays(out, local_store)
    deadline = time.monotonic() + 30  # ray.shutdown() signals its processes; they exit soon
    while pids_in_session(resumed.pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = pids_in_session(resumed.pid)
    kill_session(resumed.pid)
    assert left == [], "the command's local Ray was left running"
