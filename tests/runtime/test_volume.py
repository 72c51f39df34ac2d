"""Responses <-> NIfTI (berg_onnx.volume) and the CLI paths that write volumes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

nib = pytest.importorskip("nibabel")

from berg_onnx import BERG  # noqa: E402
from berg_onnx.brain.volume import (  # noqa: E402
    from_nifti,
    save_nifti,
    to_nifti,
)
from berg_onnx.errors import InvalidParameterError, ModelLoadError  # noqa: E402
from tests._support.cli import cli_process  # noqa: E402

SHAPE = (81, 104, 83)
N_PHOTOS = 6  # the shared photos fixture (tests/conftest.py) gives the first six


@pytest.fixture(scope="module")
def encoded(berg, photos):
    """Real model outputs (onnxruntime) for V1 and lateral."""
    out = {}
    for roi in ("V1", "lateral"):
        model = berg.get_encoding_model("fmri-nsd-fwrf", 1, {"roi": roi})
        out[roi] = berg.encode(model, photos, show_progress=False)
    return out


def _mask(m):
    return m["fmri"]["roi_mask_volume"]


def test_round_trip_is_exact_in_memory_and_on_disk(meta, encoded, tmp_path):
    for roi, r in encoded.items():
        m = meta[roi]
        img = to_nifti(r, m)
        assert img.shape == (*SHAPE, len(r)) and img.get_data_dtype() == np.float32
        back = from_nifti(img, m)
        assert back.dtype == np.float32 and np.array_equal(back, r)
        for name in ("r.nii", "r.nii.gz"):
            path = save_nifti(tmp_path / f"{roi}_{name}", r, m, fill=np.nan)
            loaded = nib.load(path)
            assert np.array_equal(from_nifti(loaded, m), r)
            assert np.array_equal(from_nifti(path, m), r)  # a path works too
            # the streamed file holds exactly what to_nifti builds in memory
            expect = to_nifti(r, m, fill=np.nan).get_fdata(dtype=np.float32)
            assert np.array_equal(np.asanyarray(loaded.dataobj), expect, equal_nan=True)


def test_3d_for_a_vector_and_4d_for_one_row(meta, encoded, tmp_path):
    m, r = meta["V1"], encoded["V1"]
    vec = to_nifti(r[2], m)
    assert vec.shape == SHAPE and np.array_equal(from_nifti(vec, m), r[2])
    one = to_nifti(r[:1], m)
    assert one.shape == (*SHAPE, 1)
    back = from_nifti(one, m)
    assert back.shape == (1, r.shape[1]) and np.array_equal(back, r[:1])
    path = save_nifti(tmp_path / "one.nii.gz", r[:1], m)
    assert nib.load(path).shape == (*SHAPE, 1)
    assert nib.load(save_nifti(tmp_path / "vec.nii", r[2], m)).shape == SHAPE


def test_split_roi_voxels_land_on_the_mask_in_c_order(meta, encoded, artifacts_dir):
    """lateral's columns: split 1's voxels first, each at the next True entry of the mask."""
    m, r = meta["lateral"], encoded["lateral"]
    mask = _mask(m)
    coords = np.argwhere(mask)  # row-major: the C order of the True entries
    assert len(coords) == r.shape[1] == 61
    data = np.asanyarray(to_nifti(r, m, fill=np.nan).dataobj)
    for v, (i, j, k) in enumerate(coords):
        assert np.array_equal(data[i, j, k, :], r[:, v])
    assert np.isnan(data[~mask]).all()  # fill everywhere else
    # split 1 alone (its own model) is the first ceil(61 / 2) = 31 voxels in that order
    split1 = np.load(artifacts_dir / "reference" / "sub-01_lateral_split-1_own-mu.npy")[:6]
    first = np.stack([data[i, j, k, :] for i, j, k in coords[:31]], axis=1)
    assert np.abs(first - split1).max() <= 1e-4
    assert not np.allclose(first, np.stack([data[tuple(c)] for c in coords[30:61]], axis=1))


def test_affine_is_qform_and_sform_with_zooms(meta, encoded, tmp_path):
    m = {"fmri": dict(meta["V1"]["fmri"])}
    affine = np.array(
        [[-1.8, 0, 0, 72.0], [0, 1.8, 0, -90.5], [0, 0, 2.0, -61.2], [0, 0, 0, 1]], dtype=np.float64
    )
    m["fmri"]["fmri_affine"] = affine
    r = encoded["V1"]
    img = to_nifti(r, m)
    for loaded in (img, nib.load(save_nifti(tmp_path / "a.nii.gz", r, m))):
        hdr = loaded.header
        assert np.allclose(loaded.get_sform(), affine, atol=1e-5)
        assert np.allclose(loaded.get_qform(), affine, atol=1e-5)
        assert np.allclose(loaded.affine, affine, atol=1e-5)
        assert int(hdr["qform_code"]) == 1 and int(hdr["sform_code"]) == 2  # scanner, aligned
        assert np.allclose(hdr.get_zooms(), (1.8, 1.8, 2.0, 1.0))
        assert hdr.get_xyzt_units()[0] == "mm"
    assert np.allclose(to_nifti(r[0], meta["V1"]).header.get_zooms(), (1.8, 1.8, 1.8))


def _split_metadata(m):
    """lateral's mask cut into two disjoint parts A, B, and the composite AB (= lateral)."""
    mask = _mask(m)
    flat = np.flatnonzero(mask)
    parts = {}
    for name, keep in (("A", flat[:30]), ("B", flat[30:]), ("AB", flat)):
        sub = np.zeros(mask.size, dtype=bool)
        sub[keep] = True
        parts[name] = {"fmri": {**m["fmri"], "roi_mask_volume": sub.reshape(mask.shape)}}
    return parts


