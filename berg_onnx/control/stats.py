"""The statistics of RNC: Pearson r of many rows, bootstrap CIs, BH-FDR, binomial p.

numpy only; float64 throughout.
"""

from __future__ import annotations

import math

import numpy as np

#: The method's per-test significance level (FDR, and the binomial's chance rate).
ALPHA = 0.05


def pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r between a[i] and b[i] for each row (last axis), float64; NaN where a row
    is constant."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a = a - a.mean(axis=-1, keepdims=True)
    b = b - b.mean(axis=-1, keepdims=True)
    num = np.einsum("...i,...i->...", a, b)
    den = np.sqrt(np.einsum("...i,...i->...", a, a) * np.einsum("...i,...i->...", b, b))
    with np.errstate(invalid="ignore", divide="ignore"):
        return num / den


def bootstrap_ci(
    values: np.ndarray, n_boot: int, rng: np.random.Generator, block: int = 10_000
) -> np.ndarray:
    """95% CI of the mean over subjects (axis 0), resampling subjects with replacement
    ``n_boot`` times: (2, *values.shape[1:]) = (2.5th, 97.5th percentile)."""
    values = np.asarray(values, dtype=np.float64)
    s = values.shape[0]
    means = np.empty((n_boot, *values.shape[1:]))
    for a in range(0, n_boot, block):
        b = min(n_boot, a + block)
        idx = rng.integers(0, s, size=(b - a, s))
        means[a:b] = values[idx].mean(axis=1)
    return np.percentile(means, [2.5, 97.5], axis=0)


def permutation_p(null: np.ndarray, observed: float, greater: bool) -> float:
    """(count of null values beyond ``observed`` + 1) / (len(null) + 1): ``greater`` counts
    null > observed, otherwise null < observed."""
    beyond = np.count_nonzero(null > observed) if greater else np.count_nonzero(null < observed)
    return (beyond + 1) / (null.size + 1)


def fdr_bh(p_values: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """Benjamini-Hochberg decisions (True = significant) over all of ``p_values``."""
    p = np.asarray(p_values, dtype=np.float64)
    flat = p.ravel()
    m = flat.size
    order = np.argsort(flat, kind="stable")
    below = flat[order] <= alpha * np.arange(1, m + 1) / m
    reject = np.zeros(m, dtype=bool)
    if below.any():
        reject[order[: np.flatnonzero(below)[-1] + 1]] = True
    return reject.reshape(p.shape)


def binomial_p(k: int, n: int, p: float = ALPHA) -> float:
    """P(X >= k) for X ~ Binomial(n, p): the chance of k or more of n subjects significant."""
    k = int(k)
    if k <= 0:
        return 1.0
    return float(sum(math.comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(k, n + 1)))
