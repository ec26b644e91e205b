"""The Celery application the workers run.

stillhouse worker --pool cpu --device cpu
# which runs: celery -A workers.app worker -Q cpu --pool solo --concurrency 1
"""

from __future__ import annotations

import logging

from core.broker import make_celery
from core.config import get_settings

# The worker imports the task modules by name at start-up; nothing here imports
# them, so a task module may import this one without a cycle.
TASK_MODULES = ["workers.inspect", "workers.pipeline", "workers.heartbeat", "workers.predict"]
celery_app = make_celery(get_settings(), include=TASK_MODULES)

# The ONNX exporter narrates every optimisation pass at INFO; a worker's log is for jobs.
for noisy in ("onnx_ir", "onnxscript", "torch.onnx"):
    logging.getLogger(noisy).setLevel(logging.WARNING)
