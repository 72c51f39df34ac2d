"""Multivariate RNC (spec/rnc.md, "Multivariate RNC"): a genetic search for the batch of
images whose two ROIs' representational geometries agree (align) or do not (disentangle).

No N x N RSM is read from disk and none is held unless it fits the memory budget:

- each model's kept-voxel rows are z-scored and scaled by 1/sqrt(voxels), so that the
  dot product of two rows is their Pearson r; the rows of all subjects sit side by side
  (``_Rows``), and the train-subject average RSM of any images is one Gram product over
  the train subjects' columns divided by their number;
- ``rsm`` engine: where both ROIs' averaged RSMs fit the budget (N ~ 10^4), their lower
  triangles are built once by blocked float32 GEMMs and a batch is scored by gathering
  its 1,225 pairs;
- ``gram`` engine: otherwise each batch's 50 x 50 RSMs are computed on the fly as
  batched Gram products (memory independent of N; the rows go to a temporary
  memory-mapped file when even they exceed the budget).

Search scores use float32 products with float64 Pearson; the reported best and baseline
scores are recomputed in float64 from the store (``rsa_score``). The search records its
state after every generation (``checkpoint``) and a resumed search gives the same result.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from berg_onnx.constants import available_cores
from berg_onnx.control import _common as c
from berg_onnx.control._sampling import distinct, positions
from berg_onnx.control._store import ControlStore
from berg_onnx.control.results import MultivariateCV, MultivariateResult, MultivariateStats
from berg_onnx.control.stats import (
    ALPHA,
    binomial_p,
    bootstrap_ci,
    fdr_bh,
    pearson_rows,
    permutation_p,
)
from berg_onnx.errors import InvalidParameterError, ModelLoadError
from berg_onnx.utils.fileio import atomic_path

N_IMAGES = 50
N_BATCHES = 200
GENERATIONS = 2000
CONDITIONS = ("align", "disentangle")
ENGINES = ("auto", "rsm", "gram")
#: Fractions of a batch's images that its five mutated copies replace (the first is 1 image).
MUTATIONS = (None, 10, 25, 50, 75)
#: Offsets (in units of permutations) of each condition's slice of the test null scores;
#: slice 0 is the baseline's (the method's layout).
_NULL_SLICE = {"align": 1, "disentangle": 2}
_WORK_BYTES = 64 << 20  # scratch per block of scoring or RSM building


def mutation_counts(k: int) -> list[int]:
    """Images replaced in the five mutated copies: 1, then 10/25/50/75% (Python rounding)."""
    return [1] + [round(k / 100 * p) for p in MUTATIONS[1:]]


# -- rows ------------------------------------------------------------------------------
class _Rows:
    """Per ROI, an (n_pool, total voxels) float32 matrix of z-scored rows / sqrt(voxels),
    subjects' columns side by side; ``groups[subject]`` is that subject's column slice."""

    def __init__(self, cs, rois, subjects, threshold, memory: int, tmp: Path | None):
        self.kept = {(s, r): cs.kept_voxels(s, r, threshold) for s in subjects for r in rois}
        valid = np.ones(cs.n_images, dtype=bool)
        for (s, r), kept in self.kept.items():
            for a, b, rows in cs.blocks(s, r, kept):
                valid[a:b] &= np.isfinite(rows).all(axis=1) & (np.ptp(rows, axis=1) > 0)
        self.valid = valid
        self.pool = np.flatnonzero(valid)
        position = np.full(cs.n_images, -1)
        position[self.pool] = np.arange(self.pool.size)
        self.position = position
        self.groups: list[dict[int, slice]] = []
        self.matrices: list[np.ndarray] = []
        widths = [sum(self.kept[(s, r)].size for s in subjects) for r in rois]
        need = 4 * self.pool.size * sum(widths)
        self.mapped = need > memory
        for r, width in zip(rois, widths, strict=True):
            if self.mapped:
                assert tmp is not None
                m = np.lib.format.open_memmap(
                    tmp / f"rows-{r}.npy",
                    mode="w+",
                    dtype=np.float32,
                    shape=(self.pool.size, width),
                )
            else:
                m = np.empty((self.pool.size, width), dtype=np.float32)
            groups, at = {}, 0
            for s in subjects:
                kept = self.kept[(s, r)]
                groups[s] = slice(at, at + kept.size)
                for a, b, rows in cs.blocks(s, r, kept):
                    ok = valid[a:b]
                    m[position[a:b][ok], at : at + kept.size] = zscore(rows[ok])
                at += kept.size
            self.groups.append(groups)
            self.matrices.append(m)

    @property
    def nbytes(self) -> int:
        return sum(m.nbytes for m in self.matrices)


def zscore(rows: np.ndarray) -> np.ndarray:
    """Rows z-scored (population std) and divided by sqrt(columns): dot products = Pearson r."""
    z = rows - rows.mean(axis=1, keepdims=True)
    z /= z.std(axis=1, keepdims=True)
    z /= np.sqrt(rows.shape[1])
    return z


def _column_runs(groups: dict[int, slice], subjects: Sequence[int]) -> list[slice]:
    """The subjects' column slices merged into as few contiguous runs as possible."""
    runs: list[slice] = []
    for sl in sorted((groups[s] for s in subjects), key=lambda x: x.start):
        if runs and runs[-1].stop == sl.start:
            runs[-1] = slice(runs[-1].start, sl.stop)
        else:
            runs.append(sl)
    return runs


