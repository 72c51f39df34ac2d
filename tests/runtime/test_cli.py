"""The berg-onnx command line on real files.

As a user runs it (``cli_process``: subprocesses) where the process matters: results
written, exit codes, pipes, terminals, environment. Error paths run ``main(argv)`` in
this process (the ``cli`` fixture) with the output captured: a process start adds
nothing to what they check.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from berg_onnx import BERG
from berg_onnx.source.manifest import Manifest
from tests._support.cli import cli_process, encode_argv


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
    run = cli_process(*encode_argv(str(image_dir), export_dir, out, "--quiet"))
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
    run = cli_process(
        *encode_argv(str(stim), export_dir, tmp_path / "o.npy", "--batch-size", "2", roi="lateral")
    )
    assert run.returncode == 0, run.stderr
    assert np.load(tmp_path / "o.npy").shape == (3, 61)
    assert (tmp_path / "o.paths.txt").read_text().splitlines()[2] == f"{stim}[2]"
    assert run.stderr == ""  # stderr is a pipe, not a terminal: no progress bar
    run = cli_process(*encode_argv(str(stim), export_dir, tmp_path / "p.npy", "--progress"))
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
def test_errors_are_one_clear_line(cli, case, message, image_dir, export_dir, tmp_path):
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
    run = cli(*encode_argv(images, export_dir, out, roi=roi))
    assert run.returncode != 0
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
    assert message in lines[0] and lines[0].startswith("berg-onnx: error:")
    assert not out.exists()


def test_list_metadata_and_help(export_dir, tmp_path):
    run = cli_process("list", "--berg-dir", str(export_dir))
    assert run.returncode == 0 and "lateral" in run.stdout and "available: subjects 1" in run.stdout
    assert "subjects: 1, 2, 3, 4, 5, 6, 7, 8; in this source: 1, 2" in run.stdout
    v1 = Manifest.load(export_dir / "manifest.json").get("fmri-nsd-fwrf", 1, "V1")
    row = next(line.split() for line in run.stdout.splitlines() if line.split()[:1] == ["V1"])
    assert row[2] == str(v1.nv)  # the export's own voxel count, not the catalogue's 1350
    out = tmp_path / "meta.npz"
    run = cli_process(
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
        run = cli_process(command, "--help")
        assert (
            run.returncode == 0
            and "examples:" in run.stdout
            and "berg-onnx " + command in run.stdout
        )


def test_doctor_reports_providers_and_cache(tmp_path):
    env = dict(os.environ, BERG_ONNX_CACHE=str(tmp_path / "cache"))
    run = cli_process("doctor", env=env)
    assert run.returncode == 0, run.stderr
    assert "CPUExecutionProvider: usable\n" in run.stdout
    for line in run.stdout.splitlines():  # any other provider (Azure's) is marked unused
        name = line.strip().split(":")[0]
        if name.endswith("ExecutionProvider") and not name.startswith(("CPU", "CUDA")):
            assert "not used by berg-onnx" in line, line
    assert f"cache: {tmp_path / 'cache'}" in run.stdout
    assert "onnxruntime flavours installed: onnxruntime" in run.stdout


def test_encode_with_the_int8_tier(image_dir, export_dir, tmp_path):
    out = tmp_path / "fast.npy"
    run = cli_process(
        *encode_argv(str(image_dir), export_dir, out, "--precision", "int8", "--quiet", roi="FFA-1")
    )
    assert run.returncode == 0, run.stderr
    fast = np.load(out)
    exact_run = cli_process(
        *encode_argv(str(image_dir), export_dir, tmp_path / "exact.npy", "--quiet", roi="FFA-1")
    )
    assert exact_run.returncode == 0, exact_run.stderr
    diff = np.abs(fast - np.load(tmp_path / "exact.npy")).max()
    assert 0 < diff <= 0.05


# -- issue 11 ------------------------------------------------------------------------------------
def _one_line_error(run: subprocess.CompletedProcess, *words: str) -> None:
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 1 and len(lines) == 1, run.stderr
    assert lines[0].startswith("berg-onnx: error:") and "Traceback" not in run.stderr
    for w in words:
        assert w in lines[0], lines[0]


def test_non_utf8_and_newline_names_are_written_losslessly(artifacts_dir, export_dir, tmp_path):
    """Finding 4: rows == lines, names round-trip, and the pair is written together."""
    photos = np.load(artifacts_dir / "reference" / "photos_256_uint8.npy")[:3]
    folder = tmp_path / "imgs"
    folder.mkdir()
    raw_names = [b"caf\xe9.png", b"two\nlines.png", b"back\\slash.png"]  # not UTF-8, \n, \\
    for raw, photo in zip(raw_names, photos, strict=True):
        Image.fromarray(photo.transpose(1, 2, 0)).save(
            os.fsdecode(os.fsencode(folder) + b"/" + raw)
        )
    out = tmp_path / "r.npy"
    run = cli_process(*encode_argv(str(folder), export_dir, out))
    assert run.returncode == 0, run.stderr
    listing = tmp_path / "r.paths.txt"
    lines = listing.read_bytes().split(b"\n")[:-1]
    assert len(lines) == np.load(out).shape[0] == 3  # one line per row
    tails = sorted(line.rsplit(b"/", 1)[1] for line in lines)
    assert tails == [b"back\\\\slash.png", b"caf\xe9.png", b"two\\nlines.png"]  # raw bytes kept
    from berg_onnx.utils.outputs import read_listing

    names = read_listing(listing)
    assert sorted(os.fsencode(n).rsplit(b"/", 1)[1] for n in names) == sorted(raw_names)
    assert all(Path(n).is_file() for n in names)


def test_output_may_not_be_an_input(cli, artifacts_dir, export_dir, tmp_path):
    stim = tmp_path / "s.npy"
    np.save(stim, np.load(artifacts_dir / "reference" / "photos_256_uint8.npy")[:2])
    before = stim.read_bytes()
    _one_line_error(cli(*encode_argv(str(stim), export_dir, stim)), "overwrite the input")
    assert stim.read_bytes() == before
    link = tmp_path / "alias.npy"
    os.symlink(stim, link)
    _one_line_error(cli(*encode_argv(str(stim), export_dir, link)), "overwrite the input")
    assert stim.read_bytes() == before


@pytest.mark.parametrize(
    "out, words",
    [("meta.txt", "end in .npz"), ("nodir/m.npz", "does not exist"), (".", "is a folder")],
)
def test_metadata_out_is_checked_before_printing(cli, export_dir, tmp_path, out, words):
    run = cli(
        "metadata", "--subject", "1", "--roi", "V1", "--berg-dir", str(export_dir),
        "--out", str(tmp_path / out),
    )  # fmt: skip
    _one_line_error(run, words)
    assert run.stdout == ""
    assert not (tmp_path / "meta.txt").exists()


@pytest.mark.parametrize(
    "out, words", [("r.txt", "end in .npy"), ("nodir/r.npy", "does not exist"), ("", "folder")]
)
def test_encode_out_is_checked_before_any_work(cli, image_dir, export_dir, tmp_path, out, words):
    _one_line_error(cli(*encode_argv(str(image_dir), export_dir, tmp_path / out)), words)


def test_zero_d_npy_is_one_line(cli, export_dir, tmp_path):
    stim = tmp_path / "zero.npy"
    np.save(stim, np.array(5))
    _one_line_error(cli(*encode_argv(str(stim), export_dir, tmp_path / "r.npy")), "0-d")


def test_decompression_bomb_is_one_line(cli, export_dir, tmp_path):
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    png = b"\x89PNG\r\n\x1a\n" + chunk(
        b"IHDR", struct.pack(">IIBBBBB", 13500, 13500, 8, 0, 0, 0, 0)
    )
    bomb = tmp_path / "big.png"
    bomb.write_bytes(png + chunk(b"IEND", b""))
    _one_line_error(cli(*encode_argv(str(bomb), export_dir, tmp_path / "r.npy")), "big.png")


@pytest.mark.parametrize("command", [["list"], ["doctor"], ["metadata", "--subject", "1"]])
def test_broken_pipe_exits_0_silently(export_dir, command):
    """Finding 7: `berg-onnx list | head -1` after the reader has gone."""
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first write
    try:
        run = subprocess.run(
            [sys.executable, "-m", "berg_onnx", *command, "--berg-dir", str(export_dir)],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
        )
    finally:
        os.close(write)
    assert run.returncode == 0 and run.stderr == "", run.stderr


def test_version_threads_and_help_list_valid_values(cli, image_dir, export_dir, tmp_path):
    from berg_onnx._version import __version__

    run = cli_process("--version")
    assert run.returncode == 0 and run.stdout.strip() == f"berg-onnx {__version__}"
    run = cli_process(
        *encode_argv(str(image_dir), export_dir, tmp_path / "r.npy", "--threads", "1")
    )
    assert run.returncode == 0, run.stderr
    run = cli(*encode_argv(str(image_dir), export_dir, tmp_path / "r.npy", "--threads", "0"))
    assert run.returncode == 2 and "positive integer" in run.stderr
    for command in ("encode", "metadata", "download"):
        text = " ".join(cli_process(command, "--help").stdout.split())
        assert "1, 2, 3, 4, 5, 6, 7, 8" in text and "V1, V2, V3, hV4" in text and "ventral" in text


def test_progress_only_on_a_terminal_unless_forced(image_dir, export_dir, tmp_path):
    import fcntl
    import pty
    import struct
    import termios

    out = tmp_path / "r.npy"
    assert "img/s" not in cli_process(*encode_argv(str(image_dir), export_dir, out)).stderr
    assert "5/5" in cli_process(*encode_argv(str(image_dir), export_dir, out, "--progress")).stderr
    # a real terminal on stderr: the bar is on by default, off with --no-progress / --quiet
    for extra, shown in [((), True), (("--no-progress",), False), (("--quiet",), False)]:
        leader, follower = pty.openpty()
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
        try:
            run = subprocess.run(
                [sys.executable, "-m", "berg_onnx", "encode", str(image_dir), "--subject", "1",
                 "--roi", "V1", "--berg-dir", str(export_dir), "--out", str(out), *extra],
                stdout=subprocess.PIPE, stderr=follower,
            )  # fmt: skip
            os.close(follower)
            follower = -1
            chunks = []
            while True:
                try:
                    data = os.read(leader, 65536)
                except OSError:
                    break
                if not data:
                    break
                chunks.append(data)
        finally:
            if follower != -1:
                os.close(follower)
            os.close(leader)
        assert run.returncode == 0
        assert (b"5/5" in b"".join(chunks)) is shown, (extra, b"".join(chunks)[-300:])


def test_run_draws_no_bar_into_a_pipe_unless_forced(image_dir, export_dir, tmp_path):
    pytest.importorskip("zarr")
    base = ["run", str(image_dir), "--subjects", "1", "--rois", "V1", "--berg-dir"]
    for i, (extra, shown) in enumerate([((), False), (("--progress",), True),
                                        (("--no-progress",), False)]):  # fmt: skip
        run = cli_process(*base, export_dir, "--out", tmp_path / f"g{i}.zarr", *extra)
        assert run.returncode == 0, run.stderr
        assert ("5/5" in run.stderr) is shown, (extra, run.stderr[-300:])
        assert "complete" in run.stdout


def test_doctor_flags_the_placeholder_hub_repo(tmp_path):
    env = dict(os.environ, BERG_ONNX_CACHE=str(tmp_path / "cache"))
    env.pop("BERG_ONNX_REPO", None)
    run = subprocess.run(
        [sys.executable, "-m", "berg_onnx", "doctor"], capture_output=True, text=True, env=env
    )
    assert run.returncode == 0, run.stderr
    assert "placeholder" in run.stdout and "--berg-dir" in run.stdout, run.stdout
    named = subprocess.run(
        [sys.executable, "-m", "berg_onnx", "doctor", "--repo-id", "me/my-export"],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert "placeholder" not in named.stdout


def test_doctor_honours_repo_id_and_revision(tmp_path):
    env = dict(os.environ, BERG_ONNX_CACHE=str(tmp_path / "cache"))
    run = cli_process("doctor", "--repo-id", "me/my-export", "--revision", "v9", env=env)
    assert run.returncode == 0, run.stderr
    assert "Hub repo: me/my-export@v9" in run.stdout


@pytest.mark.parametrize(
    "args, words",
    [
        (["encode", "x.png", "--subject", "abc", "--roi", "V1", "--out", "r.npy"], "--subject"),
        (["encode"], "required"),
        (["frobnicate"], "invalid choice"),
        (
            [
                "encode",
                "x.png",
                "--subject",
                "1",
                "--roi",
                "V1",
                "--out",
                "r.npy",
                "--threads",
                "-2",
            ],
            "positive",
        ),
    ],
)
def test_usage_errors_are_one_line_too(cli, args, words):
    run = cli(*args)
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(lines) == 1 and words in lines[0], run.stderr
