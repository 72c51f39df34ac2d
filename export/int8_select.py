"""The int8 tier chosen per model by measurement: the fastest scheme within tolerance.

The quantisation error depends on the weights (a readout with four times the
spread has four times the error), and real weights are not known in advance, so
``convert --int8`` measures it on each model instead of trusting one scheme:

1. The fastest scheme, every layer ``s8`` (``int8_schemes``), is tried first.
2. While the candidate misses the tolerance, the layer carrying most of its
   error (measured: that layer alone quantised, the others float32) moves one
   level up, ``s8`` -> ``s8x2`` -> ``fp32``, and the new candidate is tried.
   Each step costs speed, so the candidates run from fastest to most accurate,
   and the first within tolerance is kept.
3. With every layer back at fp32 there is no int8 tier: the model keeps its
   float32 file, and the manifest says why.

A candidate is within tolerance when, against the float32 graph on the
calibration set (natural photographs, at batch 1 and as one batch, since the
activations' scale depends on the batch), its max abs difference is at most
``margin * max_abs_vs_fp32`` and every voxel's 1 - r at most ``margin * (1 -
min_voxel_r)`` (headroom for images it was not chosen on: 0.024 and r >= 0.996
by default); and when the export's own check against the PyTorch reference
(photographs and noise at several batch sizes, ``onnx_export.verify``) stays
within ``max_abs_vs_reference``.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .int8_kernels import INT16_MAX
from .int8_schemes import N_LAYERS, S8, UPGRADE, Scheme, quantize
from .onnx_export import INT8_TOLERANCE, ExportError, VerificationError, verify

#: Recorded with each choice; an export made by another procedure is re-chosen.
PROCEDURE = "fastest-within-tolerance/v2"
#: Voxels whose float32 responses vary less than this across the calibration set
#: have no correlation to speak of; their error is bounded by the max abs alone.
MIN_VOXEL_SD = 1e-4


@dataclass(frozen=True)
class Tolerance:
    """What the int8 tier must meet. On the calibration photographs a candidate must
    stay within ``margin`` of the fp32 limits (max abs, 1 - r), so that images it was
    not chosen on keep within the limits themselves."""

    max_abs_vs_fp32: float = 0.03
    min_voxel_r: float = 0.995
    max_abs_vs_reference: float = INT8_TOLERANCE
    margin: float = 0.8

    def describe(self) -> str:
        return (
            f"max abs vs fp32 <= {self.max_abs_vs_fp32:g} and per-voxel r >= "
            f"{self.min_voxel_r:g} on natural photographs (chosen within {self.margin:g} of "
            f"both), max abs vs PyTorch <= {self.max_abs_vs_reference:g}"
        )

    def calibration_ok(self, max_abs: float, min_r: float) -> bool:
        return max_abs <= self.margin * self.max_abs_vs_fp32 and 1 - min_r <= self.margin * (
            1 - self.min_voxel_r
        )


@dataclass
class Trial:
    """One candidate's measured error (``vs_reference`` None: not checked, or failed)."""

    scheme: str
    max_abs_vs_fp32: float
    min_voxel_r: float
    vs_reference: float | None = None
    ok: bool = False
    pair_bound: int = 0
    note: str = ""

    def badness(self, tol: Tolerance) -> float:
        """How far outside what it must meet (1 = at the limit) its figures are."""
        ref = 0.0 if self.vs_reference is None else self.vs_reference / tol.max_abs_vs_reference
        return max(
            self.max_abs_vs_fp32 / (tol.margin * tol.max_abs_vs_fp32),
            (1 - self.min_voxel_r) / (tol.margin * (1 - tol.min_voxel_r)),
            ref,
        )

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: v for k, v in d.items() if v not in ("", None)}


@dataclass
class Selection:
    """What ``select`` found: the chosen scheme (None: no int8 tier) and every trial."""

    chosen: Scheme | None
    trial: Trial | None
    trials: list[Trial]
    tolerance: Tolerance
    calibration: str
    layer_badness: dict[str, float] = field(default_factory=dict)

    @property
    def reason(self) -> str | None:
        """One line: why there is no int8 tier (None when there is one)."""
        if self.chosen is not None:
            return None
        best = min(self.trials, key=lambda t: t.badness(self.tolerance))
        ref = "" if best.vs_reference is None else f", {best.vs_reference:.3g} vs PyTorch"
        return (
            f"no int8 scheme met the tolerance ({self.tolerance.describe()}); "
            f"{len(self.trials)} tried, the closest {best.scheme}: max abs "
            f"{best.max_abs_vs_fp32:.3g} vs fp32, min voxel r {best.min_voxel_r:.4f}{ref}"
        )

    def record(self) -> dict[str, Any]:
        """The manifest's ``int8_selection``: how the choice was made, with every trial."""
        return {
            "procedure": PROCEDURE,
            "tolerance": asdict(self.tolerance),
            "calibration": self.calibration,
            "trials": [t.as_dict() for t in self.trials],
            "layer_badness": self.layer_badness,
        }


