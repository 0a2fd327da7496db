// crdr serve: the page's logic. Plain browser JavaScript, no libraries.
//
// Flow: choosing an image or a q asks the server to encode (once per q), then decodes at the
// current beta and, in parallel, fits JPEG/WebP/AVIF to the same byte budget. Moving beta only
// decodes the cached bitstream again; the page says so and shows the unchanged size and hash.
// Responses that arrive after the sliders have moved on are dropped (keys compared).
"use strict";

const $ = (id) => document.getElementById(id);

const state = {
  config: null,
  image: null,
  q: 2,
  beta: 0,
  stream: null,
  decoded: null,
  baselines: {},
  qKey: "",
  betaKey: "",
  tasks: new Map(),
  taskCounter: 0,
  jobs: 0,
  timers: {},
  log: [],
};

// -- helpers -----------------------------------------------------------------------------------

const fixed = (value, digits) => (value === null || value === undefined ? "–" : Number(value).toFixed(digits));
const count = (value) => (value === null || value === undefined ? "–" : Number(value).toLocaleString("en-US"));
const seconds = (value) => `${Number(value).toFixed(2)} s`;
const psnrText = (value) => (value === null ? "∞" : fixed(value, 2));

async function api(method, url, body, headers) {
  const response = await fetch(url, { method, body, headers });
  const type = response.headers.get("content-type") || "";
  const payload = type.includes("json") ? await response.json() : null;
  if (!response.ok) {
    let message = payload && payload.detail;
    if (Array.isArray(message)) {
      message = message.map((item) => `${(item.loc || []).slice(-1)[0]}: ${item.msg}`).join("; ");
    }
    throw new Error(message || `${response.status} ${response.statusText}`);
  }
  return payload;
}

function query(params) {
  return new URLSearchParams(params).toString();
}

// -- progress ----------------------------------------------------------------------------------

function track(label, promise) {
  const id = ++state.taskCounter;
  state.tasks.set(id, label);
  renderProgress();
  return promise.finally(() => {
    state.tasks.delete(id);
    renderProgress();
  });
}

// A job spans a whole chain of requests, so the page reads busy until every result is shown.
async function job(work) {
  state.jobs += 1;
  renderProgress();
  try {
    await work();
  } catch (error) {
    showError(error.message);
  } finally {
    state.jobs -= 1;
    renderProgress();
  }
}

function renderProgress() {
  const busy = state.jobs > 0 || state.tasks.size > 0 || Object.keys(state.timers).length > 0;
  document.body.dataset.busy = busy ? "true" : "false";
  $("progress").classList.toggle("busy", busy);
  const labels = [...state.tasks.values()];
  $("progress-text").textContent = labels.length ? labels.join(" · ") : busy ? "working…" : "idle: all results shown";
}

