"""A job whose train set is above the in-memory threshold streams from the canonical
files (distill.batches): here a private worker with STILLHOUSE_IN_MEMORY_MAX_BYTES at 1 kB
runs the same job as the session worker (in memory), holdout split and transfer set
included, and both land in the same accuracy range. A correctness test, not a speed one."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from core.config import Settings
from examples.digits import DigitsFiles
from tests.conftest import new_tenant, start_worker, stop_worker, wait_for
from tests.e2e.test_digits_job import FINISHED, upload
from tests.stack import private_stack


@pytest.fixture(scope="module")
def streaming(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Settings, TestClient]]:
    from service.main import create_app

    folder = tmp_path_factory.mktemp("streaming")
    with private_stack(settings, folder / "data") as private:
        env = {"STILLHOUSE_IN_MEMORY_MAX_BYTES": "1000"}
        worker: subprocess.Popen[bytes] = start_worker(private, "cpu", folder / "worker.log", env)
        try:
            with TestClient(create_app(private)) as client:
                yield private, client
        finally:
            stop_worker(worker)


def _submit(client: TestClient, auth: dict[str, str], digits: DigitsFiles) -> str:
    teacher = upload(client, auth, "models", digits.teacher_onnx)
    train = upload(client, auth, "datasets", digits.train_npz)
    transfer = upload(client, auth, "datasets", digits.transfer_npz)
    body = {
        "name": "streamed-or-not",
        "teacher_model_id": teacher["id"],
        "student": {"architecture": "mlp", "params": {"hidden": [32]}},
        "train_dataset_id": train["id"],
        "transfer_dataset_id": transfer["id"],
        "losses": [{"name": "kd", "weight": 0.9}, {"name": "ce", "weight": 0.1}],
        "training": {"epochs": 8, "batch_size": 64, "seed": 0},
        "baseline": False,
    }
    response = client.post("/v1/jobs", headers=auth, json=body)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


@pytest.mark.usefixtures("worker")
def test_a_streamed_job_lands_where_the_in_memory_one_does(
    streaming: tuple[Settings, TestClient],
    client: TestClient,
    auth: dict[str, str],
    digits: DigitsFiles,
) -> None:
    private, streamed_client = streaming
    streamed_auth = new_tenant(private)
    jobs = {
        "memory": (client, auth, _submit(client, auth, digits)),
        "stream": (streamed_client, streamed_auth, _submit(streamed_client, streamed_auth, digits)),
    }
    accuracy = {}
    for mode, (api, headers, job_id) in jobs.items():
        job = wait_for(api, f"/v1/jobs/{job_id}", headers, FINISHED, 300)
        assert job["status"] == "succeeded", (mode, job["error"])
        report = api.get(f"/v1/jobs/{job_id}/report", headers=headers).json()
        accuracy[mode] = report["student"]["accuracy"] if "student" in report else None
    assert accuracy["memory"] is not None and accuracy["stream"] is not None, accuracy
    log = (private.data_dir.parent / "worker.log").read_text()
    assert f"job {jobs['stream'][2]}: the train set streams from its files" in log, log[-3000:]
    assert accuracy["stream"] > 0.8 and abs(accuracy["stream"] - accuracy["memory"]) < 0.08, (
        accuracy
    )
