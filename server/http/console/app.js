// The cnnserve console: what a served model sees. Plain ES modules, no framework, no build step.
import { api, ApiError, getToken, onUnauthorized, pngUrl, setToken, toBase64 } from "./api.js";
import { drawChart, History, SERIES } from "./stats.js";

const METHODS = [
  { id: "gradcam", title: "Grad-CAM" },
  { id: "gradcam_plus_plus", title: "Grad-CAM++" },
  { id: "score_cam", title: "Score-CAM" },
  { id: "grad_x_activation", title: "Gradient × activation" },
];
const SAMPLES = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];
const STATS_EVERY_MS = 2000;

const $ = (id) => document.getElementById(id);
const state = {
  models: new Map(), // name -> {name, versions, ready, inputShape, classes, explain}
  image: null, // {bytes, type, base64, url, name}
  result: null, // the classify answer
  target: null, // the class the heatmaps explain
  runs: { classify: 0, heatmaps: 0, activations: 0, filters: 0 }, // newest request wins
  history: new History(),
};

// ---- small helpers -------------------------------------------------------------------------------------

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("data-") || key.startsWith("aria-") || key === "role") node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

function say(id, text, kind = "") {
  const node = $(id);
  node.textContent = text;
  node.className = `message ${kind}`.trim();
}

function words(err) {
  return err instanceof ApiError || err instanceof Error ? err.message : String(err);
}

function explainerWords(err) {
  if (err instanceof ApiError && err.status === 503)
    return `The explainer is unavailable, so there are no explanations right now; classification still works. (${err.message})`;
  return words(err);
}

const fmt = (x, digits = 3) => (x === null || x === undefined ? "–" : Number(x).toFixed(digits));
const shapeText = (shape) => (shape && shape.length ? `[${shape.join(", ")}]` : "–");

function selected() {
  return state.models.get($("model-select").value) || null;
}

function fillSelect(select, options, value) {
  select.replaceChildren(...options.map(([v, label]) => el("option", { value: v, text: label })));
  if (options.some(([v]) => v === value)) select.value = value;
  select.disabled = options.length === 0;
}

// ---- token ---------------------------------------------------------------------------------------------

function askForToken(err) {
  const form = $("token-form");
  $("token-reason").textContent = getToken()
    ? `The server refused the token this tab holds: ${err.message}`
    : `The server answered that it needs a bearer token: ${err.message}`;
  if (form.hidden) {
    form.hidden = false;
    $("token-input").focus();
  }
}

function setupToken() {
  onUnauthorized(askForToken);
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    setToken($("token-input").value.trim());
    $("token-input").value = "";
    $("token-form").hidden = true;
    $("token-open").hidden = false;
    loadModels();
  });
  $("token-forget").addEventListener("click", () => {
    setToken("");
    $("token-open").hidden = true;
    $("token-input").focus();
  });
  $("token-open").addEventListener("click", () => {
    $("token-form").hidden = false;
    $("token-input").focus();
  });
  $("token-open").hidden = !getToken();
}

// ---- models --------------------------------------------------------------------------------------------

function explainText(explain) {
  if (!explain) return "–";
  if (explain.status === "yes") return `yes (heatmap layer ${explain.layers.default_heatmap_layer || "?"})`;
  if (explain.status === "down") return "explainer unavailable";
  return `no: ${explain.message}`;
}

async function probeExplainer(model) {
  try {
    const layers = await api.layers(model.name);
    model.explain = { status: "yes", layers };
  } catch (err) {
    model.explain = { status: err.status === 503 ? "down" : "no", message: explainerWords(err), error: err };
  }
  return model.explain;
}

async function describe(model) {
  try {
    const meta = await api.modelMetadata(model.name);
    const input = meta.inputs?.[0];
    const output = meta.outputs?.[0];
    model.inputShape = input ? input.shape : null;
    model.inputType = input ? input.datatype : null;
    model.classes = output && output.shape?.length ? output.shape[output.shape.length - 1] : null;
  } catch (err) {
    model.metaError = words(err);
  }
  await probeExplainer(model);
}

