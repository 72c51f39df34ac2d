// The page: choose a subject and ROI from the export's manifest, drop or pick
// images, see each image's responses (histogram over the ROI's voxels, time
// per image) and the response map on slices of the ROI's mask volume; download
// the responses (.npy + .paths.txt as `berg-onnx encode --out` writes them, CSV).
//
// One state, one truth: what is on screen is `view` = {model, mask, results},
// replaced as one unit only when a new model, its metadata and the responses
// of every image all succeeded. A refused model leaves the previous view (and
// the menus go back to it); the error stays shown until a model loads.
//
// For scripts and tests: window.bergPage.state() (see below).
//
// Query parameters: ?base=URL (an export folder or a Hub resolve/<revision>/
// URL; default ./export/, what `berg-onnx web` serves), ?threads=N and ?sw=0 (no
// service worker).

import * as ort from "onnxruntime-web";

import { INPUT_SIZE, loadModel, resizeExact, setThreads, toCsv, toNpy, toPathsTxt } from "../src/berg.js";
import { baseOf, fetchManifest } from "../src/files.js";
import { ACCEPT_ATTR, decodeBytes } from "./decode.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const isolated = globalThis.crossOriginIsolated === true;
const maxThreads = isolated ? Math.max(1, Math.min(navigator.hardwareConcurrency || 1, 8)) : 1;
const threads = Math.min(Math.max(Number.parseInt(params.get("threads"), 10) || maxThreads, 1), maxThreads);
const MODEL_ID = "fmri-nsd-fwrf";
const UNITS = "z-scored units, one value per voxel of the ROI";

/** What is on screen; replaced as a whole (see the top of this file). */
let view = { model: null, mask: null, results: [] }; // results: {id, name, responses, ms}
/** The images, model-independent: the 227 x 227 model input and a thumbnail, nothing full-size. */
const sources = []; // {id, name, width, height, input, thumb}
let nextId = 0;
let selectedId = null;
const errors = { model: null, files: [] };
const page = { base: null, manifest: null, busy: 0, chain: Promise.resolve(), wanted: 0 };

// ---------- status and errors ----------

function pad(s) {
  return String(s).padStart(2, "0");
}

function label(m) {
  return `sub-${pad(m.subject)} ${m.roi}${m.precision === "int8" ? " int8" : ""}`;
}

function message(e) {
  return `${e?.name ?? "Error"}: ${e?.message ?? e}`;
}

function renderErrors() {
  const box = $("error");
  const lines = [errors.model, ...errors.files].filter(Boolean);
  box.hidden = lines.length === 0;
  $("error-text").textContent = lines.join("\n");
}

function setStatus(text) {
  $("status").textContent = text;
}

/** body[data-state]: loading / encoding while busy; then error (a message is shown) or ready. */
function settle() {
  if (page.busy > 0) return;
  syncMenus();
  const m = view.model;
  const n = view.results.length;
  if (!m) setStatus(sources.length ? `${sources.length} image(s) waiting: no model loaded` : "no model loaded");
  else setStatus(`${label(m)}: ${m.nVoxels} voxels · ${n} image${n === 1 ? "" : "s"} encoded`);
  document.body.dataset.state = errors.model || errors.files.length || !m ? "error" : "ready";
}

function busy(state, text) {
  document.body.dataset.state = state;
  setStatus(text);
}

// ---------- menus ----------

function modelsOf(manifest) {
  return Object.values(manifest?.models ?? {}).filter((m) => m.model_id === MODEL_ID);
}

function fillSelect(select, values, want) {
  const old = want ?? select.value;
  select.replaceChildren(
    ...values.map((v) => {
      const o = document.createElement("option");
      o.value = String(v);
      o.textContent = String(v);
      return o;
    }),
  );
  if (values.map(String).includes(String(old))) select.value = String(old);
}

