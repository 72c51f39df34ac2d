"""Univariate RNC (spec/rnc.md, "Univariate RNC"): images that drive or suppress two ROIs'
mean responses together (align) or apart (disentangle).

Vectorised: the 10^6-batch null distributions of every ROI and fold are scored in one
pass over blocks of batches (the same batches for each, as the method's fixed seed
gives), and the permutation null draws all permutations of a block at once. Only the
images the statistics look at are drawn, which is the same distribution as shuffling
all images and reading those positions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from berg_onnx.control import _common as c
from berg_onnx.control._sampling import distinct
from berg_onnx.control._store import ControlStore
from berg_onnx.control.results import (
    CONDITIONS,
    UnivariateBaseline,
    UnivariateCV,
    UnivariateResult,
    UnivariateStats,
)
from berg_onnx.control.stats import ALPHA, binomial_p, bootstrap_ci, fdr_bh, permutation_p
from berg_onnx.errors import InvalidParameterError

MARGIN = 0.04
N_IMAGES = 25
#: Per condition, per ROI: True where the ROI must be high (above its baseline).
_HIGH = {
    "high_1_high_2": (True, True),
    "low_1_low_2": (False, False),
    "high_1_low_2": (True, False),
    "low_1_high_2": (False, True),
}
_NULL_BLOCK_VALUES = 1 << 22  # gathered values per null block (32 MB float64)


def _open(store: Any, berg: Any) -> ControlStore:
    return store if isinstance(store, ControlStore) else ControlStore(store, berg=berg)


def univariate_responses(
    cs: ControlStore, rois: Sequence[str], subjects: tuple[int, ...], threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """(S, R, N) float64 mean over each model's kept voxels, and the (N,) valid-image mask
    (False where a kept voxel of any subject or ROI is not finite: a skipped image)."""
    n = cs.n_images
    out = np.empty((len(subjects), len(rois), n))
    valid = np.ones(n, dtype=bool)
    for i, s in enumerate(subjects):
        for j, roi in enumerate(rois):
            kept = cs.kept_voxels(s, roi, threshold)
            for a, b, rows in cs.blocks(s, roi, kept):
                valid[a:b] &= np.isfinite(rows).all(axis=1)
                out[i, j, a:b] = rows.mean(axis=1)
    out[:, :, ~valid] = np.nan
    return out, valid


def _null_baselines(
    series: np.ndarray, n_null: int, k: int, seed: int, bar: Any = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each row of ``series`` ((M, P) values over the pool): the null batch whose mean
    is closest to the null distribution's mean. Returns (positions (M, k), scores (M,),
    null means (M,)). Every row is scored on the same batches."""
    m, p = series.shape
    gen = c.rng(seed, c.STREAM_UNI_NULL)
    step = max(1, _NULL_BLOCK_VALUES // (m * k))
    scores = np.empty((m, n_null))
    states = []
    for a in range(0, n_null, step):
        b = min(n_null, a + step)
        states.append(gen.bit_generator.state)
        idx = distinct(gen, b - a, k, p)
        scores[:, a:b] = series[:, idx].mean(axis=2)
        if bar is not None:
            bar.update(b - a)
    means = scores.mean(axis=1)
    best = np.argmin(np.abs(scores - means[:, None]), axis=1)  # first of equals
    images = np.empty((m, k), dtype=np.int64)
    for row, i in enumerate(best):
        block = i // step
        gen.bit_generator.state = states[block]
        a = block * step
        idx = distinct(gen, min(n_null, a + step) - a, k, p)
        images[row] = np.sort(idx[i - a])
    return images, scores[np.arange(m), best], means


def rankings(train: np.ndarray, baselines: np.ndarray, margin: float) -> dict[str, np.ndarray]:
    """The four rankings of pool positions ((2, P) train responses): sum descending and
    ascending, difference ROI1 - ROI2 descending and ascending, each keeping only images
    on the required side of both baselines by at least ``margin``."""
    r1, r2 = train
    total, diff = r1 + r2, r1 - r2
    up_sum = np.argsort(total, kind="stable")
    up_diff = np.argsort(diff, kind="stable")
    orders = {
        "high_1_high_2": up_sum[::-1],
        "low_1_low_2": up_sum,
        "high_1_low_2": up_diff[::-1],
        "low_1_high_2": up_diff,
    }
    out = {}
    for name, order in orders.items():
        keep = np.ones(order.size, dtype=bool)
        for r, high in enumerate(_HIGH[name]):
            values = train[r, order]
            keep &= values >= baselines[r] + margin if high else values <= baselines[r] - margin
        out[name] = order[keep]
    return out


def univariate_baseline(
    store: Any,
    roi: str,
    *,
    cv: bool = False,
    subjects: Any = None,
    null_samples: int = c.NULL_SAMPLES,
    n_images: int = N_IMAGES,
    ncsnr_threshold: float = c.NCSNR_THRESHOLD,
    seed: int = c.SEED,
    berg: Any = None,
    show_progress: bool = False,
) -> UnivariateBaseline:
    """One ROI's univariate baseline (per left-out subject with ``cv``), to pass to
    ``univariate(..., baseline=...)`` for every pair the ROI is in."""
    cs = _open(store, berg)
    params = _params(cv, null_samples, n_images, ncsnr_threshold, seed)
    chosen = cs.choose_subjects(subjects, [roi], params["cv"])
    u, valid = univariate_responses(cs, [roi], chosen, params["ncsnr_threshold"])
    pool = np.flatnonzero(valid)
    c.check_pool(pool.size, params["n_images"], cs.n_images, int((~valid).sum()), "univariate RNC")
    fold_list = c.folds(chosen, params["cv"])
    return _baselines(cs, [roi], chosen, fold_list, u, pool, params, show_progress)[0]


def _params(cv, null_samples, n_images, ncsnr_threshold, seed) -> dict[str, Any]:
    if not isinstance(cv, bool):
        raise InvalidParameterError(f"cv must be True or False, got {cv!r}")
    return {
        "cv": cv,
        "null_samples": c.check_int(null_samples, "null_samples"),
        "n_images": c.check_int(n_images, "n_images"),
        "ncsnr_threshold": c.check_float(ncsnr_threshold, "ncsnr_threshold"),
        "seed": c.check_int(seed, "seed", 0),
    }


def _baselines(cs, rois, subjects, fold_list, u, pool, params, show_progress):
    index = {s: i for i, s in enumerate(subjects)}
    series = []
    for r in range(len(rois)):
        for fold in fold_list:
            series.append(u[[index[s] for s in fold.train], r][:, pool].mean(axis=0))
    bar = _bar(show_progress, params["null_samples"], "univariate null samples")
    images, scores, means = _null_baselines(
        np.array(series), params["null_samples"], params["n_images"], params["seed"], bar
    )
    if bar is not None:
        bar.close()
    out = []
    f = len(fold_list)
    for r, roi in enumerate(rois):
        rows = pool[images[r * f : (r + 1) * f]]
        tests = np.array(
            [
                np.nan if fold.test is None else u[index[fold.test], r, rows[i]].mean()
                for i, fold in enumerate(fold_list)
            ]
        )
        out.append(
            UnivariateBaseline(
                roi=roi,
                subjects=subjects,
                test_subjects=tuple(-1 if fold.test is None else fold.test for fold in fold_list),
                images=rows,
                scores=scores[r * f : (r + 1) * f].copy(),
                test_scores=tests,
                null_means=means[r * f : (r + 1) * f].copy(),
                params={**params, "fingerprint": cs.fingerprint(subjects, [roi])},
            )
        )
    return out


def _bar(show: bool, total: int, desc: str):
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="", unit_scale=True, leave=False)


