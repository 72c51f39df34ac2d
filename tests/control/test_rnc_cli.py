"""berg-onnx control: results equal the API's, an interrupted search resumes to the same
answer, bad inputs are one line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from berg_onnx.cli import main
from berg_onnx.control import CONDITIONS, load_result, univariate
from tests._support.rncstores import ROIS

REPO = Path(__file__).resolve().parents[2]


def _command(store, out, *extra) -> list[str]:
    return [
        sys.executable, "-m", "berg_onnx", "control", str(store), "--rois", *ROIS,
        "--out", str(out), "--quiet", *extra,
    ]  # fmt: skip


def _env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path}


def test_univariate_command_writes_the_api_result(real_store, tmp_path, capsys):
    out = tmp_path / "uni.json"
    args = ["--univariate", "--cv", "--null-samples", "3000", "--permutations", "500"]
    assert main(_command(real_store, out, *args, "--bootstrap", "500")[3:]) == 0
    assert "wrote" in capsys.readouterr().out
    saved = load_result(out)
    api = univariate(real_store, *ROIS, cv=True, null_samples=3000, permutations=500, bootstrap=500)
    for x, y in zip(saved.folds, api.folds, strict=True):
        for name in CONDITIONS:
            np.testing.assert_array_equal(x.controlling_images[name], y.controlling_images[name])
    np.testing.assert_array_equal(saved.stats.p_values, api.stats.p_values)
    document = out.read_text()
    assert '"method": "multivariate"' not in document and '"seed"' in document
    assert '"fingerprint"' in document and '"berg_onnx_version"' in document


def _generation(state: Path) -> int:
    try:
        with np.load(state, allow_pickle=False) as f:
            return int(f["generation"])
    except (OSError, ValueError, KeyError, EOFError):
        return 0


def test_interrupted_search_resumes_to_the_uninterrupted_result(real_store, tmp_path):
    extra = ["--multivariate", "--generations", "1500", "--n-batches", "20", "--n-images", "8",
             "--null-samples", "2000"]  # fmt: skip
    whole = tmp_path / "whole.json"
    subprocess.run(_command(real_store, whole, *extra), check=True, env=_env(), timeout=300)
    cut = tmp_path / "cut.json"
    state = tmp_path / "cut.search" / "search-align-all.npz"
    proc = subprocess.Popen(_command(real_store, cut, *extra), env=_env())
    deadline = time.monotonic() + 120
    while _generation(state) < 100 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    reached = _generation(state)
    assert 100 <= reached < 1500, reached  # killed in the middle of the search
    assert not cut.exists()
    subprocess.run(_command(real_store, cut, *extra), check=True, env=_env(), timeout=300)
    a, b = load_result(whole), load_result(cut)
    np.testing.assert_array_equal(a.best_batches, b.best_batches)
    np.testing.assert_array_equal(a.scores, b.scores)
    assert a.best_score == b.best_score
    assert not state.parent.exists()  # the search state is removed once the result is written


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--univariate", "--rois", "V1", "V4"], "no ROI 'V4'"),
        (["--univariate", "--cv", "--subjects", "1"], "two or more subjects"),
        (["--multivariate", "--n-images", "120"], "at least 120 images"),
        (["--univariate", "--out", "x.npz"], "--out must name a .json file"),
    ],
)
def test_bad_inputs_are_one_line(real_store, tmp_path, capsys, extra, message):
    args = _command(real_store, tmp_path / "r.json")[3:] + extra
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("berg-onnx: error:") and message in err and "\n" not in err


def test_figures_draw_what_the_result_holds(real_store, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from berg_onnx.control import multivariate
    from berg_onnx.control.figures import figure

    out, png = tmp_path / "uni.json", tmp_path / "uni.png"
    args = ["--univariate", "--cv", "--margin", "0", "--null-samples", "2000"]
    extra = ["--permutations", "300", "--bootstrap", "300", "--figure", str(png)]
    assert main(_command(real_store, out, *args, *extra)[3:]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = load_result(out)
    scatter, bars = figure(result).axes
    fold = result.folds[0]
    points = scatter.collections  # every image, then the four conditions in order
    np.testing.assert_allclose(points[0].get_offsets(), fold.train_responses.T)
    for collection, name in zip(points[1:], CONDITIONS, strict=True):
        want = fold.train_responses[:, fold.controlling_images[name]].T
        np.testing.assert_allclose(collection.get_offsets(), want)
    heights = [p.get_height() for p in bars.patches[:5]]  # ROI 1's bars: 4 conditions + baseline
    np.testing.assert_allclose(heights, result.stats.test_responses[:, :, 0].mean(axis=0))
    m = multivariate(real_store, *ROIS, generations=15, n_batches=10, n_images=8, null_samples=500)
    (curves,) = figure([m]).axes
    np.testing.assert_allclose(curves.lines[0].get_ydata(), m.scores)
    assert curves.lines[1].get_ydata()[0] == pytest.approx(m.baseline_score)
