// The page: choose a subject and ROI from the export's manifest, drop or pick
// images, see each image's responses (histogram over the ROI's voxels, time
// per image) and the response map on slices of the ROI's mask volume.
//
// Query parameters: ?base=URL (an export folder or a Hub resolve/<revision>/
// URL; default ./export/, what `berg-onnx web` serves), ?threads=N and ?sw=0 (no
// service worker).

import * as ort from "onnxruntime-web";

import { loadModel } from "../src/berg.js";
import { baseOf, fetchManifest } from "../src/files.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const isolated = globalThis.crossOriginIsolated === true;
const maxThreads = isolated ? Math.max(1, Math.min(navigator.hardwareConcurrency || 1, 8)) : 1;
const threads = Math.min(Math.max(Number.parseInt(params.get("threads"), 10) || maxThreads, 1), maxThreads);
const MODEL_ID = "fmri-nsd-fwrf";

const state = {
  base: null,
  manifest: null,
  model: null,
  mask: null, // {shape, voxels: Int32Array of flat C-order indices, in voxel order}
  images: [], // {name, image, url}
  results: [], // {name, width, height, ms, responses}
  selected: 0,
  sessionMs: null,
  busy: Promise.resolve(),
};
// For scripts and tests: what the page shows, as numbers.
globalThis.bergPage = state;

function setState(s, text) {
  document.body.dataset.state = s;
  if (text !== undefined) $("status").textContent = text;
}

function showError(e) {
  console.error(e);
  $("error").hidden = false;
  $("error").textContent = `${e.name ?? "Error"}: ${e.message ?? e}`;
  setState("error", "error");
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

// ---------- colours ----------

// A diverging map (blue - white - red), t in [-1, 1].
function diverging(t) {
  const u = Math.max(-1, Math.min(1, t));
  const blue = [33, 102, 172];
  const red = [178, 24, 43];
  const end = u < 0 ? blue : red;
  const a = Math.abs(u) ** 0.8;
  return end.map((c) => Math.round(247 + (c - 247) * a));
}

function css(rgb) {
  return `rgb(${rgb[0]},${rgb[1]},${rgb[2]})`;
}

// ---------- manifest and model choice ----------

function modelsOf(manifest) {
  return Object.values(manifest.models).filter((m) => m.model_id === MODEL_ID);
}

function fillSelect(select, values, keep) {
  const old = keep ?? select.value;
  select.replaceChildren(
    ...values.map((v) => {
      const o = document.createElement("option");
      o.value = String(v);
      o.textContent = String(v);
      return o;
    }),
  );
  if (values.map(String).includes(old)) select.value = old;
}

function refreshChoices() {
  const models = modelsOf(state.manifest);
  const subjects = [...new Set(models.map((m) => m.subject))].sort((a, b) => a - b);
  fillSelect($("subject"), subjects);
  const subject = Number($("subject").value);
  const rois = models.filter((m) => m.subject === subject).map((m) => m.roi);
  fillSelect($("roi"), rois, $("roi").value || (rois.includes("V1") ? "V1" : undefined));
  const entry = models.find((m) => m.subject === subject && m.roi === $("roi").value);
  fillSelect($("precision"), entry?.onnx_int8 ? ["fp32", "int8"] : ["fp32"]);
}

async function chooseModel() {
  clearError();
  const subject = Number($("subject").value);
  const roi = $("roi").value;
  const precision = $("precision").value || "fp32";
  setState("loading", `loading sub-${String(subject).padStart(2, "0")} ${roi}…`);
  const model = await loadModel(state.base, { subject, roi, precision, threads });
  state.sessionMs = model.timings.sessionMs;
  state.filesMs = model.timings.filesMs;
  await state.model?.release();
  state.model = model;
  state.mask = await maskOf(model);
  setState("ready", `${roi}: ${model.nVoxels} voxels, ready`);
  if (state.images.length) await encodeAll(state.images, true);
}

async function maskOf(model) {
  const meta = await model.metadata();
  const mask = meta["fmri/roi_mask_volume"];
  if (!mask) throw new Error("the model's metadata has no fmri/roi_mask_volume");
  const voxels = [];
  for (let i = 0; i < mask.data.length; i++) if (mask.data[i]) voxels.push(i);
  if (voxels.length !== model.nVoxels) {
    throw new Error(`roi_mask_volume has ${voxels.length} voxels, the model ${model.nVoxels}`);
  }
  return { shape: mask.shape, voxels: Int32Array.from(voxels) };
}

// ---------- images ----------

async function decode(file) {
  const bitmap = await createImageBitmap(file, {
    premultiplyAlpha: "none",
    colorSpaceConversion: "none",
  });
  const canvas = document.createElement("canvas");
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0);
  bitmap.close();
  const pixels = ctx.getImageData(0, 0, canvas.width, canvas.height);
  return { data: pixels.data, width: pixels.width, height: pixels.height, channels: 4 };
}

