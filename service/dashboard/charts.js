// SVG line charts of a job's metrics, and the report's latency bars. Colours are the
// Okabe-Ito palette (distinguishable with every common colour-vision deficiency); the
// baseline's series are dashed as well as coloured apart.
import { el, sv, fmtPct, ms } from "./dom.js";

export const PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#8C6D00"];
// Fixed colours for the usual series, so a curve keeps its colour from job to job.
const FIXED = {
  "loss": "#0072B2", "loss/kd": "#E69F00", "loss/ce": "#009E73", "loss/hard": "#CC79A7",
  "loss/mse_logits": "#56B4E9", "loss/hint": "#8C6D00", "baseline/loss": "#D55E00", "baseline/loss/ce": "#000000",
  "val_accuracy": "#0072B2", "val_agreement": "#E69F00", "baseline/val_accuracy": "#D55E00",
  "baseline/val_agreement": "#CC79A7",
};

// Every series of one chart gets its own colour: the fixed one unless another series
// of the chart already took it, else the first palette colour still free.
export function colours(names) {
  const used = new Set(), out = {};
  for (const n of names) if (FIXED[n] && !used.has(FIXED[n])) { out[n] = FIXED[n]; used.add(FIXED[n]); }
  for (const n of names) {
    if (out[n]) continue;
    out[n] = PALETTE.find((c) => !used.has(c)) || PALETTE[used.size % PALETTE.length];
    used.add(out[n]);
  }
  return out;
}

function niceStep(span, n) {
  const raw = span / n, mag = Math.pow(10, Math.floor(Math.log10(raw))), e = raw / mag;
  return mag * (e >= 7.5 ? 10 : e >= 3.5 ? 5 : e >= 1.5 ? 2 : 1);
}
const tickLabel = (v) => (Math.abs(v) >= 1e5 || (Math.abs(v) < 1e-3 && v !== 0) ? v.toExponential(0) : String(+v.toPrecision(3)));
const isBaseline = (n) => n.startsWith("baseline/");

