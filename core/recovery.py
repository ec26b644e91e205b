"""Recovery, run from every worker's heartbeat thread: the reaper takes back
stages whose worker went silent; the sweeper re-sends stages whose message
was lost, and uploads whose message was lost or whose inspector died (their
claim went stale, core.inspection). All change rows only through conditional
UPDATEs (see core.lifecycle), so any number of workers may run them at once."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from core.dispatch import Message, stage_message
from core.inspection import claimable
from core.lifecycle import end_job, lock_job
from core.models import Job, JobStage, MaintenanceRun, utcnow
from core.queues import JobStatus, ResourceStatus, StageStatus


@dataclass(frozen=True)
class StaleStage:
    stage_id: str
    job_id: str
    name: str
    lease: str
    attempts: int
    worker_id: str | None
    spec: dict[str, Any]


def stale_stages(now: datetime, timeout_s: float, limit: int = 100) -> Any:
    """Claimed stages whose heartbeat is older than the timeout: their worker died or froze."""
    return (
        select(
            JobStage.id.label("stage_id"),
            JobStage.job_id,
            JobStage.name,
            JobStage.lease,
            JobStage.attempts,
            JobStage.worker_id,
            Job.spec,
        )
        .join(Job, Job.id == JobStage.job_id)
        .where(
            JobStage.status == StageStatus.RUNNING.value,
            JobStage.heartbeat_at < now - timedelta(seconds=timeout_s),
        )
        .limit(limit)
    )


def reap(
    session: Session, stale: StaleStage, timeout_s: float, max_attempts: int, pool: str
) -> Message | JobStatus | None:
    """Take a stale stage back: re-queue it (its message to send after commit),
    or end the job when attempts are used up or a cancel was asked. None when
    the stage moved on meanwhile (its worker came back, or another reaper won)."""
    lock_job(session, stale.job_id)
    cancelled = bool(session.scalar(select(Job.cancel_requested).where(Job.id == stale.job_id)))
    give_up = cancelled or stale.attempts >= max_attempts
    now = utcnow()
    if cancelled:
        values: dict[str, Any] = {"status": StageStatus.CANCELLED.value, "finished_at": now}
    elif give_up:
        values = {"status": StageStatus.FAILED.value, "finished_at": now}
    else:
        values = {"status": StageStatus.QUEUED.value, "pool": pool, "queued_at": now}
    taken = session.execute(
        update(JobStage)
        .where(
            JobStage.id == stale.stage_id,
            JobStage.lease == stale.lease,
            JobStage.status == StageStatus.RUNNING.value,
            JobStage.heartbeat_at < now - timedelta(seconds=timeout_s),
        )
        .values(lease=None, **values)
    )
    if taken.rowcount == 0:  # type: ignore[attr-defined]
        return None
    if cancelled:
        end_job(session, stale.job_id, JobStatus.CANCELLED)
        return JobStatus.CANCELLED
    if give_up:
        error = (
            f"The worker running stage {stale.name} stopped responding {stale.attempts} "
            "time(s) (it crashed, was killed or ran out of memory); resubmit the job, perhaps "
            "with a smaller batch size or on a pool with more memory."
        )
        session.execute(update(JobStage).where(JobStage.id == stale.stage_id).values(error=error))
        end_job(session, stale.job_id, JobStatus.FAILED, error=error)
        return JobStatus.FAILED
    lock_job(session, stale.job_id, status=JobStatus.QUEUED.value)
    return stage_message(stale.job_id, stale.name, pool)


def unclaimed_stages(now: datetime, after_s: float, pool: str, limit: int = 100) -> Any:
    """A pool's queued stages whose message has waited longer than `after_s` unclaimed."""
    return (
        select(JobStage.id, JobStage.job_id, JobStage.name, JobStage.pool, JobStage.queued_at)
        .join(Job, Job.id == JobStage.job_id)
        .where(
            JobStage.status == StageStatus.QUEUED.value,
            JobStage.pool == pool,
            JobStage.queued_at < now - timedelta(seconds=after_s),
            Job.status == JobStatus.QUEUED.value,
        )
        .order_by(JobStage.queued_at)
        .limit(limit)
    )


def mark_resent(session: Session, stage_id: str, seen_queued_at: datetime) -> bool:
    """Compare-and-set on queued_at, so of several sweepers one re-sends."""
    return _touch_if_unchanged(
        session, JobStage, stage_id, StageStatus.QUEUED.value, "queued_at", seen_queued_at
    )


def _touch_if_unchanged(
    session: Session, entity: Any, row_id: str, status: str, column: str, seen: datetime
) -> bool:
    """Set `column` to now where the row still has `status` and the `seen` value."""
    stamp = getattr(entity, column)
    result = session.execute(
        update(entity)
        .where(entity.id == row_id, entity.status == status, stamp == seen)
        .values({column: utcnow()})
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def unsettled_uploads(
    entity: Any,
    now: datetime,
    after_s: float,
    timeout_s: float,
    max_attempts: int,
    limit: int = 100,
) -> Any:
    """Uploads pending inspection for `after_s` that no live worker holds, with attempts
    left: their message was lost, or the worker inspecting them died."""
    return (
        select(entity.id, entity.updated_at)
        .where(
            claimable(entity, now, timeout_s),
            entity.inspect_attempts < max_attempts,
            entity.updated_at < now - timedelta(seconds=after_s),
        )
        .order_by(entity.updated_at)
        .limit(limit)
    )


def mark_upload_resent(session: Session, entity: Any, row_id: str, seen: datetime) -> bool:
    return _touch_if_unchanged(
        session, entity, row_id, ResourceStatus.PENDING.value, "updated_at", seen
    )


def record_pass(session: Session, name: str, worker_id: str) -> None:
    """Upsert when this worker last completed a pass of `name` (reaper, sweeper): the
    gateway's /metrics shows how long ago the newest was. The worker's own row only
    (core.models.MaintenanceRun says why)."""
    dialect = session.get_bind().dialect.name
    build = postgresql.insert if dialect == "postgresql" else sqlite.insert
    values = {"last_run_at": utcnow()}
    session.execute(
        build(MaintenanceRun)
        .values(name=name, worker_id=worker_id, **values)
        .on_conflict_do_update(index_elements=["name", "worker_id"], set_=values)
    )
