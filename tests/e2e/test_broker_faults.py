"""The broker is transport, not the record: a Redis restarted without
persistence while jobs are queued and running, and a job and an upload accepted
while the broker is down (202 and 201, never a 5xx), all finish. The test runs its own redis-server on a free port
and stops only that one."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from core.config import Settings
from examples.digits import DigitsFiles
from tests.conftest import SpawnWorker, wait_for
from tests.e2e.test_digits_job import FINISHED, job_body, upload_digits
from tests.e2e.test_faults import private_pool, wait_until
from tests.servers import PrivateRedis

pytestmark = [
    pytest.mark.usefixtures("worker"),
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
]


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


def test_jobs_survive_a_broker_restart_and_an_outage(
    client: TestClient,
    auth: dict[str, str],
    digits: DigitsFiles,
    settings: Settings,
    spawn_worker: SpawnWorker,
    private_redis: PrivateRedis,
) -> None:
    from service.main import create_app

    on_private = settings.model_copy(update={"broker_url": private_redis.url})
    pool, placement = private_pool("restart")
    # The first job's epochs are held open 0.5 s each, so the restart lands while it trains
    # however fast this machine trains (one running, two queued).
    spawn_worker(pool, on_private, STILLHOUSE_FAILPOINTS="restart-0:epoch=0.5")
    ids = upload_digits(client, auth, digits)  # inspected on the shared broker's cpu worker
    training = {"epochs": 10, "batch_size": 16, "lr": 0.003}

    def submit(api: TestClient, name: str) -> str:
        body = job_body(ids, name=name, placement=placement, training=training, baseline=False)
        response = api.post("/v1/jobs", headers=auth, json=body)
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    with TestClient(create_app(on_private)) as api:
        job_ids = [submit(api, f"restart-{i}") for i in range(3)]
        wait_until(api, job_ids[0], auth, lambda j: j["stage"] == "training" and j["epoch"] >= 1)
        private_redis.stop()  # one running, two queued: their messages die with it
        private_redis.start()
        jobs = [wait_for(api, f"/v1/jobs/{j}", auth, FINISHED, timeout=180) for j in job_ids]
        assert [j["status"] for j in jobs] == ["succeeded"] * 3, [j["error"] for j in jobs]

        private_redis.stop()
        asked = time.monotonic()
        during_outage = submit(api, "submitted-while-down")  # the row is the record: 202
        with open(digits.val_npz, "rb") as handle:  # an upload too: 201, not 500 or 503
            uploaded = api.post("/v1/datasets", headers=auth, files={"file": ("late.npz", handle)})
        assert uploaded.status_code == 201, uploaded.text
        assert time.monotonic() - asked < 20
        private_redis.start()
        job = wait_for(api, f"/v1/jobs/{during_outage}", auth, FINISHED, timeout=120)
        assert job["status"] == "succeeded", job["error"]
        # Its inspection message was lost with the broker; a worker's sweeper re-sends it.
        dataset = wait_for(api, f"/v1/datasets/{uploaded.json()['id']}", auth, {"ready", "invalid"})
        assert dataset["status"] == "ready", dataset["error"]
