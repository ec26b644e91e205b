"""Every SQL statement the gateway and the workers share. Functions build
statements; callers execute them on a sync (worker) or async (gateway) session,
so the SQL is written once and the transaction stays with the caller."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Delete,
    Insert,
    Select,
    and_,
    delete,
    func,
    select,
    tuple_,
)
from sqlalchemy.dialects import postgresql, sqlite

from core.models import ApiKey, Job, JobStage, MaintenanceRun, Metric, Tenant, Worker
from core.queues import ACTIVE_JOB_STATUSES, StageStatus
from core.stages import TRAINING_RUNS


def tenant_by_name(name: str) -> Select[Any]:
    return select(Tenant).where(Tenant.name == name)


def tenant_id_for_key(key_hash: str) -> Select[Any]:
    return select(ApiKey.tenant_id).where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None))


def owned(entity: Any, tenant_id: str, entity_id: str) -> Select[Any]:
    return select(entity).where(entity.id == entity_id, entity.tenant_id == tenant_id)


def page(
    entity: Any, tenant_id: str, limit: int, after: tuple[datetime, str] | None
) -> Select[Any]:
    """Newest first; `after` is the (created_at, id) of the last row already seen."""
    return keyset(select(entity).where(entity.tenant_id == tenant_id), entity, limit, after)


def keyset(
    query: Select[Any], entity: Any, limit: int, after: tuple[datetime, str] | None
) -> Select[Any]:
    """`query` newest first from after `after`. The row comparison (not `a < x OR (a = x
    AND b < y)`) is what lets PostgreSQL seek the (tenant_id, created_at, id) index to a
    deep page instead of filtering every newer row of the tenant."""
    if after is not None:
        query = query.where(tuple_(entity.created_at, entity.id) < tuple_(*after))
    return query.order_by(entity.created_at.desc(), entity.id.desc()).limit(limit)


# What a job list shows: every column but the tenant's (the JobPublic fields' sources).
JOB_LIST_COLUMNS = tuple(c for c in Job.__table__.c if c.name != "tenant_id")
STAGE_LIST_COLUMNS = tuple(
    getattr(JobStage, name)
    for name in (
        "job_id",
        "name",
        "position",
        "status",
        "pool",
        "worker_id",
        "device",
        "attempts",
        "heartbeat_at",
        "started_at",
        "finished_at",
        "resumed_from_epoch",
        "outputs",
    )
)


def job_page(
    tenant_id: str,
    limit: int,
    after: tuple[datetime, str] | None,
    statuses: Sequence[str] = (),
) -> Select[Any]:
    """A page of a tenant's jobs as plain rows (no ORM identity map: a list only reads),
    only those in `statuses` when given. One status seeks the (tenant_id, status,
    created_at, id) index; several read the tenant's rows in order and filter."""
    query = select(*JOB_LIST_COLUMNS).where(Job.tenant_id == tenant_id)
    if len(statuses) == 1:
        query = query.where(Job.status == statuses[0])
    elif statuses:
        query = query.where(Job.status.in_(statuses))
    return keyset(query, Job, limit, after)


def stage_rows(job_ids: Sequence[str]) -> Select[Any]:
    """The stages of a page of jobs as plain rows, in one query on the unique (job_id, name)."""
    return (
        select(*STAGE_LIST_COLUMNS)
        .where(JobStage.job_id.in_(job_ids))
        .order_by(JobStage.job_id, JobStage.position)
    )


def delete_owned(entity: Any, tenant_id: str, entity_id: str) -> Delete:
    return delete(entity).where(entity.id == entity_id, entity.tenant_id == tenant_id)


def job_metrics(
    job_id: str, name: str | None = None, since_epoch: int | None = None
) -> Select[int, int, str, float]:
    """A job's points in the order they were written; with `since_epoch`, only those of
    later epochs (the (job_id, epoch) index), so a poll reads only what is new."""
    query = select(Metric.step, Metric.epoch, Metric.name, Metric.value).where(
        Metric.job_id == job_id
    )
    if name is not None:
        query = query.where(Metric.name == name)
    if since_epoch is not None:
        query = query.where(Metric.epoch > since_epoch)
    return query.order_by(Metric.id)


def live_workers(pool: str | None, now: datetime, timeout_s: float) -> Select[Any]:
    query = select(Worker).where(Worker.last_heartbeat >= now - timedelta(seconds=timeout_s))
    if pool is not None:
        query = query.where(Worker.pool == pool)
    return query.order_by(Worker.pool, Worker.id)


def live_worker_counts(now: datetime, timeout_s: float) -> Select[str, int]:
    """(pool, live workers) for every pool with at least one live worker: one read
    answers both "is there a GPU worker?" and "does this pool have anyone?"."""
    fresh = Worker.last_heartbeat >= now - timedelta(seconds=timeout_s)
    return select(Worker.pool, func.count()).where(fresh).group_by(Worker.pool)


def job_status_counts() -> Select[str, int]:
    """(status, jobs) over every tenant: the operator's view, for /metrics."""
    return select(Job.status, func.count()).group_by(Job.status)


def queued_stage_stats() -> Select[str | None, int, datetime | None]:
    """(pool, stages queued, oldest queued_at) for every pool with a queued stage; the
    (status, queued_at) index answers it without reading the table."""
    queued = JobStage.status == StageStatus.QUEUED.value
    return (
        select(JobStage.pool, func.count(), func.min(JobStage.queued_at))
        .where(queued)
        .group_by(JobStage.pool)
    )


def maintenance_runs() -> Select[str, datetime]:
    """The newest pass of each task (reaper, sweeper), whichever worker ran it."""
    return select(MaintenanceRun.name, func.max(MaintenanceRun.last_run_at)).group_by(
        MaintenanceRun.name
    )


def active_job_specs(tenant_id: str) -> Select[Any]:
    """The specs of a tenant's queued and running jobs: what a delete must not pull from under."""
    return select(Job.spec).where(Job.tenant_id == tenant_id, Job.status.in_(ACTIVE_JOB_STATUSES))


def workers_seen_by(tenant_id: str) -> Select[Worker, str]:
    """(worker, its current job id if that job is the tenant's, else None): a
    tenant sees the whole fleet but never another tenant's job ids."""
    own_job = and_(Job.id == Worker.current_job_id, Job.tenant_id == tenant_id)
    return (
        select(Worker, Job.id)
        .outerjoin(Job, own_job)
        .order_by(Worker.last_heartbeat.desc())
        .limit(500)
    )


def job_stages(job_ids: list[str]) -> Select[Any]:
    return (
        select(JobStage)
        .where(JobStage.job_id.in_(job_ids))
        .order_by(JobStage.job_id, JobStage.position)
    )


def delete_run_metrics(job_id: str, run: str, after_epoch: int) -> Delete:
    """A resumed run's points past its checkpoint: the re-run writes them again."""
    prefix = TRAINING_RUNS[run]
    others = [p for p in TRAINING_RUNS.values() if p and p != prefix]
    mine: ColumnElement[bool] = (
        Metric.name.like(f"{prefix}%")
        if prefix
        else and_(*(Metric.name.not_like(f"{p}%") for p in others))
    )
    return delete(Metric).where(Metric.job_id == job_id, Metric.epoch > after_epoch, mine)


def insert_metrics(dialect: str) -> Insert:
    """Metric points (execute with the list of rows). A point already stored for its
    (job, series, epoch) wins, so a write re-run after a commit whose answer was lost
    (the database went away mid-commit) adds nothing."""
    build = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return build(Metric).on_conflict_do_nothing(index_elements=["job_id", "name", "epoch"])
