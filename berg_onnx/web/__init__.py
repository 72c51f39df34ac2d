"""The browser page's local server: ``berg-onnx web`` / ``python -m berg_onnx.web``."""

from berg_onnx.web.server import make_server, serve, url_of

__all__ = ["make_server", "serve", "url_of"]