function renderModels() {
  const body = $("models-table").tBodies[0];
  const rows = [];
  for (const model of state.models.values()) {
    const states = [...new Set(model.versions.map((v) => v.state || "UNKNOWN"))];
    const reasons = model.versions.filter((v) => v.reason).map((v) => (v.version ? `version ${v.version}: ` : "") + v.reason);
    rows.push(
      el(
        "tr",
        { "data-model": model.name },
        el("th", { scope: "row", text: model.name }),
        el("td", { text: model.versions.map((v) => v.version || "–").join(", ") }),
        el(
          "td",
          {},
          ...states.map((s) => el("span", { class: `state-${s}`, text: s + " " })),
          ...reasons.map((r) => el("span", { class: "reason", text: r })),
        ),
        el("td", { text: model.metaError ? `unknown: ${model.metaError}` : shapeText(model.inputShape) }),
        el("td", { text: model.classes ?? "–" }),
        el("td", { text: explainText(model.explain) }),
      ),
    );
  }
  body.replaceChildren(...rows);
  $("models-table").hidden = rows.length === 0;
  const ready = [...state.models.values()].filter((m) => m.ready);
  const keep = $("model-select").value;
  fillSelect(
    $("model-select"),
    ready.map((m) => [m.name, m.name]),
    keep || ready[0]?.name,
  );
  fillSelect(
    $("stats-model"),
    ready.map((m) => [m.name, m.name]),
    $("stats-model").value || $("model-select").value || ready[0]?.name,
  );
  if (!ready.length) fillSelect($("model-select"), [["", "(no model ready)"]], "");
  $("model-select").disabled = ready.length === 0;
}

async function loadModels() {
  say("models-message", "Loading the repository index…");
  // Liveness and the server's name; readiness is said per model below (the index has each one's state).
  try {
    await api.live();
    const meta = await api.serverMetadata();
    say("server-status", `Connected to ${meta.name ?? "the server"} ${meta.version ?? ""}`.trim() + ".");
  } catch (err) {
    say("server-status", `The server is not answering: ${words(err)}`, "error");
  }
  let index;
  try {
    index = await api.repositoryIndex();
  } catch (err) {
    say("models-message", `Could not list the models: ${words(err)}`, "error");
    return;
  }
  const models = new Map();
  for (const entry of Array.isArray(index) ? index : []) {
    const model = models.get(entry.name) ?? { name: entry.name, versions: [], ready: false };
    model.versions.push({ version: entry.version ?? "", state: entry.state ?? "", reason: entry.reason ?? "" });
    model.ready ||= entry.state === "READY";
    models.set(entry.name, model);
  }
  state.models = models;
  await Promise.all([...models.values()].filter((m) => m.ready).map(describe));
  renderModels();
  const broken = [...models.values()].filter((m) => !m.ready).length;
  say(
    "models-message",
    models.size
      ? `${models.size} model${models.size === 1 ? "" : "s"} in the repository` +
          (broken ? `, ${broken} not ready (the reason is beside each).` : ".")
      : "The repository is empty.",
    broken ? "warn" : "",
  );
  modelChanged();
}

// ---- classify ------------------------------------------------------------------------------------------

async function useFile(file) {
  if (!file) return;
  const bytes = await file.arrayBuffer();
  setImage(bytes, file.type || "application/octet-stream", file.name);
}

function setImage(bytes, type, name) {
  if (state.image?.url) URL.revokeObjectURL(state.image.url);
  const url = URL.createObjectURL(new Blob([bytes], { type }));
  state.image = { bytes, type, name, url, base64: toBase64(bytes) };
  classify();
}

