// The stackgan page: a form for POST /api/generate and a table of GET /api/runs.
// Plain browser JavaScript, no build step and no outside resources.
"use strict";

const $ = (id) => document.getElementById(id);

function setStatus(text, isError = false) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("error", isError);
}

async function getJSON(url, options) {
  const response = await fetch(url, options);
  let body = null;
  try {
    body = await response.json();
  } catch {
    throw new Error(`${response.status} ${response.statusText}`);
  }
  if (!response.ok) throw new Error(body && body.error ? body.error : response.statusText);
  return body;
}

// --- the model -------------------------------------------------------------------------
async function showModel() {
  try {
    const health = await getJSON("/api/health");
    const model = health.model;
    const trained = model.dataset ? `, trained on ${model.dataset}` : "";
    const epoch = model.epoch !== null && model.epoch !== undefined ? `, epoch ${model.epoch}` : "";
    $("model").textContent = `${model.label}${trained}${epoch} on ${model.device}: ${model.path}`;
    const size = $("size");
    size.replaceChildren(
      ...model.sizes.map((side) => new Option(`${side}×${side}`, String(side))),
    );
    size.value = String(Math.max(...model.sizes));
    $("size-field").hidden = model.sizes.length < 2;
    $("stages-field").hidden = !model.stages;
    $("attention-field").hidden = !model.attention;
    size.addEventListener("change", syncStages);
    syncStages();
    $("n").max = String(health.limits.max_n);
  } catch (error) {
    $("model").textContent = `no model: ${error.message}`;
  }
}

// Stages side by side needs a smaller output to show: not at the smallest size.
function syncStages() {
  const size = $("size");
  const smallest = Math.min(...Array.from(size.options, (option) => Number(option.value)));
  $("stages").disabled = Number(size.value) === smallest;
  if ($("stages").disabled) $("stages").checked = false;
}

// Small grids (64-px images) are shown enlarged, pixels kept sharp, when there is room.
function fitGrid() {
  const grid = $("grid");
  const room = $("generate-view").clientWidth;
  const scale = grid.naturalWidth > 0 && grid.naturalWidth * 2 <= room ? 2 : 1;
  grid.style.width = scale > 1 ? `${grid.naturalWidth * scale}px` : "";
  grid.classList.toggle("enlarged", scale > 1);
}

// --- generate --------------------------------------------------------------------------
function readRequest() {
  const prompts = $("prompts").value.split("\n").map((line) => line.trim()).filter(Boolean);
  const request = { prompts, n: Number($("n").value) };
  if ($("seed").value !== "") request.seed = Number($("seed").value);
  if (!$("size-field").hidden) request.size = Number($("size").value);
  if (!$("stages-field").hidden && $("stages").checked) request.stages = true;
  if (!$("attention-field").hidden && $("attention").checked) request.attention = true;
  return request;
}

// AttnGAN's figures: one per sample, captioned, in prompt order.
function showAttention(result) {
  const box = $("attention-figures");
  const figures = (result.attention || []).flatMap((row, p) =>
    row.map((url, k) => {
      const image = document.createElement("img");
      image.src = url;
      image.alt = `attention maps of sample ${k + 1} of “${result.captions[p]}”`;
      image.className = "attention-figure";
      return image;
    }),
  );
  box.replaceChildren(...figures);
  $("attention-maps").hidden = figures.length === 0;
}

async function generate(event) {
  event.preventDefault();
  const request = readRequest();
  if (request.prompts.length === 0) {
    setStatus("type at least one caption", true);
    return;
  }
  const button = $("generate");
  button.disabled = true;
  const count = request.prompts.length * request.n;
  setStatus(`generating ${count} image${count === 1 ? "" : "s"}…`);
  const started = performance.now();
  try {
    const result = await getJSON("/api/generate", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(request),
    });
    $("grid").src = result.grid;
    $("download").href = result.grid;
    $("download").download = `stackgan-seed-${result.seed}.png`;
    $("seed-used").textContent = `seed ${result.seed}`;
    $("keep-seed").dataset.seed = String(result.seed);
    $("result").hidden = false;
    showAttention(result);
    const seconds = ((performance.now() - started) / 1000).toFixed(2);
    setStatus(`${count} image${count === 1 ? "" : "s"} at ${result.size}×${result.size} in ${seconds} s`);
  } catch (error) {
    setStatus(error.message, true);
  } finally {
    button.disabled = false;
  }
}