async function addFiles(files) {
  const list = [...files].filter((f) => f.type.startsWith("image/") || /\.(png|jpe?g|gif|bmp|webp)$/i.test(f.name));
  if (!list.length) return;
  clearError();
  const items = [];
  for (const file of list) {
    try {
      items.push({ name: file.name, image: await decode(file), url: URL.createObjectURL(file) });
    } catch (e) {
      showError(new Error(`cannot read ${file.name} as an image: ${e.message}`));
    }
  }
  state.images.push(...items);
  await encodeAll(items, false);
}

const nextFrame = () => new Promise((resolve) => setTimeout(resolve, 0));

async function encodeAll(items, again) {
  if (!state.model) return;
  if (again) {
    state.results = [];
    $("results").replaceChildren();
  }
  setState("encoding", `encoding ${items.length} image${items.length > 1 ? "s" : ""}…`);
  for (const item of items) {
    const t0 = performance.now();
    const responses = await state.model.encode([item.image]);
    const ms = performance.now() - t0;
    state.results.push({ name: item.name, width: item.image.width, height: item.image.height, ms, responses, url: item.url });
    await nextFrame();
  }
  state.selected = state.results.length - 1;
  render();
  setState("ready", `${state.model.roi}: ${state.results.length} image${state.results.length > 1 ? "s" : ""} encoded`);
}

// ---------- drawing ----------

function stats(r) {
  let sum = 0;
  let sq = 0;
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of r) {
    sum += v;
    sq += v * v;
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  const mean = sum / r.length;
  return { mean, sd: Math.sqrt(Math.max(sq / r.length - mean * mean, 0)), lo, hi };
}

// One colour scale for every image, so that cards and maps compare: the 99th
// percentile of |response| over all shown responses (an outlier voxel would
// otherwise wash everything else out); larger values saturate.
function globalScale() {
  const all = [];
  for (const { responses } of state.results) for (const v of responses) all.push(Math.abs(v));
  if (!all.length) return 1;
  all.sort((a, b) => a - b);
  return all[Math.min(all.length - 1, Math.floor(0.99 * all.length))] || 1;
}

function drawHistogram(canvas, r, scale) {
  // Drawn at the size the canvas is shown at, so the labels stay sharp.
  const dpr = globalThis.devicePixelRatio || 1;
  canvas.width = Math.round((canvas.clientWidth || 300) * dpr);
  canvas.height = Math.round(64 * dpr);
  canvas.getContext("2d").setTransform(dpr, 0, 0, dpr, 0, 0);
  drawBars(canvas.getContext("2d"), canvas.width / dpr, canvas.height / dpr, r, scale);
}

