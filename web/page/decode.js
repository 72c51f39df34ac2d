// Image files -> pixels in the browser, exactly as berg_onnx.load_image gets them
// from Pillow, or a clear refusal naming the format.
//
//   PNG              decoded in JavaScript (src/png.js): every colour type and bit depth,
//                    16-bit gray as round(v / 257), tRNS, eXIf orientation, no gAMA/iCCP
//                    (Chromium's own decoder keeps the high byte of 16-bit gray)
//   JPEG, WebP, GIF, BMP   the browser's decoder (libjpeg-turbo / libwebp, as Pillow's),
//                    EXIF orientation applied, no colour management, drawn onto white (the
//                    compositing berg_onnx does; exact for the premultiplied canvas, since
//                    255 - a is an integer); CMYK JPEG is refused (Pillow converts CMYK its
//                    own way)
//   TIFF, AVIF, HEIC, SVG, ICO, PSD...   refused: the page cannot give Pillow's pixels
//
// Nothing full-size is kept: the caller resizes to 227 x 227 at once.

import { ImageDecodeError, decodePng, sniffFormat } from "../src/berg.js";
import { exifOrientation, orient } from "../src/png.js";

export const ACCEPTED = ["PNG", "JPEG", "WebP", "GIF", "BMP"];
export const ACCEPT_ATTR = ".png,.jpg,.jpeg,.jfif,.webp,.gif,.bmp,image/png,image/jpeg,image/webp,image/gif,image/bmp";

/** Whether a JPEG's first frame header (SOFn) has 4 components (CMYK / YCCK). */
function jpegComponents(b) {
  let i = 2;
  while (i + 9 < b.length) {
    if (b[i] !== 0xff) return 0;
    const marker = b[i + 1];
    if (marker === 0xff) {
      i++;
      continue;
    }
    const len = (b[i + 2] << 8) | b[i + 3];
    const sof = marker >= 0xc0 && marker <= 0xcf && ![0xc4, 0xc8, 0xcc].includes(marker);
    if (sof) return b[i + 9];
    if (marker === 0xda) return 0; // start of scan before any SOF
    i += 2 + len;
  }
  return 0;
}

/** The EXIF orientation of a WebP file (its RIFF "EXIF" chunk), 1 when it has none. */
function webpOrientation(b) {
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  for (let at = 12; at + 8 <= b.length; ) {
    const fourcc = String.fromCharCode(b[at], b[at + 1], b[at + 2], b[at + 3]);
    const size = view.getUint32(at + 4, true);
    if (fourcc === "EXIF") return exifOrientation(b.subarray(at + 8, Math.min(at + 8 + size, b.length)));
    at += 8 + size + (size & 1);
  }
  return 1;
}

const RGB_FRAMES = ["RGBA", "RGBX", "BGRA", "BGRX"];

/**
 * WebP through WebCodecs' ImageDecoder where the browser has it and gives an RGB
 * frame (lossless, or with alpha): its pixels unpremultiplied, as libwebp gives them to
 * Pillow; a canvas would premultiply and round. null where that path does not apply
 * (a lossy opaque WebP decodes to YUV frames, which the canvas path converts as Pillow).
 */
async function webCodecsDecode(bytes) {
  if (typeof ImageDecoder !== "function") return null;
  let decoder;
  try {
    decoder = new ImageDecoder({ data: bytes, type: "image/webp", premultiplyAlpha: "none", colorSpaceConversion: "none" });
    const { image: frame } = await decoder.decode({ frameIndex: 0 });
    try {
      if (!RGB_FRAMES.includes(frame.format)) return null;
      const width = frame.displayWidth;
      const height = frame.displayHeight;
      const data = new Uint8Array(frame.allocationSize({ format: "RGBA" }));
      await frame.copyTo(data, { format: "RGBA" });
      if (data.length !== width * height * 4) return null;
      return { data, width, height, channels: 4 };
    } finally {
      frame.close();
    }
  } catch {
    return null; // the canvas path decides (and reports a damaged file)
  } finally {
    decoder?.close();
  }
}

async function browserDecode(bytes, name, format) {
  // WebP: orientation applied here, as berg_onnx does (the browser paths differ on it)
  const ownOrientation = format === "WebP";
  if (format === "WebP") {
    const image = await webCodecsDecode(bytes);
    if (image) return orient(image, webpOrientation(bytes));
  }
  let bitmap;
  try {
    bitmap = await createImageBitmap(new Blob([bytes]), {
      colorSpaceConversion: "none",
      imageOrientation: ownOrientation ? "none" : "from-image",
    });
  } catch (e) {
    throw new ImageDecodeError(
      `${name}: this browser could not decode the ${format} data (${e.message || e.name}); ` +
        "the file is damaged or truncated",
    );
  }
  const { width, height } = bitmap;
  const canvas =
    typeof OffscreenCanvas === "function" ? new OffscreenCanvas(width, height) : document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  try {
    const ctx = canvas.getContext("2d", { willReadFrequently: true, colorSpace: "srgb" });
    ctx.fillStyle = "#ffffff";
    ctx.fillRect(0, 0, width, height);
    ctx.drawImage(bitmap, 0, 0);
    const pixels = ctx.getImageData(0, 0, width, height);
    const image = { data: pixels.data, width, height, channels: 4 };
    return ownOrientation ? orient(image, webpOrientation(bytes)) : image;
  } finally {
    bitmap.close();
    canvas.width = 0; // free the backing store now, not at the next GC
    canvas.height = 0;
  }
}

/**
 * Bytes of one image file -> {image: {data, width, height, channels}, format}.
 * Throws an ImageDecodeError that names the file and the format.
 */
export async function decodeBytes(bytes, name) {
  const format = sniffFormat(bytes);
  if (format === "PNG") return { image: decodePng(bytes, name), format };
  if (format === "JPEG" && jpegComponents(bytes) === 4) {
    throw new ImageDecodeError(
      `${name} is a CMYK JPEG: the page cannot give the pixels berg_onnx (Pillow) gives it; ` +
        "convert it to RGB, or encode it with berg-onnx in Python",
    );
  }
  if (ACCEPTED.includes(format)) return { image: await browserDecode(bytes, name, format), format };
  if (format === "an unknown format") {
    throw new ImageDecodeError(
      `${name} is not an image file the page reads (it takes ${ACCEPTED.join(", ")})`,
    );
  }
  throw new ImageDecodeError(
    `${name} is ${format === "ICO" ? "an" : "a"} ${format} file: this browser page cannot decode ` +
      `${format} as berg_onnx does; convert it to PNG, or encode it with berg-onnx in Python`,
  );
}
