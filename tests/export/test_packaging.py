"""The wheels: only berg_onnx (+ models.json, model cards) inside; two flavours, never both
onnxruntimes."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CARDS = REPO / "berg_onnx" / "source" / "cards"
pytest.importorskip("hatchling")


def _run_build(out: Path, flavour: str | None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("BERG_ONNX_FLAVOUR", None)
    if flavour:
        env["BERG_ONNX_FLAVOUR"] = flavour
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--outdir",
            str(out),
            str(REPO),
        ],
        capture_output=True,
        text=True,
        env=env,
    )


def _build(tmp_path: Path, flavour: str | None) -> Path:
    out = tmp_path / (flavour or "default")
    run = _run_build(out, flavour)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    (wheel,) = out.glob("*.whl")
    return wheel


def _metadata(wheel: Path):
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        return Parser().parsestr(z.read(name).decode()), z.namelist()


@pytest.mark.parametrize(
    "flavour, dist, runtime, other",
    [
        (None, "berg-onnx", "onnxruntime<", "onnxruntime-gpu"),
        ("gpu", "berg-onnx-gpu", "onnxruntime-gpu<", "onnxruntime<"),
    ],
)
def test_wheel_contents_and_flavour(tmp_path, flavour, dist, runtime, other):
    meta, names = _metadata(_build(tmp_path, flavour))
    assert meta["Name"] == dist
    assert meta["Requires-Python"] == ">=3.10"
    base = [r for r in meta.get_all("Requires-Dist") if "extra ==" not in r]
    assert any(r.startswith(runtime) for r in base)
    assert not any(r.startswith(other) for r in base)  # never both flavours
    export_torch = [r for r in meta.get_all("Requires-Dist") if r.startswith("torch")]
    assert export_torch and "<=2.13.0" in export_torch[0]  # never pulls a newer torch
    top = {n.split("/")[0] for n in names}
    assert top == {"berg_onnx", f"{dist.replace('-', '_')}-0.1.0.dist-info"}
    assert "berg_onnx/models.json" in names and "berg_onnx/cli/__init__.py" in names
    # the model cards describe() prints are data inside the wheel, every one of them
    cards = sorted(p.relative_to(REPO).as_posix() for p in CARDS.glob("*.json"))
    assert cards and set(cards) <= set(names) and f"{CARDS.relative_to(REPO)}/__init__.py" in names
    with zipfile.ZipFile(next((tmp_path / (flavour or "default")).glob("*.whl"))) as z:
        entry = z.read(f"{dist.replace('-', '_')}-0.1.0.dist-info/entry_points.txt").decode()
    assert "berg-onnx = berg_onnx.cli:main" in entry


def test_unknown_flavour_is_refused(tmp_path):
    run = _run_build(tmp_path, "tpu")
    assert run.returncode != 0 and "BERG_ONNX_FLAVOUR" in run.stdout + run.stderr
