// Interleaved HWC pixels (RGB, or RGBA as canvas ImageData gives) -> planar
// (3, H, W) uint8, the layout the resize and the model take.
//
// Alpha: an RGBA pixel is composited onto white, the one conversion of
// berg_onnx's image loading (see compositeOnWhite). Keep the two in step.

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
    throw new TypeError(
      "expected data as a Uint8Array or Uint8ClampedArray of interleaved 0-255 pixels " +
        `(canvas ImageData.data), got ${Object.prototype.toString.call(data)}`,
    );
  }
  for (let i = 0; i < data.length; i++) {
    const v = data[i];
    if (!Number.isInteger(v) || v < 0 || v > 255) {
      throw new RangeError(
        `data[${i}] is ${v}; expected integers 0-255 (images in [0, 1] must be converted by ` +
          "the caller, e.g. Math.round(v * 255); nothing is rescaled silently)",
      );
    }
  }
  return Uint8Array.from(data);
}

/**
 * Validate {data, width, height, channels} and return planar uint8 (3, H, W).
 * Throws a TypeError/RangeError that says what was expected.
 */
export function toPlanarRGB(image) {
  if (image === null || typeof image !== "object") {
    throw new TypeError("expected an image {data, width, height, channels}");
  }
  const { width, height } = image;
  let { data } = image;
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new RangeError(`expected integer width and height >= 1, got ${width}x${height}`);
  }
  // channels may be left out: ImageData has none (RGBA); else infer from the length.
  const channels = image.channels ?? (data?.length === width * height * 3 ? 3 : 4);
  if (channels !== 3 && channels !== 4) {
    throw new RangeError(`expected channels 3 (RGB) or 4 (RGBA), got ${channels}`);
  }
  if (!(data instanceof Uint8Array || data instanceof Uint8ClampedArray)) {
    data = asBytes(data);
  }
  const n = width * height;
  if (data.length !== n * channels) {
    throw new RangeError(
      `data has ${data.length} values; expected width*height*channels = ` +
        `${width}*${height}*${channels} = ${n * channels}`,
    );
  }
  const out = new Uint8Array(3 * n);
  if (channels === 3) {
    for (let i = 0; i < n; i++) {
      out[i] = data[3 * i];
      out[n + i] = data[3 * i + 1];
      out[2 * n + i] = data[3 * i + 2];
    }
  } else {
    for (let i = 0; i < n; i++) {
      const a = data[4 * i + 3];
      if (a === 255) {
        out[i] = data[4 * i];
        out[n + i] = data[4 * i + 1];
        out[2 * n + i] = data[4 * i + 2];
      } else {
        out[i] = compositeOnWhite(data[4 * i], a);
        out[n + i] = compositeOnWhite(data[4 * i + 1], a);
        out[2 * n + i] = compositeOnWhite(data[4 * i + 2], a);
      }
    }
  }
  return out;
}
