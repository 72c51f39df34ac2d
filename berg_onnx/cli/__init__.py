"""The berg-onnx command line."""

from berg_onnx.cli._legacy import main

__all__ = ["main"]
