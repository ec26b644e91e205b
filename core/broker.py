"""The Celery application as configured for this deployment. Celery is
transport only: no result backend, ids in messages, the database holds state."""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import Queue

from core.config import Settings
from core.queues import Pool


def broker_options(settings: Settings) -> dict[str, Any]:
    url = settings.resolved_broker_url
    if url.startswith("filesystem"):
        folder = settings.broker_folder
        for sub in ("queue", "processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        return {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            "control_folder": str(folder / "control"),  # else kombu writes ./control
            "store_processed": False,
            # The default 1 s poll adds up to a second to every hop of a job.
            "polling_interval": 0.2,
        }
    options: dict[str, Any] = {
        # A late ack redelivers only after this long: it must outlast the longest job.
        "visibility_timeout": settings.max_job_seconds + 600,
    }
    if settings.broker_prefix:
        options["global_keyprefix"] = settings.broker_prefix
    return options


def make_celery(settings: Settings, include: list[str] | None = None) -> Celery:
    app = Celery(
        "stillhouse",
        broker=settings.resolved_broker_url,
        set_as_current=False,
        include=include or [],
    )
    app.conf.update(
        broker_transport_options=broker_options(settings),
        broker_connection_retry_on_startup=True,
        task_ignore_result=True,
        result_backend=None,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=Pool.CPU.value,
        task_queues=[Queue(pool.value) for pool in Pool],
        task_create_missing_queues=True,  # operator-named pools (edge-arm, a100) are queues too
        worker_prefetch_multiplier=1,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_hijack_root_logger=False,
        worker_enable_remote_control=not settings.resolved_broker_url.startswith("filesystem"),
        worker_send_task_events=False,
        enable_utc=True,
    )
    return app
