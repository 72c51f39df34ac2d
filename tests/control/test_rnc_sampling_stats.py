"""The vectorised draws are uniform and exact; the statistics equal direct definitions."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest
from scipy import stats as sps

from berg_onnx.control import _sampling
from berg_onnx.control.stats import binomial_p, bootstrap_ci, fdr_bh, pearson_rows, permutation_p
from tests._support import rncref


@pytest.mark.parametrize("k, n", [(2, 9), (3, 6), (4, 4)])  # rejection, random keys, all
def test_distinct_draws_every_ordered_tuple_equally_often(k, n):
    rows = _sampling.distinct(np.random.default_rng(0), 24_000, k, n)
    assert rows.shape == (24_000, k) and rows.min() >= 0 and rows.max() < n
    assert all(len(set(r)) == k for r in rows.tolist())
    counts = Counter(map(tuple, rows.tolist()))
    tuples = list(itertools.permutations(range(n), k))
    assert set(counts) == set(tuples)
    assert sps.chisquare([counts[t] for t in tuples]).pvalue > 1e-3  # uniform


@pytest.mark.parametrize("n", [12, 400])
def test_distinct_never_draws_excluded_images(n):
    gen = np.random.default_rng(1)
    exclude = np.sort(_sampling.distinct(gen, 500, 5, n), axis=1)
    rows = _sampling.distinct(gen, 500, 4, n, exclude=exclude)
    for r, e in zip(rows.tolist(), exclude.tolist(), strict=True):
        assert len(set(r)) == 4 and not set(r) & set(e)
    with pytest.raises(ValueError):
        _sampling.distinct(gen, 1, 8, 12, exclude=exclude[:1])


def test_draws_repeat_for_a_seed():
    a = _sampling.distinct(np.random.default_rng(5), 100, 7, 50)
    b = _sampling.distinct(np.random.default_rng(5), 100, 7, 50)
    np.testing.assert_array_equal(a, b)


def test_statistics_equal_their_definitions():
    gen = np.random.default_rng(2)
    a, b = gen.normal(size=(20, 30)), gen.normal(size=(20, 30))
    want = [sps.pearsonr(x, y)[0] for x, y in zip(a, b, strict=True)]
    np.testing.assert_allclose(pearson_rows(a, b), want, rtol=1e-12)
    for _ in range(50):
        p = gen.choice([0.001, 0.01, 0.02, 0.04, 0.049, 0.2, 0.6], size=8)
        assert fdr_bh(p).tolist() == rncref.benjamini_hochberg(p.tolist())
    for n in (3, 8):
        for k in range(n + 1):
            assert binomial_p(k, n) == pytest.approx(sps.binom.sf(k - 1, n, 0.05), rel=1e-12)
    null = np.array([0.1, 0.2, 0.3, 0.4])
    assert permutation_p(null, 0.25, greater=True) == 3 / 5
    assert permutation_p(null, 0.25, greater=False) == 3 / 5
    assert permutation_p(null, 0.5, greater=True) == 1 / 5
    values = np.array([1.0, 2.0, 3.0, 4.0])
    ci = bootstrap_ci(values, 20_000, np.random.default_rng(0))
    assert ci[0] < 2.5 < ci[1] and 1.0 <= ci[0] and ci[1] <= 4.0
    np.testing.assert_allclose(bootstrap_ci(np.full(5, 0.3), 100, gen), [0.3, 0.3])
