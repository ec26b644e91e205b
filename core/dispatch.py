"""The one way a task message leaves Stillhouse. Messages carry ids only and
are sent after the database commit that makes them true; a send that fails
(the broker is down) is logged and left to the sweeper, because the database
row, not the message, is the record of what has to run."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from celery import Celery

from core.queues import Pool, TaskName

log = logging.getLogger("stillhouse.dispatch")

# A down broker must not hold an HTTP request or a finished stage for long:
# three quick tries, then the sweeper's turn.
RETRY_POLICY = {"max_retries": 2, "interval_start": 0.1, "interval_step": 0.4, "interval_max": 1.0}


@dataclass(frozen=True)
class Message:
    task: TaskName
    args: tuple[str, ...]
    queue: str
    # A message worth nothing after this time (a predict's deadline): a worker that takes it
    # later discards it unrun, and no sweeper sends it again.
    expires: datetime | None = None


def stage_message(job_id: str, stage: str, pool: str) -> Message:
    return Message(TaskName.RUN_STAGE, (job_id, stage), pool)


def inspect_message(task: TaskName, resource_id: str) -> Message:
    return Message(task, (resource_id,), Pool.CPU.value)


def predict_message(request_id: str, pool: str, expires: datetime) -> Message:
    return Message(TaskName.PREDICT, (request_id,), pool, expires)


def send(celery: Celery, message: Message) -> bool:
    """Publish one message; False (and a log line) when the broker cannot take it now."""
    try:
        celery.send_task(
            message.task.value,
            args=list(message.args),
            queue=message.queue,
            retry=True,
            retry_policy=RETRY_POLICY,
            expires=message.expires,
        )
    except Exception as exc:  # any broker failure: the sweeper re-sends from the database
        log.warning(
            "could not send %s%s to queue %s (%s: %s)%s",
            message.task.value,
            list(message.args),
            message.queue,
            type(exc).__name__,
            exc,
            "" if message.expires else "; the sweeper will re-send it",
        )
        return False
    return True
