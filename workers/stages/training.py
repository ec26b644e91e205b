"""Stage 2: train the distilled student, then the no-KD baseline, on the
cached teacher outputs, or with teacher_outputs "online" with the teacher run on
each (augmented) batch; the baseline never needs the teacher. Both runs are one stage on one worker (see
docs/architecture.md: the baseline is cheap beside the student, and one stage
keeps one device's data in memory once).

Checkpoints: each run writes one at an epoch's end when `checkpoint_every_s`
has passed since the last, through the fenced recorder. A finished run
records its final weights. A re-run stage skips finished runs and resumes the
others from their last checkpoint, deleting the metric points past it so each
series keeps one point per epoch."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
from sqlalchemy.orm import Session
from torch import nn

from catalog.students import FAMILIES
from core import lifecycle, repository
from core.lifecycle import Claim
from core.models import Model
from core.spec import JobCreate
from core.stages import BY_NAME, TRAINING_RUNS
from distill.checkpoint import TrainState, load_checkpoint
from distill.errors import DistillError
from distill.export import load_student
from distill.loop import EpochMetrics, TrainConfig, TrainResult, train
from distill.losses import build_loss
from distill.selection import EarlyStopping
from distill.students import build_student
from workers.context import WorkerContext
from workers.failpoints import epoch_pause
from workers.jobs import StopCheck
from workers.recorder import EpochRecorder
from workers.retry import read, transact
from workers.stages.inputs import SplitData, load_inputs, split_data, store_weights
from workers.stages.result import StageResult
from workers.stages.teacher import online_teacher


def _initial_model(ctx: WorkerContext, spec: JobCreate, run: str, shape: Any, width: int) -> Any:
    """(model, architecture, params): the zoo student, or the uploaded one's weights."""
    torch.manual_seed(spec.training.seed)
    if spec.student.model_id is None:
        architecture, params = spec.student.architecture or "", spec.student.params
        return build_student(architecture, params, shape, width), architecture, params
    model_id = spec.student.model_id
    row = read(ctx, f"reading student model {model_id}", lambda s: s.get(Model, model_id))
    if row is None:
        raise DistillError("The student model was deleted while the job waited; resubmit.")
    path = ctx.store.local_path(row.files["safetensors"]["key"])
    model, stored = load_student(path, device="cpu", spec=row.spec)
    if run == "baseline":  # the baseline starts from scratch with the same architecture
        model = build_student(stored["architecture"], stored["params"], shape, width)
    return model, stored["architecture"], stored["params"]


def _begin_run(ctx: WorkerContext, claim: Claim, run: str, from_epoch: int) -> None:
    """Drop the run's metric points past its checkpoint (a killed attempt may have
    written some), so the re-run's points are the only ones for those epochs."""
    epoch_column = "epoch" if run == "student" else "baseline_epoch"
    job_values: dict[str, Any] = {"training_run": run, epoch_column: from_epoch}

    def begin(session: Session) -> None:
        lifecycle.fence(session, claim, **job_values)
        session.execute(repository.delete_run_metrics(claim.job_id, run, from_epoch))

    transact(ctx, f"starting job {claim.job_id}'s {run} run", begin)


def _save_state(ctx: WorkerContext, claim: Claim, what: str, **values: Any) -> None:
    def save(session: Session) -> None:
        lifecycle.fence(session, claim)
        lifecycle.save_stage_state(session, claim, **values)

    transact(ctx, f"recording job {claim.job_id}'s {what}", save)


def _resume_point(ctx: WorkerContext, entry: dict[str, Any]) -> TrainState | None:
    key = entry.get("key")
    if key is None or not ctx.store.exists(key):
        return None  # no checkpoint yet (or the store lost it): the run starts over
    return load_checkpoint(ctx.store.local_path(key))


def run_training(ctx: WorkerContext, claim: Claim, check: StopCheck) -> StageResult:
    """Both runs with torch's intra-op threads pinned to settings.training_threads (restored
    after): on CPU a job's metrics are then a function of the job and that count alone."""
    before = torch.get_num_threads()
    threads = ctx.settings.training_threads or before
    torch.set_num_threads(threads)
    try:
        result = _run_training(ctx, claim, check)
    finally:
        torch.set_num_threads(before)
    result.outputs["torch_threads"] = threads
    return result


