"""Stage 2: train the student (and the no-KD baseline) on the cached teacher
outputs, evaluate both against the teacher, export and register the student."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from core.queues import JobStatus, Stage
from core.spec import JobCreate
from distill.errors import DistillError
from distill.evaluate import evaluate, predict_logits
from distill.export import load_student
from distill.loop import EpochMetrics, TrainConfig, train
from distill.losses import build_loss
from distill.students import build_student
from workers.context import WorkerContext
from workers.jobs import (
    CancelCheck,
    ClaimedJob,
    EpochRecorder,
    JobCancelled,
    finish,
    set_stage,
)
from workers.stages.export import register_student
from workers.stages.inputs import JobInputs, load_arrays, load_inputs, load_logits

HOLDOUT_FRACTION = 0.1  # of the train set, when the job names no validation set


def _split(inputs: JobInputs, ctx: WorkerContext) -> dict[str, Any]:
    """Arrays for training and validation; unlabeled rows carry label -1."""
    store, teacher = ctx.store, inputs.teacher
    train_row = inputs.datasets["train_dataset_id"]
    x, y = load_arrays(store, train_row)
    t = load_logits(store, teacher, train_row)
    y = np.full(len(x), -1, dtype=np.int64) if y is None else y
    if "val_dataset_id" in inputs.datasets:
        val_row = inputs.datasets["val_dataset_id"]
        x_val, y_val = load_arrays(store, val_row)
        t_val, val_source = load_logits(store, teacher, val_row), "val_dataset"
    else:
        order = np.random.default_rng(inputs.spec.training.seed).permutation(len(x))
        cut = max(1, int(len(x) * HOLDOUT_FRACTION))
        hold, keep = order[:cut], order[cut:]
        x_val, y_val, t_val = x[hold], y[hold], t[hold]
        x, y, t = x[keep], y[keep], t[keep]
        y_val = None if (y_val < 0).all() else y_val
        val_source = f"holdout ({cut} samples of the train set)"
    if "transfer_dataset_id" in inputs.datasets:
        transfer_row = inputs.datasets["transfer_dataset_id"]
        x_transfer, _ = load_arrays(store, transfer_row)  # its labels, if any, stay unused
        x = np.concatenate([x, x_transfer.reshape(len(x_transfer), *x.shape[1:])])
        y = np.concatenate([y, np.full(len(x_transfer), -1, dtype=np.int64)])
        t = np.concatenate([t, load_logits(store, teacher, transfer_row)])
    return {
        "x": x,
        "y": y,
        "t": t,
        "x_val": x_val,
        "y_val": y_val,
        "t_val": t_val,
        "val_source": val_source,
    }


def _student(spec: JobCreate, ctx: WorkerContext, sample_shape: tuple[int, ...], width: int) -> Any:
    if spec.student.model_id is not None:
        from core.models import Model

        with ctx.sessions() as session:
            row = session.get(Model, spec.student.model_id)
        if row is None:
            raise DistillError("The student model was deleted while the job waited; resubmit.")
        model, stored_spec = load_student(ctx.store.local_path(row.files["safetensors"]["key"]))
        return model, stored_spec["architecture"], stored_spec["params"]
    torch.manual_seed(spec.training.seed)
    model = build_student(spec.student.architecture or "", spec.student.params, sample_shape, width)
    return model, spec.student.architecture, spec.student.params


def run_training(ctx: WorkerContext, job: ClaimedJob, cancel: CancelCheck) -> None:
    started = time.monotonic()
    inputs = load_inputs(ctx, job.spec)
    spec, data = inputs.spec, _split(inputs, ctx)
    sample_shape = tuple(int(d) for d in data["x"].shape[1:])
    width = int(data["t"].shape[1])
    config = TrainConfig(
        epochs=spec.training.epochs,
        batch_size=spec.training.batch_size,
        lr=spec.training.lr,
        optimizer=spec.training.optimizer,
        weight_decay=spec.training.weight_decay,
        seed=spec.training.seed,
        device=ctx.device,
    )
    with_baseline = spec.baseline and bool((data["y"] >= 0).any())
    runs = 2 if with_baseline else 1
    val = (data["x_val"], data["y_val"], data["t_val"])

    def progress(run_index: int) -> Callable[[EpochMetrics], float]:
        return lambda m: 0.1 + 0.8 * (run_index * config.epochs + m.epoch) / (runs * config.epochs)

    student, architecture, params = _student(spec, ctx, sample_shape, width)
    loss = build_loss([term.engine_dict() for term in spec.losses])
    with EpochRecorder(ctx, job.id, progress(0)) as recorder:
        result = train(
            student,
            data["x"],
            data["y"],
            data["t"],
            loss,
            config,
            val=val,
            on_epoch_end=recorder,
            should_stop=cancel,
        )
    if result.stopped_early:
        raise JobCancelled
    baseline = None
    if with_baseline:
        torch.manual_seed(spec.training.seed)
        baseline = build_student(architecture, params, sample_shape, width)
        ce_only = build_loss([{"name": "ce", "weight": 1.0}])
        with EpochRecorder(ctx, job.id, progress(1), prefix="baseline/") as recorder:
            baseline_result = train(
                baseline,
                data["x"],
                data["y"],
                None,
                ce_only,
                config,
                val=val,
                on_epoch_end=recorder,
                should_stop=cancel,
            )
        if baseline_result.stopped_early:
            raise JobCancelled
    train_seconds = time.monotonic() - started

    set_stage(ctx, job.id, Stage.EVALUATION, progress=0.92)
    x_val, y_val, t_val = val
    teacher_eval = evaluate(t_val, y_val)
    student_eval = evaluate(predict_logits(student, x_val, device=ctx.device), y_val, t_val)
    baseline_eval = (
        evaluate(predict_logits(baseline, x_val, device=ctx.device), y_val, t_val)
        if baseline is not None
        else None
    )

    set_stage(ctx, job.id, Stage.EXPORT, progress=0.95)
    student_spec = {
        "architecture": architecture,
        "params": params,
        "input_shape": list(sample_shape),
        "num_classes": width,
    }
    model_id, sizes = register_student(ctx, job, student, student_spec)
    teacher = inputs.teacher
    summary = {
        "teacher": {
            **teacher_eval,
            "num_params": teacher.num_params,
            "size_bytes": teacher.size_bytes,
        },
        "student": {
            **student_eval,
            "num_params": sizes["num_params"],
            "size_bytes": sizes["onnx_bytes"],
        },
        "baseline": baseline_eval,
        "val_source": data["val_source"],
        "val_samples": int(len(x_val)),
        "train_samples": int(len(data["x"])),
        "labeled_train_samples": int((data["y"] >= 0).sum()),
        "epochs": result.epochs_completed,
        "steps": result.steps,
        "training_seconds": round(train_seconds, 3),
        "compression_ratio": (
            round(teacher.num_params / sizes["num_params"], 3) if teacher.num_params else None
        ),
    }
    finish(
        ctx, job.id, JobStatus.SUCCEEDED, progress=1.0, student_model_id=model_id, summary=summary
    )
