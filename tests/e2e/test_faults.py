"""Fault tests on the real stack (PostgreSQL, Redis, worker processes): more
jobs than workers, a worker killed mid-training or mid-export, a worker frozen
past the heartbeat timeout and then woken. Each test places its job's stages
on a private pool, so only the workers it starts serve them."""

from __future__ import annotations

import os
import signal
import time
import uuid
from datetime import datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient

from core.config import Settings
from tests.conftest import SpawnWorker, wait_for
from tests.e2e import test_digits_job
from tests.e2e.test_digits_job import FINISHED, job_body

# One tenant for this module and the digits uploaded once: test_digits_job's module-scoped
# fixtures, so this module gets a tenant of its own too.
auth, ids = test_digits_job.auth, test_digits_job.ids

pytestmark = pytest.mark.usefixtures("worker")  # the cpu pool: inspections and the reaper


def private_pool(prefix: str) -> tuple[str, dict[str, str]]:
    pool = f"{prefix}-{uuid.uuid4().hex[:6]}"
    return pool, {"teacher": pool, "student": pool, "export": pool, "benchmark": pool}


def wait_until(client: TestClient, job_id: str, auth: dict[str, str], ok: Any, timeout=90.0):
    deadline = time.monotonic() + timeout
    job: dict = {}
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}", headers=auth).json()
        if ok(job):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} never got there; last: {job}")


def stage(job: dict, name: str) -> dict:
    return next(s for s in job["stages"] if s["name"] == name)


def series(client: TestClient, job_id: str, auth: dict[str, str], name: str) -> list[int]:
    points = client.get(f"/v1/jobs/{job_id}/metrics", headers=auth, params={"name": name})
    return [p["epoch"] for p in points.json()]


def students_of(client: TestClient, auth: dict[str, str], job_id: str) -> int:
    models = client.get("/v1/models", headers=auth, params={"limit": 200}).json()["items"]
    return sum(m["source_job_id"] == job_id for m in models)


def longest_queue_wait(job: dict) -> float:
    """The longest a stage of the job waited queued: from the previous stage's end (the
    job's creation for the first) to its own start, in seconds."""
    ready, longest = datetime.fromisoformat(job["created_at"]), 0.0
    for s in job["stages"]:
        started = datetime.fromisoformat(s["started_at"])
        longest = max(longest, (started - ready).total_seconds())
        ready = datetime.fromisoformat(s["finished_at"])
    return longest


def test_more_jobs_than_workers_all_finish(
    client: TestClient,
    auth: dict[str, str],
    ids: dict[str, dict],
    spawn_worker: SpawnWorker,
    settings: Settings,
) -> None:
    """Four jobs on one worker: the later ones wait longer than the heartbeat
    timeout (8 s here) while queued, and the reaper leaves them alone. Each
    training stage is held 5 s (a failpoint), so the last job's training waits
    behind at least two others (10 s) however fast this machine runs them: even
    when the worker starts the first job's training before the other jobs are
    submitted (3 s held each was not enough then: 6.5 s)."""
    pool, placement = private_pool("busy")
    spawn_worker(pool, STILLHOUSE_FAILPOINTS="training=5")
    training = {"epochs": 6, "batch_size": 32, "lr": 0.003}
    job_ids = [
        client.post(
            "/v1/jobs",
            headers=auth,
            json=job_body(
                ids, name=f"busy-{i}", placement=placement, training=training, baseline=False
            ),
        ).json()["id"]
        for i in range(4)
    ]
    jobs = [wait_for(client, f"/v1/jobs/{j}", auth, FINISHED, timeout=180) for j in job_ids]
    assert [j["status"] for j in jobs] == ["succeeded"] * 4, [j["error"] for j in jobs]
    assert all(s["attempts"] == 1 for j in jobs for s in j["stages"])  # nothing was re-run
    first, last = min(j["created_at"] for j in jobs), max(j["finished_at"] for j in jobs)
    span = datetime.fromisoformat(last) - datetime.fromisoformat(first)
    assert span.total_seconds() > settings.heartbeat_timeout_s
    waits = [longest_queue_wait(j) for j in jobs]
    assert max(waits) > settings.heartbeat_timeout_s, waits  # queued past the timeout


