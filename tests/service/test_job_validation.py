"""A job that cannot run is refused at submission with a sentence (422)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from core.config import Settings
from core.db import make_engine, make_sessionmaker
from core.models import Dataset
from examples.digits import DigitsFiles
from tests.conftest import npz_bytes, wait_for
from tests.e2e.test_digits_job import job_body, upload

pytestmark = pytest.mark.usefixtures("worker")


def _npz_dataset(client: TestClient, auth: dict[str, str], **arrays: np.ndarray) -> dict:
    created = client.post(
        "/v1/datasets", headers=auth, files={"file": ("d.npz", npz_bytes(**arrays))}
    )
    return wait_for(client, f"/v1/datasets/{created.json()['id']}", auth, {"ready", "invalid"})


@pytest.fixture
def ids(client: TestClient, auth: dict[str, str], digits: DigitsFiles) -> dict[str, dict]:
    return {
        "teacher": upload(client, auth, "models", digits.teacher_onnx),
        "train": upload(client, auth, "datasets", digits.train_npz),
        "val": upload(client, auth, "datasets", digits.val_npz),
        "transfer": upload(client, auth, "datasets", digits.transfer_npz),
    }


def _refused(client: TestClient, auth: dict[str, str], body: dict[str, Any], *needles: str) -> None:
    response = client.post("/v1/jobs", headers=auth, json=body)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert response.json()["error"] == "invalid_request"
    for needle in needles:
        assert needle in detail, detail
    assert client.get("/v1/jobs", headers=auth).json()["items"] == []


def test_teacher_width_must_cover_the_labels(client, auth, ids) -> None:
    wide = _npz_dataset(client, auth, x=np.zeros((20, 64), np.float32), y=np.arange(20) % 12)
    _refused(
        client,
        auth,
        job_body(ids, train_dataset_id=wide["id"]),
        "teacher outputs 10 classes",
        "labels up to 11",
    )


def test_sample_shape_must_fit_the_teacher(client, auth, ids) -> None:
    narrow = _npz_dataset(client, auth, x=np.zeros((20, 32), np.float32), y=np.arange(20) % 10)
    body = job_body(
        ids, train_dataset_id=narrow["id"], val_dataset_id=None, transfer_dataset_id=None
    )
    _refused(client, auth, body, "64 input features", "32")


def test_dataset_not_ready_or_invalid(client, auth, ids, settings: Settings) -> None:
    engine = make_engine(settings.resolved_database_url)
    with make_sessionmaker(engine).begin() as session:
        tenant_id = session.get(Dataset, ids["train"]["id"]).tenant_id
        pending = Dataset(
            tenant_id=tenant_id,
            name="p",
            format="npz",
            sha256="0" * 64,
            size_bytes=1,
            storage_key="blobs/none",
        )
        session.add(pending)
    engine.dispose()
    _refused(client, auth, job_body(ids, val_dataset_id=pending.id), "still being inspected")
    broken = _npz_dataset(client, auth, x=np.array([[np.inf]], np.float32))
    _refused(client, auth, job_body(ids, val_dataset_id=broken["id"]), "is invalid")


def test_out_of_range_hyperparameters(client, auth, ids) -> None:
    _refused(client, auth, job_body(ids, training={"epochs": 0}), "training.epochs")
    _refused(client, auth, job_body(ids, training={"lr": -1}), "training.lr")
    _refused(client, auth, job_body(ids, training={"batch_size": 10**7}), "training.batch_size")
    _refused(client, auth, job_body(ids, training={"optimizer": "lion"}), "training.optimizer")
    _refused(client, auth, job_body(ids, training={"epochs": 10**6}), "training.epochs")


def test_losses_and_students_are_checked(client, auth, ids) -> None:
    _refused(
        client,
        auth,
        job_body(ids, losses=[{"name": "alpha", "weight": 1}]),
        "unknown loss 'alpha'",
        "kd",
    )
    _refused(client, auth, job_body(ids, losses=[{"name": "kd", "weight": 0}]), "weight above 0")
    _refused(
        client,
        auth,
        job_body(ids, losses=[{"name": "ce", "weight": 1, "temperature": 2}]),
        "takes no parameter 'temperature'",
    )
    _refused(client, auth, job_body(ids, student={"architecture": "vit"}), "unknown student")
    _refused(
        client,
        auth,
        job_body(ids, train_dataset_id=ids["transfer"]["id"]),
        "Loss 'ce' needs ground-truth labels",
    )
    unknown = "00000000-0000-4000-8000-000000000000"
    _refused(client, auth, job_body(ids, teacher_model_id=unknown), f"teacher model '{unknown}'")
    # A malformed id is refused by the schema's pattern, before any query.
    _refused(
        client, auth, job_body(ids, teacher_model_id="missing"), "teacher_model_id", "not an id"
    )


def test_unlabeled_train_set_with_kd_only_is_accepted(client, auth, ids) -> None:
    body = job_body(
        ids,
        train_dataset_id=ids["transfer"]["id"],
        transfer_dataset_id=None,
        losses=[{"name": "kd", "weight": 1.0, "temperature": 2.0}],
        training={"epochs": 20, "batch_size": 64},
        baseline=True,
    )
    response = client.post("/v1/jobs", headers=auth, json=body)
    assert response.status_code == 202, response.text
    job = wait_for(
        client, f"/v1/jobs/{response.json()['id']}", auth, {"succeeded", "failed", "cancelled"}
    )
    assert job["status"] == "succeeded", job["error"]
    assert job["summary"]["baseline"] is None  # a no-KD baseline needs labels
    assert job["summary"]["student"]["accuracy"] > 0.8


def test_bad_student_params_are_refused_at_submission(client, auth, ids) -> None:
    """The family's schema (catalog.students) checks params before a job exists."""
    cases = [
        ({"hidden": "wide"}, ["student.params.hidden: Input should be a valid list"]),
        ({"hidden": [0]}, ["student.params.hidden.0", "greater than or equal to 1"]),
        ({"width": 3}, ["student.params.width", "valid parameters: hidden, dropout"]),
    ]
    for params, fragments in cases:
        body = job_body(ids, student={"architecture": "mlp", "params": params})
        _refused(client, auth, body, *fragments)


def test_augment_noise_needs_online_teacher_outputs(client, auth, ids) -> None:
    noisy = {"epochs": 1, "augment_noise": 0.05}
    for body in (
        job_body(ids, training=noisy),  # teacher_outputs defaults to "cached"
        job_body(ids, training=noisy, teacher_outputs="cached"),
    ):
        _refused(
            client,
            auth,
            body,
            "training.augment_noise is 0.05 but teacher_outputs is 'cached'",
            "cached teacher logits describe the un-augmented inputs",
            "set teacher_outputs to 'online'",
        )
    _refused(client, auth, job_body(ids, teacher_outputs="offline"), "teacher_outputs")
    for noise in (-0.1, 11):
        body = job_body(ids, teacher_outputs="online", training={"augment_noise": noise})
        _refused(client, auth, body, "training.augment_noise")