// --- runs ------------------------------------------------------------------------------
const number = (value, digits = 3) => (value === null || value === undefined ? "–" : value.toFixed(digits));

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const whole = Math.round(seconds);
  const h = Math.floor(whole / 3600);
  const m = Math.floor((whole % 3600) / 60);
  const s = String(whole % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function picture(row, url, alt) {
  const td = row.insertCell();
  const link = document.createElement("a");
  link.href = url;
  link.target = "_blank";
  const image = document.createElement("img");
  image.loading = "lazy";
  image.alt = alt;
  image.src = url;
  image.addEventListener("error", () => link.replaceWith("–"));
  link.append(image);
  td.append(link);
}

function regimeText(regime) {
  const entries = Object.entries(regime || {});
  if (entries.length === 0) return "defaults";
  return entries.map(([key, value]) => `${key.replaceAll("_", "-")} ${value}`).join(", ");
}

function evaluationText(evaluation) {
  if (!evaluation) return "–";
  const labels = { inception_score: "IS", fid: "FID", diversity: "div" };
  const parts = Object.entries(labels)
    .filter(([key]) => evaluation.metrics[key] !== null && evaluation.metrics[key] !== undefined)
    .map(([key, label]) => `${label} ${evaluation.metrics[key].toFixed(2)}`);
  return parts.join(", ") || "evaluated";
}

async function showRuns() {
  const status = $("runs-status");
  status.textContent = "loading the runs…";
  try {
    const runs = await getJSON("/api/runs");
    const table = document.createElement("table");
    const head = table.createTHead().insertRow();
    for (const title of ["run", "model", "dataset", "regime", "epochs", "time", "D / G / KL", "eval", "latest samples", "losses"]) {
      const th = document.createElement("th");
      th.textContent = title;
      head.append(th);
    }
    const body = table.createTBody();
    for (const run of runs) {
      const row = body.insertRow();
      const name = cell(row, run.name, "name");
      if (run.problems.length) {
        const note = document.createElement("div");
        note.className = "problems";
        note.textContent = run.problems.join("; ");
        name.append(note);
      }
      cell(row, run.model || "?");
      cell(row, run.dataset || "?");
      cell(row, regimeText(run.regime));
      cell(row, `${run.epochs_done ?? "–"}/${run.epochs_planned ?? "?"}`, "num");
      cell(row, duration(run.time_s), "num");
      cell(row, `${number(run.d_loss)} / ${number(run.g_loss)} / ${number(run.kl)}`, "num");
      cell(row, evaluationText(run.evaluation));
      const base = `/api/runs/${encodeURIComponent(run.name)}`;
      if (run.sample) picture(row, `${base}/sample.png`, `latest samples of ${run.name}`);
      else cell(row, "–");
      if (run.losses_plot || run.steps !== null) picture(row, `${base}/losses.png`, `losses of ${run.name}`);
      else cell(row, "–");
    }
    $("runs").replaceChildren(table);
    status.textContent = runs.length ? `${runs.length} run${runs.length === 1 ? "" : "s"}, newest first` : "no runs yet: train one with `stackgan train`";
  } catch (error) {
    status.textContent = `cannot list the runs: ${error.message}`;
  }
}

// --- views -----------------------------------------------------------------------------
function showView(name) {
  for (const tab of document.querySelectorAll(".tab")) {
    tab.setAttribute("aria-selected", String(tab.dataset.view === name));
  }
  $("generate-view").hidden = name !== "generate";
  $("runs-view").hidden = name !== "runs";
  if (name === "runs") showRuns();
}

document.addEventListener("DOMContentLoaded", () => {
  for (const tab of document.querySelectorAll(".tab")) {
    tab.addEventListener("click", () => showView(tab.dataset.view));
  }
  $("generate-form").addEventListener("submit", generate);
  $("grid").addEventListener("load", fitGrid);
  window.addEventListener("resize", fitGrid);
  $("keep-seed").addEventListener("click", () => {
    $("seed").value = $("keep-seed").dataset.seed || "";
  });
  $("prompts").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) $("generate-form").requestSubmit();
  });
  showModel();
});