def test_combining_rois_of_one_subject(meta, encoded):
    m, r = meta["lateral"], encoded["lateral"]
    parts = _split_metadata(m)
    img = to_nifti({"A": r[:, :30], "B": r[:, 30:]}, {k: parts[k] for k in ("A", "B")})
    assert np.array_equal(img.get_fdata(dtype=np.float32), to_nifti(r, m).get_fdata())
    back = from_nifti(img, {k: parts[k] for k in ("A", "B")})
    assert np.array_equal(back["A"], r[:, :30]) and np.array_equal(back["B"], r[:, 30:])


def test_overlapping_rois_are_refused_unless_told_who_wins(meta, encoded):
    parts = _split_metadata(meta["lateral"])
    r = encoded["lateral"]
    marker = np.full_like(r, 99.0)
    responses = {"AB": marker, "A": r[:, :30]}
    with pytest.raises(InvalidParameterError, match="AB and A share 30 voxels"):
        to_nifti(responses, parts)
    coords = np.argwhere(parts["A"]["fmri"]["roi_mask_volume"])

    def a_values(img):
        data = np.asanyarray(img.dataobj)
        return np.stack([data[tuple(c)] for c in coords], axis=1)

    assert np.array_equal(a_values(to_nifti(responses, parts, overlap="last")), r[:, :30])
    assert (a_values(to_nifti(responses, parts, overlap="first")) == 99).all()
    assert np.array_equal(a_values(to_nifti(responses, parts, overlap=["A"])), r[:, :30])
    assert (a_values(to_nifti(responses, parts, overlap=["AB", "A"])) == 99).all()
    with pytest.raises(InvalidParameterError, match="priority list"):
        to_nifti(responses, parts, overlap=["V1"])
    with pytest.raises(InvalidParameterError, match="overlap must be"):
        to_nifti(responses, parts, overlap="middle")


def test_combining_checks_the_grid_and_image_counts(meta, encoded):
    parts = _split_metadata(meta["lateral"])
    r = encoded["lateral"]
    moved = {"fmri": {**parts["B"]["fmri"], "fmri_affine": np.diag([2.0, 2.0, 2.0, 1.0])}}
    with pytest.raises(InvalidParameterError, match="different volume"):
        to_nifti({"A": r[:, :30], "B": r[:, 30:]}, {"A": parts["A"], "B": moved})
    with pytest.raises(InvalidParameterError, match="same number of images"):
        to_nifti({"A": r[:, :30], "B": r[:3, 30:]}, parts)
    with pytest.raises(InvalidParameterError, match="no entry for ROI"):
        to_nifti({"A": r[:, :30], "C": r[:, 30:]}, parts)
    with pytest.raises(InvalidParameterError, match=r"give responses as \{roi: responses\}"):
        to_nifti(r, parts)


def test_shapes_and_metadata_are_validated(meta, encoded):
    m, r = meta["V1"], encoded["V1"]
    with pytest.raises(InvalidParameterError, match=r"shape \(N, 60\) or \(60,\)"):
        to_nifti(encoded["lateral"], m)
    with pytest.raises(InvalidParameterError, match=r"shape \(N, 60\)"):
        to_nifti(r[None], m)
    with pytest.raises(InvalidParameterError, match="no images"):
        to_nifti(r[:0], m)
    empty = {"fmri": {**m["fmri"], "roi_mask_volume": np.zeros(SHAPE, dtype=bool)}}
    with pytest.raises(InvalidParameterError, match="no True voxel"):
        to_nifti(r[0, :0], empty)
    with pytest.raises(InvalidParameterError, match="numeric array"):
        to_nifti(np.array(["a"] * 60), m)
    with pytest.raises(InvalidParameterError, match="roi_mask_volume"):
        to_nifti(r, {"encoding_models": {}})
    with pytest.raises(InvalidParameterError, match=r"expected \(81, 104, 83\)"):
        from_nifti(nib.Nifti1Image(np.zeros((10, 10, 10), np.float32), np.eye(4)), m)
    other = nib.Nifti1Image(to_nifti(r, m).get_fdata(dtype=np.float32), np.eye(4) * 2)
    with pytest.raises(InvalidParameterError, match="differs from the metadata's fmri_affine"):
        from_nifti(other, m)
    with pytest.raises(InvalidParameterError, match=r"\.nii or \.nii\.gz"):
        save_nifti(Path("r.npy"), r, m)


