from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status
from sqlalchemy import update

from core import repository
from core.models import Job, utcnow
from core.queues import JobStatus, TaskName
from core.spec import JobCreate
from service.deps import SettingsDep, TenantDep, UowDep
from service.errors import Conflict, NotFound
from service.jobs import service
from service.jobs.schemas import JobPublic, MetricPoint
from service.schemas import Page, paginate

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=JobPublic)
async def create_job(
    uow: UowDep, tenant_id: TenantDep, settings: SettingsDep, body: JobCreate
) -> JobPublic:
    job = await service.create_job(uow.session, tenant_id, body, settings)
    assert job.queued_stage is not None and job.queued_pool is not None
    uow.enqueue(TaskName.RUN_STAGE, [job.id, job.queued_stage], job.queued_pool)
    await uow.commit()
    return JobPublic.model_validate(job)


@router.get("", response_model=Page[JobPublic])
async def list_jobs(
    uow: UowDep,
    tenant_id: TenantDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> Page[JobPublic]:
    rows, next_cursor = await paginate(uow.session, Job, tenant_id, limit, cursor)
    return Page(items=[JobPublic.model_validate(r) for r in rows], next_cursor=next_cursor)


async def _get(uow: UowDep, tenant_id: str, job_id: str) -> Job:
    row = await uow.session.scalar(repository.owned(Job, tenant_id, job_id))
    if row is None:
        raise NotFound.of("job", job_id)
    return row


@router.get("/{job_id}", response_model=JobPublic)
async def get_job(uow: UowDep, tenant_id: TenantDep, job_id: str) -> JobPublic:
    return JobPublic.model_validate(await _get(uow, tenant_id, job_id))


@router.get("/{job_id}/metrics", response_model=list[MetricPoint])
async def job_metrics(
    uow: UowDep,
    tenant_id: TenantDep,
    job_id: str,
    name: str | None = None,
) -> list[MetricPoint]:
    await _get(uow, tenant_id, job_id)
    rows = await uow.session.scalars(repository.job_metrics(job_id, name))
    return [MetricPoint.model_validate(r) for r in rows]


@router.post("/{job_id}/cancel", response_model=JobPublic)
async def cancel_job(uow: UowDep, tenant_id: TenantDep, job_id: str) -> JobPublic:
    job = await _get(uow, tenant_id, job_id)
    where = (Job.id == job_id, Job.tenant_id == tenant_id)
    # Two atomic updates: a queued job is cancelled at once; a running one is
    # flagged and its worker stops at its next check (within about a second).
    queued = await uow.session.execute(
        update(Job)
        .where(*where, Job.status == JobStatus.QUEUED.value)
        .values(
            status=JobStatus.CANCELLED.value,
            cancel_requested=True,
            queued_stage=None,
            finished_at=utcnow(),
        )
    )
    if queued.rowcount == 0:  # type: ignore[attr-defined]
        running = await uow.session.execute(
            update(Job)
            .where(*where, Job.status == JobStatus.RUNNING.value)
            .values(cancel_requested=True)
        )
        if running.rowcount == 0 and job.status != JobStatus.CANCELLED.value:  # type: ignore[attr-defined]
            raise Conflict(f"Job '{job_id}' has already {job.status}; there is nothing to cancel.")
    await uow.commit()
    await uow.session.refresh(job)
    return JobPublic.model_validate(job)
