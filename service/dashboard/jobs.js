// The jobs list and a job's page: progress of both training runs, stages, curves, report.
import { el, badge, bar, dash, fmtDuration, fmtInt, stageName, timeEl } from "./dom.js";
import { chart } from "./charts.js";
import { renderReport } from "./report.js";

export const ACTIVE = new Set(["queued", "running"]);
const plannedEpochs = (j) => (j.spec && j.spec.training && j.spec.training.epochs) || null;

// The training stage's runs, student then baseline, each with the epochs that really ran:
// [{run, epoch, epochs, state}], state one of training, done, waiting, stopped, not run.
export function trainingRuns(j) {
  if (j.kind === "inference") return [];
  const t = j.training || null;
  const epochs = (t && t.epochs) || plannedEpochs(j) || 0;
  const stage = (j.stages || []).find((s) => s.name === "training");
  const trained = stage && stage.status === "succeeded";
  const ended = !ACTIVE.has(j.status);
  const student = { run: "student", epochs, epoch: t && t.run === "student" ? t.epoch : j.epoch };
  const runs = [student];
  const baseline = j.spec && j.spec.baseline ? { run: "baseline", epochs, epoch: t && t.run === "baseline" ? t.epoch : 0 } : null;
  if (baseline) runs.push(baseline);
  const current = t ? (t.run === "baseline" && baseline ? baseline : student) : null;
  for (const r of runs) {
    if (trained) r.state = "done";
    else if (r === current) r.state = ended ? "stopped" : "training";
    else if (current === baseline && r === student) r.state = "done";
    else r.state = ended ? "not run" : "waiting";
  }
  return runs;
}

function runText(r, status) {
  const of = `epoch ${r.epoch} of ${r.epochs}`;
  if (r.state === "done") return r.epoch < r.epochs ? `${of}, done (stopped early)` : `${of}, done`;
  if (r.state === "stopped") return `${of}, ${status === "failed" ? "failed" : "cancelled"} here`;
  if (r.state === "training") return `${of}, training`;
  return r.state === "waiting" ? "waiting for the student" : "not run";
}

// The epoch of the run going on (or last run): "3/20", and "baseline" under it once the
// baseline trains.
export function epochCell(j) {
  const t = j.training;
  if (!t) return dash;
  return [`${t.epoch}/${t.epochs}`, t.run === "baseline" ? el("span", { class: "run-tag" }, "baseline") : null];
}

export function renderJobs(box, jobs, more) {
  if (!jobs.length) {
    box.replaceChildren(el("p", { class: "muted" }, "No jobs yet. ", el("a", { href: "#view=new" }, "Start one"), "."));
    return;
  }
  const rows = jobs.map((j) => el("tr", {},
    el("td", { class: "name" }, el("a", { href: "#job=" + encodeURIComponent(j.id), title: j.name }, j.name)),
    el("td", {}, badge(j.status)),
    el("td", {}, bar(j.progress, j.status, `${j.name} progress`)),
    el("td", { class: "small wide" }, stageName(j.stage)),
    el("td", { class: "num" }, epochCell(j)),
    el("td", { class: "small muted wide" }, timeEl(j.created_at))));
  box.replaceChildren(el("div", { class: "scroll" }, el("table", { class: "list" },
    el("caption", { class: "sr-only" }, "Jobs, newest first"),
    el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Name"), el("th", { scope: "col" }, "Status"),
      el("th", { scope: "col" }, "Progress"), el("th", { scope: "col", class: "wide" }, "Stage"),
      el("th", { scope: "col", class: "num" }, "Epoch"), el("th", { scope: "col", class: "wide" }, "Created"))),
    el("tbody", {}, rows))), ...(more ? [el("p", { class: "small muted" }, `The newest ${jobs.length} jobs.`)] : []));
}

function describeLosses(spec) {
  return (spec.losses || []).map((l) => l.name + " ×" + l.weight + (l.temperature != null ? " (T=" + l.temperature + ")" : "")).join(", ") || dash;
}
function describeStudent(spec) {
  if (spec.kind === "inference") return "batch inference of model " + spec.model_id;
  const s = spec.student || {};
  if (s.model_id) return "from model " + s.model_id;
  return (s.architecture || "?") + " " + JSON.stringify(s.params || {});
}

function renderStages(stages) {
  // One row a stage: where it ran, how often (a re-run means its worker died), how long.
  const rows = stages.map((st) => {
    const secs = st.started_at && st.finished_at ? (new Date(st.finished_at) - new Date(st.started_at)) / 1000 : null;
    const notes = [];
    if (st.attempts > 1) notes.push(`run ${st.attempts} times`);
    if (st.resumed_from_epoch) notes.push(`resumed from epoch ${st.resumed_from_epoch}`);
    const src = st.details && st.details.teacher_outputs;
    if (src) notes.push("teacher outputs: " + Object.entries(src).map(([k, v]) => `${k.replace(/_dataset_id$|_id$/, "")} ${v}`).join(", "));
    return el("tr", {}, el("td", {}, stageName(st.name)), el("td", {}, badge(st.status)),
      el("td", { class: "mono" }, st.pool ? st.pool + (st.device ? " · " + st.device : "") : dash),
      el("td", { class: "num" }, secs === null ? dash : fmtDuration(secs)),
      el("td", { class: "small wrap" }, notes.join(", ") || dash));
  });
  return el("div", { class: "scroll" }, el("table", { class: "report" }, el("thead", {}, el("tr", {},
    ["Stage", "Status", "Pool", "Time", "Notes"].map((h, i) => el("th", { scope: "col", class: i === 3 ? "num" : null }, h)))),
  el("tbody", {}, rows)));
}

