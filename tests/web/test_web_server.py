"""berg_onnx.web: what it serves, with which headers, and what it refuses."""

from __future__ import annotations

import http.client
from pathlib import Path

import pytest

from berg_onnx.cli import main
from berg_onnx.errors import ModelNotFoundError, ResourceError
from berg_onnx.source.manifest import Manifest
from berg_onnx.web.server import HOST, ORT_MODULE, make_server, start_in_thread
from tests._support.webref import WEB, require


@pytest.fixture(scope="module")
def server(export_dir: Path):
    require((WEB / ORT_MODULE).is_file(), "run `npm ci` in web/")
    server = make_server(export_dir, port=0, quiet=True)
    start_in_thread(server)
    yield server
    server.shutdown()
    server.server_close()


def _get(server, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(HOST, server.server_address[1], timeout=30)
    conn.request(method, path)
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, body


def test_listens_on_loopback_only(server) -> None:
    assert server.server_address[0] == "127.0.0.1"


@pytest.mark.parametrize(
    ("path", "mime"),
    [
        ("/", "text/html; charset=utf-8"),
        ("/src/berg.js", "text/javascript; charset=utf-8"),
        ("/page/app.js", "text/javascript; charset=utf-8"),
        ("/sw.js", "text/javascript; charset=utf-8"),
        ("/node_modules/onnxruntime-web/dist/ort-wasm-simd-threaded.wasm", "application/wasm"),
        ("/node_modules/onnxruntime-web/dist/ort-wasm-simd-threaded.mjs", "text/javascript"),
        ("/node_modules/fflate/esm/browser.js", "text/javascript; charset=utf-8"),
        ("/export/manifest.json", "application/json"),
    ],
)
def test_serves_with_isolation_headers_and_mime(server, path: str, mime: str) -> None:
    status, headers, body = _get(server, path)
    assert status == 200 and body
    assert headers["content-type"].startswith(mime)
    assert headers["cross-origin-opener-policy"] == "same-origin"
    assert headers["cross-origin-embedder-policy"] == "require-corp"
    assert int(headers["content-length"]) == len(body)


def test_export_files_are_the_bytes_on_disk(server, export_dir: Path) -> None:
    onnx = sorted(export_dir.glob("*.onnx"))[0]
    status, _, body = _get(server, f"/export/{onnx.name}")
    assert status == 200 and body == onnx.read_bytes()
    status, headers, body = _get(server, f"/export/{onnx.name}", "HEAD")
    assert status == 200 and body == b"" and int(headers["content-length"]) == onnx.stat().st_size


@pytest.mark.parametrize(
    "path",
    [
        "/package.json",  # in web/, but not part of the page
        "/node_modules/protobufjs/package.json",
        "/export/",
        "/export/../manifest.json",
        "/export/%2e%2e/%2e%2e/pyproject.toml",
        "/src/../../pyproject.toml",
        "/export/nope.onnx",
        "/src//berg.js",
    ],
)
def test_refuses_what_it_does_not_serve(server, path: str) -> None:
    status, headers, _ = _get(server, path)
    assert status == 404
    assert headers["cross-origin-embedder-policy"] == "require-corp"  # error pages too


def test_symlinked_export_files_are_served(export_dir: Path, tmp_path: Path) -> None:
    """A Hugging Face cache snapshot is symlinks into blobs/: it must serve as it is."""
    require((WEB / ORT_MODULE).is_file(), "run `npm ci` in web/")
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    for f in export_dir.iterdir():
        (snapshot / f.name).symlink_to(f)
    server = make_server(snapshot, port=0, quiet=True)
    start_in_thread(server)
    try:
        status, _, body = _get(server, "/export/manifest.json")
        assert status == 200 and body == (export_dir / "manifest.json").read_bytes()
        assert _get(server, "/export/../manifest.json")[0] == 404
    finally:
        server.shutdown()
        server.server_close()


def test_only_the_manifest_and_the_files_it_lists_are_served(
    export_dir: Path, tmp_path: Path
) -> None:
    """A file or link left in an export folder (a downloaded one, say) is not served, even
    lexically inside it: only what the page loads is."""
    require((WEB / ORT_MODULE).is_file(), "run `npm ci` in web/")
    export = tmp_path / "export"
    export.mkdir()
    for f in export_dir.iterdir():
        (export / f.name).symlink_to(f)
    outside = tmp_path / "private.txt"
    outside.write_text("not for the page")
    (export / "notes.txt").write_text("beside the models")
    (export / "leak.onnx").symlink_to(outside)
    server = make_server(export, port=0, quiet=True)
    start_in_thread(server)
    try:
        manifest = Manifest.load(export_dir / "manifest.json")
        listed = {f.name for e in manifest.models.values() for f in e.files}
        assert any(name.endswith(".int8.onnx") for name in listed)
        for name in sorted(listed) + ["manifest.json"]:
            status, _, body = _get(server, f"/export/{name}")
            assert status == 200 and body == (export_dir / name).read_bytes(), name
        for name in ("notes.txt", "leak.onnx"):
            assert _get(server, f"/export/{name}")[0] == 404, name
        # a re-export in place is served without a restart: the list is read per request
        (export / "manifest.json").unlink()
        (export / "manifest.json").write_text("{}")
        assert _get(server, f"/export/{sorted(listed)[0]}")[0] == 404
        assert _get(server, "/export/manifest.json")[0] == 200  # the page shows its error
    finally:
        server.shutdown()
        server.server_close()


def test_missing_onnxruntime_web_says_npm_ci(export_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<!doctype html>")
    with pytest.raises(ResourceError, match="npm ci"):
        make_server(export_dir, port=0, web_dir=tmp_path)
    with pytest.raises(ResourceError, match="--web-dir"):
        make_server(export_dir, port=0, web_dir=tmp_path / "nothing")


def test_not_an_export(tmp_path: Path) -> None:
    require((WEB / ORT_MODULE).is_file(), "run `npm ci` in web/")
    with pytest.raises(ModelNotFoundError, match="not an export"):
        make_server(tmp_path, port=0)


def test_cli_errors_are_one_line(tmp_path: Path, capsys) -> None:
    assert main(["web", "--berg-dir", str(tmp_path), "--web-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("berg-onnx: error: ") and err.count("\n") == 1
    with pytest.raises(SystemExit):
        main(["web"])  # --berg-dir is required
