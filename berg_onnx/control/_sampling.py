"""Vectorised random draws for RNC: many batches of distinct images at once.

Every draw comes from a ``numpy.random.Generator`` handed in by the caller, so a
seeded run repeats exactly. Two exact methods, chosen by the sizes alone (never
by chance, so the stream of draws is the same run to run):

- rejection: draw each row with replacement and draw again the rows that hold
  a repeat (or an excluded image); cheap when ``k`` is small against ``sqrt(n)``;
- random keys: one uniform key per image and row, the ``k`` smallest keys in
  key order; used when repeats would be common (small image pools).

Both give every ordered tuple of ``k`` distinct allowed images the same chance.
"""

from __future__ import annotations

import math

import numpy as np

#: Bytes of random keys held at once by the random-keys method.
_KEY_BLOCK_BYTES = 32 << 20


def _has_repeat(rows: np.ndarray) -> np.ndarray:
    s = np.sort(rows, axis=1)
    return (s[:, 1:] == s[:, :-1]).any(axis=1)


def distinct(
    rng: np.random.Generator, n_rows: int, k: int, n: int, exclude: np.ndarray | None = None
) -> np.ndarray:
    """(n_rows, k) int64: per row, k distinct values of 0..n-1 in random order, none of
    them in that row of ``exclude`` ((n_rows, e) distinct values), uniformly."""
    e = 0 if exclude is None else exclude.shape[1]
    if k + e > n:
        raise ValueError(f"cannot draw {k} distinct images out of {n - e}")
    if n_rows == 0 or k == 0:
        return np.zeros((n_rows, k), dtype=np.int64)
    # Expected values drawn per row: rejection ~ k / P(no repeat) ~ k * exp((k + e)^2 / 2n);
    # random keys: n. The cheaper one is used (decided by the sizes: runs repeat exactly).
    if (k + e) ** 2 / (2 * n) < 30 and k * math.exp((k + e) ** 2 / (2 * n)) < n:
        return _rejection(rng, n_rows, k, n, exclude)
    return _random_keys(rng, n_rows, k, n, exclude)


def _rejection(rng, n_rows, k, n, exclude):
    out = rng.integers(0, n, size=(n_rows, k), dtype=np.int64)
    todo = np.arange(n_rows)
    while True:
        rows = out[todo] if exclude is None else np.hstack([exclude[todo], out[todo]])
        todo = todo[_has_repeat(rows)]
        if todo.size == 0:
            return out
        out[todo] = rng.integers(0, n, size=(todo.size, k), dtype=np.int64)


def _random_keys(rng, n_rows, k, n, exclude):
    out = np.empty((n_rows, k), dtype=np.int64)
    step = max(1, _KEY_BLOCK_BYTES // (8 * n))
    for a in range(0, n_rows, step):
        b = min(n_rows, a + step)
        keys = rng.random((b - a, n))
        if exclude is not None:
            np.put_along_axis(keys, exclude[a:b], 2.0, axis=1)  # keys are < 1: never chosen
        part = np.argpartition(keys, k - 1, axis=1)[:, :k]
        order = np.argsort(np.take_along_axis(keys, part, axis=1), axis=1, kind="stable")
        out[a:b] = np.take_along_axis(part, order, axis=1)
    return out


def positions(rng: np.random.Generator, n_rows: int, m: int, k: int) -> np.ndarray:
    """(n_rows, m): per row, m distinct positions of 0..k-1 (which images a mutation replaces)."""
    return np.argsort(rng.random((n_rows, k)), axis=1, kind="stable")[:, :m]
