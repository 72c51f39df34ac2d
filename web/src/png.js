// PNG -> 8-bit pixels exactly as berg_onnx.load_image gets them from Pillow,
// decoded here in JavaScript (inflate from fflate) rather than by a browser,
// whose decoder differs on 16-bit files (it keeps the high byte of gray
// samples, Pillow's path in berg_onnx rounds v / 257) and may apply gAMA/iCCP.
//
// Mode by mode (colour type, bit depth), as Pillow unpacks them:
//   gray 1/2/4/8 bit    v * 255 / (2^depth - 1)          (Pillow modes 1, L;2, L;4, L)
//   gray 16 bit         round(v / 257)                   (berg_onnx's rule for I;16)
//   RGB, RGBA, gray+alpha 16 bit: the high byte          (Pillow's RGB;16B, RGBA;16B, LA;16B)
//   palette 1/2/4/8 bit the PLTE colour, tRNS alpha per entry
//   tRNS on gray / RGB  a pixel whose unpacked 8-bit value equals the tRNS value as
//                       stored is transparent (Pillow compares the two as they are;
//                       for 16-bit gray, berg_onnx compares the raw 16-bit sample)
// Transparency is returned as an alpha channel (channels 2 or 4) for the one
// compositing onto white in image.js. The eXIf chunk's orientation is applied
// as Pillow's ImageOps.exif_transpose does.

import { unzlibSync } from "fflate";

import { ImageDecodeError } from "./errors.js";

const SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
const CHANNELS = { 0: 1, 2: 3, 3: 1, 4: 2, 6: 4 };
const DEPTHS = { 0: [1, 2, 4, 8, 16], 2: [8, 16], 3: [1, 2, 4, 8], 4: [8, 16], 6: [8, 16] };
// Adam7 passes: x0, y0, dx, dy.
const ADAM7 = [
  [0, 0, 8, 8],
  [4, 0, 8, 8],
  [0, 4, 4, 8],
  [2, 0, 4, 4],
  [0, 2, 2, 4],
  [1, 0, 2, 2],
  [0, 1, 1, 2],
];

let CRC_TABLE = null;
function crc32(bytes, start, end) {
  if (!CRC_TABLE) {
    CRC_TABLE = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      CRC_TABLE[n] = c >>> 0;
    }
  }
  let c = 0xffffffff;
  for (let i = start; i < end; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** Whether bytes start with the PNG signature. */
export function isPng(bytes) {
  return bytes.length >= 8 && SIGNATURE.every((b, i) => bytes[i] === b);
}

function readChunks(bytes, name) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const chunks = { idat: [], idatLength: 0 };
  let pos = 8;
  for (;;) {
    if (pos + 12 > bytes.length) {
      throw new ImageDecodeError(`${name}: truncated PNG (no IEND chunk); the file is incomplete`);
    }
    const length = view.getUint32(pos);
    const type = String.fromCharCode(...bytes.subarray(pos + 4, pos + 8));
    const start = pos + 8;
    const end = start + length;
    if (end + 4 > bytes.length) {
      throw new ImageDecodeError(`${name}: truncated PNG (${type} chunk cut short)`);
    }
    if (crc32(bytes, pos + 4, end) !== view.getUint32(end)) {
      throw new ImageDecodeError(`${name}: broken PNG file (CRC error in the ${type} chunk)`);
    }
    const data = bytes.subarray(start, end);
    if (type === "IHDR") chunks.ihdr = data;
    else if (type === "PLTE") chunks.plte = data;
    else if (type === "tRNS") chunks.trns = data;
    else if (type === "eXIf") chunks.exif = data;
    else if (type === "IDAT") {
      chunks.idat.push(data);
      chunks.idatLength += data.length;
    } else if (type === "IEND") break;
    pos = end + 4;
  }
  if (!chunks.ihdr || chunks.ihdr.length !== 13) {
    throw new ImageDecodeError(`${name}: PNG without a valid IHDR chunk`);
  }
  if (!chunks.idat.length) throw new ImageDecodeError(`${name}: PNG without image data (IDAT)`);
  return chunks;
}

function paeth(a, b, c) {
  const p = a + b - c;
  const pa = Math.abs(p - a);
  const pb = Math.abs(p - b);
  const pc = Math.abs(p - c);
  return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
}

