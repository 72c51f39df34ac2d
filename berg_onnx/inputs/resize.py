"""Bit-exact numpy port of torchvision ``Resize`` on integer image tensors.

Why this exists: the original BERG pipeline resizes integer images with
``F.interpolate(x.float(), size, mode="bilinear", antialias=True, align_corners=False)``
and the result is then rounded (``torch.round``, half to even). A rounded value
flips by one whenever the float32 sum lands on the other side of an ``x.5``
boundary, so "close" is not good enough: the numbers must be the same bits that
torch's CPU kernel produces. Any change of summation order, of FMA use or of the
weight arithmetic changes a few pixels per image. This module therefore copies
torch's arithmetic step by step instead of implementing "a bilinear filter".

What torch does (``aten/src/ATen/native/cpu/UpSampleKernel.cpp``,
``separable_upsample_generic_Nd_kernel_impl`` with ``HelperInterpLinear``), and
what is reproduced here:

1. Separable passes: first along W (the "horizontal" pass), into a float32
   temporary of shape (N, C, H, out_w), then along H (the "vertical" pass).
   A pass whose input and output sizes are equal is skipped; if both are, the
   input is copied unchanged.
2. Weights per axis (``_compute_indices_min_size_weights_aa``), in float32 with
   some intermediate steps promoted to double exactly as the C++ does:
   ``scale = float(in) / out``; ``support = scale`` if ``scale >= 1`` else 1
   (so upscaling is plain bilinear); ``invscale = float(1.0 / scale)`` or 1;
   ``center = float(scale * (i + 0.5))``;
   ``xmin = max(trunc(float(center - support) + 0.5), 0)``;
   ``xsize = min(trunc(float(center + support) + 0.5), in) - xmin``, clamped to
   ``[0, 2 * ceil(support) + 1]``; tap ``j`` gets the triangle filter
   ``1 - |float((float(j + xmin - center) + 0.5) * invscale)|`` (0 outside),
   the float32 weights are summed sequentially and each one is divided by the
   sum in float32. Verified bit for bit against torch by resizing one-hot rows.
3. Each output value is a dot product over its ``xsize`` taps, accumulated in
   float32. The C++ is a plain loop ``out = t0*w0; for j>=1: out += tj*wj``, but
   the AVX2 and AVX512 builds of that kernel (selected at runtime by
   ``torch.backends.cpu.get_cpu_capability()``) are compiled with FMA
   contraction, and the order they actually follow is consistent with the
   compiler vectorising the loop body in blocks of four (four products rounded,
   then added in order) and contracting the scalar remainder into FMAs. It was
   established empirically by comparing candidate orders bit for bit against
   torch 2.13 (AVX512, and ``ATEN_CPU_CAPABILITY=avx2``), one pass at a time:

   - tap 0: ``acc = t0 * w0`` (rounded float32 product);
   - taps ``1 .. 4*((xsize-1)//4)`` (complete groups of four): ``acc += tj*wj``
     with the product rounded to float32 before the float32 add;
   - the remaining ``(xsize-1) % 4`` taps: fused multiply-add
     ``acc = fma(tj, wj, acc)`` (one rounding).

   Zero-weight taps inside ``[xmin, xmin + xsize)`` still count for the
   grouping. Both passes use the same order. (The non-SIMD ``DEFAULT`` build
   instead does every tap as a separate multiply and add; that order is not
   what torch uses on x86-64 machines with AVX2, so it is not reproduced.)
   Not reproduced either: for an output width of 1 torch's vertical pass
   repeats (almost) the first output row, a stride quirk of
   ``basic_loop_aa_vertical``; this module computes such rows properly.

numpy has no FMA. ``fma(t, w, acc)`` is emulated exactly in float64: the
product of two float32 values is exact in float64, so ``s = acc + t*w`` has a
single float64 rounding; converting ``s`` to float32 is then correct unless
``s`` sits exactly on a float32 rounding midpoint that the float64 rounding
created (double rounding). Those rare elements are detected from the bit
pattern of ``s`` and repaired with the exact TwoSum error (round to odd). On
the horizontal pass of integer images the float64 sum is provably exact for
usual sizes, so the check is skipped there (``_needs_midpoint_check``).

Layout/performance: each pass resizes axis -2 of a contiguous (M, in, L) array,
so tap gathers are row copies. Output positions are reordered by ``xsize`` so
that, for every tap index, the "add" and "fma" outputs are contiguous slices;
the order is undone afterwards.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np

__all__ = ["resize_rounded"]

_F32 = np.float32
_F64 = np.float64
# A float64 that is exactly halfway between two float32 values (normal range)
# has its low 29 mantissa bits equal to 1 followed by 28 zeros.
_LOW29 = np.int64((1 << 29) - 1)
_HALF29 = np.int64(1 << 28)
# Images per chunk are chosen so that a chunk has about this many pixels.
_CHUNK_ELEMENTS = 1 << 18


class _Tap(NamedTuple):
    """One tap index of a pass, over the output positions in sorted order."""

    start: int  # first sorted output position that has this tap
    fma_end: int  # positions [start, fma_end) use an FMA, [fma_end, out) mul+add
    index: np.ndarray  # int64 input index for positions [start, out)
    w32: np.ndarray  # float32 weights for positions [start, out), shape (k, 1)
    w64: np.ndarray  # the same weights as float64, shape (k, 1)


class _Plan(NamedTuple):
    taps: tuple[_Tap, ...]
    inverse: np.ndarray | None  # undoes the sort of output positions; None if identity
    # Smallest ulp of a positive float32 weight: with integer inputs every
    # product and partial sum is a multiple of it (see _needs_midpoint_check).
    min_ulp: float


def _aa_weights(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """torch's ``_compute_indices_min_size_weights_aa`` for the linear filter, float32."""
    scale = _F32(_F32(in_size) / _F32(out_size))
    if scale >= 1.0:
        support = _F32(_F64(1.0) * _F64(scale))
        invscale = _F32(1.0 / _F64(scale))
    else:
        support = _F32(1.0)
        invscale = _F32(1.0)
    max_taps = int(np.ceil(support)) * 2 + 1

    i = np.arange(out_size, dtype=_F64)
    center = (_F64(scale) * (i + 0.5)).astype(_F32)
    lo = (center - support).astype(_F64) + 0.5
    hi = (center + support).astype(_F64) + 0.5
    xmin = np.maximum(np.trunc(lo).astype(np.int64), 0)
    xsize = np.minimum(np.trunc(hi).astype(np.int64), in_size) - xmin
    xsize = np.clip(xsize, 0, max_taps)

    weights = np.zeros((out_size, max_taps), dtype=_F32)
    total = np.zeros(out_size, dtype=_F32)
    for j in range(max_taps):
        x = ((xmin + j).astype(_F32) - center).astype(_F64) + 0.5
        x = np.abs((x * _F64(invscale)).astype(_F32))
        w = np.where(x < 1.0, (1.0 - x.astype(_F64)).astype(_F32), _F32(0.0))
        w = np.where(j < xsize, w, _F32(0.0)).astype(_F32)
        weights[:, j] = w
        total = np.where(j < xsize, (total + w).astype(_F32), total)
    nonzero = total != 0.0
    weights[nonzero] = (weights[nonzero] / total[nonzero, None]).astype(_F32)
    return xmin, xsize, weights


