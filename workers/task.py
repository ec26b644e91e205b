"""The one decorator every task goes through: a name from the enum, bounded
retries on transient infrastructure errors only, no result, and the log fields
(core.logs) that every line of the task carries.

Two layers of retry, each with its own job. Inside a task, every database
call is retried in place (workers.retry) for up to `db_retry_s`, so a blip
never costs a claim. Celery's retry below is the outer layer: it re-sends the
message only when an error escapes the task, which for `run_stage` means the
claim itself could not be made within the budget. A message re-sent after a
claim whose commit did land finds the stage held by this worker and adopts it
(workers.jobs.claim), so it is neither dropped nor run twice. Once a stage is
held, errors never escape it: the stage ends or lets its claim go."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any

from kombu.exceptions import OperationalError as BrokerError

from core import logs
from core.queues import TaskName
from workers.app import celery_app
from workers.retry import DB_TRANSIENT

log = logging.getLogger("stillhouse.worker")

# Retried: the database or the broker blinked. Never retried: bad input
# (DistillError), out-of-memory, bugs; those fail the job with a sentence.
TRANSIENT: tuple[type[Exception], ...] = (*DB_TRANSIENT, BrokerError)


def stillhouse_task(
    name: TaskName, *, max_retries: int, time_limit: int | None = None
) -> Callable[[Callable[..., None]], Any]:
    def decorate(fn: Callable[..., None]) -> Any:
        # A parameter named as a log field (job_id, stage, model_id, ...) is one: every line
        # the task writes carries it (core.logs), and none once the task has returned.
        params = list(inspect.signature(fn).parameters)

        @functools.wraps(fn)
        def logged(*args: Any) -> None:
            named = zip(params, args, strict=False)
            with logs.bind(task=name.value, **{p: a for p, a in named if p in logs.FIELDS}):
                log.info("task %s%s started", name.value, list(args))
                fn(*args)
                log.info("task %s%s done", name.value, list(args))

        return celery_app.task(
            name=name.value,
            max_retries=max_retries,
            autoretry_for=TRANSIENT,
            retry_backoff=True,
            retry_backoff_max=60,
            ignore_result=True,
            # Claims make every task idempotent, so a late ack is safe.
            acks_late=True,
            time_limit=time_limit,
        )(logged)

    return decorate
