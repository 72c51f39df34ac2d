"""In silico experiments (berg_onnx/experiment): the Zarr store's contract, values,
resume after SIGKILL, refusal of mismatched stores, preprocessing once per image.

Everything runs for real: onnxruntime sessions, a Zarr store on disk, and the
`berg-onnx run` command in subprocesses (its refusals through `main(argv)` in this process).
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from berg_onnx import BERG
from berg_onnx.errors import ExperimentError
from berg_onnx.source.manifest import Manifest
from tests._support.cli import cli_process

zarr = pytest.importorskip("zarr")

from berg_onnx.experiment import ExperimentStore, plan_experiment  # noqa: E402

MODELS = [(1, "V1"), (1, "FFA-1"), (1, "lateral"), (2, "V1")]
CONTRACT_ROOT = {"berg_onnx_version", "model_id", "source", "created"}
CONTRACT_ARRAY = {"subject", "roi", "n_voxels", "precision", "model_files", "voxel_order"}


def write_images(folder: Path, images: np.ndarray, seed: int = 0) -> list[Path]:
    """PNG files (lossless) of varied sizes, some nested, so labels are relative paths."""
    rng = np.random.default_rng(seed)
    paths = []
    for i, img in enumerate(images):
        size = int(rng.integers(150, 300))
        pil = Image.fromarray(img.transpose(1, 2, 0)).resize((size, size + i % 3))
        path = folder / ("nested" if i % 3 == 0 else "") / f"img_{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        pil.save(path)
        paths.append(path)
    return sorted(paths)


@pytest.fixture(scope="module")
def image_dir(photos, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("grid-images")
    write_images(root, photos)
    (root / "readme.txt").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def grid(berg, image_dir, tmp_path_factory):
    """A complete store of MODELS over image_dir (chunks of 5 rows), and its report."""
    path = tmp_path_factory.mktemp("grid") / "grid.zarr"
    report = berg.run(
        image_dir,
        subjects=[1, 2],
        rois="all",
        store=path,
        chunk_size=5,
        show_progress=False,
    )
    return path, report


def arrays(path: Path) -> dict[str, np.ndarray]:
    root = zarr.open_group(path, mode="r")
    return {f"sub-{s:02d}/{r}": root[f"sub-{s:02d}/{r}"][:] for s, r in MODELS}


def test_layout_and_attributes_follow_the_contract(grid, image_dir, export_dir):
    path, report = grid
    assert report.complete and report.chunks_written == 4 * 3  # 12 images / 5 = 3 chunks
    root = zarr.open_group(path, mode="r")
    attrs = dict(root.attrs)
    assert CONTRACT_ROOT <= set(attrs)
    assert attrs["model_id"] == "fmri-nsd-fwrf"
    assert attrs["source"] == {"export_dir": str(export_dir.resolve())}
    assert datetime.fromisoformat(attrs["created"]).tzinfo is not None
    import berg_onnx

    assert attrs["berg_onnx_version"] == berg_onnx.__version__
    # plan_experiment("all") skips nothing here: subject 2 has V1 only, which the grid has
    assert sorted(root.group_keys()) == ["_done", "_images", "sub-01", "sub-02"]
    assert sorted(root.array_keys()) == ["stimuli"]
    coords = {f"{c}_{r}" for r in ("FFA-1", "V1", "lateral") for c in "ijkxyz"}
    coords |= {f"voxel_{r}" for r in ("FFA-1", "V1", "lateral")}
    assert set(root["sub-01"].array_keys()) == {"FFA-1", "V1", "lateral", "stimuli"} | coords
    assert ExperimentStore.open(path).arrays() == [f"sub-{s:02d}/{r}" for s, r in sorted(MODELS)]

    expected = sorted(
        p.relative_to(image_dir).as_posix() for p in image_dir.rglob("*.png")
    )  # sorted, recursive, relative to the input folder
    assert list(root["stimuli"][:]) == expected
    assert "nested/img_000.png" in expected

    manifest = Manifest.load(export_dir / "manifest.json")
    for s, roi in MODELS:
        a = root[f"sub-{s:02d}/{roi}"]
        entry = manifest.get("fmri-nsd-fwrf", s, roi)
        assert a.shape == (12, entry.nv) and a.dtype == np.float32 and a.chunks == (5, entry.nv)
        at = dict(a.attrs)
        assert CONTRACT_ARRAY <= set(at)
        assert (at["subject"], at["roi"], at["n_voxels"], at["precision"]) == (
            s,
            roi,
            entry.nv,
            "fp32",
        )
        assert at["model_files"] == {
            entry.onnx.name: entry.onnx.sha256,
            entry.metadata.name: entry.metadata.sha256,
        }
        assert at["voxel_order"] == "roi_mask_volume C-order"
        assert not np.isnan(a[:]).any()
    assert root["sub-01/lateral"].attrs["split_voxels"] == [31, 30]


def test_values_equal_encode_per_model(grid, berg, image_dir):
    path, _ = grid
    root = zarr.open_group(path, mode="r")
    files = [image_dir / p for p in root["stimuli"][:]]
    for s, roi in MODELS:  # lateral is a split ROI: split 1 then split 2, as encode returns
        model = berg.get_encoding_model("fmri-nsd-fwrf", s, {"roi": roi}, device="cpu")
        expected = berg.encode(model, files, show_progress=False)
        assert np.abs(root[f"sub-{s:02d}/{roi}"][:] - expected).max() <= 1e-6, roi


def test_array_input_matches_pytorch_reference(berg, artifacts_dir, photos, tmp_path):
    images = photos
    path = tmp_path / "a.zarr"
    berg.run(images, subjects=1, rois="all", store=path, chunk_size=4, show_progress=False)
    root = zarr.open_group(path, mode="r")
    assert list(root["stimuli"][:]) == [str(i) for i in range(len(images))]
    assert root.attrs["stimulus_kind"] == "array"
    for roi in ("V1", "FFA-1", "lateral"):
        ref = np.load(artifacts_dir / "reference" / f"sub-01_{roi}.npy")
        assert np.abs(root[f"sub-01/{roi}"][:] - ref).max() <= 1e-4
    # the same pixels from a .npy file are the same image set: the store is reused as it is
    npy = tmp_path / "stim.npy"
    np.save(npy, images)
    run = cli_process(
        "run",
        str(npy),
        "--subjects",
        "1",
        "--rois",
        "all",
        "--out",
        str(path),
        "--berg-dir",
        str(berg.store.root),
        "--quiet",
    )
    assert run.returncode == 0, run.stderr
    assert "0 chunks written" in run.stdout


def test_rerun_of_a_complete_store_does_nothing_quickly(grid, berg, image_dir):
    path, _ = grid
    before = {p: p.stat().st_mtime_ns for p in path.rglob("*") if p.is_file()}
    t = time.perf_counter()
    report = berg.run(
        image_dir,
        subjects=[1, 2],
        rois="all",
        store=path,
        show_progress=False,
    )
    elapsed = time.perf_counter() - t
    assert report.chunks_written == 0 and report.chunks_already_complete == 12
    assert {p: p.stat().st_mtime_ns for p in path.rglob("*") if p.is_file()} == before
    assert elapsed < 0.5 * len(MODELS), elapsed  # generous for a shared CI machine


def test_preprocessing_runs_once_per_image(berg, image_dir, tmp_path, monkeypatch):
    # encode's preprocessing (inputs/stimulus.py) is the one path experiments use too:
    # counting its resize counts every image an experiment resizes
    import berg_onnx.inputs.stimulus as encode_stimulus

    resized = []
    real = encode_stimulus.resize_rounded

    def counting(images, size=(227, 227)):  # the real resize, counted
        resized.append(len(images))
        return real(images, size)

    monkeypatch.setattr(encode_stimulus, "resize_rounded", counting)
    report = berg.run(
        image_dir,
        subjects=1,
        rois="all",
        store=tmp_path / "p.zarr",
        chunk_size=4,
        show_progress=False,
    )
    assert len(report.models) == 3 and report.chunks_written == 9
    assert sum(resized) == 12  # 12 images x 3 models, each image resized once
    # a resumed run resizes only the images of the chunks it computes
    store = zarr.open_group(tmp_path / "p.zarr", mode="r+")
    store["_done/sub-01/FFA-1"][1] = 0
    store["_done/sub-01/lateral"][1] = 0
    resized.clear()
    report = berg.run(
        image_dir, subjects=1, rois="all", store=tmp_path / "p.zarr", show_progress=False
    )
    assert report.chunks_written == 2 and sum(resized) == 4


def test_changed_image_is_named_and_only_its_chunk_recomputed(cli, berg, photos, tmp_path):
    """Images are known by content: one changed pixel is found, named, and its chunk (only)
    computed again; an image the store has no row for is refused by name."""
    folder = tmp_path / "imgs"
    paths = write_images(folder, photos[:6])
    store = tmp_path / "s.zarr"
    berg.run(folder, subjects=1, rois=["V1"], store=store, chunk_size=3, show_progress=False)
    before = zarr.open_group(store, mode="r")["sub-01/V1"][:]
    img = np.asarray(Image.open(paths[4])).copy()
    img[0, 0] = 255 - img[0, 0]
    Image.fromarray(img).save(paths[4])  # one pixel of one image changed (row 4: chunk 1)
    label = paths[4].relative_to(folder).as_posix()
    report = berg.run(folder, subjects=1, rois=["V1"], store=store, show_progress=False)
    assert report.chunks_written == 1 and report.complete
    assert any("1 images changed" in n and label in n for n in report.notes), report.notes
    after = zarr.open_group(store, mode="r")["sub-01/V1"][:]
    assert np.array_equal(after[:3], before[:3])  # chunk 0 untouched
    model = berg.get_encoding_model("fmri-nsd-fwrf", 1, {"roi": "V1"}, device="cpu")
    labels = ExperimentStore.open(store).labels()
    expected = berg.encode(model, [folder / x for x in labels], show_progress=False)
    assert np.abs(after - expected).max() <= 1e-6
    run = cli(
        "run",
        str(folder),
        "--subjects",
        "1",
        "--rois",
        "V1",
        "--out",
        str(store),
        "--berg-dir",
        str(berg.store.root),
        "--quiet",
    )
    assert run.returncode == 0 and "0 chunks written" in run.stdout, run.stderr
    (folder / "extra.png").write_bytes(paths[0].read_bytes())  # one image more
    with pytest.raises(ExperimentError, match=r"1 of the images given are not in .*extra\.png"):
        berg.run(folder, subjects=1, rois=["V1"], store=store, show_progress=False)
    report = berg.run(
        folder, subjects=1, rois=["V1"], store=store, overwrite=True, show_progress=False
    )
    assert report.complete and zarr.open_group(store, mode="r")["sub-01/V1"].shape[0] == 7


def test_changed_model_files_are_refused(export_dir, photos, tmp_path):
    images = photos[:4]
    changed = tmp_path / "export"
    shutil.copytree(export_dir, changed)
    store = tmp_path / "m.zarr"
    BERG(berg_dir=changed).run(
        images, subjects=1, rois=["V1", "FFA-1"], store=store, show_progress=False
    )
    manifest = json.loads((changed / "manifest.json").read_text())
    entry = manifest["models"]["fmri-nsd-fwrf/sub-01/V1"]
    entry["onnx"]["sha256"] = "0" * 64  # a new model version of V1
    (changed / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ExperimentError, match="sub-01/V1.*model version changed"):
        BERG(berg_dir=changed).run(
            images, subjects=1, rois=["FFA-1", "V1"], store=store, show_progress=False
        )
    with pytest.raises(ExperimentError, match="precision fp32, not int8"):
        BERG(berg_dir=export_dir).run(
            images, subjects=1, rois=["FFA-1"], store=store, precision="int8", show_progress=False
        )
    # adding a model to the same image set is fine: the store grows
    report = BERG(berg_dir=export_dir).run(
        images, subjects=1, rois=["lateral"], store=store, show_progress=False
    )
    assert report.chunks_written == 1
    assert ExperimentStore.open(store).arrays() == ["sub-01/FFA-1", "sub-01/V1", "sub-01/lateral"]


def test_sigkill_at_a_random_point_then_resume_gives_identical_arrays(export_dir, photos, tmp_path):
    images = np.concatenate([photos] * 3)  # 36 images, 3 models
    npy = tmp_path / "stim.npy"
    np.save(npy, images)
    args_1 = [
        str(npy),
        "--subjects",
        "1",
        "--rois",
        "V1",
        "lateral",
        "FFA-1",
        "--berg-dir",
        str(export_dir),
        "--chunk-size",
        "3",
        "--quiet",
    ]
    full = tmp_path / "full.zarr"
    t = time.perf_counter()
    done = cli_process("run", *args_1, "--out", str(full))
    full_time = time.perf_counter() - t
    assert done.returncode == 0, done.stderr
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    killed = tmp_path / "killed.zarr"
    kills = 0
    for _attempt in range(6):  # kill at random points until one lands mid-run, twice
        delay = rng.uniform(0.3, 0.95) * full_time
        proc = subprocess.Popen(
            [sys.executable, "-m", "berg_onnx", "run", *args_1, "--out", str(killed)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        time.sleep(delay)
        finished = proc.poll() is not None
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        if not finished:
            kills += 1
            if kills == 2:
                break
    assert kills >= 1, f"seed {seed}: no kill landed mid-run"
    resumed = cli_process("run", *args_1, "--out", str(killed))
    assert resumed.returncode == 0, resumed.stderr
    a, b = zarr.open_group(full, mode="r"), zarr.open_group(killed, mode="r")
    for roi in ("V1", "lateral", "FFA-1"):
        assert np.array_equal(a[f"sub-01/{roi}"][:], b[f"sub-01/{roi}"][:]), (seed, roi)
    assert list(a["stimuli"][:]) == list(b["stimuli"][:])
    assert ExperimentStore.attach(killed).is_complete()


def test_ctrl_c_stops_cleanly_and_the_run_resumes(export_dir, photos, tmp_path):
    npy = tmp_path / "stim.npy"
    np.save(npy, np.concatenate([photos] * 6))
    args = [
        str(npy),
        "--subjects",
        "1",
        "--rois",
        "lateral",
        "V1",
        "--berg-dir",
        str(export_dir),
        "--chunk-size",
        "2",
        "--quiet",
        "--out",
        str(tmp_path / "i.zarr"),
    ]
    store = tmp_path / "i.zarr"
    proc = subprocess.Popen(
        [sys.executable, "-m", "berg_onnx", "run", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # interrupt once the first chunk is recorded done: mid-run, whatever the machine's speed
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        done = store / "_done" / "sub-01"  # one byte per completed chunk (store.py)
        if done.is_dir() and any(p.name.isdigit() for p in done.rglob("*")):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "run again to resume" in err and "Traceback" not in err
    resumed = cli_process("run", *args)
    assert resumed.returncode == 0 and ", complete (" in resumed.stdout, resumed.stderr


def test_cli_progress_bar_over_the_whole_grid(cli, export_dir, image_dir, tmp_path):
    run = cli_process(
        "run",
        str(image_dir),
        "--subjects",
        "1",
        "--rois",
        "all",
        "--out",
        str(tmp_path / "c.zarr"),
        "--berg-dir",
        str(export_dir),
        "--progress",  # stderr is a pipe here: no bar unless forced
    )
    assert run.returncode == 0, run.stderr
    assert "36/36" in run.stderr  # 12 images x 3 models in one bar
    assert "sub-01/lateral" in run.stderr  # the current model
    assert "12 images x 3 models, complete" in run.stdout
    bad = cli(
        "run",
        str(image_dir),
        "--subjects",
        "one",
        "--rois",
        "V1",
        "--out",
        str(tmp_path / "d.zarr"),
        "--berg-dir",
        str(export_dir),
    )
    assert bad.returncode == 1 and "--subjects takes numbers" in bad.stderr
    bad = cli(
        "run",
        str(image_dir),
        "--subjects",
        "1",
        "--rois",
        "V7",
        "--out",
        str(tmp_path / "d.zarr"),
        "--berg-dir",
        str(export_dir),
    )
    assert bad.returncode == 1 and "V7" in bad.stderr and not (tmp_path / "d.zarr").exists()


def test_batches_that_do_not_divide_chunks(export_dir, photos, tmp_path):
    images = photos[:7]
    berg = BERG(berg_dir=export_dir, batch_size=3)
    berg.run(
        images,
        subjects=1,
        rois=["V1"],
        store=tmp_path / "b.zarr",
        chunk_size=5,
        show_progress=False,
    )
    model = berg.get_encoding_model("fmri-nsd-fwrf", 1, {"roi": "V1"})
    got = zarr.open_group(tmp_path / "b.zarr", mode="r")["sub-01/V1"][:]
    assert np.abs(got - berg.encode(model, images, show_progress=False)).max() <= 1e-6


def test_other_paths_are_never_overwritten(berg, photos, tmp_path):
    images = photos[:2]
    other = tmp_path / "data"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    foreign = tmp_path / "foreign.zarr"
    zarr.create_group(store=foreign, attributes={"owner": "someone"})
    for path in (other, foreign):
        with pytest.raises(ExperimentError, match="choose another output path"):
            berg.run(
                images, subjects=1, rois=["V1"], store=path, overwrite=True, show_progress=False
            )
    assert (other / "keep.txt").read_text() == "mine"
    assert dict(zarr.open_group(foreign, mode="r").attrs) == {"owner": "someone"}


# -- the store layer that other engines (Ray) share ---------------------------------
def test_store_layer_concurrent_writers_and_cut_short_records(berg, photos, tmp_path):
    images = photos[:10]
    job = plan_experiment(berg, images, 1, ["V1", "FFA-1"], chunk_size=2)
    store = ExperimentStore.create_or_open(tmp_path / "c.zarr", job)
    assert store.n_chunks == 5 and store.missing_chunks(1, "V1") == [0, 1, 2, 3, 4]
    assert not store.is_complete()
    # two processes write disjoint chunks of both arrays at the same time
    script = (
        "import sys, numpy as np\n"
        "from berg_onnx.experiment import ExperimentStore\n"
        "s = ExperimentStore.attach(sys.argv[1])\n"
        "for c in map(int, sys.argv[2].split(',')):\n"
        "    for roi, nv in (('V1', 60), ('FFA-1', 25)):\n"
        "        a, b = s.chunk_bounds(c)\n"
        "        rows = np.arange(a, b, dtype=np.float32)[:, None] * np.ones(nv, np.float32)\n"
        "        s.write_chunk(1, roi, c, rows)\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(store.path), chunks])
        for chunks in ("0,2,4", "1,3")
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert store.is_complete()
    root = zarr.open_group(store.path, mode="r")
    assert np.array_equal(root["sub-01/FFA-1"][:, 7], np.arange(10, dtype=np.float32))
    # a completion record cut short by a kill (an empty file) reads as "not done"
    record = Path(store.path) / "_done" / "sub-01" / "V1" / "c" / "3"
    record.write_bytes(b"")
    assert store.missing_chunks(1, "V1") == [3]
    with pytest.raises(Exception, match="must be float32"):
        store.write_chunk(1, "V1", 3, np.zeros((1, 60), np.float32))


def test_xarray_reads_the_store_with_named_dimensions(grid):
    xr = pytest.importorskip("xarray")
    path, _ = grid
    ds = xr.open_zarr(path, group="sub-01", consolidated=False)
    assert ds["lateral"].dims == ("image", "voxel_lateral") and ds.sizes["image"] == 12
    assert np.array_equal(ds["V1"].values, zarr.open_group(path, mode="r")["sub-01/V1"][:])


def test_metadata_torn_by_a_kill_is_rewritten(berg, photos, tmp_path):
    """A kill while a store is being created tears at most the file being written."""
    images = photos[:3]
    path = tmp_path / "t.zarr"
    path.mkdir()
    (path / "zarr.json").write_text('{"zarr_format": 3, "node_ty')  # the very first write
    report = berg.run(images, subjects=1, rois=["V1"], store=path, show_progress=False)
    assert report.complete
    expected = zarr.open_group(path, mode="r")["sub-01/V1"][:]
    for torn in ("_done/sub-01/V1/zarr.json", "_done/stimuli/zarr.json"):
        record = path / torn
        record.write_bytes(record.read_bytes()[:40])  # its record's metadata, half written
        report = berg.run(images, subjects=1, rois=["V1"], store=path, show_progress=False)
        assert report.complete and report.chunks_written == (1 if "V1" in torn else 0)
        assert np.array_equal(zarr.open_group(path, mode="r")["sub-01/V1"][:], expected)
        assert list(zarr.open_group(path, mode="r")["stimuli"][:]) == ["0", "1", "2"]


def test_prefetching_blocks_as_on_cuda_gives_the_same_rows(berg, photos, tmp_path):
    """The CUDA path's overlap (next block preprocessed while models run), run on CPU."""
    from berg_onnx.engines import run_local

    images = photos[:11]
    rows = {}
    for prefetch in (False, True):
        job = plan_experiment(berg, images, 1, "all", chunk_size=2)
        store = ExperimentStore.create_or_open(tmp_path / f"{prefetch}.zarr", job)
        report = run_local(
            berg.store,
            job,
            store,
            device="cpu",
            show_progress=False,
            block_size=4,
            batch_size=berg.batch_size,
            threads=berg.threads,
            prefetch=prefetch,
        )
        assert report.complete and report.chunks_written == 3 * 6
        root = zarr.open_group(store.path, mode="r")
        rows[prefetch] = {r: root[f"sub-01/{r}"][:] for r in ("V1", "FFA-1", "lateral")}
    for roi, values in rows[True].items():
        assert np.array_equal(values, rows[False][roi]), roi
