from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request, status
from fastapi.responses import JSONResponse, Response
from pydantic import TypeAdapter
from sqlalchemy import Row

from core import lifecycle, repository
from core.models import Job, JobStage
from core.queues import JobStatus, StageStatus
from core.spec import TEXT_PATTERN, AnyJobCreate, InferenceJobCreate
from service import examples
from service.deps import SettingsDep, StoreDep, TenantDep, UowDep
from service.downloads import BINARY, download
from service.errors import Conflict, NotFound, responses
from service.idempotency import IdempotencyDep
from service.jobs import service
from service.jobs.schemas import (
    JobPublic,
    JobReport,
    JobStatusPublic,
    MetricPoint,
    StatusQuery,
    parse_statuses,
)
from service.jobs.status import conditional, read_status
from service.schemas import CursorQuery, IdPath, LimitQuery, Page, decode_cursor, trim_page

# The metrics answer through this adapter, built once (no response_model re-validation).
POINTS = TypeAdapter(list[MetricPoint])

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=responses(401, 503))
NOT_MODIFIED: dict[int | str, dict[str, Any]] = {
    304: {"description": "Not modified: `If-None-Match` names the current `ETag`; no body."}
}


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobPublic,
    responses=responses(
        400,
        413,
        422,
        details={
            413: examples.BODY_TOO_LARGE,
            422: f"teacher model '{examples.TEACHER_ID}' names no model of yours.",
        },
    ),
)
async def create_job(
    uow: UowDep,
    tenant_id: TenantDep,
    settings: SettingsDep,
    body: Annotated[AnyJobCreate, Body(openapi_examples=examples.JOB_CREATE_EXAMPLES)],
    idem: IdempotencyDep,
) -> JobPublic | JSONResponse:
    """A distillation job (`kind` "distill", the default) or a batch inference job
    (`kind` "inference": one model over one dataset, its logits kept)."""
    replayed = await idem.replay(uow, body.model_dump(mode="json"))
    if replayed is not None:
        return replayed
    if isinstance(body, InferenceJobCreate):
        created = await service.create_inference_job(uow.session, tenant_id, body, settings)
    else:
        created = await service.create_job(uow.session, tenant_id, body, settings)
    job, stages, message = created
    uow.enqueue(message)
    uow.touch(job.id)
    return await idem.commit(uow, JobPublic.of(job, stages), status.HTTP_202_ACCEPTED)


@router.get("", response_model=Page[JobPublic], responses=responses(422))
async def list_jobs(
    uow: UowDep,
    tenant_id: TenantDep,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
    status: StatusQuery = None,
) -> Response:
    """The tenant's jobs, newest first; with `status`, only those in one of the statuses."""
    statuses = parse_statuses(status)
    after = decode_cursor(cursor) if cursor else None
    read = await uow.session.execute(repository.job_page(tenant_id, limit + 1, after, statuses))
    rows, next_cursor = trim_page(list(read), limit)
    stages: dict[str, list[Row[Any]]] = {}
    if rows:
        for stage in await uow.session.execute(repository.stage_rows([r.id for r in rows])):
            stages.setdefault(stage.job_id, []).append(stage)
    # Serialized here: FastAPI's response_model path would validate every item (twice).
    return Response(JobPublic.page_json(rows, stages, next_cursor), media_type="application/json")


async def _get(uow: UowDep, tenant_id: str, job_id: str) -> Job:
    row = await uow.session.scalar(repository.owned(Job, tenant_id, job_id))
    if row is None:
        raise NotFound.of("job", job_id)
    return row


async def _stages(uow: UowDep, job_ids: list[str]) -> dict[str, list[JobStage]]:
    by_job: dict[str, list[JobStage]] = {}
    if job_ids:
        for stage in await uow.session.scalars(repository.job_stages(job_ids)):
            by_job.setdefault(stage.job_id, []).append(stage)
    return by_job


async def _public(uow: UowDep, job: Job) -> JobPublic:
    return JobPublic.of(job, (await _stages(uow, [job.id])).get(job.id, []))


@router.get("/{job_id}", response_model=JobPublic, responses={**NOT_MODIFIED, **responses(404)})
async def get_job(request: Request, uow: UowDep, tenant_id: TenantDep, job_id: IdPath) -> Response:
    """The whole job, with its spec and summary. It carries an `ETag`; a poll that sends it
    back as `If-None-Match` gets a bodiless 304 while nothing changed. For polling, the
    lighter `/status` answers from a cache."""
    public = await _public(uow, await _get(uow, tenant_id, job_id))
    return conditional(request, public.model_dump_json().encode())


