// The errors berg.js throws, one class per kind of problem, so that callers
// can tell them apart with instanceof (all are exported from berg.js):
//
//   ModelNotFoundError  the export has no such model / precision
//   ModelLoadError      a model file could not be fetched, or failed its size/sha256 check,
//                       or is not a usable ONNX model
//   ImageDecodeError    image bytes that cannot be decoded exactly as berg_onnx does
//   InvalidImageError   an image object ({data, width, height, channels, layout}) that is
//                       malformed (a TypeError: the argument is of the wrong shape)
//   ConfigError         a process-wide setting (threads) asked for twice with different values

export class BergError extends Error {
  constructor(message) {
    super(message);
    this.name = new.target.name;
  }
}

export class ModelLoadError extends BergError {}

export class ModelNotFoundError extends BergError {}

export class ImageDecodeError extends BergError {}

export class ConfigError extends BergError {}

export class InvalidImageError extends TypeError {
  constructor(message) {
    super(message);
    this.name = "InvalidImageError";
  }
}
