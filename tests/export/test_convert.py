"""convert: verified ONNX + npz + manifest; dynamic batch; idempotent, resumable, atomic."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
import onnxruntime as ort  # noqa: E402

from berg_onnx.errors import InvalidParameterError, ModelNotFoundError  # noqa: E402
from berg_onnx.source.catalog import load_catalog  # noqa: E402
from berg_onnx.source.manifest import Manifest  # noqa: E402
from export import convert as convert_mod  # noqa: E402
from export import layout  # noqa: E402
from export.checkpoint import load_checkpoint, load_pickled_npy  # noqa: E402
from export.convert import convert  # noqa: E402
from export.onnx_export import ExportError, export_onnx, verify  # noqa: E402
from export.reference import build_model  # noqa: E402
from export.samples import photographs  # noqa: E402

SPEC = load_catalog().model("fmri-nsd-fwrf")


def test_manifest_describes_every_file(export_dir, artifacts_info):
    manifest = Manifest.load(export_dir / "manifest.json")
    assert sorted(manifest.models) == [
        "fmri-nsd-fwrf/sub-01/FFA-1",
        "fmri-nsd-fwrf/sub-01/V1",
        "fmri-nsd-fwrf/sub-01/lateral",
        "fmri-nsd-fwrf/sub-02/V1",
    ]
    names = {"manifest.json"}
    for entry in manifest.models.values():
        assert entry.nv == artifacts_info["voxels"][entry.roi]
        assert len(entry.splits) == (2 if entry.roi == "lateral" else 1)
        assert sum(s.nv for s in entry.splits) == entry.nv
        assert entry.max_abs_diff <= 1e-4 and entry.opset == 20
        assert entry.onnx_int8 is not None and 1e-4 < entry.int8_max_abs_diff <= 0.05
        assert {"torch", "onnx", "onnxruntime"} <= entry.versions.keys()
        for f in entry.files:
            assert f.problem(export_dir / f.name) is None
            names.add(f.name)
        assert len(entry.splits[0].source_sha256) == 64
    assert {p.name for p in export_dir.iterdir()} == names  # no external-data or temp files


def test_onnx_graph_has_symbolic_batch_and_runs_at_1_2_37(export_dir):
    path = next(export_dir.glob("*sub-01_roi-lateral.onnx"))
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    for value in (model.graph.input[0], model.graph.output[0]):
        assert value.type.tensor_type.shape.dim[0].dim_param  # symbolic, not a number
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((37, 3, 227, 227), dtype=np.float32)
    full = session.run(None, {"images": x})[0]
    assert full.shape == (37, 61)
    for batch in (1, 2):
        part = session.run(None, {"images": x[:batch]})[0]
        assert part.shape == (batch, 61) and np.abs(part - full[:batch]).max() < 1e-5


def test_npz_round_trips_the_pickled_metadata(artifacts_dir, export_dir):
    original = load_pickled_npy(layout.metadata_path(artifacts_dir / "berg", 1, "lateral"))
    npz = next(export_dir.glob("*sub-01_roi-lateral.npz"))
    with np.load(npz, allow_pickle=False) as data:
        assert sorted(data.files) == sorted(
            f"{group}/{key}" for group in original for key in original[group]
        )
        for group in original:
            for key, value in original[group].items():
                np.testing.assert_array_equal(data[f"{group}/{key}"], value)
                assert data[f"{group}/{key}"].dtype == value.dtype


def test_verification_fails_loudly_on_a_mismatch(artifacts_dir, tmp_path):
    ck = load_checkpoint(layout.checkpoint_paths(artifacts_dir / "berg", 1, "FFA-1", 1)[0])
    good = build_model([(ck.encoder, ck.readout)], gemm=True)
    path = tmp_path / "m.onnx"
    export_onnx(good, path)
    photos = photographs(256, 2)
    assert verify(path, build_model([(ck.encoder, ck.readout)]), photos).max_abs_diff <= 1e-4
    shifted = dict(ck.readout)
    shifted["b"] = ck.readout["b"] + np.float32(3e-4)
    with pytest.raises(ExportError, match="tolerance"):
        verify(path, build_model([(ck.encoder, shifted)]), photos)


@pytest.fixture
def work_copy(artifacts_dir, tmp_path):
    berg, out = tmp_path / "berg", tmp_path / "export"
    shutil.copytree(artifacts_dir / "berg", berg)
    shutil.copytree(artifacts_dir / "export", out)
    return berg, out


def test_convert_is_idempotent_and_repairs_what_changed(work_copy):
    berg, out = work_copy
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.suffix != ".json"}
    convert(berg, out, SPEC, progress=False)  # everything matches: nothing rewritten
    assert stamps == {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.suffix != ".json"}

    victim = next(out.glob("*sub-01_roi-FFA-1.onnx"))
    victim.write_bytes(b"truncated")
    manifest = convert(berg, out, SPEC, subjects=[1], rois=["FFA-1", "V1"], progress=False)
    entry = manifest.get("fmri-nsd-fwrf", 1, "FFA-1")
    assert entry.onnx.problem(victim) is None
    v1 = next(out.glob("*sub-01_roi-V1.onnx"))
    assert v1.stat().st_mtime_ns == stamps[v1.name]  # untouched
    assert len(Manifest.load(out / "manifest.json").models) == 4  # others kept


def test_failed_model_leaves_no_file_and_no_entry(work_copy, monkeypatch):
    berg, out = work_copy
    for p in out.glob("*sub-02_roi-V1.*"):
        p.unlink()

    def broken(*args, **kwargs):
        raise ExportError("simulated mismatch")

    monkeypatch.setattr(convert_mod, "verify", broken)
    with pytest.raises(ExportError, match="simulated"):
        convert(berg, out, SPEC, subjects=[2], rois=["V1"], progress=False)
    assert not list(out.glob("*sub-02_roi-V1.*"))
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left
    manifest = json.loads((out / "manifest.json").read_text())
    assert "fmri-nsd-fwrf/sub-02/V1" not in manifest["models"]


def test_clear_errors_for_bad_directories(tmp_path, artifacts_dir):
    with pytest.raises(InvalidParameterError, match="not a BERG directory"):
        convert(tmp_path, tmp_path / "out", SPEC, progress=False)
    with pytest.raises(ModelNotFoundError, match="ROI PPA"):
        convert(artifacts_dir / "berg", tmp_path / "out", SPEC, rois=["PPA"], progress=False)
    with pytest.raises(ModelNotFoundError, match="no subject 1 ROI PPA"):
        convert(artifacts_dir / "berg", tmp_path / "out", SPEC, [1], ["V1", "PPA"], progress=False)
    with pytest.raises(ModelNotFoundError, match="subject 5"):
        convert(artifacts_dir / "berg", tmp_path / "out", SPEC, subjects=[5], progress=False)
    with pytest.raises(ModelNotFoundError, match="valid ROIs"):
        convert(artifacts_dir / "berg", tmp_path / "out", SPEC, rois=["V99"], progress=False)
    run = subprocess.run(
        [sys.executable, "-m", "export", "convert", "--berg-dir", str(tmp_path), "--out", "x"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2 and "not a BERG directory" in run.stderr
    assert "Traceback" not in run.stderr


def test_golden_export_is_verified(golden_export):
    manifest = Manifest.load(golden_export / "manifest.json")
    assert {e.roi: e.nv for e in manifest.models.values()} == {"V1": 40, "lateral": 61}
    assert all(e.max_abs_diff <= 1e-4 for e in manifest.models.values())
