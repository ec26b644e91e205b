"""Feature-level KD through the HTTP API: an ONNX teacher lists its intermediate tensors,
a job with a `hint` on one trains and records `loss/hint`, and the feature terms' bad
parameters are refused at submission with the valid choices."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from torch import nn

from core.config import Settings
from examples.digits import DigitsFiles, export_teacher
from tests.conftest import wait_for
from tests.e2e.test_digits_job import FINISHED, job_body, upload, upload_digits
from tests.e2e.test_online_job import teacher_stage_outputs

pytestmark = pytest.mark.usefixtures("worker")


class ConvTeacher(nn.Module):
    """(B, 64) -> conv over the 64 pixels as a 1-D signal -> (B, 10); its ReLU output is
    the (B, 6, 64) tensor the student is hinted with."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 6, 3, padding=1)
        self.head = nn.Linear(6, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x.reshape(x.shape[0], 1, 64)))  # (B, 6, 64)
        return self.head(h.mean(dim=2))


def _refused(client: TestClient, auth: dict[str, str], body: dict[str, Any], *needles: str) -> None:
    response = client.post("/v1/jobs", headers=auth, json=body)
    assert response.status_code == 422, response.text
    for needle in needles:
        assert needle in response.json()["detail"], response.json()["detail"]


def test_hint_on_a_named_teacher_tensor(
    client: TestClient,
    auth: dict[str, str],
    digits: DigitsFiles,
    settings: Settings,
    tmp_path: Path,
) -> None:
    torch.manual_seed(0)
    export_teacher(ConvTeacher().eval(), 64, tmp_path / "conv.onnx")
    ids = upload_digits(client, auth, digits)
    ids["teacher"] = upload(client, auth, "models", tmp_path / "conv.onnx", name="conv-teacher")
    teacher = client.get(f"/v1/models/{ids['teacher']['id']}", headers=auth).json()
    listed = {t["name"]: t["shape"] for t in teacher["tensors"]}
    name = next(n for n, shape in listed.items() if shape == [None, 6, 64])
    assert ids["train"]["id"] and "logits" not in listed

    cnn = {"architecture": "cnn1d", "params": {"channels": 8, "layers": 2}}
    hint = {"name": "hint", "weight": 0.5, "teacher_tensor": name}
    losses = [{"name": "kd", "weight": 0.5, "temperature": 4}, hint]
    training = {"epochs": 2, "batch_size": 128, "seed": 0}
    body = job_body(ids, student=cnn, losses=losses, training=training, baseline=False)

    # Refused at submission, each with the valid choices.
    _refused(client, auth, job_body(ids, losses=[{"name": "fitnet"}]), "unknown loss", "hint")
    _refused(
        client,
        auth,
        job_body(ids, losses=[{**hint, "temprature": 2}]),
        "takes no parameter 'temprature'",
        "teacher_tensor",
    )
    _refused(client, auth, {**body, "losses": [{**hint, "teacher_tensor": "nope"}]}, "'nope'", name)
    _refused(
        client,
        auth,
        {**body, "losses": [{**hint, "student_layer": "head"}]},
        "student_layer 'head'",
        "features",
    )
    _refused(client, auth, {**body, "teacher_outputs": "online"}, "cached")

    response = client.post("/v1/jobs", headers=auth, json=body)
    assert response.status_code == 202, response.text
    # A second job, waited together: its validation set is a holdout of the train set, so
    # the teacher tensor is split with the rows (and extended by the transfer set).
    holdout = {**body, "name": "holdout", "val_dataset_id": None}
    second = client.post("/v1/jobs", headers=auth, json=holdout)
    assert second.status_code == 202, second.text
    job = wait_for(client, f"/v1/jobs/{response.json()['id']}", auth, FINISHED)
    assert job["status"] == "succeeded", job["error"]
    split = wait_for(client, f"/v1/jobs/{second.json()['id']}", auth, FINISHED)
    assert split["status"] == "succeeded", split["error"]
    assert split["summary"]["val_source"].startswith("holdout")
    points = client.get(f"/v1/jobs/{job['id']}/metrics", headers=auth).json()
    hints = [p["value"] for p in points if p["name"] == "loss/hint"]
    assert len(hints) == 2 and all(v >= 0 for v in hints)
    # The tensor is cached beside the logits, per dataset the job reads.
    outputs = teacher_stage_outputs(settings, job["id"])
    tensors = outputs["tensors"]
    # One teacher pass per dataset gave the tensors and the logits; none came from a cache.
    assert set(outputs["details"]["teacher_outputs"].values()) == {"computed"}
    assert set(tensors) == {"train_dataset_id", "transfer_dataset_id", "val_dataset_id"}
    key = tensors["train_dataset_id"][name]
    assert key.startswith(f"cache/teacher-logits/{ids['teacher']['sha256']}/")


def test_losses_endpoint_lists_the_registry(client: TestClient, auth: dict[str, str]) -> None:
    items = client.get("/v1/losses", headers=auth).json()["items"]
    by_name = {item["name"]: item for item in items}
    assert set(by_name) == {"kd", "ce", "hard", "mse_logits", "hint", "attention", "rkd", "dkd"}
    assert by_name["dkd"]["defaults"] == {
        "weight": 1.0,
        "alpha": 1.0,
        "beta": 8.0,
        "temperature": 4.0,
    }
    assert (
        by_name["hint"]["needs_tensors"]
        and "teacher_tensor" in by_name["hint"]["params_schema"]["properties"]
    )
    assert by_name["ce"]["needs_labels"] and "Romero" in by_name["hint"]["paper"]
