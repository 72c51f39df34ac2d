"""EncodingModel: one ROI's onnxruntime session and the chunked encode loop.

stimulus -> preprocess (per chunk) -> session -> rows of the preallocated
output. Only the output grows with the number of images.
"""

from __future__ import annotations

import sys
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from .constants import available_cores
from .errors import InvalidParameterError, ModelLoadError
from .manifest import INPUT_NAME, OUTPUT_NAME, ModelEntry
from .stimulus import as_stimulus


def check_batch_size(batch_size: Any) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise InvalidParameterError(f"batch_size must be a positive integer, got {batch_size!r}")
    if batch_size < 1:
        raise InvalidParameterError(f"batch_size must be >= 1, got {batch_size}")
    return int(batch_size)


@dataclass
class EncodingModel:
    """A loaded fwRF model for one subject and ROI; cheap to keep and reuse."""

    entry: ModelEntry
    session: ort.InferenceSession = field(repr=False)
    provider: str
    device: str
    onnx_path: Path = field(repr=False)
    batch_size: int
    precision: str = "fp32"
    #: Preprocess the next chunk in a thread while onnxruntime runs this one. It
    #: pays when inference runs on a GPU; on CPU both compete for the same cores
    #: (measured: no gain on 2 cores), so it is on for CUDA only.
    prefetch: bool = False

    def __post_init__(self) -> None:
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if [i.name for i in inputs] != [INPUT_NAME] or [o.name for o in outputs] != [OUTPUT_NAME]:
            raise ModelLoadError(
                f"{self.onnx_path} is not a berg-onnx model: expected input {INPUT_NAME!r} "
                f"and output {OUTPUT_NAME!r}"
            )

    @property
    def model_id(self) -> str:
        return self.entry.model_id

    @property
    def subject(self) -> int:
        return self.entry.subject

    @property
    def roi(self) -> str:
        return self.entry.roi

    @property
    def n_voxels(self) -> int:
        return self.entry.nv

    def __repr__(self) -> str:
        return (
            f"EncodingModel({self.model_id!r}, subject={self.subject}, roi={self.roi!r}, "
            f"voxels={self.n_voxels}, provider={self.provider!r}, precision={self.precision!r})"
        )

    def encode(
        self, stimulus: Any, *, batch_size: int | None = None, show_progress: bool = False
    ) -> np.ndarray:
        """(N, nv) float32 predicted responses, computed chunk by chunk."""
        stim = as_stimulus(stimulus)
        step = check_batch_size(self.batch_size if batch_size is None else batch_size)
        n = len(stim)
        out = np.empty((n, self.n_voxels), dtype=np.float32)
        bar = _progress(n, show_progress, f"{self.roi} sub-{self.subject:02d}")
        chunks = [(lo, min(n, lo + step)) for lo in range(0, n, step)]
        # With prefetch, worker threads preprocess the next chunks while
        # onnxruntime runs this one (numpy's resize and onnxruntime both release
        # the GIL); at most `ahead` chunks wait in memory.
        ahead = min(len(chunks), available_cores()) if self.prefetch else 0
        pool = ThreadPoolExecutor(ahead, thread_name_prefix="berg-preprocess") if ahead else None
        try:
            queue = deque(pool.submit(stim.chunk, *c) for c in chunks[:ahead]) if pool else None
            for i, (start, stop) in enumerate(chunks):
                if pool:
                    x = queue.popleft().result()
                    if i + ahead < len(chunks):
                        queue.append(pool.submit(stim.chunk, *chunks[i + ahead]))
                else:
                    x = stim.chunk(start, stop)
                out[start:stop] = self.session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
                if bar is not None:
                    bar.update(stop - start)
        finally:
            if pool:
                pool.shutdown(wait=True, cancel_futures=True)
            if bar is not None:
                bar.close()
        return out


def _progress(total: int, show: bool, desc: str):
    """A tqdm bar on stderr, or None; tolerates stderr being None or not a TTY."""
    if not show or sys.stderr is None:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", file=sys.stderr, dynamic_ncols=True)