async function classify() {
  const model = selected();
  if (!state.image) return;
  if (!model) {
    say("classify-message", "No model is ready to classify with: see the models list above.", "error");
    return;
  }
  const run = ++state.runs.classify;
  const topK = Math.max(1, Math.min(100, Number($("topk-input").value) || 5));
  say("classify-message", `Classifying ${state.image.name} with ${model.name}…`);
  const started = performance.now();
  let answer;
  try {
    answer = await api.classify(model.name, "", state.image.bytes, state.image.type, topK);
  } catch (err) {
    if (run === state.runs.classify) say("classify-message", `Classification failed: ${words(err)}`, "error");
    return;
  }
  const latency = performance.now() - started;
  if (run !== state.runs.classify) return;
  state.result = answer;
  const top = answer.predictions[0];
  say(
    "classify-message",
    `${model.name} version ${answer.model_version} says “${top.label}” (${(top.score * 100).toFixed(1)} %).`,
  );
  $("original-image").src = state.image.url;
  $("original-image").alt = `The image you sent: ${state.image.name}`;
  const seen = $("model-input");
  if (answer.input_png) {
    seen.src = pngUrl(answer.input_png);
    const shape = model.inputShape ? shapeText(model.inputShape.slice(-3)) : "";
    seen.alt = `The image as ${model.name} sees it, after resizing and colour conversion ${shape}`;
    $("model-input-caption").textContent = `As ${model.name} sees it ${shape}`;
  } else {
    seen.removeAttribute("src");
    seen.alt = "The server did not send the image as the model sees it";
  }
  $("latency").textContent = `Latency: ${latency.toFixed(1)} ms for the classify call, measured in this browser.`;
  renderPredictions(answer.predictions, top.index);
  $("classify-result").hidden = false;
  explainClass(top.index);
  runActivations();
}

function renderPredictions(predictions, target) {
  const items = predictions.map((p) => {
    const percent = Math.max(0, Math.min(100, p.score * 100));
    const button = el(
      "button",
      {
        type: "button",
        class: "pred",
        "data-index": String(p.index),
        "aria-pressed": String(p.index === target),
        "aria-label": `${p.label}: score ${p.score.toFixed(4)}. Explain this class.`,
      },
      el("span", { class: "label", text: p.label }),
      el("span", { class: "bar", "aria-hidden": "true" }, el("span", { style: `width:${percent}%` })),
      el("span", { class: "score", text: p.score.toFixed(4) }),
    );
    button.addEventListener("click", () => explainClass(p.index));
    return el("li", {}, button);
  });
  $("predictions").replaceChildren(...items);
}

// ---- heatmaps ------------------------------------------------------------------------------------------

// Faithfulness scores (issue 18): the heatmap answer's own `faithfulness`, else the ListLayers entry of this
// layer and method. Absent for models that were not scored: then nothing is shown.
const FAITHFULNESS = [
  ["score", "faithfulness score"],
  ["deletion_auc", "deletion AUC ↓"],
  ["insertion_auc", "insertion AUC ↑"],
  ["pointing_game", "points at ink"],
  ["heat_ratio", "heat on / off ink"],
];

function faithfulness(layers, answer, layer, method) {
  const entry =
    answer?.faithfulness ??
    (layers?.faithfulness || []).find((f) => f.layer === layer && (f.method ?? method) === method);
  if (!entry) return [];
  const rows = FAITHFULNESS.filter(([key]) => typeof entry[key] === "number").map(([key, name]) => [name, fmt(entry[key])]);
  if (typeof entry.passes_randomisation === "boolean")
    rows.push(["randomisation check", entry.passes_randomisation ? "passed" : "failed"]);
  return rows;
}

function heatmapCard(method) {
  const base = el("img", { class: "pixelated base", alt: "" });
  const overlay = el("img", { class: "pixelated overlay", alt: "" });
  overlay.style.opacity = $("opacity").value;
  const card = el(
    "article",
    { class: "card heatmap", "data-method": method.id },
    el("h3", { text: method.title }),
    el("div", { class: "stack" }, base, overlay),
    el("p", { class: "message", role: "status", text: "Waiting for the explainer…" }),
    el("dl", { class: "scores" }),
  );
  return { card, base, overlay, message: card.querySelector(".message"), scores: card.querySelector(".scores") };
}

function spatialLayers(model) {
  return (model?.explain?.layers?.layers || []).filter((l) => l.spatial);
}

function fillLayerSelects(model) {
  const spatial = spatialLayers(model).map((l) => [l.name, `${l.name} (${l.class_name} ${shapeText(l.output_shape)})`]);
  const heatmapDefault = model?.explain?.layers?.default_heatmap_layer;
  fillSelect($("heatmap-layer"), spatial, heatmapDefault);
  // Activations open on the first convolution (the input and rescaling layers show only the image itself).
  const firstConv = spatialLayers(model).find((l) => /conv/i.test(l.class_name))?.name ?? heatmapDefault;
  fillSelect($("activation-layer"), spatial, $("activation-layer").value || firstConv);
  fillSelect($("filter-layer"), spatial, $("filter-layer").value || heatmapDefault);
  $("filter-run").disabled = spatial.length === 0;
}

