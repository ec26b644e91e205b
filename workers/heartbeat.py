"""The worker's heartbeat thread: it records this worker (pool, device,
memory, versions, current job) in the database, keeps its running job's
heartbeat fresh, and reaps jobs whose worker stopped heartbeating."""

from __future__ import annotations

import logging
import platform
import socket
import threading
from datetime import UTC, datetime
from typing import Any

from celery.signals import worker_ready, worker_shutdown
from sqlalchemy import delete, update

from core import repository
from core.models import Job, Worker, utcnow
from core.queues import JobStatus, TaskName
from workers.context import WorkerContext, context
from workers.jobs import live_gpu_workers

log = logging.getLogger("stillhouse.worker")
LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)
_stop = threading.Event()


def device_facts(device: str) -> dict[str, Any]:
    import torch

    facts: dict[str, Any] = {"device_name": platform.processor() or platform.machine()}
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        facts.update(device_name=props.name, memory_bytes=int(props.total_memory))
    else:
        try:
            import os

            facts["memory_bytes"] = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            facts["memory_bytes"] = None
    return facts


def versions() -> dict[str, str]:
    import onnxruntime
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def beat(ctx: WorkerContext, facts: dict[str, Any]) -> None:
    now = utcnow()
    with ctx.sessions.begin() as session:
        row = session.get(Worker, ctx.worker_id)
        if row is None:
            row = Worker(
                id=ctx.worker_id,
                hostname=socket.gethostname(),
                pool=ctx.pool,
                device=ctx.device,
                started_at=now,
                versions=facts["versions"],
            )
            session.add(row)
        row.device_name = facts.get("device_name")
        row.memory_bytes = facts.get("memory_bytes")
        row.current_job_id = ctx.current_job_id
        row.last_heartbeat = now
        if ctx.current_job_id is not None:
            session.execute(repository.touch_job(ctx.current_job_id, ctx.worker_id))


def reap(ctx: WorkerContext) -> None:
    """Re-queue (up to max_attempts) or fail jobs whose worker went silent."""
    from workers.app import celery_app

    resend: list[tuple[str, str, str]] = []
    with ctx.sessions.begin() as session:
        stale = session.scalars(
            repository.stale_running_jobs(
                utcnow(), ctx.settings.heartbeat_timeout_s
            ).with_for_update(skip_locked=True)
        )
        for job in stale:
            if job.attempt < ctx.settings.max_attempts and job.stage and job.queued_stage is None:
                placement = job.spec.get("placement", {}).get(
                    "teacher" if job.stage == "teacher_inference" else "student", "auto"
                )
                pool = repository.resolve_pool(placement, live_gpu_workers(ctx))
                job.status, job.queued_stage, job.queued_pool = (
                    JobStatus.QUEUED.value,
                    job.stage,
                    pool,
                )
                resend.append((job.id, job.stage, pool))
                log.warning("job %s: worker %s went silent; re-queued", job.id, job.worker_id)
            else:
                job.status = JobStatus.FAILED.value
                job.finished_at = utcnow()
                job.error = (
                    f"The worker running stage {job.stage} stopped responding "
                    f"{job.attempt} time(s) (crashed or out of memory); resubmit the job, "
                    "perhaps with a smaller batch size."
                )
    for job_id, stage, pool in resend:
        celery_app.send_task(TaskName.RUN_STAGE.value, args=[job_id, stage], queue=pool)


def _loop(ctx: WorkerContext) -> None:
    facts = {**device_facts(ctx.device), "versions": versions()}
    while not _stop.is_set():
        try:
            beat(ctx, facts)
            reap(ctx)
        except Exception:  # keep beating through a database blip
            log.exception("heartbeat failed")
        _stop.wait(ctx.settings.worker_heartbeat_s)


@worker_ready.connect
def start_heartbeat(**_: Any) -> None:
    ctx = context()
    beat(ctx, {**device_facts(ctx.device), "versions": versions()})
    threading.Thread(target=_loop, args=(ctx,), name="stillhouse-heartbeat", daemon=True).start()
    log.info("worker %s serving pool %s on %s", ctx.worker_id, ctx.pool, ctx.device)


@worker_shutdown.connect
def stop_heartbeat(**_: Any) -> None:
    _stop.set()
    ctx = context()
    with ctx.sessions.begin() as session:
        session.execute(delete(Worker).where(Worker.id == ctx.worker_id))
        if ctx.current_job_id is not None:  # let the next reaper re-queue it at once
            session.execute(
                update(Job).where(Job.id == ctx.current_job_id).values(heartbeat_at=LONG_AGO)
            )