function log(message) {
  state.log.unshift(message);
  state.log = state.log.slice(0, 12);
  $("log").replaceChildren(...state.log.map((text) => {
    const item = document.createElement("li");
    item.textContent = text;
    return item;
  }));
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

// Debounce a slider: the page counts as busy from the first move until the work is done.
function later(name, delay, work) {
  clearTimeout(state.timers[name]);
  state.timers[name] = setTimeout(() => {
    delete state.timers[name];
    work();
    renderProgress();
  }, delay);
  renderProgress();
}

// -- start -------------------------------------------------------------------------------------

async function start() {
  try {
    state.config = await api("GET", "/api/config");
  } catch (error) {
    showError(`cannot reach the server: ${error.message}`);
    document.body.dataset.busy = "false";
    return;
  }
  const { model, limits } = state.config;
  $("model-info").textContent =
    `model ${model.name} (id ${model.id.slice(0, 8)}), q ∈ [0, ${model.max_q}], β ∈ [0, ${model.max_beta}]`;
  $("upload-limits").textContent =
    `at most ${(limits.max_upload_bytes / 2 ** 20).toFixed(1)} MiB and ${(limits.max_pixels / 1e6).toFixed(1)} megapixels`;
  $("q").max = model.max_q;
  $("q").step = model.q_step;
  $("beta").max = model.max_beta;
  $("beta").step = model.max_beta / 128;
  state.q = Number($("q").value);
  state.beta = Number($("beta").value);
  renderSliders();
  buildSamples();
  buildSources();
  buildRows();
  bindControls();
  renderProgress();
  // ?sample=NAME picks the first image (a name from the list; anything else is ignored).
  const names = state.config.samples.map((sample) => sample.name);
  const asked = new URLSearchParams(window.location.search).get("sample");
  if (names.length) await openSample(names.includes(asked) ? asked : names[0]);
}

function buildSamples() {
  $("samples").replaceChildren(...state.config.samples.map((sample) => {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "sample";
    button.dataset.name = sample.name;
    button.title = sample.name;
    button.setAttribute("aria-pressed", "false");
    const thumbnail = document.createElement("img");
    thumbnail.src = sample.thumbnail_url;
    thumbnail.alt = sample.name;
    const label = document.createElement("span");
    label.textContent = sample.name;
    button.append(thumbnail, label);
    button.addEventListener("click", () => openSample(sample.name));
    return button;
  }));
}

function sourceNames() {
  return ["original", "crdr", ...state.config.codecs.map((codec) => codec.name)];
}

function buildSources() {
  for (const [id, chosen] of [["left-source", "original"], ["right-source", "crdr"]]) {
    $(id).replaceChildren(...sourceNames().map((name) => new Option(name, name, false, name === chosen)));
  }
}

function buildRows() {
  const body = $("results-body");
  for (const codec of state.config.codecs) {
    const row = document.createElement("tr");
    row.id = `row-${codec.name}`;
    const cells = ["name", "setting", "bytes", "bpp", "psnr", "stlpips", "time", "files"].map((field) => {
      const cell = document.createElement("td");
      cell.id = `${codec.name}-${field}`;
      cell.textContent = "–";
      return cell;
    });
    const show = document.createElement("button");
    show.type = "button";
    show.className = "show";
    show.dataset.source = codec.name;
    show.textContent = codec.name;
    show.title = codec.description;
    cells[0].replaceChildren(show);
    cells[6].className = "muted small";
    row.append(...cells);
    body.append(row);
  }
  body.addEventListener("click", (event) => {
    const button = event.target.closest("button.show");
    if (button) {
      $("left-source").value = button.dataset.source;
      renderCompare();
    }
  });
}

function bindControls() {
  $("q").addEventListener("input", () => {
    state.q = Number($("q").value);
    renderSliders();
    later("q", 200, () => job(() => refreshForQ()));
  });
  $("beta").addEventListener("input", () => {
    state.beta = Number(Number($("beta").value).toFixed(4));
    renderSliders();
    later("beta", 150, () => job(() => refreshForBeta(true)));
  });
  $("target-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const kilobytes = Number($("target-kb").value);
    if (!(kilobytes > 0)) {
      showError("type a target size in kB, e.g. 40");
      return;
    }
    job(() => refreshForQ(Math.round(kilobytes * 1000)));
  });
  $("upload").addEventListener("change", () => {
    const file = $("upload").files[0];
    if (file) job(() => upload(file));
  });
  for (const id of ["left-source", "right-source"]) $(id).addEventListener("change", renderCompare);
  $("zoom").addEventListener("change", () => {
    const zoom = Number($("zoom").value);
    $("compare").style.setProperty("--zoom", zoom);
    $("compare").classList.toggle("zoomed", zoom > 1);
  });
  $("split").addEventListener("input", () => setSplit(Number($("split").value)));
  bindCompareView();
}

// -- image choice ------------------------------------------------------------------------------

async function openSample(name) {
  await job(async () => {
    const info = await track(`opening ${name}…`, api("POST", `/api/images/sample?${query({ name })}`));
    await useImage(info);
  });
}

async function upload(file) {
  const limit = state.config.limits.max_upload_bytes;
  if (file.size > limit) {
    throw new Error(`${file.name} is ${(file.size / 2 ** 20).toFixed(1)} MiB; the limit is ${(limit / 2 ** 20).toFixed(1)} MiB`);
  }
  const headers = { "Content-Type": file.type || "application/octet-stream", "X-Filename": encodeURIComponent(file.name) };
  const info = await track(`uploading ${file.name}…`, api("POST", "/api/images/upload", file, headers));
  await useImage(info);
}

async function useImage(info) {
  showError("");
  state.image = info;
  state.stream = null;
  state.decoded = null;
  state.baselines = {};
  for (const button of document.querySelectorAll(".sample")) {
    button.setAttribute("aria-pressed", String(button.dataset.name === info.name));
  }
  const notes = info.notes.length ? ` (${info.notes.join("; ")})` : "";
  $("image-info").textContent = `${info.name}: ${info.width}×${info.height}${notes}`;
  $("compare").style.setProperty("--aspect", `${info.width} / ${info.height}`);
  log(`opened ${info.name} (${info.width}×${info.height})`);
  await refreshForQ();
}

// -- q: encode (once per q), then decode and baselines -----------------------------------------

