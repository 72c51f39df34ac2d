// Reference data written by the Python side (tests/web/test_web_node.py).
import fs from "node:fs";
import path from "node:path";

export const DIR = process.env.BERG_WEB_REFERENCE;

export function reference(name) {
  if (!DIR) {
    throw new Error(
      "BERG_WEB_REFERENCE is not set: these tests compare with berg_onnx on data that " +
        "tests/web/test_web_node.py writes; run them through pytest (or tests/run.sh).",
    );
  }
  return JSON.parse(fs.readFileSync(path.join(DIR, name), "utf8"));
}

export function bytes(file) {
  return new Uint8Array(fs.readFileSync(path.join(DIR, file)));
}

export function float32(file) {
  const b = fs.readFileSync(path.join(DIR, file));
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
}

export function image(c) {
  return { data: bytes(c.file), width: c.width, height: c.height, channels: c.channels };
}
