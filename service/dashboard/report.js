// A finished job's report: quality and speed of teacher, student, baseline and int8
// variant side by side, the latency bars, and the student's downloads.
import { el, dash, fmtBytes, fmtInt, fmtNum, fmtPct, ms } from "./dom.js";
import { latencyChart } from "./charts.js";

function epochCell(e) {
  // "7 (last 10: 63.6%)": the selected epoch, and the last epoch's figure beside it.
  const sel = e.selected, last = e.last_epoch;
  if (!sel && !last) return dash;
  const figure = last ? (last.accuracy ?? last.agreement) : null;
  const tail = last ? ` (last ${last.epoch}: ${fmtPct(figure)})` : "";
  return `${sel ? sel.epoch : "last"}${tail}`;
}

export function renderReport(j, download) {
  const s = j.summary, r = s.report || { teacher: s.teacher, student: s.student, baseline: s.baseline };
  const rate = (t) => (t ? Math.round(t.samples_per_s).toLocaleString("en-US") + "/s" : dash);
  const cols = [["accuracy", fmtPct], ["agreement", fmtPct], ["kl_to_teacher", (v) => fmtNum(v, 4)], ["ece", (v) => fmtNum(v, 3)]];
  const who = [["teacher", "teacher"], ["student", "student"], ["baseline", "baseline"], ["student_int8", "student int8"]];
  const old = !s.report;
  const value = (e, c) => (old && c === "params" ? e.num_params : old && c === "bytes" ? e.size_bytes : e[c]);
  // Two narrow tables rather than one wide one: quality on the validation set, then size
  // and speed on the benchmark pool; both fit from 390 px up.
  const table = (caption, heads, tips, cells) => el("div", { class: "scroll" }, el("table", { class: "report" },
    el("caption", {}, caption),
    el("thead", {}, el("tr", {}, heads.map((h, i) => el("th", { scope: "col", class: i ? "num" : null, title: tips[i] }, h)))),
    el("tbody", {}, who.filter(([k]) => r[k]).map(([k, label]) => el("tr", { class: k }, el("th", { scope: "row" }, label),
      cells(r[k]).map((c) => el("td", { class: "num" }, c)))))));
  const out = [el("h3", { id: "h-report" }, "Report"),
    table("Quality on the validation set", ["", "accuracy", "agreement", "KL", "ECE", "epoch"],
      [null, "top-1 accuracy on the validation set", "share of predictions equal to the teacher's",
        "KL divergence to the teacher's softmax", "expected calibration error",
        "the epoch whose weights are scored here (by its validation figure), and the last epoch's"],
      (e) => [...cols.map(([c, f]) => f(value(e, c))), epochCell(e)]),
    table("Size and speed on the benchmark pool", ["", "params", "size", "p50", "p95", "throughput"],
      [null, null, "size of the exported file", "median latency at batch 1 (ONNX Runtime)",
        "95th percentile latency at batch 1", "samples per second at the benchmark batch size"],
      (e) => [fmtInt(value(e, "params")), fmtBytes(value(e, "bytes")),
        ms((e.latency_ms || {}).p50), ms((e.latency_ms || {}).p95), rate(e.throughput)])];
  const b = r.benchmark, q = r.quantization;
  const compression = r.compression ?? s.compression_ratio;
  const facts = [
    r.speedup != null ? `speedup ${Number(r.speedup).toFixed(1)}× (teacher p50 / student p50)` : null,
    compression != null ? `compression ${Number(compression).toFixed(1)}×` : null,
    b ? `measured on pool ${b.pool}, ${b.device_name || b.device}, ${b.threads} threads, ${b.runtime}, throughput at batch ${b.batch}` : null,
    r.export ? `export parity ${Number(r.export.parity_max_abs_diff).toExponential(1)}` : null,
    r.teacher_outputs ? `teacher outputs ${r.teacher_outputs}` : null,
    s.val_source ? `validated on ${String(s.val_source).replace(/_/g, " ")}` : null];
  for (const [k, label] of [["student", "student"], ["baseline", "baseline"]]) {
    const stop = r[k] && r[k].early_stopped;
    if (stop) facts.push(`${label} stopped early after epoch ${stop.epoch}: ${stop.reason}`);
  }
  out.push(el("p", { class: "small muted" }, facts.filter(Boolean).join(" · ")));
  if (q && q.mode && q.mode !== "off") out.push(el("p", { class: "small muted" }, `int8: ${q.mode}. ${q.reason || ""}`));
  // A note says why there is no int8 variant to download. Turned off on purpose is a
  // fact, not a fault; a variant that failed or lost accuracy is worth a warning.
  if (q && q.note) out.push(el("div", { class: q.mode === "off" ? "infobox" : "warnbox", role: "note" }, q.note));
  if (s.report) out.push(latencyChart(r, who));
  if (j.student_model_id) {
    const formats = s.formats || ["onnx", "safetensors"];
    const buttons = formats.map((fmt) => el("button", { type: "button", class: "btn", "data-format": fmt,
      onclick: (ev) => download(j, fmt, ev.currentTarget) }, "Download " + fmt));
    out.push(el("div", { class: "row" }, el("span", { class: "small muted" }, "Student:"), buttons));
  }
  return out;
}