function renderProgress(j) {
  const runs = trainingRuns(j);
  const items = [el("div", { class: "run" }, el("span", { class: "runname" }, "Job"), bar(j.progress, j.status, "job progress"),
    el("span", { class: "small muted" }, jobState(j)))];
  for (const r of runs) {
    const frac = r.state === "done" ? 1 : r.epochs ? r.epoch / r.epochs : 0;
    items.push(el("div", { class: "run", "data-run": r.run }, el("span", { class: "runname" }, r.run === "student" ? "Student" : "Baseline"),
      bar(frac, r.state === "stopped" ? j.status : r.state === "done" ? "succeeded" : "running", `${r.run} training progress`),
      el("span", { class: "small" }, runText(r, j.status))));
  }
  return el("div", { class: "runs" }, items);
}

function jobState(j) {
  if (ACTIVE.has(j.status)) return j.stage ? stageName(j.stage) : j.status;
  if (j.status === "succeeded") return "done";
  return j.stage ? `${j.status} during ${stageName(j.stage)}` : j.status;
}

export function renderJob(box, j, metrics, actions) {
  const spec = j.spec || {};
  const kids = [el("p", {}, el("a", { href: "#view=jobs" }, "← All jobs"))];
  const head = el("div", { class: "spread" }, el("h2", { id: "jobtitle" }, j.name, " ", badge(j.status)));
  if (ACTIVE.has(j.status)) {
    head.append(el("button", { class: "danger", type: "button", disabled: j.cancel_requested,
      onclick: () => actions.cancel(j) }, j.cancel_requested ? "Cancelling…" : "Cancel job"));
  }
  kids.push(head);
  if (actions.error) kids.push(el("div", { class: "errbox", role: "alert" }, actions.error));
  if (j.status === "failed" && j.error) kids.push(el("div", { class: "errbox" }, el("strong", {}, "Failed: "), j.error));
  for (const w of j.warnings || []) kids.push(el("div", { class: "warnbox" }, w));
  const started = j.started_at ? new Date(j.started_at) : null;
  const end = j.finished_at ? new Date(j.finished_at) : ACTIVE.has(j.status) ? new Date() : null;
  const facts = el("section", { class: "card", "aria-labelledby": "h-progress" },
    el("h3", { id: "h-progress" }, "Progress"), renderProgress(j),
    el("dl", {},
      el("dt", {}, "ID"), el("dd", { class: "mono" }, j.id),
      el("dt", {}, "Student"), el("dd", { class: "mono" }, describeStudent(spec)),
      el("dt", {}, "Losses"), el("dd", { class: "mono" }, describeLosses(spec)),
      el("dt", {}, "Created"), el("dd", {}, timeEl(j.created_at)),
      el("dt", {}, "Finished"), el("dd", {}, timeEl(j.finished_at)),
      el("dt", {}, "Duration"), el("dd", {}, started && end ? fmtDuration((end - started) / 1000) : dash)),
    j.stages && j.stages.length ? [el("h3", {}, "Stages"), renderStages(j.stages)] : null);
  const empty = ACTIVE.has(j.status) ? "No points yet; they appear after the first epoch." : "This job recorded no metrics.";
  const curves = el("section", { class: "card", "aria-labelledby": "h-curves" }, el("h3", { id: "h-curves" }, "Curves"),
    el("p", { class: "small muted" }, "Solid: the distilled student. Dashed: the no-KD baseline."),
    chart(metrics, (n) => /^(baseline\/)?loss(\/|$)/.test(n), false, empty, "Training loss"),
    chart(metrics, (n) => /^(baseline\/)?val_(accuracy|agreement)$/.test(n), true, empty, "Validation accuracy and agreement"));
  kids.push(el("div", { class: "jobgrid" }, facts, curves));
  if (j.status === "succeeded" && j.summary && j.kind !== "inference") {
    kids.push(el("section", { class: "card", id: "report", "aria-labelledby": "h-report" }, renderReport(j, actions.download)));
  }
  if (j.status === "succeeded" && j.kind === "inference" && j.summary && j.summary.logits) {
    const lg = j.summary.logits;
    kids.push(el("p", { class: "small muted" }, `Logits: ${fmtInt(lg.samples)} × ${fmtInt(lg.classes)}, from ${lg.source === "cache" ? "the cache" : "a run of the model"}; download them at /v1/jobs/${j.id}/logits.`));
  }
  box.replaceChildren(...kids);
}
