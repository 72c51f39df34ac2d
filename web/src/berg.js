// berg-onnx in the browser and in Node 20: BERG's fmri-nsd-fwrf encoding models
// on onnxruntime-web (WebAssembly), with the exact preprocessing of berg_onnx.
//
//   import { loadModel, resizeExact } from "./src/berg.js";
//   const model = await loadModel("http://127.0.0.1:8765/export/", { subject: 1, roi: "V1" });
//   const responses = await model.encode([{ data, width, height, channels: 4 }]);
//   // Float32Array of N x model.nVoxels, row-major
//
// In a browser the bare imports ("onnxruntime-web", "fflate") are resolved by
// the page's import map (see ../index.html); in Node by web/node_modules.

import * as ort from "onnxruntime-web";

import { ModelLoadError, ModelNotFoundError, baseOf, fetchManifest, fetchVerified } from "./files.js";
import { toPlanarRGB } from "./image.js";
import { readNpz } from "./npz.js";
import { resizePlanes } from "./resize.js";

const INPUT_SIZE = 227;
const INPUT_NAME = "images";
const OUTPUT_NAME = "responses";
const DEFAULT_MODEL_ID = "fmri-nsd-fwrf";

/**
 * Resize one image to the model's 3 x 227 x 227 input, bit-identical to
 * berg_onnx (torchvision's antialiased bilinear Resize on integer images,
 * rounded half to even).
 * @param {{data: Uint8Array|Uint8ClampedArray, width: number, height: number, channels?: 3|4}} image
 *   interleaved HWC pixels; channels 4 (RGBA, as canvas ImageData
 *   gives) are composited onto white; left out, channels follow from data.length.
 * @returns {Uint8Array} CHW, 3 * 227 * 227 values
 */
export function resizeExact(image) {
  const planes = toPlanarRGB(image);
  return resizePlanes(planes, 3, image.height, image.width, INPUT_SIZE, INPUT_SIZE);
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

/**
 * Load one subject/ROI model of an export.
 * @param {string} baseUrl folder holding manifest.json: a local export served
 *   over HTTP, or a Hub repo's `resolve/<revision>/` URL
 * @param {{subject: number, roi: string, precision?: "fp32"|"int8", modelId?: string,
 *   threads?: number, batchSize?: number}} options threads sets
 *   ort.env.wasm.numThreads (before the first session only; browsers need a
 *   cross-origin isolated page for more than 1); batchSize is images per run
 *   (1, as berg_onnx on CPU; int8 responses depend on the batch, its quantisation is dynamic).
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
  const threads = options.threads;
  if (threads !== undefined && (!Number.isInteger(threads) || threads < 1)) {
    throw new RangeError(`threads must be a positive integer, got ${JSON.stringify(threads)}`);
  }
  const base = baseOf(baseUrl);
  const t0 = performance.now();
  const manifest = await fetchManifest(base);
  const key = modelKey(modelId, subject, roi);
  const entry = manifest.models[key];
  if (!entry) {
    const have = Object.keys(manifest.models).sort().join(", ") || "none";
    throw new ModelNotFoundError(`The export at ${base} has no model ${key}; it has: ${have}.`);
  }
  const file = onnxEntry(entry, precision);
  const bytes = await fetchVerified(base, file); // refuses a mismatch before any session
  if (threads !== undefined) ort.env.wasm.numThreads = threads;
  const t1 = performance.now();
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
  }

  /**
   * Responses to images, exactly as berg_onnx: each image is resized with
   * resizeExact and divided by 255 in float32.
   * @param {Array<{data, width, height, channels}>} images
   * @returns {Promise<Float32Array>} N x nVoxels, row-major
   */
  async encode(images) {
    if (!Array.isArray(images) || images.length === 0) {
      throw new TypeError("encode expects a non-empty array of {data, width, height, channels}");
    }
    const nv = this.nVoxels;
    const per = 3 * INPUT_SIZE * INPUT_SIZE;
    const out = new Float32Array(images.length * nv);
    for (let lo = 0; lo < images.length; lo += this.batchSize) {
      const chunk = images.slice(lo, lo + this.batchSize);
      const x = new Float32Array(chunk.length * per);
      chunk.forEach((image, i) => {
        let pixels;
        try {
          pixels = resizeExact(image);
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
    return out;
  }

  /**
   * The model's metadata arrays from its .npz (verified against the manifest,
   * cached): {"fmri/roi_mask_volume": {dtype, shape, data}, ...}.
   */
  async metadata() {
    if (!this._metadata) {
      const bytes = await fetchVerified(this.base, this.entry.metadata);
      this._metadata = readNpz(bytes, this.entry.metadata.name);
    }
    return this._metadata;
  }

  /** Free the onnxruntime session. */
  async release() {
    await this.session.release();
  }
}
