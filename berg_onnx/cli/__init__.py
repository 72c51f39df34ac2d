"""The berg-onnx command line: a thin layer over the Python API, one module per command group.

``_main`` (parser and error contract), ``_common`` (shared flags, BERG from flags),
``encode``, ``run``, ``brain`` (volume, plot), ``models`` (list, metadata, download),
``doctor`` (``environment_info`` returns data; the command prints it), ``web``.
The top layer: may import anything in berg_onnx; nothing imports it.
"""

from berg_onnx.cli._main import build_parser, main

__all__ = ["build_parser", "main"]
