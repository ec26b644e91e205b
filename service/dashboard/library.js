// Models and datasets: an upload form with a progress bar, and the list with deletes.
import { el, human, badge, bar, dash, fmtBytes, fmtInt, fmtShape, timeEl } from "./dom.js";
import { api, upload, ApiError } from "./api.js";
import { wrap, showErrors, clearErrors } from "./fields.js";
import { confirmAction } from "./confirm.js";

const KINDS = {
  models: {
    title: "Models", one: "model", accept: ".onnx,.safetensors,.pt,.pt2",
    fileHint: "ONNX (.onnx), or safetensors weights with a zoo spec. TorchScript and torch.export only when the operator allows them.",
    extra: () => [["spec", el("textarea", { rows: 3, spellcheck: "false", placeholder: '{"architecture": "mlp", "params": {"hidden": [64]}, "input_shape": [64], "num_classes": 10}' }),
      "Safetensors only: the zoo spec JSON (architecture, params, input_shape, num_classes)."]],
    heads: ["Name", "Status", "Format", "Input → output", "Params", "Size", "Uploaded"],
    cells: (m) => [badge(m.status), m.format, m.input_shape ? fmtShape(m.input_shape) + " → " + fmtShape(m.output_shape) : dash,
      fmtInt(m.num_params), fmtBytes(m.size_bytes), timeEl(m.created_at)],
  },
  datasets: {
    title: "Datasets", one: "dataset", accept: ".npz,.csv,.parquet,.zip",
    fileHint: ".npz (x, optional y), .csv / .parquet (a table of numbers), or .zip (an image folder, one folder per class).",
    extra: () => [
      ["label_column", el("input", { type: "text" }), "CSV / Parquet: the label column; leave empty for an unlabeled set."],
      ["image_size", el("input", { type: "text", placeholder: "28x28" }), "Image zip: '28' or '28x28' (height × width)."],
      ["channels", el("select", {}, el("option", { value: "" }, "the first image's"), el("option", { value: "1" }, "1 (grayscale)"),
        el("option", { value: "3" }, "3 (RGB)")), "Image zip: colour channels."]],
    heads: ["Name", "Status", "Format", "Samples", "Sample shape", "Classes", "Size", "Uploaded"],
    cells: (d) => [badge(d.status), d.format, fmtInt(d.num_samples), fmtShape(d.sample_shape),
      d.labeled === false ? "unlabeled" : fmtInt(d.num_classes), fmtBytes(d.size_bytes), timeEl(d.created_at)],
  },
};

export function buildUploadForm(kind, onDone) {
  const k = KINDS[kind];
  const file = el("input", { type: "file", name: "file", accept: k.accept, required: true });
  const name = el("input", { type: "text", name: "name", placeholder: "the file's name" });
  const extras = k.extra().map(([field, input, hint]) => {
    input.name = field;
    return wrap([field], human(field), input, hint);
  });
  const progress = el("div", { class: "uploadprogress", hidden: true });
  const status = el("div", { role: "status", class: "small" });
  const summary = el("div", { class: "errbox", role: "alert", hidden: true });
  const submit = el("button", { type: "submit", class: "primary" }, `Upload ${k.one}`);
  const form = el("form", { class: "card upload", id: `upload-${kind}`, novalidate: true, "aria-labelledby": `h-up-${kind}` },
    el("h2", { id: `h-up-${kind}` }, `Upload a ${k.one}`),
    el("div", { class: "fields" }, wrap(["file"], "File", file, k.fileHint), wrap(["name"], "Name", name, "optional"), extras),
    progress, summary, el("div", { class: "row" }, submit, status));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearErrors(form);
    summary.hidden = true;
    status.textContent = "";
    if (!file.files.length) {
      showErrors(form, [{ loc: ["file"], message: "choose a file to upload" }]);
      return;
    }
    const body = new FormData();
    body.append("file", file.files[0]);
    for (const input of form.querySelectorAll("input[type=text], textarea, select")) if (input.value.trim()) body.append(input.name, input.value.trim());
    submit.disabled = true;
    progress.hidden = false;
    const show = (f) => progress.replaceChildren(el("span", { class: "small" }, file.files[0].name + " "), bar(f, "running", "upload progress"));
    show(0);
    try {
      const row = await upload("/v1/" + kind, body, show);
      status.textContent = `Uploaded “${row.name}”; a worker is inspecting it.`;
      form.reset();
      onDone(row);
    } catch (e) {
      if (!(e instanceof ApiError) || e.status === 401) throw e;
      const left = showErrors(form, e.fields.length ? e.fields : [{ loc: ["file"], message: e.detail }]);
      summary.textContent = left.length ? e.detail : "The upload was refused; the marked field says why.";
      summary.hidden = false;
      progress.hidden = true;
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}

export function renderLibrary(box, kind, items, onChange) {
  const k = KINDS[kind];
  if (!items.length) {
    box.replaceChildren(el("p", { class: "muted" }, `No ${kind} yet.`));
    return;
  }
  const rows = [];
  for (const it of items) {
    const del = el("button", { type: "button", class: "danger small", "aria-label": `Delete ${k.one} ${it.name}`,
      onclick: () => confirmAction(`Delete the ${k.one} “${it.name}”?`, "Its file goes too; jobs already finished keep their results.",
        "Delete", async () => { await api(`/v1/${kind}/${encodeURIComponent(it.id)}`, { method: "DELETE" }); onChange(); }) }, "Delete");
    rows.push(el("tr", { "data-id": it.id }, el("th", { scope: "row", class: "name", title: it.name }, it.name),
      k.cells(it).map((c, i) => el("td", { class: i >= 2 ? "num" : null }, c)), el("td", {}, del)));
    if (it.error) rows.push(el("tr", {}, el("td", { colspan: k.heads.length + 1, class: "err small wrap" }, it.error)));
  }
  box.replaceChildren(el("div", { class: "scroll" }, el("table", { class: "list" },
    el("caption", { class: "sr-only" }, k.title),
    el("thead", {}, el("tr", {}, k.heads.map((h, i) => el("th", { scope: "col", class: i >= 3 ? "num" : null }, h)),
      el("th", { scope: "col" }, el("span", { class: "sr-only" }, "Actions")))),
    el("tbody", {}, rows))));
}
