"""Without the [viz]/[zarr] extras: berg_onnx imports, and brain-space work fails in one line.

Runs in both CI stages: in the torch-free stage nibabel, matplotlib and zarr are
really absent; in the main stage they are hidden from the import system.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from berg_onnx.errors import ResourceError

HIDE = ("nibabel", "matplotlib", "matplotlib.figure", "zarr")
# a child process that runs the CLI with those packages hidden
_HIDDEN = (
    "import sys; [sys.modules.__setitem__(m, None) for m in {hide!r}]; "
    "from berg_onnx.cli import main; sys.exit(main({argv!r}))"
)


@pytest.fixture
def no_extras(monkeypatch):
    for name in HIDE:
        monkeypatch.setitem(sys.modules, name, None)  # what an absent package looks like


def test_modules_import_and_name_the_extra(no_extras):
    from berg_onnx.brain import plot, volume
    from berg_onnx.brain import runs as brainspace

    meta = {"fmri": {"roi_mask_volume": np.ones((2, 2, 2), bool), "fmri_affine": np.eye(4)}}
    with pytest.raises(ResourceError, match=r'pip install "berg-onnx\[viz\]"'):
        volume.to_nifti(np.zeros(8, np.float32), meta)
    with pytest.raises(ResourceError, match=r'pip install "berg-onnx\[viz\]"'):
        plot.accuracy(meta)
    with pytest.raises(ResourceError, match=r'pip install "berg-onnx\[zarr\]"'):
        brainspace.RunStore.open(".")
    assert volume.is_nifti_path("a.NII.GZ") and not volume.is_nifti_path("a.npy")


@pytest.mark.parametrize(
    "argv, extra",
    [
        (["encode", "x.npy", "--subject", "1", "--roi", "V1", "--out", "OUT/r.nii.gz"], "viz"),
        (["volume", "s.zarr", "--subject", "1", "--roi", "V1", "--out", "OUT/v.nii.gz"], "viz"),
        (["plot", "--accuracy", "--subject", "1", "--roi", "V1", "--out", "OUT/a.png"], "viz"),
    ],
)
def test_cli_says_which_extra_before_any_work(argv, extra, tmp_path):
    argv = [a.replace("OUT", str(tmp_path)) for a in argv]
    code = _HIDDEN.format(hide=HIDE, argv=argv)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 1, run.stderr
    assert f'pip install "berg-onnx[{extra}]"' in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1  # one line, no traceback
    assert list(tmp_path.iterdir()) == []
