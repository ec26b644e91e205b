// The form that starts a job: teacher and data from the user's ready uploads, the
// student family and its parameters from GET /v1/students, loss terms from
// GET /v1/losses, training, placement and the rest from the API's OpenAPI schema.
import { el, fmtShape, human } from "./dom.js";
import { api, ApiError } from "./api.js";
import { control, fieldset, showErrors, clearErrors, wrap } from "./fields.js";

// A starting point that distils: Hinton's KD term with a little ground truth.
const START_LOSSES = { kd: 0.9, ce: 0.1 };
const DATA = [["train_dataset_id", "Training data", false], ["val_dataset_id", "Validation data", true],
  ["transfer_dataset_id", "Transfer data (unlabeled, labeled by the teacher)", true]];

function picker(loc, label, items, optional, describe) {
  const ready = items.filter((x) => x.status === "ready");
  const select = el("select", { name: loc },
    el("option", { value: "" }, optional ? "none" : ready.length ? "choose…" : "none ready: upload one first"),
    ready.map((x) => el("option", { value: x.id }, `${x.name} · ${describe(x)}`)));
  return { node: wrap([loc], label, select, optional ? "optional" : null), read: () => select.value || null, select };
}

export async function buildJobForm(box, onCreated) {
  box.replaceChildren(el("p", { class: "muted" }, "Loading the form…"));
  const [students, losses, openapi, models, datasets, workers] = await Promise.all([
    api("/v1/students"), api("/v1/losses"), fetch("/openapi.json").then((r) => r.json()),
    api("/v1/models?limit=100"), api("/v1/datasets?limit=100"), api("/v1/workers").catch(() => [])]);
  const defs = openapi.components.schemas;
  const pools = [...new Set(["auto", "cpu", ...workers.filter((w) => w.alive !== false).map((w) => w.pool)])];

  const name = control(["name"], "job_name", { type: "string" }, defs, "");
  const teacher = picker("teacher_model_id", "Teacher model", models.items, false,
    (m) => `${fmtShape(m.input_shape)} → ${fmtShape(m.output_shape)}`);
  const data = DATA.map(([loc, label, optional]) => [loc, picker(loc, label, datasets.items, optional,
    (d) => `${d.num_samples} × ${fmtShape(d.sample_shape)}${d.labeled === false ? ", unlabeled" : ""}`)]);

  // Student: the family picks which parameters show.
  const family = el("select", { name: "architecture" }, students.items.map((f) => el("option", { value: f.name }, `${f.name} · ${f.description}`)));
  const familyField = wrap(["student", "architecture"], "Student family", family, null);
  const paramsBox = el("div", { class: "params" });
  let params = null;
  const showParams = () => {
    const f = students.items.find((x) => x.name === family.value);
    params = fieldset(["student", "params"], f.params_schema, f.params_schema.$defs || defs, f.defaults);
    paramsBox.replaceChildren(el("p", { class: "hint" }, `Inputs: ${f.inputs}.`), params.node);
  };
  family.addEventListener("change", showParams);
  showParams();

  // Losses: a switch per term, its weight and parameters beside it.
  const terms = losses.items.map((l) => {
    const on = el("input", { type: "checkbox", checked: l.name in START_LOSSES });
    const values = { ...l.defaults, weight: START_LOSSES[l.name] ?? l.defaults.weight };
    const fs = fieldset(["losses", l.name], l.params_schema, l.params_schema.$defs || defs, values, ["name"]);
    const sync = () => { fs.node.hidden = !on.checked; };
    on.addEventListener("change", sync);
    sync();
    const tip = `${l.summary}${l.needs_labels ? " Needs labels." : ""} (${l.paper})`;
    return { name: l.name, on, fs, node: el("div", { class: "term" }, wrap(["losses", l.name], l.name, on, tip), fs.node) };
  });

  const training = fieldset(["training"], defs.TrainingSpec, defs, null);
  const placement = fieldset(["placement"], defs.PlacementSpec, defs, null, [], " pool");
  const list = el("datalist", { id: "pools" }, pools.map((p) => el("option", { value: p })));
  for (const i of placement.node.querySelectorAll("input")) i.setAttribute("list", "pools");
  const quantization = fieldset(["quantization"], defs.QuantizationSpec, defs, null);
  const benchmark = fieldset(["benchmark"], defs.BenchmarkSpec, defs, null);
  const baseline = control(["baseline"], "also_train_a_no-KD_baseline_of_the_same_size", { type: "boolean",
    description: "The report then shows what the teacher bought." }, defs, true);
  const outputs = control(["teacher_outputs"], "teacher_outputs", defs.JobCreate.properties.teacher_outputs, defs);

  const summary = el("div", { class: "errbox", role: "alert", hidden: true });
  const submit = el("button", { type: "submit", class: "primary" }, "Start job");
  const form = el("form", { id: "jobform", novalidate: true, "aria-labelledby": "h-newjob" },
    el("h2", { id: "h-newjob" }, "Start a job"),
    columns("Job", name.node, baseline.node),
    columns("Teacher and data", teacher.node, data.map(([, p]) => p.node)),
    section("Student", familyField, paramsBox),
    section("Loss terms", el("p", { class: "hint" }, "The total loss is the weighted sum of the terms switched on."), terms.map((t) => t.node)),
    section("Training", training.node),
    section("Placement (pools)", placement.node, list),
    el("details", {}, el("summary", {}, "Export, benchmark and teacher outputs"),
      section("Quantization", quantization.node), section("Benchmark", benchmark.node), columns("Teacher outputs", outputs.node)),
    summary, el("div", { class: "row" }, submit));

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const used = terms.filter((t) => t.on.checked);
    const body = {
      name: name.read()[1] ?? "",
      teacher_model_id: teacher.read(),
      student: { architecture: family.value, params: params.read() },
      losses: used.map((t) => ({ name: t.name, ...t.fs.read() })),
      training: training.read(), placement: placement.read(), quantization: quantization.read(),
      benchmark: benchmark.read(), baseline: baseline.read()[1], teacher_outputs: outputs.read()[1],
    };
    for (const [loc, p] of data) if (p.read()) body[loc] = p.read();
    if (!body.teacher_model_id) delete body.teacher_model_id;
    clearErrors(form);
    summary.hidden = true;
    submit.disabled = true;
    try {
      const job = await api("/v1/jobs", { method: "POST", json: body });
      onCreated(job);
    } catch (e) {
      if (!(e instanceof ApiError) || e.status === 401) throw e;
      // A loss term's errors name its place in the list; the form knows it by name.
      const errors = (e.fields.length ? e.fields : guess(e.detail)).map(({ loc, message }) => {
        if (loc[0] === "losses" && /^\d+$/.test(loc[1]) && used[+loc[1]]) {
          const term = used[+loc[1]].name;
          loc = ["losses", term, ...loc.slice(loc[2] === term ? 3 : 2)];
        }
        return { loc, message };
      });
      const left = showErrors(form, errors);
      summary.textContent = left.length || !errors.length ? e.detail : "The job was refused; the marked fields say why.";
      summary.hidden = false;
      if (left.length === errors.length) summary.focus?.();
    } finally {
      submit.disabled = false;
    }
  });
  box.replaceChildren(form);
}

const section = (title, ...kids) => el("fieldset", {}, el("legend", {}, title), kids);
// A section of single controls, laid out in columns like a generated group.
const columns = (title, ...kids) => el("fieldset", { class: "cols" }, el("legend", {}, title), kids);

// A rule the gateway checks past the schema answers with a sentence, not a location;
// it names the resource or the field at its start.
function guess(detail) {
  const starts = [[/^teacher model '/i, "teacher_model_id"], [/^teacher '/i, "teacher_model_id"],
    [/^train dataset '/i, "train_dataset_id"], [/^val dataset '/i, "val_dataset_id"],
    [/^transfer dataset '/i, "transfer_dataset_id"], [/^([a-z_]+\.[a-z_.]+) /, null]];
  for (const [re, loc] of starts) {
    const m = re.exec(detail);
    if (m) return [{ loc: (loc || m[1]).split("."), message: detail }];
  }
  return [];
}