def _session(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1  # as the runtime's CPU sessions run
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _responses(path: Path, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(batch-1 responses, one-batch responses) of ``path`` to ``x``."""
    from berg_onnx.source.manifest import INPUT_NAME, OUTPUT_NAME

    session = _session(path)
    single = np.concatenate(
        [session.run([OUTPUT_NAME], {INPUT_NAME: x[i : i + 1]})[0] for i in range(len(x))]
    )
    batch = session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
    return single, batch


def voxel_correlations(y32: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-voxel Pearson r of ``y`` with ``y32`` over images, for voxels that vary."""
    a = y32.astype(np.float64) - y32.mean(0)
    b = y.astype(np.float64) - y.mean(0)
    sa, sb = np.sqrt((a * a).sum(0)), np.sqrt((b * b).sum(0))
    live = y32.std(0) >= MIN_VOXEL_SD
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a * b).sum(0) / (sa * sb)
    return np.where(np.isfinite(r), r, -1.0)[live]


class Calibration:
    """The float32 graph's responses to the calibration photographs."""

    def __init__(self, fp32_path: Path, x: np.ndarray, description: str) -> None:
        self.x = x
        self.y32, _ = _responses(fp32_path, x)
        self.description = description

    def measure(self, path: Path) -> tuple[float, float]:
        """(max abs vs fp32, min per-voxel r) of the graph at ``path``."""
        single, batch = _responses(path, self.x)
        diff = max(float(np.abs(single - self.y32).max()), float(np.abs(batch - self.y32).max()))
        r = [voxel_correlations(self.y32, y) for y in (single, batch)]
        min_r = min(float(v.min(initial=1.0)) for v in r)
        if not np.isfinite(diff):
            diff, min_r = float("inf"), -1.0
        return diff, min_r


def select(
    fp32_path: Path,
    dst: Path,
    reference,
    photos: np.ndarray,
    calibration: Calibration,
    tolerance: Tolerance = Tolerance(),
) -> Selection:
    """Try schemes fastest first (module docstring); the chosen one is left at ``dst``.

    ``reference`` is the PyTorch model and ``photos`` the export check's
    photographs (``onnx_export.verify``). Nothing is written at ``dst`` when no
    scheme meets the tolerance.
    """
    trials: list[Trial] = []
    badness: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix=".int8-", dir=dst.parent) as tmp:
        work = Path(tmp)

        def candidate(scheme: Scheme, full: bool) -> tuple[Trial, Path]:
            path = work / (scheme.name.replace("/", "_") + ".onnx")
            bound = quantize(fp32_path, path, scheme)
            if bound > INT16_MAX:  # cannot happen with these levels; never ship one that could
                raise ExportError(
                    f"{scheme.name}: a u8 x s8 pair sum can reach {bound} > {INT16_MAX}, so "
                    "CPUs without VNNI would saturate it; not writing it."
                )
            diff, r = calibration.measure(path)
            trial = Trial(scheme.name, diff, r, pair_bound=bound)
            if full and tolerance.calibration_ok(diff, r):
                try:
                    check = verify(
                        path, reference, photos, tolerance=tolerance.max_abs_vs_reference
                    )
                    trial.vs_reference, trial.ok = check.max_abs_diff, True
                except VerificationError as e:
                    trial.vs_reference, trial.note = e.max_abs_diff, "failed the PyTorch check"
            return trial, path

        def layer_alone(layer: int, level: str) -> float:
            key = f"{layer}:{level}"
            if key not in badness:
                levels = ["fp32"] * N_LAYERS
                levels[layer] = level
                trial, path = candidate(Scheme(tuple(levels)), full=False)
                path.unlink()
                badness[key] = round(trial.badness(tolerance), 6)
            return badness[key]

        levels = list(S8.layers)
        while True:
            scheme = Scheme(tuple(levels))
            trial, path = candidate(scheme, full=True)
            trials.append(trial)
            if trial.ok:
                os.replace(path, dst)
                return Selection(scheme, trial, trials, tolerance, calibration.description, badness)
            path.unlink()
            live = [k for k in range(N_LAYERS) if levels[k] != "fp32"]
            worst = max(live, key=lambda k: (layer_alone(k, levels[k]), -k))
            levels[worst] = UPGRADE[levels[worst]]
            if all(level == "fp32" for level in levels):
                return Selection(None, None, trials, tolerance, calibration.description, badness)


def speedup(fp32_path: Path, int8_path: Path, x: np.ndarray, repeats: int = 5) -> dict[str, Any]:
    """fp32 time / int8 time per image, single-threaded at batch 1 (the runtime's CPU
    setting), the best of ``repeats`` interleaved rounds over ``x``.

    Timed in CPU time of this thread (the one-thread session runs in it), so time
    spent waiting for a core on a shared machine is not counted; wall times are
    recorded too.
    """
    from berg_onnx.source.manifest import INPUT_NAME, OUTPUT_NAME

    sessions = {"fp32": _session(fp32_path), "int8": _session(int8_path)}
    cpu = dict.fromkeys(sessions, float("inf"))
    wall = dict.fromkeys(sessions, float("inf"))
    for s in sessions.values():  # warm-up: first runs allocate
        s.run([OUTPUT_NAME], {INPUT_NAME: x[:1]})
    for _ in range(repeats):
        for name, s in sessions.items():
            c, t = time.thread_time(), time.perf_counter()
            for i in range(len(x)):
                s.run([OUTPUT_NAME], {INPUT_NAME: x[i : i + 1]})
            cpu[name] = min(cpu[name], (time.thread_time() - c) / len(x))
            wall[name] = min(wall[name], (time.perf_counter() - t) / len(x))
    return {
        "speedup": round(cpu["fp32"] / cpu["int8"], 3),
        "fp32_ms": round(1000 * cpu["fp32"], 3),
        "int8_ms": round(1000 * cpu["int8"], 3),
        "wall_speedup": round(wall["fp32"] / wall["int8"], 3),
        "method": (
            f"one thread, batch 1, best of {repeats} rounds of {len(x)} images, "
            "in the thread's CPU time"
        ),
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }
