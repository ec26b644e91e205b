"""A stage as its worker sees it: claim it, watch for a cancel or a lost
lease, and end it. Each function is one short transaction around a transition
of core.lifecycle; messages go out after the commit, through core.dispatch."""

from __future__ import annotations

import logging
import time
from typing import Any

from core import lifecycle, repository
from core.dispatch import Message, send
from core.lifecycle import Claim, LeaseLost, NotClaimed, Student
from core.models import utcnow
from core.queues import JobStatus, Pool
from core.stages import BY_NAME, StageDef, next_stage
from workers.app import celery_app
from workers.context import WorkerContext

log = logging.getLogger("stillhouse.worker")


class JobCancelled(Exception):
    """Raised inside a stage when the user cancelled the job."""


def dispatch(message: Message) -> None:
    send(celery_app, message)


def live_gpu_workers(ctx: WorkerContext) -> int:
    query = repository.count_live_workers(
        Pool.GPU.value, utcnow(), ctx.settings.heartbeat_timeout_s
    )
    with ctx.sessions() as session:
        return int(session.scalar(query) or 0)


def pool_for(ctx: WorkerContext, stage: StageDef, spec: dict[str, Any]) -> str:
    return repository.resolve_pool(stage.requested_pool(spec), live_gpu_workers(ctx))


def claim(ctx: WorkerContext, job_id: str, stage: str) -> Claim | None:
    """Take the stage under a fresh lease, or None when it is not waiting
    (a duplicate or late delivery, a cancelled or finished job)."""
    try:
        with ctx.sessions.begin() as session:
            return lifecycle.claim(session, job_id, stage, ctx.worker_id)
    except NotClaimed:
        return None


def complete(
    ctx: WorkerContext,
    claim: Claim,
    outputs: dict[str, Any],
    student: Student | None = None,
    summary: dict[str, Any] | None = None,
) -> JobStatus | None:
    """End the held stage: hand the job to its next stage, or finish it."""
    following = next_stage(claim.stage)
    pool = pool_for(ctx, following, claim.spec) if following is not None else None
    with ctx.sessions.begin() as session:
        result = lifecycle.complete(session, claim, outputs, pool, student, summary)
    if isinstance(result, Message):
        dispatch(result)
        return None
    return result


def cancel(ctx: WorkerContext, claim: Claim) -> None:
    with ctx.sessions.begin() as session:
        lifecycle.cancel(session, claim)


def fail(ctx: WorkerContext, claim: Claim, error: str) -> None:
    with ctx.sessions.begin() as session:
        lifecycle.fail(session, claim, error)


def report_progress(ctx: WorkerContext, claim: Claim, fraction: float) -> None:
    """Move the job's progress to `fraction` of the way through the held stage."""
    start, end = BY_NAME[claim.stage].progress
    with ctx.sessions.begin() as session:
        lifecycle.fence(session, claim, progress=start + (end - start) * fraction)


class StopCheck:
    """Answers "should the stage stop?": the user cancelled, or this worker lost
    its lease. It asks the database at most once per `interval` seconds, so the
    training loop can call it every step for the price of a clock read."""

    def __init__(self, ctx: WorkerContext, claim: Claim, interval: float = 1.0) -> None:
        self.ctx, self.claim, self.interval = ctx, claim, interval
        self._next = 0.0
        self.cancelled = False
        self.lost = False

    def __call__(self) -> bool:
        if self.ctx.lease_lost.is_set():
            self.lost = True
        now = time.monotonic()
        if self.lost or self.cancelled or now < self._next:
            return self.lost or self.cancelled
        self._next = now + self.interval
        with self.ctx.sessions() as session:
            cancelled, held = lifecycle.cancel_requested(session, self.claim)
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
