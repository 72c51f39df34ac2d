// Bit-exact JavaScript port of berg_onnx/resize.py (torch's antialiased bilinear
// resize of integer images, AVX2/AVX-512 CPU kernel, then round half to even).
//
// Why a literal port and not "a bilinear filter": one pixel off by 1 moves a
// response by up to 2.2e-4, twice the fidelity budget, so the arithmetic must
// be the same float32 operations in the same order as torch (and as the numpy
// port, which is verified bit for bit against torch). JavaScript numbers are
// float64 and Math.fround rounds to float32, which gives exactly the float32
// products and sums; the fused multiply-adds are emulated the same way the
// numpy port does it (exact float64 product, one float64 rounding of the sum,
// and a repair when that rounding created a float32 midpoint).
//
// The order per output value, for its xsize taps:
//   tap 0:                       acc = f32(t0 * w0)
//   taps 1 .. 4*((xsize-1)>>2):  acc = f32(acc + f32(tj * wj))
//   the remaining taps:          acc = fma(tj, wj, acc)
// Separable: the horizontal pass (W) first into a float32 temporary, then the
// vertical one (H); a pass whose sizes match is skipped.

const f32 = Math.fround;

// Scratch to read the low word of a float64 (little- or big-endian safe).
const SCRATCH = new Float64Array(1);
const SCRATCH_WORDS = new Uint32Array(SCRATCH.buffer);
const LOW = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1 ? 0 : 1;

/**
 * fma(t, w, acc) rounded once to float32; t, w, acc are float32 values.
 * t*w is exact in float64 (24 + 24 bits), so s = acc + t*w has one float64
 * rounding, whose error TwoSum gives exactly. When it is 0, f32(s) is the
 * correctly rounded FMA. Otherwise f32(s) is still correct unless the float64
 * rounding landed exactly on a float32 midpoint (low 29 mantissa bits = 1
 * followed by 28 zeros); then the error says on which side the exact sum lies.
 */
export function fma32(t, w, acc) {
  const p = t * w;
  const s = acc + p;
  const pv = s - acc;
  const err = p - pv + (acc - (s - pv));
  if (err === 0) return f32(s);
  SCRATCH[0] = s;
  const r = f32(s); // ties to even: one of the two float32 neighbours of s
  if ((SCRATCH_WORDS[LOW] & 0x1fffffff) !== 0x10000000) return r;
  if (err > 0 ? r > s : r < s) return r;
  return 2 * s - r; // the other neighbour (exact: s is their midpoint)
}

/** torch's _compute_indices_min_size_weights_aa for the linear filter, in float32. */
function aaWeights(inSize, outSize) {
  const scale = f32(inSize / outSize);
  let support;
  let invscale;
  if (scale >= 1) {
    support = scale;
    invscale = f32(1 / scale);
  } else {
    support = 1;
    invscale = 1;
  }
  const maxTaps = Math.ceil(support) * 2 + 1;
  const xmin = new Int32Array(outSize);
  const xsize = new Int32Array(outSize);
  const weights = new Float32Array(outSize * maxTaps);
  for (let i = 0; i < outSize; i++) {
    const center = f32(scale * (i + 0.5));
    const lo = f32(center - support) + 0.5;
    const hi = f32(center + support) + 0.5;
    const x0 = Math.max(Math.trunc(lo), 0);
    let n = Math.min(Math.trunc(hi), inSize) - x0;
    n = Math.min(Math.max(n, 0), maxTaps);
    xmin[i] = x0;
    xsize[i] = n;
    let total = 0;
    for (let j = 0; j < n; j++) {
      let x = f32(f32(x0 + j) - center) + 0.5;
      x = Math.abs(f32(x * invscale));
      const wj = x < 1 ? f32(1 - x) : 0;
      weights[i * maxTaps + j] = wj;
      total = f32(total + wj);
    }
    if (total !== 0) {
      for (let j = 0; j < n; j++) {
        weights[i * maxTaps + j] = f32(weights[i * maxTaps + j] / total);
      }
    }
  }
  return { xmin, xsize, weights, maxTaps };
}

/**
 * Resize along the last axis: src holds `lines` rows of `inSize` values
 * (the horizontal pass, W). Each output value is accumulated in a register.
 */
function resizeRows(src, lines, inSize, outSize) {
  const { xmin, xsize, weights, maxTaps } = aaWeights(inSize, outSize);
  const dst = new Float32Array(lines * outSize);
  for (let line = 0; line < lines; line++) {
    const row = line * inSize;
    const out = line * outSize;
    for (let i = 0; i < outSize; i++) {
      const n = xsize[i];
      const x0 = row + xmin[i];
      const wb = i * maxTaps;
      const plain = 4 * ((n - 1) >> 2); // taps 1..plain: product then add
      let acc = f32(src[row + Math.min(xmin[i], inSize - 1)] * weights[wb]); // tap 0 always read
      let j = 1;
      for (; j <= plain; j++) acc = f32(acc + f32(src[x0 + j] * weights[wb + j]));
      for (; j < n; j++) acc = fma32(src[x0 + j], weights[wb + j], acc);
      dst[out + i] = acc;
    }
  }
  return dst;
}

/**
 * Resize along the middle axis: src holds `planes` blocks of `inSize` rows of
 * `width` values (the vertical pass, H); rows are combined element-wise.
 */
function resizeColumns(src, planes, inSize, width, outSize) {
  const { xmin, xsize, weights, maxTaps } = aaWeights(inSize, outSize);
  const dst = new Float32Array(planes * outSize * width);
  for (let p = 0; p < planes; p++) {
    const srcBase = p * inSize * width;
    for (let i = 0; i < outSize; i++) {
      const n = xsize[i];
      const wb = i * maxTaps;
      const plain = 4 * ((n - 1) >> 2);
      const out = (p * outSize + i) * width;
      const w0 = weights[wb];
      const first = srcBase + Math.min(xmin[i], inSize - 1) * width;
      for (let k = 0; k < width; k++) dst[out + k] = f32(src[first + k] * w0);
      for (let j = 1; j < n; j++) {
        const wj = weights[wb + j];
        const row = srcBase + (xmin[i] + j) * width;
        if (j <= plain) {
          for (let k = 0; k < width; k++) dst[out + k] = f32(dst[out + k] + f32(src[row + k] * wj));
        } else {
          for (let k = 0; k < width; k++) dst[out + k] = fma32(src[row + k], wj, dst[out + k]);
        }
      }
    }
  }
  return dst;
}

/** Round half to even, like torch.round / numpy.rint. */
function rint(x) {
  const r = Math.round(x); // half up
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** Planar (C, H, W) uint8 -> float32 (C, outH, outW), torch's values before rounding. */
export function resizeFloat(planes, channels, height, width, outH, outW) {
  let x = planes;
  if (width !== outW) x = resizeRows(x, channels * height, width, outW);
  if (height !== outH) x = resizeColumns(x, channels, height, outW, outH);
  return x instanceof Float32Array ? x : Float32Array.from(x);
}

/** Planar (C, H, W) uint8 -> (C, outH, outW), rounded half to even to uint8. */
export function resizePlanes(planes, channels, height, width, outH, outW) {
  const x = resizeFloat(planes, channels, height, width, outH, outW);
  const out = new Uint8Array(channels * outH * outW);
  for (let i = 0; i < out.length; i++) out[i] = rint(x[i]);
  return out;
}
