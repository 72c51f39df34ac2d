"""Figures (berg_onnx.plot) rendered to real PNG files, and the `plot` command."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("matplotlib")
pytest.importorskip("nibabel")

from berg_onnx.brain.plot import accuracy, response_map  # noqa: E402
from berg_onnx.brain.volume import save_nifti, to_nifti  # noqa: E402
from berg_onnx.errors import InvalidParameterError  # noqa: E402
from tests._support.cli import cli_process  # noqa: E402


@pytest.fixture(scope="module")
def responses(berg, artifacts_dir):
    photos = np.load(artifacts_dir / "reference" / "photos_256_uint8.npy")[:6]
    model = berg.get_encoding_model("fmri-nsd-fwrf", 1, {"roi": "V1"})
    return berg.encode(model, photos, show_progress=False)


def png(fig, path) -> np.ndarray:
    fig.savefig(path)
    return np.asarray(Image.open(path).convert("RGB"))


def assert_not_blank(pixels: np.ndarray, min_colours: int = 50) -> None:
    colours = np.unique(pixels.reshape(-1, 3), axis=0)
    assert len(colours) >= min_colours and pixels.std() > 10


def test_response_map_renders_a_readable_figure(meta, responses, tmp_path):
    fig = response_map(responses, meta["V1"], subject=1, roi="V1")
    pixels = png(fig, tmp_path / "map.png")
    assert pixels.shape == (440, 1200, 3)
    assert_not_blank(pixels)
    title = fig.get_suptitle()
    assert "sub-01 V1" in title and "z-scored response" in title and "mean over 6 images" in title
    panels = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title().split(",")[0] for ax in panels[:3]] == ["sagittal", "coronal", "axial"]
    lo, hi = panels[0].images[1].get_clim()
    assert lo == -hi and hi > 0  # diverging map centred on 0
    assert panels[0].images[1].get_cmap().name == "RdBu_r"
    assert fig.axes[-1].get_ylabel() == "z-scored response"  # the colour bar


def test_response_map_shows_the_slice_it_names(meta, responses):
    """The axial panel's finite values are exactly that slice's voxels (mean over images)."""
    fig = response_map(responses, meta["V1"])
    axial = [ax for ax in fig.axes if ax.images][2]
    z_mm = float(axial.get_title().split("= ")[1].split(" mm")[0])
    affine = meta["V1"]["fmri"]["fmri_affine"]
    z = int(round((z_mm - affine[2, 3]) / affine[2, 2]))
    vol = to_nifti(responses.mean(axis=0, dtype=np.float64).astype(np.float32), meta["V1"], np.nan)
    expected = np.asanyarray(vol.dataobj)[:, :, z]
    shown = np.ma.filled(axial.images[1].get_array(), np.nan)
    assert np.array_equal(
        np.sort(shown[np.isfinite(shown)]), np.sort(expected[np.isfinite(expected)])
    )
    counts = meta["V1"]["fmri"]["roi_mask_volume"].sum(axis=(0, 1))
    assert counts[z] == counts.max()  # the slice holding most of the ROI


def test_one_image_differs_from_the_mean(meta, responses, tmp_path):
    mean = png(response_map(responses, meta["V1"]), tmp_path / "mean.png")
    fig = response_map(responses, meta["V1"], image=2, subject=1, roi="V1", image_name="c.png")
    one = png(fig, tmp_path / "one.png")
    assert "image 2 (c.png)" in fig.get_suptitle()
    assert mean.shape == one.shape and (mean != one).any(axis=2).sum() > 200
    with pytest.raises(InvalidParameterError, match=r"0\.\.5"):
        response_map(responses, meta["V1"], image=6)
    with pytest.raises(InvalidParameterError, match="view must be"):
        response_map(responses, meta["V1"], view="3d")


def test_orientation_follows_the_affine(meta, responses, tmp_path):
    """The same brain stored with x flipped (and the affine saying so) draws the same figure."""
    mask = meta["V1"]["fmri"]["roi_mask_volume"]
    flip = np.diag([-1.0, 1, 1, 1])
    flip[0, 3] = mask.shape[0] - 1
    flipped = {"fmri": {**meta["V1"]["fmri"], "roi_mask_volume": mask[::-1].copy()}}
    flipped["fmri"]["fmri_affine"] = meta["V1"]["fmri"]["fmri_affine"] @ flip
    vol = np.asanyarray(to_nifti(responses, meta["V1"]).dataobj)[::-1]
    rows = vol[flipped["fmri"]["roi_mask_volume"]].T
    assert not np.array_equal(rows, responses)  # another column order...
    a = png(response_map(responses, meta["V1"]), tmp_path / "a.png")
    b = png(response_map(rows, flipped), tmp_path / "b.png")
    assert np.array_equal(a, b)  # ...the same picture


def test_mosaic_of_the_slices_holding_the_roi(meta, responses, tmp_path):
    fig = response_map(responses, meta["V1"], view="mosaic", subject=1, roi="V1")
    pixels = png(fig, tmp_path / "mosaic.png")
    assert_not_blank(pixels)
    shown = [ax for ax in fig.axes if ax.images and ax.get_visible()]
    holding = np.flatnonzero(meta["V1"]["fmri"]["roi_mask_volume"].sum(axis=(0, 1)))
    assert len(shown) == min(len(holding), 20)


def test_combined_rois_in_one_map(berg, responses, tmp_path):
    metas = {r: berg.get_model_metadata("fmri-nsd-fwrf", 1, r) for r in ("V1", "FFA-1")}
    ffa = np.random.default_rng(1).standard_normal((6, 25)).astype(np.float32)
    fig = response_map({"V1": responses, "FFA-1": ffa}, metas, view="mosaic", subject=1)
    assert "sub-01 V1, FFA-1" in fig.get_suptitle()
    assert_not_blank(png(fig, tmp_path / "both.png"))


def test_accuracy_figure(meta, tmp_path):
    fig = accuracy(meta["V1"], subject=1, roi="V1")
    pixels = png(fig, tmp_path / "acc.png")
    assert pixels.shape == (420, 1300, 3)
    assert_not_blank(pixels, min_colours=30)
    hist, ev, scatter = fig.axes[:3]
    ev_mean = meta["V1"]["encoding_models"]["explained_variance"].mean()
    assert f"mean {ev_mean:.1f}%" in ev.get_title()
    assert scatter.collections[0].get_offsets().shape == (60, 2)
    assert sum(p.get_height() for p in hist.patches) == 60  # every voxel in the histogram
    assert "sub-01 V1" in fig.get_suptitle()
    with pytest.raises(InvalidParameterError, match="ncsnr"):
        accuracy({"fmri": {}})


def _png_ok(path, size):
    pixels = np.asarray(Image.open(path).convert("RGB"))
    assert pixels.shape[:2] == size[::-1]
    assert_not_blank(pixels)


def test_plot_from_npy_and_nifti(cli, export_dir, meta, responses, tmp_path):
    npy = tmp_path / "v1.npy"
    np.save(npy, responses)
    (tmp_path / "v1.paths.txt").write_text("\n".join(f"dir/img{i}.png" for i in range(6)) + "\n")
    out = tmp_path / "fig.png"
    run = cli_process(
        "plot", npy, "--subject", 1, "--roi", "V1", "--berg-dir", export_dir, "--out", out
    )
    assert run.returncode == 0, run.stderr
    assert "1200x440 px" in run.stdout
    _png_ok(out, (1200, 440))
    nii = save_nifti(tmp_path / "v1.nii.gz", responses, meta["V1"])
    out2 = tmp_path / "fig2.png"
    run = cli_process(
        "plot",
        nii,
        "--subject",
        1,
        "--roi",
        "V1",
        "--image",
        3,
        "--berg-dir",
        export_dir,
        "--out",
        out2,
    )
    assert run.returncode == 0, run.stderr
    _png_ok(out2, (1200, 440))
    run = cli_process(
        "plot",
        npy,
        "--subject",
        1,
        "--roi",
        "V1",
        "--image",
        3,
        "--berg-dir",
        export_dir,
        "--out",
        out,
    )
    assert run.returncode == 0, run.stderr
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(out2)))  # same data
    run = cli(
        "plot",
        npy,
        "--subject",
        1,
        "--roi",
        "V1",
        "--image",
        9,
        "--berg-dir",
        export_dir,
        "--out",
        out,
    )
    assert run.returncode == 1 and "0..5" in run.stderr


def test_plot_from_a_store_and_accuracy(export_dir, artifacts_dir, tmp_path):
    pytest.importorskip("zarr")
    from tests._support.runstore import write_run_store

    photos = np.load(artifacts_dir / "reference" / "photos_256_uint8.npy")[:6]
    store = write_run_store(tmp_path / "e.zarr", export_dir, photos, ["V1"])
    out = tmp_path / "s.png"
    run = cli_process(
        "plot", store, "--subject", 1, "--roi", "V1", "--view", "mosaic", "--out", out
    )
    assert run.returncode == 0, run.stderr
    assert_not_blank(np.asarray(Image.open(out).convert("RGB")))
    acc = tmp_path / "acc.png"
    run = cli_process(
        "plot", "--accuracy", "--subject", 1, "--roi", "V1", "--berg-dir", export_dir, "--out", acc
    )
    assert run.returncode == 0, run.stderr
    _png_ok(acc, (1300, 420))
    run = cli_process(
        "plot", store, "--accuracy", "--subject", 1, "--roi", "V1", "--out", tmp_path / "b.png"
    )
    assert run.returncode == 0, run.stderr
    assert np.array_equal(np.asarray(Image.open(acc)), np.asarray(Image.open(tmp_path / "b.png")))


def test_plot_checks_its_arguments_before_work(cli, export_dir, tmp_path):
    run = cli("plot", "x.npy", "--subject", 1, "--roi", "V1", "--out", tmp_path / "f.jpg")
    assert run.returncode == 1 and "--out must end in .png, .pdf or .svg" in run.stderr
    run = cli(
        "plot", "--subject", 1, "--roi", "V1", "--berg-dir", export_dir, "--out", tmp_path / "f.png"
    )
    assert run.returncode == 1 and "give INPUT" in run.stderr
    assert not (tmp_path / "f.png").exists()
