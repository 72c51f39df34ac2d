"""Shared fixtures: test artifacts built once per session (or handed in by CI)."""

from __future__ import annotations

import functools
import importlib.util
import json
import os
from pathlib import Path

import pytest

from tests._support import artifacts as _artifacts

HAS_TORCH = importlib.util.find_spec("torch") is not None


@pytest.fixture(scope="session")
def artifacts_dir(tmp_path_factory) -> Path:
    """OUT of tests/_support/artifacts.py: from $BERG_TEST_ARTIFACTS, or built now with torch."""
    given = os.environ.get("BERG_TEST_ARTIFACTS")
    if given:
        path = Path(given)
        if not (path / "artifacts.json").is_file():
            pytest.fail(f"BERG_TEST_ARTIFACTS={given} holds no artifacts.json")
        return path
    if not HAS_TORCH:
        pytest.skip("needs torch to build artifacts, or BERG_TEST_ARTIFACTS")
    return _artifacts.build(tmp_path_factory.mktemp("artifacts"))


@pytest.fixture(scope="session")
def artifacts_info(artifacts_dir) -> dict:
    return json.loads((artifacts_dir / "artifacts.json").read_text())


@pytest.fixture(scope="session")
def export_dir(artifacts_dir) -> Path:
    return artifacts_dir / "export"


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    if not (_artifacts.GOLDEN / "berg_dir").is_dir():  # never a skip: tests/golden is committed
        pytest.fail(
            f"golden files not found at {_artifacts.GOLDEN} (BERG_GOLDEN_DIR, ../shared/golden "
            "or the repository's tests/golden)"
        )
    return _artifacts.GOLDEN


@pytest.fixture(scope="session")
def golden_export(artifacts_dir, golden_dir) -> Path:
    path = artifacts_dir / "golden_export"
    if not path.is_dir():
        pytest.skip("artifacts were built without the golden files")
    return path


# -- fixtures many modules share ----------------------------------------------------------------
# A module tunes one by a module-level constant the fixture reads (pytest's documented
# "request.module" pattern), so every test gets what its module's own copy gave it.


@pytest.fixture(scope="module")
def berg(export_dir):
    """BERG over the synthetic test export, one per module (its model cache stays local)."""
    from berg_onnx import BERG

    return BERG(berg_dir=export_dir)


@pytest.fixture(scope="module")
def model(berg):
    """Subject 1's V1 model on the CPU."""
    return berg.get_encoding_model("fmri-nsd-fwrf", 1, {"roi": "V1"}, device="cpu")


@pytest.fixture(scope="module")
def photos(request, artifacts_dir):
    """The natural reference photographs, (N, 3, 256, 256) uint8, loaded afresh per module:
    all 12, or the first ``N_PHOTOS`` where the module sets that."""
    import numpy as np

    images = np.load(artifacts_dir / "reference" / "photos_256_uint8.npy")
    return images[: getattr(request.module, "N_PHOTOS", None)]


@pytest.fixture(scope="module")
def meta(berg) -> dict:
    """Subject 1's metadata by ROI, for V1 and lateral (a split ROI)."""
    return {roi: berg.get_model_metadata("fmri-nsd-fwrf", 1, roi) for roi in ("V1", "lateral")}


@pytest.fixture
def cli(capsys):
    """``cli(*args)``: berg-onnx ARGS through ``berg_onnx.cli.main`` in this process, output
    captured; a ``CompletedProcess``. Subprocesses: ``tests._support.cli.cli_process``."""
    from tests._support.cli import call_main

    return functools.partial(call_main, capsys)
