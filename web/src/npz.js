// .npz (a zip of .npy files) -> {name: {dtype, shape, data}}, for the export's
// metadata (e.g. fmri/roi_mask_volume) in the browser. Plain arrays only:
// object arrays (pickles) are refused, never decoded.

import { unzipSync } from "fflate";

const DTYPES = {
  "|b1": Uint8Array,
  "|u1": Uint8Array,
  "|i1": Int8Array,
  "<u2": Uint16Array,
  "<i2": Int16Array,
  "<u4": Uint32Array,
  "<i4": Int32Array,
  "<f4": Float32Array,
  "<f8": Float64Array,
  "<i8": BigInt64Array,
  "<u8": BigUint64Array,
};

/** Parse one .npy file (format 1.0-3.0, C order, little-endian). */
export function readNpy(bytes, name = "array") {
  const magic = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // \x93NUMPY
  if (bytes.length < 10 || magic.some((b, i) => bytes[i] !== b)) {
    throw new Error(`${name} is not a .npy file`);
  }
  const major = bytes[6];
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLen = major === 1 ? view.getUint16(8, true) : view.getUint32(8, true);
  const start = major === 1 ? 10 : 12;
  const header = new TextDecoder("latin1").decode(bytes.subarray(start, start + headerLen));
  const descr = /'descr':\s*'([^']*)'/.exec(header)?.[1];
  const fortran = /'fortran_order':\s*(True|False)/.exec(header)?.[1];
  const shapeText = /'shape':\s*\(([^)]*)\)/.exec(header)?.[1];
  if (descr === undefined || fortran === undefined || shapeText === undefined) {
    throw new Error(`${name}: malformed .npy header ${JSON.stringify(header)}`);
  }
  const Type = DTYPES[descr];
  if (!Type) throw new Error(`${name}: unsupported dtype ${descr} (plain numeric arrays only)`);
  if (fortran === "True") throw new Error(`${name}: Fortran-order arrays are not supported`);
  const shape = shapeText
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s.length)
    .map(Number);
  const count = shape.reduce((a, b) => a * b, 1);
  const offset = start + headerLen;
  const nbytes = count * Type.BYTES_PER_ELEMENT;
  if (bytes.length - offset !== nbytes) {
    throw new Error(`${name}: expected ${nbytes} data bytes, found ${bytes.length - offset}`);
  }
  const copy = bytes.slice(offset, offset + nbytes); // aligned for the typed array
  return { dtype: descr, shape, data: new Type(copy.buffer, 0, count) };
}

/** All arrays of an .npz, keyed without the ".npy" suffix (e.g. "fmri/roi_mask_volume"). */
export function readNpz(bytes, name = "npz") {
  let files;
  try {
    files = unzipSync(bytes);
  } catch (e) {
    throw new Error(`${name} is not a readable .npz (zip) file: ${e.message}`);
  }
  const arrays = {};
  for (const [entry, content] of Object.entries(files)) {
    if (!entry.endsWith(".npy")) continue;
    const key = entry.slice(0, -4);
    arrays[key] = readNpy(content, `${name}:${entry}`);
  }
  return arrays;
}
