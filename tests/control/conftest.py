"""Fixtures of the RNC tests (builders in tests/_support/rncstores.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests._support.rncstores import ROIS, SUBJECTS, images, several_subjects_export


@pytest.fixture(scope="session")
def control_export(export_dir, tmp_path_factory) -> Path:
    return several_subjects_export(export_dir, tmp_path_factory.mktemp("rnc") / "export")


@pytest.fixture(scope="session")
def real_store(control_export, tmp_path_factory) -> Path:
    """berg-onnx run over 96 images, subjects 1-3, V1 and FFA-1 (chunks of 16 rows)."""
    from berg_onnx import BERG

    path = tmp_path_factory.mktemp("rnc") / "grid.zarr"
    report = BERG(berg_dir=control_export).run(
        images(96), list(SUBJECTS), list(ROIS), store=path, chunk_size=16, show_progress=False
    )
    assert report.complete
    return path
