"""The whole path on the real stack: PostgreSQL, Redis, a worker process.
Upload a teacher and digits through HTTP, distill, download the student and
check it in ONNX Runtime against the figures the job reported."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient

from core.config import Settings
from examples.digits import DigitsFiles
from tests.conftest import new_tenant, npz_bytes, wait_for
from tests.status_record import assert_record_matches_database

pytestmark = pytest.mark.usefixtures("worker")
FINISHED = {"succeeded", "failed", "cancelled"}


def upload(client: TestClient, auth: dict[str, str], kind: str, path: Any, **form: str) -> dict:
    with open(path, "rb") as handle:
        response = client.post(
            f"/v1/{kind}", headers=auth, files={"file": (path.name, handle)}, data=form
        )
    assert response.status_code == 201, response.text
    return wait_for(client, f"/v1/{kind}/{response.json()['id']}", auth, {"ready", "invalid"})


def upload_digits(client: TestClient, auth: dict[str, str], digits: DigitsFiles) -> dict[str, dict]:
    return {
        "teacher": upload(client, auth, "models", digits.teacher_onnx, name="digits-teacher"),
        "train": upload(client, auth, "datasets", digits.train_npz, name="train"),
        "val": upload(client, auth, "datasets", digits.val_npz, name="val"),
        "transfer": upload(client, auth, "datasets", digits.transfer_npz, name="transfer"),
    }


def job_body(ids: dict[str, dict], **overrides: Any) -> dict[str, Any]:
    body = {
        "name": "mlp32-from-digits",
        "teacher_model_id": ids["teacher"]["id"],
        "student": {"architecture": "mlp", "params": {"hidden": [32]}},
        "train_dataset_id": ids["train"]["id"],
        "transfer_dataset_id": ids["transfer"]["id"],
        "val_dataset_id": ids["val"]["id"],
        "losses": [
            {"name": "kd", "weight": 0.9, "temperature": 4.0},
            {"name": "ce", "weight": 0.1},
        ],
        "training": {"epochs": 30, "batch_size": 64, "lr": 0.003, "optimizer": "adam", "seed": 0},
        "baseline": True,
    }
    body.update(overrides)
    return body


@pytest.fixture(scope="module")
def auth(settings: Settings) -> dict[str, str]:
    """One tenant for this module, so the digits are uploaded and inspected once (`ids`); each
    test's jobs and students are still its own (they are found by job id)."""
    return new_tenant(settings)


@pytest.fixture(scope="module")
def ids(
    client: TestClient, auth: dict[str, str], digits: DigitsFiles, worker: object
) -> dict[str, dict]:
    return upload_digits(client, auth, digits)


def test_distill_digits_end_to_end(
    client: TestClient,
    auth: dict[str, str],
    digits: DigitsFiles,
    ids: dict[str, dict],
    settings: Settings,
):
    assert ids["teacher"]["status"] == "ready", ids["teacher"]["error"]
    assert ids["teacher"]["input_shape"] == [None, 64]
    assert ids["teacher"]["output_shape"] == [None, 10]
    assert ids["train"]["num_classes"] == 10 and ids["train"]["labeled"] is True
    assert ids["transfer"]["labeled"] is False

    response = client.post("/v1/jobs", headers=auth, json=job_body(ids))
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "queued"
    # Polled as clients poll: the status route, served from the record the worker publishes.
    wait_for(client, f"/v1/jobs/{response.json()['id']}/status", auth, FINISHED)
    job = client.get(f"/v1/jobs/{response.json()['id']}", headers=auth).json()
    assert job["status"] == "succeeded", job["error"]
    # The worker's last commit published the final state: the record is the database's.
    status = assert_record_matches_database(client, auth, settings, job["id"])
    assert client.get(f"/v1/jobs/{job['id']}/status", headers=auth).json() == status
    assert job["progress"] == 1.0 and job["epoch"] == 30
    # The student trained first, then the baseline: both ran all their epochs.
    assert job["training"] == {"run": "baseline", "epoch": 30, "epochs": 30}
    assert [s["name"] for s in job["stages"]] == [
        "teacher_inference",
        "training",
        "evaluation",
        "export",
        "benchmark",
    ]
    assert all(s["status"] == "succeeded" and s["attempts"] == 1 for s in job["stages"])
    assert job["stages"][1]["resumed_from_epoch"] == 0
    summary = job["summary"]
    teacher_acc, student_acc = summary["teacher"]["accuracy"], summary["student"]["accuracy"]
    assert abs(teacher_acc - digits.teacher_val_accuracy) < 1e-6
    assert student_acc >= 0.95 * teacher_acc, summary
    assert summary["baseline"] is not None and summary["compression_ratio"] > 10

    metrics = client.get(f"/v1/jobs/{job['id']}/metrics", headers=auth).json()
    names = {m["name"] for m in metrics}
    assert {"loss", "loss/kd", "loss/ce", "val_accuracy", "val_agreement"} <= names
    assert {"baseline/loss", "baseline/val_accuracy"} <= names
    assert sorted(m["epoch"] for m in metrics if m["name"] == "loss") == list(range(1, 31))
    only = client.get(
        f"/v1/jobs/{job['id']}/metrics", headers=auth, params={"name": "val_accuracy"}
    )
    assert [m["epoch"] for m in only.json()] == list(range(1, 31))
    # The report scores the best validation epoch's weights (training.select "accuracy"),
    # and gives the last epoch's figure beside them.
    values = [m["value"] for m in only.json()]
    assert max(values) == pytest.approx(student_acc)
    assert summary["selected"]["epoch"] == 1 + values.index(max(values))
    assert summary["last_epoch"]["accuracy"] == pytest.approx(values[-1])

    student = client.get(f"/v1/models/{job['student_model_id']}", headers=auth).json()
    assert student["status"] == "ready" and student["formats"] == [
        "onnx",
        "onnx-int8",
        "safetensors",
    ]
    onnx_bytes = client.get(f"/v1/models/{student['id']}/file?format=onnx", headers=auth)
    assert onnx_bytes.status_code == 200
    session = ort.InferenceSession(onnx_bytes.content, providers=["CPUExecutionProvider"])
    val = np.load(digits.val_npz)
    logits = session.run(None, {session.get_inputs()[0].name: val["x"]})[0]
    onnx_acc = float((logits.argmax(1) == val["y"]).mean())
    assert abs(onnx_acc - student_acc) <= 0.005, (onnx_acc, student_acc)

    weights = client.get(f"/v1/models/{student['id']}/file?format=safetensors", headers=auth)
    assert weights.status_code == 200 and len(weights.content) == student["size_bytes"]


