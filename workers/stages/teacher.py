"""Stage 1: run the teacher once over every dataset the job names and cache
its logits in the artifact store (offline KD)."""

from __future__ import annotations

import logging
from typing import Protocol

import numpy as np

from core.models import Model
from core.queues import Stage
from distill.errors import DistillError
from distill.evaluate import predict_logits
from distill.export import load_student
from distill.programs import ProgramTeacher
from distill.teachers import OnnxTeacher
from workers.context import WorkerContext
from workers.jobs import CancelCheck, ClaimedJob, advance
from workers.stages.inputs import load_arrays, load_inputs, logits_key, save_logits

log = logging.getLogger("stillhouse.worker")


class Teacher(Protocol):
    def predict_logits(self, x: np.ndarray, batch_size: int = 1024) -> np.ndarray: ...


class _ZooTeacher:
    """A safetensors + zoo spec model used as a teacher."""

    def __init__(self, path: str, device: str) -> None:
        self.model, _ = load_student(path, device=device)
        self.device = device

    def predict_logits(self, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        return predict_logits(self.model, x, batch_size=batch_size, device=self.device)


def load_teacher(ctx: WorkerContext, row: Model) -> Teacher:
    path = ctx.store.local_path(row.files[row.format]["key"])
    if row.format == "onnx":
        return OnnxTeacher(path, device=ctx.device)
    if row.format == "safetensors":
        return _ZooTeacher(str(path), ctx.device)
    return ProgramTeacher(path, row.format, device=ctx.device)


def run_teacher_inference(ctx: WorkerContext, job: ClaimedJob, cancel: CancelCheck) -> None:
    inputs = load_inputs(ctx, job.spec)
    teacher_row = inputs.teacher
    width = (teacher_row.output_shape or [None])[-1]
    teacher: Teacher | None = None
    for field, dataset in inputs.datasets.items():
        if ctx.store.exists(logits_key(teacher_row.sha256, dataset.sha256)):
            log.info("job %s: teacher outputs for %s come from the cache", job.id, field)
            continue
        teacher = teacher or load_teacher(ctx, teacher_row)
        x, _ = load_arrays(ctx.store, dataset)
        logits = teacher.predict_logits(x)  # (N, C)
        if logits.ndim != 2 or logits.shape[0] != len(x) or logits.shape[1] != width:
            raise DistillError(
                f"The teacher returned outputs of shape {tuple(logits.shape)} for {len(x)} samples; "
                f"expected ({len(x)}, {width})."
            )
        if not np.isfinite(logits).all():
            raise DistillError(
                f"The teacher produced NaN or infinite outputs on {field.removesuffix('_id')}; "
                "check the model and that the data is scaled the way it was trained on."
            )
        save_logits(ctx.store, teacher_row, dataset, logits)
        cancel.raise_if_cancelled()
    advance(ctx, job.id, Stage.TRAINING, inputs.spec.placement.student, progress=0.1)
