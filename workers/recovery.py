"""The reaper and the sweeper as a worker runs them, every heartbeat: take
back stages whose worker went silent, and re-send messages that were lost.
The SQL and the transitions live in core.recovery; this module only loops,
resolves pools and sends after each commit."""

from __future__ import annotations

import logging

from core import recovery
from core.dispatch import Message, inspect_message, stage_message
from core.models import Dataset, Model, utcnow
from core.queues import TaskName
from core.recovery import StaleStage
from core.stages import BY_NAME
from workers.context import WorkerContext
from workers.jobs import dispatch, pool_for

log = logging.getLogger("stillhouse.worker")
UPLOADS = ((Model, TaskName.INSPECT_MODEL), (Dataset, TaskName.INSPECT_DATASET))


def reap(ctx: WorkerContext) -> None:
    """Re-queue (up to max_attempts) or end stages whose worker stopped heartbeating."""
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


def sweep(ctx: WorkerContext) -> None:
    """Re-send stages and inspections that waited unclaimed past `resend_after_s`
    while a worker of their pool sat idle: their message was lost (a send that
    failed, a broker restarted without persistence). A re-send of a message that
    was not lost is harmless: the claim makes the second delivery a no-op."""
    now, settings = utcnow(), ctx.settings
    with ctx.sessions() as session:
        idle = set(session.scalars(recovery.idle_pools(now, settings.heartbeat_timeout_s)))
        if not idle:
            return
        stages = session.execute(recovery.unclaimed_stages(now, settings.resend_after_s)).all()
        uploads = [
            (entity, task, row)
            for entity, task in UPLOADS
            for row in session.execute(
                recovery.unsettled_uploads(entity, now, settings.resend_after_s)
            ).all()
        ]
    for stage in stages:
        if stage.pool not in idle:
            continue
        with ctx.sessions.begin() as session:
            won = recovery.mark_resent(session, stage.id, stage.queued_at)
        if won:
            log.warning("job %s: stage %s waited unclaimed; re-sending", stage.job_id, stage.name)
            dispatch(stage_message(stage.job_id, stage.name, stage.pool))
    for entity, task, row in uploads:
        if inspect_message(task, row.id).queue not in idle:
            continue
        with ctx.sessions.begin() as session:
            won = recovery.mark_upload_resent(session, entity, row.id, row.updated_at)
        if won:
            log.warning("%s %s waited for inspection; re-sending", entity.__tablename__, row.id)
            dispatch(inspect_message(task, row.id))
