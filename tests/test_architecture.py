"""Import boundaries: the gateway never imports torch, onnxruntime or the engine,
and the Celery app imports its task modules by name only."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def test_gateway_process_never_imports_torch() -> None:
    code = (
        "import sys, service.main; "
        "bad = sorted(m for m in ('torch', 'onnxruntime', 'onnx', 'distill', 'numpy') "
        "if m in sys.modules); "
        "assert not bad, bad"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_celery_app_registers_its_task_modules_by_name() -> None:
    """workers.app imports no task module (so task modules may import it without a
    cycle); the worker loads them from `include`, which registers every task name."""
    code = (
        "import sys; from workers.app import celery_app, TASK_MODULES; "
        "assert not any(m in sys.modules for m in TASK_MODULES), 'imported too early'; "
        "celery_app.loader.import_default_modules(); "
        "from core.queues import TaskName; "
        "missing = {t.value for t in TaskName} - set(celery_app.tasks); "
        "assert not missing, missing"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)
