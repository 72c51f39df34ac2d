"""berg-onnx: BERG's fMRI encoding models on onnxruntime, without PyTorch."""

__version__ = "0.1.0"