/** Undo the per-scanline filters of one (sub)image in place; returns the raw rows. */
function unfilter(raw, offset, width, height, bitsPerPixel, name) {
  const stride = Math.ceil((width * bitsPerPixel) / 8);
  const bpp = Math.max(1, bitsPerPixel >> 3);
  const out = new Uint8Array(stride * height);
  for (let y = 0; y < height; y++) {
    const f = raw[offset + y * (stride + 1)];
    const src = offset + y * (stride + 1) + 1;
    const row = y * stride;
    const prev = row - stride;
    for (let i = 0; i < stride; i++) {
      const x = raw[src + i];
      const a = i >= bpp ? out[row + i - bpp] : 0;
      const b = y > 0 ? out[prev + i] : 0;
      let v;
      if (f === 0) v = x;
      else if (f === 1) v = x + a;
      else if (f === 2) v = x + b;
      else if (f === 3) v = x + ((a + b) >> 1);
      else if (f === 4) v = x + paeth(a, b, i >= bpp && y > 0 ? out[prev + i - bpp] : 0);
      else throw new ImageDecodeError(`${name}: broken PNG file (unknown filter type ${f})`);
      out[row + i] = v & 0xff;
    }
  }
  return { rows: out, stride, used: height * (stride + 1) };
}

/** Sample k (0-based, in channel order) of pixel x in a row of raw samples. */
function sampleReader(depth) {
  if (depth === 8) return (rows, row, i) => rows[row + i];
  if (depth === 16) return (rows, row, i) => (rows[row + 2 * i] << 8) | rows[row + 2 * i + 1];
  const perByte = 8 / depth;
  const mask = (1 << depth) - 1;
  return (rows, row, i) => (rows[row + Math.floor(i / perByte)] >> (8 - depth * (1 + (i % perByte)))) & mask;
}

/**
 * Decode a PNG file's bytes to {data, width, height, channels} with channels
 * 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA), 8 bits per sample, as
 * berg_onnx.load_image sees the file (see the module comment), EXIF
 * orientation applied.
 * @param {Uint8Array} bytes
 * @param {string} [name] for messages
 */
export function decodePng(bytes, name = "image") {
  if (!(bytes instanceof Uint8Array)) bytes = new Uint8Array(bytes);
  if (!isPng(bytes)) throw new ImageDecodeError(`${name} is not a PNG file`);
  const chunks = readChunks(bytes, name);
  const ih = new DataView(chunks.ihdr.buffer, chunks.ihdr.byteOffset, 13);
  const width = ih.getUint32(0);
  const height = ih.getUint32(4);
  const depth = chunks.ihdr[8];
  const type = chunks.ihdr[9];
  const interlace = chunks.ihdr[12];
  if (!(type in CHANNELS) || !DEPTHS[type].includes(depth)) {
    throw new ImageDecodeError(`${name}: PNG with an invalid colour type ${type} / bit depth ${depth}`);
  }
  if (width < 1 || height < 1) throw new ImageDecodeError(`${name}: PNG of size ${width}x${height}`);
  if (interlace > 1) throw new ImageDecodeError(`${name}: PNG with unknown interlace method ${interlace}`);
  if (width * height > 178956970) {
    // Pillow's decompression-bomb limit (2 * MAX_IMAGE_PIXELS): berg_onnx refuses these too.
    throw new ImageDecodeError(`${name}: ${width}x${height} pixels is over the decompression-bomb limit`);
  }
  const nc = CHANNELS[type];
  let compressed;
  if (chunks.idat.length === 1) compressed = chunks.idat[0];
  else {
    compressed = new Uint8Array(chunks.idatLength);
    let at = 0;
    for (const c of chunks.idat) {
      compressed.set(c, at);
      at += c.length;
    }
  }
  let raw;
  try {
    raw = unzlibSync(compressed);
  } catch (e) {
    throw new ImageDecodeError(`${name}: broken PNG image data (${e.message})`);
  }
  chunks.idat = null;
  compressed = null;

  // Samples -> 8-bit output, with alpha where the file has transparency.
  const palette = chunks.plte;
  const trns = chunks.trns;
  let outChannels;
  if (type === 3) {
    if (!palette) throw new ImageDecodeError(`${name}: palette PNG without a PLTE chunk`);
    outChannels = trns ? 4 : 3;
  } else if (type === 0) outChannels = trns ? 2 : 1;
  else if (type === 2) outChannels = trns ? 4 : 3;
  else outChannels = nc; // 4: gray + alpha, 6: RGBA
  const out = new Uint8Array(width * height * outChannels);
  const read = sampleReader(depth);
  const scale = depth < 8 ? 255 / ((1 << depth) - 1) : 1;
  const trnsView = trns ? new DataView(trns.buffer, trns.byteOffset, trns.byteLength) : null;
  const trnsGray = type === 0 && trns && trns.length >= 2 ? trnsView.getUint16(0) : -1;
  const trnsRgb =
    type === 2 && trns && trns.length >= 6
      ? [trnsView.getUint16(0), trnsView.getUint16(2), trnsView.getUint16(4)]
      : null;
  const paletteSize = palette ? Math.floor(palette.length / 3) : 0;

  const put = (rows, row, x, o) => {
    if (type === 0) {
      const v = read(rows, row, x);
      const g = depth === 16 ? Math.floor((v + 128) / 257) : Math.round(v * scale);
      out[o] = g;
      if (outChannels === 2) out[o + 1] = (depth === 16 ? v : g) === trnsGray ? 0 : 255;
    } else if (type === 3) {
      const k = read(rows, row, x);
      if (k < paletteSize) {
        out[o] = palette[3 * k];
        out[o + 1] = palette[3 * k + 1];
        out[o + 2] = palette[3 * k + 2];
      } // else black, as Pillow's zero-padded palette gives
      if (outChannels === 4) out[o + 3] = k < trns.length ? trns[k] : 255;
    } else {
      for (let c = 0; c < nc; c++) {
        const v = read(rows, row, x * nc + c);
        out[o + c] = depth === 16 ? v >> 8 : v;
      }
      if (type === 2 && trnsRgb) {
        const hit = out[o] === trnsRgb[0] && out[o + 1] === trnsRgb[1] && out[o + 2] === trnsRgb[2];
        out[o + 3] = hit ? 0 : 255;
      }
    }
  };

  const bitsPerPixel = nc * depth;
  if (interlace === 0) {
    const need = height * (Math.ceil((width * bitsPerPixel) / 8) + 1);
    if (raw.length < need) throw new ImageDecodeError(`${name}: truncated PNG image data`);
    const { rows, stride } = unfilter(raw, 0, width, height, bitsPerPixel, name);
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) put(rows, y * stride, x, (y * width + x) * outChannels);
    }
  } else {
    let offset = 0;
    for (const [x0, y0, dx, dy] of ADAM7) {
      const pw = Math.ceil((width - x0) / dx);
      const ph = Math.ceil((height - y0) / dy);
      if (pw <= 0 || ph <= 0) continue;
      const need = ph * (Math.ceil((pw * bitsPerPixel) / 8) + 1);
      if (raw.length < offset + need) throw new ImageDecodeError(`${name}: truncated PNG image data`);
      const { rows, stride, used } = unfilter(raw, offset, pw, ph, bitsPerPixel, name);
      offset += used;
      for (let j = 0; j < ph; j++) {
        for (let i = 0; i < pw; i++) {
          const x = x0 + i * dx;
          const y = y0 + j * dy;
          put(rows, j * stride, i, (y * width + x) * outChannels);
        }
      }
    }
  }
  const image = { data: out, width, height, channels: outChannels };
  return orient(image, chunks.exif ? exifOrientation(chunks.exif) : 1);
}

