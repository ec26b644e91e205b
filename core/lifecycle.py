"""The job state machine. Every change of a job's or a stage's status is a
conditional UPDATE that names the state it expects, so two actors racing for
the same change (two deliveries of a message, two reapers, a paused worker
that wakes up) can never both win.

Job status
| from              | to        | when                                                   | by       |
|-------------------|-----------|--------------------------------------------------------|----------|
| (new)             | queued    | POST /v1/jobs; its first stage is queued with it       | gateway  |
| queued            | running   | a worker claims the stage the job waits for            | claim    |
| running           | queued    | a stage finished; the job waits for the next one       | complete |
| running           | queued    | the stage's worker went silent, attempts are left      | reaper   |
| running           | succeeded | the last stage finished (the student is registered)    | complete |
| running           | failed    | a stage failed with a sentence                         | fail     |
| running           | failed    | the stage's worker went silent `max_attempts` times    | reaper   |
| queued            | cancelled | cancel while the job waits                             | gateway  |
| running           | cancelled | the worker sees the cancel flag at a step boundary,    | cancel / |
|                   |           | at a stage's end, or the reaper finds its stage stale  | reaper   |
| succeeded, failed, cancelled | (none) | a finished job never moves again            |          |

Stage status
| from    | to        | when                                                          |
|---------|-----------|---------------------------------------------------------------|
| pending | queued    | the stage before it succeeded (the first: the job was created) |
| queued  | running   | claim: a fresh lease, attempts + 1                            |
| running | succeeded | complete, fenced by the lease                                 |
| running | failed    | fail, fenced by the lease; or the reaper, attempts used up    |
| running | queued    | the reaper: heartbeat older than the timeout, attempts left   |
| pending, queued, running | cancelled | the job was cancelled or failed             |

Fencing: a claim writes a new `lease` on the stage row. Every later write for
that stage (heartbeat, progress, metrics, checkpoint, outputs, the finish)
runs in a transaction that first updates the stage row where the lease still
matches; when it matches nothing the transaction raises `LeaseLost` and rolls
back, and the worker stops that stage.

Lock order: a transaction that changes both rows touches the job row first,
then the stage row, so concurrent transitions queue up instead of deadlocking.

Every worker-side transition that writes the job row marks the session
(core.status.mark), so the job's status record is published after the commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Update, case, func, select, update
from sqlalchemy.orm import Session

from core.dispatch import Message, stage_message
from core.models import Job, JobStage, Model, new_id, utcnow
from core.queues import ACTIVE_JOB_STATUSES, JobStatus, StageStatus
from core.redact import redact_paths
from core.stages import BY_NAME, next_stage, pipeline_of
from core.status import mark

LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)
OPEN_STAGE_STATUSES = (
    StageStatus.PENDING.value,
    StageStatus.QUEUED.value,
    StageStatus.RUNNING.value,
)


class LeaseLost(Exception):
    """This worker no longer holds the stage: it was re-queued after the worker
    went silent (and perhaps claimed by another), or the job ended."""


class NotClaimed(Exception):
    """The stage is not waiting to be claimed (a duplicate or late message)."""


@dataclass(frozen=True)
class Claim:
    job_id: str
    tenant_id: str
    job_name: str
    spec: dict[str, Any]
    stage: str
    stage_id: str
    lease: str
    attempts: int
    checkpoint: dict[str, Any]
    inputs: dict[str, dict[str, Any]]  # the outputs of the job's finished stages, by stage name


@dataclass(frozen=True)
class Student:
    """The model row a successful job registers, in the same transaction as its finish."""

    id: str
    values: dict[str, Any]


# Gateway side: statements the async session executes.


def new_stages(job_id: str, spec: dict[str, Any], first_pool: str) -> list[JobStage]:
    now = utcnow()
    first, *rest = pipeline_of(spec)
    queued = JobStage(
        job_id=job_id,
        name=first.name.value,
        position=0,
        status=StageStatus.QUEUED.value,
        pool=first_pool,
        attempts=0,
        queued_at=now,
    )
    pending = [
        JobStage(
            job_id=job_id,
            name=d.name.value,
            position=i,
            status=StageStatus.PENDING.value,
            attempts=0,
        )
        for i, d in enumerate(rest, start=1)
    ]
    return [queued, *pending]


def request_cancel(job_id: str, tenant_id: str) -> Any:
    """One statement for both cases, so it cannot fall between them while a stage
    hands over: a queued job is cancelled at once (its stage's message then finds
    nothing to claim); a running one is flagged and its worker stops at the next
    step boundary. RETURNING gives the job's status after the update."""
    waiting = Job.status == JobStatus.QUEUED.value
    return (
        update(Job)
        .where(Job.id == job_id, Job.tenant_id == tenant_id, Job.status.in_(ACTIVE_JOB_STATUSES))
        .values(
            cancel_requested=True,
            status=case((waiting, JobStatus.CANCELLED.value), else_=Job.status),
            finished_at=case((waiting, utcnow()), else_=Job.finished_at),
        )
        .returning(Job.status)
    )


