"""Run stores that survive real image folders and real analysts (issue 22), for real:
`berg-onnx run` in subprocesses, Zarr stores on disk, SIGKILL at chosen moments
(``BERG_ONNX_PAUSE_AT``: the run stops there and says so; the test then kills it,
with no sleep), two runs at once, a messy folder, xarray reading the result.
"""

from __future__ import annotations

import gc
import os
import select
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from berg_onnx import BERG
from berg_onnx.errors import ExperimentError, StimulusError

zarr = pytest.importorskip("zarr")

from berg_onnx.experiment import ExperimentStore  # noqa: E402
from berg_onnx.experiment.lock import lock_path  # noqa: E402

LATIN1 = os.fsdecode(b"caf\xe9.png")  # a Latin-1 name: not valid UTF-8


def photos(artifacts_dir: Path) -> np.ndarray:
    return np.load(artifacts_dir / "reference" / "photos_256_uint8.npy")


def save(img: np.ndarray, path: Path, size: int = 160) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img.transpose(1, 2, 0)).resize((size, size)).save(path)
    return path


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "berg_onnx", *map(str, args)],
        capture_output=True,
        text=True,
        errors="surrogateescape",
        env=env,
    )


def run_args(images, out, export_dir, *extra) -> list[str]:
    images = images if isinstance(images, list) else [images]
    return [
        "run", *map(str, images), "--subjects", "1", "--rois", "V1", "lateral",
        "--berg-dir", str(export_dir), "--out", str(out), "--chunk-size", "2", "--quiet", *extra,
    ]  # fmt: skip


def start_paused(args: list[str], at: str) -> subprocess.Popen:
    """`berg-onnx ARGS` stopped at the pause point ``at`` (utils/pausepoints.py)."""
    env = dict(os.environ, BERG_ONNX_PAUSE_AT=at)
    proc = subprocess.Popen(
        [sys.executable, "-m", "berg_onnx", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    deadline, seen = time.monotonic() + 120, b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stderr], [], [], 1.0)
        if ready:
            line = proc.stderr.readline()
            seen += line
            if f"paused at {at}".encode() in line:
                return proc
            if not line and proc.poll() is not None:
                break
    proc.kill()
    raise AssertionError(f"never paused at {at}: {seen.decode(errors='replace')}")


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.communicate()


def arrays(path: Path) -> dict[str, np.ndarray]:
    root = zarr.open_group(str(path), mode="r")
    return {name: root[name][:] for name in ("sub-01/V1", "sub-01/lateral")}


@pytest.fixture(scope="module")
def berg(export_dir) -> BERG:
    return BERG(berg_dir=export_dir)