def test_paths_file_names():
    from berg_onnx.utils.outputs import listing_path

    assert listing_path("d/r.nii.gz") == Path("d/r.paths.txt")
    assert listing_path("r.nii") == Path("r.paths.txt")
    assert listing_path("r.npy") == Path("r.paths.txt")


# -- CLI ------------------------------------------------------------------------------
def test_encode_out_nifti_reads_back_voxel_by_voxel(export_dir, photos, encoded, meta, tmp_path):
    stim = tmp_path / "stim.npy"
    np.save(stim, photos)
    out = tmp_path / "lat.nii.gz"
    run = cli_process(
        "encode",
        stim,
        "--subject",
        1,
        "--roi",
        "lateral",
        "--berg-dir",
        export_dir,
        "--out",
        out,
        "--quiet",
    )
    assert run.returncode == 0, run.stderr
    img = nib.load(out)
    assert img.shape == (*SHAPE, 6) and img.get_data_dtype() == np.float32
    assert np.allclose(img.get_sform(), meta["lateral"]["fmri"]["fmri_affine"])
    data = np.asanyarray(img.dataobj)
    mask = _mask(meta["lateral"])
    for v, (i, j, k) in enumerate(np.argwhere(mask)):
        assert np.abs(data[i, j, k] - encoded["lateral"][:, v]).max() <= 1e-5
    assert (data[~mask] == 0).all()
    listing = (tmp_path / "lat.paths.txt").read_text().splitlines()
    assert listing == [f"{stim}[{i}]" for i in range(6)]


def test_encode_refuses_an_unknown_suffix_before_work(cli, export_dir, tmp_path):
    run = cli(
        "encode",
        tmp_path / "missing.npy",
        "--subject",
        1,
        "--roi",
        "V1",
        "--berg-dir",
        export_dir,
        "--out",
        tmp_path / "r.nii.zip",
    )
    assert run.returncode == 1 and ".npy, .nii or .nii.gz" in run.stderr


@pytest.fixture(scope="module")
def store(export_dir, photos, tmp_path_factory):
    """A run store written by berg-onnx's runner (BERG.run) for V1 and lateral."""
    pytest.importorskip("zarr")
    from tests._support.runstore import write_run_store

    path = tmp_path_factory.mktemp("store") / "exp.zarr"
    return write_run_store(path, export_dir, photos, ["V1", "lateral"])


def test_volume_from_a_store(store, encoded, meta, tmp_path):
    out = tmp_path / "v1.nii.gz"
    run = cli_process("volume", store, "--subject", 1, "--roi", "V1", "--out", out)
    assert run.returncode == 0, run.stderr
    img = nib.load(out)
    assert img.shape == (*SHAPE, 6)
    data = np.asanyarray(img.dataobj)
    for v, (i, j, k) in enumerate(np.argwhere(_mask(meta["V1"]))):
        assert np.abs(data[i, j, k] - encoded["V1"][:, v]).max() <= 1e-6
    # an array input's rows are labelled by index in the store; the listing says so
    assert (tmp_path / "v1.paths.txt").read_text().splitlines() == [str(i) for i in range(6)]


def _rows(store, roi):
    import zarr

    return zarr.open_group(str(store), mode="r")[f"sub-01/{roi}"][:]


