"""Training quality through the HTTP API: warm-up, early stopping, the best epoch's weights
in the report beside the last epoch's figures, class weights, per-class accuracy, and the
same job twice giving the same metrics on CPU."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from examples.digits import DigitsFiles
from tests.conftest import wait_for
from tests.e2e.test_digits_job import FINISHED, job_body, upload_digits

pytestmark = pytest.mark.usefixtures("worker")


def submit(client: TestClient, auth: dict[str, str], body: dict[str, Any]) -> str:
    response = client.post("/v1/jobs", headers=auth, json=body)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def series(client: TestClient, auth: dict[str, str], job_id: str) -> list[tuple]:
    response = client.get(f"/v1/jobs/{job_id}/metrics", headers=auth)
    assert response.status_code == 200, response.text
    return sorted((p["name"], p["epoch"], p["step"], p["value"]) for p in response.json())


def test_quality_options_and_reproducibility(
    client: TestClient, auth: dict[str, str], digits: DigitsFiles
) -> None:
    ids = upload_digits(client, auth, digits)
    training = {
        "epochs": 6,
        "batch_size": 64,
        "lr": 0.05,
        "optimizer": "sgd",
        "seed": 4,
        "lr_schedule": "cosine",
        "warmup_epochs": 1,
        "select": "accuracy",
        "class_weights": "balanced",
        # No epoch improves agreement by more than 1.0: the run stops after epoch 1 + 2.
        "early_stopping": {"metric": "agreement", "patience": 2, "min_delta": 1.0},
    }
    stopping = job_body(ids, name="stops", training=training)
    plain = {**training, "early_stopping": None, "epochs": 3}
    twice = job_body(ids, name="twice", training=plain, baseline=False)
    # A regression job: mse_logits is its only loss term.
    regression = job_body(
        ids,
        name="regression",
        baseline=False,
        losses=[{"name": "mse_logits", "weight": 1.0}],
        training={"epochs": 2, "batch_size": 64, "seed": 0},
    )
    # All four at once, waited together.
    job_ids = [submit(client, auth, stopping), submit(client, auth, twice)]
    job_ids.append(submit(client, auth, twice))
    job_ids.append(submit(client, auth, regression))
    jobs = [wait_for(client, f"/v1/jobs/{j}", auth, FINISHED, timeout=300) for j in job_ids]
    for job in jobs:
        assert job["status"] == "succeeded", job["error"]

    report = client.get(f"/v1/jobs/{job_ids[0]}/report", headers=auth).json()
    student, baseline = report["student"], report["baseline"]
    assert student["early_stopped"]["epoch"] == 3 and student["epochs_run"] == 3
    assert "val_agreement did not rise" in student["early_stopped"]["reason"]
    assert student["last_epoch"]["epoch"] == 3
    accs = {
        p["epoch"]: p["value"]
        for p in client.get(
            f"/v1/jobs/{job_ids[0]}/metrics", headers=auth, params={"name": "val_accuracy"}
        ).json()
    }
    assert sorted(accs) == [1, 2, 3]
    best = max(accs, key=lambda e: (accs[e], -e))
    assert student["selected"] == {"epoch": best, "by": "accuracy", "note": None}
    # The exported, evaluated weights are the selected epoch's: same val accuracy.
    assert student["accuracy"] == pytest.approx(accs[best], abs=1e-6)
    assert student["last_epoch"]["accuracy"] == pytest.approx(accs[3], abs=1e-6)
    assert baseline["selected"]["by"] == "accuracy" and baseline["last_epoch"] is not None
    assert len(student["per_class_accuracy"]) == student["num_classes"] == 10
    assert len(report["teacher"]["per_class_accuracy"]) == 10
    assert report["task"] == "classification" and student["r2_to_teacher"] is None
    summary = client.get(f"/v1/jobs/{job_ids[0]}", headers=auth).json()["summary"]
    assert summary["early_stopped"]["epoch"] == 3 and summary["selected"]["epoch"] == best

    # The same job twice: every epoch's figures and the final report figures, exactly.
    first, second = (series(client, auth, j) for j in job_ids[1:3])
    assert len(first) > 3 * 5 and first == second
    reports = [client.get(f"/v1/jobs/{j}/report", headers=auth).json() for j in job_ids[1:3]]
    for key in ("accuracy", "agreement", "kl_to_teacher", "ece", "per_class_accuracy"):
        assert reports[0]["student"][key] == reports[1]["student"][key], key

    # Regression: the student's outputs against the teacher's, MSE and R^2.
    report = client.get(f"/v1/jobs/{job_ids[3]}/report", headers=auth).json()
    assert report["task"] == "regression"
    student = report["student"]
    assert student["mse_to_teacher"] > 0 and student["r2_to_teacher"] < 1
    assert report["teacher"]["mse_to_teacher"] is None  # no figure against itself


def test_bad_training_options_are_refused(
    client: TestClient, auth: dict[str, str], digits: DigitsFiles
) -> None:
    ids = upload_digits(client, auth, digits)
    cases = [
        ({"epochs": 3, "warmup_epochs": 3}, "warmup_epochs (3) must be less than epochs (3)"),
        ({"class_weights": [1.0, 2.0]}, "class_weights has 2 entries but teacher"),
        ({"class_weights": [0.0] * 10}, "all class weights are 0"),
        ({"early_stopping": {"metric": "loss", "patience": 1}}, "early_stopping"),
        ({"early_stopping": {"metric": "kl", "patience": 0}}, "patience"),
        ({"select": "kl"}, "select"),
    ]
    unlabeled = {"early_stopping": {"metric": "accuracy", "patience": 1}}
    body = job_body(ids, name="bad", training=unlabeled, val_dataset_id=ids["transfer"]["id"])
    response = client.post("/v1/jobs", headers=auth, json=body)
    assert response.status_code == 422 and "has no labels" in response.text, response.text
    for training, message in cases:
        body = job_body(ids, name="bad", training=training)
        response = client.post("/v1/jobs", headers=auth, json=body)
        assert response.status_code == 422, (training, response.text)
        assert message in response.text, (training, response.text)
    listed = client.get("/v1/jobs", headers=auth).json()
    jobs = listed["items"] if isinstance(listed, dict) else listed
    assert not any(job["name"] == "bad" for job in jobs)
