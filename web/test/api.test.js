// The library surface: loadModel from a folder path / file: URL, encode of one
// image or many (rows), CHW input from resizeExact, gray input, exported error
// classes, and the .npy / .paths.txt / CSV writers (read back by numpy in Python).
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { pathToFileURL } from "node:url";

import * as berg from "../src/berg.js";
import { DIR, bytes, float32, image, reference } from "./ref.js";

const ref = reference("api.json");
const images = ref.images.map(image);
const expected = float32(ref.expected); // sub-01 V1, N x nv

function maxAbs(a, b) {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

test("error classes are exported and thrown (instanceof works)", async () => {
  for (const name of ["ModelLoadError", "ModelNotFoundError", "ImageDecodeError", "InvalidImageError", "ConfigError"]) {
    assert.equal(typeof berg[name], "function", name);
    assert.equal(new berg[name]("x").name, name);
  }
  assert.ok(new berg.ModelLoadError("x") instanceof berg.BergError);
  assert.ok(new berg.InvalidImageError("x") instanceof TypeError);
  await assert.rejects(berg.loadModel(ref.folder, { subject: 1, roi: "nope" }), berg.ModelNotFoundError);
  await assert.rejects(berg.loadModel(path.join(ref.folder, "missing"), { subject: 1, roi: "V1" }), (e) => {
    assert.ok(e instanceof berg.ModelLoadError);
    assert.match(e.message, /cannot read .*manifest\.json: no such file/);
    return true;
  });
});

test("loadModel from a folder path, a relative path and a file: URL, in Node", async () => {
  const relative = path.relative(process.cwd(), ref.folder);
  for (const base of [ref.folder, relative, pathToFileURL(ref.folder).href, pathToFileURL(ref.folder)]) {
    const model = await berg.loadModel(base, { subject: 1, roi: "V1" });
    assert.equal(model.nVoxels, ref.nv);
    const rows = await model.encode(images);
    const flat = new Float32Array(rows[0].buffer, 0, rows.length * ref.nv);
    assert.ok(maxAbs(flat, expected) <= 1e-5, String(base));
    await model.release();
  }
  const listed = await berg.listModels(ref.folder);
  assert.ok(listed.some((m) => m.subject === 1 && m.roi === "V1" && m.nVoxels === ref.nv));
});

test("encode: one image or many -> rows; CHW from resizeExact taken as it is; gray", async () => {
  const model = await berg.loadModel(ref.folder, { subject: 1, roi: "V1" });
  const nv = ref.nv;
  const one = await model.encode(images[1]);
  assert.equal(one.length, 1);
  assert.ok(one[0] instanceof Float32Array && one[0].length === nv);
  assert.ok(maxAbs(one[0], expected.subarray(nv, 2 * nv)) <= 1e-5);
  const rows = await model.encode(images);
  assert.equal(rows.length, images.length);
  rows.forEach((r, i) => assert.ok(maxAbs(r, expected.subarray(i * nv, (i + 1) * nv)) <= 1e-5));
  // resizeExact's CHW output is encoded as the same image, not misread as HWC
  const chw = berg.resizeExact(images[2]);
  assert.equal(chw.layout, "chw");
  const [r] = await model.encode(chw);
  assert.ok(maxAbs(r, expected.subarray(2 * nv, 3 * nv)) <= 1e-5);
  // the same pixels tagged HWC are a different image (and the responses say so)
  const [wrong] = await model.encode({ ...chw, layout: "hwc" });
  assert.ok(maxAbs(wrong, r) > 1e-3);
  // gray: equal to the RGB image with three equal channels
  const { width, height } = images[0];
  const g = Uint8Array.from({ length: width * height }, (_, i) => images[0].data[3 * i]);
  const g3 = new Uint8Array(3 * g.length);
  g.forEach((v, i) => g3.set([v, v, v], 3 * i));
  const [a] = await model.encode({ data: g, width, height, channels: 1 });
  const [b] = await model.encode({ data: g3, width, height, channels: 3 });
  assert.ok(maxAbs(a, b) === 0);
  await assert.rejects(model.encode([images[0], { data: new Uint8Array(5), width: 2, height: 2 }]), (e) => {
    assert.ok(e instanceof berg.InvalidImageError);
    assert.match(e.message, /^image 1: data has 5 values/);
    return true;
  });
  await model.release();
  await assert.rejects(model.encode(images[0]), /released/);
});

test("decodeImage in Node: a PNG file -> responses as berg_onnx gives for that file", async () => {
  const model = await berg.loadModel(ref.folder, { subject: 1, roi: "V1" });
  const decoded = berg.decodeImage(bytes(ref.png.file), ref.png.file);
  const [row] = await model.encode(decoded);
  assert.ok(maxAbs(row, float32(ref.png.expected)) <= 1e-5);
  assert.throws(() => berg.decodeImage(bytes(ref.jpeg), ref.jpeg), /for JPEG use a decoder/);
  await model.release();
});

test("toNpy / toPathsTxt / toCsv write what berg-onnx encode --out writes (checked by numpy)", async () => {
  const model = await berg.loadModel(ref.folder, { subject: 1, roi: "V1" });
  const rows = await model.encode(images);
  fs.writeFileSync(path.join(DIR, "node.npy"), berg.toNpy(rows));
  fs.writeFileSync(path.join(DIR, "node.paths.txt"), berg.toPathsTxt(ref.names));
  fs.writeFileSync(path.join(DIR, "node.csv"), berg.toCsv(ref.names, rows));
  assert.throws(() => berg.toNpy([]), /non-empty/);
  assert.throws(() => berg.toNpy([new Float32Array(2), new Float32Array(3)]), /row 1/);
  await model.release();
});