@pytest.fixture
def messy(artifacts_dir, tmp_path) -> Path:
    """A folder as people have them: bad files of three kinds among good ones, a Latin-1
    name, a link to another image of the tree, a subfolder, a hidden file."""
    imgs = photos(artifacts_dir)
    root = tmp_path / "photos"
    for i in range(5):
        save(imgs[i], root / f"img_{i}.png")
    save(imgs[5], root / LATIN1)
    save(imgs[6], root / "sub" / "s.png")
    (root / "empty.png").write_bytes(b"")
    (root / "text.jpg").write_text("not an image")
    good = (root / "img_0.png").read_bytes()
    (root / "truncated.png").write_bytes(good[: len(good) // 2])  # header fine, data cut
    os.symlink(root / "img_1.png", root / "link.png")
    save(imgs[7], root / ".hidden.png")
    return root


def test_bad_files_fail_before_anything_is_written_or_skip_as_nan_rows(
    messy, export_dir, berg, tmp_path
):
    out = tmp_path / "m.zarr"
    run = cli(*run_args(messy, out, export_dir))
    assert run.returncode == 1, run.stderr
    err = run.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "2 of the 11 images cannot be read" in err  # both named in one report
    assert "empty.png" in err and "(0 bytes)" in err and "text.jpg" in err
    assert not out.exists() and not lock_path(out).exists()  # nothing created

    run = cli(*run_args(messy, out, export_dir, "--on-error", "skip"))
    assert run.returncode == 0, run.stderr
    assert "3 images could not be read (NaN rows)" in run.stdout
    for name in ("empty.png", "text.jpg", "truncated.png"):
        assert f"skipped {name}: " in run.stderr
    store = ExperimentStore.open(out)
    labels = store.labels()
    assert LATIN1 in labels and "link.png" in labels and "sub/s.png" in labels
    assert (messy / labels[labels.index(LATIN1)]).is_file()  # the OS's bytes, back
    assert ".hidden.png" not in labels
    failed = dict(store.failed_rows())
    assert set(failed) == {"empty.png", "text.jpg", "truncated.png"}
    values = store.responses(1, "V1")[:]
    bad = np.array([x in failed for x in labels])
    assert np.isnan(values[bad]).all() and not np.isnan(values[~bad]).any()
    # the good rows are encode's values for the same files
    model = berg.get_encoding_model("fmri-nsd-fwrf", 1, {"roi": "V1"}, device="cpu")
    good = [messy / x for x, b in zip(labels, bad, strict=True) if not b]
    assert np.abs(values[~bad] - berg.encode(model, good, show_progress=False)).max() <= 1e-6

    # a fixed file: only its chunk is computed again, for both models
    shutil.copy(messy / "img_2.png", messy / "text.jpg")
    report = berg.run(messy, 1, ["V1", "lateral"], store=out, on_error="skip", show_progress=False)
    assert report.chunks_written == 2, report
    assert any("tried again: text.jpg" in n for n in report.notes), report.notes
    assert {x for x, _ in report.failed} == {"empty.png", "truncated.png"}
    now = ExperimentStore.open(out).responses(1, "V1")[:]
    same = now[labels.index("text.jpg")] - now[labels.index("img_2.png")]
    assert np.abs(same).max() <= 1e-6  # now the same image as img_2.png


def test_run_and_encode_take_the_same_files(messy, export_dir, tmp_path):
    """One scan rule: links, a folder given twice and a subfolder given again."""
    for bad in ("empty.png", "text.jpg", "truncated.png"):
        (messy / bad).unlink()
    items = [messy, messy / "sub", messy, messy / "img_3.png"]
    enc = cli(
        "encode", *items, "--subject", "1", "--roi", "V1", "--berg-dir", export_dir,
        "--out", tmp_path / "e.npy",
    )  # fmt: skip
    assert enc.returncode == 0, enc.stderr
    out = tmp_path / "r.zarr"
    run = cli(*run_args(items, out, export_dir))
    assert run.returncode == 0, run.stderr
    from berg_onnx.utils.outputs import read_listing

    listed = [os.path.relpath(p, messy) for p in read_listing(tmp_path / "e.paths.txt")]
    labels = ExperimentStore.open(out).labels()
    assert listed == labels and len(labels) == len(set(labels)) == 8
    stored = zarr.open_group(str(out), mode="r")["sub-01/V1"][:]
    assert np.abs(stored - np.load(tmp_path / "e.npy")).max() <= 1e-6


def test_content_fingerprint_swapped_moved_and_copied_folders(artifacts_dir, berg, tmp_path):
    imgs = photos(artifacts_dir)
    folder = tmp_path / "a"
    for i in range(6):  # BMP: the file size depends on the image size only
        save(imgs[i], folder / f"{i}.bmp", size=128)
    out = tmp_path / "f.zarr"
    berg.run(folder, 1, ["V1"], store=out, chunk_size=2, show_progress=False)
    first = zarr.open_group(str(out), mode="r")["sub-01/V1"][:]

    # another image of the same size, its mtime put back: found by content, named, recomputed
    target = folder / "3.bmp"
    st = target.stat()
    target.write_bytes(save(imgs[7], tmp_path / "other.bmp", size=128).read_bytes())
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert target.stat().st_size == st.st_size and target.stat().st_mtime_ns == st.st_mtime_ns
    report = berg.run(folder, 1, ["V1"], store=out, show_progress=False)
    assert report.chunks_written == 1
    assert any("1 images changed" in n and "3.bmp" in n for n in report.notes), report.notes
    now = zarr.open_group(str(out), mode="r")["sub-01/V1"][:]
    assert not np.array_equal(now[3], first[3])
    assert np.array_equal(now[:2], first[:2]) and np.array_equal(now[4:], first[4:])

    # a copy elsewhere (new inodes and times): the same set; stimulus_root follows it
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    report = berg.run(copy, 1, ["V1"], store=out, show_progress=False)
    assert report.chunks_written == 0 and report.complete
    assert any(f"read from {copy}" in n for n in report.notes), report.notes
    assert zarr.open_group(str(out), mode="r").attrs["stimulus_root"] == str(copy)
    # and moved (same inodes): the same set again, without a hash
    moved = tmp_path / "moved"
    os.rename(copy, moved)
    report = berg.run(moved, 1, ["V1"], store=out, show_progress=False)
    assert report.chunks_written == 0
    assert ExperimentStore.open(out).root.attrs["stimulus_root"] == str(moved)


def test_a_deleted_image_keeps_its_rows_or_is_named(artifacts_dir, berg, tmp_path):
    imgs = photos(artifacts_dir)
    folder = tmp_path / "d"
    for i in range(4):
        save(imgs[i], folder / f"{i}.png", size=96)
    out = tmp_path / "d.zarr"
    berg.run(folder, 1, ["V1"], store=out, chunk_size=2, show_progress=False)
    computed = zarr.open_group(str(out), mode="r")["sub-01/V1"][:]
    (folder / "1.png").unlink()
    report = berg.run(folder, 1, ["V1"], store=out, show_progress=False)  # nothing to compute
    assert report.complete and report.chunks_written == 0
    assert any("not given now (1.png)" in n for n in report.notes), report.notes
    # a model that still needs that row: named before anything is written, or a NaN row
    with pytest.raises(StimulusError, match=r"1 of the 4 images cannot be read: 1\.png"):
        berg.run(folder, 1, ["V1", "FFA-1"], store=out, show_progress=False)
    assert "sub-01/FFA-1" not in ExperimentStore.open(out).arrays()
    report = berg.run(folder, 1, ["V1", "FFA-1"], store=out, on_error="skip", show_progress=False)
    assert report.complete and [x for x, _ in report.failed] == ["1.png"]
    root = zarr.open_group(str(out), mode="r")
    assert np.isnan(root["sub-01/FFA-1"][1]).all() and not np.isnan(root["sub-01/FFA-1"][0]).any()
    assert np.array_equal(root["sub-01/V1"][:], computed)  # kept


@pytest.fixture(scope="module")
def kill_folder(artifacts_dir, export_dir, tmp_path_factory) -> tuple[Path, Path]:
    """10 images and the store an uninterrupted run writes of them (2 models, 5 chunks)."""
    folder = tmp_path_factory.mktemp("kill-images")
    for i, img in enumerate(photos(artifacts_dir)[:10]):
        save(img, folder / f"{i:02d}.png", size=120)
    full = tmp_path_factory.mktemp("full") / "full.zarr"
    assert cli(*run_args(folder, full, export_dir)).returncode == 0
    return folder, full


@pytest.mark.parametrize(
    "moment, done",
    [("store-ready", 0), ("rows-recorded:2", 0), ("chunk-data:3", 2), ("chunk-recorded:4", 4)],
)
def test_sigkill_at_chosen_moments_then_resume_is_bit_identical(
    moment, done, kill_folder, export_dir, tmp_path
):
    folder, full = kill_folder
    out = tmp_path / "k.zarr"
    proc = start_paused(run_args(folder, out, export_dir), moment)
    recorded = ExperimentStore.open(out)
    # resume is per chunk: every chunk computed before the kill is recorded
    assert 5 * 2 - sum(len(recorded.missing_chunks(1, r)) for r in ("V1", "lateral")) == done
    kill(proc)
    assert lock_path(out).exists()  # the killed run's lock file: stale, taken over below
    resumed = cli(*run_args(folder, out, export_dir)[:-1])  # not --quiet: its notes
    assert resumed.returncode == 0, resumed.stderr
    assert "took over the lock of a run that ended" in resumed.stderr
    assert f"{10 - done} chunks written" in resumed.stdout
    for name, values in arrays(full).items():
        assert np.array_equal(values, arrays(out)[name]), name
    assert not lock_path(out).exists()


def test_two_runs_one_store_one_writer(artifacts_dir, export_dir, tmp_path):
    npy = tmp_path / "s.npy"
    np.save(npy, photos(artifacts_dir)[:8])
    out = tmp_path / "two.zarr"
    first = start_paused(run_args(npy, out, export_dir), "chunk-recorded:1")
    second = cli(*run_args(npy, out, export_dir))
    assert second.returncode == 1
    err = second.stderr.strip()
    assert "is being written by another run" in err and f"pid {first.pid} on " in err
    assert str(lock_path(out)) in err and len(err.splitlines()) == 1
    waiting = subprocess.Popen(
        [sys.executable, "-m", "berg_onnx", *run_args(npy, out, export_dir, "--wait")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    said = waiting.stderr.readline()  # it says so, then waits
    assert "is being written by another run" in said and "waiting for it to end" in said
    kill(first)  # the holder dies: the waiting run takes the store over
    out_text, err_text = waiting.communicate(timeout=300)
    assert waiting.returncode == 0, err_text
    assert "7 chunks written, 1 already complete" in out_text
    assert ExperimentStore.attach(out).is_complete()


def test_xarray_reads_the_store_as_data(artifacts_dir, berg, export_dir, tmp_path):
    xr = pytest.importorskip("xarray")
    folder = tmp_path / "x"
    for i, img in enumerate(photos(artifacts_dir)[:5]):
        save(img, folder / f"{i}.png", size=100)
    save(photos(artifacts_dir)[5], folder / LATIN1, size=100)
    out = tmp_path / "x.zarr"
    berg.run(folder, 1, ["V1", "lateral"], store=out, chunk_size=4, show_progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "consolidated" or other warning
        root = xr.open_zarr(out)
        ds = xr.open_zarr(out, group="sub-01")
        tree = xr.open_datatree(out, engine="zarr")
    assert "stimuli" in root.coords and root["stimuli"].dims == ("image",)
    assert root.attrs["title"] and root.attrs["model_id"] == "fmri-nsd-fwrf"
    assert list(ds["V1"].coords["stimuli"].values)[-1] == "caf\\xe9.png"  # label_text escaping
    assert ds["V1"].dims == ("image", "voxel_V1") and ds["V1"].attrs["units"]
    assert ds.attrs["subject"] == 1
    meta = berg.get_model_metadata("fmri-nsd-fwrf", 1, "V1")
    mask, affine = meta["fmri"]["roi_mask_volume"], meta["fmri"]["fmri_affine"]
    i, j, k = (ds[f"{a}_V1"].values for a in "ijk")
    assert mask[i, j, k].all() and len(i) == mask.sum()
    assert np.array_equal(np.ravel_multi_index((i, j, k), mask.shape), ds["voxel_V1"].values)
    xyz = affine @ np.vstack([i, j, k, np.ones_like(i)])
    assert np.allclose(ds["x_V1"].values, xyz[0], atol=1e-4) and ds["x_V1"].attrs["units"] == "mm"
    v1 = ds["V1"].sel(voxel_V1=ds["voxel_V1"].values[0]).values
    assert np.array_equal(v1, zarr.open_group(str(out), mode="r")["sub-01/V1"][:, 0])
    assert tree["sub-01"]["lateral"].shape == (6, 61)
    assert tree["_done/sub-01"]["V1"].dims == ("chunk",)


def test_old_stores_read_but_are_not_resumed_and_other_refusals(
    artifacts_dir, berg, export_dir, tmp_path
):
    images = photos(artifacts_dir)[:3]
    out = tmp_path / "old.zarr"
    berg.run(images, 1, ["V1"], store=out, show_progress=False)
    zarr.open_group(str(out), mode="r+", use_consolidated=False).attrs["format_version"] = 1
    assert ExperimentStore.open(out).responses(1, "V1").shape == (3, 60)  # still reads
    with pytest.raises(ExperimentError, match="store format 1.*cannot be resumed.*--overwrite"):
        berg.run(images, 1, ["V1"], store=out, show_progress=False)
    store = ExperimentStore.open(out)
    with pytest.raises(ValueError, match="read-only"):  # zarr refuses to write
        store.root["sub-01/V1"][0] = 0
    run = cli("run", tmp_path, "--subjects", "1", "--rois", "V1", "--out", tmp_path / "m.npy",
              "--berg-dir", export_dir)  # fmt: skip
    assert run.returncode == 1 and "--out must be a Zarr store folder ending in .zarr" in run.stderr
    assert not (tmp_path / "m.npy").exists()
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        cuda = tmp_path / "cuda.zarr"
        with pytest.raises(Exception, match="cuda"):
            berg.run(images, 1, ["V1"], store=cuda, device="cuda", show_progress=False)
        assert not cuda.exists() and not lock_path(cuda).exists()


def test_one_lock_per_store_however_its_path_is_spelled(berg, artifacts_dir, tmp_path):
    from berg_onnx.experiment import plan_experiment
    from berg_onnx.experiment.lock import StoreLock

    real = tmp_path / "real.zarr"
    real.mkdir()
    link = tmp_path / "link.zarr"
    os.symlink(real, link)
    held = StoreLock.acquire(real)
    with pytest.raises(ExperimentError, match="in this process already"):
        StoreLock.acquire(link)
    held.release()
    StoreLock.acquire(link).release()
    # a writing handle dropped without close() lets go of the store too
    job = plan_experiment(berg, photos(artifacts_dir)[:2], 1, ["V1"])
    store = ExperimentStore.create_or_open(tmp_path / "h.zarr", job)
    assert lock_path(tmp_path / "h.zarr").exists()
    del store
    gc.collect()  # zarr's caught KeyErrors keep frames in reference cycles for a while
    assert not lock_path(tmp_path / "h.zarr").exists()
