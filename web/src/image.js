// Image objects -> planar (3, H, W) uint8, the layout the resize and the model take.
//
// An image is {data, width, height, channels?, layout?}:
//   data      integers 0-255 (Uint8Array, Uint8ClampedArray, or any array of integers)
//   channels  1 gray, 2 gray + alpha, 3 RGB, 4 RGBA (left out: follows from data.length)
//   layout    "hwc" (interleaved, as canvas ImageData gives; the default) or "chw"
//             (planar, as resizeExact returns it and the model takes it)
// Gray is replicated to three channels; alpha is composited onto white, the one
// conversion of berg_onnx's image loading (see compositeOnWhite). Keep the two in step.

import { InvalidImageError } from "./errors.js";

export const LAYOUTS = ["hwc", "chw"];

/**
 * One channel value composited onto white: round-half-even of
 * (v * a + 255 * (255 - a)) / 255, in exact integer arithmetic. The divisor
 * is odd, so an exact half never occurs and rounding is just "remainder > 127".
 */
export function compositeOnWhite(v, a) {
  const num = v * a + 255 * (255 - a);
  const q = Math.floor(num / 255);
  return num - 255 * q > 127 ? q + 1 : q;
}

/** Other arrays of integers 0-255 (an Array, an Int32Array...) as a Uint8Array; never rescaled. */
function asBytes(data) {
  const isArray = Array.isArray(data) || (ArrayBuffer.isView(data) && !(data instanceof DataView));
  if (!isArray || data instanceof BigInt64Array || data instanceof BigUint64Array) {
    throw new InvalidImageError(
      "expected data as a Uint8Array or Uint8ClampedArray of 0-255 pixels " +
        `(canvas ImageData.data), got ${Object.prototype.toString.call(data)}`,
    );
  }
  for (let i = 0; i < data.length; i++) {
    const v = data[i];
    if (!Number.isInteger(v) || v < 0 || v > 255) {
      throw new InvalidImageError(
        `data[${i}] is ${v}; expected integers 0-255 (images in [0, 1] must be converted by ` +
          "the caller, e.g. Math.round(v * 255); nothing is rescaled silently)",
      );
    }
  }
  return Uint8Array.from(data);
}

/**
 * Validate an image object; returns {data: Uint8Array-like, width, height, channels, layout}.
 * Throws an InvalidImageError (a TypeError) that says what was expected.
 */
export function checkImage(image) {
  if (image === null || typeof image !== "object" || ArrayBuffer.isView(image) || Array.isArray(image)) {
    const got = image === null ? "null" : Object.prototype.toString.call(image);
    throw new InvalidImageError(
      `expected an image object {data, width, height, channels, layout}, got ${got}` +
        (ArrayBuffer.isView(image) ? " (bare pixels carry no size or layout; wrap them)" : ""),
    );
  }
  const { width, height } = image;
  let { data } = image;
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new InvalidImageError(`expected integer width and height >= 1, got ${width}x${height}`);
  }
  const layout = image.layout ?? "hwc";
  if (!LAYOUTS.includes(layout)) {
    throw new InvalidImageError(
      `layout must be "hwc" (interleaved, as ImageData) or "chw" (planar, as resizeExact ` +
        `returns), got ${JSON.stringify(layout)}`,
    );
  }
  const n = width * height;
  let channels = image.channels;
  if (channels === undefined) {
    // ImageData has no channels field (RGBA); otherwise the length tells.
    channels = data?.length % n === 0 && data.length / n >= 1 && data.length / n <= 4 ? data.length / n : 4;
  }
  if (![1, 2, 3, 4].includes(channels)) {
    throw new InvalidImageError(
      `expected channels 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA), got ${channels}`,
    );
  }
  if (!(data instanceof Uint8Array || data instanceof Uint8ClampedArray)) data = asBytes(data);
  if (data.length !== n * channels) {
    throw new InvalidImageError(
      `data has ${data.length} values; expected width*height*channels = ` +
        `${width}*${height}*${channels} = ${n * channels}`,
    );
  }
  return { data, width, height, channels, layout };
}

/** Validate an image and return planar uint8 (3, H, W): gray replicated, alpha on white. */
export function toPlanarRGB(image) {
  const { data, width, height, channels, layout } = checkImage(image);
  const n = width * height;
  const out = new Uint8Array(3 * n);
  // index of channel k of pixel i
  const at = layout === "chw" ? (i, k) => k * n + i : (i, k) => i * channels + k;
  if (layout === "chw" && channels === 3) {
    out.set(data);
    return out;
  }
  if (layout === "hwc" && channels === 3) {
    for (let i = 0; i < n; i++) {
      out[i] = data[3 * i];
      out[n + i] = data[3 * i + 1];
      out[2 * n + i] = data[3 * i + 2];
    }
    return out;
  }
  const color = channels >= 3;
  const alpha = channels === 2 || channels === 4;
  for (let i = 0; i < n; i++) {
    const a = alpha ? data[at(i, channels - 1)] : 255;
    for (let k = 0; k < 3; k++) {
      const v = data[at(i, color ? k : 0)];
      out[k * n + i] = a === 255 ? v : compositeOnWhite(v, a);
    }
  }
  return out;
}
