// medserve page: plain JavaScript, no dependencies, same-origin requests only.
"use strict";

const state = { key: "", models: [], cards: {}, files: [], objectUrls: [] };
const $ = (id) => document.getElementById(id);

function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (state.key) h["X-API-Key"] = state.key;
  return h;
}

async function api(path, options) {
  const opts = Object.assign({}, options || {});
  opts.headers = headers(opts.headers);
  return fetch(path, opts);
}

function text(id, value) { $(id).textContent = value; }

function show(id, visible) { $(id).hidden = !visible; }

function forget() {
  state.objectUrls.forEach((u) => URL.revokeObjectURL(u));
  state.objectUrls = [];
}

function blobUrl(blob) {
  const url = URL.createObjectURL(blob);
  state.objectUrls.push(url);
  return url;
}

async function problem(response) {
  let body = {};
  try { body = await response.json(); } catch (e) { body = {}; }
  show("result", false);
  text("problem-title", body.title || `HTTP ${response.status}`);
  text("problem-detail", body.detail || "");
  show("problem", true);
  text("status", `The service refused the file (${response.status}).`);
}

async function loadModels() {
  const r = await api("/models");
  if (r.status === 401) {
    show("key-section", true);
    text("status", "Enter an API key to list the models.");
    return;
  }
  if (!r.ok) { await problem(r); return; }
  state.models = await r.json();
  const select = $("model");
  select.textContent = "";
  for (const m of state.models) {
    const option = document.createElement("option");
    option.value = m.name;
    option.textContent = `${m.name} ${m.version || ""} — ${m.task || ""}` + (m.ready ? "" : " (not ready)");
    option.disabled = !m.ready;
    select.appendChild(option);
  }
  const first = state.models.find((m) => m.ready);
  if (first) { select.value = first.name; await showModel(first.name); }
}

function model() { return state.models.find((m) => m.name === $("model").value); }

async function showModel(name) {
  const info = $("model-info");
  info.textContent = "";
  let card = state.cards[name];
  if (!card) {
    const r = await api(`/models/${encodeURIComponent(name)}`, { headers: { Accept: "application/json" } });
    if (!r.ok) { await problem(r); return; }
    card = await r.json();
    state.cards[name] = card;
  }
  if (card.training && card.training.synthetic) {
    const p = document.createElement("p");
    p.className = "warning";
    p.setAttribute("role", "note");
    p.textContent = "Synthetic data: this model was trained and evaluated on synthetic images only; its figures say nothing about real patients. Not for diagnosis.";
    info.appendChild(p);
  }
  const use = document.createElement("p");
  use.textContent = card.intended_use || "";
  info.appendChild(use);
  const link = document.createElement("a");
  link.href = `/models/${encodeURIComponent(name)}`;
  link.textContent = "The model's card and plots";
  info.appendChild(link);
  const details = document.createElement("details");
  const summary = document.createElement("summary");
  summary.textContent = "Plots from the model card (ROC, reliability, confusion matrix, examples)";
  details.appendChild(summary);
  const plots = document.createElement("div");
  plots.className = "plots";
  details.appendChild(plots);
  info.appendChild(details);
  for (const file of Object.keys(card.files || {}).filter((f) => f.endsWith(".png"))) {
    const r = await api(`/models/${encodeURIComponent(name)}/files/${encodeURIComponent(file)}`);
    if (!r.ok) continue;
    const figure = document.createElement("figure");
    const img = document.createElement("img");
    const caption = file.replace(/\.png$/, "").replace(/_/g, " ");
    img.alt = `${caption} of ${name}`;
    img.src = blobUrl(await r.blob());
    const fc = document.createElement("figcaption");
    fc.textContent = caption;
    figure.appendChild(img);
    figure.appendChild(fc);
    plots.appendChild(figure);
  }
  const points = $("operating-point");
  points.textContent = "";
  for (const [pname, p] of Object.entries(card.operating_points || {})) {
    const option = document.createElement("option");
    option.value = pname;
    option.textContent = `${pname} (threshold ${p.threshold.toFixed(3)}, sensitivity ${p.sensitivity.toFixed(3)}, specificity ${p.specificity.toFixed(3)})`;
    points.appendChild(option);
  }
  points.value = card.default_operating_point;
}

function upload(files) {
  const form = new FormData();
  for (const f of files) form.append("file", f, f.name);
  return form;
}

function query(extra) {
  const params = new URLSearchParams(Object.assign({ operating_point: $("operating-point").value }, extra || {}));
  return params.toString();
}

