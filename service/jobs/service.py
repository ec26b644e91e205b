"""Rules for a new job: every referenced resource exists, is ready and fits
the others, so a job that is queued can run."""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from core import lifecycle, repository
from core.config import Settings
from core.dispatch import Message, stage_message
from core.models import Dataset, Job, JobStage, Model, new_id, utcnow
from core.queues import JobStatus, Pool, ResourceStatus
from core.spec import DATASET_FIELDS, JobCreate, student_param_count
from core.stages import PIPELINE
from service.errors import Unprocessable

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
    want = _features((teacher.input_shape or [None])[1:])
    have = _features(train.sample_shape)
    if want is not None and have is not None and want != have:
        raise Unprocessable(
            f"Teacher '{teacher.id}' takes {want} input features per sample but the datasets "
            f"hold {have} ({train.sample_shape}); upload data shaped for this teacher."
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


def _check_size(
    body: JobCreate, teacher: Model, train: Dataset, student: Model | None, limit: int
) -> None:
    """Refuse a student too big to train before it takes a worker's memory. The zoo
    student's count comes from its params and the data's shape (the output width is
    the teacher's); an uploaded one's from its inspection."""
    if student is not None:
        count = student.num_params
    else:
        count = student_param_count(
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


async def live_gpu_workers(session: AsyncSession, settings: Settings) -> int:
    query = repository.count_live_workers(Pool.GPU.value, utcnow(), settings.heartbeat_timeout_s)
    return int(await session.scalar(query) or 0)


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
    train = datasets["train_dataset_id"]
    student = await _check_student(session, tenant_id, body, teacher, train)
    _check_size(body, teacher, train, student, settings.max_student_params)
    spec = body.model_dump(mode="json", exclude_none=True)
    first = PIPELINE[0]
    pool = repository.resolve_pool(
        first.requested_pool(spec), await live_gpu_workers(session, settings)
    )
    job = Job(
        id=new_id(),
        tenant_id=tenant_id,
        name=body.name,
        spec=spec,
        status=JobStatus.QUEUED.value,
        stage=first.name.value,
    )
    session.add(job)
    await session.flush()  # the stages reference the job row
    stages = lifecycle.new_stages(job.id, pool)
    session.add_all(stages)
    await session.flush()
    return job, stages, stage_message(job.id, first.name.value, pool)
