"""The page in headless Chromium: what it shows is what was computed, through every
failure path; its pixels are berg_onnx's on every format it accepts; downloads,
keyboard use, accessibility (axe-core) and memory.

Each test opens its own browser context (own Cache Storage), with ?sw=0 where the
service worker is not under test. The page's state is read through its seam,
window.bergPage.state(), and checked against the DOM (menus, cards, map, banner).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest

from berg_onnx import BERG
from berg_onnx.source.manifest import Manifest
from berg_onnx.web.server import make_server, start_in_thread, url_of
from tests._support.webref import WEB, require

pytest.importorskip("skimage", reason="natural photographs come from scikit-image (export extra)")
from PIL import Image  # noqa: E402

from tests._support.corpus import photo, refused, write_corpus  # noqa: E402

IDLE = (
    "window.bergPage && !window.bergPage.state().busy && document.body.dataset.state !== 'starting'"
)
MODEL = "fmri-nsd-fwrf"


# ---------- helpers ----------


class Served:
    """An export folder on loopback HTTP; optionally a file whose download breaks off."""

    def __init__(self, folder: Path, cut: str | None = None) -> None:
        self.folder = folder
        self.server = make_server(folder, port=0, quiet=True)
        if cut:
            self.server.RequestHandlerClass = _cutting(self.server.RequestHandlerClass, folder, cut)
        start_in_thread(self.server)
        self.url = url_of(self.server)
        self.stopped = False

    def stop(self) -> None:
        if not self.stopped:
            self.server.shutdown()
            self.server.server_close()
            self.stopped = True


def _cutting(base, folder: Path, name: str):
    class Cut(base):
        def _send(self, head_only: bool) -> None:
            if not self.path.endswith(f"/export/{name}") or head_only:
                return super()._send(head_only)
            data = (folder / name).read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 3])  # then the server "stops"
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)

    return Cut


def _copy_export(export_dir: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for f in export_dir.iterdir():
        if f.is_file():
            shutil.copy(f, folder / f.name)
    return folder


def _tamper(folder: Path, roi: str, kind: str) -> str:
    entry = Manifest.load(folder / "manifest.json").get(MODEL, 1, roi)
    name = (entry.onnx if kind == "onnx" else entry.metadata).name
    data = bytearray((folder / name).read_bytes())
    data[len(data) // 2] ^= 0x20  # same size, one bit
    (folder / name).write_bytes(bytes(data))
    return name


@pytest.fixture
def context(browser):
    ctx = browser.new_context(accept_downloads=True)
    yield ctx
    ctx.close()


def _open(context, url: str, query: str = "?sw=0", viewport=None):
    page = context.new_page()
    if viewport:
        page.set_viewport_size(viewport)
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.goto(url + query)
    page.wait_for_function(IDLE, timeout=120_000)
    return page


def _idle(page, timeout: int = 300_000) -> dict:
    page.wait_for_function(IDLE, timeout=timeout)
    return page.evaluate("bergPage.state()")


def _files(paths: list[Path]) -> list[dict]:
    return [{"name": p.name, "mimeType": "", "buffer": p.read_bytes()} for p in paths]


def _pick(page, paths: list[Path]) -> dict:
    page.set_input_files("input[type=file]", _files(paths))
    return _idle(page)


def _drop(page, paths: list[Path]) -> None:
    """A real drop event on the drop zone carrying the files."""
    files = [[p.name, base64.b64encode(p.read_bytes()).decode()] for p in paths]
    transfer = page.evaluate_handle(
        """(files) => {
            const dt = new DataTransfer();
            for (const [name, b64] of files) {
                const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
                dt.items.add(new File([bytes], name));
            }
            return dt;
        }""",
        files,
    )
    page.dispatch_event("#drop", "drop", {"dataTransfer": transfer})


_EXPECTED: dict = {}


def _expected(export_dir: Path, roi: str, paths: list[Path]) -> dict[str, np.ndarray]:
    key = (str(export_dir), roi)
    if key not in _EXPECTED:
        berg = BERG(berg_dir=export_dir)
        _EXPECTED[key] = (berg, berg.get_encoding_model(MODEL, 1, {"roi": roi}, "cpu"))
    berg, model = _EXPECTED[key]
    return {p.name: berg.encode(model, [p])[0] for p in paths}


def _assert_consistent(page, export_dir: Path, paths: list[Path]) -> dict:
    """Menus, summary, cards, map and state() all name one model, and every image's
    responses are that model's (berg_onnx on the same files, <= 1e-5)."""
    state = _idle(page)
    roi, subject = state["roi"], state["subject"]
    assert roi is not None, state["error"]
    assert page.input_value("select[name=roi]") == roi
    assert page.input_value("select[name=subject]") == str(subject)
    assert f"sub-{subject:02d} {roi}" in page.text_content("#summary-model")
    assert f"sub-{subject:02d} {roi}" in page.text_content("#brain-title")
    nv = state["nVoxels"]
    assert int(page.get_attribute("#brain", "data-voxels")) == nv  # map drawn on this ROI's mask
    names = page.eval_on_selector_all(".card", "els => els.map(e => e.dataset.name)")
    assert sorted(names) == sorted(i["name"] for i in state["images"])
    want = _expected(export_dir, roi, paths)
    got = {i["name"]: np.array(i["responses"], np.float32) for i in state["images"]}
    assert sorted(got) == sorted(want)
    for name, r in want.items():
        assert got[name].shape == (nv,) == r.shape
        assert np.abs(got[name] - r).max() <= 1e-5, (name, roi)
    return state


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("pagephotos")
    out = []
    for i, (w, h) in enumerate(
        [(320, 240), (200, 260), (227, 227), (400, 300), (150, 150), (90, 60)]
    ):
        path = folder / f"p{i}_{w}x{h}.png"
        Image.fromarray(photo(w, h, i)).save(path)
        out.append(path)
    return out


