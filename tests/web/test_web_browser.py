"""The page in headless Chromium (Debian's /usr/bin/chromium, driven by Playwright;
never a downloaded browser), served by berg_onnx.web from the test export.

Images are picked and dropped like a user would; the responses the page shows
are compared with berg_onnx on the same files.
"""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

import numpy as np
import pytest

from berg_onnx import BERG
from berg_onnx.source.manifest import Manifest
from berg_onnx.web.server import make_server, start_in_thread, url_of

pytest.importorskip("skimage", reason="natural photographs come from scikit-image (export extra)")
from PIL import Image  # noqa: E402

from export.samples import photo_paths  # noqa: E402

READY = "['ready', 'error'].includes(document.body.dataset.state)"


def _serve(folder: Path):
    server = make_server(folder, port=0, quiet=True)
    start_in_thread(server)
    return server


@pytest.fixture(scope="module")
def page_url(export_dir: Path):
    server = _serve(export_dir)
    yield url_of(server)
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def photo_files(tmp_path_factory) -> list[Path]:
    """Natural photographs as PNG (lossless: the browser decodes the same pixels as PIL)."""
    folder = tmp_path_factory.mktemp("photos")
    sizes = [(512, 512), (300, 420), (227, 227), (640, 360)]
    out = []
    for i, (w, h) in enumerate(sizes):
        with Image.open(photo_paths()[i]) as im:
            path = folder / f"photo{i}_{w}x{h}.png"
            im.convert("RGB").resize((w, h), Image.Resampling.BICUBIC).save(path)
            out.append(path)
    return out


def _open(browser, url: str):
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.wait_for_function(READY, timeout=120_000)
    return page, errors


def _shown(page) -> dict[str, np.ndarray]:
    """Each image's responses, by name, as the page holds them (window.bergPage.state())."""
    state = page.evaluate("bergPage.state()")
    shown = {}
    for image in state["images"]:
        assert image["ms"] > 0
        shown[image["name"]] = np.array(image["responses"], dtype=np.float32)
    ms = page.eval_on_selector_all(".card", "els => els.map(e => Number(e.dataset.ms))")
    assert len(ms) == len(shown) and all(m > 0 for m in ms)
    return shown


def _expected(export_dir: Path, roi: str, paths: list[Path]) -> dict[str, np.ndarray]:
    berg = BERG(berg_dir=export_dir)
    model = berg.get_encoding_model("fmri-nsd-fwrf", 1, {"roi": roi}, "cpu")
    return {p.name: berg.encode(model, [p])[0] for p in paths}


def _drop(page, path: Path) -> None:
    """A real drop event on the drop zone, carrying the file."""
    data = base64.b64encode(path.read_bytes()).decode()
    transfer = page.evaluate_handle(
        """([name, b64]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], name, { type: "image/png" }));
            return dt;
        }""",
        [path.name, data],
    )
    page.dispatch_event("#drop", "drop", {"dataTransfer": transfer})


def _wait_cards(page, n: int) -> None:
    page.wait_for_function(
        f"document.querySelectorAll('.card').length === {n} && {READY}", timeout=300_000
    )


