"""Trace one ROI to ONNX, check it, and verify onnxruntime against the reference.

timm's recipe: export, run onnx.checker, compare onnxruntime with eager
PyTorch on real inputs, and fail loudly on a mismatch.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F

from berg_onnx.errors import BERGError
from berg_onnx.source.manifest import INPUT_NAME, OUTPUT_NAME

from .reference import FwrfModel

OPSET = 20
#: Sanity bound for the opt-in int8 tier (measured 0.010-0.014 max abs on the
#: benchmark's realistic synthetic models, responses with an SD of ~0.2); a broken
#: or saturating quantisation lands above it (0.07 on an AVX2 CPU).
INT8_TOLERANCE = 0.05
TOLERANCE = 1e-4
EXPORTER = "torch.onnx.export(dynamo=True)"


class ExportError(BERGError, RuntimeError):
    """An exported graph failed a structural check or its numerical verification."""


class VerificationError(ExportError):
    """onnxruntime differs from the reference by more than the tolerance (figures attached)."""

    def __init__(self, message: str, max_abs_diff: float, tolerance: float) -> None:
        super().__init__(message)
        self.max_abs_diff = max_abs_diff
        self.tolerance = tolerance


def export_onnx(model: FwrfModel, path: Path) -> None:
    """Trace ``model`` (the GEMM form) to ``path`` with a symbolic batch axis, weights inline."""
    example = torch.rand(2, 3, 227, 227)  # batch >= 2 so nothing specialises on 1
    batch = torch.export.Dim("batch", min=1)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # torchvision-op notices
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            dynamic_shapes=({0: batch},),
            opset_version=OPSET,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            external_data=False,
            optimize=True,
            verify=False,
        )
        program.save(str(path), external_data=False)
    check_graph(path)


def check_graph(path: Path) -> None:
    """onnx.checker plus the contract: one input/output, symbolic batch, no external data."""
    m = onnx.load(str(path), load_external_data=False)
    onnx.checker.check_model(m, full_check=True)
    if [i.name for i in m.graph.input] != [INPUT_NAME] or [o.name for o in m.graph.output] != [
        OUTPUT_NAME
    ]:
        raise ExportError(f"{path}: expected input {INPUT_NAME!r} and output {OUTPUT_NAME!r}")
    for value in (m.graph.input[0], m.graph.output[0]):
        first = value.type.tensor_type.shape.dim[0]
        if not first.dim_param or first.dim_value:
            raise ExportError(f"{path}: {value.name} has no symbolic batch dimension")
    for init in m.graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            raise ExportError(f"{path}: initializer {init.name} uses external data")


def reference_preprocess(images: np.ndarray) -> torch.Tensor:
    """torchvision-equivalent Resize((227,227)) + round + /255, as the original pipeline does."""
    x = torch.from_numpy(np.ascontiguousarray(images)).float()
    if x.shape[-2:] != (227, 227):
        x = F.interpolate(x, (227, 227), mode="bilinear", antialias=True, align_corners=False)
        x = x.round()
    return x / 255


@dataclass(frozen=True)
class Verification:
    max_abs_diff: float
    batch_sizes: tuple[int, ...]
    n_images: int
    description: str


def verify(
    path: Path,
    reference: FwrfModel,
    photos: np.ndarray,
    seed: int = 0,
    tolerance: float = TOLERANCE,
) -> Verification:
    """Max |onnxruntime - reference| over natural photos and uint8 noise at several batch sizes.

    Raises ExportError when it exceeds ``tolerance``. The reference is the spec's
    literal readout, so the check covers the GEMM rewrite as well as the export.
    """
    noise = np.random.default_rng(seed).integers(0, 256, (8,) + photos.shape[1:], dtype=np.uint8)
    images = np.concatenate([photos, noise])
    x = reference_preprocess(images)
    with torch.no_grad():
        expected = reference(x).numpy()
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    xs = x.numpy()
    n_photo = len(photos)
    worst = 0.0
    checks = [
        (slice(0, 1), 1),  # batch 1: a photograph
        (slice(n_photo, n_photo + 1), 1),  # batch 1: noise
        (slice(0, 2), 2),
        (slice(0, n_photo), n_photo),
        (slice(n_photo, len(images)), len(noise)),
    ]
    for rows, _ in checks:
        got = session.run([OUTPUT_NAME], {INPUT_NAME: xs[rows]})[0]
        if got.shape != expected[rows].shape or got.dtype != np.float32:
            raise ExportError(
                f"{path}: output {got.shape} {got.dtype}, expected {expected[rows].shape}"
            )
        worst = max(worst, float(np.abs(got - expected[rows]).max()))
    tiled = np.resize(np.arange(len(images)), 37)  # batch 37: every image, some twice
    got = session.run([OUTPUT_NAME], {INPUT_NAME: xs[tiled]})[0]
    worst = max(worst, float(np.abs(got - expected[tiled]).max()))
    if not np.isfinite(worst) or worst > tolerance:
        raise VerificationError(
            f"{path.name}: onnxruntime differs from the PyTorch reference by {worst:.3g} "
            f"(max abs), above the tolerance {tolerance:g}; not writing it.",
            max_abs_diff=worst,
            tolerance=tolerance,
        )
    sizes = tuple(sorted({b for _, b in checks} | {37}))
    return Verification(
        max_abs_diff=worst,
        batch_sizes=sizes,
        n_images=len(images),
        description=f"{n_photo} natural photographs + {len(noise)} uint8 noise images",
    )


@dataclass(frozen=True)
class Int8Scheme:
    """How the int8 tier quantises (recorded in the manifest as ``int8_scheme``)."""

    weight_type: str = "int8"
    reduce_range: bool = True
    per_channel: bool = True
    weight_symmetric: bool = False
    activation_type: str = "uint8"  # DynamicQuantizeLinear's output: always u8
    op_types: tuple[str, ...] = ("MatMul",)

    def as_dict(self) -> dict:
        return {**asdict(self), "op_types": list(self.op_types)}


#: The single int8 scheme of exports made before per-model choice (``int8_select``; its
#: ``s8/s8/s8`` is this scheme bit for bit), kept with ``quantize_readout`` for the
#: kernel tests. It was chosen so that no onnxruntime kernel can saturate (see
#: export/int8_kernels.py): int8 weights per voxel column in onnxruntime's reduced
#: range [-64, 64], asymmetric (the softmax weights are >= 0, so a zero point at
#: -64 gives them 129 levels instead of the 65 a symmetric scale leaves), and u8
#: activations. Only the readout's receptive-field GEMMs (MatMuls with a constant
#: B) are quantised; the encoder stays float32. Measured on the synthetic test
#: models: 0.005-0.007 max abs against the reference, better than the earlier
#: full-range symmetric scheme (0.007), whose pairs reach 64770 and saturate on AVX2.
INT8_SCHEME = Int8Scheme()
#: The earlier scheme, kept to show what saturates (tests, benchmarks' notes).
FULL_RANGE_SCHEME = Int8Scheme(reduce_range=False, weight_symmetric=True)


def quantize_dynamic_int8(src: Path, dst: Path, scheme: Int8Scheme = INT8_SCHEME) -> None:
    """onnxruntime's dynamic quantisation of ``src``'s readout GEMMs with ``scheme``, unchecked."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    types = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
    logging.getLogger("root").setLevel(logging.ERROR)  # quantize_dynamic's pre-process hint
    quantize_dynamic(
        str(src),
        str(dst),
        op_types_to_quantize=list(scheme.op_types),
        per_channel=scheme.per_channel,
        reduce_range=scheme.reduce_range,
        weight_type=types[scheme.weight_type],
        extra_options={"WeightSymmetric": scheme.weight_symmetric},
    )


def quantize_readout(src: Path, dst: Path, scheme: Int8Scheme = INT8_SCHEME) -> int:
    """The opt-in int8 tier; returns the worst pair sum its weights allow (<= 32767).

    Raises ExportError unless every quantised weight keeps the pairwise int16
    sums of AVX2/AVX-512BW kernels in range for any input, so that the integer
    results are the same on every x86 CPU (``int8_kernels``).
    """
    from .int8_kernels import INT16_MAX, weights, worst_pair_sum

    quantize_dynamic_int8(src, dst, scheme)
    check_graph(dst)
    found = weights(dst)
    if not found:
        raise ExportError(f"{dst.name}: quantize_dynamic quantised no readout GEMM")
    worst = max(worst_pair_sum(b) for b in found.values())
    if worst > INT16_MAX:
        raise ExportError(
            f"{dst.name}: a u8 x s8 pair sum can reach {worst} > {INT16_MAX}, so CPUs "
            "without VNNI (AVX2, AVX-512BW) would saturate it; not writing it."
        )
    return worst
