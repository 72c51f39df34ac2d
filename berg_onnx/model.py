"""EncodingModel: one ROI's onnxruntime session(s) and the chunked encode loop.

stimulus -> preprocess (per chunk) -> session -> rows of the preallocated
output. Only the output grows with the number of images.

How chunks are scheduled depends on where they run:
- CPU, several chunks: one worker thread per core, each preprocessing and
  running its own chunk on the model's single-threaded session, which all
  workers share (onnxruntime's ``run`` is thread-safe and releases the GIL).
  This keeps every core busy through preprocessing too, and skips the
  per-operator synchronisation of intra-op threads. Measured on 2 cores
  against one 2-thread session: V1 100 vs 91 images/s end to end, FFA-1 150
  vs 129.
- CPU, one chunk (e.g. a single image): a second session whose operators use
  every core gives the lowest latency (V1 ~12 ms instead of ~18 ms on one
  core), but making it costs about as much as making the first session
  (tens to hundreds of ms). So single chunks run on the single-threaded
  session until the time spent on them reaches what the first session took
  to make; then the all-core session is made (rent until the rent paid equals
  the price, then buy: never more than twice the better choice in hindsight).
  A process that encodes one image, the cold start, never pays for it.
- CUDA: the GPU session runs chunks in order while a thread pool preprocesses
  the next ones, since preprocessing, not the GPU, is then the bottleneck.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from berg_onnx.constants import check_positive_int
from berg_onnx.errors import InvalidParameterError, ModelLoadError
from berg_onnx.inputs.stimulus import as_stimulus
from berg_onnx.session import CUDA, create_session
from berg_onnx.source.graph import check_graph
from berg_onnx.source.local import ModelSource
from berg_onnx.source.manifest import INPUT_NAME, OUTPUT_NAME, ModelEntry, OfModel
from berg_onnx.utils.memory import check_output_size
from berg_onnx.utils.progress import ProgressBar, SilentBar, progress_bar

SCHEDULES = ("auto", "serial", "workers", "prefetch")
#: What ``load_encoding_model(schedule=...)`` also takes: "fixed" is resolved at load to
#: "prefetch" on CUDA and "workers" elsewhere, a schedule that never depends on how many
#: rows a call brings (the experiment engines' need: bit-identical rows on resume).
LOAD_SCHEDULES = (*SCHEDULES, "fixed")
#: Returns the preprocessed (stop - start, 3, 227, 227) float32 input of images start..stop.
ChunkSource = Callable[[int, int], np.ndarray]


@dataclass
class EncodingModel(OfModel):
    """A loaded fwRF model for one subject and ROI; cheap to keep and reuse.

    Safe to call from several threads at once.
    """

    entry: ModelEntry
    #: The GPU session, or on CPU the single-threaded one the per-core workers share.
    session: ort.InferenceSession = field(repr=False)
    provider: str
    device: str
    onnx_path: Path = field(repr=False)
    batch_size: int
    precision: str = "fp32"
    #: CPU cores to use: worker threads, or intra-op threads for a single chunk.
    threads: int = 1
    #: How chunks are scheduled (see the module docstring): "auto" picks by
    #: provider and chunk count; "serial", "workers" or "prefetch" force one.
    schedule: str = "auto"
    #: Seconds the model's session took to make: the price of a second, all-core one.
    session_seconds: float = 0.0
    _single_chunk_seconds: float = field(default=0.0, init=False, repr=False)
    _all_core_session: ort.InferenceSession | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if [i.name for i in inputs] != [INPUT_NAME] or [o.name for o in outputs] != [OUTPUT_NAME]:
            raise ModelLoadError(
                f"{self.onnx_path} is not a berg-onnx model: expected input {INPUT_NAME!r} "
                f"and output {OUTPUT_NAME!r}"
            )

    def __repr__(self) -> str:
        return (
            f"EncodingModel({self.model_id!r}, subject={self.subject}, roi={self.roi!r}, "
            f"voxels={self.n_voxels}, provider={self.provider!r}, precision={self.precision!r})"
        )

    def encode(
        self, stimulus: Any, *, batch_size: int | None = None, show_progress: bool | None = False
    ) -> np.ndarray:
        """(N, nv) float32 predicted responses, computed chunk by chunk.

        Rows of images skipped by a ``Stimulus`` made with ``on_error="skip"``
        are NaN; ``stimulus.failures`` names them and ``stimulus.ok_rows()``
        gives the others.
        """
        stim = as_stimulus(stimulus)
        step = check_positive_int(
            self.batch_size if batch_size is None else batch_size, "batch_size"
        )
        bar = progress_bar(len(stim), f"{self.roi} sub-{self.subject:02d}", show=show_progress)
        try:
            out = self.run_preprocessed(stim.chunk, len(stim), batch_size=step, bar=bar)
        finally:
            bar.close()
        failed = [f.index for f in stim.failures]  # on_error="skip": never a made-up response
        if failed:
            out[failed] = np.nan
        return out

    # -- BERG's model methods --------------------------------------------------------
    def generate_response(self, stimulus: Any) -> np.ndarray:
        """BERG's ``model.generate_response(stimulus)``: ``encode`` without a progress bar."""
        return self.encode(stimulus)

    def describe(self) -> dict[str, Any]:
        """BERG's ``model.describe()``: prints this model family's card, returns its dict."""
        from berg_onnx.source import cards

        return cards.describe(self.model_id)

    # -- scheduling ------------------------------------------------------------------
    def run_preprocessed(
        self,
        source: ChunkSource,
        n: int,
        *,
        batch_size: int | None = None,
        bar: ProgressBar | None = None,
    ) -> np.ndarray:
        """(n, nv) responses of images 0..n, fed chunk by chunk from ``source``.

        ``source(start, stop)`` returns those images' preprocessed float32 input
        (``as_model_input`` of resized uint8 rows). This is the loop ``encode``
        runs after validating its stimulus; the experiment engines (rows already
        resized once for many models) and the benchmarks ("model only" figures)
        call it directly, so every path shares one scheduling.
        """
        step = check_positive_int(
            self.batch_size if batch_size is None else batch_size, "batch_size"
        )
        bar = bar if bar is not None else SilentBar()
        check_output_size(n, self.n_voxels)  # before any work, not after an hour
        out = np.empty((n, self.n_voxels), dtype=np.float32)
        n_chunks = -(-n // step)
        schedule = self.schedule
        if schedule not in SCHEDULES:
            raise InvalidParameterError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        if schedule == "auto":
            if self.provider == CUDA:
                schedule = "prefetch"
            else:
                schedule = "workers" if self.threads > 1 and n_chunks > 1 else "serial"
        if schedule == "prefetch":
            self._run_prefetching(source, n, step, out, bar)
        elif schedule == "workers":
            self._run_workers(source, n, step, out, bar, min(self.threads, n_chunks))
        elif n_chunks == 1 and self.schedule == "auto":
            self._run_single_chunk(source, n, out)
            bar.update(n)
        else:
            session = self._single_chunk_session()
            for start in range(0, n, step):
                stop = min(n, start + step)
                out[start:stop] = self._infer(session, source(start, stop))
                bar.update(stop - start)
        return out

    def _run_single_chunk(self, source: ChunkSource, n: int, out: np.ndarray) -> None:
        """One chunk: on the all-core session once it has paid for itself (module docstring)."""
        session = self._all_core_session
        if session is None and self._single_chunk_seconds >= self.session_seconds:
            session = self._single_chunk_session()
        if session is not None:
            out[:] = self._infer(session, source(0, n))
            return
        t = time.perf_counter()
        out[:] = self._infer(self.session, source(0, n))
        with self._lock:
            self._single_chunk_seconds += time.perf_counter() - t

    def _infer(self, session: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
        """One chunk's (len(x), nv) float32 responses; anything else the graph returns (a
        (N, 1) column that would broadcast into every voxel, another dtype) is refused,
        and onnxruntime's own errors come back as one ModelLoadError naming the file."""
        try:
            y = session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
            text = " ".join(str(e).split())[:300]
            raise ModelLoadError(f"onnxruntime failed running {self.onnx_path}: {text}") from None
        want = (x.shape[0], self.n_voxels)
        if not isinstance(y, np.ndarray) or y.shape != want or y.dtype != np.float32:
            got = f"{y.dtype} {y.shape}" if isinstance(y, np.ndarray) else type(y).__name__
            raise ModelLoadError(
                f"{self.onnx_path} returned {got}, not float32 {want}: the graph does not "
                f"compute the manifest's {self.n_voxels} voxels per image; re-export it"
            )
        return y

    def _single_chunk_session(self) -> ort.InferenceSession:
        """On CPU with several cores, a session using all of them, made on first use."""
        if self.provider == CUDA or self.threads == 1:
            return self.session
        with self._lock:
            if self._all_core_session is None:
                self._all_core_session, _ = create_session(
                    self.onnx_path,
                    "cpu",
                    threads=self.threads,
                    sha256=self.entry.onnx_file(self.precision).sha256,
                )
            return self._all_core_session

    def _run_workers(
        self,
        source: ChunkSource,
        n: int,
        step: int,
        out: np.ndarray,
        bar: ProgressBar,
        workers: int,
    ) -> None:
        from concurrent.futures import ThreadPoolExecutor  # not at import: cold start

        session = self.session
        starts = iter(range(0, n, step))
        lock, failed = threading.Lock(), threading.Event()

        def work() -> None:
            try:
                while not failed.is_set():
                    with lock:
                        start = next(starts, None)
                    if start is None:
                        return
                    stop = min(n, start + step)
                    out[start:stop] = self._infer(session, source(start, stop))
                    with lock:
                        bar.update(stop - start)
            except BaseException:
                failed.set()  # the other workers stop after their current chunk
                raise

        with ThreadPoolExecutor(workers, thread_name_prefix="berg-encode") as pool:
            futures = [pool.submit(work) for _ in range(workers)]
            try:
                for f in futures:
                    f.result()
            except BaseException:  # a worker's error or Ctrl-C: stop the others, re-raise
                failed.set()
                raise

    def _run_prefetching(
        self, source: ChunkSource, n: int, step: int, out: np.ndarray, bar: ProgressBar
    ) -> None:
        # Worker threads preprocess the next chunks while onnxruntime runs this
        # one on the GPU; at most `ahead` chunks wait in memory.
        from concurrent.futures import ThreadPoolExecutor

        starts = list(range(0, n, step))
        ahead = min(len(starts), self.threads)
        with ThreadPoolExecutor(ahead, thread_name_prefix="berg-preprocess") as pool:
            queue = deque(pool.submit(source, s, min(n, s + step)) for s in starts[:ahead])
            try:
                for i, start in enumerate(starts):
                    x = queue.popleft().result()
                    if i + ahead < len(starts):
                        nxt = starts[i + ahead]
                        queue.append(pool.submit(source, nxt, min(n, nxt + step)))
                    stop = min(n, start + step)
                    out[start:stop] = self._infer(self.session, x)
                    bar.update(stop - start)
            except BaseException:
                for f in queue:
                    f.cancel()
                raise


def load_encoding_model(
    store: ModelSource,
    entry: ModelEntry,
    device: str,
    precision: str,
    *,
    batch_size: int | None,
    threads: int,
    schedule: str = "auto",
) -> EncodingModel:
    """A new EncodingModel for one manifest entry, its file fetched (and verified) from
    ``store``: the one loading path of BERG.get_encoding_model and the experiment engines.

    The session is single-threaded: on CPU, encode() runs one such call per core.
    ``batch_size`` None picks the provider's default (constants.py); ``schedule``
    is fixed here, at load (see the module docstring).
    """
    if schedule not in LOAD_SCHEDULES:
        raise InvalidParameterError(f"schedule must be one of {LOAD_SCHEDULES}, got {schedule!r}")
    from berg_onnx.constants import CPU_BATCH_SIZE, CUDA_BATCH_SIZE
    from berg_onnx.utils.cpu import warn_if_int8_unverified

    file = entry.onnx_file(precision)
    path = store.fetch(file)  # verified against file.sha256
    check_graph(path, entry.nv)  # operators, external data, input/output: before onnxruntime
    warn_if_int8_unverified(entry, precision)  # once per process, see cpu.py
    start = time.perf_counter()
    session, provider = create_session(path, device, threads=1, sha256=file.sha256)
    seconds = time.perf_counter() - start
    auto = CUDA_BATCH_SIZE if provider == CUDA else CPU_BATCH_SIZE
    if schedule == "fixed":
        schedule = "prefetch" if provider == CUDA else "workers"
    return EncodingModel(
        entry=entry,
        session=session,
        provider=provider,
        device=device,
        onnx_path=path,
        batch_size=batch_size or auto,
        precision=precision,
        threads=threads,
        schedule=schedule,
        session_seconds=seconds,
    )
