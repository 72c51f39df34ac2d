"""An experiment whose models come from a Hub repo (loopback server): the store records
the repo and revision, and holds the same values as one run on the local export."""

from __future__ import annotations

import numpy as np
import pytest

from berg_onnx import BERG
from tests._support.hubserver import HubServer, client_settings

zarr = pytest.importorskip("zarr")
publish_mod = pytest.importorskip("export.publish")  # publish runs from a checkout

REPO_ID = "berg-test/fmri-nsd-fwrf-onnx"


def test_grid_from_the_hub_records_repo_and_revision(export_dir, artifacts_dir, tmp_path):
    images = np.load(artifacts_dir / "reference" / "photos_256_uint8.npy")[:5]
    local = tmp_path / "local.zarr"
    BERG(berg_dir=export_dir).run(images, subjects=1, rois="all", store=local, show_progress=False)
    with HubServer() as server, client_settings():
        commit = publish_mod.publish(export_dir, REPO_ID, endpoint=server.endpoint)
        berg = BERG(
            repo_id=REPO_ID, revision=commit, cache_dir=tmp_path / "cache", endpoint=server.endpoint
        )
        report = berg.run(
            images, subjects=1, rois="all", store=tmp_path / "hub.zarr", show_progress=False
        )
    assert report.complete
    hub, ref = zarr.open_group(tmp_path / "hub.zarr", mode="r"), zarr.open_group(local, mode="r")
    assert hub.attrs["source"] == {"repo_id": REPO_ID, "revision": commit}
    for roi in ("V1", "FFA-1", "lateral"):
        assert np.array_equal(hub[f"sub-01/{roi}"][:], ref[f"sub-01/{roi}"][:])
        assert (
            hub[f"sub-01/{roi}"].attrs["model_files"] == ref[f"sub-01/{roi}"].attrs["model_files"]
        )