# ---------- pixels ----------


def test_page_pixels_are_berg_onnx_pixels(context, export_dir, tmp_path) -> None:
    from berg_onnx.inputs.images import load_image

    served = Served(export_dir)
    try:
        page = _open(context, served.url)
        files = write_corpus(tmp_path / "corpus")
        bad = []
        for path in files:
            got = page.evaluate(
                """async (b64) => {
                    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
                    const d = await bergPage.decode(bytes, "x");
                    let s = ""; for (const v of d.data) s += String.fromCharCode(v);
                    return [d.format, d.width, d.height, btoa(s)];
                }""",
                base64.b64encode(path.read_bytes()).decode(),
            )
            want = load_image(path)
            fmt, w, h, b64 = got
            data = np.frombuffer(base64.b64decode(b64), np.uint8)
            if (h, w) != want.shape[1:]:
                bad.append(f"{path.name}: {w}x{h}, expected {want.shape[2]}x{want.shape[1]}")
                continue
            diff = int(np.count_nonzero(data.reshape(want.shape) != want))
            if diff:
                bad.append(f"{path.name} ({fmt}): {diff} of {want.size} values differ")
        assert bad == []
        formats = {p.suffix for p in files}
        assert formats >= {".png", ".jpg", ".webp", ".gif", ".bmp"}
        # And the responses of a few of them, through the page, are berg_onnx's.
        picked = ("gray16", "palette4-trns", "photo-exif6", "photo-alpha-lossless", "rgb8-exif8")
        some = [p for p in files if p.stem in picked]
        _pick(page, some)
        _assert_consistent(page, export_dir, some)
        assert page.errors == []
    finally:
        served.stop()


def test_refused_files_say_why(context, export_dir, tmp_path, photos) -> None:
    served = Served(export_dir)
    try:
        page = _open(context, served.url)
        cases = refused(tmp_path / "bad")
        for path, word in cases.items():
            state = _pick(page, [path])
            assert word in (state["error"] or ""), (path.name, state["error"])
            assert path.name in state["error"]
            assert page.is_visible("#error") and word in page.text_content("#error")
            assert page.evaluate("document.body.dataset.state") == "error"
            assert [i["name"] for i in state["images"]] == []  # nothing half-added
        # a good image after a refused one: the old message goes, the image is encoded
        state = _pick(page, [photos[0]])
        assert state["error"] is None and page.is_hidden("#error")
        _assert_consistent(page, export_dir, [photos[0]])
        # a dropped .txt among images: named, the images still encoded
        _drop(page, [photos[1], next(p for p in cases if p.suffix == ".txt")])
        page.wait_for_function("bergPage.state().images.length === 2")
        state = _idle(page)
        assert "notes.txt" in state["error"]
        _assert_consistent(page, export_dir, photos[:2])
    finally:
        served.stop()


# ---------- one state, one truth ----------