def _run_training(ctx: WorkerContext, claim: Claim, check: StopCheck) -> StageResult:
    started = time.monotonic()
    inputs = load_inputs(ctx, claim.spec)
    spec, data = inputs.spec, split_data(ctx, claim, inputs)
    shape = tuple(int(d) for d in data.x.shape[1:])
    width = int(data.t_val.shape[1])
    config = TrainConfig(
        epochs=spec.training.epochs,
        batch_size=spec.training.batch_size,
        lr=spec.training.lr,
        optimizer=spec.training.optimizer,
        weight_decay=spec.training.weight_decay,
        lr_schedule=spec.training.lr_schedule,
        warmup_epochs=spec.training.warmup_epochs,
        select=spec.training.select,
        early_stopping=(
            EarlyStopping(**spec.training.early_stopping.model_dump())
            if spec.training.early_stopping is not None
            else None
        ),
        class_weights=(tuple(w) if isinstance(w := spec.training.class_weights, list) else w),
        seed=spec.training.seed,
        augment_noise=spec.training.augment_noise,
        device=ctx.device,
    )
    runs = ["student"] + (["baseline"] if spec.baseline and bool((data.y >= 0).any()) else [])
    checkpoints = dict(claim.checkpoint)
    start, end = BY_NAME[claim.stage].progress
    resumed_from = _resumed_from(checkpoints, config.epochs)
    _save_state(ctx, claim, "resume point", resumed_from_epoch=resumed_from)

    model_spec: dict[str, Any] = {}
    for index, run in enumerate(runs):
        model, architecture, params = _initial_model(ctx, spec, run, shape, width)
        model_spec = {
            "architecture": architecture,
            "params": params,
            "input_shape": list(shape),
            "num_classes": width,
        }
        if checkpoints.get(run, {}).get("weights"):
            continue  # finished in an earlier attempt
        resume = _resume_point(ctx, checkpoints.get(run, {}))
        _begin_run(ctx, claim, run, resume.epoch if resume else 0)
        # The baseline has no teacher term: it is picked by its own accuracy.
        run_config = config if run == "student" else replace(config, select="accuracy")
        if run == "student" and spec.teacher_outputs == "online":
            run_config = replace(config, teacher=online_teacher(ctx, inputs.teacher))

        def progress(m: EpochMetrics, index: int = index) -> float:
            done = (index * config.epochs + m.epoch) / (len(runs) * config.epochs)
            return start + (end - start) * done

        entry = _train_run(
            ctx,
            claim,
            check,
            run,
            model,
            data,
            run_config,
            resume,
            progress,
            checkpoints,
            architecture,
        )
        entry["weights"] = store_weights(ctx.store, model, model_spec)
        checkpoints[run] = entry
        _save_state(ctx, claim, f"finished {run} run", checkpoint=checkpoints)

    student = checkpoints["student"]
    return StageResult(
        outputs={
            "student": {"weights": student["weights"], **_selection(student)},
            "baseline": (
                {
                    "weights": checkpoints["baseline"]["weights"],
                    **_selection(checkpoints["baseline"]),
                }
                if "baseline" in runs
                else None
            ),
            "spec": model_spec,
            "train_samples": int(len(data.x)),
            "labeled_train_samples": int((data.y >= 0).sum()),
            "epochs": config.epochs,
            "steps": student.get("steps"),
            "teacher_outputs": spec.teacher_outputs,
            "augment_noise": spec.training.augment_noise,
            "resumed_from_epoch": resumed_from,
            "training_seconds": round(time.monotonic() - started, 3),
        }
    )


def _resumed_from(checkpoints: dict[str, Any], epochs: int) -> int:
    """Epochs of the distilled student this attempt does not repeat (0: a fresh start)."""
    student = checkpoints.get("student", {})
    if student.get("weights"):
        return epochs
    return int(student.get("epoch", 0)) if student.get("key") else 0


def _train_run(
    ctx: WorkerContext,
    claim: Claim,
    check: StopCheck,
    run: str,
    model: nn.Module,
    data: SplitData,
    config: TrainConfig,
    resume: TrainState | None,
    progress: Any,
    checkpoints: dict[str, Any],
    architecture: str = "",
) -> dict[str, Any]:
    spec = JobCreate.model_validate(claim.spec)
    features = None
    if run == "student":
        family = FAMILIES.get(architecture)
        default_layer = family.feature_layers[0] if family and family.feature_layers else None
        loss = build_loss([term.engine_dict() for term in spec.losses], default_layer)
        teacher_logits, features = data.t, data.features
    else:
        loss = build_loss([{"name": "ce", "weight": 1.0}])
        teacher_logits = None
    val = (data.x_val, data.y_val, data.t_val)
    # The recorder keeps `checkpoints` (every run's entry) in step with the stage row.
    recorder = EpochRecorder(ctx, claim, run, TRAINING_RUNS[run], progress, checkpoints)
    on_epoch_end: Callable[[EpochMetrics], None] = recorder
    pause = epoch_pause(ctx.settings.failpoints, claim)
    if pause > 0:  # fault tests only: hold each epoch open so a kill lands mid-training

        def on_epoch_end(metrics: EpochMetrics) -> None:
            recorder(metrics)
            check.pause(pause)

    with recorder:
        result = train(
            model,
            data.x,
            data.y,
            teacher_logits,
            loss,
            config,
            val=val,
            on_epoch_end=on_epoch_end,
            should_stop=check,
            resume=resume,
            on_checkpoint=recorder.checkpoint,
            checkpoint_every_s=ctx.settings.checkpoint_every_s,
            teacher_features=features,
        )
    if result.stopped_early:
        check.raise_if_stopped()
    return {"epoch": config.epochs, "steps": result.steps, **_run_record(result)}


def _run_record(result: TrainResult) -> dict[str, Any]:
    """What a finished run tells the report: the selected epoch, the last epoch's validation
    figures beside it, and why it stopped early when it did."""
    last = result.history[-1] if result.history else None
    return {
        "best": result.best,
        "selected": result.selected,
        "last_epoch": (
            {
                "epoch": last.epoch,
                **{k: last.values.get(f"val_{k}") for k in ("accuracy", "agreement", "kl")},
            }
            if last is not None
            else None
        ),
        "early_stopped": result.early_stopped,
        "epochs_run": result.epochs_completed,
    }


def _selection(entry: dict[str, Any]) -> dict[str, Any]:
    keys = ("best", "selected", "last_epoch", "early_stopped", "epochs_run")
    return {key: entry.get(key) for key in keys}
