"""Serve the browser page (web/) and one export on 127.0.0.1, cross-origin isolated.

Why a server of our own: the page runs the models with onnxruntime-web, whose
threads need SharedArrayBuffer, which browsers only give a cross-origin
isolated page (``Cross-Origin-Opener-Policy: same-origin`` and
``Cross-Origin-Embedder-Policy: require-corp`` on every response), and
WebAssembly must be served as ``application/wasm``. ``python -m http.server``
does neither. It listens on loopback only: the page is for the person at this
machine, not a network service.

Where the page comes from: a checkout's ``web/`` folder after ``npm ci`` there
(``web/node_modules`` holds onnxruntime-web, whose threaded WebAssembly file is
14 MB). The wheel does not ship it, to keep the base install small; from a
wheel, pass ``--web-dir`` to a checkout's ``web/``.

URL layout: ``/`` is the page, ``/export/<file>`` the export's files:
manifest.json and the .onnx and .npz files it lists. Only those, and the two npm
packages the page imports, are served; anything else is 404 (another file or link
left in the export folder too).
"""

from __future__ import annotations

import argparse
import shutil
import threading
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from berg_onnx.errors import BERGError, ModelNotFoundError, ResourceError
from berg_onnx.source.manifest import Manifest

HOST = "127.0.0.1"
DEFAULT_PORT = 8765
EXPORT_PREFIX = "/export/"
#: What the page (web/src/files.js) reads first from an export.
MANIFEST_NAME = "manifest.json"
#: Files under web/ the page needs; nothing else of the checkout is served.
WEB_PREFIXES = (
    "index.html",
    "sw.js",
    "src/",
    "page/",
    "node_modules/onnxruntime-web/dist/",
    "node_modules/fflate/esm/",
)
#: The file whose absence means `npm ci` was not run.
ORT_MODULE = "node_modules/onnxruntime-web/dist/ort.wasm.min.mjs"
MIME = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".wasm": "application/wasm",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".onnx": "application/octet-stream",
    ".npz": "application/octet-stream",
}
#: Sent with every response: cross-origin isolation (threads) and no stale page.
HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


def default_web_dir() -> Path:
    """web/ of the checkout this package was imported from."""
    return Path(__file__).resolve().parents[2] / "web"


def check_web_dir(web_dir: Path) -> Path:
    """``web_dir`` if it holds the page and onnxruntime-web, else a ResourceError saying why."""
    web_dir = Path(web_dir).resolve()
    if not (web_dir / "index.html").is_file():
        raise ResourceError(
            f"no berg-onnx web page at {web_dir} (index.html missing). The page ships with a "
            "checkout of berg-onnx, not with the wheel: pass --web-dir CHECKOUT/web."
        )
    if not (web_dir / ORT_MODULE).is_file():
        raise ResourceError(
            f"onnxruntime-web is missing from {web_dir / 'node_modules'}; run `npm ci` in "
            f"{web_dir} (Node 20+) to install it."
        )
    return web_dir


def check_export_dir(berg_dir: Path) -> Path:
    """``berg_dir`` if it is an export with at least one model."""
    berg_dir = Path(berg_dir).resolve()
    manifest = Manifest.load(berg_dir / MANIFEST_NAME)
    if not manifest.models:
        raise ModelNotFoundError(
            f"{berg_dir} is not an export (no manifest.json with models); give the folder "
            "written by `python -m export convert`."
        )
    return berg_dir


@dataclass(frozen=True)
class Roots:
    web: Path
    export: Path

    def export_files(self) -> frozenset[str]:
        """manifest.json and the files it lists: all the page loads from an export, and
        all that is served of it (not a notes file or a link someone left beside them).
        Read at each request, so a re-export in place is served without a restart."""
        try:
            manifest = Manifest.load(self.export / MANIFEST_NAME)
        except BERGError:
            return frozenset({MANIFEST_NAME})  # the page then shows the manifest's error
        listed = (f.name for entry in manifest.models.values() for f in entry.files)
        return frozenset({MANIFEST_NAME, *listed})

    def resolve(self, url_path: str) -> Path | None:
        """The file a URL path names, or None when it is not one we serve."""
        path = unquote(urlsplit(url_path).path)
        if path == "/":
            path = "/index.html"
        if path.startswith(EXPORT_PREFIX):
            root, rel = self.export, path[len(EXPORT_PREFIX) :]
            if rel not in self.export_files():
                return None
        else:
            root, rel = self.web, path.lstrip("/")
            if not rel.startswith(WEB_PREFIXES):
                return None
        if not rel or "\\" in rel or any(part in ("", ".", "..") for part in rel.split("/")):
            return None
        # Lexically inside the root (no "..", checked above); symlinks placed there are
        # followed, as a Hugging Face cache snapshot or a pnpm node_modules has them.
        candidate = root / rel
        return candidate if candidate.is_file() else None


def _handler(roots: Roots, quiet: bool) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "berg-onnx-web"

        def _send(self, head_only: bool) -> None:
            path = roots.resolve(self.path)
            if path is None:
                self.send_error(HTTPStatus.NOT_FOUND)
                return
            size = path.stat().st_size
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", MIME.get(path.suffix, "application/octet-stream"))
            self.send_header("Content-Length", str(size))
            self.end_headers()
            if not head_only:
                with open(path, "rb") as f:
                    shutil.copyfileobj(f, self.wfile)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            try:
                self._send(head_only=False)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the browser went away mid-file

        def do_HEAD(self) -> None:  # noqa: N802
            self._send(head_only=True)

        def end_headers(self) -> None:
            for name, value in HEADERS.items():  # every response, error pages too
                self.send_header(name, value)
            super().end_headers()

        def log_message(self, format: str, *args) -> None:  # noqa: A002
            if not quiet:
                super().log_message(format, *args)

    return Handler


def make_server(
    berg_dir: Path, port: int = DEFAULT_PORT, web_dir: Path | None = None, quiet: bool = False
) -> ThreadingHTTPServer:
    """A server (not yet serving) for the page and ``berg_dir`` on 127.0.0.1:``port``.

    ``port=0`` picks a free port (``server.server_address[1]``).
    """
    roots = Roots(
        web=check_web_dir(web_dir or default_web_dir()), export=check_export_dir(berg_dir)
    )
    try:
        server = ThreadingHTTPServer((HOST, port), _handler(roots, quiet))
    except OSError as e:
        raise ResourceError(
            f"cannot listen on {HOST}:{port}: {e.strerror or e}; pick another --port"
        ) from None
    server.daemon_threads = True
    return server


def url_of(server: ThreadingHTTPServer) -> str:
    return f"http://{HOST}:{server.server_address[1]}/"


def start_in_thread(server: ThreadingHTTPServer) -> threading.Thread:
    """Serve in a daemon thread (tests, notebooks); stop with server.shutdown()."""
    thread = threading.Thread(target=server.serve_forever, name="berg-onnx-web", daemon=True)
    thread.start()
    return thread


def serve(berg_dir: Path, port: int = DEFAULT_PORT, web_dir: Path | None = None) -> None:
    """Serve until Ctrl-C, printing the page's URL."""
    server = make_server(berg_dir, port, web_dir)
    print(f"berg-onnx web page: {url_of(server)}  (export {berg_dir}; Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `berg-onnx web` and `python -m berg_onnx.web`."""
    parser.add_argument("--berg-dir", required=True, help="local export directory to serve")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port on {HOST} (default {DEFAULT_PORT})"
    )
    parser.add_argument(
        "--web-dir", default=None, help="the page's folder (default: web/ of this checkout)"
    )
