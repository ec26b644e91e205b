// DOM helpers and formatting. Every piece of server text goes in as a text node.

export const $ = (s, root = document) => root.querySelector(s);
export const dash = "—";

export function el(tag, attrs, ...kids) {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k === "class") n.className = v;
    else if (k.startsWith("on")) n.addEventListener(k.slice(2), v);
    else if (k === "value" || k === "checked") n[k] = v;
    else n.setAttribute(k, v === true ? "" : v);
  }
  for (const c of kids.flat(Infinity)) if (c != null && c !== false) n.append(c instanceof Node ? c : String(c));
  return n;
}

const SVGNS = "http://www.w3.org/2000/svg";
export function sv(tag, attrs, ...kids) {
  const n = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v != null) n.setAttribute(k, v);
  for (const c of kids.flat()) if (c != null) n.append(c instanceof Node ? c : String(c));
  return n;
}

export const badge = (s) => el("span", { class: "badge b-" + s }, s);

// One format for every time on the page: the browser's local time, "2026-11-29 08:27:05";
// the exact UTC instant is in the tooltip.
const pad = (n) => String(n).padStart(2, "0");
export function fmtTime(s) {
  if (!s) return dash;
  const d = s instanceof Date ? s : new Date(s);
  if (isNaN(d)) return dash;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}
export const timeEl = (s) => el("time", { datetime: s || null, title: s ? new Date(s).toISOString() : null }, fmtTime(s));

export function fmtDuration(sec) {
  if (sec == null || !isFinite(sec)) return dash;
  if (sec < 60) return sec.toFixed(sec < 10 ? 1 : 0) + " s";
  if (sec < 3600) return Math.floor(sec / 60) + " min " + Math.round(sec % 60) + " s";
  return Math.floor(sec / 3600) + " h " + Math.round((sec % 3600) / 60) + " min";
}
export function fmtBytes(b) {
  if (b == null) return dash;
  const u = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (b >= 1024 && i < u.length - 1) { b /= 1024; i++; }
  return (i ? b.toFixed(1) : b) + " " + u[i];
}
export const fmtInt = (n) => (n == null ? dash : Number(n).toLocaleString("en-US"));
export const fmtPct = (v) => (v == null ? dash : (100 * v).toFixed(1) + "%");
// Latency in ms from the API; below 0.1 ms it reads better in microseconds.
export const ms = (v) => (v == null ? dash : v < 0.1 ? (1000 * v).toFixed(1) + " µs" : Number(v).toFixed(v < 10 ? 2 : 1) + " ms");
export const fmtNum = (v, d) => (v == null ? dash : Number(v).toFixed(d));
export const fmtShape = (s) => (Array.isArray(s) ? "[" + s.map((x) => (x == null ? "N" : x)).join(", ") + "]" : dash);
export const stageName = (s) => (s ? s.replace(/_/g, " ") : dash);
// A field's name as a label: "batch_size" -> "Batch size".
const WORDS = { lr: "learning rate", lr_schedule: "learning-rate schedule", select: "pick the epoch by" };
export const human = (key) => { const t = WORDS[key] || key.replace(/_/g, " "); return t.charAt(0).toUpperCase() + t.slice(1); };

export function bar(fraction, status, label) {
  const p = Math.max(0, Math.min(1, fraction || 0));
  return el("span", { class: "progress" },
    el("span", { class: "bar " + (status || ""), role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100",
      "aria-valuenow": String(Math.round(100 * p)), "aria-label": label || "progress" },
    el("i", { style: `width:${(100 * p).toFixed(1)}%` })),
    el("span", { class: "pct" }, Math.round(100 * p) + "%"));
}
