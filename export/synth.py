"""BERG-format synthetic model directories.

Real NSD weights are not redistributable here, so the project makes its own:
checkpoints with the original's files, keys, pickling and shapes, and weights
that behave like trained ones (BatchNorm statistics measured on image-like
inputs, receptive fields shaped as spatial bumps, readouts scaled so that
responses vary across natural images with a per-voxel SD of ~0.1-0.3). The
same seed gives the same bytes of weights: every random stream is derived
from (seed, subject, ROI, split), and calibrated values are rounded so that
float noise between BLAS builds cannot flip a bit.
"""

from __future__ import annotations

import argparse
import collections
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from berg_onnx.source.catalog import ModelSpec
from berg_onnx.utils.fileio import atomic_path

from . import layout
from .reference import Encoder, act

VOLUME_SHAPE = (81, 104, 83)
AFFINE = np.diag([1.8, 1.8, 1.8, 1.0])
N_TRAIN, N_VAL, N_TEST = 9000, 485, 515
N_CALIBRATION = 16


@dataclass(frozen=True)
class Scales:
    """Where the weights sit, for BERG directories at scales the defaults do not cover.

    ``readout`` multiplies every readout weight and bias (so also the responses'
    per-voxel SD, ~0.1-0.3 at 1.0); ``rf_sharpness`` divides the receptive
    fields' widths (> 1: sharper, fewer feature-map pixels per voxel; < 1:
    broader). The defaults write the same bytes as before they existed.
    """

    readout: float = 1.0
    rf_sharpness: float = 1.0

    def __post_init__(self) -> None:
        for name in ("readout", "rf_sharpness"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and np.isfinite(v) and v > 0):
                raise ValueError(f"Scales.{name} must be a finite number > 0, got {v!r}")


#: Key order of the original checkpoints' encoder state dicts.
ENCODER_KEY_ORDER = (
    ["mu", "pre.conv1.0.weight", "pre.conv1.0.bias", "pre.conv2.0.weight", "pre.conv2.0.bias"]
    + ["enc.conv3.weight", "enc.conv3.bias"]
    + [f"enc.bn1.{p}" for p in ("weight", "bias", "running_mean", "running_var")]
    + ["enc.bn1.num_batches_tracked"]
    + [
        f"enc.{blk}.{p}"
        for blk in ("conv4a", "conv5a", "conv6a", "conv4b", "conv5b", "conv6b")
        for p in (
            "conv1.weight",
            "conv1.bias",
            "bn1.weight",
            "bn1.bias",
            "bn1.running_mean",
            "bn1.running_var",
            "bn1.num_batches_tracked",
        )
    ]
)


def _round_sig(x: np.ndarray, digits: int = 4) -> np.ndarray:
    """Round to a few significant digits, so calibration noise cannot change the bytes."""
    x = np.asarray(x, dtype=np.float64)
    mag = np.where(x == 0, 1.0, 10.0 ** np.floor(np.log10(np.abs(x) + 1e-300)))
    return np.round(x / mag, digits - 1) * mag


