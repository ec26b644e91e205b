"""Stage 5: measure the teacher, the student, the baseline and the student's
int8 variant on the pool the student will be deployed on (the job's
`placement.benchmark`), then register the student and finish the job with its
report. Latency is taken at batch 1 after warm-up, throughput at the job's
batch size, in ONNX Runtime and, for zoo models, in torch eager too; the
device, thread count and runtime versions are recorded beside the figures."""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path
from typing import Any, cast

import numpy as np
from torch import nn

from core.lifecycle import Claim, Student
from core.models import Model
from core.queues import ResourceStatus, Stage
from distill.benchmark import Measurement, measure_onnx, measure_torch, runtime_info
from distill.export import export_onnx, load_student
from distill.onnx_safety import read_onnx
from distill.programs import load_program
from workers.context import WorkerContext
from workers.jobs import StopCheck
from workers.stages.inputs import JobInputs, load_arrays, load_inputs, load_weights
from workers.stages.report import Entry, build_report
from workers.stages.result import StageResult

# Real rows the runs feed the models (tiled up to the batch size).
SAMPLE_ROWS = 256


def student_id(job_id: str) -> str:
    """One id per job: a second insert of the same student would hit the primary key."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"stillhouse:job:{job_id}:student"))


class _Bench:
    """The job's measuring settings, held once for every model it measures."""

    def __init__(self, ctx: WorkerContext, sample: np.ndarray, batch: int) -> None:
        self.ctx, self.sample, self.batch = ctx, sample, batch
        self.threads = ctx.settings.benchmark_threads
        self.seconds = ctx.settings.benchmark_seconds

    @property
    def options(self) -> dict[str, Any]:
        return {
            "batch": self.batch,
            "threads": self.threads,
            "device": self.ctx.device,
            "seconds": self.seconds,
        }

    def onnx(self, model: bytes | Path) -> Measurement:
        return measure_onnx(model, self.sample, **self.options)

    def zoo(self, metrics: dict[str, float], params: int, onnx_key: str, model: nn.Module) -> Entry:
        """A model of the zoo: its exported ONNX file in ONNX Runtime, and itself in eager."""
        store = self.ctx.store
        onnx_figures = self.onnx(store.local_path(onnx_key))
        return Entry(metrics, params, store.size(onnx_key), onnx_figures, self.eager(model))

    def eager(self, model: nn.Module) -> Measurement:
        return measure_torch(model, self.sample, **self.options)


def _sample_rows(ctx: WorkerContext, inputs: JobInputs) -> np.ndarray:
    """Rows of the validation set, else of the train set: only their shape and values
    matter to a timing, so no split and no teacher logits are loaded for them."""
    datasets = inputs.datasets
    x, _ = load_arrays(ctx.store, datasets.get("val_dataset_id") or datasets["train_dataset_id"])
    # A copy of the first rows (x may be memory-mapped) in their own type: each measurement
    # casts them to what its model reads (int64 token ids stay integers).
    return np.array(x[:SAMPLE_ROWS])


def _teacher(ctx: WorkerContext, bench: _Bench, row: Model) -> tuple[Measurement | None, ...]:
    """(ONNX Runtime, torch eager) figures for the teacher, None where a runtime cannot
    run its format: an ONNX file has no eager form, a torch program no ONNX one."""
    path = ctx.store.local_path(row.files[row.format]["key"])
    if row.format == "onnx":
        return bench.onnx(read_onnx(path)[0]), None  # read_onnx refuses external data
    if row.format == "safetensors":
        model, spec = load_student(path, device=ctx.device, spec=row.spec)
        with tempfile.TemporaryDirectory() as tmp:
            graph = Path(tmp) / "teacher.onnx"
            export_onnx(model.cpu(), tuple(spec["input_shape"]), graph)
            onnx_figures = bench.onnx(graph)
        return onnx_figures, bench.eager(model.to(ctx.device))
    program = cast(nn.Module, load_program(path, row.format, ctx.device))
    return None, bench.eager(program)


