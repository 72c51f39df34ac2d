"""The berg-onnx command line, run as a user would (subprocesses, real files)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from berg_onnx import BERG


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "berg_onnx", *args], capture_output=True, text=True, cwd=cwd
    )


def encode(images: str, roi: str, export_dir: Path, out: Path, *extra: str):
    """`berg-onnx encode IMAGES --subject 1 --roi ROI --berg-dir EXPORT --out OUT [extra]`."""
    return cli(
        "encode",
        images,
        "--subject",
        "1",
        "--roi",
        roi,
        "--berg-dir",
        str(export_dir),
        "--out",
        str(out),
        *extra,
    )


@pytest.fixture(scope="module")
def image_dir(artifacts_dir, tmp_path_factory) -> Path:
    photos = np.load(artifacts_dir / "reference" / "photos_256_uint8.npy")[:5]
    root = tmp_path_factory.mktemp("images")
    (root / "nested").mkdir()
    names = ["b.png", "a.jpg", "nested/c.PNG", "d.jpeg", "nested/e.png"]
    for name, photo in zip(names, photos, strict=True):
        Image.fromarray(photo.transpose(1, 2, 0)).save(root / name, quality=95)
    (root / "notes.txt").write_text("not an image")
    return root


def test_encode_a_folder_of_jpeg_and_png(image_dir, export_dir, tmp_path):
    out = tmp_path / "r.npy"
    run = encode(str(image_dir), "V1", export_dir, out, "--quiet")
    assert run.returncode == 0, run.stderr
    responses = np.load(out, allow_pickle=False)
    paths = (tmp_path / "r.paths.txt").read_text().split()
    expected_order = sorted(p for p in image_dir.rglob("*") if p.is_file() and p.suffix != ".txt")
    assert paths == [str(p) for p in expected_order]  # sorted, recursive, images only
    berg = BERG(berg_dir=export_dir)
    model = berg.get_encoding_model("fmri-nsd-fwrf", 1, {"roi": "V1"})
    direct = berg.encode(model, expected_order, show_progress=False)
    assert responses.shape == (5, 60) and np.abs(responses - direct).max() <= 1e-5


def test_encode_npy_stimulus(artifacts_dir, export_dir, tmp_path):
    stim = tmp_path / "stim.npy"
    np.save(stim, np.load(artifacts_dir / "reference" / "photos_256_uint8.npy")[:3])
    run = encode(str(stim), "lateral", export_dir, tmp_path / "o.npy", "--batch-size", "2")
    assert run.returncode == 0, run.stderr
    assert np.load(tmp_path / "o.npy").shape == (3, 61)
    assert (tmp_path / "o.paths.txt").read_text().splitlines()[2] == f"{stim}[2]"
    assert run.stderr == ""  # stderr is a pipe, not a terminal: no progress bar
    run = encode(str(stim), "V1", export_dir, tmp_path / "p.npy", "--progress")
    assert run.returncode == 0 and "3/3" in run.stderr  # forced on


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing_dir", "no such file or directory"),
        ("bad_image", "Cannot read"),
        ("unknown_roi", "valid ROIs: V1, V2"),
        ("read_only_out", "cannot write"),
        ("float_npy", "expected integers 0-255"),
    ],
)
def test_errors_are_one_clear_line(case, message, image_dir, export_dir, tmp_path):
    images, roi, out = str(image_dir), "V1", tmp_path / "r.npy"
    if case == "missing_dir":
        images = str(tmp_path / "nowhere")
    elif case == "bad_image":
        images = str(tmp_path / "broken.jpg")
        Path(images).write_bytes(b"\xff\xd8 not really a jpeg")
    elif case == "unknown_roi":
        roi = "V7"
    elif case == "read_only_out":
        if os.geteuid() == 0:  # root writes through chmod; /proc refuses even root
            out = Path("/proc/berg-onnx-responses.npy")
        else:
            ro = tmp_path / "ro"
            ro.mkdir(mode=0o555)
            out = ro / "r.npy"
    elif case == "float_npy":
        images = str(tmp_path / "f.npy")
        np.save(images, np.zeros((1, 3, 8, 8), np.float32))
    run = encode(images, roi, export_dir, out)
    assert run.returncode != 0
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
    assert message in lines[0] and lines[0].startswith("berg-onnx: error:")
    assert not out.exists()


def test_list_metadata_and_help(export_dir, tmp_path):
    run = cli("list", "--berg-dir", str(export_dir))
    assert run.returncode == 0 and "lateral" in run.stdout and "available: subjects 1" in run.stdout
    out = tmp_path / "meta.npz"
    run = cli(
        "metadata",
        "--subject",
        "1",
        "--roi",
        "FFA-1",
        "--berg-dir",
        str(export_dir),
        "--out",
        str(out),
    )
    assert run.returncode == 0, run.stderr
    with np.load(out, allow_pickle=False) as data:
        assert data["fmri/ncsnr"].shape == (25,)
    for command in ("encode", "list", "metadata", "download", "doctor"):
        run = cli(command, "--help")
        assert (
            run.returncode == 0
            and "examples:" in run.stdout
            and "berg-onnx " + command in run.stdout
        )


def test_doctor_reports_providers_and_cache(tmp_path):
    env = dict(os.environ, BERG_ONNX_CACHE=str(tmp_path / "cache"))
    run = subprocess.run(
        [sys.executable, "-m", "berg_onnx", "doctor"], capture_output=True, text=True, env=env
    )
    assert run.returncode == 0, run.stderr
    assert "CPUExecutionProvider: usable" in run.stdout
    assert f"cache: {tmp_path / 'cache'}" in run.stdout
    assert "onnxruntime flavours installed: onnxruntime" in run.stdout


def test_encode_with_the_int8_tier(image_dir, export_dir, tmp_path):
    out = tmp_path / "fast.npy"
    run = encode(str(image_dir), "FFA-1", export_dir, out, "--precision", "int8", "--quiet")
    assert run.returncode == 0, run.stderr
    fast = np.load(out)
    exact_run = encode(str(image_dir), "FFA-1", export_dir, tmp_path / "exact.npy", "--quiet")
    assert exact_run.returncode == 0, exact_run.stderr
    diff = np.abs(fast - np.load(tmp_path / "exact.npy")).max()
    assert 0 < diff <= 0.05
