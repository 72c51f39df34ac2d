"""The int8 tier cannot saturate on any x86 kernel: emulated AVX2 arithmetic, the bound, ARM.

The AVX2/AVX-512BW u8 x s8 kernel (VPMADDUBSW + VPMADDWD) is emulated in numpy on the
real quantised weights and the u8 activations onnxruntime itself produced for
natural photos; the chosen scheme must give exactly the int32 sums VNNI gives,
and the earlier full-range scheme must not (that is what broke the export on AMD).
When qemu-user is installed, the same graphs also run on onnxruntime's real AVX2
kernels (``qemu-x86_64 -cpu Haswell``: no AVX-512, no VNNI).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
import onnxruntime as ort  # noqa: E402

from export.int8_kernels import (  # noqa: E402
    INT16_MAX,
    operands,
    raw_exact,
    raw_pairwise_int16,
    worst_pair_sum,
)
from export.onnx_export import (  # noqa: E402
    FULL_RANGE_SCHEME,
    INT8_TOLERANCE,
    ExportError,
    quantize_dynamic_int8,
    quantize_readout,
    reference_preprocess,
)

ROIS = ("V1", "lateral")


def _name(roi: str, int8: bool = False) -> str:
    return f"fmri-nsd-fwrf_sub-01_roi-{roi}{'.int8' if int8 else ''}.onnx"


@pytest.fixture(scope="module")
def x(artifacts_dir) -> np.ndarray:
    photos = np.load(artifacts_dir / "reference" / "photos_256_uint8.npy")[:3]
    return reference_preprocess(photos).numpy()


@pytest.fixture(scope="module")
def full_range(export_dir, tmp_path_factory) -> dict:
    """The earlier scheme (full-range symmetric int8 weights) applied to the test models."""
    out = tmp_path_factory.mktemp("full-range")
    paths = {}
    for roi in ROIS:
        paths[roi] = out / _name(roi, int8=True)
        quantize_dynamic_int8(export_dir / _name(roi), paths[roi], FULL_RANGE_SCHEME)
    return paths


def run(path, x: np.ndarray) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"]).run(
        None, {"images": x}
    )[0]


def test_emulation_saturates_like_vpmaddubsw():
    # the instruction's documented behaviour: 255*127 + 255*127 = 64770 -> 32767
    a = np.array([[255, 255, 255, 0]], np.uint8)
    b = np.array([[127, -128], [127, -128], [1, 1], [0, 0]], np.int8)
    assert raw_exact(a, b).tolist() == [[65025, -65025]]
    assert raw_pairwise_int16(a, b).tolist() == [[32767 + 255, -32768 + 255]]


def test_reduced_range_weights_never_saturate_for_any_input():
    rng = np.random.default_rng(0)
    for k in (1, 7, 64, 729):  # odd K: the kernel pads with a zero
        b = rng.integers(-64, 65, (k, 33)).astype(np.int8)
        b[:2, 0], b[:2, 1] = 64, -64  # the extremes, against all-255 rows
        a = rng.integers(0, 256, (20, k)).astype(np.uint8)
        a[0] = 255
        assert worst_pair_sum(b) <= 2 * 255 * 64 == 32640 <= INT16_MAX
        np.testing.assert_array_equal(raw_pairwise_int16(a, b), raw_exact(a, b))


@pytest.mark.parametrize("roi", ROIS)
def test_shipped_int8_tier_is_exact_on_the_avx2_kernel(export_dir, x, roi):
    ops = operands(export_dir / _name(roi, int8=True), x)
    assert len(ops) == 3 * (2 if roi == "lateral" else 1)  # every receptive-field GEMM
    for op in ops:
        assert op.b.dtype == np.int8 and int(np.abs(op.b.astype(int)).max()) <= 64
        assert worst_pair_sum(op.b) <= INT16_MAX
        np.testing.assert_array_equal(raw_pairwise_int16(op.a, op.b), raw_exact(op.a, op.b))


@pytest.mark.parametrize("roi", ROIS)
def test_full_range_scheme_saturates_on_the_avx2_kernel(full_range, x, roi):
    ops = operands(full_range[roi], x)
    assert max(worst_pair_sum(op.b) for op in ops) == 2 * 255 * 127
    clipped = sum(
        int((raw_pairwise_int16(op.a, op.b) != raw_exact(op.a, op.b)).sum()) for op in ops
    )
    assert clipped > 0  # real photographs do drive pairs past int16 with these weights


def test_export_refuses_a_scheme_that_can_saturate(export_dir, tmp_path):
    with pytest.raises(ExportError, match="saturate"):
        quantize_readout(export_dir / _name("V1"), tmp_path / "v1.int8.onnx", FULL_RANGE_SCHEME)


@pytest.mark.parametrize("roi", ROIS)
def test_int8_tier_close_to_fp32(export_dir, x, roi):
    y32 = run(export_dir / _name(roi), x)
    y8 = run(export_dir / _name(roi, int8=True), x)
    assert 1e-5 < np.abs(y8 - y32).max() <= INT8_TOLERANCE
    corr = [np.corrcoef(y32[:, j], y8[:, j])[0, 1] for j in range(y32.shape[1])]
    assert min(corr) > 0.999


QEMU = shutil.which("qemu-x86_64")
HASWELL = """
import sys, numpy as np, onnxruntime as ort
x = np.load(sys.argv[1]); out = {}
for i, p in enumerate(sys.argv[3:]):
    o = ort.SessionOptions(); o.log_severity_level = 3
    out[str(i)] = ort.InferenceSession(p, o, providers=["CPUExecutionProvider"]).run(
        None, {"images": x})[0]
np.savez(sys.argv[2], **out)
"""


@pytest.mark.slow
@pytest.mark.skipif(
    QEMU is None or platform.machine() != "x86_64", reason="needs qemu-user (qemu-x86_64)"
)
def test_real_avx2_kernels_under_qemu_haswell(export_dir, full_range, x, tmp_path):
    """onnxruntime itself on an AVX2-only CPU model: the shipped tier agrees, the old one not."""
    models = [export_dir / _name("V1", int8=True), full_range["V1"]]
    np.save(tmp_path / "x.npy", x[:2])
    script = tmp_path / "run.py"
    script.write_text(HASWELL)
    args = [str(tmp_path / "x.npy"), str(tmp_path / "y.npz"), *map(str, models)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [QEMU, "-cpu", "Haswell", sys.executable, str(script), *args],
        check=True,
        capture_output=True,
        env=env,
        timeout=900,
    )
    emulated = np.load(tmp_path / "y.npz")
    native = [run(m, x[:2]) for m in models]
    # shipped: integer sums identical; only float rounding of the encoder (~1e-6)
    # can move an activation across a quantisation step
    assert np.abs(emulated["0"] - native[0]).max() < 1e-3
    assert np.abs(emulated["1"] - native[1]).max() > 0.01  # saturated on AVX2