async function refreshForQ(targetBytes) {
  if (!state.image) return;
  showError("");
  const image = state.image;
  const request = targetBytes ? { image: image.id, target_bytes: targetBytes } : { image: image.id, q: state.q };
  const key = `${image.id}|${targetBytes ? `target ${targetBytes}` : state.q}`;
  state.qKey = key;
  clearBaselines();
  const label = targetBytes ? `searching q for ≤ ${count(targetBytes)} bytes…` : `encoding at q = ${fixed(state.q, 2)}…`;
  const stream = await track(label, api("POST", `/api/encode?${query(request)}`));
  if (state.qKey !== key) return;
  if (targetBytes) {
    state.q = stream.q;
    $("q").value = stream.q;
    renderSliders();
    state.qKey = `${image.id}|${stream.q}`;
  }
  state.stream = stream;
  renderStream(stream);
  for (const note of stream.notes) log(`note: ${note}`);
  log(stream.cached
    ? `q = ${fixed(stream.q, 2)}: bitstream already encoded (${count(stream.bytes)} bytes), reused`
    : `encoded once at q = ${fixed(stream.q, 2)}: ${count(stream.bytes)} bytes in ${seconds(stream.seconds)}`);
  await Promise.all([refreshForBeta(false), refreshBaselines(state.qKey, stream)]);
}

// -- beta: decode the cached bitstream again ---------------------------------------------------

async function refreshForBeta(betaOnly) {
  if (!state.image) return;
  const image = state.image;
  const q = state.q;
  const beta = state.beta;
  const key = `${image.id}|${q}|${beta}`;
  state.betaKey = key;
  const previous = state.decoded;
  $("crdr-stlpips").textContent = "…";
  const decoded = await track(`decoding at β = ${fixed(beta, 2)}…`,
    api("GET", `/api/decode?${query({ image: image.id, q, beta })}`));
  if (state.betaKey !== key) return;
  state.decoded = decoded;
  renderDecoded(decoded, betaOnly ? previous : null);
  const measured = await track("ST-LPIPS of crdr…",
    api("GET", `/api/st-lpips?${query({ image: image.id, q, beta })}`));
  if (state.betaKey !== key) return;
  const cell = $("crdr-stlpips");
  cell.textContent = measured.st_lpips === null ? "n/a" : fixed(measured.st_lpips, 4);
  cell.title = measured.reason || "";
}

// -- baselines ---------------------------------------------------------------------------------

function clearBaselines() {
  state.baselines = {};
  for (const codec of state.config.codecs) {
    for (const field of ["setting", "bytes", "bpp", "psnr", "stlpips", "time", "files"]) {
      $(`${codec.name}-${field}`).textContent = field === "setting" ? "…" : "";
    }
    $(`row-${codec.name}`).classList.add("pending");
  }
  renderCompare();
}

async function refreshBaselines(key, stream) {
  $("results-caption").textContent =
    `JPEG, WebP and AVIF are encoded to at most ${count(stream.bytes)} bytes, the size of the crdr file (closest not above).`;
  await Promise.all(state.config.codecs.map(async (codec) => {
    let result;
    try {
      result = await track(`${codec.name}: fitting ≤ ${count(stream.bytes)} bytes…`,
        api("GET", `/api/baseline?${query({ image: stream.image, q: stream.q, codec: codec.name })}`));
    } catch (error) {
      result = { fits: false, message: error.message };
    }
    if (state.qKey !== key) return;
    state.baselines[codec.name] = result;
    renderBaseline(codec.name, result);
    if (!result.fits) return;
    const measured = await track(`ST-LPIPS of ${codec.name}…`, api("GET", result.st_lpips_url));
    if (state.qKey !== key) return;
    const cell = $(`${codec.name}-stlpips`);
    cell.textContent = measured.st_lpips === null ? "n/a" : fixed(measured.st_lpips, 4);
    cell.title = measured.reason || "";
  }));
}

function renderBaseline(name, result) {
  $(`row-${name}`).classList.remove("pending");
  const cell = (field) => $(`${name}-${field}`);
  if (!result.fits) {
    cell("setting").textContent = result.message || "does not fit";
    for (const field of ["bytes", "bpp", "psnr", "stlpips", "time", "files"]) cell(field).textContent = "–";
    renderCompare();
    return;
  }
  cell("setting").textContent = `quality ${result.quality}`;
  cell("bytes").textContent = count(result.bytes);
  cell("bpp").textContent = fixed(result.bpp, 4);
  cell("psnr").textContent = psnrText(result.psnr);
  cell("stlpips").textContent = "…";
  cell("time").textContent = result.cached ? "cached" : seconds(result.seconds);
  const link = document.createElement("a");
  link.className = "download";
  link.href = result.download_url;
  link.download = "";
  link.textContent = "file";
  cell("files").replaceChildren(link);
  renderCompare();
}

// -- rendering ---------------------------------------------------------------------------------

function renderSliders() {
  $("q-value").textContent = fixed(state.q, 2);
  $("beta-value").textContent = fixed(state.beta, 2);
}

function renderStream(stream) {
  $("stream-bytes").textContent = count(stream.bytes);
  $("stream-sha").textContent = `${stream.sha256.slice(0, 16)}…`;
  $("stream-sha").title = stream.sha256;
  $("stream-encodes").textContent = `${stream.encodes} for this image (one per q)`;
  $("crdr-bytes").textContent = count(stream.bytes);
  $("crdr-bpp").textContent = fixed(stream.bpp, 4);
  $("download-crdr").href = stream.download_url;
  $("same-stream").hidden = true;
}