@pytest.fixture(scope="module")
def overlap_export(export_dir, meta, tmp_path_factory):
    """The test export with FFA-1's mask moved onto 25 of V1's voxels (model files copied)."""
    import hashlib
    import json
    import shutil

    from berg_onnx.source.metadata import flatten, load_npz

    out = tmp_path_factory.mktemp("overlap_export")
    manifest = json.loads((export_dir / "manifest.json").read_text())
    for f in export_dir.iterdir():
        if f.name != "manifest.json":
            shutil.copy(f, out / f.name)  # copies: links out of an export are refused
    entry = manifest["models"]["fmri-nsd-fwrf/sub-01/FFA-1"]
    path = out / entry["metadata"]["name"]
    ffa = load_npz(path)
    mask = np.zeros(_mask(meta["V1"]).size, dtype=bool)
    mask[np.flatnonzero(_mask(meta["V1"]))[:25]] = True
    ffa["fmri"]["roi_mask_volume"] = mask.reshape(SHAPE)
    path.unlink()
    np.savez(path, **flatten(ffa))
    data = path.read_bytes()
    entry["metadata"].update(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def test_volume_combines_store_rois_and_refuses_overlaps(cli, overlap_export, photos, tmp_path):
    pytest.importorskip("zarr")
    from tests._support.runstore import write_run_store

    berg = BERG(berg_dir=overlap_export)
    v1, ffa = (_mask(berg.get_model_metadata("fmri-nsd-fwrf", 1, r)) for r in ("V1", "FFA-1"))
    assert int((v1 & ffa).sum()) == 25
    store = write_run_store(tmp_path / "s.zarr", overlap_export, photos, ["V1", "FFA-1"])
    v1_rows, ffa_rows = _rows(store, "V1"), _rows(store, "FFA-1")
    out = tmp_path / "both.nii"
    run = cli("volume", store, "--subject", 1, "--roi", "V1", "FFA-1", "--out", out)
    assert run.returncode == 1 and "V1 and FFA-1 share 25 voxels" in run.stderr
    assert not out.exists()
    for rule, winner in (("last", ffa_rows), ("first", v1_rows[:, :25])):
        run = cli_process(
            "volume", store, "--subject", 1, "--roi", "V1", "FFA-1", "--overlap", rule, "--out", out
        )
        assert run.returncode == 0, run.stderr
        data = np.asanyarray(nib.load(out).dataobj)
        assert np.array_equal(data[ffa].T, winner)
        assert np.array_equal(data[v1 & ~ffa].T, v1_rows[:, 25:])
        assert (data[~(v1 | ffa)] == 0).all()


def test_volume_from_a_store_needs_its_metadata(cli, store, export_dir, photos, tmp_path):
    import json
    import shutil

    from tests._support.runstore import write_run_store

    gone = tmp_path / "gone_export"  # an export that is deleted after the run
    gone.mkdir()
    manifest = json.loads((export_dir / "manifest.json").read_text())
    shutil.copy(export_dir / "manifest.json", gone)
    entry = manifest["models"]["fmri-nsd-fwrf/sub-01/V1"]
    for name in (entry["onnx"]["name"], entry["metadata"]["name"]):
        shutil.copy(export_dir / name, gone)
    moved = write_run_store(tmp_path / "moved.zarr", gone, photos, ["V1"])
    shutil.rmtree(gone)
    out = tmp_path / "v.nii.gz"
    run = cli("volume", moved, "--subject", 1, "--roi", "V1", "--out", out)
    assert run.returncode == 1 and "--berg-dir" in run.stderr and not out.exists()
    run = cli_process(
        "volume", moved, "--subject", 1, "--roi", "V1", "--berg-dir", export_dir, "--out", out
    )
    assert run.returncode == 0, run.stderr
    run = cli("volume", store, "--subject", 1, "--roi", "FFA-1", "--out", out)
    assert run.returncode == 1 and "no array sub-01/FFA-1" in run.stderr


def test_volume_refuses_an_incomplete_store_or_other_metadata(cli, export_dir, photos, tmp_path):
    pytest.importorskip("zarr")
    import zarr

    from berg_onnx.brain.runs import RunStore, store_metadata
    from tests._support.runstore import mark_unfinished, write_run_store

    cut = write_run_store(tmp_path / "cut.zarr", export_dir, photos, ["V1"])
    mark_unfinished(cut, 1, "V1")
    out = tmp_path / "v.nii.gz"
    run = cli("volume", cut, "--subject", 1, "--roi", "V1", "--out", out)
    assert run.returncode == 1 and "incomplete (1 of 2 chunks" in run.stderr
    assert not out.exists()
    group = zarr.open_group(str(cut), mode="r+")
    files = dict(group["sub-01/V1"].attrs["model_files"])
    files[next(n for n in files if n.endswith(".npz"))] = "0" * 64
    group["sub-01/V1"].attrs["model_files"] = files
    with pytest.raises(ModelLoadError, match="is not the one"):
        store_metadata(BERG(berg_dir=export_dir), RunStore.open(cut), 1, "V1")


def test_volume_checks_out_before_work(cli, store, tmp_path):
    run = cli("volume", store, "--subject", 1, "--roi", "V1", "--out", tmp_path / "v.npy")
    assert run.returncode == 1 and "--out must end in .nii or .nii.gz" in run.stderr
    run = cli("volume", store, "--subject", 1, "--roi", "V1", "--out", tmp_path / "no/v.nii")
    assert run.returncode == 1 and "output folder does not exist" in run.stderr
