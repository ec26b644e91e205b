"""A student too big to train is refused at submission (422, with its size and
the limit), before any job row exists or any worker allocates it."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from core.config import Settings
from core.db import make_engine, make_sessionmaker
from core.models import Model
from examples.digits import DigitsFiles
from tests.e2e.test_digits_job import job_body, upload_digits

pytestmark = pytest.mark.usefixtures("worker")  # inspects the uploads


@pytest.fixture
def ids(client: TestClient, auth: dict[str, str], digits: DigitsFiles) -> dict[str, dict]:
    return upload_digits(client, auth, digits)


def _too_big(client: TestClient, auth: dict[str, str], body: dict[str, Any], count: int) -> None:
    response = client.post("/v1/jobs", headers=auth, json=body)
    assert response.status_code == 422, response.text
    assert response.json() == {
        "error": "invalid_request",
        "detail": f"The student would have {count:,} parameters but this server trains "
        "students of at most 50,000,000 (STILLHOUSE_MAX_STUDENT_PARAMS); use fewer or "
        "narrower layers.",
    }
    assert client.get("/v1/jobs", headers=auth).json()["items"] == []


def test_huge_zoo_students_are_refused(client, auth, ids, settings: Settings) -> None:
    assert settings.max_student_params == 50_000_000  # the default the sentences name
    # 64 features in, 10 classes out (the digits teacher's): weights and biases per layer.
    wide = {"architecture": "mlp", "params": {"hidden": [16384, 16384]}}
    _too_big(client, auth, job_body(ids, student=wide), 269_680_650)
    huge = {"architecture": "mlp", "params": {"hidden": [1_000_000, 1_000_000]}}
    _too_big(client, auth, job_body(ids, student=huge), 1_000_076_000_010)
    deep = {"architecture": "cnn1d", "params": {"channels": 4096, "layers": 4}}
    _too_big(client, auth, job_body(ids, student=deep), 151_080_970)

    # 17.1M parameters: accepted. Placed on a pool nobody serves, so nothing trains it.
    fits = {"architecture": "mlp", "params": {"hidden": [4096, 4096]}}
    nowhere = {
        "teacher": "unserved",
        "student": "unserved",
        "export": "unserved",
        "benchmark": "unserved",
    }
    body = job_body(ids, student=fits, placement=nowhere)
    response = client.post("/v1/jobs", headers=auth, json=body)
    assert response.status_code == 202, response.text
    cancelled = client.post(f"/v1/jobs/{response.json()['id']}/cancel", headers=auth)
    assert cancelled.json()["status"] == "cancelled", cancelled.text


def test_an_uploaded_student_is_sized_by_its_inspection(client, auth, ids, settings) -> None:
    engine = make_engine(settings.resolved_database_url)
    with make_sessionmaker(engine).begin() as session:
        tenant_id = session.get(Model, ids["teacher"]["id"]).tenant_id
        big = Model(
            tenant_id=tenant_id,
            name="big-student",
            format="safetensors",
            status="ready",
            sha256="0" * 64,
            size_bytes=1,
            spec={"architecture": "mlp", "params": {}, "input_shape": [64], "num_classes": 10},
            num_params=60_000_000,
        )
        session.add(big)
    engine.dispose()
    _too_big(client, auth, job_body(ids, student={"model_id": big.id}), 60_000_000)
