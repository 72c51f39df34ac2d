"""Relational neural control (RNC, spec/rnc.md) on a run store.

Owns: reading a run store for RNC (``_store``), univariate RNC (``univariate``),
multivariate RNC (``multivariate``), their statistics (``stats``), vectorised sampling
(``_sampling``), the result dataclasses and their files (``results``) and the
``berg-onnx control`` command (``_cli``). Imports numpy, berg_onnx.experiment.store
(the store layout, opened read-only), berg_onnx.api (a model source, for ncsnr),
errors and fileio; nothing imports it but the CLI. No scipy: every statistic is a few
lines of numpy.

    from berg_onnx.control import univariate, multivariate
    u = univariate("grid.zarr", "V1", "V4", cv=True)
    u.fold(1).controlling_images["high_1_low_2"]      # store rows, in ranking order
    m = multivariate("grid.zarr", "V1", "V4", condition="disentangle")
    m.best_images, m.scores                            # rows, best score per generation
"""

from ._common import SEED
from ._multivariate import multivariate, multivariate_stats, rsa_score
from ._store import ControlStore
from ._univariate import univariate, univariate_baseline
from .results import (
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
