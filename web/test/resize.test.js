// resizeExact against berg_onnx's resize (0 differing pixels), the float32
// values before rounding bit for bit, the FMA emulation's exact-halfway
// repair, and the alpha compositing onto white.
import assert from "node:assert/strict";
import { test } from "node:test";

import { InvalidImageError, resizeExact } from "../src/berg.js";
import { compositeOnWhite } from "../src/image.js";
import { fma32, resizeFloat } from "../src/resize.js";
import { bytes, float32, image, reference } from "./ref.js";

const ref = reference("resize.json");

test("resizeExact: 0 differing pixels on natural photographs at every size", () => {
  let pixels = 0;
  for (const c of ref.cases) {
    const expected = bytes(`${c.name}.expected.u8`);
    const out = resizeExact(image(c));
    assert.deepEqual([out.width, out.height, out.channels, out.layout], [227, 227, 3, "chw"]);
    const got = out.data;
    assert.equal(got.length, 3 * 227 * 227);
    let diff = 0;
    for (let i = 0; i < got.length; i++) if (got[i] !== expected[i]) diff++;
    assert.equal(diff, 0, `${c.name}: ${diff} pixels differ from berg_onnx`);
    pixels += got.length;
  }
  assert.ok(pixels > 40 * 3 * 227 * 227);
});

test("the float32 values before rounding are bit-identical", () => {
  for (const c of ref.cases) {
    if (c.channels !== 3) continue;
    const img = image(c);
    const planes = new Uint8Array(3 * c.width * c.height);
    const n = c.width * c.height;
    for (let i = 0; i < n; i++) for (let k = 0; k < 3; k++) planes[k * n + i] = img.data[3 * i + k];
    const got = resizeFloat(planes, 3, c.height, c.width, 227, 227);
    const expected = float32(`${c.name}.float.f32`);
    let diff = 0;
    for (let i = 0; i < got.length; i++) if (!Object.is(got[i], expected[i])) diff++;
    assert.equal(diff, 0, `${c.name}: ${diff} float32 values differ`);
  }
});

test("fma32 is correctly rounded, the exact-halfway (double rounding) cases included", () => {
  let bad = 0;
  for (const [t, w, c, expected] of ref.fma) if (!Object.is(fma32(t, w, c), expected)) bad++;
  assert.equal(bad, 0, `${bad} of ${ref.fma.length} FMAs differ from the exact rounding`);
  const [t, w, c, expected] = ref.fma[0];
  assert.notEqual(Math.fround(t * w + c), expected, "case 0 is a double-rounding trap");
});

test("compositeOnWhite: every (value, alpha) pair", () => {
  let bad = 0;
  for (let a = 0; a < 256; a++) {
    for (let v = 0; v < 256; v++) if (compositeOnWhite(v, a) !== ref.alpha[a * 256 + v]) bad++;
  }
  assert.equal(bad, 0);
});

test("RGBA with transparency: composited onto white as berg_onnx converts images", () => {
  const c = ref.cases.find((x) => x.name === "photo-rgba-translucent");
  const got = resizeExact(image(c)).data;
  const expected = bytes(`${c.name}.expected.u8`);
  let diff = 0;
  for (let i = 0; i < got.length; i++) if (got[i] !== expected[i]) diff++;
  assert.equal(diff, 0, `${diff} pixels differ`);
});

test("RGBA: channels 4, alpha composited (opaque = RGB); channels inferred", () => {
  const c = ref.cases.find((x) => x.name === "photo-rgba-opaque");
  const img = image(c);
  assert.deepEqual(resizeExact(img).data, bytes(`${c.name}.expected.u8`));
  const { channels, ...noChannels } = img;
  assert.equal(channels, 4);
  assert.deepEqual(resizeExact(noChannels).data, bytes(`${c.name}.expected.u8`));
  // a fully transparent image is white
  const clear = { data: new Uint8Array(5 * 7 * 4), width: 7, height: 5, channels: 4 };
  assert.ok(resizeExact(clear).data.every((v) => v === 255));
});

