"""Export stage: original BERG checkpoints -> verified ONNX + npz + manifest.

Runs from a checkout with the ``export`` extra (torch). Imports berg_onnx for
the contract; berg_onnx never imports this package.
"""
