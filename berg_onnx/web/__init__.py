"""The browser page's local server (``berg-onnx web``): web/ and one export on 127.0.0.1.

``server``: a cross-origin isolated static server (the page's WASM threads need it).
May import ``source``, ``errors``; the page itself lives in the repository's ``web/``.
"""

from berg_onnx.web.server import make_server, serve, start_in_thread, url_of

__all__ = ["make_server", "serve", "start_in_thread", "url_of"]
