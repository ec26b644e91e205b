"""A job's row as the stages see it: claim, progress, advance, finish. Each
function is one short transaction; the SQL lives in core.repository."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, update

from core import repository
from core.models import Job, Metric, utcnow
from core.queues import JobStatus, Pool, Stage, TaskName
from distill.loop import EpochMetrics
from workers.context import WorkerContext


class JobCancelled(Exception):
    """Raised inside a stage when the user cancelled the job."""


@dataclass(frozen=True)
class ClaimedJob:
    id: str
    tenant_id: str
    name: str
    spec: dict[str, Any]


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
        return ClaimedJob(job.id, job.tenant_id, job.name, dict(job.spec))


def live_gpu_workers(ctx: WorkerContext) -> int:
    query = repository.count_live_workers(
        Pool.GPU.value, utcnow(), ctx.settings.heartbeat_timeout_s
    )
    with ctx.sessions() as session:
        return int(session.scalar(query) or 0)


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
            # `attempt` counts the runs of the current stage: the next one starts afresh.
            .values(queued_stage=next_stage.value, queued_pool=pool, progress=progress, attempt=0)
        )
    celery_app.send_task(TaskName.RUN_STAGE.value, args=[job_id, next_stage.value], queue=pool)


def set_stage(ctx: WorkerContext, job_id: str, stage: Stage, progress: float | None = None) -> None:
    values: dict[str, Any] = {"stage": stage.value, "heartbeat_at": utcnow()}
    if progress is not None:
        values["progress"] = progress
    with ctx.sessions.begin() as session:
        session.execute(update(Job).where(Job.id == job_id).values(**values))


# Seconds an epoch's metrics may wait to share a commit with the next epochs'.
MIN_WRITE_INTERVAL = 1.0


class EpochRecorder:
    """Writes each epoch's metric rows and the job's progress from a background
    thread, so the training loop never waits on a commit; epochs that queue up
    while one commit runs go out together in the next. Use as a context manager:
    leaving it waits for the last write and raises a write error, if any."""

    def __init__(
        self,
        ctx: WorkerContext,
        job_id: str,
        progress: Callable[[EpochMetrics], float],
        prefix: str = "",
    ) -> None:
        self.ctx, self.job_id, self.progress, self.prefix = ctx, job_id, progress, prefix
        self._queue: queue.SimpleQueue[EpochMetrics | None] = queue.SimpleQueue()
        self._error: Exception | None = None
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"metrics-{job_id}", daemon=True)
        self._thread.start()

    def __call__(self, metrics: EpochMetrics) -> None:
        if self._error is not None:
            raise self._error  # the database is failing: stop training rather than lose metrics
        self._queue.put(metrics)

    def __enter__(self) -> EpochRecorder:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        self.close(raise_error=exc_type is None)

    def close(self, raise_error: bool = True) -> None:
        self._closing.set()
        self._queue.put(None)
        self._thread.join()
        if raise_error and self._error is not None:
            raise self._error

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            # Short epochs arrive faster than a commit is worth: gather for a moment, so
            # progress stays live within MIN_WRITE_INTERVAL while tiny jobs write rarely.
            self._closing.wait(MIN_WRITE_INTERVAL)
            while not self._queue.empty():
                batch.append(self._queue.get())
            epochs = [m for m in batch if m is not None]
            if epochs and self._error is None:
                try:
                    self._write(epochs)
                except Exception as exc:  # handed to the training thread at its next epoch
                    self._error = exc
            if None in batch:
                return

    def _write(self, epochs: list[EpochMetrics]) -> None:
        last = epochs[-1]
        # The job's `epoch` counts the student's epochs; a baseline run only moves progress.
        row: dict[str, Any] = {"progress": self.progress(last), "heartbeat_at": utcnow()}
        if not self.prefix:
            row["epoch"] = last.epoch
        points = [
            {
                "job_id": self.job_id,
                "step": m.step,
                "epoch": m.epoch,
                "name": self.prefix + name,
                "value": float(value),
            }
            for m in epochs
            for name, value in m.values.items()
        ]
        with self.ctx.sessions.begin() as session:
            session.execute(insert(Metric), points)
            session.execute(update(Job).where(Job.id == self.job_id).values(**row))


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
