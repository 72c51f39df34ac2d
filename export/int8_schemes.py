"""The int8 tier's schemes: how each feature layer's receptive-field GEMM is quantised.

Only the GEMMs ``act(F_k) (B, 256, S_k) @ g_k (S_k, voxels)`` against the constant,
softmax-normalised receptive fields are quantised (k = 0, 1, 2: S = 729, 625, 169);
the encoder and everything after the products stay float32. Activations are always
onnxruntime's DynamicQuantizeLinear (u8, one scale and zero point per batch
tensor), and the graph is written in the pattern onnxruntime fuses into one
DynamicQuantizeMatMul kernel. A scheme gives each layer one of these levels:

- ``"s8"``: int8 weights in onnxruntime's reduced range [-64, 64], asymmetric per
  voxel column (the weights are >= 0, so the zero point sits at -64 and they get
  129 levels). u8 x s8 kernels: the fastest.
- ``"s8x2"``: the same, plus a second int8 GEMM on the weights' rounding residual,
  quantised the same way (about 128 x 128 levels per column): twice the integer
  work, and the weights' error all but vanishes.
- ``"fp32"``: not quantised.

Measured on the realistic synthetic V1 model (1350 voxels; AMD EPYC Zen 5, one
thread): the weights' rounding carries most of the error (emulated in numpy:
s8 0.013 max abs, u8 0.006, s8x2 0.0001), the activations' per-tensor u8 rounding
0.004, and layers 1 and 2 carry most of both. Not offered, because measured
worse: u8 weights (u8 x u8 kernels: 0.0051 at 1.14x, where s8/s8x2/s8x2 gave
0.0029 at 1.33x) and per-(image, channel) activation scales (0.003 instead of
0.004, but written as plain ONNX ops the graph ran 3x slower than float32).

Kernel classes (``kernel_note``): u8 x s8 products go through VPMADDUBSW's
saturating int16 pair sums on AVX2 and AVX-512BW without VNNI; with every stored
weight in [-64, 64] no pair can exceed 2 * 255 * 64 = 32640 (``int8_kernels``), so
every x86 class returns VNNI's exact int32 sums. A residual GEMM's weights are in
the same range and its activations are the same bytes, so every scheme here (every
mix of levels) is exact on every x86 kernel class; ``quantize`` returns the worst
pair sum as the proof, and ``convert`` refuses a file above 32767.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: The receptive-field GEMMs' constant B, as GemmReadout names its buffers
#: (``readouts.<split>.gt<layer>_<tile>`` after tracing).
_RF_WEIGHT = re.compile(r"(?:^|\.)gt(\d)_\d+$")
LEVELS = ("s8", "s8x2", "fp32")
#: The next, more accurate (and slower) level of a layer.
UPGRADE = {"s8": "s8x2", "s8x2": "fp32"}
N_LAYERS = 3


@dataclass(frozen=True)
class Scheme:
    """Per feature layer, how its GEMM is quantised (recorded in the manifest)."""

    layers: tuple[str, str, str] = ("s8", "s8", "s8")

    def __post_init__(self) -> None:
        layers = tuple(self.layers)
        if len(layers) != N_LAYERS or not set(layers) <= set(LEVELS):
            raise ValueError(f"a scheme gives each of {N_LAYERS} layers one of {LEVELS}")
        if all(level == "fp32" for level in layers):
            raise ValueError("a scheme quantises at least one layer")
        object.__setattr__(self, "layers", layers)

    @property
    def name(self) -> str:
        """E.g. ``s8/s8/fp32``: layer 0, 1, 2."""
        return "/".join(self.layers)

    @property
    def kernel_note(self) -> str:
        return (
            "u8 x s8 with every stored weight in [-64, 64]: int16 pair sums <= 32640, "
            "no saturation; exact int32 sums on every x86 kernel class"
        )

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "layers": list(self.layers),
            "kernels": self.kernel_note,
            # the fields of the single scheme exported before per-model selection
            "weight_type": "int8",
            "reduce_range": True,
            "per_channel": True,
            "weight_symmetric": False,
            "activation_type": "uint8",
            "op_types": ["MatMul"],
        }

    @classmethod
    def parse(cls, name: str) -> Scheme:
        return cls(tuple(name.split("/")))  # type: ignore[arg-type]


#: The shipped scheme before per-model selection: every layer s8.
S8 = Scheme(("s8", "s8", "s8"))


def rf_layer(initializer_name: str) -> int | None:
    """The feature layer of a receptive-field GEMM weight, or None for other constants."""
    m = _RF_WEIGHT.search(initializer_name)
    return int(m.group(1)) if m else None


def quantize_columns(w: np.ndarray, level: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(q, scale, zero_point) of ``w`` (K, N) quantised per column, asymmetric.

    ``w ~= scale * (q - zero_point)`` with q in [-64, 64] (int8, ``"s8"``) or
    [0, 255] (uint8, ``"u8"``, kept for comparisons). Each column's range is
    widened to include 0, so an exact 0 stays exact: onnxruntime's
    ``quantize_dynamic`` convention, which this reproduces bit for bit.
    """
    qmin, qmax, dtype = (-64, 64, np.int8) if level == "s8" else (0, 255, np.uint8)
    w = np.asarray(w, np.float32)
    lo = np.minimum(w.min(axis=0), 0).astype(np.float64)
    hi = np.maximum(w.max(axis=0), 0).astype(np.float64)
    scale = ((hi - lo) / (qmax - qmin)).astype(np.float32)
    flat = scale < np.finfo(np.float32).tiny  # an all-zero column
    scale = np.where(flat, np.float32(1), scale)
    zero = np.clip(np.round(qmin - lo / scale), qmin, qmax)
    q = np.clip(np.round(w / scale) + zero, qmin, qmax)
    return q.astype(dtype), scale, zero.astype(dtype)


