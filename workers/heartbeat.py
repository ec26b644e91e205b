"""The worker's heartbeat thread: it records this worker (pool, device,
memory, versions, current job) in the database, renews the lease of the stage
it holds (and stops that stage when the lease is gone), then runs the reaper
and the sweeper."""

from __future__ import annotations

import logging
import platform
import socket
import threading
from collections.abc import Callable
from typing import Any

from celery.signals import worker_ready, worker_shutdown
from sqlalchemy import delete

from core import lifecycle
from core.models import Worker, utcnow
from core.status import mark
from workers.context import WorkerContext, context
from workers.recovery import reap, sweep
from workers.retry import brief, is_transient, retrying

log = logging.getLogger("stillhouse.worker")
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
    claim = ctx.claim
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
        row.current_job_id = claim.job_id if claim is not None else None
        row.last_heartbeat = now
    if claim is not None:
        with ctx.sessions.begin() as session:
            held = lifecycle.heartbeat(session, claim.stage_id, claim.lease)
            if held:  # the record's heartbeat_at follows (core.status)
                mark(session, claim.job_id)
        if not held and ctx.claim is claim:
            log.warning(
                "job %s: stage %s was taken from this worker (it was silent too long, or the "
                "job ended); stopping it",
                claim.job_id,
                claim.stage,
            )
            ctx.lease_lost.set()


def _loop(ctx: WorkerContext) -> None:
    facts = {**device_facts(ctx.device), "versions": versions()}
    while not _stop.is_set():
        # Retried with backoff through a blip, so the held stage's lease is renewed as soon
        # as the database is back: before a reaper can find it stale.
        _safely(
            "heartbeat",
            lambda: retrying(ctx.settings.db_retry_s, "heartbeat", lambda: beat(ctx, facts)),
        )
        _safely("reaper", lambda: reap(ctx))
        _safely("sweeper", lambda: sweep(ctx))
        _stop.wait(ctx.settings.worker_heartbeat_s)


def _safely(name: str, step: Callable[[], None]) -> None:
    """Run one step; whatever it raises is logged and the thread goes on beating."""
    try:
        step()
    except Exception as exc:
        if is_transient(exc):  # one line per beat, not a traceback, while the database is away
            log.warning("%s skipped: %s", name, brief(exc))
        else:
            log.exception("%s failed", name)


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
    claim = ctx.claim
    try:
        with ctx.sessions.begin() as session:
            session.execute(delete(Worker).where(Worker.id == ctx.worker_id))
            if claim is not None:  # let the next reaper re-queue its stage at once
                lifecycle.release(session, claim)
    except Exception as exc:  # the database is away: the reaper takes the stage back later
        log.warning("could not sign worker %s off: %s", ctx.worker_id, brief(exc))
