// Form controls generated from JSON schemas (the API's own: GET /v1/students,
// GET /v1/losses, /openapi.json), each with its <label>, its hint and a place for
// the API's error about it. A control's `loc` is the field's path in the request
// body ("student.params.channels"), the path a 422 names.
import { el, human } from "./dom.js";

let serial = 0;
const idOf = (loc) => "f-" + loc.join("-").replace(/[^\w-]/g, "_") + "-" + ++serial;

// The schema of one property, without a null option: [schema, nullable].
export function resolve(schema, defs) {
  let s = schema, nullable = false;
  if (s.anyOf) {
    const options = s.anyOf.filter((o) => o.type !== "null");
    nullable = options.length < s.anyOf.length;
    s = options.length === 1 ? { ...s, ...options[0], anyOf: undefined } : s;
  }
  // A referenced object brings its fields, not its class name as a title.
  if (s.$ref) s = { ...defs[s.$ref.split("/").pop()], ...s, $ref: undefined, title: s.title };
  return [s, nullable];
}

export function wrap(loc, label, control, hint) {
  const id = control.id || (control.id = idOf(loc));
  const err = el("p", { class: "fielderr", id: id + "-err", hidden: true });
  const hintEl = hint ? el("p", { class: "hint", id: id + "-hint" }, hint) : null;
  control.setAttribute("aria-describedby", [hintEl && hintEl.id, err.id].filter(Boolean).join(" "));
  const check = control.type === "checkbox";
  const lab = el("label", { for: id }, label);
  return el("div", { class: "field" + (check ? " check" : ""), "data-loc": loc.join(".") },
    check ? [control, lab] : [lab, control], hintEl, err);
}

const numberOr = (text) => (text.trim() === "" || isNaN(Number(text)) ? text : Number(text));

// A control for one schema property: {node, read}; read() gives [present, value].
export function control(loc, key, schema, defs, value, suffix = "") {
  const [s, nullable] = resolve(schema, defs);
  const label = human(key) + suffix;
  const hint = [s.description, nullable ? "optional" : null].filter(Boolean).join(" · ") || null;
  const start = value !== undefined ? value : s.default;
  if (s.type === "boolean") {
    const input = el("input", { type: "checkbox", checked: !!start });
    return { node: wrap(loc, label, input, hint), read: () => [true, input.checked] };
  }
  if (s.enum) {
    const select = el("select", {}, nullable ? el("option", { value: "" }, "—") : null,
      s.enum.filter((v) => v !== null).map((v) => el("option", { value: v }, String(v))));
    select.value = start == null ? "" : String(start);
    return { node: wrap(loc, label, select, hint), read: () => (select.value === "" ? [false] : [true, select.value]) };
  }
  if (s.type === "integer" || s.type === "number") {
    const input = el("input", { type: "number", step: s.type === "integer" ? "1" : "any", inputmode: "decimal",
      min: s.minimum ?? null, max: s.maximum ?? null, value: start == null ? "" : String(start) });
    return { node: wrap(loc, label, input, hint), read: () => (input.value === "" && input.validity.valid ? [false] : [true, numberOr(input.value || input.validationMessage)]) };
  }
  if (s.type === "array") {
    const input = el("input", { type: "text", inputmode: "numeric", value: Array.isArray(start) ? start.join(", ") : "" });
    const read = () => [true, input.value.trim() === "" ? [] : input.value.split(",").map((t) => numberOr(t.trim()))];
    return { node: wrap(loc, label, input, [hint, "comma-separated"].filter(Boolean).join(" · ")), read };
  }
  if (s.type === "object" && s.properties) return group(loc, label, s, defs, start, nullable);
  // Strings, and unions of several kinds (e.g. "balanced" or a list of weights): typed text,
  // a number list when it reads as one.
  const input = el("input", { type: "text", value: start == null ? "" : Array.isArray(start) ? start.join(", ") : String(start) });
  const read = () => {
    const t = input.value.trim();
    if (t === "") return [false];
    if (s.anyOf && /^[\d.,\s-]+$/.test(t)) return [true, t.split(",").map((x) => numberOr(x.trim()))];
    return [true, t];
  };
  return { node: wrap(loc, label, input, hint), read };
}

// A nested object (early_stopping): a switch, and its own fields while it is on.
function group(loc, label, s, defs, start, nullable) {
  const inner = fieldset(loc, s, defs, start || {});
  const on = el("input", { type: "checkbox", checked: !!start || !nullable });
  const sync = () => { inner.node.hidden = !on.checked; };
  on.addEventListener("change", sync);
  sync();
  const node = el("div", { class: "group" }, wrap(loc, "Use " + label.toLowerCase(), on, s.description || null), inner.node);
  return { node, read: () => (on.checked ? [true, inner.read()] : [false]) };
}

// One control per property of an object schema: {node, read} with read() the object.
export function fieldset(loc, schema, defs, values, skip = [], suffix = "") {
  const controls = Object.entries(schema.properties || {}).filter(([k]) => !skip.includes(k))
    .map(([k, p]) => [k, control([...loc, k], k, p, defs, values ? values[k] : undefined, suffix)]);
  return {
    node: el("div", { class: "fields" }, controls.map(([, c]) => c.node)),
    read: () => Object.fromEntries(controls.map(([k, c]) => [k, c.read()]).filter(([, r]) => r[0]).map(([k, r]) => [k, r[1]])),
  };
}

// Show errors beside their fields: `errors` is [{loc, message}]; those no field claims
// are returned. The longest path prefix that names a field wins.
export function showErrors(form, errors) {
  clearErrors(form);
  const fields = new Map([...form.querySelectorAll("[data-loc]")].filter((f) => !f.closest("[hidden]")).map((f) => [f.dataset.loc, f]));
  const left = [];
  for (const { loc, message } of errors) {
    let target = null;
    for (let n = loc.length; n > 0 && !target; n--) target = fields.get(loc.slice(0, n).join("."));
    if (!target) { left.push({ loc, message }); continue; }
    const err = target.querySelector(".fielderr");
    err.textContent = (err.textContent ? err.textContent + " " : "") + sentence(message);
    err.hidden = false;
    target.classList.add("invalid");
    const input = target.querySelector("input, select, textarea");
    if (input) input.setAttribute("aria-invalid", "true");
  }
  // Focus goes to the first marked field in reading order.
  const first = form.querySelector("[aria-invalid=true]");
  if (first) first.focus();
  return left;
}
const sentence = (m) => { const t = m.charAt(0).toUpperCase() + m.slice(1); return /[.!?]$/.test(t) ? t : t + "."; };

export function clearErrors(form) {
  for (const f of form.querySelectorAll(".field.invalid")) f.classList.remove("invalid");
  for (const e of form.querySelectorAll(".fielderr")) { e.textContent = ""; e.hidden = true; }
  for (const i of form.querySelectorAll("[aria-invalid]")) i.removeAttribute("aria-invalid");
}
