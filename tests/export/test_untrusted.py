"""Hostile checkpoints and metadata files: refused fast, in bounded memory, with a clear error.

Each case in tests/fuzz/crafted.py is one class of attack (memo bomb, lengths
beyond the data, deep nesting, lying zip directories, storages that do not
back their tensors, ...). The loaders must raise ModelLoadError naming the
file within well under a second and without the process growing by 100 MB.
A whole ``python -m export convert`` on such a file must exit with one line
within 5 s and a peak RSS under 500 MB.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from berg_onnx.errors import ModelLoadError
from export.checkpoint import load_checkpoint, load_pickled_npy
from tests.fuzz import crafted

FWRF = "encoding_models/modality-fmri/train_dataset-nsd/model-fwrf"
REPO = Path(__file__).resolve().parents[2]
CHECKPOINTS = crafted.checkpoint_cases()
METADATA = crafted.metadata_cases()


@pytest.mark.parametrize("case", sorted(CHECKPOINTS))
def test_crafted_checkpoint_is_refused_fast(tmp_path, case):
    path = tmp_path / f"{case}.pt"
    path.write_bytes(CHECKPOINTS[case])
    crafted.assert_refused_fast(load_checkpoint, path)


@pytest.mark.parametrize("case", sorted(METADATA))
def test_crafted_metadata_is_refused_fast(tmp_path, case):
    path = tmp_path / f"{case}.npy"
    path.write_bytes(METADATA[case])
    crafted.assert_refused_fast(load_pickled_npy, path)


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("pickle_memo_bomb", "LONG_BINPUT to memo slot 426930802"),
        ("pickle_binbytes8_beyond", "BINBYTES8 .* declares"),
        ("pickle_frame_beyond", "FRAME declares"),
        ("pickle_deep_marks", "open MARKs"),
        ("pickle_deep_tuples", "nesting deeper"),
        ("pickle_many_opcodes", "opcodes"),
        ("pickle_ndarray_huge_shape", "backed by 8 bytes"),
        ("pickle_dtype_void_huge", "not a plain numeric"),
        ("storage_short", "holds 8 bytes but the pickle declares 4 x 4"),
        ("tensor_beyond_storage", "does not fit its storage"),
        ("compressed_member", "is compressed"),
        ("size_beyond_file", "claims 2147483632 bytes"),
        ("duplicate_names", "appears twice"),
        ("path_traversal", "not a plain relative path"),
        ("many_members", "more than the 4096 allowed"),
        ("overlapping_members", "overlap"),
    ],
)
def test_refusals_name_the_reason(tmp_path, case, reason):
    path = tmp_path / "weights_sub-01_roi-V1.pt"
    path.write_bytes(CHECKPOINTS[case])
    assert pytest.raises(ModelLoadError, load_checkpoint, path).match(reason)


def test_storages_beyond_what_a_model_needs_are_refused(tmp_path, monkeypatch):
    from export import checkpoint

    path = tmp_path / "big.pt"
    path.write_bytes(
        crafted.torch_zip(crafted._tensor_pickle(4, (2, 2), (2, 1)), {"0": b"\0" * 16})
    )
    with pytest.raises(ModelLoadError, match="not a BERG fwRF checkpoint"):  # storages read fine
        load_checkpoint(path)
    monkeypatch.setattr(checkpoint, "MAX_STORAGE_BYTES", 15)
    with pytest.raises(ModelLoadError, match="storage 0 of 16 bytes would exceed"):
        load_checkpoint(path)


def test_golden_files_still_load(golden_dir):
    for variant in ("berg_dir", "berg_dir_numpy1"):
        ck = load_checkpoint(
            golden_dir / variant / FWRF / "encoding_models_weights/weights_sub-01_roi-V1.pt"
        )
        assert ck.nv == 40
        meta = load_pickled_npy(golden_dir / variant / FWRF / "metadata/metadata_sub-01_roi-V1.npy")
        assert meta["fmri"]["roi_mask_volume"].shape == (81, 104, 83)


def _berg_dir(root: Path, checkpoint: bytes, metadata: bytes | None = None) -> Path:
    (root / FWRF / "encoding_models_weights").mkdir(parents=True)
    (root / FWRF / "metadata").mkdir(parents=True)
    (root / FWRF / "encoding_models_weights/weights_sub-01_roi-V1.pt").write_bytes(checkpoint)
    meta = metadata if metadata is not None else crafted.npy_pickle(b"\x80\x02}.")
    (root / FWRF / "metadata/metadata_sub-01_roi-V1.npy").write_bytes(meta)
    return root


#: Runs one command and prints its peak RSS (KB): RUSAGE_CHILDREN of a fresh process is
#: exactly that child's, whatever this pytest process ran before.
_MEASURE = """
import json, resource, subprocess, sys
run = subprocess.run(sys.argv[1:], capture_output=True, text=True)
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"rc": run.returncode, "stderr": run.stderr, "peak_kb": peak}))
"""


def _convert(berg_dir: Path, out: Path) -> tuple[dict, float]:
    """Run the real convert CLI; ({rc, stderr, peak_kb}, wall seconds)."""
    cmd = [
        sys.executable,
        "-m",
        "export",
        "convert",
        "--berg-dir",
        str(berg_dir),
        "--out",
        str(out),
    ]
    start = time.perf_counter()
    run = subprocess.run(
        [sys.executable, "-c", _MEASURE, *cmd],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    wall = time.perf_counter() - start
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout), wall


@pytest.mark.parametrize(
    ("checkpoint", "metadata"),
    [
        ("pickle_memo_bomb", None),
        ("storage_huge_claim", None),
        ("compressed_member", None),
        (None, "pickle_memo_bomb"),
        (None, "pickle_frame_beyond"),
    ],
)
def test_convert_process_refuses_with_one_line_fast_and_small(
    tmp_path, golden_dir, checkpoint, metadata
):
    good = golden_dir / "berg_dir" / FWRF
    ck = (
        CHECKPOINTS[checkpoint]
        if checkpoint
        else (good / "encoding_models_weights/weights_sub-01_roi-V1.pt").read_bytes()
    )
    meta = (
        METADATA[metadata]
        if metadata
        else (good / "metadata/metadata_sub-01_roi-V1.npy").read_bytes()
    )
    berg_dir = _berg_dir(tmp_path / "berg", ck, meta)
    run, wall = _convert(berg_dir, tmp_path / "out")
    lines = run["stderr"].strip().splitlines()
    peak_mb = run["peak_kb"] / 1024
    assert run["rc"] == 2, run["stderr"]
    assert len(lines) == 1 and lines[0].startswith("error: "), run["stderr"]
    assert ("weights_sub-01" if checkpoint else "metadata_sub-01") in lines[0]
    assert wall < 5, f"convert took {wall:.1f} s to refuse"
    assert peak_mb < 500, f"convert peaked at {peak_mb:.0f} MB"
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# -- second pass: byte order, the ROI a file is filed under, bounded reads ------------------
def test_big_endian_arrays_read_as_the_same_numbers(tmp_path):
    data, affine = crafted.big_endian_metadata()
    path = tmp_path / "metadata_sub-01_roi-V1.npy"
    path.write_bytes(data)
    got = load_pickled_npy(path)["fmri"]["fmri_affine"]
    np.testing.assert_array_equal(got, affine)
    assert got.dtype.isnative


def test_memo_chain_is_refused_by_the_scan(tmp_path):
    path = tmp_path / "chain.npy"
    path.write_bytes(crafted.npy_pickle(crafted.memo_chain()))
    assert "read back from the memo" in crafted.assert_refused_fast(load_pickled_npy, path)


def test_storages_are_not_read_before_the_schema_is_checked(tmp_path):
    """300 MB of valid storages under keys the spec does not have: refused, nothing read."""
    path = tmp_path / "weights_sub-01_roi-V1.pt"
    numel = 25 << 20  # 100 MB of float32 each
    tensors = {name: (str(i), numel) for i, name in enumerate(("a", "b", "c"))}
    crafted.write_big_checkpoint(
        path, {str(i): 4 * numel for i in range(3)}, crafted.tensors_pickle(tensors)
    )
    message = crafted.assert_refused_fast(load_checkpoint, path)
    assert "not a BERG fwRF checkpoint" in message


def test_convert_refuses_a_checkpoint_filed_under_another_roi(tmp_path, golden_dir):
    """A V1 checkpoint (args.roi 'V1') saved as hV4's: refused, not exported as hV4."""
    good = golden_dir / "berg_dir" / FWRF
    berg = tmp_path / "berg"
    for sub in ("encoding_models_weights", "metadata"):
        (berg / FWRF / sub).mkdir(parents=True)
    ck = (good / "encoding_models_weights/weights_sub-01_roi-V1.pt").read_bytes()
    meta = (good / "metadata/metadata_sub-01_roi-V1.npy").read_bytes()
    (berg / FWRF / "encoding_models_weights/weights_sub-01_roi-hV4.pt").write_bytes(ck)
    (berg / FWRF / "metadata/metadata_sub-01_roi-hV4.npy").write_bytes(meta)
    run, wall = _convert(berg, tmp_path / "out")
    assert run["rc"] == 2, run["stderr"]
    assert "ROI 'V1'" in run["stderr"] and "filed as subject 1 ROI 'hV4'" in run["stderr"]
    assert wall < 30


def test_convert_bounds_a_source_size_before_hashing(tmp_path, golden_dir):
    """A valid checkpoint with a 1 TB hole before its zip directory (its members all check
    out, so every zip check passes): refused from its size at once, not hashed for hours."""
    good = golden_dir / "berg_dir" / FWRF
    ck = (good / "encoding_models_weights/weights_sub-01_roi-V1.pt").read_bytes()
    meta = (good / "metadata/metadata_sub-01_roi-V1.npy").read_bytes()
    berg = _berg_dir(tmp_path / "berg", b"", meta)
    path = berg / FWRF / "encoding_models_weights/weights_sub-01_roi-V1.pt"
    crafted.write_zip_with_hole(path, ck, 1 << 40)
    run, wall = _convert(berg, tmp_path / "out")
    lines = run["stderr"].strip().splitlines()
    assert run["rc"] == 2 and len(lines) == 1 and "more than a BERG checkpoint" in lines[0]
    assert wall < 5 and run["peak_kb"] / 1024 < 500
