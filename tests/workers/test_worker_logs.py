"""A real worker's log, written to a file (not a terminal): one JSON object per line,
and every line a task writes carries its fields (the job id and stage, or the dataset
id; the worker id and pool), none of them once the task has returned."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from fastapi.testclient import TestClient

from core.broker import make_celery
from core.config import Settings
from core.dispatch import send, stage_message
from tests.conftest import npz_bytes, wait_for


def _lines(log: Path, offset: int, until: list[str], timeout: float = 60.0) -> list[dict[str, Any]]:
    """Every line written since `offset`, parsed, once a line says each of `until`."""
    deadline = time.monotonic() + timeout
    while True:
        text = log.read_bytes()[offset:].decode()
        complete = text[: text.rfind("\n") + 1]  # a line still being written waits
        lines = [json.loads(line) for line in complete.splitlines() if line.strip()]
        messages = [line["message"] for line in lines]
        if all(any(want in m for m in messages) for want in until):
            return lines
        assert time.monotonic() < deadline, f"no line saying all of {until} in:\n{complete}"
        time.sleep(0.2)


def test_a_tasks_lines_are_json_and_carry_its_fields(
    client: TestClient,
    auth: dict[str, str],
    settings: Settings,
    data_dir: Path,
    worker: subprocess.Popen[bytes],
) -> None:
    log = data_dir / "worker.log"  # the session worker's stdout and stderr
    # Its start: no banner, no warning printed before logging was set up.
    for line in log.read_text().splitlines()[:5]:
        assert json.loads(line)["level"], line
    offset = log.stat().st_size

    # An upload inspection, then a stage message for a job that does not exist (the task
    # runs, finds nothing to claim and says so): two tasks, each with its own fields.
    content = npz_bytes(x=np.zeros((4, 3), np.float32), y=np.array([0, 1, 0, 1]))
    created = client.post("/v1/datasets", headers=auth, files={"file": ("d.npz", content)})
    assert created.status_code == 201, created.text
    dataset_id = created.json()["id"]
    assert wait_for(client, f"/v1/datasets/{dataset_id}", auth, {"ready"})["status"] == "ready"
    job_id = uuid.uuid4().hex
    assert send(make_celery(settings), stage_message(job_id, "training", "cpu"))
    lines = _lines(
        log, offset, [f"stillhouse.inspect_dataset['{dataset_id}'] done", "is not waiting"]
    )

    worker_id = next(line["worker"] for line in lines)
    assert worker_id.endswith(f"/cpu/cpu/{worker.pid}"), worker_id
    for line in lines:
        assert {"time", "level", "logger", "message"} <= line.keys(), line
        assert (line["worker"], line["pool"]) == (worker_id, "cpu"), line

    inspection = [line for line in lines if line.get("task") == "stillhouse.inspect_dataset"]
    assert [m["message"] for m in inspection[:: len(inspection) - 1]] == [
        f"task stillhouse.inspect_dataset['{dataset_id}'] started",
        f"task stillhouse.inspect_dataset['{dataset_id}'] done",
    ]
    assert all(line["dataset_id"] == dataset_id for line in inspection)
    assert not any("job_id" in line for line in inspection)

    stage = [line for line in lines if line.get("task") == "stillhouse.run_stage"]
    assert any("is not waiting" in line["message"] for line in stage), stage
    assert all((line["job_id"], line["stage"]) == (job_id, "training") for line in stage)

    # Celery's own "received" and "succeeded" lines come before and after the task's body:
    # they name the job in their `data` alone, so the fields were bound for the body only.
    outside = [line for line in lines if job_id in str(line) and line not in stage]
    assert {line["logger"] for line in outside} >= {"celery.worker.strategy", "celery.app.trace"}
    assert all("job_id" not in line and "task" not in line for line in outside), outside
