"""Univariate RNC on real and planted run stores, against the loop reference (rncref)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from berg_onnx.control import CONDITIONS, load_result, save_result, univariate, univariate_baseline
from berg_onnx.errors import BERGError, ExperimentError, InvalidParameterError, ModelNotFoundError
from tests._support import rncref
from tests._support.rncstores import ROIS, SUBJECTS, n_voxels, write_planted

FAST = dict(null_samples=4000, permutations=2000, bootstrap=2000)


def _reference(store, export, subjects, threshold=0.5):
    return {
        (s, r): rncref.univariate_responses(store, export, s, r, threshold)
        for s in subjects
        for r in ROIS
    }


@pytest.mark.parametrize("margin", [0.0, 0.04])
def test_responses_and_rankings_equal_the_loop_reference(real_store, control_export, margin):
    u = univariate(real_store, *ROIS, margin=margin, n_images=10, **FAST)
    ref = _reference(real_store, control_export, SUBJECTS)
    assert u.subjects == SUBJECTS and u.n_excluded == 0
    for i, s in enumerate(SUBJECTS):
        for j, r in enumerate(ROIS):
            np.testing.assert_allclose(u.responses[i, j], ref[(s, r)], rtol=1e-12, atol=1e-15)
    r1 = rncref.mean_over([ref[(s, ROIS[0])] for s in SUBJECTS])
    r2 = rncref.mean_over([ref[(s, ROIS[1])] for s in SUBJECTS])
    np.testing.assert_allclose(u.train_responses, [r1, r2], rtol=1e-12, atol=1e-15)
    b1, b2 = u.baseline_scores
    want = rncref.rankings(r1, r2, b1, b2, margin)
    for name in CONDITIONS:
        assert u.rankings[name].tolist() == want[name], name
        assert u.controlling_images[name].tolist() == want[name][:10], name
        assert u.image_names(name) == [str(i) for i in want[name][:10]]
    # the baseline: its batch's mean train response is its score, close to the null's mean
    for r, resp in enumerate((r1, r2)):
        batch = u.baseline_images[r]
        assert len(set(batch.tolist())) == 10
        assert u.baseline_scores[r] == pytest.approx(np.mean([resp[i] for i in batch]), abs=1e-14)
        assert abs(u.baseline_scores[r] - u.baselines[r].null_means[0]) < 1e-3


def test_cross_validation_folds_and_test_responses(real_store, control_export):
    cv = univariate(real_store, *ROIS, cv=True, margin=0.0, n_images=8, **FAST)
    ref = _reference(real_store, control_export, SUBJECTS)
    assert [f.test_subject for f in cv.folds] == list(SUBJECTS)
    for fold in cv.folds:
        train = [s for s in SUBJECTS if s != fold.test_subject]
        assert fold.train_subjects == tuple(train)
        r1 = rncref.mean_over([ref[(s, ROIS[0])] for s in train])
        r2 = rncref.mean_over([ref[(s, ROIS[1])] for s in train])
        want = rncref.rankings(r1, r2, *fold.baseline_scores, 0.0)
        for name in CONDITIONS:
            assert fold.controlling_images[name].tolist() == want[name][:8]
        test = [ref[(fold.test_subject, r)] for r in ROIS]
        k = SUBJECTS.index(fold.test_subject)
        for c, name in enumerate(CONDITIONS):
            for r in range(2):
                expected = np.mean([test[r][i] for i in fold.controlling_images[name]])
                assert cv.stats.test_responses[k, c, r] == pytest.approx(expected, abs=1e-13)
        for r in range(2):
            expected = np.mean([test[r][i] for i in fold.baseline_images[r]])
            assert fold.test_baseline_scores[r] == pytest.approx(expected, abs=1e-13)
            assert cv.stats.test_responses[k, -1, r] == pytest.approx(expected, abs=1e-13)
    s = cv.stats
    assert s.p_values.shape == (3, 4, 2) and ((s.p_values > 0) & (s.p_values <= 1)).all()
    for k in range(3):  # FDR decisions = the loop BH over each subject's 8 tests
        assert s.significant[k].ravel().tolist() == rncref.benjamini_hochberg(
            s.p_values[k].ravel().tolist()
        )
    lo, hi = s.ci[:, 0], s.ci[:, 1]
    mean = s.test_responses.mean(axis=0)
    assert (lo <= mean + 1e-12).all() and (mean <= hi + 1e-12).all()


def _planted(export, n=160, seed=0, nan_rows=()):
    """ROI means planted per image group: 0-19 high/high, 20-39 low/low, 40-59 high/low,
    60-79 low/high (+-1 on every voxel), the rest noise (sd 0.05)."""
    rng = np.random.default_rng(seed)
    shift = {ROIS[0]: np.zeros(n), ROIS[1]: np.zeros(n)}
    for (a, b), (s1, s2) in zip(
        [(0, 20), (20, 40), (40, 60), (60, 80)], [(1, 1), (-1, -1), (1, -1), (-1, 1)], strict=True
    ):
        shift[ROIS[0]][a:b], shift[ROIS[1]][a:b] = s1, s2
    values = {}
    for s in SUBJECTS:
        for r in ROIS:
            v = rng.normal(0, 0.05, size=(n, n_voxels(export, s, r))) + shift[r][:, None]
            values[(s, r)] = v
    for s, r, row in nan_rows:
        values[(s, r)][row] = np.nan
    return values


GROUPS = dict(
    zip(CONDITIONS, [range(0, 20), range(20, 40), range(40, 60), range(60, 80)], strict=True)
)


def test_planted_signal_is_found_and_significant(control_export, tmp_path):
    store = write_planted(tmp_path / "planted.zarr", control_export, _planted(control_export))
    cv = univariate(store, *ROIS, cv=True, n_images=20, **FAST)
    for fold in cv.folds:
        for name in CONDITIONS:
            assert set(fold.controlling_images[name].tolist()) == set(GROUPS[name])
    n = FAST["permutations"]
    np.testing.assert_allclose(cv.stats.p_values, 1 / (n + 1))
    assert cv.stats.significant.all()
    np.testing.assert_allclose(cv.stats.between_p, 0.05**3)
    # baselines sit at the mean of all images (~0), far from every planted group
    assert np.abs([f.baseline_scores for f in cv.folds]).max() < 0.2


def test_nan_rows_are_left_out_and_counted(control_export, tmp_path):
    nan_rows = [(2, ROIS[0], 3), (2, ROIS[0], 100), (1, ROIS[1], 101)]
    values = _planted(control_export, nan_rows=nan_rows)
    store = write_planted(tmp_path / "nan.zarr", control_export, values)
    u = univariate(store, *ROIS, n_images=20, **FAST)
    assert u.n_excluded == 3 and u.excluded_images.tolist() == [3, 100, 101]
    assert np.isnan(u.responses[:, :, [3, 100, 101]]).all()
    # only 19 images of the planted high/high group remain: the condition says so
    assert set(u.controlling_images["high_1_high_2"].tolist()) == set(range(20)) - {3}
    for name in CONDITIONS:
        assert not {3, 100, 101} & set(u.rankings[name].tolist())
    assert not {3, 100, 101} & set(u.baseline_images.ravel().tolist())


def test_seeded_runs_repeat_and_seeds_differ(real_store):
    a = univariate(real_store, *ROIS, cv=True, seed=5, **FAST)
    b = univariate(real_store, *ROIS, cv=True, seed=5, **FAST)
    c = univariate(real_store, *ROIS, cv=True, seed=6, **FAST)
    for x, y in zip(a.folds, b.folds, strict=True):
        np.testing.assert_array_equal(x.baseline_images, y.baseline_images)
    np.testing.assert_array_equal(a.stats.p_values, b.stats.p_values)
    np.testing.assert_array_equal(a.stats.ci, b.stats.ci)
    assert any(
        not np.array_equal(x.baseline_images, z.baseline_images)
        for x, z in zip(a.folds, c.folds, strict=True)
    )


def test_reused_baselines_give_the_same_result(real_store):
    direct = univariate(real_store, *ROIS, cv=True, **FAST)
    b1 = univariate_baseline(real_store, ROIS[0], cv=True, null_samples=4000)
    b2 = univariate_baseline(real_store, ROIS[1], cv=True, null_samples=4000)
    reused = univariate(real_store, *ROIS, cv=True, baseline=[b2, b1], **FAST)
    for x, y in zip(direct.folds, reused.folds, strict=True):
        np.testing.assert_array_equal(x.baseline_images, y.baseline_images)
        for name in CONDITIONS:
            np.testing.assert_array_equal(x.controlling_images[name], y.controlling_images[name])
    np.testing.assert_array_equal(direct.stats.p_values, reused.stats.p_values)
    with pytest.raises(InvalidParameterError, match="other subjects, parameters"):
        univariate(real_store, *ROIS, cv=True, baseline=[b1, b2], **{**FAST, "null_samples": 99})


def test_saved_result_reads_back(real_store, tmp_path):
    cv = univariate(real_store, *ROIS, cv=True, **FAST)
    path = save_result(cv, tmp_path / "u.json")
    back = load_result(path)
    assert type(back) is type(cv) and back.params == cv.params
    np.testing.assert_array_equal(back.responses, cv.responses)
    np.testing.assert_array_equal(back.stats.p_values, cv.stats.p_values)
    for x, y in zip(back.folds, cv.folds, strict=True):
        assert x.test_subject == y.test_subject and x.rois == y.rois
        for name in CONDITIONS:
            np.testing.assert_array_equal(x.controlling_images[name], y.controlling_images[name])


def test_bad_inputs_give_one_clear_error(real_store, control_export, tmp_path):
    def error(**kw):
        args = kw.pop("rois", ROIS)
        with pytest.raises(BERGError) as e:
            univariate(kw.pop("store", real_store), *args, **{**FAST, **kw})
        assert "\n" not in str(e.value)
        return e.value

    e = error(rois=("V1", "V4"))
    assert isinstance(e, ModelNotFoundError) and "no ROI 'V4'" in str(e) and "FFA-1" in str(e)
    e = error(subjects=[1], cv=True)
    assert isinstance(e, InvalidParameterError) and "two or more subjects" in str(e)
    e = error(n_images=500)
    assert "at least 500 images" in str(e) and "96" in str(e)
    assert "different ROIs" in str(error(rois=("V1", "V1")))
    assert "n_images" in str(error(n_images=0))
    assert "sub-09/V1" in str(error(subjects=[1, 9]))
    assert "cv must be" in str(error(cv="yes"))
    unfinished = tmp_path / "unfinished.zarr"
    shutil.copytree(real_store, unfinished)
    from tests._support.runstore import mark_unfinished

    mark_unfinished(unfinished, 2, "FFA-1")
    e = error(store=unfinished)
    assert isinstance(e, ExperimentError) and "sub-02/FFA-1 is unfinished" in str(e)
    assert "no run store" in str(error(store=tmp_path / "absent.zarr"))