def test_page_shows_berg_onnx_responses(browser, page_url, export_dir, photo_files) -> None:
    page, errors = _open(browser, page_url)
    assert page.evaluate("document.body.dataset.state") == "ready", page.text_content("#error")
    assert page.evaluate("crossOriginIsolated") is True  # COOP/COEP: threads available
    assert "cross-origin isolated: yes" in page.text_content("#env")
    subjects = page.eval_on_selector_all("#subject option", "os => os.map(o => o.value)")
    assert subjects == ["1", "2"]
    rois = page.eval_on_selector_all("#roi option", "os => os.map(o => o.value)")
    assert set(rois) == {"V1", "FFA-1", "lateral"} and page.input_value("#roi") == "V1"

    page.set_input_files("#files", [str(p) for p in photo_files[:3]])  # picked
    _wait_cards(page, 3)
    _drop(page, photo_files[3])  # dropped
    _wait_cards(page, 4)
    shown = _shown(page)
    expected = _expected(export_dir, "V1", photo_files)
    assert sorted(shown) == sorted(expected)
    for name, want in expected.items():
        assert shown[name].shape == want.shape
        assert np.abs(shown[name] - want).max() <= 1e-5, name
    # The visible summary numbers are those responses.
    mean = page.eval_on_selector(
        f'.card[data-name="{photo_files[0].name}"] .mean', "e => e.textContent"
    )
    assert float(mean) == pytest.approx(float(expected[photo_files[0].name].mean()), abs=1e-4)
    assert "ms per image" in page.text_content("#summary")
    # The response map: slices of the ROI's mask volume, one coloured cell per voxel.
    assert page.locator("#slices canvas").count() >= 1
    assert not page.locator("#brain").is_hidden()

    page.select_option("#roi", "lateral")  # another ROI: every image is encoded again
    page.wait_for_function(
        "document.querySelector('#summary').textContent.includes('lateral')", timeout=300_000
    )
    _wait_cards(page, 4)
    shown = _shown(page)
    for name, want in _expected(export_dir, "lateral", photo_files).items():
        assert np.abs(shown[name] - want).max() <= 1e-5, name
    assert errors == []
    page.close()


def test_tampered_model_refused_in_browser(browser, export_dir, tmp_path) -> None:
    for f in export_dir.iterdir():
        if f.is_file():
            shutil.copy(f, tmp_path / f.name)
    name = Manifest.load(tmp_path / "manifest.json").get("fmri-nsd-fwrf", 1, "V1").onnx.name
    data = bytearray((tmp_path / name).read_bytes())
    data[len(data) // 3] ^= 0x40
    (tmp_path / name).write_bytes(bytes(data))
    server = _serve(tmp_path)
    try:
        page, _ = _open(browser, url_of(server))
        assert page.evaluate("document.body.dataset.state") == "error"
        message = page.text_content("#error")
        assert "ModelLoadError" in message and name in message
        assert "sha256" in message and "refusing" in message
        page.close()
    finally:
        server.shutdown()
        server.server_close()


def test_second_visit_works_without_the_export(browser, page_url, photo_files) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(page_url)
        page.wait_for_function(READY, timeout=120_000)
        assert page.evaluate("document.body.dataset.state") == "ready"
        page.close()
        # Second visit: the export's files are unreachable; Cache Storage has them (verified).
        blocked: list[str] = []

        def refuse(route):
            blocked.append(route.request.url)
            route.abort()

        context.route("**/export/**", refuse)
        page = context.new_page()
        page.goto(page_url)
        page.wait_for_function(READY, timeout=120_000)
        assert page.evaluate("document.body.dataset.state") == "ready", page.text_content("#error")
        assert any(u.endswith("manifest.json") for u in blocked)  # it did try the network
        page.set_input_files("#files", str(photo_files[0]))
        _wait_cards(page, 1)
        page.close()
    finally:
        context.close()


def test_second_visit_works_without_the_server(browser, export_dir, photo_files) -> None:
    """The service worker keeps the page; berg.js's cache keeps the verified model."""
    server = _serve(export_dir)
    url = url_of(server)
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(url)
        page.wait_for_function(READY, timeout=120_000)
        assert page.evaluate("document.body.dataset.state") == "ready"
        installed = page.evaluate(  # the worker is active once it has precached the page
            """Promise.race([navigator.serviceWorker.ready.then((r) => !!r.active),
                new Promise((resolve) => setTimeout(() => resolve(false), 60000))])"""
        )
        assert installed, "no active service worker"
        page.close()
        server.shutdown()
        server.server_close()  # nothing listens on the port any more
        page = context.new_page()
        page.goto(url)
        page.wait_for_function(READY, timeout=120_000)
        assert page.evaluate("document.body.dataset.state") == "ready", page.text_content("#error")
        assert page.evaluate("crossOriginIsolated") is True  # cached with its headers
        page.set_input_files("#files", str(photo_files[1]))
        _wait_cards(page, 1)
        page.close()
    finally:
        context.close()
        server.server_close()