def _given_baselines(baseline, rois, cs, subjects, fold_list, params, valid):
    """The caller's baselines for (roi_1, roi_2), each checked against this run."""
    if isinstance(baseline, UnivariateBaseline):
        baseline = [baseline]
    if isinstance(baseline, (UnivariateResult, UnivariateCV)):
        baseline = list(baseline.baselines)
    if isinstance(baseline, Mapping):
        baseline = list(baseline.values())
    found = {}
    for b in baseline:
        if not isinstance(b, UnivariateBaseline):
            raise InvalidParameterError(
                "baseline must be UnivariateBaseline objects (univariate_baseline(...) or a "
                f"previous result's .baselines), got {type(b).__name__}"
            )
        if b.roi in rois:
            found[b.roi] = b
    out = []
    for roi in rois:
        if roi not in found:
            raise InvalidParameterError(
                f"baseline= gives no baseline for {roi}; it has: {', '.join(found) or 'none'}"
            )
        b = found[roi]
        want = {**params, "fingerprint": cs.fingerprint(subjects, [roi])}
        if b.subjects != subjects or b.params != want or len(b.images) != len(fold_list):
            raise InvalidParameterError(
                f"the baseline given for {roi} was computed for other subjects, parameters or "
                f"store ({b.subjects}, {b.params}); this run: {subjects}, {want}"
            )
        if not valid[b.images].all():
            raise InvalidParameterError(
                f"the baseline given for {roi} uses images left out of this pair (NaN rows)"
            )
        out.append(b)
    return out