async function explainable(model) {
  if (model.explain?.status !== "yes") {
    await probeExplainer(model);
    renderModels();
    fillLayerSelects(model);
  }
  return model.explain;
}

function showUnavailable(gridId, messageId, text, cards = 0) {
  say(messageId, text, "error");
  const grid = $(gridId);
  if (!grid) return;
  grid.replaceChildren();
  for (const method of METHODS.slice(0, cards)) {
    const card = heatmapCard(method);
    card.message.textContent = text;
    card.message.className = "message error";
    card.card.querySelector(".stack").remove();
    grid.append(card.card);
  }
}

async function explainClass(target) {
  const model = selected();
  if (!model || !state.image || !state.result) return;
  const run = ++state.runs.heatmaps;
  state.target = target;
  for (const b of document.querySelectorAll("#predictions .pred"))
    b.setAttribute("aria-pressed", String(Number(b.dataset.index) === target));
  const explain = await explainable(model);
  if (run !== state.runs.heatmaps) return;
  if (explain.status !== "yes") {
    showUnavailable("heatmap-grid", "heatmaps-message", explain.message, METHODS.length);
    return;
  }
  const layer = $("heatmap-layer").value;
  const label = state.result.predictions.find((p) => p.index === target)?.label ?? String(target);
  say("heatmaps-message", `Explaining class “${label}” at layer ${layer || "(default)"}…`);
  const cards = METHODS.map(heatmapCard);
  const defaultMethod = model.explain.layers.default_heatmap_method;
  for (const [i, method] of METHODS.entries())
    if (method.id === defaultMethod) cards[i].card.querySelector("h3").append(el("span", { class: "hint", text: " (default)" }));
  $("heatmap-grid").replaceChildren(...cards.map((c) => c.card));
  const baseUrl = $("model-input").src;
  let failures = 0;
  await Promise.all(
    METHODS.map(async (method, i) => {
      const card = cards[i];
      if (baseUrl) card.base.src = baseUrl;
      card.base.alt = `The image as ${model.name} sees it`;
      const body = { image: state.image.base64, method: method.id, target_class: target, overlay_alpha: 1.0 };
      if (layer) body.layer = layer;
      try {
        const answer = await api.heatmap(model.name, body);
        if (run !== state.runs.heatmaps) return;
        card.overlay.src = pngUrl(answer.overlay_png);
        card.overlay.alt = `${method.title} heatmap of class “${label}” at layer ${answer.layer}: warm colours mark what raised its score`;
        const score = answer.target_score ?? answer.predicted_score;
        card.message.textContent = `Class “${label}” (score ${fmt(score)}) at ${answer.layer}`;
        card.message.className = "message";
        const scores = faithfulness(model.explain.layers, answer, answer.layer, method.id);
        card.scores.replaceChildren(...scores.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
        if (scores.length) {
          card.scores.setAttribute("aria-label", "Faithfulness of this layer and method, scored at export");
          card.scores.title =
            "Scored at export on held-out samples: ↓ lower is better, ↑ higher is better; a map that fails the " +
            "randomisation check does not depend on the weights and cannot be the default";
        }
      } catch (err) {
        if (run !== state.runs.heatmaps) return;
        failures++;
        card.card.querySelector(".stack").remove();
        card.message.textContent = explainerWords(err);
        card.message.className = "message error";
        if (err.status === 503) model.explain = { status: "down", message: explainerWords(err) };
      }
    }),
  );
  if (run !== state.runs.heatmaps) return;
  if (failures === METHODS.length && model.explain.status === "down") say("heatmaps-message", model.explain.message, "error");
  else
    say(
      "heatmaps-message",
      `Heatmaps of class “${label}” at layer ${layer}` +
        (failures ? `: ${failures} of ${METHODS.length} methods failed (said below).` : ". Choose another class above to explain it."),
      failures ? "warn" : "",
    );
}

// ---- activations ---------------------------------------------------------------------------------------

async function runActivations() {
  const model = selected();
  if (!model || !state.image) return;
  const run = ++state.runs.activations;
  const explain = await explainable(model);
  if (run !== state.runs.activations) return;
  if (explain.status !== "yes") {
    $("activation-figure").hidden = true;
    say("activations-message", explain.message, "error");
    return;
  }
  const layer = $("activation-layer").value;
  say("activations-message", `Computing the channel maps of ${layer}…`);
  try {
    const answer = await api.activations(model.name, { image: state.image.base64, layer });
    if (run !== state.runs.activations) return;
    const img = $("activation-grid");
    img.src = pngUrl(answer.grid_png);
    const dead = answer.dead_channels || [];
    const channels = answer.channels || [];
    img.alt = `Activation maps of layer ${answer.layer}: ${channels.length} channels, ${answer.grid_columns} per row`;
    const columns = answer.grid_columns || 1;
    const rows = Math.max(1, Math.ceil(channels.length / columns));
    $("dead-marks").replaceChildren(
      ...dead.map((channel) => {
        const position = channels.indexOf(channel);
        const mark = el("span", { class: "dead", text: `dead ${channel}`, title: `channel ${channel} is dead` });
        Object.assign(mark.style, {
          left: `${((position % columns) / columns) * 100}%`,
          top: `${(Math.floor(position / columns) / rows) * 100}%`,
          width: `${100 / columns}%`,
          height: `${100 / rows}%`,
        });
        return mark;
      }),
    );
    $("activation-caption").textContent =
      `${answer.layer}: ${channels.length} channels` +
      (dead.length ? `; dead (constant) channels, marked in red: ${dead.join(", ")}` : "; no dead channels for this image");
    $("activation-figure").hidden = false;
    say("activations-message", `Channel maps of ${answer.layer}, each scaled to its own range.`);
  } catch (err) {
    if (run !== state.runs.activations) return;
    $("activation-figure").hidden = true;
    say("activations-message", explainerWords(err), "error");
  }
}

// ---- filter patterns -----------------------------------------------------------------------------------

async function runFilters() {
  const model = selected();
  if (!model) return;
  const run = ++state.runs.filters;
  const explain = await explainable(model);
  if (run !== state.runs.filters) return;
  if (explain.status !== "yes") {
    say("filters-message", explain.message, "error");
    return;
  }
  const layer = $("filter-layer").value;
  const info = spatialLayers(model).find((l) => l.name === layer);
  const available = info?.output_shape?.length ? Number(info.output_shape[info.output_shape.length - 1]) : 8;
  const count = Math.max(1, Math.min(available, Number($("filter-count").value) || 8));
  const regularized = $("filter-regularized").checked;
  const grid = $("filter-grid");
  grid.replaceChildren();
  let done = 0;
  let failed = 0;
  say("filters-message", `Computing ${count} filter patterns of ${layer}; each appears as it arrives…`);
  // One filter per request, two at a time: patterns show as they arrive and the sidecar's admission is kept.
  const queue = [...Array(count).keys()];
  const worker = async () => {
    while (queue.length && run === state.runs.filters) {
      const filter = queue.shift();
      const card = el("figure", { class: "card pattern", "data-filter": String(filter) });
      grid.append(card);
      try {
        const answer = await api.filters(model.name, { layer, filters: [filter], regularized, seed: 0 });
        if (run !== state.runs.filters) return;
        const p = answer.patterns[0];
        card.append(
          el("img", {
            class: "pixelated",
            src: pngUrl(p.png),
            alt: `${regularized ? "Regularised pattern" : "Pattern"} that excites filter ${p.filter} of ${layer} most`,
          }),
          el("figcaption", { text: `filter ${p.filter}: ${fmt(p.activation)}${p.cached ? " (cached)" : ""}` }),
        );
        done++;
      } catch (err) {
        if (run !== state.runs.filters) return;
        failed++;
        card.append(el("figcaption", { class: "message error", text: `filter ${filter}: ${explainerWords(err)}` }));
      }
      say(
        "filters-message",
        `${done} of ${count} patterns of ${layer}${regularized ? " (regularised)" : ""}` + (failed ? `, ${failed} failed` : ""),
        failed ? "warn" : "",
      );
    }
  };
  await Promise.all([worker(), worker()]);
}

// ---- statistics ----------------------------------------------------------------------------------------

function setupCharts() {
  $("stats-charts").replaceChildren(
    ...SERIES.map((s) =>
      el(
        "figure",
        { class: "card chart", "data-series": s.key },
        el("h3", { text: `${s.title} (${s.unit})` }),
        el("canvas", { role: "img", "aria-label": `${s.title} over the last minutes` }),
        el("figcaption", { class: "now", text: "–" }),
      ),
    ),
  );
}

function drawStats() {
  const model = $("stats-model").value;
  const points = state.history.points(model);
  const now = Date.now();
  for (const s of SERIES) {
    const card = document.querySelector(`#stats-charts [data-series="${s.key}"]`);
    drawChart(card.querySelector("canvas"), points, s.key, now);
    const last = [...points].reverse().find((p) => p[s.key] !== null);
    card.querySelector(".now").textContent = last ? `now ${fmt(last[s.key], s.digits)} ${s.unit}` : "no requests yet";
  }
}

async function pollStats() {
  const ready = [...state.models.values()].filter((m) => m.ready);
  if (ready.length) {
    const results = await Promise.allSettled(ready.map((m) => api.modelStats(m.name)));
    const now = Date.now();
    const errors = [];
    results.forEach((r, i) => {
      if (r.status === "fulfilled") state.history.add(ready[i].name, now, r.value);
      else errors.push(`${ready[i].name}: ${words(r.reason)}`);
    });
    if (errors.length) say("stats-message", `Statistics unavailable for ${errors.join("; ")}`, "error");
    else
      say("stats-message", `Polled every ${STATS_EVERY_MS / 1000} s from /v2/models/{name}/stats; the charts show the last 5 minutes.`);
    drawStats();
  }
  setTimeout(pollStats, STATS_EVERY_MS);
}

// ---- wiring --------------------------------------------------------------------------------------------

function modelChanged() {
  const model = selected();
  if (model && [...$("stats-model").options].some((o) => o.value === model.name)) {
    $("stats-model").value = model.name; // the statistics follow the model being looked at
    drawStats();
  }
  fillLayerSelects(model);
  if (model && model.explain && model.explain.status !== "yes")
    say("heatmaps-message", model.explain.message, model.explain.status === "down" ? "error" : "warn");
  if (state.image) classify();
}

function setupSamples() {
  $("samples").replaceChildren(
    ...SAMPLES.map((digit) => {
      const button = el(
        "button",
        { type: "button", "data-sample": String(digit), "aria-label": `Classify the sample digit ${digit}` },
        el("img", { src: `samples/digit-${digit}.png`, alt: `Handwritten digit ${digit}`, class: "pixelated" }),
      );
      button.addEventListener("click", async () => {
        try {
          const response = await fetch(`samples/digit-${digit}.png`);
          if (!response.ok) throw new Error(`HTTP ${response.status}`);
          setImage(await response.arrayBuffer(), "image/png", `sample digit ${digit}`);
        } catch (err) {
          say("classify-message", `Could not load the sample digit ${digit}: ${words(err)}`, "error");
        }
      });
      return button;
    }),
  );
}

function setupDrop() {
  const zone = $("drop-zone");
  $("file-input").addEventListener("change", (e) => useFile(e.target.files[0]));
  zone.addEventListener("dragover", (e) => {
    e.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    useFile(e.dataTransfer.files[0]);
  });
}

function setup() {
  setupToken();
  setupSamples();
  setupDrop();
  setupCharts();
  $("models-refresh").addEventListener("click", loadModels);
  $("model-select").addEventListener("change", modelChanged);
  $("topk-input").addEventListener("change", () => state.image && classify());
  $("heatmap-layer").addEventListener("change", () => state.target !== null && explainClass(state.target));
  $("activation-layer").addEventListener("change", runActivations);
  $("filter-run").addEventListener("click", runFilters);
  $("stats-model").addEventListener("change", drawStats);
  $("opacity").addEventListener("input", (e) => {
    $("opacity-value").textContent = Number(e.target.value).toFixed(2);
    for (const img of document.querySelectorAll("#heatmap-grid img.overlay")) img.style.opacity = e.target.value;
  });
  loadModels().then(pollStats);
}

setup();
