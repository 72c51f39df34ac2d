"""RNC figures in the paper's style (matplotlib, the ``[viz]`` extra; rendered with Agg).

- univariate: ROI 1 vs ROI 2 univariate responses of every image, the two baselines
  and the four conditions' controlling images; with cv, the test subjects' mean
  responses per condition and ROI with their 95% bootstrap CIs;
- multivariate: the best RSA score per generation (align rising, disentangle falling
  towards 0) against the baseline; with cv, the test subjects' scores with CIs.

``figure(result)`` takes one result, or several multivariate ones (e.g. align and
disentangle of the same pair) to draw them together.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from berg_onnx.control.results import (
    CONDITIONS,
    MultivariateCV,
    MultivariateResult,
    UnivariateCV,
    UnivariateResult,
)
from berg_onnx.errors import InvalidParameterError, ResourceError

COLOURS = {
    "high_1_high_2": "#d62728",
    "low_1_low_2": "#1f77b4",
    "high_1_low_2": "#ff7f0e",
    "low_1_high_2": "#2ca02c",
    "align": "#d62728",
    "disentangle": "#1f77b4",
    "baseline": "#7f7f7f",
}
_LABELS = {
    "high_1_high_2": "high {0} / high {1}",
    "low_1_low_2": "low {0} / low {1}",
    "high_1_low_2": "high {0} / low {1}",
    "low_1_high_2": "low {0} / high {1}",
}


def _figure_class():
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ResourceError('RNC figures need matplotlib: pip install "berg-onnx[viz]"') from None
    return Figure


def figure(result: Any) -> Any:
    """The paper's figure for an RNC result (or a list of multivariate results)."""
    if isinstance(result, (UnivariateResult, UnivariateCV)):
        return _univariate(result)
    results = list(result) if isinstance(result, Sequence) else [result]
    if results and all(isinstance(r, (MultivariateResult, MultivariateCV)) for r in results):
        return _multivariate(results)
    raise InvalidParameterError(
        f"figure() draws RNC results (univariate(...) or multivariate(...)), got "
        f"{type(result).__name__}"
    )


def _univariate(result: UnivariateResult | UnivariateCV):
    cv = isinstance(result, UnivariateCV)
    fold = result.folds[0] if cv else result
    r1, r2 = fold.rois
    fig = _figure_class()(figsize=(11 if cv else 5.5, 4.8), dpi=110, layout="constrained")
    axes = fig.subplots(1, 2 if cv else 1, squeeze=False)[0]
    ax = axes[0]
    x, y = fold.train_responses
    ax.scatter(x, y, s=4, c="#c7c7c7", lw=0, label="all images", rasterized=True)
    ax.axvline(fold.baseline_scores[0], color=COLOURS["baseline"], ls="--", lw=1)
    ax.axhline(fold.baseline_scores[1], color=COLOURS["baseline"], ls="--", lw=1,
               label="baselines")  # fmt: skip
    for name in CONDITIONS:
        rows = fold.controlling_images[name]
        ax.scatter(x[rows], y[rows], s=14, c=COLOURS[name], lw=0,
                   label=_LABELS[name].format(r1, r2) + f" ({rows.size})")  # fmt: skip
    ax.set_xlabel(f"{r1} univariate response")
    ax.set_ylabel(f"{r2} univariate response")
    train = ", ".join(f"{s}" for s in fold.train_subjects)
    ax.set_title(f"Univariate RNC {r1} vs {r2} (subjects {train})", fontsize=10)
    ax.legend(fontsize=7, loc="best", markerscale=1.5)
    if cv:
        _univariate_bars(axes[1], result)
    return fig


def _univariate_bars(ax, result: UnivariateCV):
    stats = result.stats
    names = stats.conditions
    mean = stats.test_responses.mean(axis=0)  # (5, 2)
    width = 0.38
    for r, roi in enumerate(result.rois):
        pos = np.arange(len(names)) + (r - 0.5) * width
        err = np.abs(stats.ci[:, :, r].T - mean[:, r])
        colours = [COLOURS[n] for n in names]
        ax.bar(pos, mean[:, r], width, color=colours, alpha=1.0 if r == 0 else 0.55,
               yerr=err, capsize=3, edgecolor="black", lw=0.5, label=roi)  # fmt: skip
        for k in range(len(CONDITIONS)):
            if stats.between_p[k, r] < stats.alpha:
                top = max(stats.ci[k, 1, r], 0) + 0.02 * np.ptp(stats.ci)
                ax.text(pos[k], top, "*", ha="center", fontsize=12)
    ax.axhline(0, color="black", lw=0.5)
    labels = [_LABELS.get(n, n).format(*result.rois) for n in names]
    ax.set_xticks(np.arange(len(names)), labels, rotation=25, ha="right", fontsize=8)
    ax.set_ylabel("test-subject univariate response")
    n = len(result.subjects)
    ax.set_title(f"Left-out subjects (n = {n}), 95% CIs; * binomial p < 0.05", fontsize=10)
    from matplotlib.patches import Patch

    handles = [Patch(facecolor="#555555", alpha=a, edgecolor="black", lw=0.5) for a in (1, 0.55)]
    ax.legend(handles, result.rois, title="ROI", fontsize=8, title_fontsize=8)


def _multivariate(results: list):
    cv = isinstance(results[0], MultivariateCV)
    fig = _figure_class()(figsize=(11 if cv else 5.5, 4.5), dpi=110, layout="constrained")
    axes = fig.subplots(1, 2 if cv else 1, squeeze=False)[0]
    ax = axes[0]
    for res in results:
        folds = res.folds if cv else (res,)
        colour = COLOURS[res.condition]
        curves = np.array([f.scores for f in folds])
        gens = np.arange(1, curves.shape[1] + 1)
        for c in curves if len(folds) > 1 else ():
            ax.plot(gens, c, color=colour, lw=0.5, alpha=0.35)
        ax.plot(gens, curves.mean(axis=0), color=colour, lw=2, label=res.condition)
    folds = (
        results[0].folds if cv else (results[0],)
    )  # the baseline is the pair's, not a condition's
    base = np.mean([f.baseline_score for f in folds])
    ax.axhline(base, color=COLOURS["baseline"], ls="--", lw=1, label="baseline")
    r1, r2 = results[0].rois
    ax.set_xlabel("generation")
    ax.set_ylabel(f"RSA score ({r1} vs {r2}, train subjects)")
    ax.set_xscale("log")
    ax.set_title(f"Multivariate RNC {r1} vs {r2}: best batch per generation", fontsize=10)
    ax.legend(fontsize=8)
    if cv:
        bars = [(r.condition, r.stats.test_scores[:, 0], r.stats.ci[0]) for r in results]
        first = results[0].stats
        bars.append(("baseline", first.test_baseline_scores, first.ci[-1]))
        b = axes[1]
        for i, (name, values, ci) in enumerate(bars):
            m = values.mean()
            b.bar(i, m, 0.6, color=COLOURS[name], yerr=[[m - ci[0]], [ci[1] - m]], capsize=4,
                  edgecolor="black", lw=0.5)  # fmt: skip
            b.scatter(np.full(values.size, i), values, s=10, c="black", zorder=3)
        b.axhline(0, color="black", lw=0.5)
        b.set_xticks(range(len(bars)), [n for n, _, _ in bars])
        b.set_ylabel("test-subject RSA score")
        n = len(results[0].subjects)
        b.set_title(f"Left-out subjects (n = {n}), 95% bootstrap CIs", fontsize=10)
    return fig