@lru_cache(maxsize=64)
def _plan(in_size: int, out_size: int) -> _Plan:
    xmin, xsize, weights = _aa_weights(in_size, out_size)
    order = np.argsort(xsize, kind="stable")
    xmin, xsize, weights = xmin[order], xsize[order], weights[order]

    taps = []
    for j in range(max(int(xsize.max()), 1)):
        if j == 0:
            start = 0  # torch always reads tap 0 (weight 0 if xsize == 0)
            fma_end = 0
        else:
            start = int(np.searchsorted(xsize, j, side="right"))  # xsize > j
            # FMA iff j > 4 * ((xsize - 1) // 4); monotone in xsize.
            plain = 4 * ((xsize - 1) // 4) >= j
            fma_end = start + int(np.count_nonzero(~plain[start:]))
        index = np.clip(xmin[start:] + j, 0, in_size - 1).astype(np.int64)
        w32 = np.ascontiguousarray(weights[start:, j, None])
        taps.append(_Tap(start, fma_end, index, w32, w32.astype(_F64)))

    inverse = None
    if np.any(order != np.arange(out_size)):
        inverse = np.argsort(order)

    positive = weights[weights > 0].astype(_F64)
    min_ulp = 1.0
    if positive.size:
        min_ulp = float(np.ldexp(1.0, int(np.frexp(positive)[1].min()) - 24))
    return _Plan(tuple(taps), inverse, min_ulp)


def _needs_midpoint_check(plan: _Plan, max_abs_input: int | None) -> bool:
    """Whether an FMA of this pass can suffer from float64 double rounding.

    With integer inputs (``max_abs_input`` not None) every product t*w is a
    multiple of u = ``plan.min_ulp``, and so is every float32 partial sum (a
    float32 rounding of a multiple of u is either exact or a multiple of its own
    ulp >= u). All sums stay below 2 * max|t| in magnitude (the weights sum to
    1), so if that bound divided by u is at most 2**53 the float64 sum
    acc + t*w is exact and a plain float64 -> float32 conversion is a correctly
    rounded FMA. This holds for the usual sizes (u >= 2**-44 for 0..255) and
    spares the check on the larger, horizontal pass.
    """
    if max_abs_input is None:
        return True
    return 2.0 * max(max_abs_input, 1) / plan.min_ulp > 2.0**53


def _fma_into(acc: np.ndarray, t: np.ndarray, w64: np.ndarray, check: bool) -> None:
    """acc[...] = fma(t, w, acc) with one float32 rounding, in place.

    ``t`` is a contiguous float32 (M, k, L) array, ``w64`` float64 (k, 1) and
    ``acc`` a float32 (M, k, L) view. ``check=False`` is only allowed when the
    float64 sum is known to be exact (see ``_needs_midpoint_check``).
    """
    total = np.multiply(t, w64)  # float64, exact
    if not check:
        np.add(total, acc, out=acc, casting="same_kind")  # exact sum, one rounding
        return
    np.add(total, acc, out=total)  # float64, one rounding
    bits = total.view(np.int64).reshape(-1)
    suspicious = np.flatnonzero((bits & _LOW29) == _HALF29)
    if suspicious.size:
        # total is on a float32 midpoint; if the float64 rounding put it there,
        # the TwoSum error says which way the exact value lies: round to odd.
        where = np.unravel_index(suspicious, total.shape)
        p = t[where].astype(_F64) * w64[where[1], 0]
        c = acc[where].astype(_F64)
        s = bits[suspicious].view(_F64)
        pv = s - c
        err = (p - pv) + (c - (s - pv))
        step = np.where((err > 0) == (s > 0), 1, -1) * (err != 0)
        bits[suspicious] += step.astype(np.int64)
    acc[...] = total  # float64 -> float32, round half to even


def _resize_axis(x: np.ndarray, out_size: int, max_abs_input: int | None) -> np.ndarray:
    """Resize axis 1 of a contiguous float32 (M, in, L) array like torch's AA pass.

    ``max_abs_input`` bounds |x| when x holds integers, None otherwise.
    """
    plan = _plan(x.shape[1], out_size)
    check = _needs_midpoint_check(plan, max_abs_input)
    first = plan.taps[0]
    acc = np.take(x, first.index, axis=1)
    acc *= first.w32
    for tap in plan.taps[1:]:
        n_fma = tap.fma_end - tap.start
        if n_fma:
            t = np.take(x, tap.index[:n_fma], axis=1)
            _fma_into(acc[:, tap.start : tap.fma_end], t, tap.w64[:n_fma], check)
        if tap.fma_end < out_size:
            t = np.take(x, tap.index[n_fma:], axis=1)
            t *= tap.w32[n_fma:]
            acc[:, tap.fma_end :] += t
    if plan.inverse is not None:
        acc = np.take(acc, plan.inverse, axis=1)
    return acc


def resize_rounded(images: np.ndarray, size: tuple[int, int] = (227, 227)) -> np.ndarray:
    """Resize (N, 3, H, W) integer images and round, bit-identical to torch.

    Equals ``F.interpolate(torch.from_numpy(images).float(), size=size,
    mode="bilinear", antialias=True, align_corners=False).round().numpy()`` as
    computed by torch's AVX2/AVX512 CPU kernel (see the module docstring), which
    is what torchvision ``Resize`` does to integer image tensors. ``images``
    may have any integer dtype with values already validated to 0..255. Returns
    float32 (N, 3, size[0], size[1]) holding integers; an input that already
    has the target size is only converted to float32.
    """
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"expected (N, C, H, W) images, got shape {images.shape}")
    if not np.issubdtype(images.dtype, np.integer):
        raise TypeError(f"expected an integer dtype, got {images.dtype}")
    n, c, h, w = images.shape
    out_h, out_w = int(size[0]), int(size[1])
    if out_h < 1 or out_w < 1:
        raise ValueError(f"invalid output size {tuple(size)}")
    if (h, w) == (out_h, out_w):
        return images.astype(_F32)
    if h == 0 or w == 0:
        raise ValueError(f"cannot resize empty images of shape {images.shape}")
    out = np.empty((n, c, out_h, out_w), dtype=_F32)

    # A few images at a time, so that the float64 temporaries stay in cache.
    step = max(1, _CHUNK_ELEMENTS // (c * max(h, out_h) * max(w, out_w)))
    for lo in range(0, n, step):
        out[lo : lo + step] = _resize_chunk(images[lo : lo + step], out_h, out_w)
    return out


def _resize_chunk(images: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    n, c, h, w = images.shape
    m = n * c
    if images.dtype.itemsize == 1:
        max_abs = 255
    else:
        max_abs = max(abs(int(images.max())), abs(int(images.min())))
    if w != out_w:
        # Horizontal pass first, as torch does: bring W to axis 1 as float32.
        xt = np.empty((m, w, h), dtype=_F32)
        xt[...] = images.reshape(m, h, w).transpose(0, 2, 1)
        y = _resize_axis(xt, out_w, max_abs)  # (m, out_w, h)
        x = np.ascontiguousarray(y.transpose(0, 2, 1))  # (m, h, out_w), float32 like torch's temp
    else:
        x = images.reshape(m, h, w).astype(_F32)
    if h != out_h:
        x = _resize_axis(x, out_h, max_abs if w == out_w else None)  # (m, out_h, out_w)
    np.rint(x, out=x)  # round half to even, like torch.round
    return x.reshape(n, c, out_h, out_w)