def dequantize(q: np.ndarray, scale: np.ndarray, zero: np.ndarray) -> np.ndarray:
    return ((q.astype(np.float32) - zero.astype(np.float32)) * scale).astype(np.float32)


def rf_gemms(model) -> dict[int, int]:
    """{index in graph.node: feature layer} of every receptive-field GEMM of ``model``."""
    inits = {i.name for i in model.graph.initializer}
    out = {}
    for i, node in enumerate(model.graph.node):
        if node.op_type == "MatMul" and node.input[1] in inits:
            layer = rf_layer(node.input[1])
            if layer is not None:
                out[i] = layer
    return out


def quantize(src: Path, dst: Path, scheme: Scheme) -> int:
    """Write ``src``'s graph with its receptive-field GEMMs quantised by ``scheme``.

    Returns the worst |u8 x s8 pair sum| the stored weights allow for any input;
    the error is unchecked (``int8_select`` measures it).
    """
    import onnx
    from onnx import numpy_helper

    from .int8_kernels import worst_pair_sum

    model = onnx.load(str(src), load_external_data=False)
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    gemms = rf_gemms(model)
    if sorted(set(gemms.values())) != list(range(N_LAYERS)):
        from .onnx_export import ExportError

        raise ExportError(
            f"{src.name}: expected the readout's receptive-field GEMMs (constants named "
            "gt<layer>_<tile>) for layers 0-2; is it a graph written by this export?"
        )
    nodes, new_inits, replaced, worst = [], [], set(), 0
    for i, node in enumerate(graph.node):
        level = scheme.layers[gemms[i]] if i in gemms else "fp32"
        if level == "fp32":
            nodes.append(node)
            continue
        a, b = node.input[0], node.input[1]
        y = node.output[0]
        w = numpy_helper.to_array(inits[b])
        parts = [quantize_columns(w, "s8")]
        if level == "s8x2":
            parts.append(quantize_columns(w - dequantize(*parts[0]), "s8"))
        outs = [y] if len(parts) == 1 else [f"{y}.part{j}" for j in range(len(parts))]
        for j, ((q, scale, zero), out) in enumerate(zip(parts, outs, strict=True)):
            name = b if j == 0 else f"{b}.residual"
            new_inits += [
                numpy_helper.from_array(q, f"{name}_quantized"),
                numpy_helper.from_array(scale, f"{name}_scale"),
                numpy_helper.from_array(zero, f"{name}_zero_point"),
            ]
            nodes += _quantized_matmul(a, name, out, f"{node.name or y}.q{j}")
            worst = max(worst, worst_pair_sum(q))
        if len(parts) > 1:
            nodes.append(onnx.helper.make_node("Add", outs, [y], name=f"{node.name or y}.sum"))
        replaced.add(b)
    del graph.node[:]
    graph.node.extend(nodes)
    still = {name for n in graph.node for name in n.input}
    kept = [x for x in graph.initializer if x.name not in replaced or x.name in still]
    del graph.initializer[:]
    graph.initializer.extend(kept + new_inits)
    onnx.save(model, str(dst))
    return worst


def _quantized_matmul(a: str, w: str, y: str, p: str) -> list:
    """``y = A @ dequant(w)`` as quantize_dynamic writes it, which onnxruntime fuses into
    one DynamicQuantizeMatMul; one DynamicQuantizeLinear per product (it is cheap, and a
    shared one would keep the fusion from applying)."""
    from onnx import TensorProto, helper

    return [
        helper.make_node(
            "DynamicQuantizeLinear", [a], [f"{p}.a_q", f"{p}.a_scale", f"{p}.a_zp"], name=f"{p}.dql"
        ),
        helper.make_node(
            "Mul", [f"{p}.a_scale", f"{w}_scale"], [f"{p}.scales"], name=f"{p}.scales_mul"
        ),
        helper.make_node(
            "MatMulInteger",
            [f"{p}.a_q", f"{w}_quantized", f"{p}.a_zp", f"{w}_zero_point"],
            [f"{p}.acc"],
            name=f"{p}.matmul",
        ),
        helper.make_node(
            "Cast", [f"{p}.acc"], [f"{p}.accf"], to=TensorProto.FLOAT, name=f"{p}.cast"
        ),
        helper.make_node("Mul", [f"{p}.accf", f"{p}.scales"], [y], name=f"{p}.out_mul"),
    ]
