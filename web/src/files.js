// Files of an export, fetched over HTTP and trusted only when their size and
// sha256 match manifest.json (the same contract as berg_onnx/manifest.py).
// Verified files go into Cache Storage where the browser has it, so a second
// visit works offline; a cached copy is verified again before use.

const CACHE_NAME = "berg-onnx-files-v1";
export const MANIFEST = "manifest.json";
const FORMAT = "berg-onnx-export";
const SCHEMA_VERSION = 1;

import { ModelLoadError, ModelNotFoundError } from "./errors.js";

export { ModelLoadError, ModelNotFoundError };

const inBrowser = globalThis.location !== undefined && typeof globalThis.document !== "undefined";
// "http:", "file:"... but not a Windows drive letter ("C:\\...").
const HAS_SCHEME = /^[a-z][a-z0-9+.-]+:/i;

function withSlash(folder) {
  const bare = folder.replace(/manifest\.json([?#].*)?$/, ""); // the manifest itself works too
  return bare.endsWith("/") || bare.endsWith("\\") ? bare : `${bare}/`;
}

function checkBaseArg(baseUrl) {
  if (baseUrl instanceof URL) return baseUrl.href;
  if (typeof baseUrl !== "string" || baseUrl === "") {
    throw new TypeError(
      "loadModel: the first argument must be an export folder (the one holding manifest.json): " +
        `a URL, a file: URL or, in Node, a folder path; got ${JSON.stringify(baseUrl)}`,
    );
  }
  return baseUrl;
}

/** An absolute base URL ending in "/" (relative ones resolve against the page). */
export function baseOf(baseUrl) {
  const text = checkBaseArg(baseUrl);
  return new URL(withSlash(text), globalThis.location?.href).href;
}

/**
 * baseOf, and in Node a folder path too (relative to the working directory):
 * "exports/berg", "/data/export", "C:\\export" -> a file: URL ending in "/".
 */
export async function resolveBase(baseUrl) {
  const text = checkBaseArg(baseUrl);
  if (inBrowser || HAS_SCHEME.test(text)) return baseOf(text);
  const { pathToFileURL } = await import("node:url");
  const url = pathToFileURL(withSlash(text)).href;
  return url.endsWith("/") ? url : `${url}/`;
}

/** The bytes at a file: URL (Node), as a ModelLoadError when they cannot be read. */
async function readLocal(url) {
  const [{ readFile }, { fileURLToPath }] = await Promise.all([
    import("node:fs/promises"),
    import("node:url"),
  ]);
  const path = fileURLToPath(url);
  try {
    const b = await readFile(path);
    return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
  } catch (e) {
    const why = e.code === "ENOENT" ? "no such file" : (e.message ?? String(e));
    throw new ModelLoadError(`cannot read ${path}: ${why}`);
  }
}

const isFileUrl = (url) => url.startsWith("file:");

async function openCache() {
  if (!globalThis.caches) return null;
  try {
    return await globalThis.caches.open(CACHE_NAME);
  } catch {
    return null; // e.g. an insecure context or storage disabled
  }
}

export async function sha256Hex(bytes) {
  const digest = await globalThis.crypto.subtle.digest("SHA-256", bytes);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Why bytes do not match a manifest file entry, or null when they do. */
export async function mismatch(bytes, entry) {
  if (bytes.byteLength !== entry.size) {
    return `has ${bytes.byteLength} bytes, the manifest says ${entry.size}`;
  }
  const digest = await sha256Hex(bytes);
  if (digest !== entry.sha256) return `has sha256 ${digest}, the manifest says ${entry.sha256}`;
  return null;
}

async function download(url) {
  if (isFileUrl(url) && !inBrowser) return readLocal(url);
  let response;
  try {
    response = await fetch(url);
  } catch (e) {
    throw new ModelLoadError(`cannot fetch ${url}: ${e.message} (is the server running?)`);
  }
  if (!response.ok) {
    throw new ModelLoadError(`cannot fetch ${url}: HTTP ${response.status} ${response.statusText}`);
  }
  try {
    return new Uint8Array(await response.arrayBuffer());
  } catch (e) {
    // the connection dropped after the headers (server stopped, network gone)
    throw new ModelLoadError(
      `the download of ${url} broke off: ${e.message}. The server stopped or the network ` +
        "went away; start it again and reload.",
    );
  }
}

/**
 * The bytes of one export file, verified against its manifest entry before
 * they are returned. A bad cached copy is dropped and fetched again; a bad
 * download is refused with a ModelLoadError (and never cached).
 */
export async function fetchVerified(base, entry) {
  const url = new URL(entry.name, base).href;
  const cache = await openCache();
  if (cache) {
    const hit = await cache.match(url);
    if (hit) {
      const bytes = new Uint8Array(await hit.arrayBuffer());
      if ((await mismatch(bytes, entry)) === null) return bytes;
      await cache.delete(url);
    }
  }
  const bytes = await download(url);
  const problem = await mismatch(bytes, entry);
  if (problem !== null) {
    throw new ModelLoadError(
      `${entry.name} from ${url} ${problem}; refusing to load it. The file is corrupt, ` +
        "truncated or was changed after export: re-download it or re-export.",
    );
  }
  if (cache) {
    const headers = { "Content-Type": "application/octet-stream" };
    await cache.put(url, new Response(bytes, { headers })).catch(() => {});
  }
  return bytes;
}

/** Parse and check manifest.json text (format and schema version, as berg_onnx does). */
export function parseManifest(text, source) {
  let raw;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new ModelLoadError(`${source} is not valid JSON: ${e.message}`);
  }
  if (raw === null || typeof raw !== "object" || raw.format !== FORMAT) {
    throw new ModelLoadError(`${source} is not a berg-onnx export manifest`);
  }
  if (raw.schema_version !== SCHEMA_VERSION) {
    throw new ModelLoadError(
      `${source} has schema version ${raw.schema_version}; this berg.js reads version ` +
        `${SCHEMA_VERSION}. Update berg-onnx's web page or re-export.`,
    );
  }
  if (raw.models === null || typeof raw.models !== "object") {
    throw new ModelLoadError(`${source} has no models`);
  }
  return raw;
}

/**
 * The export's manifest: from the network when it answers (and then cached),
 * else the cached copy, so that a second visit works offline.
 */
export async function fetchManifest(base) {
  const url = new URL(MANIFEST, base).href;
  if (isFileUrl(url) && !inBrowser) {
    const bytes = await readLocal(url);
    return parseManifest(new TextDecoder().decode(bytes), url);
  }
  const cache = await openCache();
  let text;
  try {
    const response = await fetch(url, { cache: "no-cache" });
    if (!response.ok) throw new Error(`HTTP ${response.status} ${response.statusText}`);
    text = await response.text();
    const manifest = parseManifest(text, url);
    if (cache) {
      const headers = { "Content-Type": "application/json" };
      await cache.put(url, new Response(text, { headers })).catch(() => {});
    }
    return manifest;
  } catch (e) {
    if (e instanceof ModelLoadError) throw e;
    const hit = cache ? await cache.match(url) : undefined;
    if (hit) return parseManifest(await hit.text(), `${url} (cached)`);
    throw new ModelLoadError(`cannot fetch ${url}: ${e.message}`);
  }
}
