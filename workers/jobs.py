"""A job's row as the stages see it: claim, progress, advance, finish. Each
function is one short transaction; the SQL lives in core.repository."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update

from core import repository
from core.models import Job, Metric, utcnow
from core.queues import JobStatus, Pool, Stage, TaskName
from workers.context import WorkerContext


class JobCancelled(Exception):
    """Raised inside a stage when the user cancelled the job."""


@dataclass(frozen=True)
class ClaimedJob:
    id: str
    tenant_id: str
    name: str
    spec: dict[str, Any]
    started_at: Any


def claim(ctx: WorkerContext, job_id: str, stage: str) -> ClaimedJob | None:
    """Take the job for this stage, or None when another delivery already did."""
    with ctx.sessions.begin() as session:
        result = session.execute(repository.claim_stage(job_id, stage, ctx.worker_id))
        if result.rowcount == 0:  # type: ignore[attr-defined]
            # Cancelled while its message waited in the queue: settle it here.
            session.execute(
                update(Job)
                .where(Job.id == job_id, Job.queued_stage == stage, Job.cancel_requested.is_(True))
                .values(status=JobStatus.CANCELLED.value, queued_stage=None, finished_at=utcnow())
            )
            return None
        job = session.get(Job, job_id)
        assert job is not None
        if job.started_at is None:
            job.started_at = utcnow()
        return ClaimedJob(job.id, job.tenant_id, job.name, dict(job.spec), job.started_at)


def live_gpu_workers(ctx: WorkerContext) -> int:
    live = repository.live_workers(Pool.GPU.value, utcnow(), ctx.settings.heartbeat_timeout_s)
    with ctx.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(live.subquery())) or 0)


def advance(
    ctx: WorkerContext, job_id: str, next_stage: Stage, placement: str, progress: float
) -> None:
    """Hand the job to its next stage: commit the row, then send the message."""
    from workers.app import celery_app

    pool = repository.resolve_pool(placement, live_gpu_workers(ctx))
    with ctx.sessions.begin() as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.RUNNING.value)
            .values(queued_stage=next_stage.value, queued_pool=pool, progress=progress)
        )
    celery_app.send_task(TaskName.RUN_STAGE.value, args=[job_id, next_stage.value], queue=pool)


def set_stage(ctx: WorkerContext, job_id: str, stage: Stage, progress: float | None = None) -> None:
    values: dict[str, Any] = {"stage": stage.value, "heartbeat_at": utcnow()}
    if progress is not None:
        values["progress"] = progress
    with ctx.sessions.begin() as session:
        session.execute(update(Job).where(Job.id == job_id).values(**values))


def record_epoch(
    ctx: WorkerContext,
    job_id: str,
    epoch: int,
    step: int,
    values: dict[str, float],
    progress: float,
    prefix: str = "",
) -> None:
    """One transaction per epoch: the metric rows and the job's progress. The
    job's `epoch` counts the student's epochs; a baseline run only moves progress."""
    row: dict[str, Any] = {"progress": progress, "heartbeat_at": utcnow()}
    if not prefix:
        row["epoch"] = epoch
    with ctx.sessions.begin() as session:
        session.add_all(
            Metric(job_id=job_id, step=step, epoch=epoch, name=prefix + name, value=float(value))
            for name, value in values.items()
        )
        session.execute(update(Job).where(Job.id == job_id).values(**row))


def finish(ctx: WorkerContext, job_id: str, status: JobStatus, **values: Any) -> None:
    with ctx.sessions.begin() as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(status=status.value, queued_stage=None, finished_at=utcnow(), **values)
        )


class CancelCheck:
    """Reads the cancel flag at most once per `interval` seconds, so the
    training loop can call it every step for the price of a clock read."""

    def __init__(self, ctx: WorkerContext, job_id: str, interval: float = 1.0) -> None:
        self.ctx, self.job_id, self.interval = ctx, job_id, interval
        self._next = 0.0
        self.cancelled = False

    def __call__(self) -> bool:
        now = time.monotonic()
        if now < self._next:
            return self.cancelled
        self._next = now + self.interval
        with self.ctx.sessions() as session:
            self.cancelled = bool(session.scalar(repository.cancel_requested(self.job_id)))
        return self.cancelled

    def raise_if_cancelled(self) -> None:
        self._next = 0.0
        if self():
            raise JobCancelled
