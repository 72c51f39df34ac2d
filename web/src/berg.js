// berg-onnx in the browser and in Node 20: BERG's fmri-nsd-fwrf encoding models
// on onnxruntime-web (WebAssembly), with the exact preprocessing of berg_onnx.
//
//   import { loadModel, decodePng } from "berg-onnx-web";      // web/src/berg.js
//   const model = await loadModel("path/to/export", { subject: 1, roi: "V1" });
//   const image = decodePng(await fs.readFile("cat.png"));      // {data, width, height, channels}
//   const [row] = await model.encode(image);                     // Float32Array(model.nVoxels)
//   const rows = await model.encode([image, other]);             // one Float32Array per image
//
// The export folder: an HTTP(S) URL (a local export served by `berg-onnx web`,
// a Hub repo's resolve/<revision>/ URL), or in Node a file: URL or folder path.
// In a browser the bare imports ("onnxruntime-web", "fflate") are resolved by
// the page's import map (see ../index.html); in Node by web/node_modules.
// Types: berg.d.ts beside this file.

import * as ort from "onnxruntime-web";

import {
  BergError,
  ConfigError,
  ImageDecodeError,
  InvalidImageError,
  ModelLoadError,
  ModelNotFoundError,
} from "./errors.js";
import { fetchManifest, fetchVerified, resolveBase } from "./files.js";
import { checkImage, toPlanarRGB } from "./image.js";
import { readNpz } from "./npz.js";
import { decodePng, isPng } from "./png.js";
import { resizePlanes } from "./resize.js";

export { BergError, ConfigError, ImageDecodeError, InvalidImageError, ModelLoadError, ModelNotFoundError };
export { decodePng, isPng } from "./png.js";
export { toCsv, toNpy, toPathsTxt } from "./export.js";

export const INPUT_SIZE = 227;
const INPUT_NAME = "images";
const OUTPUT_NAME = "responses";
const DEFAULT_MODEL_ID = "fmri-nsd-fwrf";

/**
 * Resize one image to the model's 227 x 227 input, bit-identical to berg_onnx
 * (torchvision's antialiased bilinear Resize on integer images, rounded half
 * to even; gray replicated, alpha composited onto white first).
 * @param {{data, width, height, channels?, layout?}} image see image.js
 * @returns {{data: Uint8Array, width: 227, height: 227, channels: 3, layout: "chw"}}
 *   planar RGB, tagged as such: encode() takes it as it is (no second resize).
 */
export function resizeExact(image) {
  const { width, height } = checkImage(image);
  const planes = toPlanarRGB(image);
  const data = resizePlanes(planes, 3, height, width, INPUT_SIZE, INPUT_SIZE);
  return { data, width: INPUT_SIZE, height: INPUT_SIZE, channels: 3, layout: "chw" };
}

// ---------- threads: one value per process ----------

let threadsFixed = null; // set by setThreads (or the threads option)
let sessionsMade = false; // after the first session, onnxruntime-web's value is fixed

/**
 * Set onnxruntime-web's WebAssembly thread count for this process (or page).
 * onnxruntime-web reads it once, when the first session is made, so it can be
 * set once: a later call with another value is a ConfigError (the same value is
 * fine). Browsers need a cross-origin isolated page for more than 1.
 * @param {number} n threads, a positive integer
 */
export function setThreads(n) {
  if (!Number.isInteger(n) || n < 1) {
    throw new RangeError(`threads must be a positive integer, got ${JSON.stringify(n)}`);
  }
  if ((threadsFixed !== null || sessionsMade) && threadsFixed !== n) {
    const now = threadsFixed ?? "onnxruntime-web's default";
    throw new ConfigError(
      `threads is already ${now} for this process (onnxruntime-web fixes it when the ` +
        `first model loads); cannot change it to ${n}. Set it once, before the first ` +
        "loadModel, and restart the process (reload the page) to use another value.",
    );
  }
  threadsFixed = n;
  ort.env.wasm.numThreads = n;
}

/** The thread count set with setThreads / the threads option (null: onnxruntime-web's default). */
export function getThreads() {
  return threadsFixed;
}

function modelKey(modelId, subject, roi) {
  return `${modelId}/sub-${String(subject).padStart(2, "0")}/${roi}`;
}

