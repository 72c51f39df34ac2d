// loadModel + encode against berg_onnx on an export served over loopback HTTP
// (max abs difference <= 1e-5), and the integrity checks: a tampered model
// file is refused before any session is made.
import assert from "node:assert/strict";
import { test } from "node:test";

import { loadModel } from "../src/berg.js";
import { float32, image, reference } from "./ref.js";

const ref = reference("encode.json");
const images = ref.images.map(image);

/** Rows (Float32Array[]) -> one flat array, row-major. */
function flat(rows) {
  assert.ok(Array.isArray(rows) && rows.every((r) => r instanceof Float32Array));
  const out = new Float32Array(rows.reduce((n, r) => n + r.length, 0));
  let at = 0;
  for (const r of rows) {
    out.set(r, at);
    at += r.length;
  }
  return out;
}

function maxAbs(a, b) {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

for (const m of ref.models) {
  test(`encode sub-${m.subject} ${m.roi} ${m.precision} matches berg_onnx`, async () => {
    const model = await loadModel(ref.base, { subject: m.subject, roi: m.roi, precision: m.precision });
    assert.equal(model.subject, m.subject);
    assert.equal(model.roi, m.roi);
    assert.equal(model.nVoxels, m.nv);
    const rows = await model.encode(images);
    assert.equal(rows.length, images.length);
    assert.ok(rows.every((r) => r.length === m.nv));
    const got = flat(rows);
    const expected = float32(m.expected);
    assert.equal(got.length, images.length * m.nv);
    // fp32: the contract (1e-5). int8 is the opt-in approximate tier (~0.01 from fp32); its
    // integer kernels differ between WebAssembly and native builds (7.9e-5 measured).
    const tol = m.precision === "fp32" ? 1e-5 : 1e-3;
    const diff = maxAbs(got, expected);
    assert.ok(diff <= tol, `max abs difference ${diff} > ${tol}`);
    await model.release();
    if (m.precision !== "fp32") return; // int8's dynamic quantisation scales depend on the batch
    const batched = await loadModel(ref.base, { subject: m.subject, roi: m.roi, batchSize: 3 });
    const b = maxAbs(flat(await batched.encode(images)), expected);
    assert.ok(b <= tol, `batches of 3: max abs difference ${b}`);
    await batched.release();
  });
}

test("metadata: roi_mask_volume from the npz has nVoxels voxels", async () => {
  const model = await loadModel(`${ref.base}`, { subject: 1, roi: "V1" });
  const meta = await model.metadata();
  const mask = meta["fmri/roi_mask_volume"];
  assert.deepEqual(mask.shape, [81, 104, 83]);
  assert.equal(mask.dtype, "|b1");
  assert.equal(mask.data.reduce((a, b) => a + b, 0), model.nVoxels);
  await model.release();
});

test("a tampered model file is refused before a session is made", async () => {
  await assert.rejects(loadModel(ref.tampered, { subject: 1, roi: "V1" }), (e) => {
    assert.equal(e.name, "ModelLoadError");
    assert.match(e.message, /sha256 [0-9a-f]{64}, the manifest says [0-9a-f]{64}; refusing/);
    return true;
  });
  // the untouched models of the same export still load
  const ok = await loadModel(ref.tampered, { subject: 1, roi: "FFA-1" });
  assert.equal(ok.roi, "FFA-1");
  await ok.release();
});

test("unknown models, precisions and bad options say what exists", async () => {
  await assert.rejects(loadModel(ref.base, { subject: 1, roi: "nope" }), /has no model fmri-nsd-fwrf\/sub-01\/nope; it has: .*V1/);
  await assert.rejects(loadModel(ref.base, { subject: 1, roi: "V1", precision: "fp16" }), /'fp32' or 'int8'/);
  await assert.rejects(loadModel(ref.base, { subject: 0, roi: "V1" }), /subject must be a positive integer/);
  await assert.rejects(loadModel(ref.base, { subject: 1, roi: "V1", threads: 0 }), /threads must be a positive integer/);
  await assert.rejects(loadModel(`${ref.base}missing/`, { subject: 1, roi: "V1" }), /cannot fetch .*manifest\.json: HTTP 404/);
  const model = await loadModel(`${ref.base}manifest.json`, { subject: "1", roi: "V1" }); // lenient
  assert.equal(model.subject, 1);
  await assert.rejects(model.encode([]), /non-empty array/);
  await assert.rejects(model.encode(new Uint8Array(12)), /bare pixels carry no size or layout/);
  await assert.rejects(model.encode([{ data: new Uint8Array(3), width: 2, height: 2, channels: 3 }]), /image 0: data has 3 values/);
  await model.release();
});
