"""Rules for a new job: every referenced resource exists, is ready and fits
the others, so a job that is queued can run."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from catalog.students import FAMILIES, param_count, parse_params, shape_problem
from core import lifecycle, repository
from core.config import Settings
from core.dispatch import Message, stage_message
from core.models import Dataset, Job, JobStage, Model, new_id, utcnow
from core.queues import ACTIVE_JOB_STATUSES, JobStatus, ResourceStatus, Stage
from core.spec import DATASET_FIELDS, InferenceJobCreate, JobCreate
from core.stages import job_kind, pipeline_of, place
from service.errors import Conflict, NotFound, Unprocessable

TEACHER_FORMATS = ("onnx", "safetensors", "torchscript", "torch_export")


async def _ready(session: AsyncSession, entity: Any, kind: str, tenant_id: str, rid: str) -> Any:
    row = await session.scalar(repository.owned(entity, tenant_id, rid))
    if row is None:
        raise Unprocessable(f"{kind} '{rid}' names no {kind.split()[-1]} of yours.")
    if row.status == ResourceStatus.PENDING.value:
        raise Unprocessable(
            f"{kind} '{rid}' is still being inspected; retry when its status is 'ready'."
        )
    if row.status != ResourceStatus.READY.value:
        raise Unprocessable(f"{kind} '{rid}' is invalid and cannot be used: {row.error}")
    return row


def _features(shape: list[int | None] | None) -> int | None:
    if not shape or any(d is None for d in shape):
        return None
    return math.prod(int(d) for d in shape if d is not None)


def _check_features(model: Model, data: Dataset, who: str, holds: str) -> None:
    want = _features((model.input_shape or [None])[1:])
    have = _features(data.sample_shape)
    if want is not None and have is not None and want != have:
        raise Unprocessable(
            f"{who} takes {want} input features per sample but {holds} {have} "
            f"({data.sample_shape}); upload data shaped for this model."
        )


def _check_fit(body: JobCreate, teacher: Model, datasets: dict[str, Dataset]) -> None:
    train = datasets["train_dataset_id"]
    if body.needs_labels and not train.labeled:
        raise Unprocessable(
            f"Loss 'ce' needs ground-truth labels but train dataset '{train.id}' has no 'y'; "
            "drop the 'ce' term or upload the dataset with labels."
        )
    shapes = {field: d.sample_shape for field, d in datasets.items()}
    if len({tuple(s or []) for s in shapes.values()}) > 1:
        listed = ", ".join(f"{f} {s}" for f, s in shapes.items())
        raise Unprocessable(f"The datasets' sample shapes differ ({listed}); they must match.")
    width = (teacher.output_shape or [None])[-1]
    if width is None:
        raise Unprocessable(f"Teacher '{teacher.id}' has no fixed output width to distill from.")
    _check_features(teacher, train, f"Teacher '{teacher.id}'", "the datasets hold")
    weights = body.training.class_weights
    if isinstance(weights, list) and len(weights) != width:
        raise Unprocessable(
            f"training.class_weights has {len(weights)} entries but teacher '{teacher.id}' "
            f"outputs {width} classes; give one weight per class."
        )
    # Validation is the val set, else a holdout of the train set (labeled as it is).
    val = datasets.get("val_dataset_id") or train
    stopping = body.training.early_stopping
    if stopping is not None and stopping.metric == "accuracy" and not val.labeled:
        raise Unprocessable(
            f"training.early_stopping watches 'accuracy' but validation dataset '{val.id}' has "
            "no labels; watch 'agreement' or 'kl', or validate on a labeled dataset."
        )
    if weights is not None and not body.needs_labels and not body.baseline:
        raise Unprocessable(
            "training.class_weights weigh the 'ce' loss but the job has no 'ce' term with a "
            "weight above 0 and no baseline; add one or drop class_weights."
        )
    for field, dataset in datasets.items():
        if dataset.labeled and dataset.num_classes is not None and dataset.num_classes > width:
            raise Unprocessable(
                f"The teacher outputs {width} classes but {field.removesuffix('_id')} "
                f"'{dataset.id}' has labels up to {dataset.num_classes - 1}; teacher outputs "
                "and class ids must agree."
            )


async def _check_student(
    session: AsyncSession, tenant_id: str, body: JobCreate, teacher: Model, train: Dataset
) -> Model | None:
    """The uploaded model a job trains further (None for a zoo student), once it fits."""
    if body.student.model_id is None:
        return None
    student = await _ready(session, Model, "student model", tenant_id, body.student.model_id)
    if student.format != "safetensors" or not student.spec:
        raise Unprocessable(
            f"Student model '{student.id}' must be safetensors weights with a zoo spec to train further."
        )
    if list(student.spec.get("input_shape", [])) != list(train.sample_shape or []):
        raise Unprocessable(
            f"Student model '{student.id}' takes samples of shape {student.spec.get('input_shape')} "
            f"but the datasets hold {train.sample_shape}."
        )
    if student.spec.get("num_classes") != (teacher.output_shape or [None])[-1]:
        raise Unprocessable(
            f"Student model '{student.id}' has {student.spec.get('num_classes')} outputs but the "
            f"teacher has {(teacher.output_shape or [None])[-1]}."
        )
    return student


def _check_family_fits(body: JobCreate, train: Dataset) -> None:
    """The zoo family takes the data's samples: their shape, and token ids (int64) for a
    student built with vocab_size. An unknown dtype (a dataset inspected before canonical
    arrays were recorded) is left to the engine, which checks the ids again."""
    architecture = body.student.architecture or ""
    parsed = parse_params(architecture, body.student.params)  # validated with the spec
    problem = shape_problem(architecture, parsed, train.sample_shape or [])
    if problem is not None:
        raise Unprocessable(problem)
    # A float student may read integer data (pixels, counts) as floats; a token student
    # cannot read float data as ids.
    x_dtype = (train.arrays or {}).get("x_dtype")
    if getattr(parsed, "vocab_size", None) is not None and x_dtype not in (None, "int64"):
        raise Unprocessable(
            f"The student '{architecture}' reads int64 token ids (vocab_size is set) but "
            f"dataset '{train.id}' holds {x_dtype} samples; upload integer token ids or leave "
            "vocab_size out for float sequences."
        )


def _check_tensors(body: JobCreate, teacher: Model) -> None:
    """Feature terms name tensors the teacher has and layers the zoo family has; an uploaded
    student's layer is checked by the worker, which builds it."""
    terms = body.tensor_terms
    if not terms:
        return
    if body.teacher_outputs == "online":
        raise Unprocessable(
            f"Loss '{terms[0].name}' reads intermediate tensors, which only cached teacher "
            "outputs provide; set teacher_outputs to 'cached' or drop that term."
        )
    names = [str(t["name"]) for t in teacher.tensors or []]
    family = FAMILIES.get(body.student.architecture or "")
    for term in terms:
        wanted = getattr(term, "teacher_tensor", None)
        if wanted is not None and wanted not in names:
            valid = ", ".join(names[:50]) if names else "none (only ONNX teachers list tensors)"
            raise Unprocessable(
                f"Loss '{term.name}' names teacher_tensor '{wanted}' but teacher "
                f"'{teacher.id}' has no such tensor; valid: {valid}."
            )
        layer = getattr(term, "student_layer", None)
        if family is not None and layer is not None and layer not in family.feature_layers:
            raise Unprocessable(
                f"Loss '{term.name}' names student_layer '{layer}' but student architecture "
                f"'{family.name}' has the feature layers {', '.join(family.feature_layers)}."
            )


