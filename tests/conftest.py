"""Shared fixtures: test artifacts built once per session (or handed in by CI)."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
sys.path.insert(0, str(TESTS.parent))

import artifacts as _artifacts  # noqa: E402

HAS_TORCH = importlib.util.find_spec("torch") is not None


@pytest.fixture(scope="session")
def artifacts_dir(tmp_path_factory) -> Path:
    """OUT of tests/artifacts.py: from $BERG_TEST_ARTIFACTS, or built now with torch."""
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
