"""Online KD on the real stack: the teacher runs inside the training loop on each noisy
batch, and the teacher stage caches only the logits evaluation reads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import load, save_file
from sqlalchemy import select

from core.config import Settings
from core.db import make_engine, make_sessionmaker
from core.models import JobStage
from distill.students import build_student
from examples.digits import DigitsFiles
from tests.conftest import npz_bytes, wait_for
from tests.e2e.test_digits_job import FINISHED, job_body, upload, upload_digits

pytestmark = pytest.mark.usefixtures("worker")


def teacher_stage_outputs(settings: Settings, job_id: str) -> dict[str, Any]:
    engine = make_engine(settings.resolved_database_url)
    try:
        with make_sessionmaker(engine)() as session:
            stage = session.scalar(
                select(JobStage).where(
                    JobStage.job_id == job_id, JobStage.name == "teacher_inference"
                )
            )
            assert stage is not None and stage.outputs is not None
            return stage.outputs
    finally:
        engine.dispose()


def run_job(client: TestClient, auth: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/v1/jobs", headers=auth, json=body)
    assert response.status_code == 202, response.text
    job = wait_for(client, f"/v1/jobs/{response.json()['id']}", auth, FINISHED)
    assert job["status"] == "succeeded", job["error"]
    return job


def test_online_job_with_noise(
    client: TestClient, auth: dict[str, str], digits: DigitsFiles, settings: Settings
) -> None:
    ids = upload_digits(client, auth, digits)
    # A transfer set no other test uses (the rows reversed), so its cache entry is this job's.
    rows = np.load(digits.transfer_npz)["x"][::-1]
    created = client.post(
        "/v1/datasets", headers=auth, files={"file": ("t.npz", npz_bytes(x=rows))}
    )
    ids["transfer"] = wait_for(client, f"/v1/datasets/{created.json()['id']}", auth, {"ready"})
    training = {"epochs": 10, "batch_size": 64, "lr": 0.003, "seed": 0, "augment_noise": 0.05}
    body = job_body(ids, name="online", teacher_outputs="online", training=training)
    job = run_job(client, auth, body)

    summary = job["summary"]
    assert summary["teacher_outputs"] == "online" and summary["augment_noise"] == 0.05
    assert summary["train_samples"] == 718 + 719  # labeled train set plus the transfer set
    assert summary["student"]["accuracy"] >= 0.9 * summary["teacher"]["accuracy"], summary
    assert summary["student"]["agreement"] > 0.85, summary
    assert summary["baseline"] is not None  # the no-KD baseline trains with no teacher
    # The teacher stage cached the validation set's logits only.
    assert set(teacher_stage_outputs(settings, job["id"])["logits"]) == {"val_dataset_id"}
    cache = settings.data_dir / "artifacts" / "cache" / "teacher-logits" / ids["teacher"]["sha256"]
    assert (cache / ids["val"]["sha256"] / "logits.npy").is_file()
    assert not (cache / ids["transfer"]["sha256"]).exists()


def test_online_job_with_a_holdout_caches_the_train_set(
    client: TestClient, auth: dict[str, str], digits: DigitsFiles, settings: Settings
) -> None:
    ids = upload_digits(client, auth, digits)
    training = {"epochs": 2, "batch_size": 64, "augment_noise": 0.05}
    body = job_body(
        ids, name="holdout", teacher_outputs="online", val_dataset_id=None, training=training
    )
    job = run_job(client, auth, body)
    assert job["summary"]["val_source"].startswith("holdout")
    assert job["summary"]["teacher_outputs"] == "online"
    assert set(teacher_stage_outputs(settings, job["id"])["logits"]) == {"train_dataset_id"}


def test_zoo_teacher_online_trains_like_cached(
    client: TestClient, auth: dict[str, str], digits: DigitsFiles, tmp_path: Path
) -> None:
    """A safetensors zoo teacher runs in torch inside the loop; without noise the student ends
    where the cached teacher outputs take it, up to float32 rounding."""
    spec = {
        "architecture": "mlp",
        "params": {"hidden": [48]},
        "input_shape": [64],
        "num_classes": 10,
    }
    torch.manual_seed(0)
    weights = tmp_path / "teacher.safetensors"
    model = build_student("mlp", spec["params"], (64,), 10)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    zoo = upload(client, auth, "models", weights, name="zoo-teacher", spec=json.dumps(spec))
    ids = {**upload_digits(client, auth, digits), "teacher": zoo}
    students = {}
    for mode in ("cached", "online"):
        body = job_body(
            ids, name=mode, teacher_outputs=mode, training={"epochs": 2}, baseline=False
        )
        job = run_job(client, auth, body)
        assert job["summary"]["teacher_outputs"] == mode
        url = f"/v1/models/{job['student_model_id']}/file?format=safetensors"
        students[mode] = load(client.get(url, headers=auth).content)
    assert students["online"].keys() == students["cached"].keys()
    for key, value in students["cached"].items():
        torch.testing.assert_close(students["online"][key], value, rtol=0, atol=1e-5)
