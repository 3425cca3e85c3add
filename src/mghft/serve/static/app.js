// The sticker page: upload one image to /v1/predict and show the emotion, the probabilities, the view texts and
// the heatmap of the patches Local Re-Attention picked, drawn over the sticker. With "several emotions per sticker"
// set (top_k and/or min_probability), every chosen emotion is listed with its probability and its emoji.
"use strict";

const TITLES = { intention: "Intention", style: "Style", main_role: "Main role", posture_expression: "Posture and expression" };
const $ = (id) => document.getElementById(id);
let current = null; // { image: HTMLImageElement, prediction }
let emojiArtwork = null; // the credit line of the emoji images the service serves, or null: emoji shown as text
let emojiMap = {}; // class -> emoji of the service's model (/v1/model), for each chosen emotion
let lastFile = null; // the sticker last asked about: asked again when the several-emotions settings change
let asked = 0; // the number of the latest request: an answer to an earlier one (other settings) is not shown

function setStatus(text, isError) {
  const s = $("status");
  s.textContent = text;
  s.className = isError ? "error" : "";
}

async function loadModelInfo() {
  try {
    const r = await fetch("/v1/model");
    const info = await r.json();
    $("model-name").textContent = `model ${info.name} · ${info.classes.length} classes` +
      (info.interpreter ? ` · interpreter ${info.interpreter}` : " · no interpreter");
    $("key-row").hidden = !(info.limits && info.limits.api_key_required);
    emojiArtwork = info.emoji_artwork || null;
    emojiMap = info.emoji || {};
    $("top-k").max = String(info.classes.length);
  } catch (e) {
    $("model-name").textContent = "model info unavailable";
  }
}

function descriptions() {
  const views = {};
  for (const t of document.querySelectorAll("#describe textarea")) {
    if (t.value.trim()) views[t.dataset.view] = t.value.trim();
  }
  return Object.keys(views).length ? views : null;
}

// The query of several emotions per sticker: { query } ("" when none is asked for), or { error } naming the field
// the browser cannot read as a number in its range (sent as it is, the service would answer one emotion: not asked).
function selection() {
  const params = new URLSearchParams();
  const fields = [["top-k", "top_k", "at most K most probable"], ["min-probability", "min_probability", "probability at least"]];
  for (const [id, name, title] of fields) {
    const input = $(id);
    if (!input.validity.valid) {
      return { error: `"${title}": ${input.validationMessage || "not a number in range"} (${input.min}` +
        `${input.max ? " to " + input.max : " or more"})` };
    }
    if (input.value !== "") params.set(name, input.value);
  }
  const query = params.toString();
  return { query, topK: params.get("top_k"), minProbability: params.get("min_probability") };
}

function readImage(file) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error("the browser cannot display this file"));
    img.src = URL.createObjectURL(file);
  });
}

// Nothing of an earlier sticker stays on the page once a new one is asked for: its answer, or an error, replaces it.
function clearResult() {
  current = null;
  $("result").hidden = true;
  for (const id of ["label", "confidence", "calibration", "view-source", "emoji-credit", "chosen-rule"]) $(id).textContent = "";
  for (const id of ["emoji", "probs", "views", "emotions"]) $(id).replaceChildren();
  $("chosen-box").hidden = true;
  draw();
}

// The artwork file of one emoji: its code points in lower-case hex joined by "-", without U+FE0F (Twemoji's names).
function emojiFile(emoji) {
  return Array.from(emoji).map((c) => c.codePointAt(0).toString(16)).filter((h) => h !== "fe0f").join("-") + ".svg";
}

// One emoji: the service's artwork when it serves some (no emoji font needed), else the character.
function emojiNode(emoji) {
  if (!emojiArtwork) return document.createTextNode(emoji + " ");
  const img = document.createElement("img");
  img.className = "emoji";
  img.alt = emoji;
  img.title = emoji;
  img.src = `/emoji/${emojiFile(emoji)}`;
  img.addEventListener("error", () => img.replaceWith(document.createTextNode(emoji)));
  return img;
}

function showEmoji(list) {
  $("emoji").replaceChildren(...list.map(emojiNode));
  $("emoji-credit").textContent = emojiArtwork && list.length ? ` · emoji: ${emojiArtwork}` : "";
}

// Every chosen emotion, most probable first, with its probability and its class's emoji (none where the model maps
// none); an empty choice (no emotion reached the minimum probability) is said, not left blank.
function showEmotions(emotions, sel) {
  const rule = [sel.topK ? `at most ${sel.topK}` : "", sel.minProbability ? `p ≥ ${sel.minProbability}` : ""];
  $("chosen-rule").textContent = `(${rule.filter(Boolean).join(", ")})`;
  const list = $("emotions");
  list.replaceChildren();
  for (const e of emotions) {
    const li = document.createElement("li");
    li.dataset.class = e.label;
    li.dataset.probability = String(e.probability);
    const emoji = document.createElement("span");
    emoji.className = "emo";
    if (emojiMap[e.label]) { emoji.dataset.emoji = emojiMap[e.label]; emoji.append(emojiNode(emojiMap[e.label])); }
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = e.label;
    const pct = document.createElement("span");
    pct.className = "pct";
    pct.textContent = `${(100 * e.probability).toFixed(1)}%`;
    li.append(emoji, name, pct);
    list.append(li);
  }
  if (!emotions.length) {
    const li = document.createElement("li");
    li.className = "none";
    li.textContent = "no emotion reaches the minimum probability";
    list.append(li);
  }
  $("chosen-box").hidden = false;
}

