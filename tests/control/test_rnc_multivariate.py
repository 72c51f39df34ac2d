"""Multivariate RNC on real and planted run stores, against the loop reference (rncref)."""

from __future__ import annotations

import numpy as np
import pytest

from berg_onnx.control import load_result, multivariate, rsa_score, save_result
from berg_onnx.errors import BERGError, InvalidParameterError
from tests._support import rncref
from tests._support.rncstores import ROIS, SUBJECTS, n_voxels, write_planted

FAST = dict(null_samples=3000, generations=40, n_batches=20, n_images=8)


def test_rsa_score_equals_pearsonr_over_lower_triangles(real_store, control_export):
    rng = np.random.default_rng(3)
    for subjects in (SUBJECTS, (2,), (1, 3)):
        batch = rng.choice(96, size=9, replace=False)
        got = rsa_score(real_store, *ROIS, batch, subjects=subjects)
        want = rncref.rsa_score(real_store, control_export, subjects, ROIS, 0.5, batch)
        assert got == pytest.approx(want, rel=1e-12, abs=1e-14)


@pytest.mark.parametrize("engine", ["rsm", "gram"])
@pytest.mark.parametrize("condition", ["align", "disentangle"])
def test_search_scores_are_the_definitions(real_store, control_export, engine, condition):
    m = multivariate(real_store, *ROIS, condition=condition, engine=engine, **FAST)
    assert m.params["engine"] == engine and m.scores.shape == (40,)
    assert m.best_batches.shape == (40, 8) and (np.diff(m.best_batches, axis=1) > 0).all()
    np.testing.assert_array_equal(m.best_images, m.best_batches[-1])
    want = rncref.rsa_score(real_store, control_export, SUBJECTS, ROIS, 0.5, m.best_images)
    assert m.best_score == pytest.approx(want, rel=1e-12, abs=1e-14)
    assert m.scores[-1] == pytest.approx(want, abs=2e-6)  # the search's float32 RSMs
    base = rncref.rsa_score(real_store, control_export, SUBJECTS, ROIS, 0.5, m.baseline_images)
    assert m.baseline_score == pytest.approx(base, rel=1e-12, abs=1e-14)
    # the best batch is kept from one generation to the next: the best never gets worse
    if condition == "align":
        assert (np.diff(m.scores) >= 0).all() and m.scores[-1] > m.baseline_score
    else:
        assert (np.diff(np.abs(m.scores)) <= 0).all()
        assert abs(m.scores[-1]) < abs(m.scores[0]) or abs(m.scores[0]) < 1e-3


def _planted(export, n=150, shared=60, seed=1):
    """Images 0..shared-1 have one latent geometry in both ROIs; the rest have independent
    latents in FFA-1: aligning batches come from the shared images."""
    rng = np.random.default_rng(seed)
    h = rng.normal(size=(n, 4))
    g = rng.normal(size=(n, 4))
    g[:shared] = h[:shared]
    values = {}
    for s in SUBJECTS:
        for r, latent in zip(ROIS, (h, g), strict=True):
            nv = n_voxels(export, s, r)
            w = rng.normal(size=(4, nv))
            values[(s, r)] = latent @ w + rng.normal(0, 0.3, size=(n, nv))
    return values


def test_planted_geometry_is_found_and_cross_validates(control_export, tmp_path):
    store = write_planted(tmp_path / "geometry.zarr", control_export, _planted(control_export))
    kw = dict(generations=60, n_batches=30, n_images=10, null_samples=6000, permutations=2000)
    align = multivariate(store, *ROIS, condition="align", cv=True, bootstrap=2000, **kw)
    assert [f.test_subject for f in align.folds] == list(SUBJECTS)
    for fold in align.folds:
        assert np.count_nonzero(fold.best_images < 60) >= 8
        assert fold.best_score > 0.8 > fold.baseline_score
        assert fold.test_score > fold.test_baseline_score
        assert fold.test_scores[-1] == fold.test_score
    s = align.stats
    assert s.conditions == ("align",) and s.p_values.shape == (3, 1)
    assert (s.p_values < 0.01).all() and s.significant.all()
    assert s.between_p[0] == pytest.approx(0.05**3)
    assert s.ci[0, 0] > s.ci[1, 1]  # the align CI lies above the baseline's
    dis = multivariate(store, *ROIS, condition="disentangle", **kw)
    assert abs(dis.best_score) < 0.05


def test_seeded_search_repeats_and_resumes_from_its_checkpoint(real_store, tmp_path):
    a = multivariate(real_store, *ROIS, seed=11, **FAST)
    b = multivariate(real_store, *ROIS, seed=11, checkpoint=tmp_path / "state", **FAST)
    c = multivariate(real_store, *ROIS, seed=12, **FAST)
    np.testing.assert_array_equal(a.best_batches, b.best_batches)
    np.testing.assert_array_equal(a.scores, b.scores)
    assert not np.array_equal(a.best_batches, c.best_batches)
    # a finished checkpoint is reused as is; other parameters refuse it
    again = multivariate(real_store, *ROIS, seed=11, checkpoint=tmp_path / "state", **FAST)
    np.testing.assert_array_equal(again.best_batches, a.best_batches)
    with pytest.raises(InvalidParameterError, match="other parameters"):
        multivariate(real_store, *ROIS, seed=13, checkpoint=tmp_path / "state", **FAST)


def test_saved_cross_validated_result_reads_back(real_store, tmp_path):
    kw = {**FAST, "null_samples": 600, "permutations": 200, "bootstrap": 200}
    m = multivariate(real_store, *ROIS, cv=True, condition="disentangle", **kw)
    back = load_result(save_result(m, tmp_path / "m.json"))
    assert back.subjects == SUBJECTS and back.condition == "disentangle"
    for x, y in zip(back.folds, m.folds, strict=True):
        np.testing.assert_array_equal(x.best_batches, y.best_batches)
        assert x.best_score == y.best_score and x.test_subject == y.test_subject
    np.testing.assert_array_equal(back.stats.p_values, m.stats.p_values)


def test_bad_inputs_give_one_clear_error(real_store):
    def error(**kw):
        with pytest.raises(BERGError) as e:
            multivariate(real_store, *ROIS, **{**FAST, **kw})
        assert "\n" not in str(e.value)
        return str(e.value)

    assert "at least 200 images" in error(n_images=200)
    assert "needs at least 105 images" in error(n_images=60)  # 60 + its 75% mutation > 96
    assert "condition must be one of align, disentangle" in error(condition="both")
    assert "two or more subjects" in error(cv=True, subjects=[2], permutations=100)
    assert "memory must be" in error(memory="lots")
    assert "3 x permutations" in error(cv=True, null_samples=100, permutations=100)
    assert "engine must be" in error(engine="fast")