@pytest.mark.parametrize("kind", ["onnx", "npz"])
def test_refused_model_leaves_the_shown_one(context, export_dir, tmp_path, photos, kind) -> None:
    folder = _copy_export(export_dir, tmp_path / "export")
    bad = _tamper(folder, "FFA-1", kind)
    served = Served(folder)
    try:
        page = _open(context, served.url)
        _pick(page, photos[:2])
        _assert_consistent(page, export_dir, photos[:2])
        page.select_option("select[name=roi]", "FFA-1")
        state = _idle(page)
        assert state["roi"] == "V1" and state["ready"]
        assert bad in state["error"] and "sha256" in state["error"] and "FFA-1" in state["error"]
        assert "still showing sub-01 V1" in state["error"]
        _assert_consistent(page, export_dir, photos[:2])  # menus back on V1, V1's numbers
        # the message stays while more images come, and they are V1's too
        _pick(page, photos[2:3])
        state = _idle(page)
        assert state["error"] and bad in state["error"] and page.is_visible("#error")
        _assert_consistent(page, export_dir, photos[:3])
        # another model that is fine: the error goes
        page.select_option("select[name=roi]", "lateral")
        state = _idle(page)
        assert state["roi"] == "lateral" and state["error"] is None and page.is_hidden("#error")
        _assert_consistent(page, export_dir, photos[:3])
        assert page.errors == []
    finally:
        served.stop()


def test_download_broken_off_says_so(context, export_dir, photos) -> None:
    name = Manifest.load(export_dir / "manifest.json").get(MODEL, 1, "lateral").onnx.name
    served = Served(export_dir, cut=name)
    try:
        page = _open(context, served.url)
        _pick(page, photos[:1])
        page.select_option("select[name=roi]", "lateral")
        state = _idle(page)
        assert state["roi"] == "V1"
        assert "broke off" in state["error"] and name in state["error"]
        assert "Failed to fetch" not in state["error"].split("broke off")[0]  # not a bare TypeError
        _assert_consistent(page, export_dir, photos[:1])
    finally:
        served.stop()


def test_server_stopped_before_a_switch(context, export_dir, photos) -> None:
    served = Served(export_dir)
    page = _open(context, served.url)
    _pick(page, photos[:2])
    served.stop()  # gone: the next model cannot be fetched
    page.select_option("select[name=roi]", "FFA-1")
    state = _idle(page)
    assert state["roi"] == "V1" and "cannot fetch" in state["error"]
    assert "is the server running" in state["error"]
    _assert_consistent(page, export_dir, photos[:2])


def test_server_stopped_during_encode(context, export_dir, photos) -> None:
    """The switch to lateral is encoding when the server stops: whatever the timing, the page
    ends on one model, shown as a whole."""
    served = Served(export_dir)
    page = _open(context, served.url)
    _pick(page, photos)
    page.select_option("select[name=roi]", "lateral")
    page.wait_for_function("document.body.dataset.state === 'encoding'", timeout=120_000)
    served.stop()
    state = _assert_consistent(page, export_dir, photos)
    assert state["roi"] == "lateral" and state["error"] is None  # nothing more was needed


def test_switching_mid_encode_ends_on_the_last_choice(context, export_dir, photos) -> None:
    served = Served(export_dir)
    try:
        page = _open(context, served.url)
        _pick(page, photos[:1])
        page.set_input_files("input[type=file]", _files(photos[1:]))  # encoding these...
        page.wait_for_function("document.body.dataset.state === 'encoding'")
        page.select_option("select[name=roi]", "lateral")  # ...switch...
        page.wait_for_function("['loading', 'encoding'].includes(document.body.dataset.state)")
        page.select_option("select[name=roi]", "FFA-1")  # ...and switch again
        state = _assert_consistent(page, export_dir, photos)
        assert state["roi"] == "FFA-1" and state["error"] is None
    finally:
        served.stop()


def test_refused_at_start_keeps_the_error_and_the_images(
    context, export_dir, tmp_path, photos
) -> None:
    folder = _copy_export(export_dir, tmp_path / "export")
    bad = _tamper(folder, "V1", "onnx")
    served = Served(folder)
    try:
        page = _open(context, served.url)
        state = _idle(page)
        assert state["roi"] is None and not state["ready"] and bad in state["error"]
        assert page.evaluate("document.body.dataset.state") == "error"
        state = _pick(page, photos[:2])
        assert (
            bad in state["error"] and "No model is loaded" not in state["error"]
        )  # still the cause
        assert [i["name"] for i in state["images"]] == [p.name for p in photos[:2]]
        assert all(i["responses"] is None for i in state["images"])
        assert page.locator(".card").count() == 0  # nothing shown that no model computed
        page.select_option("select[name=roi]", "FFA-1")  # a model that loads: the waiting images
        state = _assert_consistent(page, export_dir, photos[:2])
        assert state["roi"] == "FFA-1" and state["error"] is None
    finally:
        served.stop()