def _check_size(
    body: JobCreate, teacher: Model, train: Dataset, student: Model | None, limit: int
) -> None:
    """Refuse a student too big to train before it takes a worker's memory. The zoo
    student's count comes from its params and the data's shape (the output width is
    the teacher's); an uploaded one's from its inspection."""
    if student is not None:
        count = student.num_params
    else:
        _check_family_fits(body, train)
        count = param_count(
            body.student.architecture or "",
            body.student.params,
            train.sample_shape or [],
            int((teacher.output_shape or [0])[-1] or 0),
        )
    if count is not None and count > limit:
        raise Unprocessable(
            f"The student would have {count:,} parameters but this server trains students of "
            f"at most {limit:,} (STILLHOUSE_MAX_STUDENT_PARAMS); use fewer or narrower layers."
        )


async def live_workers(session: AsyncSession, settings: Settings) -> dict[str, int]:
    query = repository.live_worker_counts(utcnow(), settings.heartbeat_timeout_s)
    return {str(pool): int(count) for pool, count in (await session.execute(query)).all()}


async def _new_job(
    session: AsyncSession, tenant_id: str, name: str, spec: dict[str, Any], settings: Settings
) -> tuple[Job, list[JobStage], Message]:
    """The job row and its stage rows, the first queued on its pool, and the first stage's
    message. Every stage whose pool has no live worker now adds a warning: the job is
    accepted and waits, and says why."""
    live = await live_workers(session, settings)
    placements = [place(stage, spec, live) for stage in pipeline_of(spec)]
    first = pipeline_of(spec)[0]
    job = Job(
        id=new_id(),
        tenant_id=tenant_id,
        name=name,
        spec=spec,
        status=JobStatus.QUEUED.value,
        stage=first.name.value,
        warnings=list(dict.fromkeys(p.warning for p in placements if p.warning is not None)),
    )
    session.add(job)
    await session.flush()  # the stages reference the job row
    stages = lifecycle.new_stages(job.id, spec, placements[0].pool)
    session.add_all(stages)
    await session.flush()
    return job, stages, stage_message(job.id, first.name.value, placements[0].pool)