@router.get(
    "/{job_id}/status",
    response_model=JobStatusPublic,
    responses={**NOT_MODIFIED, **responses(404)},
)
async def job_status(request: Request, tenant_id: TenantDep, job_id: IdPath) -> Response:
    """The job less its `spec` and `summary`: status, stage, progress, training epochs and
    the stages' placement. Meant for polling: it is served from a copy the workers refresh
    at every change (the database stays the record), and answers `If-None-Match` with 304."""
    found = await read_status(request.app.state.stillhouse, tenant_id, job_id)
    if found is None:
        raise NotFound.of("job", job_id)
    etag, body = found
    return conditional(request, body, etag)


@router.get("/{job_id}/metrics", response_model=list[MetricPoint], responses=responses(404, 422))
async def job_metrics(
    uow: UowDep,
    tenant_id: TenantDep,
    job_id: IdPath,
    name: Annotated[
        str | None,
        Query(
            max_length=100, pattern=TEXT_PATTERN, description="Only this series, e.g. train_loss."
        ),
    ] = None,
    since_epoch: Annotated[
        int | None,
        Query(
            ge=0,
            le=2**31 - 1,
            description="Only points of epochs after this one (epoch > since_epoch): pass the "
            "last epoch you hold to fetch only new points.",
        ),
    ] = None,
) -> Response:
    """The job's metric points in the order they were written."""
    await _get(uow, tenant_id, job_id)
    rows = await uow.session.execute(repository.job_metrics(job_id, name, since_epoch))
    points = POINTS.validate_python(list(rows), from_attributes=True)
    return Response(POINTS.dump_json(points), media_type="application/json")


@router.get(
    "/{job_id}/report",
    response_model=JobReport,
    responses=responses(
        404,
        409,
        details={
            409: f"Job '{examples.JOB_ID}' is running (stage training); its report is written "
            "when the job succeeds."
        },
    ),
)
async def job_report(uow: UowDep, tenant_id: TenantDep, job_id: IdPath) -> JobReport:
    """Teacher, distilled student, no-KD baseline and int8 variant side by side: accuracy,
    agreement, KL, calibration, size, and latency and throughput on the benchmark pool."""
    job = await _get(uow, tenant_id, job_id)
    report = (job.summary or {}).get("report")
    if report is None:
        raise Conflict(service.no_report(job))
    stages = (await _public(uow, job)).stages
    return JobReport.model_validate({**report, "stages": stages})


@router.get(
    "/{job_id}/logits",
    response_class=Response,
    responses={
        **BINARY,
        **responses(
            404,
            409,
            details={
                409: f"Job '{examples.JOB_ID}' is running; its logits can be downloaded once "
                "it succeeds."
            },
        ),
    },
)
async def job_logits(
    uow: UowDep, tenant_id: TenantDep, store: StoreDep, job_id: IdPath
) -> Response:
    """A batch inference job's logits, one row per sample, as a NumPy `.npy` file."""
    job = await _get(uow, tenant_id, job_id)
    key = service.logits_key(job, await uow.session.scalars(repository.job_stages([job.id])))
    return download(store, key, f"{job.name}-logits.npy")


@router.post(
    "/{job_id}/cancel",
    response_model=JobPublic,
    responses=responses(
        404,
        409,
        details={
            409: f"Job '{examples.JOB_ID}' has already succeeded; there is nothing to cancel."
        },
    ),
)
async def cancel_job(uow: UowDep, tenant_id: TenantDep, job_id: IdPath) -> JobPublic:
    job = await _get(uow, tenant_id, job_id)
    after = await uow.session.scalar(lifecycle.request_cancel(job_id, tenant_id))
    if after == JobStatus.CANCELLED.value:
        await uow.session.execute(lifecycle.close_open_stages(job_id, StageStatus.CANCELLED))
    elif after is None:
        await uow.session.refresh(job)
        if job.status == JobStatus.CANCELLED.value:  # cancelling twice is no error
            return await _public(uow, job)
        raise Conflict(f"Job '{job_id}' has already {job.status}; there is nothing to cancel.")
    uow.touch(job_id)
    await uow.commit()
    await uow.session.refresh(job)
    return await _public(uow, job)
