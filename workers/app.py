"""The Celery application the workers run.

stillhouse worker --pool cpu --device cpu
# which runs: celery -A workers.app worker -Q cpu --pool solo --concurrency 1
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from celery.signals import setup_logging

from core import logs
from core.broker import make_celery
from core.config import get_settings
from workers.context import context

# The worker imports the task modules by name at start-up; nothing here imports
# them, so a task module may import this one without a cycle.
TASK_MODULES = ["workers.inspect", "workers.pipeline", "workers.heartbeat", "workers.predict"]
celery_app = make_celery(get_settings(), include=TASK_MODULES)

# The ONNX exporter narrates every optimisation pass at INFO; a worker's log is for jobs.
for noisy in ("onnx_ir", "onnxscript", "torch.onnx"):
    logging.getLogger(noisy).setLevel(logging.WARNING)


@setup_logging.connect
def _setup_logging(loglevel: int | str | None = None, **_: Any) -> None:
    """Celery configures nothing once a receiver answers this signal: our handler (JSON
    lines or text, core.logs) is the one every logger writes through."""
    settings = get_settings()
    ctx = context()
    logs.bind_process(worker=ctx.worker_id, pool=ctx.pool)
    logs.configure(loglevel or logging.INFO, settings.log_format)
    # The task modules (and torch with them) are imported by now; torch's warnings would
    # otherwise go out through its own handler, in its own format.
    if "torch" in sys.modules:
        logs.adopt("torch")
