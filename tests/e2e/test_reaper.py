"""A worker killed mid-stage: the reaper re-queues the stage and another
worker of the same pool finishes the job."""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from examples.digits import DigitsFiles
from tests.conftest import wait_for
from tests.e2e.test_digits_job import job_body, upload_digits

pytestmark = pytest.mark.usefixtures("worker")


def test_job_survives_a_killed_worker(
    client: TestClient,
    auth: dict[str, str],
    digits: DigitsFiles,
    spawn_worker: Callable[[str], subprocess.Popen[bytes]],
) -> None:
    pool = f"reap-{uuid.uuid4().hex[:6]}"
    doomed = spawn_worker(pool)
    ids = upload_digits(client, auth, digits)
    body = job_body(
        ids,
        name="survivor",
        baseline=False,
        training={"epochs": 40, "batch_size": 16, "lr": 0.001},
        placement={"teacher": "cpu", "student": pool},
    )
    job_id = client.post("/v1/jobs", headers=auth, json=body).json()["id"]
    wait_for(client, f"/v1/jobs/{job_id}", auth, {"training"}, field="stage")
    os.kill(doomed.pid, signal.SIGKILL)  # no shutdown hook, no goodbye: a crash
    doomed.wait()

    requeued = wait_for(client, f"/v1/jobs/{job_id}", auth, {"queued"}, timeout=60)
    assert requeued["stage"] == "training"
    spawn_worker(pool)  # the rescuer
    job = wait_for(client, f"/v1/jobs/{job_id}", auth, {"succeeded", "failed"}, timeout=120)
    assert job["status"] == "succeeded", job["error"]
    assert job["attempt"] == 2  # the training stage ran twice: killed, then finished