def pink_noise_images(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 3, size, size) float images in [0, 1] with natural image statistics.

    A 1/f^a amplitude spectrum (a around 1, as in photographs), colour tints,
    and per-image brightness and contrast spread like a photo collection's.
    """
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    radius = np.maximum(np.hypot(fy, fx), 1.0 / size)
    out = np.empty((n, 3, size, size))
    for i in range(n):
        amp = radius ** -rng.uniform(0.8, 1.4)
        phase = np.exp(2j * np.pi * rng.random((4, size, size // 2 + 1)))
        planes = np.fft.irfft2(amp * phase, s=(size, size))  # luminance + 3 colour planes
        planes /= planes.std(axis=(1, 2), keepdims=True)
        img = planes[0] * (1 + 0.3 * rng.standard_normal((3, 1, 1))) + 0.4 * planes[1:]
        img = (img - img.mean()) / img.std()
        out[i] = img * rng.uniform(0.08, 0.3) + rng.uniform(0.25, 0.65)
    return np.clip(out, 0, 1)


def _encoder_state(rng: np.random.Generator, mu: np.ndarray, calib: torch.Tensor) -> dict:
    """Random He-initialised encoder whose BatchNorm statistics are measured on ``calib``."""
    enc = Encoder().double()
    with torch.no_grad():
        for name, p in enc.named_parameters():
            if name.endswith("weight") and p.ndim == 4:
                fan_in = p.shape[1] * p.shape[2] * p.shape[3]
                p.copy_(torch.from_numpy(rng.normal(0, np.sqrt(2 / fan_in), tuple(p.shape))))
            elif name.endswith("bn1.weight"):
                p.copy_(torch.from_numpy(rng.uniform(0.8, 1.2, tuple(p.shape))))
            else:  # conv and BN biases
                p.copy_(torch.from_numpy(rng.normal(0, 0.05, tuple(p.shape))))
        enc.mu.copy_(torch.from_numpy(mu.astype(np.float64)))
        bns = [m for m in enc.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        for bn in bns:  # batch statistics of image-like inputs become the running stats
            bn.reset_running_stats()
            bn.momentum = None
        enc.train()
        enc(calib)
        enc.eval()
        for bn in bns:
            mean = bn.running_mean.numpy() + rng.normal(0, 0.02, bn.num_features)
            var = bn.running_var.numpy() * rng.uniform(0.85, 1.15, bn.num_features)
            bn.running_mean.copy_(torch.from_numpy(_round_sig(mean)))
            bn.running_var.copy_(torch.from_numpy(_round_sig(var)))
            bn.num_batches_tracked.fill_(1000)
            bn.momentum = 0.1
    state = {k: v.detach().clone() for k, v in enc.state_dict().items()}
    return collections.OrderedDict(
        (k, state[k].float() if state[k].is_floating_point() else state[k])
        for k in ENCODER_KEY_ORDER
    )


def _receptive_fields(
    rng: np.random.Generator, nv: int, sharpness: float = 1.0
) -> dict[str, torch.Tensor]:
    """log-Gaussian bumps at one random centre per voxel, shared across the three layers."""
    cy, cx = rng.uniform(0.15, 0.85, (2, nv, 1, 1))
    sigma = rng.uniform(0.04, 0.25, (nv, 1, 1)) / sharpness
    out = {}
    for k, side in enumerate((27, 25, 13)):
        grid = (np.arange(side) + 0.5) / side
        d2 = (grid[None, :, None] - cy) ** 2 + (grid[None, None, :] - cx) ** 2
        rf = -d2 / (2 * sigma**2) + rng.normal(0, 0.3, (nv, side, side))
        out[f"rf{k}"] = torch.from_numpy(rf.astype(np.float32))
    return out


def _readout_state(
    rng: np.random.Generator,
    nv: int,
    encoder: Mapping[str, torch.Tensor],
    calib: torch.Tensor,
    scales: Scales = Scales(),
) -> collections.OrderedDict:
    """Readout whose responses to ``calib`` have per-voxel SD ~0.1-0.3 (times
    ``scales.readout``) and mean ~0."""
    rfs = _receptive_fields(rng, nv, scales.rf_sharpness)
    enc = Encoder()
    enc.load_state_dict(encoder)
    enc.eval()
    w = rng.standard_normal((nv, 768))
    with torch.no_grad():
        feats = [act(f.flatten(2)).double() for f in enc(calib.float())]
        preds = np.empty((calib.shape[0], nv))
        for lo in range(0, nv, 512):
            hi = min(nv, lo + 512)
            phis = [
                torch.einsum(
                    "vs,bcs->bvc", torch.softmax(rfs[f"rf{k}"][lo:hi].double().flatten(1), 1), f
                )
                for k, f in enumerate(feats)
            ]
            phi = act(torch.cat(phis, dim=2)).numpy()  # (N, v, 768)
            preds[:, lo:hi] = np.einsum("nvc,vc->nv", phi, w[lo:hi])
    sd = preds.std(axis=0) + 1e-12
    scale = _round_sig(rng.uniform(0.09, 0.2, nv) / sd)
    w = w * scale[:, None]
    b = _round_sig(-preds.mean(axis=0) * scale + rng.normal(0, 0.05, nv))
    if scales.readout != 1.0:
        w, b = w * scales.readout, _round_sig(b * scales.readout)
    state = collections.OrderedDict(rfs)
    state["w"] = torch.from_numpy(w.astype(np.float32))
    state["b"] = torch.from_numpy(b.astype(np.float32))
    return state


def _metadata(rng: np.random.Generator, nv: int) -> dict:
    centre = rng.uniform([20, 25, 20], [60, 80, 60])
    coords = np.indices(VOLUME_SHAPE).reshape(3, -1).T
    dist = np.linalg.norm((coords - centre) * rng.uniform(0.7, 1.3, 3), axis=1)
    dist += rng.uniform(0, 3, dist.shape)  # ragged, cortex-like edges
    mask = np.zeros(int(np.prod(VOLUME_SHAPE)), dtype=bool)
    mask[np.argpartition(dist, nv - 1)[:nv]] = True
    ncsnr = rng.gamma(2.0, 0.25, nv).astype(np.float32)
    nc = (ncsnr**2 / (ncsnr**2 + 1 / 3)).astype(np.float32)
    r2 = nc.astype(np.float64) * rng.beta(2, 2, nv)
    images = rng.permutation(N_TRAIN + N_VAL + N_TEST).astype(np.int64)
    return {
        "fmri": {
            "ncsnr": ncsnr,
            "roi_mask_volume": mask.reshape(VOLUME_SHAPE),
            "fmri_affine": AFFINE.copy(),
        },
        "encoding_models": {
            "r2": r2,
            "noise_ceiling": nc,
            "explained_variance": np.clip(100 * r2 / np.maximum(nc, 1e-6), 0, 100),
            "train_img_num": images[:N_TRAIN],
            "val_img_num": images[N_TRAIN : N_TRAIN + N_VAL],
            "test_img_num": images[N_TRAIN + N_VAL :],
        },
    }


def _checkpoint(
    subject: int,
    roi: str,
    split: int,
    splits: int,
    enc: dict,
    readout: dict,
    mu: np.ndarray,
    rng: np.random.Generator,
) -> dict:
    nv = int(readout["b"].shape[0])
    best = {"enc": enc, "fwrfs": {subject: readout}}
    return {
        "args.": argparse.Namespace(
            subjects="single",
            used_nsd_sub=subject,
            roi=roi,
            split_roi=int(splits > 1),
            split=split,
            lr=0.001,
            batch_size=128,
        ),
        "best_params": best,
        "final_params": {"enc": enc, "fwrfs": {subject: readout}},  # shares storages, like BERG's
        "trn_hist": [0.9, 0.8],
        "hold_hist": [0.95, 0.85],
        "hold_cc_hist": [0.1, 0.2],
        "best_epoch": 1,
        "best_joint_cc_score": 0.2,
        "subject_val_cc": {subject: rng.uniform(0.0, 0.6, nv).astype(np.float32)},
        "stim_mean": mu.astype(np.float32).reshape(1, 3, 1, 1),
        "betas_info": {
            subject: {
                "test_img_idx": np.arange(N_TEST, dtype=np.int64),
                "masterordering": rng.integers(0, 10000, (1, 30000), dtype=np.int64),
            }
        },
    }


def split_sizes(nv: int, splits: int) -> list[int]:
    """Split 1 holds the first ceil(nv/2) voxels, split 2 the rest."""
    if splits == 1:
        return [nv]
    first = -(-nv // 2)
    return [first, nv - first]


def synthesize_roi(
    berg_dir: Path,
    spec: ModelSpec,
    subject: int,
    roi: str,
    nv: int,
    seed: int,
    scales: Scales = Scales(),
) -> list[Path]:
    """Write one ROI's checkpoint(s) and metadata; returns the files written."""
    roi_index = spec.roi_names.index(roi)
    splits = spec.roi(roi).splits
    subj_rng = np.random.default_rng([seed, subject])
    mu = _round_sig(np.array([0.45, 0.43, 0.38]) + subj_rng.normal(0, 0.01, 3)).reshape(1, 3, 1, 1)
    calib = torch.from_numpy(
        pink_noise_images(N_CALIBRATION, 227, np.random.default_rng([seed, 0]))
    )
    written = []
    paths = layout.checkpoint_paths(berg_dir, subject, roi, splits)
    for split, (path, n) in enumerate(zip(paths, split_sizes(nv, splits), strict=True), start=1):
        rng = np.random.default_rng([seed, subject, roi_index, split])
        enc = _encoder_state(rng, mu, calib)
        readout = _readout_state(rng, n, enc, calib, scales)
        ckpt = _checkpoint(subject, roi, split, splits, enc, readout, mu, rng)
        with atomic_path(path, keep_name=True) as tmp:  # the zip's folder is named after it
            torch.save(ckpt, tmp)
        written.append(path)
    meta = _metadata(np.random.default_rng([seed, subject, roi_index, 0]), nv)
    mpath = layout.metadata_path(berg_dir, subject, roi)
    with atomic_path(mpath) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, np.array(meta, dtype=object), allow_pickle=True)
    written.append(mpath)
    return written


def default_voxels(spec: ModelSpec, subject: int, roi: str) -> int:
    """Subject 1's counts from the catalogue (other subjects' are unpublished)."""
    counts = spec.voxels.get(subject) or spec.voxels[min(spec.voxels)]
    return int(counts[roi])


def synthesize(
    berg_dir: Path,
    spec: ModelSpec,
    subjects: Sequence[int],
    rois: Sequence[str],
    voxels: Mapping[str, int] | None = None,
    seed: int = 0,
    progress: bool = True,
    scales: Scales = Scales(),
) -> list[Path]:
    from tqdm.auto import tqdm

    voxels = dict(voxels or {})
    jobs: Iterable[tuple[int, str]] = [(s, r) for s in subjects for r in rois]
    written: list[Path] = []
    bar = tqdm(jobs, desc="synth", unit="model", disable=not progress)
    for subject, roi in bar:
        bar.set_postfix_str(f"sub-{subject:02d} {roi}")
        nv = voxels.get(roi, default_voxels(spec, subject, roi))
        written += synthesize_roi(berg_dir, spec, subject, roi, nv, seed, scales)
    return written
