// Responses as files: .npy (+ .paths.txt, the pair `berg-onnx encode --out` writes)
// and CSV. Pure functions of (names, rows); the page offers them as downloads,
// Node scripts can write them with fs.writeFile.

/** Rows (Float32Array[] of equal length) -> one .npy file, float32 (N, nVoxels), C order. */
export function toNpy(rows) {
  if (!Array.isArray(rows) || rows.length === 0) {
    throw new TypeError("toNpy expects a non-empty array of Float32Array rows");
  }
  const cols = rows[0].length;
  for (const [i, r] of rows.entries()) {
    if (!(r instanceof Float32Array) || r.length !== cols) {
      throw new TypeError(`toNpy: row ${i} is not a Float32Array of ${cols} values`);
    }
  }
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': (${rows.length}, ${cols}), }`;
  // magic (6) + version (2) + header length (2) + header, padded with spaces to 64 bytes, "\n"
  const total = 10 + header.length + 1;
  header += " ".repeat((64 - (total % 64)) % 64) + "\n";
  const out = new Uint8Array(10 + header.length + rows.length * cols * 4);
  out.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0]);
  new DataView(out.buffer).setUint16(8, header.length, true);
  for (let i = 0; i < header.length; i++) out[10 + i] = header.charCodeAt(i);
  const body = new DataView(out.buffer, 10 + header.length);
  let at = 0;
  for (const r of rows) {
    for (let k = 0; k < cols; k++, at += 4) body.setFloat32(at, r[k], true);
  }
  return out;
}

/** The .paths.txt listing: one name per line, "\\" "\n" "\r" escaped as berg_onnx writes them. */
export function toPathsTxt(names) {
  const esc = (s) => String(s).replace(/[\\\n\r]/g, (c) => ({ "\\": "\\\\", "\n": "\\n", "\r": "\\r" })[c]);
  return names.map((n) => `${esc(n)}\n`).join("");
}

function csvField(s) {
  const t = String(s);
  return /[",\n\r]/.test(t) ? `"${t.replace(/"/g, '""')}"` : t;
}

/**
 * CSV, one row per image: `image,v0,v1,...` then the name and its responses
 * (float32 values printed so that they read back to the same float32).
 */
export function toCsv(names, rows) {
  if (names.length !== rows.length) throw new TypeError("toCsv: one name per row");
  const cols = rows.length ? rows[0].length : 0;
  const lines = [["image", ...Array.from({ length: cols }, (_, k) => `v${k}`)].join(",")];
  rows.forEach((r, i) => {
    const values = Array.from(r, (v) => String(v));
    lines.push([csvField(names[i]), ...values].join(","));
  });
  return `${lines.join("\r\n")}\r\n`;
}
