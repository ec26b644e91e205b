// The dashboard's entry: the key, the views (#view=jobs|new|models|datasets, #job=ID)
// and the polling that keeps them live.
import { $, el, fmtTime } from "./dom.js";
import { api, session, setKey, ApiError } from "./api.js";
import { ACTIVE, renderJobs, renderJob } from "./jobs.js";
import { buildJobForm } from "./jobform.js";
import { buildUploadForm, renderLibrary } from "./library.js";
import { confirmAction } from "./confirm.js";

const VIEWS = ["jobs", "new", "models", "datasets"];
const route = { view: "jobs", job: null };
let timer = null, busy = false, shown = "", jobError = null;
let metrics = null, metricsKey = "", metricsAt = 0;
let full = null, fullKey = "";  // the whole job (spec, summary, stage details)

function readFragment() {
  const p = new URLSearchParams(location.hash.slice(1));
  if (p.get("key")) {
    setKey(p.get("key"));
    p.delete("key");
    history.replaceState(null, "", location.pathname + location.search + (p.toString() ? "#" + p : ""));
  }
  route.job = p.get("job");
  route.view = route.job ? "job" : VIEWS.includes(p.get("view")) ? p.get("view") : "jobs";
}

// --- the key ---
function askKey(message) {
  clearTimeout(timer);
  $("#app").hidden = true;
  $("#nav").hidden = true;
  $("#forget").hidden = true;
  $("#login").hidden = false;
  $("#loginerr").hidden = !message;
  $("#loginerr").textContent = message || "";
  $("#keyinput").focus();
}
session.onRefused = (e) => {
  setKey("");
  askKey(`The server refused the stored key (${e.detail}) Paste a valid one.`);
};
$("#login").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const key = $("#keyinput").value.trim();
  if (!key) { askKey("Paste an API key first."); return; }
  const button = $("#login button");
  button.disabled = true;
  try {
    await api("/v1/jobs?limit=1", { key });
    setKey(key);
    $("#keyinput").value = "";
    show();
  } catch (e) {
    askKey(e.status === 401 ? `That key was refused: ${e.detail}` : e.detail);
  } finally {
    button.disabled = false;
  }
});
$("#forget").addEventListener("click", () => { setKey(""); askKey(null); });

// --- views ---
function show() {
  $("#login").hidden = true;
  $("#app").hidden = false;
  $("#nav").hidden = false;
  $("#forget").hidden = false;
  for (const a of document.querySelectorAll("#nav a")) {
    const here = a.dataset.view === route.view || (a.dataset.view === "jobs" && route.view === "job");
    if (here) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  const main = $("#view");
  shown = "";
  jobError = null;
  metrics = null; metricsKey = "";
  full = null; fullKey = "";
  if (route.view === "new") {
    document.title = "New job · Stillhouse";
    buildJobForm(main, (job) => { location.hash = "job=" + encodeURIComponent(job.id); }).catch(failed);
    clearTimeout(timer);
    return;
  }
  if (route.view === "models" || route.view === "datasets") {
    const title = route.view === "models" ? "Models" : "Datasets";
    document.title = `${title} · Stillhouse`;
    main.replaceChildren(buildUploadForm(route.view, tick),
      el("section", { class: "card", "aria-labelledby": "h-list" }, el("h2", { id: "h-list" }, title), el("div", { id: "list" })));
  } else {
    document.title = route.view === "job" ? "Job · Stillhouse" : "Jobs · Stillhouse";
    main.replaceChildren(el("section", { class: "card", "aria-labelledby": "h-jobs" },
      route.view === "job" ? null : el("div", { class: "spread" }, el("h2", { id: "h-jobs" }, "Jobs"),
        el("a", { class: "btn primary", href: "#view=new" }, "Start a job")),
      el("div", { id: "list" }, el("p", { class: "muted" }, "Loading…"))));
  }
  tick();
}

function failed(e) {
  if (e instanceof ApiError && e.status === 401) return;
  $("#banner").textContent = e.detail || String(e);
  $("#banner").hidden = false;
}

async function download(job, fmt, button) {
  const label = button.textContent;
  button.textContent = "Downloading…";
  try {
    const r = await api("/v1/models/" + encodeURIComponent(job.student_model_id) + "/file?format=" + fmt, { raw: true });
    const blob = await r.blob();
    const m = /filename\*?=(?:UTF-8'')?"?([^";]+)"?/i.exec(r.headers.get("Content-Disposition") || "");
    const name = m ? decodeURIComponent(m[1]) : job.name.replace(/[^\w.-]+/g, "_") + "." + fmt;
    const url = URL.createObjectURL(blob);
    const a = el("a", { href: url, download: name });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  } catch (e) {
    failed(e);
  } finally {
    button.textContent = label;
  }
}