def close_open_stages(job_id: str, status: StageStatus) -> Update:
    return (
        update(JobStage)
        .where(JobStage.job_id == job_id, JobStage.status.in_(OPEN_STAGE_STATUSES))
        .values(status=status.value, finished_at=utcnow())
    )


# Worker side: transitions run inside the caller's (sync) transaction.


def lock_job(session: Session, job_id: str, **values: Any) -> int:
    """Touch the job row first (see "Lock order"); returns how many rows matched.
    With no values it only takes the row's lock (updated_at set to itself)."""
    mark(session, job_id)
    result = session.execute(
        update(Job).where(Job.id == job_id).values(**(values or {"updated_at": Job.updated_at}))
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def claim(session: Session, job_id: str, stage: str, worker_id: str, device: str = "cpu") -> Claim:
    """Take a queued stage under a fresh lease, or raise NotClaimed."""
    mark(session, job_id)
    now = utcnow()
    taken = session.execute(
        update(Job)
        .where(
            Job.id == job_id,
            Job.stage == stage,
            Job.status.in_(ACTIVE_JOB_STATUSES),
            Job.cancel_requested.is_(False),
        )
        .values(
            status=JobStatus.RUNNING.value,
            started_at=func.coalesce(Job.started_at, now),
            progress=BY_NAME[stage].progress[0] if stage in BY_NAME else Job.progress,
        )
    )
    lease = new_id()
    held = session.execute(
        update(JobStage)
        .where(
            JobStage.job_id == job_id,
            JobStage.name == stage,
            JobStage.status == StageStatus.QUEUED.value,
        )
        .values(
            status=StageStatus.RUNNING.value,
            lease=lease,
            worker_id=worker_id,
            device=device,
            attempts=JobStage.attempts + 1,
            heartbeat_at=now,
            started_at=func.coalesce(JobStage.started_at, now),
            error=None,
        )
    )
    if taken.rowcount == 0 or held.rowcount == 0:  # type: ignore[attr-defined]
        raise NotClaimed(f"job {job_id}: stage {stage} is not waiting to be claimed")
    return _claim_of(session, job_id, stage, lease)


def adopt(session: Session, job_id: str, stage: str, worker_id: str, max_attempts: int) -> Claim:
    """Take back, under a fresh lease, a running stage that names this worker but
    that this worker no longer runs: its run here gave up while the database was
    away, or the answer to its claim's commit was lost. A message for it must
    neither be dropped (the job would wait for the reaper) nor start a second
    run beside the first (the worker runs one task at a time, so the first has
    ended). Counts an attempt, as the reaper's re-queue would; else NotClaimed."""
    lock_job(session, job_id)  # the job row first (see "Lock order")
    running = session.scalar(
        select(Job.id).where(
            Job.id == job_id, Job.stage == stage, Job.status == JobStatus.RUNNING.value
        )
    )
    lease = new_id()
    held = session.execute(
        update(JobStage)
        .where(
            JobStage.job_id == job_id,
            JobStage.name == stage,
            JobStage.status == StageStatus.RUNNING.value,
            JobStage.worker_id == worker_id,
            JobStage.attempts < max_attempts,
        )
        .values(lease=lease, attempts=JobStage.attempts + 1, heartbeat_at=utcnow(), error=None)
    )
    if running is None or held.rowcount == 0:  # type: ignore[attr-defined]
        raise NotClaimed(f"job {job_id}: stage {stage} is not held by worker {worker_id}")
    return _claim_of(session, job_id, stage, lease)


def _claim_of(session: Session, job_id: str, stage: str, lease: str) -> Claim:
    job = session.execute(select(Job.tenant_id, Job.name, Job.spec).where(Job.id == job_id)).one()
    rows = session.scalars(select(JobStage).where(JobStage.job_id == job_id)).all()
    mine = next(r for r in rows if r.name == stage)
    return Claim(
        job_id=job_id,
        tenant_id=job.tenant_id,
        job_name=job.name,
        spec=dict(job.spec),
        stage=stage,
        stage_id=mine.id,
        lease=lease,
        attempts=mine.attempts,
        checkpoint=dict(mine.checkpoint or {}),
        inputs={
            r.name: dict(r.outputs or {}) for r in rows if r.status == StageStatus.SUCCEEDED.value
        },
    )


def fence(session: Session, claim: Claim, **job_values: Any) -> None:
    """Open a fenced write: update the job (progress, epoch, ...) and renew the
    stage's heartbeat, only while this claim's lease holds; else LeaseLost."""
    lock_job(session, claim.job_id, **job_values)
    held = session.execute(
        update(JobStage)
        .where(
            JobStage.id == claim.stage_id,
            JobStage.lease == claim.lease,
            JobStage.status == StageStatus.RUNNING.value,
        )
        .values(heartbeat_at=utcnow())
    )
    if held.rowcount == 0:  # type: ignore[attr-defined]
        raise LeaseLost(
            f"job {claim.job_id}: stage {claim.stage} is no longer held by lease {claim.lease}"
        )


def heartbeat(session: Session, stage_id: str, lease: str, at: datetime | None = None) -> bool:
    """Renew a held stage's heartbeat (one statement, no job lock); False: the lease is gone."""
    result = session.execute(
        update(JobStage)
        .where(
            JobStage.id == stage_id,
            JobStage.lease == lease,
            JobStage.status == StageStatus.RUNNING.value,
        )
        .values(heartbeat_at=at or utcnow())
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def stage_status_under(session: Session, claim: Claim) -> str | None:
    """The held stage's status while its row still carries this claim's lease (None:
    another claim took it). A worker whose commit's answer was lost asks it to learn
    whether the commit landed."""
    return session.scalar(
        select(JobStage.status).where(JobStage.id == claim.stage_id, JobStage.lease == claim.lease)
    )


def save_stage_state(session: Session, claim: Claim, **values: Any) -> None:
    """Record checkpoint / resume facts on the held stage (call after `fence`)."""
    session.execute(update(JobStage).where(JobStage.id == claim.stage_id).values(**values))


def cancel_requested(session: Session, claim: Claim) -> tuple[bool, bool]:
    """(the user asked to cancel, this claim still holds the stage): one read."""
    row = session.execute(
        select(Job.cancel_requested, JobStage.lease, JobStage.status)
        .join(JobStage, JobStage.job_id == Job.id)
        .where(Job.id == claim.job_id, JobStage.id == claim.stage_id)
    ).one_or_none()
    if row is None:
        return True, False
    return bool(row.cancel_requested), (
        row.lease == claim.lease and row.status == StageStatus.RUNNING.value
    )


def end_job(session: Session, job_id: str, status: JobStatus, **values: Any) -> None:
    mark(session, job_id)
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_(ACTIVE_JOB_STATUSES))
        .values(status=status.value, finished_at=utcnow(), **values)
    )
    closing = StageStatus.CANCELLED if status != JobStatus.SUCCEEDED else StageStatus.SUCCEEDED
    session.execute(close_open_stages(job_id, closing))