def test_cancel_stops_a_running_job(
    client: TestClient, auth: dict[str, str], ids: dict[str, dict], settings: Settings
):
    body = job_body(
        ids, name="long", baseline=False, training={"epochs": 1000, "batch_size": 16, "lr": 0.001}
    )
    job_id = client.post("/v1/jobs", headers=auth, json=body).json()["id"]
    wait_for(client, f"/v1/jobs/{job_id}/status", auth, {"training"}, field="stage")
    asked = time.monotonic()
    response = client.post(f"/v1/jobs/{job_id}/cancel", headers=auth)
    assert response.status_code == 200 and response.json()["cancel_requested"] is True
    wait_for(client, f"/v1/jobs/{job_id}/status", auth, FINISHED, timeout=30)
    job = client.get(f"/v1/jobs/{job_id}", headers=auth).json()
    assert job["status"] == "cancelled"
    assert assert_record_matches_database(client, auth, settings, job_id)["status"] == "cancelled"
    assert time.monotonic() - asked < 10
    assert job["epoch"] < 1000
    # The epochs that really ran, not the 1,000 asked.
    assert job["training"] == {"run": "student", "epoch": job["epoch"], "epochs": 1000}
    metrics = client.get(f"/v1/jobs/{job_id}/metrics", headers=auth, params={"name": "loss"})
    assert max((m["epoch"] for m in metrics.json()), default=0) == job["epoch"]
    again = client.post(f"/v1/jobs/{job_id}/cancel", headers=auth)
    assert again.status_code == 200  # cancelling a cancelled job is a no-op, not an error


def test_duplicate_message_is_a_no_op(
    client: TestClient, auth: dict[str, str], ids: dict[str, dict], settings
):
    from core.broker import make_celery

    body = job_body(ids, name="short", baseline=False, training={"epochs": 2})
    job_id = client.post("/v1/jobs", headers=auth, json=body).json()["id"]
    job = wait_for(client, f"/v1/jobs/{job_id}", auth, FINISHED)
    assert job["status"] == "succeeded"
    celery = make_celery(settings)
    for stage in ("teacher_inference", "training", "evaluation", "export", "benchmark"):
        celery.send_task("stillhouse.run_stage", args=[job_id, stage], queue="cpu")
    # A marker task behind the duplicates: once it is done, they have been consumed.
    marker = client.post(
        "/v1/datasets",
        headers=auth,
        files={"file": ("m.npz", npz_bytes(x=np.zeros((2, 3), np.float32)))},
    )
    wait_for(client, f"/v1/datasets/{marker.json()['id']}", auth, {"ready"})
    after = client.get(f"/v1/jobs/{job_id}", headers=auth).json()
    assert after["status"] == "succeeded" and after["stages"] == job["stages"]
    assert after["student_model_id"] == job["student_model_id"]
    models = client.get("/v1/models", headers=auth).json()["items"]
    assert sum(m["source_job_id"] == job_id for m in models) == 1


def test_teacher_outputs_are_computed_once(
    client: TestClient, auth: dict[str, str], ids: dict[str, dict], settings
) -> None:
    cache = settings.data_dir / "artifacts" / "cache" / "teacher-logits" / ids["teacher"]["sha256"]
    stamps: list[dict[str, int]] = []
    for name in ("first", "second"):
        body = job_body(ids, name=name, baseline=False, training={"epochs": 1})
        job_id = client.post("/v1/jobs", headers=auth, json=body).json()["id"]
        assert wait_for(client, f"/v1/jobs/{job_id}", auth, FINISHED)["status"] == "succeeded"
        # Only this test's datasets: other tests distill other data from the same teacher.
        files = [cache / ids[d]["sha256"] / "logits.npy" for d in ("train", "transfer", "val")]
        stamps.append({str(p): p.stat().st_mtime_ns for p in files if p.exists()})
    assert len(stamps[0]) == 3  # train, transfer and val, one file each
    assert stamps[0] == stamps[1]  # the second job read them; nothing was recomputed
