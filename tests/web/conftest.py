"""Page-test fixtures: one headless Chromium per module (Debian's, never a downloaded one)."""

from __future__ import annotations

import pytest

from tests._support.webref import CHROMIUM, CHROMIUM_ARGS, WEB, require


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (python)")
    require(CHROMIUM.is_file(), f"{CHROMIUM} is missing (apt-get install chromium)")
    require((WEB / "node_modules" / "onnxruntime-web").is_dir(), "run `npm ci` in web/")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        yield browser
        browser.close()