async def create_inference_job(
    session: AsyncSession, tenant_id: str, body: InferenceJobCreate, settings: Settings
) -> tuple[Job, list[JobStage], Message]:
    """A batch inference job: the model and the dataset must be ready and fit."""
    model = await _ready(session, Model, "model", tenant_id, body.model_id)
    if model.format not in TEACHER_FORMATS:
        raise Unprocessable(f"Model '{model.id}' is {model.format}; it cannot be run.")
    dataset = await _ready(session, Dataset, "dataset", tenant_id, body.dataset_id)
    _check_features(model, dataset, f"Model '{model.id}'", f"dataset '{dataset.id}' holds")
    spec = body.model_dump(mode="json", exclude_none=True)
    return await _new_job(session, tenant_id, body.name, spec, settings)


async def create_job(
    session: AsyncSession, tenant_id: str, body: JobCreate, settings: Settings
) -> tuple[Job, list[JobStage], Message]:
    """The job row, its stage rows (the first queued), and the first stage's message."""
    if body.training.epochs > settings.max_epochs:
        raise Unprocessable(
            f"training.epochs is {body.training.epochs} but this server allows at most "
            f"{settings.max_epochs}."
        )
    teacher = await _ready(session, Model, "teacher model", tenant_id, body.teacher_model_id)
    if teacher.format not in TEACHER_FORMATS:
        raise Unprocessable(f"Teacher '{teacher.id}' is {teacher.format}; it cannot be run.")
    datasets: dict[str, Dataset] = {}
    for field in DATASET_FIELDS:
        rid = getattr(body, field)
        if rid is not None:
            kind = field.removesuffix("_id").replace("_", " ")
            datasets[field] = await _ready(session, Dataset, kind, tenant_id, rid)
    _check_fit(body, teacher, datasets)
    _check_tensors(body, teacher)
    train = datasets["train_dataset_id"]
    student = await _check_student(session, tenant_id, body, teacher, train)
    _check_size(body, teacher, train, student, settings.max_student_params)
    spec = body.model_dump(mode="json", exclude_none=True)
    return await _new_job(session, tenant_id, body.name, spec, settings)


def no_report(job: Job) -> str:
    """Why a job has no report yet (or never will), as the 409's sentence."""
    if job_kind(job.spec) == "inference":
        return (
            f"Job '{job.id}' is a batch inference job: it has logits, not a report; download "
            f"them from /v1/jobs/{job.id}/logits."
        )
    if job.status in ACTIVE_JOB_STATUSES:
        return (
            f"Job '{job.id}' is {job.status} (stage {job.stage}); its report is written when "
            "the job succeeds."
        )
    if job.status == JobStatus.SUCCEEDED.value:
        return f"Job '{job.id}' finished before this server wrote reports; run it again."
    return f"Job '{job.id}' {job.status}; only a job that succeeded has a report."


def logits_key(job: Job, stages: Iterable[JobStage]) -> str:
    """The artifact key of a finished batch inference job's logits."""
    if job_kind(job.spec) != "inference":
        raise NotFound(
            f"Job '{job.id}' is a distillation job; only batch inference jobs "
            "(kind 'inference') have a logits download."
        )
    if job.status != JobStatus.SUCCEEDED.value:
        raise Conflict(
            f"Job '{job.id}' is {job.status}; its logits can be downloaded once it succeeds."
        )
    teacher = next(s for s in stages if s.name == Stage.TEACHER_INFERENCE.value)
    return str((teacher.outputs or {})["logits"]["dataset_id"])