def test_killed_mid_training_resumes_from_its_checkpoint(
    client: TestClient, auth: dict[str, str], ids: dict[str, dict], spawn_worker: SpawnWorker
) -> None:
    pool, placement = private_pool("resume")
    # Each epoch of this job is held open 0.3 s, so the kill lands mid-training however
    # fast the machine trains (16 epochs once took 2 s, and the poll missed the window).
    doomed = spawn_worker(
        pool, STILLHOUSE_CHECKPOINT_EVERY_S="0", STILLHOUSE_FAILPOINTS="resumed:epoch=0.3"
    )
    training = {"epochs": 16, "batch_size": 16, "lr": 0.001, "seed": 7}
    body = job_body(ids, name="resumed", baseline=False, placement=placement, training=training)
    job_id = client.post("/v1/jobs", headers=auth, json=body).json()["id"]
    wait_until(client, job_id, auth, lambda j: j["stage"] == "training" and j["epoch"] >= 4)
    os.kill(doomed.pid, signal.SIGKILL)  # no shutdown hook, no goodbye: a crash
    doomed.wait()
    spawn_worker(pool, STILLHOUSE_CHECKPOINT_EVERY_S="0")  # the rescuer
    job = wait_for(client, f"/v1/jobs/{job_id}", auth, FINISHED, timeout=120)
    assert job["status"] == "succeeded", job["error"]
    trained = stage(job, "training")
    assert trained["attempts"] == 2 and trained["resumed_from_epoch"] >= 3
    assert series(client, job_id, auth, "loss") == list(range(1, 17))
    assert series(client, job_id, auth, "val_accuracy") == list(range(1, 17))

    # The same job, never interrupted, ends with the same numbers.
    body["name"] = "uninterrupted"
    again = client.post("/v1/jobs", headers=auth, json=body).json()["id"]
    twin = wait_for(client, f"/v1/jobs/{again}", auth, FINISHED, timeout=120)
    assert twin["status"] == "succeeded", twin["error"]
    assert stage(twin, "training")["resumed_from_epoch"] == 0
    assert job["summary"]["student"]["accuracy"] == twin["summary"]["student"]["accuracy"]
    assert job["summary"]["student"]["kl_to_teacher"] == pytest.approx(
        twin["summary"]["student"]["kl_to_teacher"], abs=1e-6
    )


def test_killed_during_export_still_one_student(
    client: TestClient, auth: dict[str, str], ids: dict[str, dict], spawn_worker: SpawnWorker
) -> None:
    pool, placement = private_pool("export")
    doomed = spawn_worker(pool, STILLHOUSE_FAILPOINTS="exported:export=60")
    body = job_body(
        ids, name="exported", placement=placement, training={"epochs": 2}, baseline=False
    )
    job_id = client.post("/v1/jobs", headers=auth, json=body).json()["id"]
    wait_until(client, job_id, auth, lambda j: stage(j, "export")["status"] == "running")
    os.kill(doomed.pid, signal.SIGKILL)
    doomed.wait()
    spawn_worker(pool)
    job = wait_for(client, f"/v1/jobs/{job_id}", auth, FINISHED, timeout=120)
    assert job["status"] == "succeeded", job["error"]
    assert stage(job, "export")["attempts"] == 2
    assert students_of(client, auth, job_id) == 1


def test_frozen_worker_is_fenced_out_when_it_wakes(
    client: TestClient, auth: dict[str, str], ids: dict[str, dict], spawn_worker: SpawnWorker
) -> None:
    """SIGSTOP past the heartbeat timeout: another worker takes the stage over.
    SIGCONT: the first one's writes are refused and it stops."""
    pool, placement = private_pool("frozen")
    frozen = spawn_worker(pool, STILLHOUSE_CHECKPOINT_EVERY_S="0")
    training = {"epochs": 24, "batch_size": 16, "lr": 0.001}
    body = job_body(ids, name="fenced", placement=placement, training=training)
    job_id = client.post("/v1/jobs", headers=auth, json=body).json()["id"]
    wait_until(client, job_id, auth, lambda j: j["stage"] == "training" and j["epoch"] >= 3)
    os.kill(frozen.pid, signal.SIGSTOP)
    rescuer = spawn_worker(pool, STILLHOUSE_CHECKPOINT_EVERY_S="0")
    wait_until(
        client,
        job_id,
        auth,
        lambda j: (
            stage(j, "training")["attempts"] == 2 and stage(j, "training")["status"] == "running"
        ),
    )
    os.kill(frozen.pid, signal.SIGCONT)
    job = wait_for(client, f"/v1/jobs/{job_id}", auth, FINISHED, timeout=180)
    assert job["status"] == "succeeded", job["error"]
    assert str(rescuer.pid) in stage(job, "training")["worker_id"]
    assert students_of(client, auth, job_id) == 1
    for name in ("loss", "val_accuracy", "baseline/loss"):
        assert series(client, job_id, auth, name) == list(range(1, 25)), name
    deadline = time.monotonic() + 20
    log = frozen.log  # type: ignore[attr-defined]
    while "without writing" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.3)
    assert "without writing" in log.read_text(), log.read_text()[-3000:]