/** Fill the menus for a subject/ROI/precision (falling back where that one does not exist). */
function fillMenus(subject, roi, precision) {
  const models = modelsOf(page.manifest);
  const subjects = [...new Set(models.map((m) => m.subject))].sort((a, b) => a - b);
  fillSelect($("subject"), subjects, subject);
  const s = Number($("subject").value);
  const rois = models.filter((m) => m.subject === s).map((m) => m.roi);
  fillSelect($("roi"), rois, rois.includes(roi) ? roi : rois.includes("V1") ? "V1" : rois[0]);
  const entry = models.find((m) => m.subject === s && m.roi === $("roi").value);
  fillSelect($("precision"), entry?.onnx_int8 ? ["fp32", "int8"] : ["fp32"], precision);
}

/** The menus show the model that computed what is on screen (when idle). */
function syncMenus() {
  const m = view.model;
  if (m) fillMenus(m.subject, m.roi, m.precision);
}

function wantedChoice() {
  return {
    subject: Number($("subject").value),
    roi: $("roi").value,
    precision: $("precision").value || "fp32",
  };
}

// ---------- tasks: one at a time, in order ----------

class Superseded extends Error {}
/** An error whose message is the whole text to show (no "Name: " prefix). */
class PageError extends Error {}

function run(task) {
  page.busy++;
  page.chain = page.chain
    .then(task)
    .catch((e) => {
      if (!(e instanceof Superseded)) {
        console.error(e);
        errors.model = e instanceof PageError ? e.message : message(e);
      }
    })
    .finally(() => {
      page.busy--;
      render();
      settle();
    });
  return page.chain;
}

async function maskOf(model) {
  const meta = await model.metadata();
  const mask = meta["fmri/roi_mask_volume"];
  if (!mask) throw new Error(`${model.entry.metadata.name} has no fmri/roi_mask_volume`);
  const voxels = [];
  for (let i = 0; i < mask.data.length; i++) if (mask.data[i]) voxels.push(i);
  if (voxels.length !== model.nVoxels) {
    throw new Error(
      `${model.entry.metadata.name}: roi_mask_volume has ${voxels.length} voxels, the model ${model.nVoxels}`,
    );
  }
  if (mask.shape.length !== 3) throw new Error(`roi_mask_volume has shape ${mask.shape}, expected 3-D`);
  return { shape: mask.shape, voxels: Int32Array.from(voxels) };
}

const nextFrame = () => new Promise((resolve) => setTimeout(resolve, 0));

async function encodeOne(model, source) {
  const t0 = performance.now();
  const [row] = await model.encode(source.input);
  return { id: source.id, name: source.name, responses: row, ms: performance.now() - t0 };
}

/** Switch to another model: everything (model, metadata, responses) or nothing. */
async function chooseModel(choice, ticket) {
  const { subject, roi, precision } = choice;
  const what = `sub-${pad(subject)} ${roi}${precision === "int8" ? " int8" : ""}`;
  busy("loading", `loading ${what}…`);
  let model = null;
  try {
    model = await loadModel(page.base, { subject, roi, precision, manifest: page.manifest });
    if (ticket !== page.wanted) throw new Superseded();
    const mask = await maskOf(model);
    const results = [];
    for (const [i, source] of sources.entries()) {
      if (ticket !== page.wanted) throw new Superseded();
      busy("encoding", `${what}: encoding image ${i + 1} of ${sources.length}…`);
      results.push(await encodeOne(model, source));
      await nextFrame();
    }
    if (ticket !== page.wanted) throw new Superseded();
    const old = view.model;
    view = { model, mask, results, timings: model.timings };
    model = null;
    errors.model = null;
    await old?.release();
  } catch (e) {
    if (e instanceof Superseded) throw e;
    const keep = view.model ? ` (still showing ${label(view.model)})` : "";
    throw new PageError(`Could not load ${what}${keep}: ${message(e)}`);
  } finally {
    await model?.release();
  }
}

function requestModel() {
  const ticket = ++page.wanted; // a newer choice supersedes the one in progress
  const choice = wantedChoice();
  run(() => chooseModel(choice, ticket));
}