test("bad images are refused with a message saying what was expected", () => {
  assert.throws(() => resizeExact({ data: new Uint8Array(10), width: 2, height: 2, channels: 3 }), /width\*height\*channels/);
  assert.throws(() => resizeExact({ data: new Float32Array(12).fill(0.5), width: 2, height: 2, channels: 3 }), /integers 0-255/);
  assert.throws(() => resizeExact({ data: "pixels", width: 2, height: 2, channels: 3 }), /Uint8Array/);
  // plain arrays of integers are taken as they are
  const plain = Array.from({ length: 30 * 20 * 3 }, (_, i) => (i * 7) % 256);
  assert.deepEqual(resizeExact({ data: plain, width: 30, height: 20, channels: 3 }), resizeExact({ data: Uint8Array.from(plain), width: 30, height: 20, channels: 3 }));
  assert.throws(() => resizeExact({ data: new Uint8Array(0), width: 0, height: 2, channels: 3 }), />= 1/);
  assert.throws(() => resizeExact({ data: new Uint8Array(10), width: 2, height: 2, channels: 5 }), /1 \(gray\), 2 \(gray \+ alpha\), 3 \(RGB\) or 4/);
  assert.throws(() => resizeExact(new Uint8Array(12)), (e) => e instanceof InvalidImageError && /bare pixels/.test(e.message));
  assert.throws(() => resizeExact({ data: new Uint8Array(12), width: 2, height: 2, layout: "hw" }), /layout must be "hwc".*"chw"/);
});

test("layouts and channel counts: CHW, gray and gray + alpha give the RGB(A) result", () => {
  const c = ref.cases.find((x) => x.channels === 3);
  const rgb = image(c);
  const n = c.width * c.height;
  const expected = bytes(`${c.name}.expected.u8`);
  // the same pixels, planar
  const planar = new Uint8Array(3 * n);
  for (let i = 0; i < n; i++) for (let k = 0; k < 3; k++) planar[k * n + i] = rgb.data[3 * i + k];
  const chw = { data: planar, width: c.width, height: c.height, channels: 3, layout: "chw" };
  assert.deepEqual(resizeExact(chw).data, expected);
  // resizeExact's output is a 227 x 227 CHW image: resizing it again changes nothing
  const once = resizeExact(rgb);
  assert.deepEqual(resizeExact(once).data, once.data);
  // gray = its value in all three channels; gray + alpha = RGBA with equal channels
  const gray = Uint8Array.from({ length: n }, (_, i) => rgb.data[3 * i + 1]);
  const alpha = Uint8Array.from({ length: n }, (_, i) => (i * 13) % 256);
  const rgba = new Uint8Array(4 * n);
  const la = new Uint8Array(2 * n);
  for (let i = 0; i < n; i++) {
    rgba.set([gray[i], gray[i], gray[i], alpha[i]], 4 * i);
    la.set([gray[i], alpha[i]], 2 * i);
  }
  const as = (data, channels, layout = "hwc") => ({ data, width: c.width, height: c.height, channels, layout });
  const grayRgb = new Uint8Array(3 * n);
  for (let i = 0; i < n; i++) grayRgb.set([gray[i], gray[i], gray[i]], 3 * i);
  assert.deepEqual(resizeExact(as(gray, 1)).data, resizeExact(as(grayRgb, 3)).data);
  assert.deepEqual(resizeExact({ data: gray, width: c.width, height: c.height }).data, resizeExact(as(grayRgb, 3)).data); // channels inferred
  assert.deepEqual(resizeExact(as(la, 2)).data, resizeExact(as(rgba, 4)).data);
  const laPlanar = new Uint8Array(2 * n);
  laPlanar.set(gray, 0);
  laPlanar.set(alpha, n);
  assert.deepEqual(resizeExact(as(laPlanar, 2, "chw")).data, resizeExact(as(rgba, 4)).data);
});
