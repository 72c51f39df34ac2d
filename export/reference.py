"""The fwRF encoding model in PyTorch, written from the spec (shared/spec/fwrf-nsd.md).

Two readouts share one encoder class:
- ``Readout`` follows the spec's formulas literally (softmax of each receptive
  field, per-voxel sums, the (nv, B, C) layout). It is the reference the export
  is verified against.
- ``GemmReadout`` computes the same thing batch-first as one matrix product per
  feature layer against constant, pre-normalised receptive fields; it is what
  gets traced to ONNX because it runs several times faster (see design notes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

BN_EPS = 1e-5
FEATURE_SIZES = (27, 25, 13)  # spatial side of F0, F1, F2
FEATURE_CHANNELS = 256
#: Softmax weights below this are flushed to zero in the exported graph: about
#: 1% of them are float32 denormals, which make GEMMs ~20x slower, and
#: dropping them moves no output by more than ~1e-6.
FLUSH_BELOW = 1e-30


def act(t: torch.Tensor) -> torch.Tensor:
    """The readout's activation, log(1 + |t|) * tanh(t)."""
    return torch.log(1 + torch.abs(t)) * torch.tanh(t)


class Block(nn.Module):
    """relu(conv3x3(bn(x))): the BN acts on the block's input channels."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, eps=BN_EPS)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv1(self.bn1(x)))


class Prefilter(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(3, 64, 11, stride=4, padding=2))
        self.conv2 = nn.Sequential(nn.Conv2d(64, 192, 5, stride=1, padding=2))


class Stage(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(192, eps=BN_EPS)
        self.conv3 = nn.Conv2d(192, 128, 3, stride=1, padding=0)
        self.conv4a = Block(128, 128)
        self.conv4b = Block(128, 128)
        self.conv5a = Block(128, 128)
        self.conv5b = Block(128, 128)
        self.conv6a = Block(128, 128)
        self.conv6b = Block(128, 64)


class Encoder(nn.Module):
    """GNet-style encoder; state-dict keys match the original checkpoints."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mu", torch.zeros(1, 3, 1, 1))
        self.pre = Prefilter()
        self.enc = Stage()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = x - self.mu
        c1 = nn.functional.max_pool2d(torch.relu(self.pre.conv1(x)), 3, stride=2)
        y = torch.relu(self.pre.conv2(c1))
        e = self.enc
        c3 = torch.relu(e.conv3(e.bn1(y)))
        c4a = e.conv4a(c3)
        c4b = e.conv4b(c4a)
        p = nn.functional.max_pool2d(c4b, 3, stride=2, padding=1)
        c5a = e.conv5a(p)
        c5b = e.conv5b(c5a)
        c6a = e.conv6a(c5b)
        c6b = e.conv6b(c6a)
        f0 = torch.cat([c1, y], dim=1)
        f1 = torch.cat([c3, c4a[:, :64], c4b[:, :64]], dim=1)
        f2 = torch.cat([c5a[:, :64], c5b[:, :64], c6a[:, :64], c6b], dim=1)
        return f0, f1, f2


class Readout(nn.Module):
    """The fwRF readout exactly as the spec writes it (nv, B, C layout)."""

    def __init__(self, nv: int) -> None:
        super().__init__()
        self.rf0 = nn.Parameter(torch.zeros(nv, 27, 27))
        self.rf1 = nn.Parameter(torch.zeros(nv, 25, 25))
        self.rf2 = nn.Parameter(torch.zeros(nv, 13, 13))
        self.w = nn.Parameter(torch.zeros(nv, 3 * FEATURE_CHANNELS))
        self.b = nn.Parameter(torch.zeros(nv))

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        phis = []
        for f, rf in zip(feats, (self.rf0, self.rf1, self.rf2), strict=True):
            g = torch.softmax(rf.flatten(1), dim=1)  # (nv, S)
            fk = act(f.flatten(2))  # (B, 256, S)
            phis.append(torch.einsum("vs,bcs->vbc", g, fk))  # (nv, B, 256)
        phi = act(torch.cat(phis, dim=2))  # (nv, B, 768)
        return torch.einsum("vbc,vc->bv", phi, self.w) + self.b  # (B, nv)


def act_nonneg(t: torch.Tensor) -> torch.Tensor:
    """``act`` for t >= 0, where |t| = t: one elementwise pass fewer."""
    return torch.log(1 + t) * torch.tanh(t)


#: Voxels per readout tile. After the GEMM, each layer's (B, 256, nv) block goes
#: through six elementwise passes; tiles this wide keep those passes in cache.
#: Measured on 2 cores (concurrent single-image runs): V1 118 -> 124 images/s,
#: lateral 27 -> 29; 256 was no better, 1024 and untiled slower.
TILE_VOXELS = 512


