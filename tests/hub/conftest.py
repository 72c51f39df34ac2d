"""Fixtures of the Hub tests."""

from __future__ import annotations

import pytest

from tests._support.hubserver import HubServer, client_settings


@pytest.fixture(scope="module")
def hub(request, export_dir):
    """A HubServer with the test export published to the module's ``REPO_ID``, and this
    process's Hub client pointed at it; yields (server, commit)."""
    publish_mod = pytest.importorskip("export.publish")  # publish runs from a checkout
    with HubServer() as server, client_settings():
        commit = publish_mod.publish(export_dir, request.module.REPO_ID, endpoint=server.endpoint)
        yield server, commit
