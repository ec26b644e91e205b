"""The reaper and the sweeper as a worker runs them, every heartbeat: take
back stages whose worker went silent, give up on uploads that stopped the
inspector too often, re-send messages that were lost (stages, and uploads
whose message was lost or whose inspector died), and now and then collect
unreferenced blobs. The SQL and the transitions live in core.recovery,
core.inspection and core.blobs; this module only loops, resolves pools and
sends after each commit."""

from __future__ import annotations

import logging
import threading
import time

from core import blobs, inspection, recovery
from core.dispatch import Message, inspect_message, stage_message
from core.models import Dataset, Model, utcnow
from core.queues import Pool, TaskName
from core.recovery import StaleStage
from core.stages import BY_NAME
from workers.context import WorkerContext
from workers.jobs import dispatch, pool_for

log = logging.getLogger("stillhouse.worker")
UPLOADS = ((Model, TaskName.INSPECT_MODEL), (Dataset, TaskName.INSPECT_DATASET))


def reap(ctx: WorkerContext) -> None:
    """Re-queue (up to max_attempts) or end stages whose worker stopped heartbeating;
    then give up on the uploads whose inspector died too often."""
    settings = ctx.settings
    with ctx.sessions() as session:
        rows = session.execute(recovery.stale_stages(utcnow(), settings.heartbeat_timeout_s)).all()
    for row in rows:
        stale = StaleStage(**row._asdict())
        pool = pool_for(ctx, BY_NAME[stale.name], stale.spec)
        with ctx.sessions.begin() as session:
            result = recovery.reap(
                session, stale, settings.heartbeat_timeout_s, settings.max_attempts, pool
            )
        if result is None:
            continue
        log.warning(
            "job %s: worker %s went silent in stage %s (attempt %d); %s",
            stale.job_id,
            stale.worker_id,
            stale.name,
            stale.attempts,
            f"re-queued on {pool}" if isinstance(result, Message) else f"job {result}",
        )
        if isinstance(result, Message):
            dispatch(result)
    give_up_uploads(ctx)
    record_pass(ctx, "reaper")


def give_up_uploads(ctx: WorkerContext) -> None:
    """Mark invalid the uploads whose inspection started `max_inspect_attempts` times
    and whose last inspector went silent: the file kills the inspector."""
    settings = ctx.settings
    timeout, attempts = settings.heartbeat_timeout_s, settings.max_inspect_attempts
    for entity, _ in UPLOADS:
        with ctx.sessions() as session:
            ids = session.scalars(inspection.exhausted(entity, utcnow(), timeout, attempts)).all()
        for row_id in ids:
            with ctx.sessions.begin() as session:
                gave_up = inspection.give_up(session, entity, row_id, timeout, attempts)
            if gave_up:
                log.warning(
                    "%s %s stopped the inspector %d times; marked invalid",
                    entity.__tablename__,
                    row_id,
                    attempts,
                )


def sweep(ctx: WorkerContext) -> None:
    """Re-send the messages of this worker's own pool that waited unclaimed past
    `resend_after_s` while this worker sat idle: had the message been in the
    queue, this idle worker would have taken it, so it was lost (a send that
    failed, a broker restarted without persistence). A busy pool's waiting
    stages are left alone. Re-sending a message that was not lost is harmless:
    the claim makes the second delivery a no-op."""
    if ctx.claim is not None:
        return  # busy: a waiting message may simply be behind this one
    settings = ctx.settings
    now, after = utcnow(), settings.resend_after_s
    timeout, attempts = settings.heartbeat_timeout_s, settings.max_inspect_attempts
    with ctx.sessions() as session:
        stages = session.execute(recovery.unclaimed_stages(now, after, pool=ctx.pool)).all()
        uploads = [
            (entity, task, row)
            for entity, task in UPLOADS
            if ctx.pool == Pool.CPU.value  # inspections run on the cpu pool
            for row in session.execute(
                recovery.unsettled_uploads(entity, now, after, timeout, attempts)
            ).all()
        ]
    for stage in stages:
        with ctx.sessions.begin() as session:
            won = recovery.mark_resent(session, stage.id, stage.queued_at)
        if won:
            log.warning("job %s: stage %s waited unclaimed; re-sending", stage.job_id, stage.name)
            dispatch(stage_message(stage.job_id, stage.name, stage.pool))
    for entity, task, row in uploads:
        with ctx.sessions.begin() as session:
            won = recovery.mark_upload_resent(session, entity, row.id, row.updated_at)
        if won:
            log.warning("%s %s waited for inspection; re-sending", entity.__tablename__, row.id)
            dispatch(inspect_message(task, row.id))
    if ctx.pool == Pool.CPU.value:
        _collect_garbage_now_and_then(ctx)
    record_pass(ctx, "sweeper")


def record_pass(ctx: WorkerContext, name: str) -> None:
    """A completed pass, for /metrics (core.recovery.record_pass). A sweep skipped because
    this worker is busy records nothing: the sweeper's age grows while every worker is busy."""
    with ctx.sessions.begin() as session:
        recovery.record_pass(session, name, ctx.worker_id)


def _collect_garbage_now_and_then(ctx: WorkerContext) -> None:
    """A collection lists the whole store, so it runs beside the heartbeat, never in it."""
    interval = ctx.settings.gc_interval_s
    if interval <= 0 or time.monotonic() - ctx.gc_started < interval:
        return
    if ctx.gc_thread is not None and ctx.gc_thread.is_alive():
        return
    ctx.gc_started = time.monotonic()
    ctx.gc_thread = threading.Thread(target=collect_garbage, args=(ctx,), daemon=True)
    ctx.gc_thread.start()


def collect_garbage(ctx: WorkerContext) -> None:
    try:
        with ctx.sessions() as session:
            report = blobs.collect(ctx.store, session, ctx.settings.gc_grace_s)
    except Exception:
        log.exception("collecting unreferenced blobs failed")
        return
    log.info(
        "blob collection: %d deleted, %d bytes reclaimed (%d blobs, %d referenced, %d young)",
        report.deleted,
        report.reclaimed_bytes,
        report.blobs,
        report.referenced,
        report.young,
    )
