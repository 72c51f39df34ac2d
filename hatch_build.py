"""Build-time choice of onnxruntime flavour: berg-onnx (CPU) or berg-onnx-gpu.

onnxruntime and onnxruntime-gpu install into the same `onnxruntime` module
folder and break each other when both are present, so a single distribution
with a "gpu" extra cannot work (the extra would add the second flavour on top
of the first). Instead the same source builds two distributions:

    python -m build                                  -> berg-onnx      (onnxruntime)
    BERG_ONNX_FLAVOUR=gpu python -m build            -> berg-onnx-gpu  (onnxruntime-gpu)

Both contain the same `berg_onnx` package; install exactly one of them.
"""

from __future__ import annotations

import os

from hatchling.metadata.plugin.interface import MetadataHookInterface

FLAVOURS = {
    "cpu": ("berg-onnx", "onnxruntime>=1.20,<2"),
    "gpu": ("berg-onnx-gpu", "onnxruntime-gpu>=1.20,<2"),
}


class FlavourHook(MetadataHookInterface):
    PLUGIN_NAME = "custom"

    def update(self, metadata: dict) -> None:
        flavour = os.environ.get("BERG_ONNX_FLAVOUR", "cpu").strip().lower() or "cpu"
        if flavour not in FLAVOURS:
            raise ValueError(
                f"BERG_ONNX_FLAVOUR must be one of {sorted(FLAVOURS)}, got {flavour!r}"
            )
        name, runtime = FLAVOURS[flavour]
        metadata["name"] = name
        metadata["dependencies"] = [runtime] + metadata.get("dependencies", [])
