"""Safetensors weights whose zoo spec came as a form field (the file itself
carries no metadata) are used end to end: as a teacher and as the student's
initial weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import save_file

from distill.students import build_student
from examples.digits import DigitsFiles
from tests.conftest import wait_for
from tests.e2e.test_digits_job import FINISHED, job_body, upload, upload_digits

pytestmark = pytest.mark.usefixtures("worker")
SPEC = {"architecture": "mlp", "params": {"hidden": [24]}, "input_shape": [64], "num_classes": 10}


def upload_zoo(
    client: TestClient, auth: dict[str, str], tmp_path: Path, name: str
) -> tuple[torch.nn.Module, dict]:
    """A seeded zoo mlp saved as plain safetensors (no spec inside), uploaded with its spec
    as a form field: (the model, its row once inspected)."""
    torch.manual_seed(0)
    model = build_student("mlp", SPEC["params"], (64,), 10)
    weights = tmp_path / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    row = upload(client, auth, "models", weights, name=name, spec=json.dumps(SPEC))
    assert row["status"] == "ready", row["error"]
    return model, row


def test_spec_from_a_form_field_loads_as_teacher_and_student(
    client: TestClient, auth: dict[str, str], digits: DigitsFiles, tmp_path: Path
) -> None:
    model, zoo = upload_zoo(client, auth, tmp_path, "plain")

    ids = {**upload_digits(client, auth, digits), "teacher": zoo}
    body = job_body(
        ids, name="zoo", student={"model_id": zoo["id"]}, training={"epochs": 2}, baseline=True
    )
    response = client.post("/v1/jobs", headers=auth, json=body)
    assert response.status_code == 202, response.text
    job = wait_for(client, f"/v1/jobs/{response.json()['id']}", auth, FINISHED)
    assert job["status"] == "succeeded", job["error"]
    assert job["summary"]["student"]["num_params"] == zoo["num_params"]
