"""The PyTorch reference model against the spec's formulas and the original's outputs."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from export.checkpoint import load_checkpoint  # noqa: E402
from export.onnx_export import reference_preprocess  # noqa: E402
from export.reference import GemmReadout, Readout, build_model, voxel_tiles  # noqa: E402

FWRF = "encoding_models/modality-fmri/train_dataset-nsd/model-fwrf/encoding_models_weights"


def numpy_readout(feats, rfs, w, b):
    """The spec's formulas, written directly in float64 numpy loops over layers."""

    def act(t):
        return np.log(1 + np.abs(t)) * np.tanh(t)

    phis = []
    for f, rf in zip(feats, rfs, strict=True):
        nv = rf.shape[0]
        logits = rf.reshape(nv, -1).astype(np.float64)
        g = np.exp(logits - logits.max(1, keepdims=True))
        g /= g.sum(1, keepdims=True)
        fk = act(f.reshape(f.shape[0], f.shape[1], -1).astype(np.float64))  # (B, 256, S)
        phi = np.zeros((nv, f.shape[0], f.shape[1]))
        for v in range(nv):
            for bi in range(f.shape[0]):
                phi[v, bi] = fk[bi] @ g[v]
        phis.append(phi)
    big_phi = act(np.concatenate(phis, axis=2))  # (nv, B, 768)
    return np.einsum("vbc,vc->bv", big_phi, w) + b


@pytest.mark.parametrize("nv, batch", [(1, 1), (1, 3), (4, 1), (5, 2)])
def test_readout_matches_numpy_formulas(nv, batch):
    rng = np.random.default_rng(nv * 10 + batch)
    # encoder features are ReLU outputs (>= 0); some exact zeros as ReLU makes them
    feats = [
        np.maximum(rng.normal(0, 1.5, (batch, 256, s, s)), 0).astype(np.float32)
        for s in (27, 25, 13)
    ]
    rfs = [rng.normal(0, 3, (nv, s, s)).astype(np.float32) for s in (27, 25, 13)]
    w = rng.normal(0, 0.2, (nv, 768)).astype(np.float32)
    b = rng.normal(0, 0.1, nv).astype(np.float32)
    expected = numpy_readout(feats, rfs, w, b)

    state = {"rf0": rfs[0], "rf1": rfs[1], "rf2": rfs[2], "w": w, "b": b}
    tensors = {k: torch.from_numpy(v) for k, v in state.items()}
    literal = Readout(nv)
    literal.load_state_dict(tensors)
    tiled = GemmReadout(tensors, tile=2)  # several voxel tiles, the last one narrower
    tf = [torch.from_numpy(f) for f in feats]
    with torch.no_grad():
        for module in (literal, GemmReadout(tensors), tiled):
            got = module(tf).numpy()
            assert got.shape == (batch, nv)  # 2-D even for B = 1 or nv = 1
            np.testing.assert_allclose(got, expected, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("nv, width", [(1, 512), (511, 512), (1350, 512), (7799, 512), (5, 2)])
def test_voxel_tiles_cover_every_voxel_once(nv, width):
    tiles = voxel_tiles(nv, width)
    assert tiles[0][0] == 0 and tiles[-1][1] == nv
    assert all(a[1] == b[0] for a, b in zip(tiles[:-1], tiles[1:], strict=True))  # contiguous
    sizes = [hi - lo for lo, hi in tiles]
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1
    assert len(tiles) == max(1, round(nv / width))


def test_reference_reproduces_original_responses(golden_dir):
    """The original's own outputs for the golden checkpoints, V1 and split lateral."""
    stimuli = np.load(golden_dir / "stimuli_400_uint8.npy")
    x = reference_preprocess(stimuli)
    base = golden_dir / "berg_dir" / FWRF
    for roi, files in {
        "V1": ["weights_sub-01_roi-V1.pt"],
        "lateral": [
            "weights_sub-01_roi-lateral_split-1.pt",
            "weights_sub-01_roi-lateral_split-2.pt",
        ],
    }.items():
        cks = [load_checkpoint(base / f) for f in files]
        expected = np.load(golden_dir / f"responses_sub-01_roi-{roi}.npy")
        for gemm in (False, True):
            model = build_model([(c.encoder, c.readout) for c in cks], gemm=gemm)
            with torch.no_grad():
                assert np.abs(model(x).numpy() - expected).max() <= 1e-5
                one = model(x[:1]).numpy()
            assert one.shape == (1, expected.shape[1])
            assert np.abs(one - expected[:1]).max() <= 1e-5


def test_split_model_uses_last_splits_mu_like_berg(golden_dir):
    base = golden_dir / "berg_dir" / FWRF
    cks = [load_checkpoint(base / f"weights_sub-01_roi-lateral_split-{i}.pt") for i in (1, 2)]
    e1, e2 = dict(cks[0].encoder), cks[1].encoder
    e1["mu"] = e1["mu"] + 0.1  # make split 1's mu differ: BERG would ignore it
    model = build_model([(e1, cks[0].readout), (e2, cks[1].readout)])
    for enc in model.encoders:
        np.testing.assert_array_equal(enc.mu.numpy(), e2["mu"])
