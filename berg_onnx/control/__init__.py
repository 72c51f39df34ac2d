"""Relational neural control (RNC, spec/rnc.md) on a run store.

Owns: reading a run store for RNC (``_store``), univariate RNC (``univariate``),
multivariate RNC (``multivariate``), their statistics (``stats``), vectorised sampling
(``_sampling``), the result dataclasses and their files (``results``) and their
figures (``figures``); the ``berg-onnx control`` command is ``berg_onnx.cli.control``.
Imports numpy, ``experiment`` (the run store, opened read-only), ``source`` (the model
source the store records, for ncsnr), ``utils`` and ``errors``; nothing imports it but
the API's users and the CLI. No scipy: every statistic is a few lines of numpy.

    from berg_onnx.control import univariate, multivariate
    u = univariate("grid.zarr", "V1", "V4", cv=True)
    u.fold(1).controlling_images["high_1_low_2"]      # store rows, in ranking order
    m = multivariate("grid.zarr", "V1", "V4", condition="disentangle")
    m.best_images, m.scores                            # rows, best score per generation
"""

from berg_onnx.control._common import SEED
from berg_onnx.control._multivariate import multivariate, multivariate_stats, rsa_score
from berg_onnx.control._store import ControlStore
from berg_onnx.control._univariate import univariate, univariate_baseline
from berg_onnx.control.results import (
    CONDITIONS,
    MultivariateCV,
    MultivariateResult,
    MultivariateStats,
    UnivariateBaseline,
    UnivariateCV,
    UnivariateResult,
    UnivariateStats,
    load_result,
    save_result,
)

__all__ = [
    "CONDITIONS",
    "SEED",
    "ControlStore",
    "MultivariateCV",
    "MultivariateResult",
    "MultivariateStats",
    "UnivariateBaseline",
    "UnivariateCV",
    "UnivariateResult",
    "UnivariateStats",
    "load_result",
    "multivariate",
    "multivariate_stats",
    "rsa_score",
    "save_result",
    "univariate",
    "univariate_baseline",
]
