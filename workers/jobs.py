"""A stage as its worker sees it: claim it, watch for a cancel or a lost
lease, and end it. Each function is one short transaction around a transition
of core.lifecycle, re-run while the database is unreachable (workers.retry);
messages go out after the commit, through core.dispatch."""

from __future__ import annotations

import logging
import time
from typing import Any

from core import lifecycle, repository
from core.dispatch import Message, send, stage_message
from core.lifecycle import Claim, LeaseLost, NotClaimed, Student
from core.models import utcnow
from core.queues import JobStatus, StageStatus
from core.stages import Placement, StageDef, next_stage, place, stage_of
from workers.app import celery_app
from workers.context import WorkerContext
from workers.retry import MAX_WAIT_S, brief, is_transient, read, transact

log = logging.getLogger("stillhouse.worker")


class JobCancelled(Exception):
    """Raised inside a stage when the user cancelled the job."""


def dispatch(message: Message) -> None:
    send(celery_app, message)


def live_workers(ctx: WorkerContext) -> dict[str, int]:
    query = repository.live_worker_counts(utcnow(), ctx.settings.heartbeat_timeout_s)
    rows = read(ctx, "counting live workers", lambda s: s.execute(query).all())
    return {str(pool): int(count) for pool, count in rows}


def placement_for(ctx: WorkerContext, stage: StageDef, spec: dict[str, Any]) -> Placement:
    return place(stage, spec, live_workers(ctx))


def pool_for(ctx: WorkerContext, stage: StageDef, spec: dict[str, Any]) -> str:
    return placement_for(ctx, stage, spec).pool


def claim(ctx: WorkerContext, job_id: str, stage: str) -> Claim | None:
    """Take the stage under a fresh lease, or None when it is not waiting
    (a duplicate or late delivery, a cancelled or finished job, another
    worker's stage). A stage that still names this worker is adopted
    (lifecycle.adopt): its message is neither dropped nor run twice."""
    what = f"claiming job {job_id} stage {stage}"
    try:
        return transact(
            ctx, what, lambda s: lifecycle.claim(s, job_id, stage, ctx.worker_id, ctx.device)
        )
    except NotClaimed:
        pass
    if ctx.claim is not None and (ctx.claim.job_id, ctx.claim.stage) == (job_id, stage):
        log.info(
            "job %s: stage %s is running here now; the repeated message is dropped", job_id, stage
        )
        return None
    try:
        adopted = transact(
            ctx,
            what,
            lambda s: lifecycle.adopt(s, job_id, stage, ctx.worker_id, ctx.settings.max_attempts),
        )
    except NotClaimed:
        return None
    log.warning(
        "job %s: stage %s was still held by this worker from a run that gave up; running it "
        "again under a new lease (attempt %d)",
        job_id,
        stage,
        adopted.attempts,
    )
    return adopted


def complete(
    ctx: WorkerContext,
    claim: Claim,
    outputs: dict[str, Any],
    student: Student | None = None,
    summary: dict[str, Any] | None = None,
) -> JobStatus | None:
    """End the held stage: hand the job to its next stage, or finish it."""
    following = next_stage(claim.spec, claim.stage)
    placed = placement_for(ctx, following, claim.spec) if following is not None else None
    pool, warning = (placed.pool, placed.warning) if placed is not None else (None, None)
    what = f"finishing job {claim.job_id} stage {claim.stage}"
    try:
        result = transact(
            ctx,
            what,
            lambda s: lifecycle.complete(s, claim, outputs, pool, student, summary, warning),
        )
    except LeaseLost:
        if not _landed(ctx, claim):
            raise
        # A try whose commit's answer was lost had finished the stage: carry on from there.
        log.warning(
            "job %s: stage %s had finished before the database blinked", claim.job_id, claim.stage
        )
        if following is None:
            return JobStatus.SUCCEEDED
        assert pool is not None
        # A no-op if a cancel won in that commit: the message then finds nothing to claim.
        result = stage_message(claim.job_id, following.name.value, pool)
    if isinstance(result, Message):
        dispatch(result)
        return None
    return result


def _landed(ctx: WorkerContext, claim: Claim) -> bool:
    status = read(ctx, "checking a lost commit", lambda s: lifecycle.stage_status_under(s, claim))
    return status == StageStatus.SUCCEEDED.value


def cancel(ctx: WorkerContext, claim: Claim) -> None:
    transact(ctx, f"cancelling job {claim.job_id}", lambda s: lifecycle.cancel(s, claim))


def fail(ctx: WorkerContext, claim: Claim, error: str) -> None:
    transact(ctx, f"failing job {claim.job_id}", lambda s: lifecycle.fail(s, claim, error))


def release(ctx: WorkerContext, claim: Claim) -> None:
    """Let the stage go (one try: this runs when the database has already been
    away past the retry budget); the reaper re-queues it at its next pass."""
    with ctx.sessions.begin() as session:
        lifecycle.release(session, claim)


def report_progress(ctx: WorkerContext, claim: Claim, fraction: float) -> None:
    """Move the job's progress to `fraction` of the way through the held stage."""
    start, end = stage_of(claim.spec, claim.stage).progress
    progress = start + (end - start) * fraction
    transact(
        ctx,
        f"recording job {claim.job_id}'s progress",
        lambda s: lifecycle.fence(s, claim, progress=progress),
    )


class StopCheck:
    """Answers "should the stage stop?": the user cancelled, or this worker lost
    its lease. It asks the database at most once per `interval` seconds, so the
    training loop can call it every step for the price of a clock read.

    While the database is unreachable the answer is "go on" (the stage's writes
    wait and retry meanwhile) and the question is asked again with backoff; once
    it has failed for longer than `db_retry_s`, the error is raised."""

    def __init__(self, ctx: WorkerContext, claim: Claim, interval: float = 1.0) -> None:
        self.ctx, self.claim, self.interval = ctx, claim, interval
        self._next = 0.0
        self._failing_since: float | None = None
        self._wait = interval
        self.cancelled = False
        self.lost = False

    def __call__(self) -> bool:
        if self.ctx.lease_lost.is_set():
            self.lost = True
        now = time.monotonic()
        if self.lost or self.cancelled or now < self._next:
            return self.lost or self.cancelled
        self._next = now + self.interval
        try:
            with self.ctx.sessions() as session:
                cancelled, held = lifecycle.cancel_requested(session, self.claim)
        except Exception as exc:
            if not is_transient(exc):
                raise
            if self._failing_since is None:
                self._failing_since, self._wait = now, self.interval
                log.warning(
                    "job %s: cannot check for a cancel (%s); going on",
                    self.claim.job_id,
                    brief(exc),
                )
            elif now - self._failing_since > self.ctx.settings.db_retry_s:
                raise
            self._next, self._wait = now + self._wait, min(self._wait * 2, MAX_WAIT_S)
            return False
        self._failing_since = None
        self.cancelled, self.lost = cancelled, not held
        return self.lost or self.cancelled

    def raise_if_stopped(self) -> None:
        """Ask now (not from the cache) and raise LeaseLost or JobCancelled."""
        if not (self.lost or self.cancelled):
            self._next = 0.0
            self()
        if self.lost:
            raise LeaseLost(f"job {self.claim.job_id}: stage {self.claim.stage} lost its lease")
        if self.cancelled:
            raise JobCancelled

    def pause(self, seconds: float) -> None:
        """Sleep, stopping within a tenth of a second of a cancel (failpoints use it)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self():
                self.raise_if_stopped()
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
