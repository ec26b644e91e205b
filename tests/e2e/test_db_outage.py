"""A database blip does not cost a running job its claim: the worker retries
its writes in place while PostgreSQL is away, and the job carries on where it
was, without a re-run. The test runs its own PostgreSQL cluster (initdb,
pg_ctl) on a free port and stops only that one."""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from core.config import Settings
from core.migrate import upgrade
from examples.digits import DigitsFiles
from tests.conftest import SpawnWorker, new_tenant, wait_for
from tests.e2e.test_digits_job import FINISHED, job_body, upload_digits
from tests.e2e.test_faults import series, stage, wait_until
from tests.servers import PrivatePostgres

pytestmark = pytest.mark.skipif(
    shutil.which("initdb") is None and not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")),
    reason="needs PostgreSQL's initdb and pg_ctl",
)
BLIP_S = 5.0
# Each epoch is held open 0.4 s (a failpoint), so training lasts over 12 s however fast
# the machine is and the blip lands mid-training; were the epochs to end during it, the
# stage would still wait (retrying) to record them and finish, so only the "still
# training" check needs the time.
EPOCHS = 30
BATCH = 32
EPOCH_PAUSE = "blip:epoch=0.4"


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    server.start()
    yield server
    server.remove()


def test_a_running_job_rides_out_a_database_blip(
    private_pg: PrivatePostgres,
    settings: Settings,
    tmp_path: Path,
    digits: DigitsFiles,
    spawn_worker: SpawnWorker,
) -> None:
    from service.main import create_app

    url = private_pg.create_database("stillhouse")
    upgrade(url)
    on_private = settings.model_copy(
        update={
            "database_url": url,
            "data_dir": tmp_path / "data",
            # Its own queues on the shared Redis: the session's worker (on the shared
            # database) must not take this test's messages.
            "broker_prefix": f"{settings.broker_prefix}pg-{uuid.uuid4().hex[:6]}:",
            # The blip stays well inside it: nothing may be reaped.
            "heartbeat_timeout_s": 30.0,
        }
    )
    worker = spawn_worker("cpu", on_private, STILLHOUSE_FAILPOINTS=EPOCH_PAUSE)
    auth = new_tenant(on_private)
    with TestClient(create_app(on_private)) as api:
        ids = upload_digits(api, auth, digits)
        training = {"epochs": EPOCHS, "batch_size": BATCH, "lr": 0.003}
        body = job_body(
            ids, name="blip", baseline=False, transfer_dataset_id=None, training=training
        )
        response = api.post("/v1/jobs", headers=auth, json=body)
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        # Its first epochs are recorded: the loop is running and its recorder writing.
        wait_until(api, job_id, auth, lambda j: j["stage"] == "training" and j["epoch"] >= 1)

        private_pg.stop()  # cuts every open connection
        started = time.monotonic()
        # Meanwhile the API answers 503 with Retry-After: the status read and a new job alike.
        for method, path, sent in (("GET", f"/v1/jobs/{job_id}", None), ("POST", "/v1/jobs", body)):
            away = api.request(method, path, headers=auth, json=sent)
            assert away.status_code == 503, away.text
            assert away.json()["error"] == "unavailable" and away.headers["Retry-After"], away.text
        time.sleep(max(0.0, BLIP_S - (time.monotonic() - started)))
        private_pg.start()
        back = api.get(f"/v1/jobs/{job_id}", headers=auth).json()
        assert back["status"] == "running" and back["stage"] == "training", back

        job = wait_for(api, f"/v1/jobs/{job_id}", auth, FINISHED, timeout=180)
        assert job["status"] == "succeeded", job["error"]
        trained = stage(job, "training")
        assert trained["attempts"] == 1 and trained["resumed_from_epoch"] == 0, trained
        assert all(s["attempts"] == 1 for s in job["stages"]), job["stages"]
        jobs = api.get("/v1/jobs", headers=auth).json()["items"]
        assert [j["id"] for j in jobs] == [job_id]  # the job refused with 503 was not saved
        for name in ("loss", "val_accuracy"):
            assert series(api, job_id, auth, name) == list(range(1, EPOCHS + 1)), name
    log = worker.log.read_text()  # type: ignore[attr-defined]
    assert "database unreachable" in log and "database back after" in log, log[-3000:]
    assert "lost its lease" not in log and "went silent" not in log, log[-3000:]
