"""Folder rules (files.py) and `encode --on-error`, on real folders (findings 9 and 11)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from berg_onnx import BERG, StimulusError
from tests._support.cli import cli_process, encode_argv

# files.py is imported inside the tests that need it, so that the CLI tests here also
# run (and fail) against the code before it existed.

MODEL = "fmri-nsd-fwrf"
N_PHOTOS = 6  # the shared photos fixture (tests/conftest.py) gives the first six


def _save(photo: np.ndarray, path: Path, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(photo.transpose(1, 2, 0)).save(path, format=fmt, quality=95)
    return path


@pytest.fixture
def messy(tmp_path, photos) -> Path:
    """A folder as people have them: hidden files, AppleDouble files, odd extensions, links."""
    root = tmp_path / "photos"
    _save(photos[0], root / "a.jpg")
    _save(photos[1], root / "b.jfif", "JPEG")
    _save(photos[2], root / "sub" / "c.jpe", "JPEG")
    _save(photos[3], root / "sub" / "d.PNG")
    _save(photos[4], root / ".hidden.png")
    _save(photos[5], root / ".thumbnails" / "t.png")
    (root / "._a.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble resource fork")
    (root / "notes.txt").write_text("not an image")
    os.symlink(root / "a.jpg", root / "link-to-a.jpg")
    os.symlink(root / "missing.jpg", root / "broken.jpg")
    os.symlink(root, root / "sub" / "loop")  # a folder link back up: scanned once
    os.symlink(root / "sub", root / "z-sub")  # a second link to one folder
    return root


def test_scan_rules(messy):
    from berg_onnx.inputs.scan import BROKEN_LINK, HIDDEN, NOT_AN_IMAGE, SEEN_FOLDER, scan_images

    scan = scan_images([messy])
    names = [p.relative_to(messy).as_posix() for p in scan.files]
    assert names == ["a.jpg", "b.jfif", "link-to-a.jpg", "sub/c.jpe", "sub/d.PNG"]
    why = {s.path.relative_to(messy).as_posix(): s.reason for s in scan.skipped}
    assert why[".hidden.png"] == why[".thumbnails"] == why["._a.jpg"] == HIDDEN
    assert why["notes.txt"] == NOT_AN_IMAGE and why["broken.jpg"] == BROKEN_LINK
    assert why["sub/loop"] == why["z-sub"] == SEEN_FOLDER
    assert "broken symbolic link: " + str(messy / "broken.jpg") in scan.summary()


def test_every_extension_pillow_opens_is_found(tmp_path, photos):
    from PIL import Image as PILImage

    from berg_onnx.inputs.scan import scan_images

    PILImage.init()
    for ext, fmt in [(".jp2", "JPEG2000"), (".webp", "WEBP"), (".tif", "TIFF"), (".bmp", "BMP")]:
        if fmt not in PILImage.SAVE:
            continue
        _save(photos[0], tmp_path / f"x{ext}", fmt)
    found = {p.suffix for p in scan_images([tmp_path]).files}
    assert found == {p.suffix for p in tmp_path.iterdir()}


def test_named_files_are_taken_as_given_and_missing_ones_fail(messy):
    from berg_onnx.inputs.scan import scan_images

    assert scan_images([messy / ".hidden.png"]).files == (messy / ".hidden.png",)
    with pytest.raises(StimulusError, match="broken symbolic link"):
        scan_images([messy / "broken.jpg"])
    with pytest.raises(StimulusError, match="no such file"):
        scan_images([messy / "nope.jpg"])
    empty = messy / "empty"
    empty.mkdir()
    with pytest.raises(StimulusError, match="no image files"):
        scan_images([empty])


def test_cli_encodes_the_rules_and_reports_what_it_skipped(messy, export_dir, tmp_path):
    out = tmp_path / "r.npy"
    run = cli_process(*encode_argv([str(messy)], export_dir, out))
    assert run.returncode == 0, run.stderr
    assert np.load(out).shape == (5, 60)
    assert "skipped 7 entries" in run.stderr and "2 hidden" not in run.stderr
    assert "3 hidden" in run.stderr and "broken symbolic link" in run.stderr


@pytest.fixture
def folder_with_bad_file(tmp_path, photos) -> Path:
    root = tmp_path / "imgs"
    for i in range(4):
        _save(photos[i], root / f"{i:03d}.jpg")
    bad = _save(photos[4], root / "999-cut.jpg")  # last in order: found only at the end
    bad.write_bytes(bad.read_bytes()[:2000])
    return root


def test_on_error_fail_writes_nothing_and_keeps_old_results(
    cli, folder_with_bad_file, export_dir, tmp_path
):
    out = tmp_path / "r.npy"
    np.save(out, np.zeros((1, 1)))
    (tmp_path / "r.paths.txt").write_text("old\n")
    run = cli(*encode_argv([str(folder_with_bad_file)], export_dir, out))
    assert run.returncode == 1
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "999-cut.jpg" in lines[0] and "Traceback" not in run.stderr
    assert np.load(out).shape == (1, 1) and (tmp_path / "r.paths.txt").read_text() == "old\n"


def test_on_error_skip_leaves_the_file_out(folder_with_bad_file, export_dir, tmp_path):
    out = tmp_path / "r.npy"
    run = cli_process(
        *encode_argv([str(folder_with_bad_file)], export_dir, out, "--on-error", "skip")
    )
    assert run.returncode == 0, run.stderr
    assert "skipped" in run.stderr and "999-cut.jpg" in run.stderr
    paths = (tmp_path / "r.paths.txt").read_text().splitlines()
    good = sorted(folder_with_bad_file.glob("0*.jpg"))
    assert paths == [str(p) for p in good]
    berg = BERG(berg_dir=export_dir)
    model = berg.get_encoding_model(MODEL, 1, {"roi": "V1"})
    np.testing.assert_allclose(np.load(out), berg.encode(model, good, show_progress=False))


def test_api_skip_reports_failed_rows(folder_with_bad_file, export_dir):
    from berg_onnx.inputs.scan import scan_images
    from berg_onnx.inputs.stimulus import as_stimulus

    files = list(scan_images([folder_with_bad_file]).files)
    files.insert(1, folder_with_bad_file / "gone.jpg")
    stim = as_stimulus(files, on_error="skip")
    berg = BERG(berg_dir=export_dir)
    out = berg.encode(berg.get_encoding_model(MODEL, 1, {"roi": "V1"}), stim, show_progress=False)
    assert [f.index for f in stim.failures] == [1, 5]
    assert np.isnan(out[[1, 5]]).all() and np.isfinite(out[stim.ok_rows()]).all()
    assert list(stim.ok_rows()) == [0, 2, 3, 4]