function onnxEntry(entry, precision) {
  if (precision === "fp32") return entry.onnx;
  if (precision === "int8") {
    if (entry.onnx_int8) return entry.onnx_int8;
    if (typeof entry.int8_absent_reason === "string" && entry.int8_absent_reason) {
      // convert --int8 measured every scheme and none met the tolerance for this model
      throw new ModelNotFoundError(
        `${modelKey(entry.model_id, entry.subject, entry.roi)} has no int8 tier: ` +
          `${entry.int8_absent_reason}. Use precision 'fp32' for this model.`,
      );
    }
    throw new ModelNotFoundError(
      `${modelKey(entry.model_id, entry.subject, entry.roi)} has no int8 variant in this ` +
        "export; re-export with `python -m export convert ... --int8` or use precision 'fp32'.",
    );
  }
  throw new RangeError(`precision must be 'fp32' or 'int8', got ${JSON.stringify(precision)}`);
}

/** The models an export has: [{modelId, subject, roi, nVoxels, precisions}], from its manifest. */
export async function listModels(baseUrl) {
  const manifest = await fetchManifest(await resolveBase(baseUrl));
  return Object.values(manifest.models).map((m) => ({
    modelId: m.model_id,
    subject: m.subject,
    roi: m.roi,
    nVoxels: m.nv,
    precisions: m.onnx_int8 ? ["fp32", "int8"] : ["fp32"],
  }));
}

/**
 * Load one subject/ROI model of an export.
 * @param {string|URL} baseUrl folder holding manifest.json (see the top of this file)
 * @param {{subject: number, roi: string, precision?: "fp32"|"int8", modelId?: string,
 *   threads?: number, batchSize?: number, manifest?: object}} options
 *   threads: see setThreads (once per process); batchSize: images per run (1, as
 *   berg_onnx on CPU; int8 responses depend on the batch, its quantisation is dynamic).
 */
export async function loadModel(baseUrl, options = {}) {
  const { roi, precision = "fp32", modelId = DEFAULT_MODEL_ID } = options;
  const subject = /^\d+$/.test(String(options.subject)) ? Number(options.subject) : options.subject;
  const batchSize = options.batchSize ?? 1;
  if (!Number.isInteger(subject) || subject < 1) {
    throw new RangeError(`subject must be a positive integer (1-8), got ${JSON.stringify(subject)}`);
  }
  if (typeof roi !== "string" || roi === "") {
    throw new TypeError(`roi must be an ROI name such as "V1", got ${JSON.stringify(roi)}`);
  }
  if (!Number.isInteger(batchSize) || batchSize < 1) {
    throw new RangeError(`batchSize must be a positive integer, got ${JSON.stringify(batchSize)}`);
  }
  if (options.threads !== undefined) setThreads(options.threads);
  const base = await resolveBase(baseUrl);
  const t0 = performance.now();
  const manifest = options.manifest ?? (await fetchManifest(base));
  const key = modelKey(modelId, subject, roi);
  const entry = manifest.models[key];
  if (!entry) {
    const have = Object.keys(manifest.models).sort().join(", ") || "none";
    throw new ModelNotFoundError(`The export at ${base} has no model ${key}; it has: ${have}.`);
  }
  const file = onnxEntry(entry, precision);
  const bytes = await fetchVerified(base, file); // refuses a mismatch before any session
  const t1 = performance.now();
  sessionsMade = true;
  let session;
  try {
    session = await ort.InferenceSession.create(bytes, {
      executionProviders: ["wasm"],
      graphOptimizationLevel: "all",
    });
  } catch (e) {
    throw new ModelLoadError(`${file.name} is not a usable ONNX model: ${e.message ?? e}`);
  }
  // Where loading time went: manifest + model file (download or cache, sha256), then session.
  const timings = { filesMs: t1 - t0, sessionMs: performance.now() - t1 };
  return new EncodingModel({ session, entry, base, precision, batchSize, timings });
}

class EncodingModel {
  constructor({ session, entry, base, precision, batchSize, timings }) {
    this.session = session;
    this.entry = entry;
    this.base = base;
    this.subject = entry.subject;
    this.roi = entry.roi;
    this.modelId = entry.model_id;
    this.precision = precision;
    this.nVoxels = entry.nv;
    this.batchSize = batchSize;
    this.timings = timings;
    this._metadata = null;
    this._released = false;
  }

