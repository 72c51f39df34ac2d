"""Benchmarks: berg_onnx against the export's PyTorch reference, side by side in one run.

Run from a checkout with the export extra: ``python -m benchmarks [--quick]``.
Every speed claim is a ratio measured in the same run, on the same inputs.
"""