# -- engines: RSA scores of many sorted batches ------------------------------------------------
class _RSMEngine:
    """Both ROIs' subject-averaged RSMs over the pool: lower triangles packed row after row,
    the two ROIs' float32 values of a pair side by side, read as one complex64 (a single
    gather fetches both: the gather's cache misses dominate a generation)."""

    name = "rsm"

    def __init__(self, rows: _Rows, subjects: Sequence[int]):
        n = rows.pool.size
        self.packed = np.empty((n * (n - 1) // 2, 2), dtype=np.float32)
        index = np.int32 if n * (n - 1) // 2 < 2**31 else np.int64
        self.offsets = (np.arange(n, dtype=np.int64) * (np.arange(n) - 1) // 2).astype(index)
        for r, (matrix, groups) in enumerate(zip(rows.matrices, rows.groups, strict=True)):
            runs = _column_runs(groups, subjects)
            step = max(1, _WORK_BYTES // (8 * max(n, 1)))
            for a in range(0, n, step):
                b = min(n, a + step)
                g = sum(matrix[a:b, run] @ matrix[:b, run].T for run in runs)
                g /= np.float32(len(subjects))
                below = np.arange(a, b)[:, None] > np.arange(b)[None, :]
                self.packed[a * (a - 1) // 2 : b * (b - 1) // 2, r] = g[below]
        self.pairs = self.packed.view(np.complex64).ravel()

    @staticmethod
    def nbytes(n: int) -> int:
        return 2 * 4 * (n * (n - 1) // 2)

    def score(self, batches: np.ndarray) -> np.ndarray:
        k = batches.shape[1]
        big, small = np.tril_indices(k, -1)  # positions big > small: the larger image
        out = np.empty(len(batches))
        step = max(1, _WORK_BYTES // (32 * big.size))
        for a in range(0, len(batches), step):
            part = batches[a : a + step].astype(self.offsets.dtype)
            flat = self.offsets[part][:, big] + part[:, small]
            values = np.take(self.pairs, flat)  # (B, pairs) complex64: (ROI 1, ROI 2)
            out[a : a + step] = pearson_rows(values.real, values.imag)
        return out


class _GramEngine:
    """RSA scores from batched Gram products of the batch's rows (no RSM held)."""

    name = "gram"

    def __init__(self, rows: _Rows, subjects: Sequence[int]):
        self.rows = rows
        self.runs = [_column_runs(g, subjects) for g in rows.groups]
        self.n_subjects = len(subjects)
        self.workers = available_cores() if _has_threadpoolctl() else 1

    def rsms(self, batches: np.ndarray, roi: int) -> np.ndarray:
        """(B, k, k) float32 subject-averaged RSMs of ROI ``roi`` for each batch: each batch's
        rows gathered into one reused buffer (fresh memory per gather costs more than the
        product), then one GEMM per column run (numpy's stacked matmul of transposed views
        is ~9x slower)."""
        matrix = self.rows.matrices[roi]
        k = batches.shape[1]
        buf = np.empty((k, matrix.shape[1]), dtype=np.float32)
        out = np.zeros((len(batches), k, k), dtype=np.float32)
        for i, batch in enumerate(batches):
            np.take(matrix, batch, axis=0, out=buf)
            for run in self.runs[roi]:
                part = buf[:, run]
                out[i] += part @ part.T
        out /= np.float32(self.n_subjects)
        return out

    def score(self, batches: np.ndarray) -> np.ndarray:
        """Scores of many batches: the batches split over one thread per core, each running
        single-threaded GEMMs (a 50 x V x 50 product is 3.5x faster on one BLAS thread than
        on two; threads then share the batches). Each batch's score is computed the same way
        whatever the split, so results do not depend on the number of threads."""
        parts = np.array_split(np.arange(len(batches)), min(self.workers, len(batches)) or 1)
        with _one_blas_thread():
            if len(parts) == 1:
                return self._score(batches)
            with ThreadPoolExecutor(len(parts)) as pool:
                return np.concatenate(list(pool.map(lambda i: self._score(batches[i]), parts)))

    def _score(self, batches: np.ndarray) -> np.ndarray:
        k = batches.shape[1]
        below, left = np.tril_indices(k, -1)
        step = 256
        out = np.empty(len(batches))
        for a in range(0, len(batches), step):
            part = batches[a : a + step]
            v = [self.rsms(part, r)[:, below, left] for r in range(2)]
            out[a : a + step] = pearson_rows(v[0], v[1])
        return out


def _has_threadpoolctl() -> bool:
    try:
        import threadpoolctl  # noqa: F401
    except ImportError:
        return False
    return True


def _one_blas_thread():
    """threadpoolctl's limit of BLAS to one thread where it is installed (the [control]
    extra), else nothing (BLAS then uses its own threads inside each product). Small
    products run under it only: after OpenBLAS's threads are limited and restored, small
    multi-threaded products were 6x slower than before, large ones unchanged."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def choose_engine(engine: str, n_pool: int, rows_bytes: int, memory: int) -> str:
    if engine not in ENGINES:
        raise InvalidParameterError(f"engine must be one of {', '.join(ENGINES)}; got {engine!r}")
    if engine != "auto":
        return engine
    fits = rows_bytes + _RSMEngine.nbytes(n_pool) + 4 * _WORK_BYTES <= memory
    return "rsm" if fits else "gram"


# -- exact scores ----------------------------------------------------------------------
def _exact_rows(cs, rois, subjects, kept, rows_needed: np.ndarray) -> dict:
    """{(subject, roi): (len(rows_needed), voxels) float64 z-scored rows} read from the store."""
    rows_needed = np.asarray(rows_needed)
    unique, inverse = np.unique(rows_needed, return_inverse=True)
    out = {}
    for s in subjects:
        for r in rois:
            got = np.empty((unique.size, kept[(s, r)].size))
            for a, b, block in cs.blocks(s, r, kept[(s, r)]):
                lo, hi = np.searchsorted(unique, [a, b])
                if hi > lo:
                    got[lo:hi] = block[unique[lo:hi] - a]
            out[(s, r)] = zscore(got)[inverse]
    return out


def _exact_score(z: dict, rois, subjects, batch_slots: np.ndarray) -> float:
    """float64 RSA score of one batch (slots into the rows of ``z``) on ``subjects``."""
    k = batch_slots.size
    below, left = np.tril_indices(k, -1)
    tri = []
    with _one_blas_thread():  # small products: see _GramEngine.score
        for r in rois:
            rsm = sum(z[(s, r)][batch_slots] @ z[(s, r)][batch_slots].T for s in subjects)
            tri.append((rsm / len(subjects))[below, left])
    return float(pearson_rows(tri[0], tri[1]))


def rsa_score(
    store: Any,
    roi_1: str,
    roi_2: str,
    images: Sequence[int],
    *,
    subjects: Any = None,
    ncsnr_threshold: float = c.NCSNR_THRESHOLD,
    berg: Any = None,
) -> float:
    """The RSA score of a batch (store rows) by the method's definition, in float64: the
    Pearson r of the two ROIs' subject-averaged RSMs over the batch's lower triangle."""
    rois = c.check_rois(roi_1, roi_2)
    cs = store if isinstance(store, ControlStore) else ControlStore(store, berg=berg)
    chosen = cs.choose_subjects(subjects, rois, False)
    threshold = c.check_float(ncsnr_threshold, "ncsnr_threshold")
    images = np.asarray(images)
    if images.ndim != 1 or images.size < 3 or not np.issubdtype(images.dtype, np.integer):
        raise InvalidParameterError("images must be 3 or more store row indices")
    if images.min() < 0 or images.max() >= cs.n_images or np.unique(images).size != images.size:
        raise InvalidParameterError(f"images must be distinct rows of 0..{cs.n_images - 1}")
    kept = {(s, r): cs.kept_voxels(s, r, threshold) for s in chosen for r in rois}
    z = _exact_rows(cs, rois, chosen, kept, images)
    return _exact_score(z, rois, chosen, np.arange(images.size))


# -- the null distribution and the baseline --------------------------------------------
def _null(engine, test_engine, n_pool, k, n_null, n_test, seed, bar, block=4096):
    """Scores of ``n_null`` random batches; the one closest to their mean (sorted pool
    positions), its score, the mean; and the first ``n_test`` batches on ``test_engine``."""
    gen = c.rng(seed, c.STREAM_MULTI_NULL)
    scores = np.empty(n_null)
    tests = np.empty(n_test)
    states = []
    for a in range(0, n_null, block):
        b = min(n_null, a + block)
        states.append(gen.bit_generator.state)
        batches = np.sort(distinct(gen, b - a, k, n_pool), axis=1)
        scores[a:b] = engine.score(batches)
        if test_engine is not None and a < n_test:
            upto = min(b, n_test)
            tests[a:upto] = test_engine.score(batches[: upto - a])
        if bar is not None:
            bar.update(b - a)
    mean = float(np.nanmean(scores))
    best = int(np.nanargmin(np.abs(scores - mean)))
    gen.bit_generator.state = states[best // block]
    a = best // block * block
    batch = np.sort(distinct(gen, min(n_null, a + block) - a, k, n_pool), axis=1)[best - a]
    return batch, float(scores[best]), mean, tests


# -- the genetic search ----------------------------------------------------------------
def _rank_key(scores: np.ndarray, condition: str) -> np.ndarray:
    key = -scores if condition == "align" else np.abs(scores)
    return np.where(np.isnan(key), np.inf, key)


def _mutate(gen, population: np.ndarray, n_pool: int) -> np.ndarray:
    """(n, 5, k): each batch's five mutated copies, in the order of ``mutation_counts``."""
    n, k = population.shape
    out = np.repeat(population[:, None, :], 5, axis=1)
    for level, m in enumerate(mutation_counts(k)):
        if m == 0:
            continue
        where = positions(gen, n, m, k)
        new = distinct(gen, n, m, n_pool, exclude=population)
        np.put_along_axis(out[:, level], where, new, axis=1)
    return out


class _Checkpoint:
    """The search state after each generation, in one npz replaced atomically."""

    def __init__(self, path: Path | None, key: str):
        self.path, self.key = path, key

    def load(self) -> dict | None:
        if self.path is None or not self.path.is_file():
            return None
        try:
            with np.load(self.path, allow_pickle=False) as f:
                state = {k: f[k] for k in f.files}
        except (OSError, ValueError, EOFError) as e:
            raise ModelLoadError(f"cannot read the search state {self.path}: {e}") from None
        if str(state["key"]) != self.key:
            raise InvalidParameterError(
                f"{self.path} records a search with other parameters or another store; "
                "delete it (or choose another --out) to start over"
            )
        return state

    def save(self, **arrays: Any) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, key=np.array(self.key), **arrays)


def _search(engine, n_pool, k, n_batches, generations, condition, gen, checkpoint, bar):
    """(best score per generation, best batch per generation (pool positions))."""
    state = checkpoint.load()
    if state is None:
        population = np.sort(distinct(gen, n_batches, k, n_pool), axis=1)
        scores = engine.score(population)
        best_scores = np.full(generations, np.nan)
        best = np.zeros((generations, k), dtype=np.int64)
        start = 0
    else:
        population, scores = state["population"].astype(np.int64), state["scores"]
        best_scores, best = state["best_scores"], state["best"].astype(np.int64)
        start = int(state["generation"])
        gen.bit_generator.state = json.loads(str(state["rng"]))
        if bar is not None:
            bar.update(start)
    for g in range(start, generations):
        mutated = _mutate(gen, population, n_pool).reshape(-1, k)
        fresh = distinct(gen, len(population) + len(mutated), k, n_pool)
        new = np.sort(np.concatenate([mutated, fresh]), axis=1)
        every = np.concatenate([population, new])
        every_scores = np.concatenate([scores, engine.score(new)])  # kept batches: known
        keep = np.argsort(_rank_key(every_scores, condition), kind="stable")[:n_batches]
        population, scores = every[keep], every_scores[keep]
        best_scores[g], best[g] = scores[0], population[0]
        checkpoint.save(
            generation=np.array(g + 1),
            population=population.astype(np.int32),
            scores=scores,
            best_scores=best_scores,
            best=best.astype(np.int32),
            rng=np.array(json.dumps(gen.bit_generator.state)),
        )
        if bar is not None:
            bar.update(1)
    return best_scores, best


# -- the public function ---------------------------------------------------------------
def _memory(value: Any) -> int:
    if isinstance(value, str):
        text = value.strip().upper().removesuffix("B")
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
        try:
            if text and text[-1] in scale:
                return int(float(text[:-1]) * scale[text[-1]])
            return int(float(text))
        except ValueError:
            raise InvalidParameterError(
                f"memory must be bytes or a size such as '2GB', got {value!r}"
            ) from None
    return c.check_int(value, "memory", 1 << 20)


def multivariate(
    store: Any,
    roi_1: str,
    roi_2: str,
    *,
    condition: str = "align",
    cv: bool = False,
    subjects: Any = None,
    generations: int = GENERATIONS,
    n_batches: int = N_BATCHES,
    n_images: int = N_IMAGES,
    null_samples: int = c.NULL_SAMPLES,
    ncsnr_threshold: float = c.NCSNR_THRESHOLD,
    seed: int = c.SEED,
    permutations: int = c.STATS_SAMPLES,
    bootstrap: int = c.STATS_SAMPLES,
    memory: Any = c.MEMORY,
    engine: str = "auto",
    checkpoint: str | os.PathLike[str] | None = None,
    berg: Any = None,
    show_progress: bool = False,
) -> MultivariateResult | MultivariateCV:
    """Multivariate RNC of ``roi_1`` vs ``roi_2`` (``condition`` "align" or "disentangle").

    Returns a MultivariateResult (``cv=False``) or a MultivariateCV (one result per
    left-out subject + statistics). ``checkpoint`` is a folder where the search records
    its state after each generation; calling again with the same arguments resumes.
    ``memory`` (bytes or "2GB") bounds what is held; ``engine`` forces "rsm" or "gram".
    """
    rois = c.check_rois(roi_1, roi_2)
    if condition not in CONDITIONS:
        raise InvalidParameterError(
            f"condition must be one of {', '.join(CONDITIONS)}; got {condition!r}"
        )
    if not isinstance(cv, bool):
        raise InvalidParameterError(f"cv must be True or False, got {cv!r}")
    params = {
        "condition": condition,
        "cv": cv,
        "generations": c.check_int(generations, "generations"),
        "n_batches": c.check_int(n_batches, "n_batches"),
        "n_images": c.check_int(n_images, "n_images", 3),
        "null_samples": c.check_int(null_samples, "null_samples"),
        "ncsnr_threshold": c.check_float(ncsnr_threshold, "ncsnr_threshold"),
        "seed": c.check_int(seed, "seed", 0),
        "permutations": c.check_int(permutations, "permutations"),
        "bootstrap": c.check_int(bootstrap, "bootstrap"),
    }
    budget = _memory(memory)
    if cv and params["null_samples"] < 3 * params["permutations"]:
        raise InvalidParameterError(
            f"the within-subject test reads 3 x permutations null batches "
            f"({3 * params['permutations']}); null_samples is {params['null_samples']}: "
            "raise null_samples or lower permutations"
        )
    cs = store if isinstance(store, ControlStore) else ControlStore(store, berg=berg)
    chosen = cs.choose_subjects(subjects, rois, cv)
    k = params["n_images"]
    tmp = Path(tempfile.mkdtemp(prefix="berg-onnx-rnc-"))
    try:
        started = time.perf_counter(), time.process_time()
        rows = _Rows(cs, rois, chosen, params["ncsnr_threshold"], budget // 2, tmp)
        read_s = time.perf_counter() - started[0], time.process_time() - started[1]
        n_pool = rows.pool.size
        excluded = np.flatnonzero(~rows.valid)
        c.check_pool(n_pool, k, cs.n_images, excluded.size, "multivariate RNC")
        need = k + max(mutation_counts(k))
        if n_pool < need:
            raise InvalidParameterError(
                f"multivariate RNC with batches of {k} needs at least {need} images (its "
                f"largest mutation replaces {need - k} images with ones not in the batch); "
                f"{n_pool} remain: use a smaller n_images or a store with more images"
            )
        kind = choose_engine(engine, n_pool, rows.nbytes, budget)
        params.update(
            engine=kind,
            memory=budget,
            rows_mapped=rows.mapped,
            fingerprint=cs.fingerprint(chosen, rois),
            store=cs.path,
        )
        labels = tuple(cs.labels())
        results = []
        for fold in c.folds(chosen, cv):
            results.append(
                _fold(cs, rows, rois, chosen, fold, params, kind, checkpoint, show_progress)
            )
            results[-1]["params"]["timings"].update(read_s=read_s[0], read_cpu_s=read_s[1])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    results = [
        MultivariateResult(**{**r, "excluded_images": excluded, "labels": labels}) for r in results
    ]
    if not cv:
        return results[0]
    stats = multivariate_stats([results], params["bootstrap"], params["seed"])
    return MultivariateCV(
        rois=rois,
        condition=condition,
        subjects=chosen,
        folds=tuple(results),
        stats=stats,
        excluded_images=excluded,
        labels=labels,
        params=params,
    )


def _key(params: dict, fold: c.Fold) -> str:
    search = {
        k: params[k]
        for k in (
            "condition",
            "generations",
            "n_batches",
            "n_images",
            "ncsnr_threshold",
            "seed",
            "engine",
            "fingerprint",
        )
    }
    text = json.dumps({**search, "train": fold.train, "test": fold.test}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _fold(cs, rows, rois, subjects, fold, params, kind, checkpoint, show_progress) -> dict:
    k, n_pool = params["n_images"], rows.pool.size
    clock = [(time.perf_counter(), time.process_time())]
    timings: dict[str, float] = {}

    def lap(name: str) -> None:  # wall and CPU seconds (all threads) of a step
        clock.append((time.perf_counter(), time.process_time()))
        timings[f"{name}_s"] = clock[-1][0] - clock[-2][0]
        timings[f"{name}_cpu_s"] = clock[-1][1] - clock[-2][1]

    engine = (_RSMEngine if kind == "rsm" else _GramEngine)(rows, fold.train)
    lap("engine")
    test_engine = None if fold.test is None else _GramEngine(rows, [fold.test])
    n_test = 0 if fold.test is None else 3 * params["permutations"]
    who = "all subjects" if fold.test is None else f"without sub-{fold.test:02d}"
    bar = _bar(show_progress, params["null_samples"], f"null samples ({who})")
    base, base_search, null_mean, null_test = _null(
        engine, test_engine, n_pool, k, params["null_samples"], n_test, params["seed"], bar
    )
    _close(bar)
    lap("null")
    path = None
    if checkpoint is not None:
        name = f"search-{params['condition']}-{'all' if fold.test is None else fold.test}.npz"
        path = Path(checkpoint) / name
    bar = _bar(show_progress, params["generations"], f"{params['condition']} ({who})")
    gen = c.rng(params["seed"], c.STREAM_MULTI_SEARCH, fold.test or 0)
    search_scores, best = _search(
        engine,
        n_pool,
        k,
        params["n_batches"],
        params["generations"],
        params["condition"],
        gen,
        _Checkpoint(path, _key(params, fold)),
        bar,
    )
    _close(bar)
    lap("search")
    tests = np.full(params["generations"], np.nan)
    if test_engine is not None:
        tests = test_engine.score(best)
    # exact float64 scores of the final best batch and the baseline, from the store
    final = best[-1]
    z = _exact_rows(cs, rois, subjects, rows.kept, rows.pool[np.concatenate([final, base])])
    slots_final, slots_base = np.arange(k), np.arange(k, 2 * k)
    best_score = _exact_score(z, rois, fold.train, slots_final)
    scores = search_scores.copy()
    test_score = test_base = float("nan")
    if fold.test is not None:
        test_score = _exact_score(z, rois, [fold.test], slots_final)
        test_base = _exact_score(z, rois, [fold.test], slots_base)
        tests[-1] = test_score
    lap("scores")
    return {
        "rois": rois,
        "condition": params["condition"],
        "subjects": subjects,
        "train_subjects": fold.train,
        "test_subject": -1 if fold.test is None else fold.test,
        "best_images": rows.pool[final],
        "best_score": best_score,
        "scores": scores,
        "best_batches": rows.pool[best],
        "baseline_images": rows.pool[base],
        "baseline_score": _exact_score(z, rois, fold.train, slots_base),
        "null_mean": null_mean,
        "test_scores": tests,
        "test_score": test_score,
        "test_baseline_score": test_base,
        "null_test_scores": null_test,
        "params": {**params, "timings": timings},
    }


def _bar(show: bool, total: int, desc: str):
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, unit_scale=True)


def _close(bar) -> None:
    if bar is not None:
        bar.close()


def multivariate_stats(
    per_condition: Sequence[Sequence[MultivariateResult]],
    bootstrap: int,
    seed: int,
    alpha: float = ALPHA,
) -> MultivariateStats:
    """Test-subject statistics over one or more conditions' cross-validated results (each
    a list of folds over the same subjects); FDR runs over the conditions given."""
    conditions = tuple(folds[0].condition for folds in per_condition)
    if len(set(conditions)) != len(conditions):
        raise InvalidParameterError(f"each condition once, got {conditions}")
    subjects = tuple(f.test_subject for f in per_condition[0])
    for folds in per_condition:
        if tuple(f.test_subject for f in folds) != subjects or min(subjects) < 0:
            raise InvalidParameterError("statistics need cross-validated results (cv=True)")
    n_perm = per_condition[0][0].params["permutations"]
    scores = np.array([[f.test_score for f in folds] for folds in per_condition]).T
    baseline = np.array([f.test_baseline_score for f in per_condition[0]])
    p = np.empty_like(scores)
    for j, folds in enumerate(per_condition):
        for i, f in enumerate(folds):
            null = f.null_test_scores
            o = _NULL_SLICE[f.condition]
            diff = null[o * n_perm : (o + 1) * n_perm] - null[:n_perm]
            p[i, j] = permutation_p(
                diff, f.test_score - f.test_baseline_score, f.condition == "align"
            )
    significant = np.stack([fdr_bh(row, alpha) for row in p])
    between = np.array(
        [binomial_p(significant[:, j].sum(), len(subjects), alpha) for j in range(len(conditions))]
    )
    values = np.concatenate([scores, baseline[:, None]], axis=1)
    ci = bootstrap_ci(values, bootstrap, c.rng(seed, c.STREAM_MULTI_BOOTSTRAP)).T
    return MultivariateStats(
        conditions=conditions,
        test_subjects=subjects,
        test_scores=scores,
        test_baseline_scores=baseline,
        ci=ci,
        p_values=p,
        significant=significant,
        between_p=between,
        alpha=alpha,
    )
