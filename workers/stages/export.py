"""Stage 4: export the trained student to ONNX and register it, with its
safetensors weights, as one model row owned by the job's tenant. The row is
inserted in the same fenced transaction that finishes the job, so a job has
one student or none, however often this stage runs."""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path
from typing import Any

from core.lifecycle import Claim, Student
from core.models import Model
from core.queues import ResourceStatus, Stage
from distill.export import export_onnx
from distill.students import count_params
from workers.context import WorkerContext
from workers.jobs import StopCheck
from workers.stages.inputs import load_inputs, load_weights
from workers.stages.result import StageResult


def student_id(job_id: str) -> str:
    """One id per job: a second insert of the same student would hit the primary key."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"stillhouse:job:{job_id}:student"))


def _file_entry(ctx: WorkerContext, key: str) -> dict[str, Any]:
    return {"key": key, "sha256": key.rsplit("/", 1)[-1], "size_bytes": ctx.store.size(key)}


def run_export(ctx: WorkerContext, claim: Claim, check: StopCheck) -> StageResult:
    trained, evaluated = claim.inputs[Stage.TRAINING.value], claim.inputs[Stage.EVALUATION.value]
    spec: dict[str, Any] = trained["spec"]
    model, _ = load_weights(ctx, trained["student"]["weights"])
    with tempfile.TemporaryDirectory() as tmp:
        graph = Path(tmp) / "student.onnx"
        export_onnx(model.cpu(), tuple(spec["input_shape"]), graph)
        onnx_key, _, _ = ctx.store.put_file(graph)
    files = {
        "safetensors": _file_entry(ctx, trained["student"]["weights"]),
        "onnx": _file_entry(ctx, onnx_key),
    }
    check.raise_if_stopped()
    num_params = count_params(model)
    student = Student(
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
            "num_params": num_params,
            "source_job_id": claim.job_id,
        },
    )
    teacher = load_inputs(ctx, claim.spec).teacher
    summary = _summary(teacher, trained, evaluated, num_params, files["onnx"]["size_bytes"])
    return StageResult(outputs={"onnx": onnx_key}, student=student, summary=summary)


def _summary(
    teacher: Model,
    trained: dict[str, Any],
    evaluated: dict[str, Any],
    num_params: int,
    onnx_bytes: int,
) -> dict[str, Any]:
    return {
        "teacher": {
            **evaluated["teacher"],
            "num_params": teacher.num_params,
            "size_bytes": teacher.size_bytes,
        },
        "student": {**evaluated["student"], "num_params": num_params, "size_bytes": onnx_bytes},
        "baseline": evaluated.get("baseline"),
        "val_source": evaluated["val_source"],
        "val_samples": evaluated["val_samples"],
        "train_samples": trained["train_samples"],
        "labeled_train_samples": trained["labeled_train_samples"],
        "epochs": trained["epochs"],
        "steps": trained["steps"],
        # Jobs trained before the field existed used cached teacher outputs.
        "teacher_outputs": trained.get("teacher_outputs", "cached"),
        "augment_noise": trained.get("augment_noise", 0.0),
        "best": trained["student"].get("best"),
        "resumed_from_epoch": trained["resumed_from_epoch"],
        "training_seconds": trained["training_seconds"],
        "compression_ratio": (
            round(teacher.num_params / num_params, 3) if teacher.num_params else None
        ),
    }
