"""The arithmetic of onnxruntime's x86 int8 GEMM kernels, emulated in numpy, and the bound
that makes the int8 tier independent of which kernel a CPU gets.

MatMulInteger with u8 activations ``a`` and s8 weights ``b`` runs, depending on
the CPU (see ``berg_onnx/cpu.py``):

- VNNI (VPDPBUSD): four u8*s8 products added straight into int32 -- exact.
- AVX2 / AVX-512BW without VNNI: VPMADDUBSW multiplies byte pairs and adds the
  two products of each adjacent pair (k, k+1) into int16 *with saturation*;
  VPMADDWD then adds neighbouring int16 sums into int32 (exact), and VPADDD
  accumulates. Any pair with |a[k] b[k] + a[k+1] b[k+1]| > 32767 is clipped.

The kernels work on the raw stored bytes (zero points are corrected afterwards
from row and column sums), so with a in [0, 255] a pair sum is at most
``255 * (|b[k]| + |b[k+1]|)`` in magnitude. Weights with |b| <= 64 (onnxruntime's
``reduce_range`` for int8: [-64, 64]) give at most 255 * 128 = 32640 <= 32767:
no pair can saturate for *any* input, and every kernel returns the exact int32
product. Full-range weights (|b| <= 127) allow up to 64770.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

INT16_MAX = 32767
U8_MAX = 255


def raw_exact(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """sum_k a[m, k] b[k, n] in exact integer arithmetic (what VNNI computes)."""
    return a.astype(np.int64) @ b.astype(np.int64)


def raw_pairwise_int16(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The same sum as VPMADDUBSW + VPMADDWD + VPADDD compute it: pairs saturate to int16.

    ``a`` (M, K) uint8, ``b`` (K, N) int8. K is zero-padded to even, as the
    kernel's packing pads it; pairs are (0, 1), (2, 3), ...
    """
    if a.dtype != np.uint8 or b.dtype != np.int8:
        raise TypeError(f"expected uint8 x int8 operands, got {a.dtype} x {b.dtype}")
    k = a.shape[1]
    if k % 2:
        a = np.pad(a, ((0, 0), (0, 1)))
        b = np.pad(b, ((0, 1), (0, 0)))
    a32, b32 = a.astype(np.int32), b.astype(np.int32)
    acc = np.zeros((a.shape[0], b.shape[1]), np.int64)
    for j in range(0, a.shape[1], 2):
        pair = a32[:, j, None] * b32[j] + a32[:, j + 1, None] * b32[j + 1]
        acc += np.clip(pair, -INT16_MAX - 1, INT16_MAX)
    return acc


def worst_pair_sum(b: np.ndarray) -> int:
    """The largest |a[k] b[k] + a[k+1] b[k+1]| any u8 activations can reach, over every pair.

    Uses 2 * max|b| (not only the kernel's (even, odd) pairs), so the bound also
    holds for any other pairing a kernel might use.
    """
    if b.dtype == np.uint8:
        return 0  # u8 x u8 kernels widen to int16 before multiplying: no int16 pair sums
    return 2 * U8_MAX * int(np.abs(b.astype(np.int32)).max(initial=0))


@dataclass(frozen=True)
class Operands:
    """One MatMulInteger's integer inputs on real data, flattened to 2-D."""

    node: str
    a: np.ndarray  # (M, K) uint8, as DynamicQuantizeLinear produced it
    b: np.ndarray  # (K, N) int8 or uint8 weights


def weights(path: Path) -> dict[str, np.ndarray]:
    """Every MatMulInteger's constant B (the quantised weights), by node name."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    return {
        n.name or n.output[0]: numpy_helper.to_array(inits[n.input[1]])
        for n in model.graph.node
        if n.op_type == "MatMulInteger" and n.input[1] in inits
    }


def operands(path: Path, x: np.ndarray) -> list[Operands]:
    """The u8 activations each MatMulInteger of ``path`` receives for input ``x``, with its B.

    Runs the graph unoptimised (so nothing is fused away) with the activations
    exposed as extra outputs: these are the bytes onnxruntime itself produced.
    """
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    from berg_onnx.source.manifest import INPUT_NAME

    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    nodes = [n for n in model.graph.node if n.op_type == "MatMulInteger" and n.input[1] in inits]
    for n in nodes:
        model.graph.output.append(
            onnx.helper.make_tensor_value_info(n.input[0], onnx.TensorProto.UINT8, None)
        )
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    session = ort.InferenceSession(
        model.SerializeToString(), opts, providers=["CPUExecutionProvider"]
    )
    names = [n.input[0] for n in nodes]
    got = session.run(names, {INPUT_NAME: x})
    out = []
    for n, a in zip(nodes, got, strict=True):
        b = numpy_helper.to_array(inits[n.input[1]])
        out.append(Operands(n.name or n.output[0], a.reshape(-1, a.shape[-1]), b))
    return out