def run_benchmark(ctx: WorkerContext, claim: Claim, check: StopCheck) -> StageResult:
    trained = claim.inputs[Stage.TRAINING.value]
    evaluated = claim.inputs[Stage.EVALUATION.value]
    exported = claim.inputs[Stage.EXPORT.value]
    inputs = load_inputs(ctx, claim.spec)
    bench = _Bench(ctx, _sample_rows(ctx, inputs), inputs.spec.benchmark.batch_size)
    store = ctx.store

    teacher_ort, teacher_eager = _teacher(ctx, bench, inputs.teacher)
    check.raise_if_stopped()
    student, _ = load_weights(ctx, trained["student"]["weights"])
    params = sum(p.numel() for p in student.parameters())
    entries = {
        "teacher": Entry(
            evaluated["teacher"],
            inputs.teacher.num_params,
            inputs.teacher.size_bytes,
            teacher_ort,
            teacher_eager,
        ),
        "student": bench.zoo(evaluated["student"], params, exported["onnx"], student),
    }
    check.raise_if_stopped()
    if exported.get("baseline_onnx") and evaluated.get("baseline") is not None:
        baseline, _ = load_weights(ctx, trained["baseline"]["weights"])
        entries["baseline"] = bench.zoo(
            evaluated["baseline"], params, exported["baseline_onnx"], baseline
        )
        check.raise_if_stopped()
    int8 = exported["int8"]
    if int8.get("key"):
        entries["student_int8"] = Entry(
            int8["metrics"],
            params,
            store.size(int8["key"]),
            bench.onnx(store.local_path(int8["key"])),
            None,
        )
    info = runtime_info(ctx.device, bench.threads)
    report = build_report(
        entries,
        benchmark={**info, "pool": ctx.pool, "batch": bench.batch},
        export={"parity_max_abs_diff": exported["parity_max_abs_diff"]},
        quantization={k: int8.get(k) for k in ("mode", "reason", "kept", "note")},
        # Jobs trained before the field existed used cached teacher outputs.
        teacher_outputs=trained.get("teacher_outputs", "cached"),
        runs={"student": trained["student"], "baseline": trained.get("baseline")},
        task=inputs.spec.task,
    )
    files = {
        "safetensors": _file_entry(ctx, trained["student"]["weights"]),
        "onnx": _file_entry(ctx, exported["onnx"]),
    }
    if int8.get("key") and int8.get("kept"):
        files["onnx-int8"] = _file_entry(ctx, int8["key"])
    registered = _student(claim, trained["spec"], files, params)
    summary = _summary(inputs.teacher, trained, evaluated, params, files, report)
    details = {"device": info["device"], "device_name": info["device_name"]}
    return StageResult(outputs={"details": details}, student=registered, summary=summary)


def _file_entry(ctx: WorkerContext, key: str) -> dict[str, Any]:
    return {"key": key, "sha256": key.rsplit("/", 1)[-1], "size_bytes": ctx.store.size(key)}


def _student(
    claim: Claim, spec: dict[str, Any], files: dict[str, dict[str, Any]], params: int
) -> Student:
    """The model row the job registers in the transaction that finishes it."""
    return Student(
        id=student_id(claim.job_id),
        values={
            "tenant_id": claim.tenant_id,
            "name": f"{claim.job_name}-student",
            "status": ResourceStatus.READY.value,
            "format": "safetensors",
            "filename": f"{claim.job_name}-student.safetensors",
            "sha256": files["safetensors"]["sha256"],
            "size_bytes": files["safetensors"]["size_bytes"],
            "files": files,
            "spec": spec,
            "input_shape": [None, *spec["input_shape"]],
            "output_shape": [None, spec["num_classes"]],
            "num_params": params,
            "source_job_id": claim.job_id,
        },
    )


def _summary(
    teacher: Model,
    trained: dict[str, Any],
    evaluated: dict[str, Any],
    params: int,
    files: dict[str, dict[str, Any]],
    report: dict[str, Any],
) -> dict[str, Any]:
    return {
        "teacher": {
            **evaluated["teacher"],
            "num_params": teacher.num_params,
            "size_bytes": teacher.size_bytes,
        },
        "student": {
            **evaluated["student"],
            "num_params": params,
            "size_bytes": files["onnx"]["size_bytes"],
        },
        "baseline": evaluated.get("baseline"),
        "val_source": evaluated["val_source"],
        "val_samples": evaluated["val_samples"],
        "train_samples": trained["train_samples"],
        "labeled_train_samples": trained["labeled_train_samples"],
        "epochs": trained["epochs"],
        "steps": trained["steps"],
        "teacher_outputs": report["teacher_outputs"],
        "augment_noise": trained.get("augment_noise", 0.0),
        "best": trained["student"].get("best"),
        "selected": trained["student"].get("selected"),
        "last_epoch": trained["student"].get("last_epoch"),
        "early_stopped": trained["student"].get("early_stopped"),
        "task": report["task"],
        "resumed_from_epoch": trained["resumed_from_epoch"],
        "torch_threads": trained.get("torch_threads"),
        "training_seconds": trained["training_seconds"],
        "compression_ratio": report["compression"],
        "speedup": report["speedup"],
        "formats": sorted(files),
        "report": report,
    }