function drawBars(ctx, w, height, r, scale) {
  const bins = 31;
  const counts = new Array(bins).fill(0);
  for (const v of r) {
    const b = Math.floor(((v + scale) / (2 * scale)) * bins);
    counts[Math.min(Math.max(b, 0), bins - 1)]++;
  }
  const max = Math.max(...counts);
  const h = height - 14;
  ctx.clearRect(0, 0, w, height);
  const bw = w / bins;
  counts.forEach((c, i) => {
    const t = ((i + 0.5) / bins) * 2 - 1;
    const bh = (c / max) * (h - 2);
    ctx.fillStyle = css(diverging(t));
    ctx.fillRect(i * bw + 0.5, h - bh, bw - 1, bh);
  });
  ctx.strokeStyle = "#999";
  ctx.beginPath();
  ctx.moveTo(w / 2, 0);
  ctx.lineTo(w / 2, h);
  ctx.moveTo(0, h + 0.5);
  ctx.lineTo(w, h + 0.5);
  ctx.stroke();
  ctx.fillStyle = "#555";
  ctx.font = "10px system-ui, sans-serif";
  ctx.textBaseline = "bottom";
  ctx.textAlign = "left";
  ctx.fillText(`−${scale.toFixed(2)}`, 0, height);
  ctx.textAlign = "center";
  ctx.fillText("0", w / 2, height);
  ctx.textAlign = "right";
  ctx.fillText(`+${scale.toFixed(2)}`, w, height);
}

function card(result, index, scale) {
  const { mean, sd, lo, hi } = stats(result.responses);
  const el = document.createElement("article");
  el.className = "card" + (index === state.selected ? " selected" : "");
  el.dataset.index = String(index);
  el.dataset.name = result.name;
  el.dataset.ms = result.ms.toFixed(3);
  el.dataset.responses = JSON.stringify(Array.from(result.responses));
  el.title = "show this image's response map";
  el.innerHTML = `
    <img alt="" />
    <div class="meta">
      <div class="name"></div>
      <div class="dims">${result.width}×${result.height} · <span class="ms">${result.ms.toFixed(1)} ms</span></div>
      <div class="nums">mean <span class="mean">${mean.toFixed(4)}</span> · sd ${sd.toFixed(4)}</div>
      <div class="nums">min ${lo.toFixed(3)} · max ${hi.toFixed(3)}</div>
    </div>
    <canvas class="hist" height="64"></canvas>`;
  el.querySelector("img").src = result.url;
  el.querySelector(".name").textContent = result.name;
  el.addEventListener("click", () => {
    state.selected = index;
    render();
  });
  return el;
}

