// berg.js's PNG decoder against berg_onnx.load_image on every colour type, bit
// depth, tRNS, interlacing, filter type and EXIF orientation: 0 differing values.
import assert from "node:assert/strict";
import { test } from "node:test";

import { ImageDecodeError, decodeImage, decodePng } from "../src/berg.js";
import { toPlanarRGB } from "../src/image.js";
import { bytes, reference } from "./ref.js";

const ref = reference("png.json");

test("decodePng + toPlanarRGB == berg_onnx.load_image, file by file", () => {
  const bad = [];
  for (const c of ref.cases) {
    const image = decodePng(bytes(c.file), c.file);
    const got = toPlanarRGB(image);
    const expected = bytes(c.expected);
    if (image.width !== c.width || image.height !== c.height) {
      bad.push(`${c.file}: ${image.width}x${image.height}, expected ${c.width}x${c.height}`);
      continue;
    }
    let diff = 0;
    for (let i = 0; i < got.length; i++) if (got[i] !== expected[i]) diff++;
    if (diff) bad.push(`${c.file}: ${diff} of ${got.length} values differ`);
  }
  assert.deepEqual(bad, []);
  assert.ok(ref.cases.length >= 30);
});

test("what is not a decodable PNG is an ImageDecodeError naming the file and the problem", () => {
  for (const c of ref.refused) {
    assert.throws(
      () => decodeImage(bytes(c.file), c.file),
      (e) => e instanceof ImageDecodeError && e.message.includes(c.file) && e.message.includes(c.word),
      c.file,
    );
  }
  const png = bytes(ref.cases[0].file);
  const flipped = png.slice();
  flipped[40] ^= 0x10; // inside a chunk: its CRC no longer matches
  assert.throws(() => decodePng(flipped, "x.png"), /CRC error/);
});