def univariate(
    store: Any,
    roi_1: str,
    roi_2: str,
    *,
    cv: bool = False,
    subjects: Any = None,
    null_samples: int = c.NULL_SAMPLES,
    n_images: int = N_IMAGES,
    margin: float = MARGIN,
    ncsnr_threshold: float = c.NCSNR_THRESHOLD,
    seed: int = c.SEED,
    baseline: Any = None,
    permutations: int = c.STATS_SAMPLES,
    bootstrap: int = c.STATS_SAMPLES,
    berg: Any = None,
    show_progress: bool = False,
) -> UnivariateResult | UnivariateCV:
    """Univariate RNC of ``roi_1`` vs ``roi_2`` on a run store (path or ControlStore).

    Returns a UnivariateResult (``cv=False``: controlling images chosen on the mean of all
    subjects) or a UnivariateCV (``cv=True``: one UnivariateResult per left-out subject,
    chosen on the others, plus the test-subject statistics). ``baseline`` reuses baselines
    (``univariate_baseline`` results or a previous result's ``.baselines``).
    """
    rois = c.check_rois(roi_1, roi_2)
    cs = _open(store, berg)
    params = _params(cv, null_samples, n_images, ncsnr_threshold, seed)
    margin = c.check_float(margin, "margin", 0.0)
    permutations = c.check_int(permutations, "permutations")
    bootstrap = c.check_int(bootstrap, "bootstrap")
    chosen = cs.choose_subjects(subjects, rois, params["cv"])
    u, valid = univariate_responses(cs, rois, chosen, params["ncsnr_threshold"])
    pool = np.flatnonzero(valid)
    excluded = np.flatnonzero(~valid)
    c.check_pool(pool.size, params["n_images"], cs.n_images, excluded.size, "univariate RNC")
    fold_list = c.folds(chosen, params["cv"])
    given = (
        None
        if baseline is None
        else _given_baselines(baseline, rois, cs, chosen, fold_list, params, valid)
    )
    bases = given or _baselines(cs, rois, chosen, fold_list, u, pool, params, show_progress)
    labels = cs.labels()
    index = {s: i for i, s in enumerate(chosen)}
    all_params = {
        **params,
        "margin": margin,
        "permutations": permutations,
        "bootstrap": bootstrap,
        "fingerprint": cs.fingerprint(chosen, rois),
        "store": cs.path,
    }
    results = []
    for i, fold in enumerate(fold_list):
        train = u[[index[s] for s in fold.train]][:, :, pool].mean(axis=0)
        base_scores = np.array([b.scores[i] for b in bases])
        ranked = rankings(train, base_scores, margin)
        full = np.full((2, cs.n_images), np.nan)
        full[:, pool] = train
        results.append(
            UnivariateResult(
                rois=rois,
                subjects=chosen,
                train_subjects=fold.train,
                test_subject=-1 if fold.test is None else fold.test,
                responses=u,
                train_responses=full,
                baseline_scores=base_scores,
                baseline_images=np.stack([b.images[i] for b in bases]),
                test_baseline_scores=np.array([b.test_scores[i] for b in bases]),
                controlling_images={k: pool[v[: params["n_images"]]] for k, v in ranked.items()},
                rankings={k: pool[v] for k, v in ranked.items()},
                excluded_images=excluded,
                labels=tuple(labels),
                baselines=tuple(bases),
                params=all_params,
            )
        )
    if not params["cv"]:
        return results[0]
    stats = univariate_stats(results, pool, permutations, bootstrap, params["seed"])
    return UnivariateCV(
        rois=rois,
        subjects=chosen,
        responses=u,
        folds=tuple(results),
        stats=stats,
        excluded_images=excluded,
        labels=tuple(labels),
        baselines=tuple(bases),
        params=all_params,
    )