/** The Orientation tag (0x0112) of a TIFF-structured EXIF block; 1 when absent or unreadable. */
export function exifOrientation(exif) {
  try {
    let start = 0;
    // "Exif\0\0" prefix (JPEG APP1 style), tolerated as Pillow does
    if (exif[0] === 0x45 && exif[1] === 0x78 && exif[2] === 0x69 && exif[3] === 0x66) start = 6;
    const view = new DataView(exif.buffer, exif.byteOffset + start, exif.byteLength - start);
    const little = view.getUint16(0) === 0x4949;
    if (!little && view.getUint16(0) !== 0x4d4d) return 1;
    const ifd = view.getUint32(4, little);
    const n = view.getUint16(ifd, little);
    for (let i = 0; i < n; i++) {
      const at = ifd + 2 + 12 * i;
      if (view.getUint16(at, little) === 0x0112) {
        const kind = view.getUint16(at + 2, little);
        const v = kind === 3 ? view.getUint16(at + 8, little) : view.getUint32(at + 8, little);
        return v >= 1 && v <= 8 ? v : 1;
      }
    }
  } catch {
    // a damaged EXIF block: no rotation, as berg_onnx does
  }
  return 1;
}

/** Apply an EXIF orientation (1-8) to interleaved pixels, as ImageOps.exif_transpose. */
export function orient(image, orientation) {
  if (orientation === 1) return image;
  const { data, width: w, height: h, channels: c } = image;
  const swap = orientation >= 5;
  const W = swap ? h : w;
  const H = swap ? w : h;
  const out = new Uint8Array(data.length);
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      // (sx, sy): the source pixel shown at (x, y)
      let sx;
      let sy;
      switch (orientation) {
        case 2: sx = w - 1 - x; sy = y; break; // prettier-ignore
        case 3: sx = w - 1 - x; sy = h - 1 - y; break; // prettier-ignore
        case 4: sx = x; sy = h - 1 - y; break; // prettier-ignore
        case 5: sx = y; sy = x; break; // prettier-ignore
        case 6: sx = y; sy = h - 1 - x; break; // prettier-ignore
        case 7: sx = w - 1 - y; sy = h - 1 - x; break; // prettier-ignore
        default: sx = w - 1 - y; sy = x; // 8
      }
      const s = (sy * w + sx) * c;
      const o = (y * W + x) * c;
      for (let k = 0; k < c; k++) out[o + k] = data[s + k];
    }
  }
  return { data: out, width: W, height: H, channels: c };
}