def complete(
    session: Session,
    claim: Claim,
    outputs: dict[str, Any],
    next_pool: str | None,
    student: Student | None = None,
    summary: dict[str, Any] | None = None,
    warning: str | None = None,
) -> Message | JobStatus:
    """Finish the held stage. Queue the next stage (returning its message, to send after
    commit) with the `warning` its placement raised, or finish the job; a cancel wins."""
    fence(session, claim)
    job = session.execute(
        select(Job.cancel_requested, Job.warnings).where(Job.id == claim.job_id)
    ).one()
    if job.cancel_requested:
        end_job(session, claim.job_id, JobStatus.CANCELLED)
        return JobStatus.CANCELLED
    now = utcnow()
    session.execute(
        update(JobStage)
        .where(JobStage.id == claim.stage_id)
        .values(status=StageStatus.SUCCEEDED.value, finished_at=now, outputs=outputs)
    )
    following = next_stage(claim.spec, claim.stage)
    if following is not None:
        assert next_pool is not None, "a stage with a successor needs the successor's pool"
        session.execute(
            update(JobStage)
            .where(
                JobStage.job_id == claim.job_id,
                JobStage.name == following.name.value,
                JobStage.status == StageStatus.PENDING.value,
            )
            .values(status=StageStatus.QUEUED.value, pool=next_pool, queued_at=now)
        )
        warnings = list(job.warnings or [])
        lock_job(
            session,
            claim.job_id,
            status=JobStatus.QUEUED.value,
            stage=following.name.value,
            progress=following.progress[0],
            warnings=warnings + [warning] if warning and warning not in warnings else warnings,
        )
        return stage_message(claim.job_id, following.name.value, next_pool)
    values: dict[str, Any] = {"progress": 1.0, "summary": summary}
    if student is not None:
        session.add(Model(id=student.id, **student.values))
        session.flush()
        values["student_model_id"] = student.id
    end_job(session, claim.job_id, JobStatus.SUCCEEDED, **values)
    return JobStatus.SUCCEEDED


def cancel(session: Session, claim: Claim) -> None:
    """The worker saw the cancel flag: the held stage and the job end cancelled."""
    fence(session, claim)
    end_job(session, claim.job_id, JobStatus.CANCELLED)


def fail(session: Session, claim: Claim, error: str) -> None:
    error = redact_paths(error)  # the user sees what went wrong, not the server's folders
    fence(session, claim)
    session.execute(
        update(JobStage)
        .where(JobStage.id == claim.stage_id)
        .values(status=StageStatus.FAILED.value, finished_at=utcnow(), error=error)
    )
    end_job(session, claim.job_id, JobStatus.FAILED, error=error)


def release(session: Session, claim: Claim) -> bool:
    """A worker shutting down ages its stage's heartbeat, so the next reaper re-queues it at once."""
    return heartbeat(session, claim.stage_id, claim.lease, at=LONG_AGO)