# ---------- downloads ----------


def test_downloads_match_the_cli(context, export_dir, tmp_path, photos) -> None:
    from berg_onnx.cli import main
    from berg_onnx.utils.outputs import read_listing

    served = Served(export_dir)
    try:
        page = _open(context, served.url)
        _pick(page, photos[:3])
        got = {}
        for button, suffix in [
            ("#save-npy", ".npy"),
            ("#save-paths", ".paths.txt"),
            ("#save-csv", ".csv"),
        ]:
            with page.expect_download() as info:
                page.click(button)
            d = info.value
            assert d.suggested_filename == f"berg-{MODEL}_sub-01_roi-V1{suffix}"
            d.save_as(tmp_path / d.suggested_filename)
            got[suffix] = tmp_path / d.suggested_filename
        out = tmp_path / "cli.npy"
        argv = ["encode", *map(str, photos[:3]), "--subject", "1", "--roi", "V1"]
        assert main([*argv, "--berg-dir", str(export_dir), "--out", str(out), "--quiet"]) == 0
        cli, web = np.load(out), np.load(got[".npy"])
        assert web.dtype == cli.dtype == np.float32 and web.shape == cli.shape
        assert np.abs(web - cli).max() <= 1e-5
        names = [Path(p).name for p in read_listing(tmp_path / "cli.paths.txt")]
        assert read_listing(got[".paths.txt"]) == names
        rows = got[".csv"].read_text().splitlines()
        assert rows[0].startswith("image,v0,v1,") and [r.split(",")[0] for r in rows[1:]] == names
        np.testing.assert_array_equal(np.array(rows[1].split(",")[1:], np.float32), web[0])
    finally:
        served.stop()


# ---------- keyboard, accessibility, layout ----------