function renderDecoded(decoded, previous) {
  $("crdr-setting").textContent = `q ${fixed(decoded.q, 2)}, β ${fixed(decoded.beta, 2)}`;
  $("crdr-bytes").textContent = count(decoded.bytes);
  $("crdr-bpp").textContent = fixed(decoded.bpp, 4);
  $("crdr-psnr").textContent = psnrText(decoded.psnr);
  $("crdr-time").textContent = decoded.cached ? "decode cached"
    : decoded.entropy_seconds ? `decode ${seconds(decoded.entropy_seconds + decoded.synthesis_seconds)}`
    : `synthesis ${seconds(decoded.synthesis_seconds)}`;
  $("stream-decodes").textContent =
    `${decoded.entropy_decodes} entropy (one per q), ${decoded.decodes} synthesis (one per q and β)`;
  $("stream-encodes").textContent = `${decoded.encodes} for this image (one per q)`;
  $("download-png").href = decoded.png_download_url;
  $("download-crdr").href = decoded.download_url;
  if (previous && previous.sha256 === decoded.sha256 && previous.beta !== decoded.beta) {
    const note = $("same-stream");
    note.textContent =
      `β ${fixed(previous.beta, 2)} → ${fixed(decoded.beta, 2)}: the same ${count(decoded.bytes)}-byte file ` +
      `(sha256 ${decoded.sha256.slice(0, 8)}…) was decoded again: its latents ŷ were reused and only ` +
      `the synthesis transform ran with the new β. No re-encode (still ${decoded.encodes} ` +
      `encode${decoded.encodes === 1 ? "" : "s"}).`;
    note.hidden = false;
    for (const element of [note, $("crdr-bytes"), $("stream-bytes")]) {
      element.classList.remove("flash");
      void element.offsetWidth; // restart the animation
      element.classList.add("flash");
    }
    log(`β = ${fixed(decoded.beta, 2)}: re-decoded the same bitstream (${count(decoded.bytes)} bytes) ` +
      (decoded.cached ? "from cache" : `in ${seconds(decoded.synthesis_seconds)} (synthesis only)`));
  } else {
    log(`decoded at β = ${fixed(decoded.beta, 2)}: PSNR ${psnrText(decoded.psnr)} dB`);
  }
  renderCompare();
}

function sourceInfo(name) {
  if (!state.image) return null;
  if (name === "original") return { url: state.image.original_url, tag: "original" };
  if (name === "crdr") {
    const decoded = state.decoded;
    return decoded && { url: decoded.image_url, tag: `crdr q ${fixed(decoded.q, 2)} β ${fixed(decoded.beta, 2)}, ${count(decoded.bytes)} B` };
  }
  const result = state.baselines[name];
  return result && result.fits ? { url: result.image_url, tag: `${name} quality ${result.quality}, ${count(result.bytes)} B` } : null;
}

function renderCompare() {
  for (const side of ["left", "right"]) {
    const info = sourceInfo($(`${side}-source`).value);
    const image = $(`${side}-img`);
    if (info) {
      if (image.getAttribute("src") !== info.url) image.src = info.url;
      $(`${side}-tag`).textContent = info.tag;
    } else {
      image.removeAttribute("src");
      $(`${side}-tag`).textContent = `${$(`${side}-source`).value}: waiting…`;
    }
  }
}

// -- split and zoom view -----------------------------------------------------------------------

function setSplit(percent) {
  const clamped = Math.min(100, Math.max(0, percent));
  $("compare").style.setProperty("--split", `${clamped}%`);
  $("split").value = clamped;
}

function bindCompareView() {
  const view = $("compare");
  let dragging = false;
  const position = (event) => {
    const box = view.getBoundingClientRect();
    return [((event.clientX - box.left) / box.width) * 100, ((event.clientY - box.top) / box.height) * 100];
  };
  view.addEventListener("pointerdown", (event) => {
    dragging = true;
    view.setPointerCapture(event.pointerId);
    setSplit(position(event)[0]);
  });
  view.addEventListener("pointermove", (event) => {
    const [x, y] = position(event);
    if (dragging) setSplit(x);
    if (Number($("zoom").value) > 1) {
      // Zoom about the pointer: the detail under it stays under it.
      view.style.setProperty("--ox", `${Math.min(100, Math.max(0, x))}%`);
      view.style.setProperty("--oy", `${Math.min(100, Math.max(0, y))}%`);
    }
  });
  for (const name of ["pointerup", "pointercancel"]) view.addEventListener(name, () => { dragging = false; });
}

document.addEventListener("DOMContentLoaded", start);
