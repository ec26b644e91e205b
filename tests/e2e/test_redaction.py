"""Errors stored for users name files, never the server's folders: a job and an
upload whose failures quote absolute paths (a blob gone from the store) keep
only the file name."""

from __future__ import annotations

import uuid

import numpy as np
import onnx
import pytest
from fastapi.testclient import TestClient

from core.config import Settings
from core.storage import blob_key
from service.main import create_app
from tests.conftest import SpawnWorker, new_tenant, npz_bytes, wait_for
from tests.onnx_crafted import plain_onnx

pytestmark = pytest.mark.usefixtures("worker")


def _server_paths(settings: Settings) -> list[str]:
    return ["/tmp/", str(settings.data_dir), str(settings.data_dir.resolve())]


def _unique_onnx() -> bytes:
    """A teacher no other test uploads (a fresh producer name changes its bytes), so
    removing its blob disturbs nobody."""
    model = onnx.load_from_string(plain_onnx())
    model.producer_name = f"redaction-{uuid.uuid4().hex}"
    return model.SerializeToString()


def _unique_npz() -> bytes:
    """Data no other test uploads, so removing its blob disturbs nobody."""
    x = np.random.default_rng().standard_normal((16, 4)).astype(np.float32)
    return npz_bytes(x=x, y=np.arange(16) % 2)


def test_a_failed_job_quotes_no_server_path(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    dataset = client.post("/v1/datasets", headers=auth, files={"file": ("d.npz", _unique_npz())})
    teacher = client.post("/v1/models", headers=auth, files={"file": ("t.onnx", _unique_onnx())})
    ids = {}
    for kind, created in (("datasets", dataset), ("models", teacher)):
        assert created.status_code == 201, created.text
        row = wait_for(client, f"/v1/{kind}/{created.json()['id']}", auth, {"ready", "invalid"})
        assert row["status"] == "ready", row
        ids[kind] = row
    # The teacher's stored file vanishes (an operator cleaned the disk): the job fails with
    # a sentence, and whatever the loaders said on the way names no server folder.
    blob = settings.data_dir / "artifacts" / blob_key(ids["models"]["sha256"])
    blob.unlink()
    body = {
        "name": "redacted",
        "teacher_model_id": ids["models"]["id"],
        "student": {"architecture": "mlp", "params": {"hidden": [4]}},
        "train_dataset_id": ids["datasets"]["id"],
        "losses": [{"name": "kd", "weight": 1.0}],
        "training": {"epochs": 1, "batch_size": 8},
        "baseline": False,
    }
    created = client.post("/v1/jobs", headers=auth, json=body)
    assert created.status_code == 202, created.text
    job = wait_for(client, f"/v1/jobs/{created.json()['id']}", auth, {"failed", "succeeded"})
    assert job["status"] == "failed", job
    assert "missing from the artifact store" in job["error"], job["error"]
    for where in _server_paths(settings):
        assert where not in job["error"], job["error"]


def test_a_failed_inspection_names_the_file_not_its_path(
    settings: Settings, spawn_worker: SpawnWorker
) -> None:
    """Own broker prefix: the upload waits unread until this test's worker
    starts, so its blob can be removed first."""
    private = settings.model_copy(update={"broker_prefix": f"redact-{uuid.uuid4().hex[:8]}:"})
    auth = new_tenant(private)
    with TestClient(create_app(private)) as client:
        created = client.post(
            "/v1/datasets", headers=auth, files={"file": ("d.npz", _unique_npz())}
        )
        assert created.status_code == 201, created.text
        (settings.data_dir / "artifacts" / blob_key(created.json()["sha256"])).unlink()
        spawn_worker("cpu", settings_=private)
        dataset = wait_for(
            client, f"/v1/datasets/{created.json()['id']}", auth, {"ready", "invalid"}
        )
    assert dataset["status"] == "invalid", dataset
    assert "does not exist" in dataset["error"], dataset["error"]
    for where in _server_paths(settings):
        assert where not in dataset["error"], dataset["error"]