// ---------- images ----------

function thumbnail(input) {
  const n = INPUT_SIZE * INPUT_SIZE;
  const rgba = new Uint8ClampedArray(4 * n);
  for (let i = 0; i < n; i++) {
    rgba[4 * i] = input.data[i];
    rgba[4 * i + 1] = input.data[n + i];
    rgba[4 * i + 2] = input.data[2 * n + i];
    rgba[4 * i + 3] = 255;
  }
  const canvas = document.createElement("canvas");
  canvas.width = INPUT_SIZE;
  canvas.height = INPUT_SIZE;
  canvas.getContext("2d").putImageData(new ImageData(rgba, INPUT_SIZE, INPUT_SIZE), 0, 0);
  return canvas.toDataURL("image/jpeg", 0.85);
}

async function addFiles(files) {
  errors.files = [];
  const list = [...files];
  if (!list.length) return;
  const added = [];
  for (const [i, file] of list.entries()) {
    busy("encoding", `reading ${file.name} (${i + 1} of ${list.length})…`);
    try {
      const bytes = await readFile(file);
      const { image } = await decodeBytes(bytes, file.name);
      const input = resizeExact(image);
      const source = { id: nextId++, name: file.name, width: image.width, height: image.height, input };
      source.thumb = thumbnail(input);
      sources.push(source);
      added.push(source);
      if (view.model) {
        busy("encoding", `${label(view.model)}: encoding ${file.name}…`);
        view.results.push(await encodeOne(view.model, source));
        selectedId = source.id;
        render();
      }
    } catch (e) {
      errors.files.push(message(e));
    }
    renderErrors();
    await nextFrame();
  }
  if (!view.model && added.length && !errors.model) {
    errors.files.push("No model is loaded: the images will be encoded once one loads (pick a model above).");
  }
}

async function readFile(file) {
  try {
    return new Uint8Array(await file.arrayBuffer());
  } catch (e) {
    throw new Error(`cannot read ${file.name}: ${e.message}`);
  }
}

function clearImages() {
  sources.length = 0;
  view = { ...view, results: [] };
  selectedId = null;
  errors.files = [];
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
  for (const { responses } of view.results) for (const v of responses) all.push(Math.abs(v));
  if (!all.length) return 1;
  all.sort((a, b) => a - b);
  return all[Math.min(all.length - 1, Math.floor(0.99 * all.length))] || 1;
}

const HIST_H = 96;

function drawHistogram(canvas, r, scale) {
  // Drawn at the size the canvas is shown at, so the labels stay sharp.
  const dpr = globalThis.devicePixelRatio || 1;
  const w = canvas.clientWidth || 300;
  canvas.width = Math.round(w * dpr);
  canvas.height = Math.round(HIST_H * dpr);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  drawBars(ctx, w, HIST_H, r, scale);
}

