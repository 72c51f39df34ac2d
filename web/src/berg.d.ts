// Types of web/src/berg.js (berg-onnx in the browser and Node 20).

/** Pixels: integers 0-255, interleaved ("hwc", as canvas ImageData) or planar ("chw"). */
export interface Image {
  data: Uint8Array | Uint8ClampedArray | ArrayLike<number>;
  width: number;
  height: number;
  /** 1 gray, 2 gray + alpha, 3 RGB, 4 RGBA; left out: data.length / (width * height). */
  channels?: 1 | 2 | 3 | 4;
  /** "hwc" (default) or "chw". */
  layout?: "hwc" | "chw";
}

/** What resizeExact returns: the model's input, planar; encode() takes it as it is. */
export interface ModelInput extends Image {
  data: Uint8Array;
  width: 227;
  height: 227;
  channels: 3;
  layout: "chw";
}

/** A decoded file, 8 bits per sample, as berg_onnx.load_image sees it (before compositing). */
export interface DecodedImage extends Image {
  data: Uint8Array;
  channels: 1 | 2 | 3 | 4;
}

export interface NpzArray {
  dtype: string;
  shape: number[];
  data: ArrayLike<number | bigint>;
}

export interface LoadOptions {
  subject: number | string;
  roi: string;
  precision?: "fp32" | "int8";
  modelId?: string;
  /** Once per process; see setThreads. */
  threads?: number;
  batchSize?: number;
}

export interface ModelInfo {
  modelId: string;
  subject: number;
  roi: string;
  nVoxels: number;
  precisions: Array<"fp32" | "int8">;
}

export interface EncodingModel {
  readonly subject: number;
  readonly roi: string;
  readonly modelId: string;
  readonly precision: "fp32" | "int8";
  readonly nVoxels: number;
  readonly batchSize: number;
  readonly timings: { filesMs: number; sessionMs: number };
  /** One row of nVoxels responses per image (views of one N x nVoxels buffer). */
  encode(images: Image | Image[]): Promise<Float32Array[]>;
  /** The model's metadata (.npz), verified: {"fmri/roi_mask_volume": ...}. */
  metadata(): Promise<Record<string, NpzArray>>;
  release(): Promise<void>;
}

/** An export folder: http(s) URL, or in Node a file: URL or a folder path. */
export function loadModel(base: string | URL, options: LoadOptions): Promise<EncodingModel>;
export function listModels(base: string | URL): Promise<ModelInfo[]>;
export function resizeExact(image: Image): ModelInput;
export function setThreads(n: number): void;
export function getThreads(): number | null;

export function decodePng(bytes: Uint8Array | ArrayBuffer, name?: string): DecodedImage;
/** PNG decoded here; other formats are refused with an ImageDecodeError naming the format. */
export function decodeImage(bytes: Uint8Array | ArrayBuffer, name?: string): DecodedImage;
export function isPng(bytes: Uint8Array): boolean;
export function sniffFormat(bytes: Uint8Array): string;

/** float32 (N, nVoxels) .npy, as `berg-onnx encode --out` writes. */
export function toNpy(rows: Float32Array[]): Uint8Array;
/** The .paths.txt beside it: one name per line, \\ \n \r escaped. */
export function toPathsTxt(names: string[]): string;
export function toCsv(names: string[], rows: Float32Array[]): string;

export const INPUT_SIZE: 227;

export class BergError extends Error {}
export class ModelLoadError extends BergError {}
export class ModelNotFoundError extends BergError {}
export class ImageDecodeError extends BergError {}
export class ConfigError extends BergError {}
export class InvalidImageError extends TypeError {}
