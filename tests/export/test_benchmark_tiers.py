"""The benchmark reports a model without an int8 tier (no scheme met the tolerance), with
the closest figure, and goes on (no crash)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

pytest.importorskip("torch")

from benchmarks.__main__ import int8_table, int8_tier  # noqa: E402
from berg_onnx import BERG  # noqa: E402
from berg_onnx.source.manifest import Manifest  # noqa: E402


@pytest.fixture
def export_copy(artifacts_dir, tmp_path):
    shutil.copytree(artifacts_dir / "export", tmp_path / "export")
    return artifacts_dir / "berg", tmp_path / "export"


def test_a_failing_int8_tier_is_reported_with_its_figure(export_copy, artifacts_dir):
    berg_dir, export_dir = export_copy
    failed = int8_tier(berg_dir, export_dir, "V1", tolerance=1e-9)  # impossible
    assert failed["status"] == "absent" and failed["tolerance"] == 1e-9
    assert 1e-9 < failed["max_abs_diff"] < 0.05
    assert "no int8 scheme met the tolerance" in failed["error"]
    assert len(failed["trials"]) >= 2 and not any(t["ok"] for t in failed["trials"])
    # the fp32 model is untouched and still runs; no stale int8 tier is left behind
    entry = Manifest.load(export_dir / "manifest.json").models["fmri-nsd-fwrf/sub-01/V1"]
    assert entry.onnx_int8 is None and entry.int8_scheme is None
    assert entry.int8_absent_reason == failed["error"]
    assert not (export_dir / "fmri-nsd-fwrf_sub-01_roi-V1.int8.onnx").exists()
    berg = BERG(berg_dir=export_dir, threads=1)
    model = berg.get_encoding_model("fmri-nsd-fwrf", 1, {"roi": "V1"})
    photos = np.load(artifacts_dir / "reference" / "photos_256_uint8.npy")[:2]
    expected = np.load(artifacts_dir / "reference" / "sub-01_V1.npy")[:2]
    assert np.abs(berg.encode(model, photos, show_progress=False) - expected).max() < 1e-4
    # the report shows the failure next to a tier that passed
    ok = int8_tier(berg_dir, export_dir, "FFA-1")
    assert ok["status"] == "ok" and ok["max_abs_diff"] <= ok["tolerance"]
    results = {
        "machine": {"cpu_class": "x86-avx2"},
        "throughput": {
            "V1": {"int8": failed, "berg_e2e_images_per_s": 10.0},
            "FFA-1": {
                "int8": {**ok, "e2e_images_per_s": 15.0, "max_abs_diff_vs_fp32": 0.004}
                | {"min_voxel_corr_vs_fp32": 0.9999, "median_voxel_corr_vs_fp32": 1.0},
                "berg_e2e_images_per_s": 10.0,
            },
        },
    }
    table = "\n".join(int8_table(results))
    assert f"| V1 | ABSENT: {failed['max_abs_diff']:.3g} > tolerance 1e-09" in table
    assert f"| FFA-1 | {ok['scheme']} | 15.0 | 1.50x |" in table
    # and a rerun at the normal tolerance restores the tier
    again = int8_tier(berg_dir, export_dir, "V1")
    assert again["status"] == "ok"
    assert Manifest.load(export_dir / "manifest.json").models["fmri-nsd-fwrf/sub-01/V1"].onnx_int8
