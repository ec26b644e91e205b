"""Cancel in every stage: a queued job never starts; a running stage stops
within about a second; a cancel during evaluation or export registers no
student. Failpoints hold the short stages open long enough to cancel them."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from examples.digits import DigitsFiles
from tests.conftest import SpawnWorker, wait_for
from tests.e2e.test_digits_job import FINISHED, job_body, upload_digits
from tests.e2e.test_faults import private_pool, stage, students_of, wait_until

pytestmark = pytest.mark.usefixtures("worker")
STAGES = ("teacher_inference", "training", "evaluation", "export", "benchmark")


def test_cancel_in_every_stage(
    client: TestClient, auth: dict[str, str], digits: DigitsFiles, spawn_worker: SpawnWorker
) -> None:
    pool, placement = private_pool("cancel")
    held = ",".join(f"cancel-in-{name}:{name}=60" for name in STAGES if name != "training")
    spawn_worker(pool, STILLHOUSE_FAILPOINTS=held)
    ids = upload_digits(client, auth, digits)

    def submit(name: str, epochs: int) -> str:
        body = job_body(
            ids, name=name, baseline=False, placement=placement, training={"epochs": epochs}
        )
        return client.post("/v1/jobs", headers=auth, json=body).json()["id"]

    for name in STAGES:
        job_id = submit(f"cancel-in-{name}", 500 if name == "training" else 1)
        if name == "teacher_inference":
            waiting = submit("cancel-while-queued", 1)  # behind the first, on the one worker
            response = client.post(f"/v1/jobs/{waiting}/cancel", headers=auth)
            assert response.json()["status"] == "cancelled"  # at once: it never started
        wait_until(
            client,
            job_id,
            auth,
            lambda j, name=name: (
                stage(j, name)["status"] == "running" and (name != "training" or j["epoch"] >= 1)
            ),
        )
        asked = time.monotonic()
        client.post(f"/v1/jobs/{job_id}/cancel", headers=auth)
        job = wait_for(client, f"/v1/jobs/{job_id}", auth, FINISHED, timeout=30)
        assert time.monotonic() - asked < 5, name
        assert job["status"] == "cancelled", (name, job["error"])
        assert job["student_model_id"] is None and students_of(client, auth, job_id) == 0
        later = [s["status"] for s in job["stages"][STAGES.index(name) :]]
        assert later == ["cancelled"] * len(later), (name, job["stages"])

    never = client.get(f"/v1/jobs/{waiting}", headers=auth).json()
    assert never["started_at"] is None
    assert all(s["attempts"] == 0 for s in never["stages"]), never["stages"]