function drawBars(ctx, width, height, r, scale) {
  const bins = 31;
  const counts = new Array(bins).fill(0);
  for (const v of r) {
    const b = Math.floor(((v + scale) / (2 * scale)) * bins);
    counts[Math.min(Math.max(b, 0), bins - 1)]++;
  }
  const max = Math.max(...counts);
  const left = 30; // y axis: voxel counts
  const top = 4;
  const bottom = 30; // tick labels + x axis title
  const w = width - left;
  const h = height - top - bottom;
  ctx.clearRect(0, 0, width, height);
  const bw = w / bins;
  counts.forEach((c, i) => {
    const t = ((i + 0.5) / bins) * 2 - 1;
    const bh = (c / max) * h;
    ctx.fillStyle = css(diverging(t));
    ctx.fillRect(left + i * bw + 0.5, top + h - bh, Math.max(bw - 1, 1), bh);
  });
  ctx.strokeStyle = "#8a8a8f";
  ctx.beginPath();
  ctx.moveTo(left + w / 2, top);
  ctx.lineTo(left + w / 2, top + h);
  ctx.moveTo(left, top + h + 0.5);
  ctx.lineTo(width, top + h + 0.5);
  ctx.moveTo(left - 0.5, top);
  ctx.lineTo(left - 0.5, top + h);
  ctx.stroke();
  ctx.fillStyle = "#55555a";
  ctx.font = "10px system-ui, sans-serif";
  ctx.textBaseline = "top";
  ctx.textAlign = "left";
  ctx.fillText(`−${scale.toFixed(2)}`, left, top + h + 3);
  ctx.textAlign = "center";
  ctx.fillText("0", left + w / 2, top + h + 3);
  ctx.textAlign = "right";
  ctx.fillText(`+${scale.toFixed(2)}`, width, top + h + 3);
  ctx.textAlign = "center";
  ctx.fillText("response (z-scored units)", left + w / 2, top + h + 16);
  ctx.textAlign = "right";
  ctx.textBaseline = "top";
  ctx.fillText(String(max), left - 4, top);
  ctx.textBaseline = "bottom";
  ctx.fillText("0", left - 4, top + h);
  ctx.save();
  ctx.translate(9, top + h / 2);
  ctx.rotate(-Math.PI / 2);
  ctx.textAlign = "center";
  ctx.textBaseline = "middle";
  ctx.fillText("voxels", 0, 0);
  ctx.restore();
}

function select(id, focus) {
  selectedId = id;
  render();
  if (focus) document.querySelector(`.card[data-id="${id}"]`)?.focus();
  const brain = $("brain");
  const rect = brain.getBoundingClientRect();
  if (!brain.hidden && (rect.top < 0 || rect.top > innerHeight * 0.6)) {
    brain.scrollIntoView({ block: "start", behavior: "instant" });
  }
}

function card(result, source, selected) {
  const { mean, sd, lo, hi } = stats(result.responses);
  const el = document.createElement("div");
  el.className = `card${selected ? " selected" : ""}`;
  el.dataset.id = String(result.id);
  el.dataset.name = result.name;
  el.dataset.ms = result.ms.toFixed(3);
  el.tabIndex = 0;
  el.setAttribute("role", "button");
  el.setAttribute("aria-pressed", String(selected));
  el.setAttribute("aria-label", `${result.name}: mean response ${mean.toFixed(3)}; show its response map`);
  el.innerHTML = `
    <img alt="" width="72" height="72" />
    <div class="meta">
      <div class="name"></div>
      <div class="dims">${source.width}×${source.height} · <span class="ms">${result.ms.toFixed(1)} ms</span></div>
      <div class="nums">mean <span class="mean">${mean.toFixed(4)}</span> · sd ${sd.toFixed(4)}</div>
      <div class="nums">min ${lo.toFixed(3)} · max ${hi.toFixed(3)}</div>
    </div>
    <canvas class="hist" role="img"></canvas>`;
  el.querySelector("img").src = source.thumb;
  el.querySelector(".name").textContent = result.name;
  el.querySelector(".name").title = result.name;
  el.querySelector("canvas").setAttribute(
    "aria-label",
    `histogram of ${result.responses.length} voxel responses, z-scored units, from ${lo.toFixed(2)} to ${hi.toFixed(2)}`,
  );
  el.addEventListener("click", () => select(result.id, false));
  el.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      select(result.id, true);
    }
  });
  return el;
}

