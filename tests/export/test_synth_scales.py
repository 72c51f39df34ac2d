"""Synthetic BERG directories at other weight scales: wider readouts, sharper or broader RFs."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from berg_onnx.source.catalog import load_catalog  # noqa: E402
from export import layout  # noqa: E402
from export.__main__ import main as cli  # noqa: E402
from export.checkpoint import load_checkpoint  # noqa: E402
from export.synth import Scales, synthesize  # noqa: E402

SPEC = load_catalog().model("fmri-nsd-fwrf")


def _readout(folder, scales=None):
    kwargs = {} if scales is None else {"scales": scales}
    synthesize(folder, SPEC, [1], ["V1"], {"V1": 12}, 5, False, **kwargs)
    path = layout.checkpoint_paths(folder, 1, "V1", 1)[0]
    return path.read_bytes(), load_checkpoint(path).readout


def test_default_scales_write_the_same_bytes_and_others_rescale(tmp_path):
    plain_bytes, plain = _readout(tmp_path / "plain")
    same_bytes, _ = _readout(tmp_path / "same", Scales())
    assert same_bytes == plain_bytes  # the defaults change nothing
    _, wide = _readout(tmp_path / "wide", Scales(readout=3.0))
    np.testing.assert_allclose(wide["w"], 3 * plain["w"], rtol=1e-6)
    np.testing.assert_allclose(wide["b"], 3 * plain["b"], rtol=2e-3, atol=1e-6)
    _, sharp = _readout(tmp_path / "sharp", Scales(rf_sharpness=3.0))
    _, broad = _readout(tmp_path / "broad", Scales(rf_sharpness=0.4))

    def peak(readout):  # the softmax receptive field's largest weight, per voxel
        rf = torch.from_numpy(readout["rf0"]).flatten(1)
        return torch.softmax(rf, 1).max(1).values.median().item()

    assert peak(broad) < peak(plain) < peak(sharp)


@pytest.mark.parametrize("bad", ["0", "-1", "nan", "inf", "x"])
def test_synth_cli_refuses_bad_scales(tmp_path, capsys, bad):
    with pytest.raises(SystemExit):
        cli(["synth", "--out", str(tmp_path / "b"), "--rois", "V1", "--readout-scale", bad])
    assert "expected a number > 0" in capsys.readouterr().err
    with pytest.raises(ValueError, match="rf_sharpness"):
        Scales(rf_sharpness=0.0)