async function run() {
  const m = model();
  if (!m || state.files.length === 0) return;
  forget();
  show("problem", false);
  text("status", `Sending ${state.files.length} file(s) to ${m.name}…`);
  const explain = $("explain").checked ? { explain: "occlusion" } : {};
  const r = await api(`${m.endpoint}?${query(explain)}`, { method: "POST", body: upload(state.files), headers: { Accept: "application/json" } });
  if (!r.ok) { await problem(r); return; }
  const body = await r.json();
  text("label", body.label);
  text("probability", `probability ${body.probability.toFixed(4)}`);
  const p = body.operating_point;
  text("point", `${p.name}: threshold ${p.threshold.toFixed(4)}, sensitivity ${p.sensitivity.toFixed(3)}, specificity ${p.specificity.toFixed(3)}`);
  text("uncalibrated", body.uncalibrated_probability.toFixed(4));
  text("input", `${body.input.format}, ${body.input.shape.join(" × ")}` + (body.input.spacing_mm ? `, spacing ${body.input.spacing_mm.join(" × ")} mm` : ""));
  text("timings", Object.entries(body.timing_ms).map(([k, v]) => `${k} ${v}`).join(", "));
  const warnings = $("warnings");
  warnings.textContent = "";
  if (body.warnings.length) {
    const ul = document.createElement("ul");
    ul.className = "warnings";
    for (const w of body.warnings) {
      const li = document.createElement("li");
      li.textContent = `${w.code}: ${w.detail}`;
      ul.appendChild(li);
    }
    warnings.appendChild(ul);
  }
  show("ood-row", Boolean(body.ood));
  if (body.ood) text("ood", `${body.ood.in_distribution ? "in distribution" : "OUT OF DISTRIBUTION"} (score ${body.ood.score}, threshold ${body.ood.threshold})`);
  show("mask-row", Boolean(body.mask));
  show("overlay-figure", false);
  if (body.mask) {
    const mk = body.mask;
    text("mask", `${mk.area_px} px` + (mk.area_mm2 !== null ? ` (${mk.area_mm2} mm²)` : "") + (mk.centroid ? `, centroid x ${mk.centroid[0]}, y ${mk.centroid[1]}` : ", empty"));
    const o = await api(`${m.endpoint}?${query({ overlay: "true" })}`, { method: "POST", body: upload(state.files), headers: { Accept: "image/png" } });
    if (o.ok) { $("overlay").src = blobUrl(await o.blob()); show("overlay-figure", true); }
  }
  const ex = body.explanation;
  show("explanation-figure", Boolean(ex && ex.png_base64));
  if (ex && ex.png_base64) {
    $("explanation").src = `data:image/png;base64,${ex.png_base64}`;
    text("explanation-caption", ex.method === "occlusion"
      ? `Occlusion sensitivity: the warmer a region, the more the probability dropped when it was masked (patch ${ex.patch} px, stride ${ex.stride} px)`
      : "The model's probability map over the input");
  }
  show("dicom-row", body.input.format.startsWith("dicom"));
  show("result", true);
  text("status", `${m.name} answered.`);
}

async function downloadDicom() {
  const m = model();
  const r = await api(`${m.endpoint}?${query()}`, { method: "POST", body: upload(state.files), headers: { Accept: "application/dicom" } });
  if (!r.ok) { await problem(r); return; }
  const a = document.createElement("a");
  a.href = blobUrl(await r.blob());
  a.download = `${m.name}_result.dcm`;
  document.body.appendChild(a);
  a.click();
  a.remove();
}

function wire() {
  const drop = document.querySelector(".drop");
  const input = $("file");
  input.addEventListener("change", () => { state.files = Array.from(input.files); run(); });
  for (const ev of ["dragenter", "dragover"]) drop.addEventListener(ev, () => drop.classList.add("dragging"));
  for (const ev of ["dragleave", "drop"]) drop.addEventListener(ev, () => drop.classList.remove("dragging"));
  $("model").addEventListener("change", async () => { await showModel($("model").value); run(); });
  $("operating-point").addEventListener("change", run);
  $("explain").addEventListener("change", run);
  $("dicom-download").addEventListener("click", downloadDicom);
  $("key-apply").addEventListener("click", async () => {
    state.key = $("api-key").value.trim();
    show("key-section", false);
    await loadModels();
  });
  $("api-key").addEventListener("keydown", (e) => { if (e.key === "Enter") $("key-apply").click(); });
  loadModels();
}

document.addEventListener("DOMContentLoaded", wire);
