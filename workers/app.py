"""The Celery application the workers run.

stillhouse worker --pool cpu --device cpu
# which runs: celery -A workers.app worker -Q cpu --pool solo --concurrency 1
"""

from __future__ import annotations

import logging

from core.broker import make_celery
from core.config import get_settings

celery_app = make_celery(get_settings())

# The ONNX exporter narrates every optimisation pass at INFO; a worker's log is for jobs.
for noisy in ("onnx_ir", "onnxscript", "torch.onnx"):
    logging.getLogger(noisy).setLevel(logging.WARNING)

# Registering the tasks is importing their modules.
from workers import heartbeat, inspect, pipeline  # noqa: E402,F401
