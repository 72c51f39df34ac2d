"""Choosing the engine, without a cluster: the extra stays optional and bad values fail early."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from berg_onnx.engines import RayOptions, engine_from_cli, select_engine
from berg_onnx.engines.ray import model_groups, plan_layout
from berg_onnx.errors import InvalidParameterError, ResourceError

pytest.importorskip("zarr")


def python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_import_berg_onnx_never_imports_ray():
    proc = python(
        "import sys, berg_onnx, berg_onnx.cli, berg_onnx.api, berg_onnx.experiment, "
        "berg_onnx.engines\n"
        "berg_onnx.cli.build_parser()\n"
        "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_missing_ray_is_one_line_naming_the_extra(export_dir, tmp_path):
    out = tmp_path / "grid.zarr"
    images = tmp_path / "x.npy"
    np.save(images, np.zeros((2, 3, 8, 8), dtype=np.uint8))
    proc = python(
        "import sys; sys.modules['ray'] = None  # as if the [ray] extra were not installed\n"
        "from berg_onnx.cli import main\n"
        f"sys.exit(main(['run', {str(images)!r}, '--subjects', '1', '--rois', 'V1', "
        f"'--out', {str(out)!r}, '--berg-dir', {str(export_dir)!r}, '--engine', 'ray']))"
    )
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and 'pip install "berg-onnx[ray]"' in lines[0], proc.stderr
    assert not out.exists(), "the store must not be touched when the engine cannot run"


@pytest.mark.parametrize("engine", ["spark", "", None, 3, "Ray"])
def test_unknown_engine_is_refused(engine):
    with pytest.raises(InvalidParameterError, match="engine must be one of local, ray"):
        select_engine(engine)


def test_local_engine_selects_the_local_runner():
    from berg_onnx.engines import run_local

    assert select_engine("local") is run_local


def test_ray_address_without_engine_ray_is_refused():
    with pytest.raises(InvalidParameterError, match="need --engine ray"):
        engine_from_cli("local", "127.0.0.1:6379", None)
    assert engine_from_cli("ray", "h:1", 3) == RayOptions(address="h:1", actors=3)
    assert engine_from_cli("local", None, None) == "local"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"actors": 0},
        {"models_per_actor": -1},
        {"cpus_per_actor": 1.5},
        {"gpus_per_actor": 2},
        {"gpus_per_actor": "1"},
        {"preprocess_cpus": 0},
        {"preprocess_cpus": True},
    ],
)
def test_bad_ray_options_are_refused(kwargs):
    with pytest.raises(InvalidParameterError):
        RayOptions(**kwargs)


class _Plan:
    def __init__(self, subject: int, roi: str) -> None:
        self.subject, self.roi = subject, roi


def test_model_groups_by_subject_or_by_size():
    plans = tuple(_Plan(s, r) for s in (1, 2) for r in ("V1", "FFA-1", "lateral"))
    by_subject = model_groups(plans, None)
    assert [[(p.subject, p.roi) for p in g] for g in by_subject] == [
        [(1, "V1"), (1, "FFA-1"), (1, "lateral")],
        [(2, "V1"), (2, "FFA-1"), (2, "lateral")],
    ]
    assert [len(g) for g in model_groups(plans, 4)] == [4, 2]
    assert [p for g in model_groups(plans, 4) for p in g] == list(plans)


def test_layout_fuses_on_cpu_and_keeps_preprocessing_apart_beside_gpus():
    cpu = plan_layout({"CPU": 16.0}, RayOptions(), "auto")
    assert (cpu.actors, cpu.gpus_per_actor, cpu.preprocess_cpus, cpu.device) == (16, 0, 1, "cpu")
    gpu = plan_layout({"CPU": 16.0, "GPU": 2.0}, RayOptions(), "auto")
    assert (gpu.actors, gpu.gpus_per_actor, gpu.preprocess_cpus, gpu.device) == (2, 1, 1, "auto")
    apart = plan_layout({"CPU": 2.0}, RayOptions(preprocess_cpus=0.5), "cpu")
    assert (apart.actors, apart.preprocess_cpus) == (1, 0.5)
    assert plan_layout({"CPU": 16.0}, RayOptions(cpus_per_actor=4), "cpu").actors == 4


def test_layout_refuses_what_the_cluster_cannot_run():
    with pytest.raises(ResourceError, match="has 0 GPUs"):
        plan_layout({"CPU": 4.0}, RayOptions(), "cuda")
    with pytest.raises(ResourceError, match="no room for a preprocessing task"):
        plan_layout({"CPU": 2.0}, RayOptions(actors=2, preprocess_cpus=0.5), "cpu")
    with pytest.raises(InvalidParameterError, match="gpus_per_actor > 0"):
        plan_layout({"CPU": 2.0, "GPU": 1.0}, RayOptions(gpus_per_actor=0), "cuda")