const actions = {
  download,
  cancel: (job) => confirmAction(`Cancel the job “${job.name}”?`, "Training stops at its next epoch; the epochs already run are kept in its curves.",
    "Cancel job", async () => { await api("/v1/jobs/" + encodeURIComponent(job.id) + "/cancel", { method: "POST" }); shown = ""; tick(); }),
};

// --- polling: every 2 s while something moves, else every 10 s ---
// Redraw only on change, so keyboard focus and scroll stay put between polls.
function redraw(state) {
  const text = JSON.stringify(state);
  if (text === shown) return false;
  shown = text;
  return true;
}

async function refresh() {
  const box = $("#list") || $("#view");
  if (route.view === "jobs") {
    const page = await api("/v1/jobs?limit=50");
    if (redraw(page)) renderJobs(box, page.items, !!page.next_cursor);
    return page.items.some((j) => ACTIVE.has(j.status));
  }
  if (route.view === "models" || route.view === "datasets") {
    const page = await api(`/v1/${route.view}?limit=100`);
    if (redraw(page)) renderLibrary(box, route.view, page.items, tick);
    return page.items.some((x) => x.status === "pending");
  }
  const id = route.job;
  // Polls read the light status (served from the gateway's cache); the whole job (spec,
  // summary, the stages' details) is fetched again only when the job or a stage moves on.
  const path = "/v1/jobs/" + encodeURIComponent(id);
  const status = await api(path + "/status");
  const fk = [id, status.status, ...status.stages.map((s) => `${s.status}:${s.attempts}`)].join("|");
  if (fk !== fullKey || !full) {
    full = await api(path);
    fullKey = fk;
  }
  const details = Object.fromEntries(full.stages.map((s) => [s.name, s]));
  const job = { ...full, ...status, stages: status.stages.map((s) => ({ ...details[s.name], ...s })) };
  // The whole series is fetched when the job moves (a stage, a run, a re-run); while it
  // trains, at most every 4 s, only the points of epochs after the run's last one held.
  const mk = [job.status, job.stage, job.training && job.training.run, job.attempt].join("|");
  if (mk !== metricsKey || (Date.now() - metricsAt > 3900 && ACTIVE.has(job.status))) {
    const path = "/v1/jobs/" + encodeURIComponent(id) + "/metrics";
    const since = mk === metricsKey ? lastEpoch(metrics, job.training && job.training.run) : null;
    metrics = since === null ? await api(path) : mergePoints(metrics, await api(path + "?since_epoch=" + since));
    metricsKey = mk;
    metricsAt = Date.now();
  }
  if (id !== route.job) return false;
  if (redraw([job, metrics && metrics.length, jobError])) {
    document.title = `${job.name} · Stillhouse`;
    renderJob($("#view"), job, metrics, { ...actions, error: jobError });
  }
  return ACTIVE.has(job.status);
}

// The last epoch of the run going on among the points held (the baseline's series are
// "baseline/..."), or null when it has none yet: then the whole series is fetched.
function lastEpoch(points, run) {
  if (!points) return null;
  const mine = points.filter((p) => p.name.startsWith("baseline/") === (run === "baseline"));
  return mine.length ? Math.max(...mine.map((p) => p.epoch)) : null;
}

// New points replace held ones of the same series and epoch (a re-run writes them again).
function mergePoints(held, fresh) {
  const again = new Set(fresh.map((p) => p.name + "@" + p.epoch));
  return held.filter((p) => !again.has(p.name + "@" + p.epoch)).concat(fresh);
}

async function tick() {
  clearTimeout(timer);
  if (busy || !session.key || route.view === "new") return;
  busy = true;
  let active = false;
  try {
    active = await refresh();
    $("#banner").hidden = true;
    $("#updated").textContent = "updated " + fmtTime(new Date());
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) { busy = false; return; }
    if (route.view === "job" && e.status === 404) jobError = e.detail;
    failed(e);
  }
  busy = false;
  if (!document.hidden && session.key) timer = setTimeout(tick, active ? 2000 : 10000);
}
document.addEventListener("visibilitychange", () => (document.hidden ? clearTimeout(timer) : tick()));
window.addEventListener("hashchange", () => { readFragment(); if (session.key) show(); });

readFragment();
if (session.key) show(); else askKey(null);
