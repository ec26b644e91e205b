"""The Celery application the workers run.

stillhouse worker --pool cpu --device cpu
# which runs: celery -A workers.app worker -Q cpu --pool solo --concurrency 1
"""

from __future__ import annotations

from core.broker import make_celery
from core.config import get_settings

celery_app = make_celery(get_settings())

# Registering the tasks is importing their modules.
from workers import heartbeat, inspect, pipeline  # noqa: E402,F401