function median(values) {
  const s = [...values].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function renderSummary() {
  const n = state.results.length;
  const el = $("summary");
  el.hidden = n === 0;
  $("empty").hidden = n !== 0;
  if (!n) return;
  const ms = state.results.map((r) => r.ms);
  el.innerHTML = `<b>${n}</b> image${n > 1 ? "s" : ""} · <b id="median-ms">${median(ms).toFixed(1)}</b> ms per image (median; min ${Math.min(...ms).toFixed(1)}, resize included) · model files ${state.filesMs.toFixed(0)} ms + session ${state.sessionMs.toFixed(0)} ms · ${state.model.roi}, sub-${String(state.model.subject).padStart(2, "0")}, ${state.model.nVoxels} voxels, ${state.model.precision}`;
}

function renderBrain(scale) {
  const section = $("brain");
  const result = state.results[state.selected];
  section.hidden = !result || !state.mask;
  if (section.hidden) return;
  $("brain-title").textContent = `· ${result.name} · ${state.model.roi}, axial slices of the ROI (z)`;
  const [X, Y, Z] = state.mask.shape;
  const { voxels } = state.mask;
  const value = new Map();
  let x0 = X, x1 = 0, y0 = Y, y1 = 0, z0 = Z, z1 = 0;
  voxels.forEach((flat, v) => {
    const z = flat % Z;
    const y = Math.floor(flat / Z) % Y;
    const x = Math.floor(flat / (Y * Z));
    x0 = Math.min(x0, x); x1 = Math.max(x1, x);
    y0 = Math.min(y0, y); y1 = Math.max(y1, y);
    z0 = Math.min(z0, z); z1 = Math.max(z1, z);
    value.set(flat, result.responses[v]);
  });
  const m = 2;
  x0 = Math.max(0, x0 - m); x1 = Math.min(X - 1, x1 + m);
  y0 = Math.max(0, y0 - m); y1 = Math.min(Y - 1, y1 + m);
  const nz = Math.min(8, z1 - z0 + 1);
  const zs = [...new Set(Array.from({ length: nz }, (_, i) => Math.round(z0 + ((z1 - z0) * (i + 0.5)) / nz)))];
  const w = x1 - x0 + 1;
  const h = y1 - y0 + 1;
  const cell = Math.max(2, Math.floor(150 / Math.max(w, h)));
  const cells = zs.map((z) => {
    const fig = document.createElement("figure");
    const canvas = document.createElement("canvas");
    canvas.width = w * cell;
    canvas.height = h * cell;
    const ctx = canvas.getContext("2d");
    ctx.fillStyle = "#2b2b2b";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    for (let x = x0; x <= x1; x++) {
      for (let y = y0; y <= y1; y++) {
        const r = value.get((x * Y + y) * Z + z);
        if (r === undefined) continue;
        ctx.fillStyle = css(diverging(r / scale));
        ctx.fillRect((x - x0) * cell, (y1 - y) * cell, cell, cell); // anterior (y) up
      }
    }
    const caption = document.createElement("figcaption");
    caption.textContent = `z = ${z}`;
    fig.append(canvas, caption);
    return fig;
  });
  $("slices").replaceChildren(...cells);
  const legend = $("legend");
  const ctx = legend.getContext("2d");
  for (let i = 0; i < legend.width; i++) {
    ctx.fillStyle = css(diverging((i / (legend.width - 1)) * 2 - 1));
    ctx.fillRect(i, 0, 1, legend.height);
  }
  $("legend-text").textContent = `−${scale.toFixed(2)} … 0 … +${scale.toFixed(2)} (z-scored response; 99th percentile of |r|, beyond saturates) · anterior up · dark: outside the ROI`;
}

function render() {
  const scale = globalScale();
  renderSummary();
  renderBrain(scale);
  const cards = state.results.map((r, i) => card(r, i, scale));
  $("results").replaceChildren(...[...cards].reverse()); // newest first
  cards.forEach((el, i) => drawHistogram(el.querySelector("canvas"), state.results[i].responses, scale));
}

// ---------- start ----------

function run(task) {
  state.busy = state.busy.then(task).catch(showError);
  return state.busy;
}

function wire() {
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    run(() => addFiles(e.dataTransfer.files));
  });
  $("files").addEventListener("change", (e) => {
    const files = [...e.target.files];
    e.target.value = "";
    run(() => addFiles(files));
  });
  $("subject").addEventListener("change", () => {
    refreshChoices();
    run(chooseModel);
  });
  $("roi").addEventListener("change", () => {
    refreshChoices();
    run(chooseModel);
  });
  $("precision").addEventListener("change", () => run(chooseModel));
  fillSelect($("threads"), Array.from({ length: maxThreads }, (_, i) => i + 1), String(threads));
  $("threads").disabled = maxThreads === 1;
  $("threads").addEventListener("change", () => {
    params.set("threads", $("threads").value); // onnxruntime-web fixes threads at start-up
    location.search = params.toString();
  });
  $("env").textContent =
    `onnxruntime-web ${ort.env.versions?.web ?? ""} (WebAssembly) · threads ${threads}` +
    ` · cross-origin isolated: ${isolated ? "yes" : "no (one thread)"} · export ${state.base}`;
}

async function start() {
  // The page's own files, for a second visit without the server (?sw=0: not registered).
  if ("serviceWorker" in navigator && params.get("sw") !== "0") {
    navigator.serviceWorker.register("./sw.js").catch((e) => console.warn("no offline page:", e));
  }
  state.base = baseOf(params.get("base") ?? "./export/");
  wire();
  state.manifest = await fetchManifest(state.base);
  refreshChoices();
  await chooseModel();
}

run(start);
