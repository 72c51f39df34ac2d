// Threads are one value per process (onnxruntime-web reads it once): a
// conflicting second value is a ConfigError, the same value is fine.
import assert from "node:assert/strict";
import { test } from "node:test";

import { ConfigError, getThreads, loadModel, setThreads } from "../src/berg.js";
import { reference } from "./ref.js";

const ref = reference("api.json");

test("threads: set once per process, a conflicting value is refused", async () => {
  assert.equal(getThreads(), null);
  const a = await loadModel(ref.folder, { subject: 1, roi: "V1", threads: 1 });
  assert.equal(getThreads(), 1);
  const b = await loadModel(ref.folder, { subject: 1, roi: "FFA-1", threads: 1 }); // same value: fine
  await assert.rejects(
    loadModel(ref.folder, { subject: 1, roi: "V1", threads: 2 }),
    (e) => e instanceof ConfigError && /already 1 .*cannot change it to 2/.test(e.message),
  );
  assert.throws(() => setThreads(3), ConfigError);
  assert.throws(() => setThreads(0), RangeError);
  await a.release();
  await b.release();
});

