"""Save the trained student as safetensors + spec and as ONNX, store both and
register them as one model row owned by the job's tenant."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from core.models import Model
from core.queues import ResourceStatus
from distill.export import export_onnx, save_student
from distill.students import count_params
from workers.context import WorkerContext
from workers.jobs import ClaimedJob


def register_student(
    ctx: WorkerContext, job: ClaimedJob, student: torch.nn.Module, spec: dict[str, Any]
) -> tuple[str, dict[str, int]]:
    with tempfile.TemporaryDirectory() as tmp:
        weights, graph = Path(tmp) / "student.safetensors", Path(tmp) / "student.onnx"
        save_student(student, weights, spec)
        export_onnx(student, tuple(spec["input_shape"]), graph)
        files: dict[str, dict[str, Any]] = {}
        for fmt, path in (("safetensors", weights), ("onnx", graph)):
            key, sha, size = ctx.store.put_file(path)
            files[fmt] = {"key": key, "sha256": sha, "size_bytes": size}
    num_params = count_params(student)
    with ctx.sessions.begin() as session:
        row = Model(
            tenant_id=job.tenant_id,
            name=f"{job.name}-student",
            status=ResourceStatus.READY.value,
            format="safetensors",
            filename=f"{job.name}-student.safetensors",
            sha256=files["safetensors"]["sha256"],
            size_bytes=files["safetensors"]["size_bytes"],
            files=files,
            spec=spec,
            input_shape=[None, *spec["input_shape"]],
            output_shape=[None, spec["num_classes"]],
            num_params=num_params,
            source_job_id=job.id,
        )
        session.add(row)
        session.flush()
        model_id = row.id
    return model_id, {"num_params": num_params, "onnx_bytes": int(files["onnx"]["size_bytes"])}
