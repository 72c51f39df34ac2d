"""The local engine: a grid of models over one image set, block by block, on this machine.

Block-major order: the images of a block of chunks (about ``block_size``
images) are decoded and resized once, kept as 227x227 uint8, and fed to every
model that still lacks those chunks; one model is loaded at a time (the last
one of a block is reused by the next, which runs the models in reverse
order). Memory is therefore bounded by one block and one model, whatever the
grid's size, and each image is preprocessed once per run instead of once per
model.

Resume is per chunk: once a block's images are read, their records (sha256,
file identity, read errors) are written chunk by chunk; then each model's
chunks are computed one at a time, and each is written and recorded complete
as soon as it is computed, so a kill loses at most the chunk in flight.

Each chunk runs through ``EncodingModel.run_preprocessed``, the loop
``encode`` uses (worker threads per core on CPU, prefetching on CUDA). On
CUDA the next block is preprocessed on the CPU while the GPU runs the current one.

Rows come out bit-identical whether a chunk is computed in a first run or
after a resume: batches never straddle chunk boundaries (each chunk runs on
its own) and every batch runs on the same single-threaded session (see
job.load_model).
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from berg_onnx.constants import INPUT_SIZE, check_positive_int
from berg_onnx.engines._runs import RunLedger, RunReport
from berg_onnx.experiment.job import ExperimentJob, ModelPlan, encode_rows, load_model
from berg_onnx.experiment.stimuli import RowRecords
from berg_onnx.experiment.store import ExperimentStore
from berg_onnx.model import EncodingModel
from berg_onnx.session import CUDA
from berg_onnx.source.local import ModelSource
from berg_onnx.utils.progress import ProgressBar

#: Images preprocessed and held (as uint8, ~155 kB each) per block, on CPU: a
#: model load (0.1-0.3 s) is then <= ~2% of a block's time even for FFA-1.
DEFAULT_BLOCK_IMAGES = 1024
#: On CUDA a model runs a block ~50x faster while a session still takes ~1 s to
#: make, so blocks are larger there (1.3 GB of uint8, twice with prefetching).
CUDA_BLOCK_IMAGES = 8192
#: Images per preprocessing task (the thread pool's unit of work).
_PREPROCESS_STEP = 8


@dataclass(frozen=True)
class _Block:
    """Chunks of one block that some model still needs, and which model needs which."""

    chunks: tuple[int, ...]
    work: tuple[tuple[ModelPlan, tuple[int, ...]], ...]


class _Cache:
    """The preprocessed uint8 rows of a block's chunks, stacked in chunk order, and what
    reading them found (per-chunk RowRecords)."""

    def __init__(
        self,
        store: ExperimentStore,
        job: ExperimentJob,
        chunks: tuple[int, ...],
        pool: ThreadPoolExecutor,
    ) -> None:
        self.offset: dict[int, int] = {}
        spans, n = [], 0
        for c in chunks:
            start, stop = store.chunk_bounds(c)
            self.offset[c] = n
            spans.append((c, start, stop, n))
            n += stop - start
        self.rows = np.empty((n, 3, INPUT_SIZE, INPUT_SIZE), dtype=np.uint8)
        tasks: dict[int, list[Future]] = {}
        for c, start, stop, at in spans:
            for lo in range(start, stop, _PREPROCESS_STEP):
                hi = min(stop, lo + _PREPROCESS_STEP)
                tasks.setdefault(c, []).append(
                    pool.submit(self._fill, job, lo, hi, at + lo - start)
                )
        self.records: dict[int, RowRecords] = {
            c: RowRecords.join([t.result() for t in ts]) for c, ts in tasks.items()
        }

    def _fill(self, job: ExperimentJob, start: int, stop: int, at: int) -> RowRecords:
        rows, found = job.stimuli.read_checked(start, stop)
        self.rows[at : at + stop - start] = rows
        return found

    def chunk(self, store: ExperimentStore, c: int) -> np.ndarray:
        """The rows of chunk ``c`` (a view)."""
        return self.rows[self.offset[c] : self.offset[c] + store.chunk_rows(c)]


def _plan_blocks(store: ExperimentStore, todo: dict[ModelPlan, set[int]], block_size: int):
    per_block = max(1, block_size // store.chunk_size)
    blocks = []
    for first in range(0, store.n_chunks, per_block):
        span = range(first, min(store.n_chunks, first + per_block))
        work = tuple(
            (plan, tuple(c for c in span if c in missing))
            for plan, missing in todo.items()
            if any(c in missing for c in span)
        )
        if work:
            chunks = tuple(sorted({c for _, cs in work for c in cs}))
            blocks.append(_Block(chunks, work))
    return blocks


def _write(
    model: EncodingModel,
    store: ExperimentStore,
    plan: ModelPlan,
    cache: _Cache,
    chunks: tuple[int, ...],
    bar: ProgressBar,
) -> int:
    """Compute one model's chunks of a block, each written and recorded as soon as it is
    computed (one chunk per call of the encode loop: no batch straddles two chunks)."""
    for c in chunks:
        values = encode_rows(model, cache.chunk(store, c), bar)
        store.write_chunk(plan.subject, plan.roi, c, values, failed=cache.records[c].failed)
    return len(chunks)


def _may_use_cuda(device: str) -> bool:
    import onnxruntime as ort

    return device != "cpu" and CUDA in ort.get_available_providers()


def run_local(
    source: ModelSource,
    job: ExperimentJob,
    store: ExperimentStore,
    *,
    device: str = "auto",
    show_progress: bool | None = None,
    block_size: int | None = None,
    batch_size: int | None = None,
    threads: int = 1,
    prefetch: bool | None = None,
) -> RunReport:
    """Compute every chunk of ``job`` that ``store`` lacks; returns what was done.

    ``source``: where the model files come from (a BERG's ``store``).
    ``threads``: cores for preprocessing and for each model's encode loop.
    ``block_size``: images preprocessed at once (default by device, see above).
    ``prefetch``: preprocess the next block while the models run (default: on CUDA).
    """
    if block_size is None:
        block_size = CUDA_BLOCK_IMAGES if _may_use_cuda(device) else DEFAULT_BLOCK_IMAGES
    block_size = check_positive_int(block_size, "block_size")
    ledger = RunLedger(job, store, desc="experiment", show_progress=show_progress)
    if not ledger.missing:
        return ledger.report(0)
    blocks = _plan_blocks(store, ledger.todo, block_size)
    bar = ledger.bar
    written = 0
    loaded: tuple[ModelPlan, EncodingModel] | None = None
    pool = ThreadPoolExecutor(threads, thread_name_prefix="berg-preprocess")
    ahead = ThreadPoolExecutor(1, thread_name_prefix="berg-next-block")
    try:
        nxt: Future | None = None
        for k, block in enumerate(blocks):
            bar.set_description("preprocessing")
            cache = nxt.result() if nxt is not None else _Cache(store, job, block.chunks, pool)
            nxt = None
            for c in block.chunks:  # the rows' records before any chunk of theirs
                store.write_rows(c, cache.records[c])
            work = block.work[::-1] if k % 2 else block.work  # reuse the last model loaded
            for i, (plan, chunks) in enumerate(work):
                if loaded is None or loaded[0] is not plan:
                    loaded = None  # the previous session is freed before the next loads
                    model = load_model(source, plan, device, batch_size=batch_size, threads=threads)
                    loaded = (plan, model)
                ahead_on = loaded[1].provider == CUDA if prefetch is None else prefetch
                if i == 0 and ahead_on and k + 1 < len(blocks):
                    nb = blocks[k + 1].chunks  # the CPU prepares the next block meanwhile
                    nxt = ahead.submit(_Cache, store, job, nb, pool)
                bar.set_description(f"{plan.name} ({i + 1}/{len(work)})")
                written += _write(loaded[1], store, plan, cache, chunks, bar)
            cache = None  # freed before the next block is preprocessed
    finally:
        ahead.shutdown(wait=True, cancel_futures=True)
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    return ledger.report(written)