def univariate_stats(
    folds: Sequence[UnivariateResult],
    pool: np.ndarray,
    permutations: int,
    bootstrap: int,
    seed: int,
    alpha: float = ALPHA,
) -> UnivariateStats:
    """Test-subject responses, bootstrap CIs, permutation p-values, FDR and binomial p."""
    n_sub = len(folds)
    names = (*CONDITIONS, "baseline")
    responses = np.empty((n_sub, len(names), 2))
    p_values = np.empty((n_sub, len(CONDITIONS), 2))
    position = np.full(folds[0].responses.shape[2], -1)
    position[pool] = np.arange(pool.size)
    for f, fold in enumerate(folds):
        test = fold.responses[fold.subjects.index(fold.test_subject)][:, pool]  # (2, P)
        sets = [position[fold.controlling_images[k]] for k in CONDITIONS]
        base = [position[fold.baseline_images[r]] for r in range(2)]
        for k, pos in enumerate(sets):
            responses[f, k] = test[:, pos].mean(axis=1) if pos.size else np.nan
        responses[f, -1] = [test[r, base[r]].mean() for r in range(2)]
        nulls = _permutation_nulls(test, sets, base, permutations, seed, fold.test_subject)
        for k, name in enumerate(CONDITIONS):
            for r, high in enumerate(_HIGH[name]):
                observed = responses[f, k, r] - responses[f, -1, r]
                if np.isnan(observed):
                    p_values[f, k, r] = np.nan
                else:
                    p_values[f, k, r] = permutation_p(nulls[k, r] - nulls[-1, r], observed, high)
    significant = np.stack([fdr_bh(np.nan_to_num(p, nan=1.0), alpha) for p in p_values])
    between = np.array(
        [
            [binomial_p(significant[:, k, r].sum(), n_sub, alpha) for r in range(2)]
            for k in range(len(CONDITIONS))
        ]
    )
    ci = bootstrap_ci(responses, bootstrap, c.rng(seed, c.STREAM_UNI_BOOTSTRAP))
    return UnivariateStats(
        conditions=names,
        test_subjects=tuple(f.test_subject for f in folds),
        test_responses=responses,
        ci=np.moveaxis(ci, 0, 1),  # (condition, low/high, roi)
        p_values=p_values,
        significant=significant,
        between_p=between,
        alpha=alpha,
    )


def _permutation_nulls(test, sets, base, n_perm, seed, subject, block=20_000):
    """(5, 2, n_perm): per condition (+ baseline last) and ROI, the mean over its images
    after shuffling the test subject's responses across images (one shuffle per column,
    shared by all conditions and both ROIs, as shuffling the image axis once does)."""
    used = np.unique(np.concatenate([*sets, *base]))
    slot = {int(v): i for i, v in enumerate(used)}
    where = [np.array([slot[int(v)] for v in pos], dtype=np.int64) for pos in sets]
    where_base = [np.array([slot[int(v)] for v in pos], dtype=np.int64) for pos in base]
    gen = c.rng(seed, c.STREAM_UNI_PERMUTATION, subject)
    out = np.empty((len(sets) + 1, 2, n_perm))
    for a in range(0, n_perm, block):
        b = min(n_perm, a + block)
        drawn = distinct(gen, b - a, used.size, test.shape[1])  # image now at each used slot
        for r in range(2):
            for k, w in enumerate(where):
                out[k, r, a:b] = test[r, drawn[:, w]].mean(axis=1) if w.size else np.nan
            out[-1, r, a:b] = test[r, drawn[:, where_base[r]]].mean(axis=1)
    return out
