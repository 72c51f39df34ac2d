"""Synthetic BERG directories: the original's layout, keys, types; deterministic; realistic."""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from berg_onnx.source.catalog import load_catalog  # noqa: E402
from export import layout  # noqa: E402
from export.checkpoint import _load_torch_zip, load_checkpoint, load_pickled_npy  # noqa: E402
from export.onnx_export import reference_preprocess  # noqa: E402
from export.reference import build_model  # noqa: E402
from export.synth import split_sizes, synthesize  # noqa: E402

SPEC = load_catalog().model("fmri-nsd-fwrf")
GOLDEN_V1 = "berg_dir/encoding_models/modality-fmri/train_dataset-nsd/model-fwrf"


def test_layout_keys_and_types_match_the_original(artifacts_dir, golden_dir, artifacts_info):
    berg = artifacts_dir / "berg"
    ours = _load_torch_zip(layout.checkpoint_paths(berg, 1, "V1", 1)[0])
    golden = _load_torch_zip(
        golden_dir / GOLDEN_V1 / "encoding_models_weights/weights_sub-01_roi-V1.pt"
    )
    assert list(ours) == list(golden)
    assert isinstance(ours["args."], argparse.Namespace)
    assert vars(ours["args."]).keys() == vars(golden["args."]).keys()
    assert isinstance(ours["best_params"]["enc"], collections.OrderedDict)
    assert list(ours["best_params"]["enc"]) == list(golden["best_params"]["enc"])
    for k, v in golden["best_params"]["enc"].items():
        assert (
            ours["best_params"]["enc"][k].shape == v.shape
            and ours["best_params"]["enc"][k].dtype == v.dtype
        )
    assert list(ours["best_params"]["fwrfs"]) == [1]  # keyed by the int subject
    assert list(ours["best_params"]["fwrfs"][1]) == ["rf0", "rf1", "rf2", "w", "b"]
    assert isinstance(ours["stim_mean"], np.ndarray) and ours["stim_mean"].shape == (1, 3, 1, 1)
    assert ours["betas_info"][1].keys() == golden["betas_info"][1].keys()
    # lateral is two split checkpoints
    nv = artifacts_info["voxels"]["lateral"]
    cks = [load_checkpoint(p) for p in layout.checkpoint_paths(berg, 1, "lateral", 2)]
    assert [c.nv for c in cks] == split_sizes(nv, 2) == [-(-nv // 2), nv // 2]
    assert [c.split for c in cks] == [1, 2]
    np.testing.assert_array_equal(cks[0].encoder["mu"], cks[1].encoder["mu"])


def test_metadata_matches_the_original_format(artifacts_dir, golden_dir, artifacts_info):
    ours = load_pickled_npy(layout.metadata_path(artifacts_dir / "berg", 1, "FFA-1"))
    golden = load_pickled_npy(golden_dir / GOLDEN_V1 / "metadata/metadata_sub-01_roi-V1.npy")
    nv = artifacts_info["voxels"]["FFA-1"]
    assert ours.keys() == golden.keys()
    for group in golden:
        assert ours[group].keys() == golden[group].keys()
        for k, v in golden[group].items():
            assert ours[group][k].dtype == v.dtype, k
            shape = v.shape if v.shape[:1] != (40,) else (nv,)
            assert ours[group][k].shape == shape, k
    assert int(ours["fmri"]["roi_mask_volume"].sum()) == nv
    ev = ours["encoding_models"]["explained_variance"]
    assert ev.min() >= 0 and ev.max() <= 100


def test_weights_look_trained(artifacts_dir):
    ck = load_checkpoint(layout.checkpoint_paths(artifacts_dir / "berg", 1, "V1", 1)[0])
    for name in ("enc.bn1", "enc.conv4a.bn1", "enc.conv6b.bn1"):
        assert not np.allclose(ck.encoder[f"{name}.running_mean"], 0)
        assert not np.allclose(ck.encoder[f"{name}.running_var"], 1)
        assert (ck.encoder[f"{name}.running_var"] > 0).all()
    rf = ck.readout["rf0"]  # a spatial bump: peak well above the corners
    assert (rf.reshape(len(rf), -1).max(1) - rf[:, 0, 0] > 1).mean() > 0.8


def test_responses_vary_across_natural_images_like_real_ones(artifacts_dir):
    photos = np.load(artifacts_dir / "reference" / "photos_256_uint8.npy")
    for roi in ("V1", "FFA-1", "lateral"):
        responses = np.load(artifacts_dir / "reference" / f"sub-01_{roi}.npy")
        sd = responses.std(axis=0)
        assert 0.1 <= np.median(sd) <= 0.3, (roi, np.median(sd))
        assert len(set(responses.argmax(axis=0))) > 1  # different images drive different voxels
    assert photos.shape[0] == responses.shape[0]


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for path, seed in ((a, 5), (b, 5), (c, 6)):
        synthesize(path, SPEC, [3], ["OFA"], {"OFA": 7}, seed, progress=False)
    (pa,), (pb,), (pc,) = (layout.checkpoint_paths(p, 3, "OFA", 1) for p in (a, b, c))
    ca, cb, cc = load_checkpoint(pa), load_checkpoint(pb), load_checkpoint(pc)
    for k in ca.encoder:
        assert ca.encoder[k].tobytes() == cb.encoder[k].tobytes(), k
    for k in ca.readout:
        assert ca.readout[k].tobytes() == cb.readout[k].tobytes(), k
    assert pa.read_bytes() == pb.read_bytes()
    assert (
        layout.metadata_path(a, 3, "OFA").read_bytes()
        == layout.metadata_path(b, 3, "OFA").read_bytes()
    )
    assert not np.array_equal(ca.readout["w"], cc.readout["w"])
    assert ca.subject == 3 and ca.nv == 7


def test_synth_cli_and_errors(tmp_path):
    out = tmp_path / "berg"
    cmd = [sys.executable, "-m", "export", "synth", "--out", str(out), "--subjects", "2"]
    run = subprocess.run(
        cmd + ["--rois", "V2", "--voxels", "V2=3", "--quiet"], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert layout.checkpoint_paths(out, 2, "V2", 1)[0].is_file()
    bad = subprocess.run(cmd + ["--rois", "V9", "--quiet"], capture_output=True, text=True)
    assert bad.returncode == 2 and "valid ROIs" in bad.stderr and "Traceback" not in bad.stderr
    bad = subprocess.run(cmd + ["--voxels", "V2=x"], capture_output=True, text=True)
    assert bad.returncode == 2 and "ROI=N" in bad.stderr


def test_default_voxel_counts_are_subject_1s(tmp_path):
    synthesize(tmp_path, SPEC, [1], ["mfs-words"], None, 0, progress=False)
    ck = load_checkpoint(layout.checkpoint_paths(tmp_path, 1, "mfs-words", 1)[0])
    assert ck.nv == 165
    model = build_model([(ck.encoder, ck.readout)])
    x = reference_preprocess(np.random.default_rng(0).integers(0, 256, (2, 3, 227, 227)))
    with torch.no_grad():
        assert model(x).shape == (2, 165)
