"""With STILLHOUSE_ALLOW_TORCH_PROGRAMS, a torch.export program is accepted,
inspected by a worker and used as a teacher."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from core.config import Settings
from examples.digits import DigitsFiles
from tests.conftest import wait_for
from tests.e2e.test_digits_job import job_body, upload

pytestmark = pytest.mark.usefixtures("worker")


@pytest.fixture
def permissive(settings: Settings) -> Iterator[TestClient]:
    from service.main import create_app

    with TestClient(create_app(settings.model_copy(update={"allow_torch_programs": True}))) as c:
        yield c


@pytest.mark.parametrize("teacher_outputs", ["cached", "online"])
def test_torch_export_teacher(
    permissive: TestClient,
    auth: dict[str, str],
    digits: DigitsFiles,
    tmp_path: Path,
    teacher_outputs: str,
) -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10))
    program = torch.export.export(
        net, (torch.zeros(4, 64),), dynamic_shapes=({0: torch.export.Dim("batch")},)
    )
    path = tmp_path / "teacher.pt2"
    torch.export.save(program, path)

    teacher = upload(permissive, auth, "models", path)
    assert teacher["status"] == "ready", teacher["error"]
    assert teacher["format"] == "torch_export"
    assert (teacher["input_shape"], teacher["output_shape"]) == ([None, 64], [None, 10])
    assert teacher["num_params"] == 64 * 16 + 16 + 16 * 10 + 10

    ids = {
        "teacher": teacher,
        "train": upload(permissive, auth, "datasets", digits.train_npz),
        "val": upload(permissive, auth, "datasets", digits.val_npz),
        "transfer": upload(permissive, auth, "datasets", digits.transfer_npz),
    }
    body = job_body(ids, baseline=False, training={"epochs": 2}, teacher_outputs=teacher_outputs)
    response = permissive.post("/v1/jobs", headers=auth, json=body)
    assert response.status_code == 202, response.text
    job = wait_for(permissive, f"/v1/jobs/{response.json()['id']}", auth, {"succeeded", "failed"})
    assert job["status"] == "succeeded", job["error"]
    assert job["summary"]["student"]["agreement"] is not None
    assert job["summary"]["teacher_outputs"] == teacher_outputs