def _chooser_on_enter(page, selector: str):
    """The file chooser that Enter on ``selector`` opens. Once in a while a loaded machine's
    Chromium drops the first chooser request (the key's user activation lapses before the
    renderer handles it), so Enter is pressed a second time before the test gives up; a page
    whose Enter never opens the chooser still fails."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for attempt, timeout in enumerate((15_000, 30_000)):
        page.bring_to_front()
        page.focus(selector)
        try:
            with page.expect_file_chooser(timeout=timeout) as chooser:
                page.keyboard.press("Enter")
            return chooser.value
        except PlaywrightTimeout:
            if attempt:
                raise
    raise AssertionError("unreachable")


def test_keyboard_and_axe(context, export_dir, photos, tmp_path) -> None:
    axe = WEB / "node_modules" / "axe-core" / "axe.min.js"
    require(axe.is_file(), "axe-core is missing: run `npm ci` in web/")
    served = Served(export_dir)
    try:
        page = _open(context, served.url)
        # Tab from the top reaches the menus, the drop zone and the file input, in that order.
        order = []
        for _ in range(12):
            page.keyboard.press("Tab")
            order.append(page.evaluate("document.activeElement.name || document.activeElement.id"))
        for a, b in [("subject", "roi"), ("roi", "precision"), ("drop", "files")]:
            assert a in order and b in order and order.index(a) < order.index(b), order
        # Enter on the drop zone opens the file chooser
        page.bring_to_front()
        page.focus("#drop")
        assert page.evaluate("document.activeElement.id") == "drop"
        chooser = _chooser_on_enter(page, "#drop")
        chooser.set_files([str(p) for p in photos[:2]])
        page.wait_for_function("bergPage.state().images.length === 2")
        _idle(page)
        # cards take focus; Enter / Space select one (its map is shown)
        first = photos[0].name
        page.focus(f'.card[data-name="{first}"]')
        page.keyboard.press("Enter")
        assert page.evaluate("bergPage.state().selected") == first
        assert page.get_attribute("#brain", "data-name") == first
        assert page.get_attribute(f'.card[data-name="{first}"]', "aria-pressed") == "true"
        page.focus(f'.card[data-name="{photos[1].name}"]')
        page.keyboard.press(" ")
        assert page.evaluate("bergPage.state().selected") == photos[1].name
        # a ROI from the keyboard
        page.focus("select[name=roi]")
        page.select_option("select[name=roi]", "lateral")
        _idle(page)
        # axe-core, with results and an error banner on screen
        _pick(page, [next(iter(refused(tmp_path / "bad")))])
        assert page.is_visible("#error")
        page.add_script_tag(path=str(axe))
        result = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
        serious = [
            (v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3])
            for v in result["violations"]
            if v["impact"] in ("serious", "critical")
        ]
        assert serious == [], serious
        page.screenshot(path=str(tmp_path / "desktop.png"), full_page=True)
    finally:
        served.stop()


def test_phone_layout(context, export_dir, photos) -> None:
    served = Served(export_dir)
    try:
        page = _open(context, served.url, viewport={"width": 390, "height": 844})
        _pick(page, photos[:3])
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the page scrolls sideways on a phone ({width} px)"
        legend = page.eval_on_selector("#legend-text", "e => e.getBoundingClientRect().width")
        assert legend > 250  # not squeezed into a narrow column
        # tapping a card far down brings the map into view
        last = photos[0].name  # oldest: the bottom card
        page.locator(f'.card[data-name="{last}"]').scroll_into_view_if_needed()
        page.click(f'.card[data-name="{last}"]')
        top = page.eval_on_selector("#brain", "e => e.getBoundingClientRect().top")
        assert 0 <= top < 844 * 0.5, top
        assert page.get_attribute("#brain", "data-name") == last
        # histogram axis titles and the units text stay after the first card
        assert "z-scored" in page.text_content("#results-heading")
    finally:
        served.stop()


# ---------- memory ----------


def _renderer_rss_mb() -> float:
    """Resident memory of the renderer processes of this test's Chromium (descendants of
    this process; other people's browsers on the machine are not counted)."""
    parent, cmdline = {}, {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                stat = (proc / "stat").read_text()
                parent[int(proc.name)] = int(stat.rsplit(")", 1)[1].split()[1])
                cmdline[int(proc.name)] = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
            except (OSError, ValueError, IndexError):
                continue

    def ours(pid: int) -> bool:
        while pid > 1:
            if pid == os.getpid():
                return True
            pid = parent.get(pid, 0)
        return False

    total = 0
    for pid, cmd in cmdline.items():
        if b"--type=renderer" in cmd and b"--top-chrome-webui" not in cmd and ours(pid):
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            total += int(
                next(ln for ln in status.splitlines() if ln.startswith("VmRSS:")).split()[1]
            )
    return total / 1024


#: Photos of 6000 x 4000 in the memory test: 15 in CI (~1 min on 2 cores; the old page kept
#: ~96 MB of RGBA per photo, so 15 already exceed the bound 14-fold); the issue's 50 by hand
#: with BERG_WEB_MEMORY_IMAGES=50.
MEMORY_IMAGES = int(os.environ.get("BERG_WEB_MEMORY_IMAGES", "15"))


def test_memory_is_bounded(browser, export_dir, tmp_path) -> None:
    """Many photos of 6000 x 4000: memory after the last is within 100 MB of after the first."""
    n = MEMORY_IMAGES
    big = tmp_path / "big.jpg"
    small = Image.fromarray(photo(600, 400, 3))
    small.resize((6000, 4000), Image.Resampling.BILINEAR).save(big, quality=80)
    served = Served(export_dir)
    ctx = browser.new_context()
    try:
        page = _open(ctx, served.url)
        cdp = ctx.new_cdp_session(page)

        def measure() -> tuple[float, float]:
            cdp.send("HeapProfiler.collectGarbage")
            heap = page.evaluate("performance.memory.usedJSHeapSize") / 2**20
            return heap, _renderer_rss_mb()

        data = big.read_bytes()
        page.set_input_files(
            "input[type=file]", [{"name": "big-0.jpg", "mimeType": "image/jpeg", "buffer": data}]
        )
        page.wait_for_function(f"bergPage.state().images.length === 1 && {IDLE}", timeout=300_000)
        heap1, rss1 = measure()
        for start in range(1, n, 7):
            batch = [
                {"name": f"big-{i}.jpg", "mimeType": "image/jpeg", "buffer": data}
                for i in range(start, min(start + 7, n))
            ]
            page.set_input_files("input[type=file]", batch)
            page.wait_for_function(
                f"bergPage.state().images.length === {start + len(batch)} && {IDLE}",
                timeout=600_000,
            )
        heap50, rss50 = measure()
        state = page.evaluate("bergPage.state()")
        assert len(state["images"]) == n and state["error"] is None
        assert rss1 > 20  # the renderer was found and measured
        print(f"JS heap {heap1:.0f} -> {heap50:.0f} MB; renderer RSS {rss1:.0f} -> {rss50:.0f} MB")
        (tmp_path / "memory.json").write_text(json.dumps([heap1, heap50, rss1, rss50]))
        assert heap50 - heap1 < 100
        assert rss50 - rss1 < 100
    finally:
        ctx.close()
        served.stop()