async function predict(file) {
  clearResult();
  lastFile = file;
  const mine = ++asked;
  const sel = selection();
  if (sel.error) {
    setStatus(`Several emotions per sticker: ${sel.error}`, true);
    return;
  }
  setStatus(`Reading ${file.name} …`, false);
  const form = new FormData();
  form.append("files", file, file.name);
  const d = descriptions();
  if (d) form.append("descriptions", JSON.stringify([d]));
  const headers = {};
  const key = $("api-key").value;
  if (key) headers["X-API-Key"] = key;
  let response;
  try {
    response = await fetch("/v1/predict" + (sel.query ? `?${sel.query}` : ""), { method: "POST", body: form, headers });
  } catch (e) {
    if (mine === asked) setStatus(`The service cannot be reached: ${e.message}`, true);
    return;
  }
  const body = await response.json().catch(() => ({}));
  if (mine !== asked) return;
  if (!response.ok) {
    const detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail || body);
    setStatus(`Error ${response.status}: ${detail}`, true);
    if (response.status === 401) $("key-row").hidden = false;
    return;
  }
  const prediction = body.predictions[0];
  let image = null;
  try { image = await readImage(file); } catch (e) { /* shown without the picture */ }
  if (mine !== asked) return;
  current = { image, prediction, sel };
  render();
  setStatus(`${file.name}: done`, false);
}

function render() {
  const { prediction: p } = current;
  $("result").hidden = false;
  $("label").textContent = p.label;
  $("confidence").textContent = `${(100 * p.confidence).toFixed(1)}%`;
  showEmoji(p.emoji || []);
  if (current.sel.query) showEmotions(p.emotions || [], current.sel);
  // which temperature (views or bare image) was applied, or why none was
  $("calibration").textContent = p.calibrated
    ? `(calibrated on the validation split ${p.input_condition === "bare" ? "for images without views" : "with views"}: ` +
      `70% means right about 70% of the time; T = ${Number(p.temperature).toFixed(2)})`
    : `(${p.calibration || "uncalibrated"}: the model's raw confidence)`;
  const probs = $("probs");
  probs.replaceChildren();
  const entries = Object.entries(p.probabilities).sort((a, b) => b[1] - a[1]);
  for (const [name, value] of entries) {
    const li = document.createElement("li");
    li.dataset.class = name;
    if (name === p.label) li.className = "top";
    li.innerHTML = `<span class="name"></span><span class="track"><span class="fill"></span></span><span class="pct"></span>`;
    li.querySelector(".name").textContent = name;
    li.querySelector(".fill").style.width = `${(100 * value).toFixed(1)}%`;
    li.querySelector(".pct").textContent = `${(100 * value).toFixed(1)}%`;
    probs.appendChild(li);
  }
  const sources = { given: "(written by you)", interpreter: "(from the interpreter)", absent: "(none: image alone)" };
  $("view-source").textContent = sources[p.view_source] || "";
  const views = $("views");
  views.replaceChildren();
  const weights = (p.explanation && p.explanation.view_weights) || {};
  for (const view of Object.keys(TITLES)) {
    const li = document.createElement("li");
    li.dataset.view = view;
    const text = p.views[view];
    const w = weights[view];
    li.innerHTML = `<div class="head"><span></span><span class="weight"></span></div><div></div>`;
    li.querySelector(".head span").textContent = TITLES[view];
    li.querySelector(".weight").textContent = w === undefined ? "" : `fusion weight ${(100 * w).toFixed(1)}%`;
    const body = li.lastChild;
    body.className = text ? "text" : "absent";
    body.textContent = text ? text.replace(/^The sticker's [^:]*:\s*/, "") : "absent";
    views.appendChild(li);
  }
  draw();
}

function draw() {
  const canvas = $("view");
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (!current || !current.image) return;
  const { image, prediction: p } = current;
  const [w, h] = p.size;
  const scale = Math.min(canvas.width / w, canvas.height / h);
  const dx = (canvas.width - w * scale) / 2, dy = (canvas.height - h * scale) / 2;
  ctx.drawImage(image, dx, dy, w * scale, h * scale);
  if (!$("show-heat").checked || !p.explanation) return;
  const heat = p.explanation.heatmap;
  const rows = heat.length, cols = heat[0].length;
  const cells = document.createElement("canvas");
  cells.width = cols; cells.height = rows;
  const cctx = cells.getContext("2d");
  const data = cctx.createImageData(cols, rows);
  for (let y = 0; y < rows; y++) {
    for (let x = 0; x < cols; x++) {
      const v = Math.max(0, Math.min(1, heat[y][x]));
      const k = 4 * (y * cols + x);
      data.data[k] = 255; data.data[k + 1] = Math.round(80 * (1 - v)); data.data[k + 2] = 0;
      data.data[k + 3] = Math.round(255 * 0.55 * v);
    }
  }
  cctx.putImageData(data, 0, 0);
  const [l, t, r, b] = p.explanation.crop_box;
  ctx.imageSmoothingEnabled = true;
  ctx.drawImage(cells, dx + l * scale, dy + t * scale, (r - l) * scale, (b - t) * scale);
}

function setup() {
  const drop = $("drop");
  $("file").addEventListener("change", (e) => { if (e.target.files.length) predict(e.target.files[0]); });
  for (const ev of ["dragenter", "dragover"]) {
    drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const ev of ["dragleave", "drop"]) {
    drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.remove("over"); });
  }
  drop.addEventListener("drop", (e) => { if (e.dataTransfer.files.length) predict(e.dataTransfer.files[0]); });
  $("show-heat").addEventListener("change", draw);
  for (const id of ["top-k", "min-probability"]) {
    $(id).addEventListener("change", () => { if (lastFile) predict(lastFile); });
  }
  loadModelInfo();
}

setup();