def voxel_tiles(nv: int, width: int = TILE_VOXELS) -> list[tuple[int, int]]:
    """Near-equal [start, stop) voxel ranges about ``width`` wide, covering 0..nv."""
    n = max(1, round(nv / width))
    edges = [round(i * nv / n) for i in range(n + 1)]
    return list(zip(edges[:-1], edges[1:], strict=True))


class GemmReadout(nn.Module):
    """The same readout, rewritten for speed; exact in real arithmetic.

    - One GEMM per layer and voxel tile, batch first: act(F_k) (B, 256, S) @
      softmax(rf_k)^T (S, tile), with the softmax precomputed and its denormals
      flushed (``FLUSH_BELOW``).
    - No concatenation: the activation is elementwise and the output a sum over
      channels, so each layer's (B, 256, tile) block is activated, weighted by
      its 256 rows of ``w`` and summed on its own (as a product with ones).
    - No |.|: every feature map is a ReLU (or max-pool of ReLU) output, so F >= 0,
      and phi is a non-negative combination of act(F) >= 0; |t| = t for both.
    - Voxel tiles (``TILE_VOXELS``): only the output's columns are split, so
      every voxel sees exactly the arithmetic of the untiled form.
    """

    def __init__(self, readout: Mapping[str, torch.Tensor], tile: int = TILE_VOXELS) -> None:
        super().__init__()
        nv = int(readout["b"].shape[0])
        self.tiles = voxel_tiles(nv, tile)
        w = readout["w"].detach().float()
        b = readout["b"].detach().float()
        for k in range(3):
            rf = readout[f"rf{k}"].detach().float()
            g = torch.softmax(rf.flatten(1), dim=1)
            g = torch.where(g < FLUSH_BELOW, torch.zeros_like(g), g)
            w_k = w[:, k * FEATURE_CHANNELS : (k + 1) * FEATURE_CHANNELS]
            for t, (lo, hi) in enumerate(self.tiles):
                self.register_buffer(f"gt{k}_{t}", g[lo:hi].t().contiguous())  # (S, tile)
                self.register_buffer(f"wt{k}_{t}", w_k[lo:hi].t().contiguous())  # (256, tile)
        for t, (lo, hi) in enumerate(self.tiles):
            self.register_buffer(f"b_{t}", b[lo:hi].clone())
        self.register_buffer("ones", torch.ones(1, FEATURE_CHANNELS))

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        acts = [act_nonneg(f.flatten(2)) for f in feats]  # (B, 256, S_k)
        outs = []
        for t in range(len(self.tiles)):
            out = getattr(self, f"b_{t}")
            for k, a in enumerate(acts):
                phi = act_nonneg(torch.matmul(a, getattr(self, f"gt{k}_{t}")))  # (B, 256, tile)
                # the channel sum as a (1, 256) @ (256, tile) product: onnxruntime's
                # ReduceSum over a middle axis is ~5x slower than this MatMul
                out = out + torch.matmul(self.ones, phi * getattr(self, f"wt{k}_{t}")).flatten(1)
            outs.append(out)
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)


def _tensors(state: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}


def build_encoder(state: Mapping[str, np.ndarray], mu: np.ndarray | None = None) -> Encoder:
    """An eval-mode encoder from an original state dict (strict key match)."""
    enc = Encoder()
    tensors = _tensors(state)
    if mu is not None:
        tensors["mu"] = torch.from_numpy(np.asarray(mu, np.float32).reshape(1, 3, 1, 1))
    enc.load_state_dict(tensors, strict=True)
    return enc.eval()


class FwrfModel(nn.Module):
    """One ROI: encoder(s) + readout(s), outputs concatenated split 1 first."""

    def __init__(self, encoders: Sequence[Encoder], readouts: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(encoders) != len(readouts) or not encoders:
            raise ValueError("need one readout per encoder")
        self.encoders = nn.ModuleList(encoders)
        self.readouts = nn.ModuleList(readouts)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        outs = [r(e(images)) for e, r in zip(self.encoders, self.readouts, strict=True)]
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)


def build_model(
    splits: Sequence[tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]]],
    *,
    gemm: bool = False,
) -> FwrfModel:
    """The model of one ROI from its splits' (encoder state, readout state) pairs.

    Like BERG's loader, every split's encoder uses the *last* split's ``mu``
    (the original builds them on one shared buffer).
    """
    mu = splits[-1][0]["mu"]
    encoders = [build_encoder(enc, mu) for enc, _ in splits]
    readouts: list[nn.Module] = []
    for _, ro in splits:
        tensors = _tensors(ro)
        if gemm:
            readouts.append(GemmReadout(tensors))
        else:
            r = Readout(int(tensors["b"].shape[0]))
            r.load_state_dict(tensors, strict=True)
            readouts.append(r)
    return FwrfModel(encoders, readouts).eval()
