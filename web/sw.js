// Service worker: the page itself (HTML, scripts, onnxruntime-web's WebAssembly)
// works offline on a second visit. Network first, so an updated checkout is
// picked up at once; the cached copy (headers included, so the page stays
// cross-origin isolated) only when the server cannot be reached. The export's
// files are not handled here: berg.js keeps them, verified, in its own cache.

const SHELL = "berg-onnx-page-v2";
const PRECACHE = [
  "./",
  "./page/app.js",
  "./page/style.css",
  "./src/berg.js",
  "./src/files.js",
  "./src/image.js",
  "./src/npz.js",
  "./src/resize.js",
  "./src/errors.js",
  "./src/png.js",
  "./src/export.js",
  "./page/decode.js",
  "./node_modules/onnxruntime-web/dist/ort.wasm.min.mjs",
  "./node_modules/onnxruntime-web/dist/ort-wasm-simd-threaded.mjs",
  "./node_modules/onnxruntime-web/dist/ort-wasm-simd-threaded.wasm",
  "./node_modules/fflate/esm/browser.js",
];

self.addEventListener("install", (event) => {
  event.waitUntil(
    caches
      .open(SHELL)
      .then((cache) => cache.addAll(PRECACHE))
      .then(() => self.skipWaiting()),
  );
});

self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

function ours(request) {
  const url = new URL(request.url);
  const scope = new URL(self.registration.scope);
  return (
    request.method === "GET" &&
    url.origin === scope.origin &&
    url.pathname.startsWith(scope.pathname) &&
    !url.pathname.startsWith(`${scope.pathname}export/`)
  );
}

async function networkFirst(request) {
  const cache = await caches.open(SHELL);
  try {
    const response = await fetch(request);
    if (response.ok) await cache.put(request, response.clone());
    return response;
  } catch (e) {
    const hit = await cache.match(request, { ignoreSearch: true });
    if (hit) return hit;
    throw e;
  }
}

self.addEventListener("fetch", (event) => {
  if (ours(event.request)) event.respondWith(networkFirst(event.request));
});
