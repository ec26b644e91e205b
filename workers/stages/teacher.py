"""Stage 1: run the teacher once over every dataset the job names and cache
its logits in the artifact store (offline KD). The stage's output is the map
from dataset to cached logits, which the later stages read.

With teacher_outputs "online" the training stage runs the teacher on each
batch (online_teacher), so this stage caches only what evaluation reads: the
validation set's logits, or the train set's when the holdout comes from it."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from sqlalchemy.orm import Session

from core.lifecycle import Claim
from core.models import Dataset, Model
from core.spec import InferenceJobCreate
from core.stages import job_kind
from distill.batches import Rows
from distill.errors import DistillError
from distill.evaluate import predict_logits
from distill.export import load_student
from distill.npy_io import NpyWriter
from distill.programs import ProgramTeacher
from distill.students import input_dtype
from distill.teachers import OnnxTeacher
from workers.context import WorkerContext
from workers.jobs import StopCheck, report_progress
from workers.retry import read
from workers.stages.inputs import (
    cached_fields,
    load_inputs,
    load_rows,
    logits_key,
)
from workers.stages.result import StageResult
from workers.stages.tensors import cache_tensors, job_tensors

log = logging.getLogger("stillhouse.worker")
# Samples per teacher call between two cancel checks: a cancel lands within one chunk.
CHUNK = 8192


class Teacher(Protocol):
    def predict_logits(self, x: np.ndarray, batch_size: int = 1024) -> np.ndarray: ...

    def torch_logits(self, xb: torch.Tensor) -> torch.Tensor: ...


class _ZooTeacher:
    """A safetensors + zoo spec model used as a teacher."""

    def __init__(self, row: Model, path: str, device: str) -> None:
        self.model, _ = load_student(path, device=device, spec=row.spec)
        self.model.eval().requires_grad_(False)
        self.device = device

    def predict_logits(self, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        return predict_logits(self.model, x, batch_size=batch_size, device=self.device)

    def torch_logits(self, xb: torch.Tensor) -> torch.Tensor:
        inputs = xb.to(self.device, input_dtype(self.model))  # int64 ids for a token model
        return self.model(inputs).float().to(xb.device)  # (B, C)


def load_teacher(ctx: WorkerContext, row: Model) -> Teacher:
    path = ctx.store.local_path(row.files[row.format]["key"])
    if row.format == "onnx":
        return OnnxTeacher(path, device=ctx.device)
    if row.format == "safetensors":
        return _ZooTeacher(row, str(path), ctx.device)
    return ProgramTeacher(path, row.format, device=ctx.device)


def online_teacher(ctx: WorkerContext, row: Model) -> Callable[[torch.Tensor], torch.Tensor]:
    """The teacher as train() calls it in online mode, (B, ...) -> (B, C) on the worker's
    device: a zoo model or torch program in torch, an ONNX model through ONNX Runtime."""
    return load_teacher(ctx, row).torch_logits


def _predict(
    teacher: Teacher, x: np.ndarray | Rows, check: StopCheck, out: Path, width: int, what: str
) -> int:
    """Write the teacher's logits for x to `out` (.npy, (N, C) float32) one chunk at a time:
    memory is one chunk of rows and its logits, whatever N is. Returns the rows written."""
    with NpyWriter(out, np.float32, (width,)) as writer:
        for start in range(0, len(x), CHUNK):
            rows = x[start : start + CHUNK]  # (b, ...), read from the file
            logits = teacher.predict_logits(rows)  # (b, C)
            if logits.ndim != 2 or logits.shape[0] != len(rows) or logits.shape[1] != width:
                raise DistillError(
                    f"The teacher returned outputs of shape {tuple(logits.shape)} for "
                    f"{len(rows)} samples; expected ({len(rows)}, {width})."
                )
            if not np.isfinite(logits).all():
                raise DistillError(
                    f"The teacher produced NaN or infinite outputs on {what}; check the model "
                    "and that the data is scaled the way it was trained on."
                )
            writer.append(logits)
            if check():
                check.raise_if_stopped()
        return writer.rows


def _logits_for(
    ctx: WorkerContext,
    claim: Claim,
    check: StopCheck,
    teacher_row: Model,
    datasets: dict[str, Dataset],
) -> tuple[dict[str, str], dict[str, str]]:
    """The cached logits' key per dataset field, computing those not cached yet, and
    where each came from ("cache" or "computed")."""
    width = (teacher_row.output_shape or [None])[-1]
    teacher: Teacher | None = None
    keys: dict[str, str] = {}
    sources: dict[str, str] = {}
    for done, (field, dataset) in enumerate(datasets.items()):
        key = keys[field] = logits_key(teacher_row.sha256, dataset.sha256)
        if ctx.store.exists(key):
            log.info("job %s: teacher outputs for %s come from the cache", claim.job_id, field)
            sources[field] = "cache"
            continue
        teacher = teacher or load_teacher(ctx, teacher_row)
        x, _ = load_rows(ctx.store, dataset)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "logits.npy"
            _predict(teacher, x, check, path, int(width or 0), field.removesuffix("_id"))
            ctx.store.put_named(key, path)
        sources[field] = "computed"
        report_progress(ctx, claim, (done + 1) / len(datasets))
    return keys, sources


def run_teacher_inference(ctx: WorkerContext, claim: Claim, check: StopCheck) -> StageResult:
    if job_kind(claim.spec) == "inference":
        return _run_batch_inference(ctx, claim, check)
    inputs = load_inputs(ctx, claim.spec)
    # Online KD runs the teacher in the training loop; only evaluation's logits are cached.
    datasets = {field: inputs.datasets[field] for field in cached_fields(inputs)}
    names = job_tensors(inputs.spec)
    # Feature losses: the named teacher tensors, cached beside the logits; a pass that
    # computes them caches the logits too, so the logits pass below finds them.
    tensors, computed = (
        cache_tensors(ctx, check, inputs.teacher, datasets, names) if names else ({}, set())
    )
    keys, sources = _logits_for(ctx, claim, check, inputs.teacher, datasets)
    sources.update({field: "computed" for field in computed})
    outputs: dict[str, object] = {"logits": keys, "details": {"teacher_outputs": sources}}
    if names:
        outputs["tensors"] = tensors
    return StageResult(outputs=outputs)


def _run_batch_inference(ctx: WorkerContext, claim: Claim, check: StopCheck) -> StageResult:
    """A batch inference job: the model over one dataset. The logits land under the same
    cache key a distillation job's teacher stage reads, so a later job with this model
    as its teacher and this dataset does not run the model again."""
    spec = InferenceJobCreate.model_validate(claim.spec)
    model, dataset = read(ctx, "reading the job's model and dataset", lambda s: _pair(s, spec))
    keys, sources = _logits_for(ctx, claim, check, model, {"dataset_id": dataset})
    key = keys["dataset_id"]
    shape = np.load(ctx.store.local_path(key), mmap_mode="r", allow_pickle=False).shape
    logits = {
        "samples": int(shape[0]),
        "classes": int(shape[1]),
        "bytes": ctx.store.size(key),
        "source": sources["dataset_id"],
    }
    return StageResult(
        outputs={"logits": keys, "details": {"teacher_outputs": sources}},
        summary={"logits": logits, "model_id": model.id, "dataset_id": dataset.id},
    )


def _pair(session: Session, spec: InferenceJobCreate) -> tuple[Model, Dataset]:
    model, dataset = session.get(Model, spec.model_id), session.get(Dataset, spec.dataset_id)
    if model is None or dataset is None:
        gone = "model" if model is None else "dataset"
        raise DistillError(f"The {gone} was deleted while the job waited; resubmit the job.")
    session.expunge_all()
    return model, dataset