  /**
   * Responses to one image or many, exactly as berg_onnx: each image is resized
   * with resizeExact (unless it already is a 227 x 227 "chw" image, as
   * resizeExact returns) and divided by 255 in float32.
   * @param {object|object[]} images one image object or an array of them (see image.js)
   * @returns {Promise<Float32Array[]>} one row of nVoxels responses per image, in order
   *   (the rows are views of one contiguous N x nVoxels buffer: rows[0].buffer)
   */
  async encode(images) {
    if (this._released) throw new BergError("this model was released; load it again");
    const list = Array.isArray(images) ? images : [images];
    if (list.length === 0) {
      throw new InvalidImageError("encode expects an image or a non-empty array of images");
    }
    const nv = this.nVoxels;
    const per = 3 * INPUT_SIZE * INPUT_SIZE;
    const out = new Float32Array(list.length * nv);
    for (let lo = 0; lo < list.length; lo += this.batchSize) {
      const chunk = list.slice(lo, lo + this.batchSize);
      const x = new Float32Array(chunk.length * per);
      chunk.forEach((image, i) => {
        let pixels;
        try {
          pixels = modelInput(image);
        } catch (e) {
          e.message = `image ${lo + i}: ${e.message}`;
          throw e;
        }
        for (let k = 0; k < per; k++) x[i * per + k] = pixels[k] / 255; // rounded to float32
      });
      const input = new ort.Tensor("float32", x, [chunk.length, 3, INPUT_SIZE, INPUT_SIZE]);
      const result = await this.session.run({ [INPUT_NAME]: input });
      const y = result[OUTPUT_NAME];
      if (y.data.length !== chunk.length * nv) {
        throw new ModelLoadError(
          `model output has ${y.data.length} values for ${chunk.length} images; ` +
            `the manifest says ${nv} voxels per image`,
        );
      }
      out.set(y.data, lo * nv);
      input.dispose?.();
      y.dispose?.();
    }
    return Array.from({ length: list.length }, (_, i) => out.subarray(i * nv, (i + 1) * nv));
  }

  /**
   * The model's metadata arrays from its .npz (verified against the manifest,
   * cached): {"fmri/roi_mask_volume": {dtype, shape, data}, ...}.
   */
  async metadata() {
    if (!this._metadata) {
      const bytes = await fetchVerified(this.base, this.entry.metadata);
      try {
        this._metadata = readNpz(bytes, this.entry.metadata.name);
      } catch (e) {
        throw new ModelLoadError(e.message);
      }
    }
    return this._metadata;
  }

  /** Free the onnxruntime session (encode refuses afterwards). */
  async release() {
    if (this._released) return;
    this._released = true;
    await this.session.release();
  }
}

/** planar uint8 (3, 227, 227) of an image object */
function modelInput(image) {
  const img = checkImage(image);
  if (img.layout === "chw" && img.channels === 3 && img.width === INPUT_SIZE && img.height === INPUT_SIZE) {
    return img.data;
  }
  return resizeExact(img).data;
}

/**
 * Decode image file bytes to an image object, as berg_onnx.load_image sees the
 * file. PNG (every colour type and bit depth) is decoded here; other formats
 * need a decoder of their own (in a browser: createImageBitmap, see
 * web/page/decode.js), which this refuses with an ImageDecodeError naming the format.
 * @param {Uint8Array|ArrayBuffer} bytes
 * @param {string} [name]
 */
export function decodeImage(bytes, name = "image") {
  const b = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  if (isPng(b)) return decodePng(b, name);
  throw new ImageDecodeError(
    `${name}: berg.js decodes PNG itself; for ${sniffFormat(b)} use a decoder that gives ` +
      "the same pixels as Pillow (e.g. in a browser createImageBitmap + canvas, see " +
      "web/page/decode.js), or convert the file to PNG",
  );
}

/** The format of image bytes by their signature: "PNG", "JPEG", ..., or "an unknown format". */
export function sniffFormat(b) {
  const ascii = (at, s) => [...s].every((c, i) => b[at + i] === c.charCodeAt(0));
  if (isPng(b)) return "PNG";
  if (b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return "JPEG";
  if (ascii(0, "RIFF") && ascii(8, "WEBP")) return "WebP";
  if (ascii(0, "GIF87a") || ascii(0, "GIF89a")) return "GIF";
  if (ascii(0, "BM")) return "BMP";
  if (ascii(0, "II*\0") || ascii(0, "MM\0*") || ascii(0, "II+\0") || ascii(0, "MM\0+")) return "TIFF";
  if (ascii(4, "ftyp")) {
    const brand = String.fromCharCode(...b.subarray(8, 12));
    if (/^avi[fs]$/.test(brand)) return "AVIF";
    if (/^(heic|heix|hevc|hevx|heim|heis|mif1|msf1)$/.test(brand)) return "HEIC";
  }
  if (b[0] === 0 && b[1] === 0 && b[2] === 1 && b[3] === 0) return "ICO";
  if (b[0] === 0xff && b[1] === 0x0a) return "JPEG XL";
  if (ascii(0, "\0\0\0\x0cJXL ")) return "JPEG XL";
  if (ascii(0, "8BPS")) return "PSD";
  const head = new TextDecoder().decode(b.subarray(0, 256)).trimStart().toLowerCase();
  if (head.startsWith("<svg") || (head.startsWith("<?xml") && head.includes("<svg"))) return "SVG";
  return "an unknown format";
}
