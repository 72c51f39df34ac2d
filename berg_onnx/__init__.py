"""berg-onnx: BERG's fMRI encoding models on onnxruntime, without PyTorch.

>>> from berg_onnx import BERG
>>> berg = BERG(berg_dir="export_dir")
>>> model = berg.get_encoding_model("fmri-nsd-fwrf", subject=1, selection={"roi": "V1"})
>>> responses = berg.encode(model, images)  # (N, 1350) float32
"""

import gc as _gc

# The imports below (numpy and onnxruntime too, when they come first) create ~10^5
# objects that live as long as the process. The cyclic collector would walk them ~60
# times while they load, and again at every later full collection and at exit (~20 ms
# of a 0.2 s cold start in all). So it is off while they load, and then every object
# alive is moved to its permanent generation (gc.freeze): reference counting frees them
# as usual, collections skip them. The only cost: a reference cycle among objects that
# existed before this import, turned garbage later, waits for gc.unfreeze() or exit.
_collecting = _gc.isenabled()
_gc.disable()
try:
    from berg_onnx import _compat
    from berg_onnx._version import __version__
    from berg_onnx.api import BERG
    from berg_onnx.errors import (
        BERGError,
        ExperimentError,
        InvalidParameterError,
        ModelLoadError,
        ModelNotFoundError,
        ResourceError,
        StimulusError,
    )
    from berg_onnx.inputs.images import load_image
    from berg_onnx.inputs.stimulus import Stimulus, as_stimulus
    from berg_onnx.model import EncodingModel
finally:
    _gc.freeze()
    if _collecting:
        _gc.enable()

__all__ = [
    "BERG",
    "BERGError",
    "EncodingModel",
    "ExperimentError",
    "InvalidParameterError",
    "ModelLoadError",
    "ModelNotFoundError",
    "ResourceError",
    "ScanResult",
    "Stimulus",
    "StimulusError",
    "__version__",
    "as_stimulus",
    "load_image",
    "scan_images",
]


def __getattr__(name: str):
    """The folder scan (inputs/scan.py) loads on first use: `import berg_onnx` stays cheap."""
    if name in ("ScanResult", "scan_images"):
        from berg_onnx.inputs import scan as files

        return getattr(files, name)
    raise AttributeError(f"module 'berg_onnx' has no attribute {name!r}")


_compat.install()