export function chart(points, keep, unit, empty, title) {
  if (!points) return el("p", { class: "muted small" }, "Loading metrics…");
  const byName = new Map();
  for (const p of points) {
    if (!keep(p.name) || !isFinite(p.value)) continue;
    if (!byName.has(p.name)) byName.set(p.name, new Map());
    byName.get(p.name).set(p.epoch, p.value); // last value per epoch wins (a resumed run repeats epochs)
  }
  if (!byName.size) return el("p", { class: "muted small" }, empty);
  const names = [...byName.keys()].sort((a, b) => (isBaseline(a) - isBaseline(b)) || a.localeCompare(b));
  const colour = colours(names);
  const series = names.map((name) => ({ name, pts: [...byName.get(name)].sort((a, b) => a[0] - b[0]),
    color: colour[name], dashed: isBaseline(name) }));
  const all = series.flatMap((s) => s.pts);
  const x0 = Math.min(...all.map((p) => p[0]));
  let x1 = Math.max(...all.map((p) => p[0]));
  if (x1 === x0) x1 = x0 + 1;
  let lo = Math.min(...all.map((p) => p[1])), hi = Math.max(...all.map((p) => p[1]));
  const log = !unit && lo > 0 && hi / lo > 30;
  const tf = log ? Math.log10 : (v) => v;
  if (unit) { lo = Math.max(0, Math.floor(lo * 10) / 10); hi = Math.min(1, Math.ceil(hi * 10) / 10); if (hi <= lo) hi = lo + 0.1; }
  let yTicks;
  if (log) {
    lo = Math.floor(Math.log10(lo)); hi = Math.ceil(Math.log10(hi));
    const every = Math.ceil((hi - lo + 1) / 6);
    yTicks = [];
    for (let k = hi; k >= lo; k -= every) yTicks.push(k);
  } else {
    if (!unit) { lo = Math.min(0, lo); if (hi === lo) hi = lo + 1; }
    const st = niceStep(hi - lo, 4);
    lo = Math.floor(lo / st + 1e-9) * st; hi = Math.ceil(hi / st - 1e-9) * st;
    yTicks = [];
    for (let v = lo; v <= hi + st / 2; v += st) yTicks.push(+v.toFixed(10));
  }
  // A narrower drawing on a phone, so its labels stay legible rather than shrink.
  const W = window.innerWidth < 600 ? 340 : 500, H = 190, L = 42, R = 10, T = 8, B = 28;
  const X = (v) => L + ((v - x0) / (x1 - x0)) * (W - L - R);
  const Y = (v) => T + (1 - (tf(v) - lo) / (hi - lo)) * (H - T - B);
  const Yt = (t) => T + (1 - (t - lo) / (hi - lo)) * (H - T - B);
  const g = [];
  for (const t of yTicks) {
    g.push(sv("line", { x1: L, x2: W - R, y1: Yt(t), y2: Yt(t), stroke: "#e6e9ed" }));
    g.push(sv("text", { x: L - 5, y: Yt(t) + 3, "text-anchor": "end" }, log ? tickLabel(Math.pow(10, t)) : unit ? `${Math.round(t * 100)}%` : tickLabel(t)));
  }
  const xs = Math.max(1, niceStep(x1 - x0, 6));
  for (let v = Math.ceil(x0 / xs) * xs; v <= x1; v += xs) {
    g.push(sv("line", { x1: X(v), x2: X(v), y1: H - B, y2: H - B + 4, stroke: "#6e7781" }));
    g.push(sv("text", { x: X(v), y: H - B + 15, "text-anchor": "middle" }, String(v)));
  }
  g.push(sv("line", { x1: L, x2: W - R, y1: H - B, y2: H - B, stroke: "#6e7781" }));
  g.push(sv("text", { x: W - R, y: H - 1, "text-anchor": "end" }, "epoch"));
  const isTotal = (s) => /^(baseline\/)?loss$/.test(s.name); // the weighted sum on top of its terms
  for (const s of [...series.filter((x) => !isTotal(x)), ...series.filter(isTotal)]) {
    const d = s.pts.map((p, i) => (i ? "L" : "M") + X(p[0]).toFixed(1) + " " + Y(p[1]).toFixed(1)).join(" ");
    g.push(sv("path", { d, fill: "none", stroke: s.color, "stroke-width": isTotal(s) ? 2.6 : 1.8,
      "stroke-dasharray": s.dashed ? "6 3" : null, "data-series": s.name }));
    if (s.pts.length <= 60) for (const p of s.pts)
      g.push(sv("circle", { cx: X(p[0]), cy: Y(p[1]), r: s.pts.length === 1 ? 3 : 2, fill: s.color },
        sv("title", {}, `${s.name} · epoch ${p[0]}: ${+p[1].toPrecision(4)}`)));
  }
  const label = `${title}: ${series.map((s) => s.name).join(", ")} by epoch`;
  const svgEl = sv("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": label }, g);
  const legend = el("ul", { class: "legend" }, series.map((s) => {
    const last = s.pts[s.pts.length - 1][1];
    return el("li", {}, el("i", { style: `border-top:3px ${s.dashed ? "dashed" : "solid"} ${s.color}` }),
      s.name, " ", el("span", { class: "muted" }, unit ? fmtPct(last) : String(+last.toPrecision(3))));
  }));
  return el("figure", { class: "curves" }, el("figcaption", {}, title), svgEl, legend,
    log ? el("div", { class: "small muted" }, "log scale") : null);
}

export function latencyChart(r, who) {
  // Horizontal bars: batch-1 p50 per model, one scale, the value written beside each bar.
  const bars = who.filter(([k]) => r[k] && r[k].latency_ms).map(([k, label]) => [k, label, r[k].latency_ms.p50]);
  if (!bars.length) return el("p", { class: "small muted" }, "No latency was measured.");
  const W = 560, row = 24, left = 96, right = 80, H = bars.length * row + 8;
  const max = Math.max(...bars.map((x) => x[2]));
  const fill = { teacher: "#000000", student: "#0072B2", baseline: "#D55E00", student_int8: "#009E73" };
  const kids = bars.flatMap(([k, label, v], i) => {
    const y = 4 + i * row, w = Math.max(1, ((W - left - right) * v) / max);
    return [sv("text", { x: left - 6, y: y + 15, "text-anchor": "end", class: "axis" }, label),
      sv("rect", { x: left, y: y + 3, width: w, height: row - 8, fill: fill[k], rx: 2 }),
      sv("text", { x: left + w + 6, y: y + 15, class: "axis" }, ms(v))];
  });
  return el("figure", { class: "latency" }, el("figcaption", { class: "small muted" }, "Latency at batch 1 (p50, ONNX Runtime)"),
    sv("svg", { viewBox: `0 0 ${W} ${H}`, width: "100%", role: "img", "aria-label": "p50 latency per model" }, kids));
}