function median(values) {
  const s = [...values].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function renderSummary() {
  const n = view.results.length;
  const m = view.model;
  $("summary").hidden = n === 0 || !m;
  $("export").hidden = n === 0 || !m;
  if (!n || !m) return;
  const ms = view.results.map((r) => r.ms);
  const t = view.timings;
  $("summary-text").innerHTML =
    `<b>${n}</b> image${n > 1 ? "s" : ""} · <b id="median-ms">${median(ms).toFixed(1)}</b> ms per image ` +
    `(median; min ${Math.min(...ms).toFixed(1)}) · model files ${t.filesMs.toFixed(0)} ms + session ` +
    `${t.sessionMs.toFixed(0)} ms · <span id="summary-model">${label(m)}, ${m.nVoxels} voxels, ${m.precision}</span>`;
}

function renderBrain(scale) {
  const section = $("brain");
  const result = view.results.find((r) => r.id === selectedId) ?? view.results.at(-1);
  section.hidden = !result || !view.mask;
  if (section.hidden) return;
  $("brain-title").textContent = `· ${result.name} · ${label(view.model)}, axial slices of the ROI (z)`;
  const [X, Y, Z] = view.mask.shape;
  const { voxels } = view.mask;
  const value = new Map();
  let x0 = X;
  let x1 = 0;
  let y0 = Y;
  let y1 = 0;
  let z0 = Z;
  let z1 = 0;
  voxels.forEach((flat, v) => {
    const z = flat % Z;
    const y = Math.floor(flat / Z) % Y;
    const x = Math.floor(flat / (Y * Z));
    x0 = Math.min(x0, x);
    x1 = Math.max(x1, x);
    y0 = Math.min(y0, y);
    y1 = Math.max(y1, y);
    z0 = Math.min(z0, z);
    z1 = Math.max(z1, z);
    value.set(flat, result.responses[v]);
  });
  section.dataset.voxels = String(value.size);
  section.dataset.name = result.name;
  const m = 2;
  x0 = Math.max(0, x0 - m);
  x1 = Math.min(X - 1, x1 + m);
  y0 = Math.max(0, y0 - m);
  y1 = Math.min(Y - 1, y1 + m);
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
    canvas.setAttribute("role", "img");
    canvas.setAttribute("aria-label", `axial slice z = ${z} of the response map`);
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
  $("legend-text").textContent =
    `−${scale.toFixed(2)} … 0 … +${scale.toFixed(2)} z-scored units (99th percentile of |r| over ` +
    "all images; beyond saturates) · anterior up · dark: outside the ROI";
}

function render() {
  renderErrors();
  const scale = globalScale();
  renderSummary();
  renderBrain(scale);
  const shown = view.results.find((r) => r.id === selectedId) ?? view.results.at(-1);
  const byId = new Map(sources.map((s) => [s.id, s]));
  const pairs = view.results.map((r) => [r, byId.get(r.id)]).filter(([, s]) => s);
  const cards = pairs.map(([r, s]) => card(r, s, r === shown));
  $("results").replaceChildren(...[...cards].reverse()); // newest first
  cards.forEach((el, i) => drawHistogram(el.querySelector("canvas"), pairs[i][0].responses, scale));
  $("results-section").hidden = cards.length === 0;
  $("empty").hidden = cards.length !== 0;
  $("clear").disabled = sources.length === 0;
}

// ---------- export ----------

function fileStem() {
  const m = view.model;
  return `berg-${MODEL_ID}_sub-${pad(m.subject)}_roi-${m.roi}${m.precision === "int8" ? "_int8" : ""}`;
}

function download(name, bytes, type) {
  const url = URL.createObjectURL(new Blob([bytes], { type }));
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

const exporters = {
  npy: () => download(`${fileStem()}.npy`, toNpy(view.results.map((r) => r.responses)), "application/octet-stream"),
  paths: () => download(`${fileStem()}.paths.txt`, toPathsTxt(view.results.map((r) => r.name)), "text/plain"),
  csv: () =>
    download(
      `${fileStem()}.csv`,
      toCsv(
        view.results.map((r) => r.name),
        view.results.map((r) => r.responses),
      ),
      "text/csv",
    ),
};

// ---------- the seam for scripts and tests ----------

globalThis.bergPage = {
  /** What the page shows, as plain data, for scripts, tests and embedding pages. */
  state() {
    const m = view.model;
    const error = [errors.model, ...errors.files].filter(Boolean).join("\n") || null;
    return {
      subject: m?.subject ?? null,
      roi: m?.roi ?? null,
      precision: m?.precision ?? null,
      nVoxels: m?.nVoxels ?? null,
      ready: page.busy === 0 && m !== null,
      busy: page.busy > 0,
      error,
      images: m
        ? view.results.map((r) => ({ name: r.name, responses: Array.from(r.responses), ms: r.ms }))
        : sources.map((s) => ({ name: s.name, responses: null, ms: null })),
      timings: m ? { ...m.timings } : null,
      selected: (view.results.find((r) => r.id === selectedId) ?? view.results.at(-1))?.name ?? null,
    };
  },
  /** Resolves once the page is idle (every queued task done). */
  async idle() {
    while (page.busy > 0) await page.chain;
    return this.state();
  },
  /** Image file bytes -> the (3, H, W) pixels the page gives the resize, as berg_onnx.load_image. */
  async decode(bytes, name = "image") {
    const { image, format } = await decodeBytes(new Uint8Array(bytes), name);
    const { toPlanarRGB } = await import("../src/image.js");
    return { format, width: image.width, height: image.height, data: toPlanarRGB(image) };
  },
  /** The downloads, as bytes (what the buttons save). */
  files() {
    const names = view.results.map((r) => r.name);
    const rows = view.results.map((r) => r.responses);
    if (!rows.length) return null;
    return { stem: fileStem(), npy: toNpy(rows), paths: toPathsTxt(names), csv: toCsv(names, rows) };
  },
};

// ---------- start ----------

function openPicker() {
  $("files").click();
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
    const files = [...e.dataTransfer.files];
    run(() => addFiles(files));
  });
  drop.addEventListener("keydown", (e) => {
    if (e.target === drop && (e.key === "Enter" || e.key === " ")) {
      e.preventDefault();
      openPicker();
    }
  });
  $("files").accept = ACCEPT_ATTR;
  $("files").addEventListener("change", (e) => {
    const files = [...e.target.files];
    e.target.value = "";
    run(() => addFiles(files));
  });
  $("subject").addEventListener("change", () => {
    fillMenus(Number($("subject").value), $("roi").value, $("precision").value);
    requestModel();
  });
  $("roi").addEventListener("change", () => {
    fillMenus(Number($("subject").value), $("roi").value, $("precision").value);
    requestModel();
  });
  $("precision").addEventListener("change", requestModel);
  $("dismiss").addEventListener("click", () => {
    errors.files = [];
    if (view.model) errors.model = null; // a shown, consistent model: the message was read
    renderErrors();
    settle();
  });
  $("clear").addEventListener("click", () => run(async () => clearImages()));
  $("save-npy").addEventListener("click", exporters.npy);
  $("save-paths").addEventListener("click", exporters.paths);
  $("save-csv").addEventListener("click", exporters.csv);
  fillSelect($("threads"), Array.from({ length: maxThreads }, (_, i) => i + 1), String(threads));
  $("threads").disabled = maxThreads === 1;
  $("threads").addEventListener("change", () => {
    params.set("threads", $("threads").value); // onnxruntime-web fixes threads at start-up
    location.search = params.toString();
  });
  $("units").textContent = UNITS;
  $("env").textContent =
    `onnxruntime-web ${ort.env.versions?.web ?? ""} (WebAssembly) · threads ${threads}` +
    ` · cross-origin isolated: ${isolated ? "yes" : "no (one thread)"} · export ${page.base}`;
}

async function start() {
  // The page's own files, for a second visit without the server (?sw=0: not registered).
  if ("serviceWorker" in navigator && params.get("sw") !== "0") {
    navigator.serviceWorker.register("./sw.js").catch((e) => console.warn("no offline page:", e));
  }
  page.base = baseOf(params.get("base") ?? "./export/");
  setThreads(threads);
  wire();
  busy("loading", "reading the export's manifest…");
  try {
    page.manifest = await fetchManifest(page.base);
  } catch (e) {
    throw new PageError(`Cannot read the export at ${page.base}: ${message(e)}`);
  }
  fillMenus(undefined, "V1");
  const ticket = ++page.wanted;
  await chooseModel(wantedChoice(), ticket);
}

run(start);
